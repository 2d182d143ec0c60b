"""Shared backbones behind one feature interface and one registry.

>>> from shared.backbones import create_backbone, list_backbones
>>> net = create_backbone("resnet18", in_channels=1)
>>> [f.shape[1] for f in net.forward_features(torch.zeros(1, 1, 64, 64))] == net.feature_channels
"""

from . import cnn, transformer, unet  # noqa: F401  (registers the families)
from .base import IMAGENET_MEAN, IMAGENET_STD, Backbone, create_backbone, list_backbones, register_backbone
from .unet import UNet, UNetDecoder, UNetEncoder, upsample_nearest
from .weights import (
    BackboneFreezeUnfreeze,
    FreezableBackbone,
    LoadReport,
    NothingLoadedError,
    WeightLoadingError,
    load_backbone_weights,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Backbone",
    "BackboneFreezeUnfreeze",
    "FreezableBackbone",
    "LoadReport",
    "NothingLoadedError",
    "UNet",
    "UNetDecoder",
    "UNetEncoder",
    "WeightLoadingError",
    "create_backbone",
    "list_backbones",
    "load_backbone_weights",
    "register_backbone",
    "upsample_nearest",
]
