"""Batched augmentation with per-sample random parameters, shared by training and scoring.

SSLMem's alignment loss is an expectation over the augmentation distribution ``Aug(x)`` (Wang et
al., ICLR 2024, Eq. 1). Scoring draws many views of many points; training draws two views per
point per step. Both run here, on batched tensors on the device, so per-sample CPU work never
bounds a GPU.

Why not ``torchvision.transforms.v2`` on a batch: it draws *one* set of parameters per call, so
every point in the batch would get the same crop. Why not kornia: its parameters come from the
global RNG in batch order, so a point's views would depend on which other points share its batch.
Here every random number is a counter-based hash of ``(seed, sample key, view id, slot)``: a
point's views depend only on its key, never on batch size, chunking, order or device -- which is
what makes scores reproducible, permutation-equivariant and comparable across model versions.

Pipeline per view (SimCLR-style, Chen et al. 2020): random resized crop + horizontal flip (one
affine ``grid_sample``, supersampled when it shrinks so it does not alias), colour jitter
(brightness, contrast, saturation; fixed order) with probability ``jitter_prob``, random
grayscale, then normalisation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator

_MASK32 = 0xFFFFFFFF
# Parameter slots per view; each slot is an independent uniform in [0, 1).
_SLOT_SCALE, _SLOT_RATIO, _SLOT_CX, _SLOT_CY, _SLOT_FLIP = 0, 1, 2, 3, 4
_SLOT_JITTER_ON, _SLOT_BRIGHT, _SLOT_CONTRAST, _SLOT_SAT, _SLOT_GRAY = 5, 6, 7, 8, 9
_NUM_SLOTS = 10


class AugmentationSpec(BaseModel):
    """The augmentation distribution ``Aug(x)``; recorded with every score and checkpoint.

    Attributes:
        output_size: Side of the square output views; ``None`` keeps the input height.
        crop_scale: Range of the crop's area as a fraction of the image.
        crop_ratio: Range of the crop's aspect ratio (sampled log-uniformly).
        hflip_prob: Probability of a horizontal flip.
        jitter_prob: Probability of applying colour jitter.
        brightness: Brightness factor drawn from ``[1 - b, 1 + b]``.
        contrast: Contrast factor drawn from ``[1 - c, 1 + c]``.
        saturation: Saturation factor drawn from ``[1 - s, 1 + s]`` (RGB only).
        grayscale_prob: Probability of converting to grayscale (RGB only).
        mean: Per-channel normalisation mean (one value broadcasts to all channels).
        std: Per-channel normalisation std.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    output_size: int | None = Field(None, ge=4)
    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_prob: float = Field(0.5, ge=0, le=1)
    jitter_prob: float = Field(0.8, ge=0, le=1)
    brightness: float = Field(0.4, ge=0, lt=1)
    contrast: float = Field(0.4, ge=0, lt=1)
    saturation: float = Field(0.4, ge=0, lt=1)
    grayscale_prob: float = Field(0.2, ge=0, le=1)
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)

    @model_validator(mode="after")
    def _check_ranges(self) -> AugmentationSpec:
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")
        rlo, rhi = self.crop_ratio
        if not 0 < rlo <= rhi:
            raise ValueError(f"crop_ratio must satisfy 0 < low <= high, got {self.crop_ratio}")
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise ValueError("mean and std need the same length and std > 0")
        return self


def _mul32(x: torch.Tensor, constant: int) -> torch.Tensor:
    """``(x * constant) mod 2**32`` for ``0 <= x < 2**32`` without int64 overflow."""
    low = (x & 0xFFFF) * constant
    high = ((x >> 16) * constant) & 0xFFFF
    return (low + (high << 16)) & _MASK32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer finaliser (lowbias32, C. Wellons) on int64 tensors holding uint32."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def counter_uniform(
    seed: int, keys: torch.Tensor, view_ids: torch.Tensor, num_slots: int
) -> torch.Tensor:
    """Counter-based uniforms in ``[0, 1)``: a pure function of (seed, key, view, slot).

    Args:
        seed: Run seed.
        keys: Sample keys ``[B]`` (int64; e.g. dataset indices).
        view_ids: View ids ``[V]`` (int64).
        num_slots: Independent numbers per (key, view).

    Returns:
        Float32 tensor ``[B, V, num_slots]`` on ``keys.device``.
    """
    device = keys.device
    keys = keys.to(torch.int64)
    key_lo = (keys & _MASK32)[:, None, None]
    key_hi = ((keys >> 32) & _MASK32)[:, None, None]
    views = view_ids.to(device=device, dtype=torch.int64)[None, :, None] & _MASK32
    slots = torch.arange(num_slots, device=device, dtype=torch.int64)[None, None, :]
    h = _mix32(torch.full((), seed & _MASK32, device=device, dtype=torch.int64) ^ 0x9E3779B9)
    h = _mix32(h ^ ((seed >> 32) & _MASK32))
    h = _mix32(h ^ key_lo)
    h = _mix32(h ^ key_hi)
    h = _mix32(h ^ views)
    h = _mix32(h ^ slots)
    return (h >> 8).to(torch.float32) * (1.0 / (1 << 24))


