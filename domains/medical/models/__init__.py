"""Plain ``nn.Module`` segmenters for multi-reader lesion data (usable without Lightning).

Every model takes images (B, C, H, W) and one reader's mask (B, 1, H, W) in {0, 1} and is a
:class:`~domains.medical.models.base.MedicalSegmenter`, whose docstring states the whole interface the task
calls:

- ``loss(images, masks) -> (loss, terms)``: scalar loss and a dict of named, detached scalar terms (for logs);
- ``sample_logits(images, num_samples) -> (B, N, H, W)``: N sampled foreground logits per image;
- ``forward(images) -> (B, 1, H, W)``: one "best guess" logit map;
- ``loss_and_sample_logits(images, masks, num_samples)``: the two for evaluation (by default one call after
  the other; each model here shares the passes they have in common).

A model of one's own subclasses ``MedicalSegmenter`` (or one of these models) and is given as
``--model.network '{"class_path": "my_module.MyNet", "init_args": {...}}'``.

>>> import torch
>>> from domains.medical.models import ProbabilisticUNet
>>> net = ProbabilisticUNet(channels=(16, 32, 64), latent_dim=6)
>>> tuple(net.sample_logits(torch.zeros(2, 1, 64, 64), 16).sigmoid().shape)
(2, 16, 64, 64)
"""

from __future__ import annotations

import importlib

from shared.networks import is_trusted

from .base import MedicalSegmenter
from .common import select_top_k
from .hpu_net import GECO, HierarchicalCore, HierarchicalProbUNet
from .prob_unet import AxisAlignedConvGaussian, FComb, ProbabilisticUNet
from .unet import UNetSegmenter

# The suite's models by short name (configs and checkpoints name a model by its class_path): the task's
# ``model_name`` (:func:`model_name`), which names the ONNX export's files and routes a checkpoint on the demo
# page, the benchmarks (benchmarks/medical.py) and the tests.
MODELS: dict[str, type[MedicalSegmenter]] = {
    "unet": UNetSegmenter,
    "prob_unet": ProbabilisticUNet,
    "hpu_net": HierarchicalProbUNet,
}


def model_name(network: MedicalSegmenter | type | str) -> str | None:
    """The ``MODELS`` name of the model ``network`` is or extends (a subclass is named by the model it extends;
    the task's ``model_name`` and the demo's checkpoint routing both ask this); None for a model of one's own.

    ``network``: a network, its class, or a checkpoint's ``class_path``, whose module is imported as
    :func:`shared.networks.build_network` would (the suite's packages, or one already imported; another: None,
    since importing runs its code).
    """
    if isinstance(network, str):
        if not is_trusted(network):
            return None
        module, _, class_name = network.rpartition(".")
        network = getattr(importlib.import_module(module), class_name, None)
    cls = network if isinstance(network, type) else type(network)
    return next((name for name, model in MODELS.items() if issubclass(cls, model)), None)


__all__ = [
    "GECO",
    "MODELS",
    "AxisAlignedConvGaussian",
    "FComb",
    "HierarchicalCore",
    "HierarchicalProbUNet",
    "MedicalSegmenter",
    "ProbabilisticUNet",
    "UNetSegmenter",
    "model_name",
    "select_top_k",
]
