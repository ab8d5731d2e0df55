"""Real, CPU-cheap encoders for the alert chain: a champion pair and a deliberate regression.

Everything is trained by the library's own training code on the bundled images, in seconds:

* the **champion** pair -- candidate (S_S ∪ S_C) and reference (S_S ∪ S_I) encoders trained by
  :func:`sslmem.training.train_encoder` with one recipe and seed;
* the **regressing** candidate -- the champion's candidate trained on for many more epochs on
  the candidate set S_C alone (:func:`sslmem.training.loop.fit`, the loop ``train_encoder``
  runs). Longer training on fewer points is the regime in which SSL encoders memorise (Wang et
  al., ICLR 2024, Sec. 4): its alignment on S_C improves beyond what the reference sees there,
  so mean SSLMem(S_C) rises. It keeps the champion's provenance (split, recipe, augmentation) so
  it is scored under the same protocol against the same reference: a paired comparison on the
  same points.

Both candidates are evaluated downstream by the library (:func:`sslmem.workflow.evaluate.
evaluate_role`: weighted kNN and linear probe on frozen features of the bundled train/test
images), and registered with those accuracies. The extra training *gains* a few points (about
+0.04 kNN, +0.02 probe); the chain's model policy (conftest.py) says that is not enough to
excuse the extra memorisation.

The split has a large S_C (30 % of 80 bundled images, 24 points) so that the paired t-test has
the power to see the rise with few views.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from sslmem.config import SplitConfig, load_experiment_config
from sslmem.data import load_dataset, make_split, save_manifest
from sslmem.evaluation import EvaluationResult
from sslmem.models import load_checkpoint, save_checkpoint
from sslmem.training import train_encoder
from sslmem.training.distributed import distributed_context
from sslmem.training.loop import fit
from sslmem.training.methods import build_method
from sslmem.workflow.evaluate import evaluate_role

#: A small CNN and head: a training epoch over 40 images takes a few milliseconds on a CPU.
RECIPE = [
    "model.arch=small_cnn",
    "model.arch_kwargs={widths: [16, 32]}",
    "model.head_hidden_dim=64",
    "model.head_output_dim=32",
    "training.batch_size=8",
    "training.checkpoint_every=100000",  # no resume file every epoch (nothing to resume here)
]
CHAMPION_EPOCHS = 20
#: Extra epochs on S_C alone that make the regressing candidate memorise it.
MEMORISE_EPOCHS = 300
#: Downstream evaluation, CPU-cheap: the probe's 30 epochs (not 100) reach the same ranking of
#: the two encoders in a few seconds each (4000 train, 1000 test bundled images).
EVALUATION = ["evaluation.probe_epochs=30"]


@dataclass(frozen=True)
class ChainEncoders:
    """The split manifest, the three checkpoints (paths on disk) and the candidates' accuracies.

    Attributes:
        champion_evaluation: Downstream evaluation of ``champion``.
        regressing_evaluation: Downstream evaluation of ``regressing``.
    """

    split: Path
    champion: Path
    reference: Path
    regressing: Path
    champion_evaluation: EvaluationResult
    regressing_evaluation: EvaluationResult


def make_chain_encoders(root: Path) -> ChainEncoders:
    """Train the champion pair and the regressing candidate under ``root``; evaluate both."""
    threads = torch.get_num_threads()
    # Tiny convolutions: one thread is fastest, and several oversubscribe a shared CI runner.
    torch.set_num_threads(1)
    try:
        return _train(root)
    finally:
        torch.set_num_threads(threads)


def _train(root: Path) -> ChainEncoders:
    dataset = load_dataset("bundled")
    fractions = SplitConfig(
        pool_size=80, shared=0.2, candidate=0.3, independent=0.3, extra=0.2, seed=1
    )
    manifest = make_split(dataset, fractions=fractions)
    split = save_manifest(manifest, root / "split.json")
    config = load_experiment_config(None, [*RECIPE, f"training.epochs={CHAMPION_EPOCHS}"])
    trained = {
        role: train_encoder(
            dataset,
            manifest,
            role=role,
            config=config,
            out_dir=root / role,
            device="cpu",
            progress=False,
        ).checkpoint
        for role in ("candidate", "reference")
    }
    champion = load_checkpoint(trained["candidate"])
    longer = config.training.model_copy(update={"epochs": MEMORISE_EPOCHS})
    method = build_method(champion.encoder.train(), longer)
    candidates = torch.from_numpy(manifest.set_indices("candidate"))
    cpu = torch.device("cpu")
    with distributed_context(cpu) as ctx:
        fit(
            method,
            dataset.images.index_select(0, candidates),
            candidates,
            training=longer,
            augmentation=config.augmentation,
            device=cpu,
            dist_ctx=ctx,
            resume_path=root / "memorise" / "resume.pt",
            resume_state=None,
            run="alert-chain: memorise S_C",
            seed=0,
            progress=False,
        )
    # The champion's provenance (split, recipe, augmentation, role) plus what was done to it.
    metadata = {**champion.metadata, "memorised": f"{MEMORISE_EPOCHS} more epochs on S_C only"}
    regressing = save_checkpoint(
        method.encoder.eval(), root / "regressing.safetensors", metadata=metadata
    )
    evaluation_config = load_experiment_config(None, [*RECIPE, *EVALUATION])
    champion_evaluation, regressing_evaluation = (
        evaluate_role(checkpoint, evaluation_config, device="cpu").result
        for checkpoint in (trained["candidate"], regressing)
    )
    return ChainEncoders(
        split,
        trained["candidate"],
        trained["reference"],
        regressing,
        champion_evaluation,
        regressing_evaluation,
    )