class BatchAugmenter:
    """Draws augmented views of uint8 image batches on their device.

    Args:
        spec: The augmentation distribution.
    """

    def __init__(self, spec: AugmentationSpec) -> None:
        self.spec = spec

    def _output_hw(self, images: torch.Tensor) -> tuple[int, int]:
        size = self.spec.output_size
        return (images.shape[-2], images.shape[-1]) if size is None else (size, size)

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        mean = torch.tensor(self.spec.mean, device=x.device, dtype=x.dtype)
        std = torch.tensor(self.spec.std, device=x.device, dtype=x.dtype)
        if mean.numel() not in (1, channels):
            raise ValueError(
                f"augmentation mean/std have {mean.numel()} values for {channels}-channel images"
            )
        return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)

    def clean(self, images: torch.Tensor) -> torch.Tensor:
        """The un-augmented image at the output size, normalised (clean-anchor mode).

        Resampled exactly as a view whose crop is the whole image, without flip or jitter (the
        same :meth:`_resample`, so anchor and views are filtered alike); at the input size it
        is the image itself.

        Args:
            images: uint8 ``[B, C, H, W]``.

        Returns:
            Float32 ``[B, C, S, S]``.
        """
        x = images.to(torch.float32) / 255.0
        hw = self._output_hw(images)
        if (x.shape[-2], x.shape[-1]) != hw:
            theta = torch.zeros(x.shape[0], 2, 3, device=x.device, dtype=x.dtype)
            theta[:, 0, 0] = 1.0
            theta[:, 1, 1] = 1.0
            x = self._resample(x, theta, hw)
        return self._normalize(x)

    def views(
        self, images: torch.Tensor, keys: torch.Tensor, view_ids: torch.Tensor, seed: int
    ) -> torch.Tensor:
        """Draw one augmented view per (image, view id).

        Args:
            images: uint8 ``[B, C, H, W]`` (C = 1 or 3), on the compute device.
            keys: int64 ``[B]``: a stable id per image (its dataset index), so its views do not
                depend on the batch it is in.
            view_ids: int64 ``[V]``: which views to draw.
            seed: Run seed.

        Returns:
            Float32 views ``[B, V, C, S, S]``, normalised.
        """
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(
                f"expected uint8 [B, C, H, W] images, got {images.dtype} {images.shape}"
            )
        b, c, _, _ = images.shape
        v = int(view_ids.numel())
        u = counter_uniform(seed, keys.to(images.device), view_ids, _NUM_SLOTS).reshape(b * v, -1)
        x = (images.to(torch.float32) / 255.0).repeat_interleave(v, dim=0)  # [B*V, C, H, W]
        x = self._crop_and_flip(x, u, self._output_hw(images))
        x = self._color(x, u, c)
        return self._normalize(x).reshape(b, v, c, *x.shape[-2:])

    def _crop_and_flip(
        self, x: torch.Tensor, u: torch.Tensor, out_hw: tuple[int, int]
    ) -> torch.Tensor:
        spec = self.spec
        lo, hi = spec.crop_scale
        area = lo + (hi - lo) * u[:, _SLOT_SCALE]
        log_lo, log_hi = math.log(spec.crop_ratio[0]), math.log(spec.crop_ratio[1])
        ratio = torch.exp(log_lo + (log_hi - log_lo) * u[:, _SLOT_RATIO])
        # Crop width/height as fractions of the image; clamp keeps the crop inside the image.
        w = torch.sqrt(area * ratio).clamp(max=1.0)
        h = torch.sqrt(area / ratio).clamp(max=1.0)
        # Crop centre in normalised [-1, 1] coordinates, uniform over valid positions.
        cx = (1 - w) * (2 * u[:, _SLOT_CX] - 1)
        cy = (1 - h) * (2 * u[:, _SLOT_CY] - 1)
        flip = torch.where(u[:, _SLOT_FLIP] < spec.hflip_prob, -1.0, 1.0)
        theta = torch.zeros(x.shape[0], 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0] = w * flip
        theta[:, 0, 2] = cx
        theta[:, 1, 1] = h
        theta[:, 1, 2] = cy
        return self._resample(x, theta, out_hw)

    @staticmethod
    def _resample(x: torch.Tensor, theta: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
        """Bilinear affine resampling ``[N, C, H, W] -> [N, C, *out_hw]``, antialiased.

        ``grid_sample`` alone aliases when it shrinks (each output pixel reads 2x2 input
        pixels). When the output is smaller than the input, the grid is supersampled by
        ``s = ceil(input / output)`` and box-averaged back (``s x s`` taps per output pixel):
        ``s`` depends only on the image and output sizes, so a point's views never depend on
        the other crops in its batch. At or above the input size (``s = 1``) this is plain
        bilinear ``grid_sample``.
        """
        (h, w), (oh, ow) = x.shape[-2:], out_hw
        s = max(1, math.ceil(max(h / oh, w / ow) - 1e-9))
        grid = F.affine_grid(theta, [x.shape[0], x.shape[1], oh * s, ow * s], align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return F.avg_pool2d(out, s) if s > 1 else out

    def _color(self, x: torch.Tensor, u: torch.Tensor, channels: int) -> torch.Tensor:
        spec = self.spec

        def factor(slot: int, strength: float) -> torch.Tensor:
            f = 1 - strength + 2 * strength * u[:, slot]
            on = u[:, _SLOT_JITTER_ON] < spec.jitter_prob
            return torch.where(on, f, torch.ones_like(f)).view(-1, 1, 1, 1)

        x = (x * factor(_SLOT_BRIGHT, spec.brightness)).clamp(0, 1)
        gray = _grayscale(x)
        mean_gray = gray.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean_gray) * factor(_SLOT_CONTRAST, spec.contrast) + mean_gray).clamp(0, 1)
        if channels == 3:
            gray = _grayscale(x)
            x = ((x - gray) * factor(_SLOT_SAT, spec.saturation) + gray).clamp(0, 1)
            to_gray = (u[:, _SLOT_GRAY] < spec.grayscale_prob).view(-1, 1, 1, 1)
            x = torch.where(to_gray, _grayscale(x).expand_as(x), x)
        return x


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma ``[N, C, H, W] -> [N, 1, H, W]`` (identity for one channel)."""
    if x.shape[1] == 1:
        return x
    weights = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype)
    return (x * weights.view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
