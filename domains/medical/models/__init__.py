"""Plain ``nn.Module`` segmenters for multi-reader lesion data (usable without Lightning).

Every model takes images (B, C, H, W) and one reader's mask (B, 1, H, W) in {0, 1} and shares one interface:

- ``loss(images, masks) -> (loss, terms)``: scalar loss and a dict of named, detached scalar terms (for logs);
- ``sample_logits(images, num_samples) -> (B, N, H, W)``: N sampled foreground logits per image;
- ``forward(images) -> (B, 1, H, W)``: one "best guess" logit map.

>>> import torch
>>> from domains.medical.models import ProbabilisticUNet
>>> net = ProbabilisticUNet(channels=(16, 32, 64), latent_dim=6)
>>> tuple(net.sample_logits(torch.zeros(2, 1, 64, 64), 16).sigmoid().shape)
(2, 16, 64, 64)
"""

from __future__ import annotations

from torch import nn

from .common import select_top_k
from .hpu_net import GECO, HierarchicalCore, HierarchicalProbUNet
from .prob_unet import AxisAlignedConvGaussian, FComb, ProbabilisticUNet
from .unet import UNetSegmenter

# the configs' short names (the demo, the benchmarks and the tests): models are built by their class
MODELS: dict[str, type[nn.Module]] = {
    "unet": UNetSegmenter,
    "prob_unet": ProbabilisticUNet,
    "hpu_net": HierarchicalProbUNet,
}


__all__ = [
    "GECO",
    "MODELS",
    "AxisAlignedConvGaussian",
    "FComb",
    "HierarchicalCore",
    "HierarchicalProbUNet",
    "ProbabilisticUNet",
    "UNetSegmenter",
    "select_top_k",
]
