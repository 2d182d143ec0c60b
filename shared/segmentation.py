"""A plain segmentation network on any shared backbone: U-Net decoder + 1x1 logits head."""

from __future__ import annotations

import torch
from torch import nn

from .backbones import UNet, create_backbone


class SegmentationNet(nn.Module):
    """Per-pixel logits at input resolution from a U-Net decoder on any registered encoder.

    ``encoder="unet_encoder"`` gives the classic U-Net; ``"resnet18"``, ``"vit"``, ... put the same decoder on a
    CNN or transformer encoder. ``forward_with_features`` also returns the decoder maps (for feature-based scores).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        encoder: str = "unet_encoder",
        encoder_kwargs: dict | None = None,
        decoder_channels: list[int] | None = None,
    ):
        super().__init__()
        self.backbone = UNet(
            in_channels=in_channels,
            encoder=create_backbone(encoder, in_channels=in_channels, **(encoder_kwargs or {})),
            decoder_channels=decoder_channels,
        )
        self.head = nn.Conv2d(self.backbone.feature_channels[0], num_classes, kernel_size=1)
        self.num_classes = num_classes

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats = self.backbone.forward_features(x)
        return self.head(feats[0]), feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[0]
