"""benchmarks/s3_dataset.py runs end to end against a real S3 server, on a small dataset.

No timing or memory figure is asserted (those are the benchmark's to report): only that every
case ran on the same pixels and that the reported ratio is computed from the reported cases.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "s3_dataset.py"


@pytest.mark.slow
def test_small_run_reports_every_case_on_identical_pixels() -> None:
    cmd = [sys.executable, str(SCRIPT), "--images", "120", "--size", "16", "--shard", "50"]
    proc = subprocess.run(
        [*cmd, "--batch", "32", "--json"], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout)
    assert report["checksums_equal"] is True
    cases = {case["case"]: case for case in report["cases"]}
    assert set(cases) == {"cold", "warm", "resident"}
    for case in cases.values():
        assert case["images"] == 120 and case["shape"] == [120, 3, 16, 16]
        assert case["load_s"] > 0 and case["epoch_images_per_s"] > 0
    ratio = cases["warm"]["load_s"] / cases["cold"]["load_s"]
    assert report["warm_vs_cold_load_time"] == pytest.approx(ratio)
