"""Plain ``nn.Module`` segmenters for multi-reader lesion data (usable without Lightning).

Every model takes images (B, C, H, W) and one reader's mask (B, 1, H, W) in {0, 1} and shares one interface:

- ``loss(images, masks) -> (loss, terms)``: scalar loss and a dict of named, detached scalar terms (for logs);
- ``sample_logits(images, num_samples) -> (B, N, H, W)``: N sampled foreground logits per image;
- ``forward(images) -> (B, 1, H, W)``: one "best guess" logit map.

>>> from domains.medical.models import build_model
>>> net = build_model("prob_unet", channels=(16, 32, 64), latent_dim=6)
>>> probs = net.sample_logits(torch.zeros(2, 1, 64, 64), 16).sigmoid()  # (2, 16, 64, 64)
"""

from __future__ import annotations

import inspect

from torch import nn

from .common import select_top_k, top_k_cross_entropy
from .hpu_net import GECO, HierarchicalCore, HierarchicalProbUNet
from .prob_unet import AxisAlignedConvGaussian, FComb, ProbabilisticUNet
from .unet import UNetSegmenter

MODELS: dict[str, type[nn.Module]] = {
    "unet": UNetSegmenter,
    "prob_unet": ProbabilisticUNet,
    "hpu_net": HierarchicalProbUNet,
}


def build_model(name: str, **kwargs) -> nn.Module:
    """Build ``name`` (unet | prob_unet | hpu_net); an unknown keyword names the model's valid ones."""
    if name not in MODELS:
        raise ValueError(f"unknown medical model {name!r}; choose one of {', '.join(MODELS)}")
    cls = MODELS[name]
    valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise TypeError(f"{name}: unknown argument(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    return cls(**kwargs)


__all__ = [
    "GECO",
    "MODELS",
    "AxisAlignedConvGaussian",
    "FComb",
    "HierarchicalCore",
    "HierarchicalProbUNet",
    "ProbabilisticUNet",
    "UNetSegmenter",
    "build_model",
    "select_top_k",
    "top_k_cross_entropy",
]
