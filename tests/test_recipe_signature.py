"""End to end on real images: the default CPU recipe must show the paper's signature.

split -> train candidate and reference -> score, with the pinned recipe exactly as `sslmem run`
and `make demo` use it. Slow: a few minutes on 2 cores.
"""

from pathlib import Path

import pytest

from sslmem.config import load_experiment_config
from sslmem.data import load_dataset, make_split
from sslmem.memorization.scoring import score_split
from sslmem.models import load_checkpoint
from sslmem.training import train_encoder

RECIPE = Path(__file__).resolve().parents[1] / "src/sslmem/recipes/bundled-cpu.yaml"


@pytest.mark.slow
def test_bundled_cpu_recipe_shows_the_memorisation_signature(tmp_path: Path) -> None:
    config = load_experiment_config(RECIPE)
    dataset = load_dataset(config.data.dataset)
    manifest = make_split(dataset, fractions=config.split)
    checkpoints = {
        role: train_encoder(
            dataset, manifest, role=role, config=config, out_dir=tmp_path / role, progress=False
        ).checkpoint
        for role in ("candidate", "reference")
    }
    report = score_split(
        [load_checkpoint(checkpoints["candidate"])],
        [load_checkpoint(checkpoints["reference"])],
        dataset,
        manifest,
        scoring=config.scoring,
        augment_spec=config.augmentation,
    )
    summary = report.summary
    print(summary.format_table())
    assert summary.sets["candidate"].mean > 0
    assert summary.sets["independent"].mean < 0
    assert summary.welch_tests["independent"].p_value < 0.01
    assert summary.welch_tests["extra"].p_value < 0.01
    assert summary.verdict.passed
