"""Transformer backbones: a torchvision ViT with a simple feature pyramid, and MONAI's 2D Swin transformer."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from .base import Backbone, register_backbone


class ViTBackbone(Backbone):
    """torchvision ``VisionTransformer`` turned into a multi-scale backbone (ViTDet's simple feature pyramid).

    The last token map (stride = patch size) is upsampled by transposed convs to x4 and x2, kept at x1 and
    max-pooled to x1/2, giving four maps (strides p/4, p/2, p, 2p). Position embeddings are interpolated when
    the input differs from ``image_size``, so one model serves several input sizes (sizes must be divisible by
    the patch size) of at least two patches a side (the x1/2 pool). Weights of torchvision's ``vit_b_16`` load
    as they are (``load_backbone_weights(net, path)``: its ``torchvision_prefix`` is ``net.``).
    """

    torchvision_prefix = "net."
    adapter_layers = ("up4", "up2", "same", "down2")  # the simple feature pyramid: no torchvision ViT has it

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 224,
        patch_size: int = 16,
        num_layers: int = 6,
        num_heads: int = 3,
        hidden_dim: int = 192,
        mlp_dim: int = 768,
        pyramid_channels: int = 128,
    ):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"ViT image_size={image_size} must be divisible by patch_size={patch_size}")
        if patch_size % 4:
            raise ValueError(
                f"ViT patch_size must be a multiple of 4 for the feature pyramid, got {patch_size}"
            )
        net = torchvision.models.VisionTransformer(
            image_size=image_size,
            patch_size=patch_size,
            num_layers=num_layers,
            num_heads=num_heads,
            hidden_dim=hidden_dim,
            mlp_dim=mlp_dim,
        )
        if in_channels != 3:
            net.conv_proj = nn.Conv2d(in_channels, hidden_dim, kernel_size=patch_size, stride=patch_size)
        net.heads = nn.Identity()
        self.net = net
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.min_input_size = 2 * patch_size  # the max-pool to stride 2p needs 2 tokens a side
        self.grid_size = image_size // patch_size
        c = pyramid_channels
        self.up4 = nn.Sequential(
            nn.ConvTranspose2d(hidden_dim, hidden_dim // 2, 2, stride=2),
            nn.GroupNorm(1, hidden_dim // 2),
            nn.GELU(),
            nn.ConvTranspose2d(hidden_dim // 2, c, 2, stride=2),
        )
        self.up2 = nn.ConvTranspose2d(hidden_dim, c, 2, stride=2)
        self.same = nn.Conv2d(hidden_dim, c, 1)
        self.down2 = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(hidden_dim, c, 1))
        self.feature_channels = [c, c, c, c]
        self.feature_strides = [patch_size // 4, patch_size // 2, patch_size, patch_size * 2]

    def adapt_loaded(self, name: str, value: torch.Tensor) -> torch.Tensor | None:
        """A file's position embedding for another grid (a ViT trained at another image size), resampled to
        this one with torchvision's own ``interpolate_embeddings``; None for any other tensor."""
        grid = value.shape[1] - 1 if value.ndim == 3 else 0  # class token first, then a square grid
        if name != "net.encoder.pos_embedding" or grid < 1 or math.isqrt(grid) ** 2 != grid:
            return None  # a DeiT distillation token, no class token: reported as a shape mismatch
        from collections import OrderedDict

        from torchvision.models.vision_transformer import interpolate_embeddings

        state = OrderedDict({"encoder.pos_embedding": value})
        return interpolate_embeddings(self.grid_size * self.patch_size, self.patch_size, state)[
            "encoder.pos_embedding"
        ]

    def _position_embedding(self, h: int, w: int) -> torch.Tensor:
        pos = self.net.encoder.pos_embedding  # (1, 1 + g*g, D): class token first
        if h == w == self.grid_size:
            return pos
        cls, grid = pos[:, :1], pos[:, 1:]
        d = grid.shape[-1]
        grid = grid.reshape(1, self.grid_size, self.grid_size, d).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
        return torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(1, h * w, d)], dim=1)

    def _forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[-2] % self.patch_size or x.shape[-1] % self.patch_size:
            raise ValueError(
                f"ViT input size {tuple(x.shape[-2:])} must be divisible by patch_size={self.patch_size}"
            )
        tokens = self.net.conv_proj(x)  # (B, D, h, w)
        b, d, h, w = tokens.shape
        tokens = tokens.flatten(2).transpose(1, 2)
        tokens = torch.cat([self.net.class_token.expand(b, -1, -1), tokens], dim=1)
        enc = self.net.encoder
        tokens = enc.ln(enc.layers(enc.dropout(tokens + self._position_embedding(h, w))))
        fmap = tokens[:, 1:].transpose(1, 2).reshape(b, d, h, w)
        return [self.up4(fmap), self.up2(fmap), self.same(fmap), self.down2(fmap)]


class SwinBackbone(Backbone):
    """MONAI's Swin transformer (the SwinUNETR encoder) in 2D; features at strides 2, 4, 8, 16, 32.

    Input sizes must be divisible by 32 (patch 2 then four 2x merges).
    """

    def __init__(
        self,
        in_channels: int = 3,
        embed_dim: int = 24,
        depths: tuple[int, ...] = (2, 2, 2, 2),
        num_heads: tuple[int, ...] = (3, 6, 12, 24),
        window_size: int = 7,
    ):
        super().__init__()
        # imported here: MONAI takes ~2 s to import, and `--help` or a CNN-only run should not pay for it
        from monai.networks.nets.swin_unetr import SwinTransformer

        self.net = SwinTransformer(
            in_chans=in_channels,
            embed_dim=embed_dim,
            window_size=(window_size, window_size),
            patch_size=(2, 2),
            depths=depths,
            num_heads=num_heads,
            spatial_dims=2,
        )
        self.in_channels = in_channels
        self.feature_channels = [embed_dim * 2**i for i in range(5)]
        self.feature_strides = [2, 4, 8, 16, 32]

    def _forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[-2] % 32 or x.shape[-1] % 32:
            raise ValueError(f"Swin input size {tuple(x.shape[-2:])} must be divisible by 32")
        return list(self.net(x.contiguous(), normalize=True))


register_backbone("vit", "transformer")(ViTBackbone)
register_backbone("vit_b_16", "transformer")(
    lambda in_channels=3, image_size=224, pyramid_channels=256: ViTBackbone(
        in_channels=in_channels,
        image_size=image_size,
        patch_size=16,
        num_layers=12,
        num_heads=12,
        hidden_dim=768,
        mlp_dim=3072,
        pyramid_channels=pyramid_channels,
    )
)
register_backbone("swin", "transformer")(SwinBackbone)

__all__ = ["SwinBackbone", "ViTBackbone"]
