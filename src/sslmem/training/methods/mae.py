"""MAE: masked autoencoders reconstruct the pixels of masked patches.

He, Chen, Xie, Li, Dollár, Girshick, "Masked Autoencoders Are Scalable Vision Learners", CVPR
2022 (arXiv 2111.06377). A random ``mask_ratio`` of the patches is dropped; the ViT encoder sees
only the visible ones; a light transformer decoder fills in mask tokens and predicts the pixels
of the masked patches; the loss is their mean squared error. SSLMem's MAE encoders are ViT-Tiny
on 32 px (Wang et al., ICLR 2024).

Built from lightly's torchvision modules, so no timm is needed: the encoder's torchvision
``VisionTransformer`` is wrapped (not copied) in
:class:`~lightly.models.modules.MaskedVisionTransformerTorchvision` with
``weight_initialization="skip"`` (the encoder keeps its own initialisation) and fixed 2-D
sine-cosine position embeddings (MAE's choice); the decoder is
:class:`~lightly.models.modules.MAEDecoder`. MAE trains only the backbone: the encoder's
projection head is frozen and keeps its random initial weights (score MAE encoders at a
backbone layer).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightly.models import utils as lightly_utils
from lightly.models.modules import MAEDecoder, MaskedVisionTransformerTorchvision
from pydantic import Field, model_validator
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

from sslmem.config import TrainingConfig
from sslmem.device import to_device_layout
from sslmem.errors import ConfigError
from sslmem.models.encoder import Encoder
from sslmem.training.methods.base import MethodOptions, SSLMethod, StepContext, register_method


class MAEOptions(MethodOptions):
    """MAE options.

    Attributes:
        mask_ratio: Fraction of patches masked (paper: 0.75).
        decoder_dim: Decoder token width (paper: 512 for ViT-L; small for ViT-Tiny).
        decoder_layers: Decoder transformer blocks (paper: 8; lightly's example: 1).
        decoder_heads: Decoder attention heads (must divide ``decoder_dim``).
        norm_pix_loss: Normalise each target patch by its mean and std (paper, Table 1d).

    """

    mask_ratio: float = Field(0.75, gt=0, lt=1)
    decoder_dim: int = Field(128, ge=1)
    decoder_layers: int = Field(2, ge=1)
    decoder_heads: int = Field(4, ge=1)
    norm_pix_loss: bool = False

    @model_validator(mode="after")
    def _check(self) -> MAEOptions:
        if self.decoder_dim % self.decoder_heads != 0:
            raise ValueError(
                f"decoder_heads {self.decoder_heads} must divide decoder_dim {self.decoder_dim}"
            )
        return self


def random_token_mask(
    batch_size: int,
    sequence_length: int,
    mask_ratio: float,
    generator: torch.Generator,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random per-sample token masks that never mask the class token (index 0).

    The same rule as lightly's ``random_token_mask`` (keep ``int((L - 1)(1 - r)) + 1`` tokens,
    the class token included), but drawn from an explicit generator so a resumed run draws the
    same masks as an uninterrupted one.

    Returns:
        ``(idx_keep [B, K], idx_mask [B, L - K])`` token indices, int64.

    """
    num_keep = max(1, int((sequence_length - 1) * (1 - mask_ratio)) + 1)
    noise = torch.rand(batch_size, sequence_length, generator=generator, device=device)
    noise[:, 0] = -1.0
    order = torch.argsort(noise, dim=1)
    return order[:, :num_keep], order[:, num_keep:]


@register_method(
    "mae",
    options=MAEOptions,
    archs=("vit_tiny",),
    paper="MAE, He et al., CVPR 2022 (arXiv 2111.06377)",
)
class MAE(SSLMethod):
    """MAE on the encoder's torchvision ViT backbone.

    Shapes:
        ``views [B, 1, C, S, S] -> loss []``; ``L = (S / patch)^2 + 1`` tokens.

    """

    num_views = 1
    trains_head = False

    def __init__(self, encoder: Encoder, training: TrainingConfig, options: MAEOptions) -> None:
        super().__init__(encoder, training, options)
        vit = encoder.backbone
        if not isinstance(vit, VisionTransformer):
            raise ConfigError(
                f"SSL method 'mae' needs a torchvision VisionTransformer backbone, architecture "
                f"{encoder.arch!r} has {type(vit).__name__}",
                "use --arch vit_tiny",
            )
        self.mae_options = options
        self.patch_size = int(vit.patch_size)
        self.sequence_length = int(vit.seq_length)
        self.in_channels = encoder.in_channels
        self.masked_vit = MaskedVisionTransformerTorchvision(
            vit=vit, weight_initialization="skip", pos_embed_initialization="sincos"
        )
        # Only the visible tokens enter the encoder (idx_keep), so its own mask token is never
        # used; freezing it keeps DDP from waiting for a gradient that never comes.
        self.masked_vit.mask_token.requires_grad_(False)
        encoder.head.requires_grad_(False)
        self.decoder = MAEDecoder(
            seq_length=self.sequence_length,
            num_layers=options.decoder_layers,
            num_heads=options.decoder_heads,
            embed_input_dim=int(vit.hidden_dim),
            hidden_dim=options.decoder_dim,
            mlp_dim=4 * options.decoder_dim,
            out_dim=self.patch_size**2 * self.in_channels,
        )
        self.mask_token = nn.Parameter(torch.zeros(1, 1, options.decoder_dim))
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, views: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """Mean squared error of the predicted pixels of the masked patches."""
        images = to_device_layout(views[:, 0], views.device)
        batch_size = images.shape[0]
        idx_keep, idx_mask = random_token_mask(
            batch_size,
            self.sequence_length,
            self.mae_options.mask_ratio,
            ctx.generator,
            images.device,
        )
        encoded = self.masked_vit.encode(images, idx_keep=idx_keep)  # [B, K, D]
        tokens = lightly_utils.repeat_token(self.mask_token, (batch_size, self.sequence_length))
        tokens = lightly_utils.set_at_index(
            tokens, idx_keep, self.decoder.embed(encoded).type_as(tokens)
        )
        decoded = self.decoder.decode(tokens)  # [B, L, decoder_dim]
        prediction = self.decoder.predict(lightly_utils.get_at_index(decoded, idx_mask))
        # Patches have no class token: token i is patch i - 1.
        patches = lightly_utils.patchify(images.contiguous(), self.patch_size)
        target = lightly_utils.get_at_index(patches, idx_mask - 1)
        if self.mae_options.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6).sqrt()
        return F.mse_loss(prediction.float(), target.float())
