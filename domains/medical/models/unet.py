"""Deterministic U-Net baseline on the shared U-Net (one foreground logit, BCE-with-logits)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from shared.segmentation import SegmentationNet

from .base import MedicalSegmenter
from .common import bce_sum_per_image, check_images, check_masks, init_foreground_bias


class UNetSegmenter(MedicalSegmenter):
    """The plain U-Net: one mask per image. Its N "samples" are N copies of the same logits.

    Shares the interface of the probabilistic models (``loss``, ``sample_logits``) so the task, metrics and
    benchmark treat all three alike. The loss is BCE summed over pixels per image, averaged over the batch:
    the same scale as the Prob U-Net's reconstruction term, so their ``train/rec`` curves compare directly.

    ``encoder``: any registered backbone under the shared U-Net decoder (``shared.backbones.list_backbones()``,
    a backbone of your own too), with ``encoder_kwargs``; ``channels`` are the default ``unet_encoder``'s.
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: Sequence[int] = (32, 64, 128, 192),
        decoder_channels: Sequence[int] | None = None,
        foreground_prior: float = 0.05,
        encoder: str = "unet_encoder",
        encoder_kwargs: dict | None = None,
    ):
        super().__init__()
        kwargs = dict(encoder_kwargs or {})
        if encoder == "unet_encoder":
            kwargs.setdefault("channels", list(channels))
        self.net = SegmentationNet(
            num_classes=1,
            in_channels=in_channels,
            encoder=encoder,
            encoder_kwargs=kwargs,
            decoder_channels=None if decoder_channels is None else list(decoder_channels),
        )
        init_foreground_bias(self.net.head, foreground_prior)
        self.in_channels = in_channels

    @property
    def backbone(self) -> nn.Module:
        """The U-Net's encoder (a registry backbone): what ``--model.pretrained_backbone`` loads."""
        return self.net.backbone.encoder

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (B, 1, H, W)."""
        check_images(images, self.in_channels)
        return self.net(images)

    def loss(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        check_masks(masks, images)
        return self._loss_of(self(images), masks)

    @staticmethod
    def _loss_of(logits: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        rec = bce_sum_per_image(logits, masks)
        return rec, {"rec": rec.detach(), "rec_per_pixel": rec.detach() / masks[0].numel()}

    def sample_logits(self, images: torch.Tensor, num_samples: int) -> torch.Tensor:
        """(B, N, H, W): the one prediction repeated, so set metrics (GED, diversity) apply unchanged."""
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        logits = self(images)
        return logits.expand(-1, num_samples, -1, -1)

    def loss_and_sample_logits(
        self, images: torch.Tensor, masks: torch.Tensor, num_samples: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """``loss(images, masks)`` and ``sample_logits(images, num_samples)`` from one forward pass
        (evaluation: the two ran the whole network each)."""
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        check_masks(masks, images)
        logits = self(images)
        loss, terms = self._loss_of(logits, masks)
        return loss, terms, logits.expand(-1, num_samples, -1, -1)
