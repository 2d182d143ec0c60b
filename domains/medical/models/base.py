"""The interface every medical segmenter shares: what the task, prediction, metrics, export and demo call."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod

import torch
from torch import nn

from shared.networks import RemembersInitArgs


class MedicalSegmenter(RemembersInitArgs, nn.Module, metaclass=ABCMeta):
    """Base of the medical segmenters: subclass it (``--model.network '{"class_path": "my_module.MyNet"}'``) for a
    model of one's own. Images are (B, ``in_channels``, H, W) in [0, 1]; a mask is one reader's (B, 1, H, W) in
    {0, 1}.

    A subclass defines (abstract: a class without one cannot be built):

    - ``forward(images) -> (B, 1, H, W)``: one "best guess" foreground logit map;
    - ``loss(images, masks) -> (loss, terms)``: the scalar training loss and a dict of named, detached scalar
      terms, each logged as ``train/<name>``; validation and test log ``rec_per_pixel`` and ``kl`` where given,
      and ``kl`` / ``kl_scale<i>`` in nats per image (``val/kl_nats``, for the posterior-collapse warning);
    - ``sample_logits(images, num_samples, **kwargs) -> (B, N, H, W)``: N sampled foreground logit maps per
      image (a deterministic model repeats its one map); the task's ``sample(images, n, **kwargs)`` passes
      ``kwargs`` on. Validation's set metrics (GED, Hungarian IoU, diversity, Dice, ECE), ``predict`` and the
      demo read these samples through ``sigmoid``.

    And may override:

    - ``loss_and_sample_logits(images, masks, num_samples, **kwargs)``: what validation and test call; by
      default ``loss`` then ``sample_logits`` (the same random draws, in the same order, as the two calls), which
      a model overrides to share the passes the two have in common;
    - ``kl_per_pixel``: True when the KL terms are divided by the image's pixel count (nats per image then
      multiply them back);
    - a ``backbone`` property: the encoder ``--model.pretrained_backbone`` loads (absent: refused).

    Set by the suite: ``init_args`` (the ``__init__`` arguments, which checkpoints rebuild the model from: keep
    them plain values) and ``input_size`` (the square it was trained on, from the task). ``predict`` pads whole
    images to the side multiple its shared backbones' ``feature_strides`` (or an HPU-Net core) need
    (:func:`domains.medical.predict.size_multiple`): a network that downsamples otherwise must take any size.
    ONNX export and the demo's own-checkpoint routing know the suite's three models and their subclasses only
    (``domains.medical.models.MODELS``); the demo feeds one-channel slices.
    """

    #: the KL terms are per image pixel (True) or per image (False)
    kl_per_pixel: bool = False
    #: the (H, W) the network was trained on: set by the task (``model.input_size``), read by export and the demo
    input_size: tuple[int, int] | None = None

    @abstractmethod
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (B, 1, H, W): the model's single best guess."""

    @abstractmethod
    def loss(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss and its named, detached terms."""

    @abstractmethod
    def sample_logits(self, images: torch.Tensor, num_samples: int, **kwargs) -> torch.Tensor:
        """(B, N, H, W) sampled foreground logits."""

    def loss_and_sample_logits(
        self, images: torch.Tensor, masks: torch.Tensor, num_samples: int, **kwargs
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """``loss(images, masks)`` and ``sample_logits(images, num_samples, **kwargs)``, in that order
        (evaluation)."""
        loss, terms = self.loss(images, masks)
        return loss, terms, self.sample_logits(images, num_samples, **kwargs)
