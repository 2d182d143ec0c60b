"""The plain classification network: any registered backbone, global average pool, dropout, linear head."""

from __future__ import annotations

import torch
from torch import nn

from shared.backbones import create_backbone
from shared.networks import RemembersInitArgs


class ImageClassifier(RemembersInitArgs, nn.Module):
    """Logits ``(B, num_classes)`` from the backbone's coarsest feature map.

    ``cam_layer`` is an identity on that map: a stable module name (``"cam_layer"``) for Grad-CAM hooks
    whatever backbone sits underneath (MONAI's ``GradCAM`` finds layers by name).

    Args:
        num_classes: classes of the head.
        backbone: a name from ``shared.backbones.list_backbones()``.
        in_channels: image channels (1: grey CT, 3: RGB road crops).
        dropout: dropout before the linear head.
        backbone_kwargs: extra arguments of that backbone (e.g. ``{"width": 8}`` for ``tiny_cnn``).
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet18",
        in_channels: int = 3,
        dropout: float = 0.0,
        backbone_kwargs: dict | None = None,
    ):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"ImageClassifier needs at least 2 classes, got num_classes={num_classes}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.backbone = create_backbone(backbone, in_channels=in_channels, **(backbone_kwargs or {}))
        self.cam_layer = nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.backbone.feature_channels[-1], num_classes)
        self.num_classes = num_classes
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.cam_layer(self.backbone.forward_features(x)[-1])
        return self.head(self.dropout(self.pool(features).flatten(1)))
