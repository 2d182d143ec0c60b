"""Choices of the road detector and its task that no test pinned (a mutation audit changed each line and every
test still passed): the FPN's levels and strides, the head's GroupNorm, the auxiliary semantic head's level and
weight, and the training loss the task logs and returns."""

from __future__ import annotations

import torch

from domains.driving.detection.model import RoadDetector
from tests.helpers import detection_task

TINY = {"backbone": "tiny_cnn", "backbone_kwargs": {"width": 8}, "input_size": (64, 128), "head_convs": 1}


def _semantic_losses(model: RoadDetector) -> dict[str, torch.Tensor]:
    """The training losses of one 64x128 image with a box and an all-class-1 semantic map."""
    torch.manual_seed(0)
    image = torch.rand(3, 64, 128)
    target = {
        "boxes": torch.tensor([[10.0, 10.0, 40.0, 40.0]]),
        "labels": torch.tensor([0]),
        "semantic": torch.ones(64, 128, dtype=torch.long),
    }
    return model.train()([image], [target])


def test_default_fpn_takes_the_backbone_s_coarsest_levels():
    """The defaults (resnet18, ``fpn_levels`` 3) take resnet18's last three maps (strides 8, 16, 32 of
    2..32) plus P6 and P7: strides 8 to 128, torchvision's FCOS levels."""
    fpn = RoadDetector(num_classes=3).detector.backbone
    assert fpn.level_indices == [2, 3, 4]
    assert fpn.strides == [8, 16, 32, 64, 128]


def test_default_fcos_head_keeps_torchvision_s_32_groups():
    """From 64 FPN channels up the head keeps torchvision's GroupNorm(32) (the default width is 128)."""
    head = RoadDetector(num_classes=3).detector.head
    groups = {m.num_groups for m in head.modules() if isinstance(m, torch.nn.GroupNorm)}
    assert groups == {32}


def test_semantic_loss_scales_with_its_weight():
    """The reported ``semantic`` term is ``semantic_loss_weight`` times the cross-entropy: weight 0 gives 0, and
    weight 0.5 gives half of weight 1 on the same network and batch."""
    torch.manual_seed(0)
    model = RoadDetector(2, fpn_channels=32, semantic_classes=3, semantic_loss_weight=1.0, **TINY)
    full = _semantic_losses(model)["semantic"]
    model.semantic_loss_weight = 0.5
    assert float(_semantic_losses(model)["semantic"]) == 0.5 * float(full) > 0
    model.semantic_loss_weight = 0.0
    assert float(_semantic_losses(model)["semantic"]) == 0.0


def test_semantic_head_reads_the_finest_fpn_level():
    """The semantic head runs on the finest FPN map: tiny_cnn's stride-2 level, 32x64 for a 64x128 input (the
    coarsest, P7 at stride 32, is 2x4)."""
    torch.manual_seed(0)
    model = RoadDetector(2, fpn_channels=32, semantic_classes=3, **TINY)
    assert model.detector.backbone.strides[0] == 2
    seen = []
    model.semantic_head.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[-2:])))
    _semantic_losses(model)
    assert seen == [(32, 64)]


def test_training_loss_is_the_sum_of_every_term():
    """The loss the task returns (and logs as ``train/loss``) is the sum of all the terms, the last included."""
    task = detection_task(**TINY, fpn_channels=32)
    logged = {}
    task.log = lambda name, value, **kwargs: logged.__setitem__(name, float(value))
    losses = {
        "classification": torch.tensor(1.0),
        "bbox_regression": torch.tensor(2.0),
        "bbox_ctrness": torch.tensor(0.5),
    }
    assert float(task.log_training_losses(losses, 1)) == 3.5
    assert logged == {
        "train/loss": 3.5,
        "train/classification": 1.0,
        "train/bbox_regression": 2.0,
        "train/bbox_ctrness": 0.5,
    }
