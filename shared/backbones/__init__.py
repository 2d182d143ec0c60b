"""Shared backbones behind one feature interface and one registry.

>>> import torch
>>> from shared.backbones import create_backbone, list_backbones
>>> "resnet18" in list_backbones("cnn")
True
>>> net = create_backbone("resnet18", in_channels=1)
>>> feats = net.forward_features(torch.zeros(1, 1, 64, 64))  # finest first
>>> [f.shape[1] for f in feats] == net.feature_channels
True
>>> net.feature_strides, [f.shape[-1] for f in feats]
([2, 4, 8, 16, 32], [32, 16, 8, 4, 2])
"""

from . import cnn, transformer, unet  # noqa: F401  (registers the families)
from .base import IMAGENET_MEAN, IMAGENET_STD, Backbone, create_backbone, list_backbones, register_backbone
from .unet import UNet, UNetDecoder, UNetEncoder, upsample_nearest
from .weights import (
    FreezableBackbone,
    LoadReport,
    NothingLoadedError,
    PartialLoadWarning,
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
    "PartialLoadWarning",
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


def __getattr__(name: str):
    """``BackboneFreezeUnfreeze`` (a Lightning callback) is imported when asked for: the backbones themselves
    need no Lightning."""
    if name == "BackboneFreezeUnfreeze":
        from .finetuning import BackboneFreezeUnfreeze

        return BackboneFreezeUnfreeze
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
