"""benchmarks/gpu.py (issue 12's GPU run) works end to end, here as a CPU smoke run.

No timing is asserted: only that every measurement is present, positive and consistent.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.py"


def run(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path / "gpu.json"
    cmd = [sys.executable, str(SCRIPT), "--out", str(out), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600), out


@pytest.mark.slow
def test_quick_cpu_run_reports_every_measurement(tmp_path: Path) -> None:
    proc, out = run(tmp_path, "--device", "cpu", "--quick")
    assert proc.returncode == 0, proc.stderr
    report: dict[str, Any] = json.loads(out.read_text())
    assert report["environment"]["device"] == "cpu"
    assert report["environment"]["gpu"] is None
    assert report["stopped_early"] is False

    tr = report["training"]
    assert tr["sslmem_img_s_median"] > 0 and tr["lightly_img_s_median"] > 0
    assert tr["ratio"] == pytest.approx(tr["sslmem_img_s_median"] / tr["lightly_img_s_median"])
    assert tr["target_ratio_min"] == 2.0

    sc = report["scoring"]
    for key in ("engine_points_s", "loop_points_s", "floor_points_s"):
        assert sc[key] > 0, key
    assert sc["speedup_vs_loop"] == pytest.approx(sc["engine_points_s"] / sc["loop_points_s"])
    assert sc["overhead_vs_floor"] == pytest.approx(sc["floor_points_s"] / sc["engine_points_s"])
    # The floor replays the engine's forwards: anchor mode, K = 2 views + the clean image,
    # 16 points in --quick -> 3 * 16 = 48 images per encoder.
    assert sc["forwards_per_encoder"] == 48
    assert (sc["target_speedup_min"], sc["target_overhead_max"]) == (50.0, 1.1)

    assert "| training img/s" in proc.stdout and "| scoring points/s" in proc.stdout


@pytest.mark.slow
def test_spent_budget_skips_measurements_but_still_reports(tmp_path: Path) -> None:
    proc, out = run(tmp_path, "--device", "cpu", "--quick", "--time-budget-s", "0")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["training"] == {"skipped": "time budget spent"}
    assert report["scoring"] == {"skipped": "time budget spent"}
    assert report["stopped_early"] is True


@pytest.mark.slow
@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_fails_clearly_and_writes_nothing(tmp_path: Path) -> None:
    proc, out = run(tmp_path, "--device", "cuda", "--quick")
    assert proc.returncode == 2
    assert "CUDA is not available" in proc.stderr and "fix:" in proc.stderr
    assert not out.exists()
