"""SimCLR training throughput: sslmem's loop vs lightly's example loop, and vs batch size.

Both loops train the same encoder (sslmem's ``build_encoder``: backbone + projection head) with
lightly's ``NTXentLoss`` and the same optimizer on the same images, 32 x 32 RGB like CIFAR-10
(the bundled Fashion-MNIST subset, padded to 32 px and repeated to 3 channels). They differ in
what the benchmark is about -- data loading, augmentation and the step:

* **sslmem**: :func:`sslmem.training.fit` -- uint8 images in one tensor, batches by index,
  batched per-sample augmentation (:class:`~sslmem.augment.BatchAugmenter`), both views in one
  forward pass.
* **lightly**: a faithful reimplementation of lightly's ``examples/pytorch/simclr.py``: a
  dataset returning PIL images, ``SimCLRTransform`` applied per sample in a ``DataLoader``
  (``shuffle=True, drop_last=True``), one forward pass per view. The transform is set to the
  same augmentation distribution as sslmem's default spec (crop scale 0.2-1, flip 0.5, jitter
  0.8 with brightness/contrast/saturation 0.4, no hue, grayscale 0.2, no blur).

Throughput is images per second of the second (warm) epoch; each configuration runs
``--repeats`` times, alternating loops, and the best run counts (the machine may be shared).

Run: ``python benchmarks/training.py`` (2-3 minutes on 2 idle CPU cores).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss
from lightly.transforms import SimCLRTransform
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from sslmem.augment import BatchAugmenter
from sslmem.config import ExperimentConfig, load_experiment_config
from sslmem.data import load_dataset
from sslmem.models import Encoder, build_encoder
from sslmem.training import build_method, fit
from sslmem.training.distributed import DistContext
from sslmem.training.seeding import derive_seed

SIZE = 32


def cifar_like_images(n: int) -> torch.Tensor:
    """``n`` bundled images as uint8 ``[n, 3, 32, 32]``."""
    images = load_dataset("bundled").images[:n]
    return F.pad(images, (2, 2, 2, 2)).repeat(1, 3, 1, 1).contiguous()


def config_for(arch: str, batch_size: int) -> ExperimentConfig:
    return load_experiment_config(
        None,
        [
            f"model.arch={arch}",
            "training.method=simclr",
            f"training.batch_size={batch_size}",
            "training.epochs=2",
            "training.optimizer=sgd",
            "training.lr=0.06",
            "training.checkpoint_every=1000",
            f"augmentation.output_size={SIZE}",
        ],
    )


def encoder_for(config: ExperimentConfig) -> Encoder:
    torch.manual_seed(0)
    return build_encoder(config.model, in_channels=3, image_size=SIZE)


def sslmem_throughput(images: torch.Tensor, config: ExperimentConfig) -> float:
    """Images/s of the last epoch of :func:`sslmem.training.fit` on the CPU."""
    return sslmem_epoch_rates(images, config)[-1]


def sslmem_epoch_rates(
    images: torch.Tensor, config: ExperimentConfig, device: torch.device | None = None
) -> list[float]:
    """Images/s of each epoch of :func:`sslmem.training.fit` on ``device`` (default CPU)."""
    method = build_method(encoder_for(config), config.training)
    rates: list[float] = []

    class Record:
        def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
            rates.append(metrics["images_per_s"])

    with tempfile.TemporaryDirectory() as tmp:
        fit(
            method,
            images,
            torch.arange(len(images)),
            training=config.training,
            augmentation=config.augmentation,
            device=device or torch.device("cpu"),
            dist_ctx=DistContext(),
            resume_path=Path(tmp) / "resume.pt",
            resume_state=None,
            run="benchmark",
            seed=0,
            callbacks=[Record()],
            progress=False,
        )
    return rates


class PILDataset(Dataset[tuple[list[torch.Tensor], int]]):
    """Returns transformed PIL images, like ``torchvision.datasets.CIFAR10``."""

    def __init__(
        self, images: torch.Tensor, transform: Callable[[Image.Image], list[torch.Tensor]]
    ):
        self.array = images.permute(0, 2, 3, 1).numpy()  # HWC uint8, as CIFAR10 stores it
        self.transform = transform

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, index: int) -> tuple[list[torch.Tensor], int]:
        return self.transform(Image.fromarray(self.array[index])), 0


def lightly_loader(images: torch.Tensor, config: ExperimentConfig, workers: int) -> DataLoader[Any]:
    """lightly's example data pipeline with sslmem's augmentation distribution."""
    spec = config.augmentation
    transform = SimCLRTransform(
        input_size=SIZE,
        cj_prob=spec.jitter_prob,
        cj_strength=0.5,  # lightly's advice for CIFAR: 0.8 * 0.5 = 0.4, as in sslmem's spec
        cj_hue=0.0,
        min_scale=spec.crop_scale[0],
        random_gray_scale=spec.grayscale_prob,
        gaussian_blur=0.0,
        hf_prob=spec.hflip_prob,
        normalize={"mean": [spec.mean[0]] * 3, "std": [spec.std[0]] * 3},
    )
    return DataLoader(
        PILDataset(images, transform),
        batch_size=config.training.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(derive_seed(0, "bench")),
    )


def lightly_throughput(images: torch.Tensor, config: ExperimentConfig, workers: int) -> float:
    """Images/s of the second epoch of lightly's example SimCLR loop."""
    loader = lightly_loader(images, config, workers)
    model = encoder_for(config)
    criterion = NTXentLoss(temperature=config.training.temperature)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.training.lr, momentum=0.9)
    model.train()
    rate = 0.0
    for _epoch in range(config.training.epochs):
        started, seen = time.perf_counter(), 0
        for (x0, x1), _ in loader:
            z0, z1 = model(x0), model(x1)
            loss = criterion(z0, z1)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            seen += len(x0)
        rate = seen / (time.perf_counter() - started)
    return rate


