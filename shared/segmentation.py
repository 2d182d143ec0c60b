"""A plain segmentation network on any shared backbone: U-Net decoder + 1x1 logits head."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from .backbones import UNet


def pad_to_multiple(images: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad (B, C, H, W) at the bottom and right up to multiples of ``multiple``, replicating the edge (a zero
    border would be an edge the network never saw in training); cut outputs back with ``[..., :H, :W]``. By hand:
    MONAI's ``DivisiblePad`` pads one channel-first image, not a (B, C, H, W) batch."""
    h, w = images.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if not (pad_h or pad_w):
        return images
    return torch.nn.functional.pad(images, (0, pad_w, 0, pad_h), mode="replicate")


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
        self.backbone = UNet(in_channels, encoder, encoder_kwargs, decoder_channels)
        self.head = nn.Conv2d(self.backbone.feature_channels[0], num_classes, kernel_size=1)
        self.num_classes = num_classes

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats = self.backbone.forward_features(x)
        return self.head(feats[0]), feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[0]


def class_pixel_frequencies(
    masks: Iterable[torch.Tensor], num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """Share of labelled pixels per class (float64, sums to 1) over label maps; ``ignore_index`` and any value
    outside ``0..num_classes-1`` (e.g. pasted-outlier labels) are left out."""
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for mask in masks:
        m = torch.as_tensor(mask).reshape(-1).long()
        m = m[(m != ignore_index) & (m >= 0) & (m < num_classes)]
        counts += torch.bincount(m.cpu(), minlength=num_classes).double()
    total = float(counts.sum())
    if total == 0:
        raise ValueError("class_pixel_frequencies: no labelled pixels in the masks given")
    return counts / total


def enet_class_weights(frequencies: torch.Tensor, c: float = 1.02) -> torch.Tensor:
    """Cross-entropy class weights ``1 / ln(c + p_class)`` (Paszke et al. 2016, ENet).

    Rare classes get up to ``1 / ln(c) ~ 50x`` the weight while common ones stay near ``1 / ln(1 + c)``: bounded,
    unlike plain inverse frequency, so a class seen a handful of times does not take over the loss. Written by
    hand: torch's ``cross_entropy(weight=)`` takes the weights but nothing in torch / MONAI computes them.
    """
    if c <= 1:
        raise ValueError(f"enet_class_weights: c must be > 1 (ln(c) is the weight bound), got {c}")
    return (1.0 / torch.log(c + frequencies.double())).float()