def augmentation_throughput(images: torch.Tensor, config: ExperimentConfig) -> tuple[float, float]:
    """Images/s of producing two views per image, without a model: (sslmem, lightly 0 workers)."""
    batch = config.training.batch_size
    augmenter = BatchAugmenter(config.augmentation)
    view_ids = torch.arange(2)
    started = time.perf_counter()
    for start in range(0, len(images) - batch + 1, batch):
        keys = torch.arange(start, start + batch)
        augmenter.views(images[start : start + batch], keys, view_ids, seed=0)
    ours = (len(images) // batch) * batch / (time.perf_counter() - started)
    started, seen = time.perf_counter(), 0
    for (x0, _x1), _ in lightly_loader(images, config, 0):
        seen += len(x0)
    return ours, seen / (time.perf_counter() - started)


def best(measure: Callable[[], float], repeats: int) -> float:
    return max(measure() for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="small_cnn,resnet18")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--images", type=int, default=256, help="images per epoch")
    parser.add_argument("--workers", default="0,2", help="lightly DataLoader workers to try")
    parser.add_argument("--batch-sizes", default="32,64,128,256", help="sweep (small_cnn)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--sweep-repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = cifar_like_images(args.images)
    workers = [int(w) for w in args.workers.split(",")]

    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{args.threads} threads, {args.images} images 3x{SIZE}x{SIZE} per epoch, "
        f"batch {args.batch_size}, best of {args.repeats}\n"
    )
    lightly_columns = " | ".join(f"lightly ({w} workers) img/s" for w in workers)
    print(f"| backbone | sslmem img/s | {lightly_columns} | speed-up vs best lightly |")
    print("|---|---|" + "---|" * len(workers) + "---|")
    for arch in args.archs.split(","):
        config = config_for(arch, args.batch_size)
        ours: list[float] = []
        theirs: dict[int, list[float]] = {w: [] for w in workers}
        for _ in range(args.repeats):  # alternate, so load changes hit both loops alike
            ours.append(sslmem_throughput(images, config))
            for w in workers:
                theirs[w].append(lightly_throughput(images, config, w))
        best_theirs = max(max(v) for v in theirs.values())
        cells = " | ".join(f"{max(theirs[w]):.0f}" for w in workers)
        print(f"| {arch} | {max(ours):.0f} | {cells} | {max(ours) / best_theirs:.2f}x |")

    ours_aug, theirs_aug = augmentation_throughput(images, config_for("small_cnn", args.batch_size))
    print("\n| augmentation only (2 views, no model) | img/s |")
    print("|---|---|")
    print(f"| sslmem BatchAugmenter (batched tensors) | {ours_aug:.0f} |")
    print(f"| lightly SimCLRTransform + DataLoader (0 workers) | {theirs_aug:.0f} |")

    print("\n| batch size (small_cnn) | sslmem img/s |")
    print("|---|---|")
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        if batch > args.images:
            continue
        config = config_for("small_cnn", batch)
        rate = best(partial(sslmem_throughput, images, config), args.sweep_repeats)
        print(f"| {batch} | {rate:.0f} |")


if __name__ == "__main__":
    main()
