"""The instance task logs ``val/loss`` as every task does: Mask R-CNN's training loss on the validation images
(``val/loss_classifier``, ``val/loss_box_reg``, ``val/loss_mask``, ``val/loss_objectness``,
``val/loss_rpn_box_reg``, named as its ``train/*`` terms), with nothing learnt from them. The code is the
detector's (:meth:`DetectorTask.losses_without_update`, ``_log_validation_loss``), shared by both tasks."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.ops import FrozenBatchNorm2d

from domains.driving.instances.model import RoadInstanceSegmenter
from domains.driving.instances.task import InstanceTask
from tests.driving.layouts import TINY_MASK_RCNN
from tests.driving.test_instances import _painted_batch
from tests.driving.test_metric_names_s40 import _state
from tests.helpers import quiet_trainer

pytestmark = pytest.mark.usefixtures("one_thread")

TERMS = ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg")


def _task() -> InstanceTask:
    torch.manual_seed(0)
    return InstanceTask(network=RoadInstanceSegmenter(2, **TINY_MASK_RCNN), class_names=["Car", "Pedestrian"])


def _batch(seed: int = 0) -> tuple[list[torch.Tensor], list[dict]]:
    """Two painted 128x64 scenes with the keys the instance data module gives (no DontCare region)."""
    images, targets = _painted_batch(2, seed=seed)
    return images, [{**t, "ignore_mask": torch.zeros(t["masks"].shape[-2:], dtype=torch.bool)} for t in targets]


def test_validate_logs_the_instance_loss_and_its_terms_and_learns_nothing():
    task = _task()
    task.model.train()  # a run whose BatchNorm has moved off its initial statistics
    with torch.no_grad():
        task.model(*_batch(seed=1))
    task.eval()
    before = _state(task)
    (logged,) = quiet_trainer(limit_val_batches=1).validate(
        task, DataLoader([_batch()], batch_size=None), verbose=False
    )
    terms = {f"val/{name}" for name in TERMS}
    assert {"val/loss", *terms} <= set(logged) and "val/mask_map50" in logged
    assert logged["val/loss"] == pytest.approx(sum(logged[t] for t in terms), rel=1e-5) and logged["val/loss"] > 0
    after = task.state_dict()
    assert [name for name in before if not torch.equal(before[name], after[name])] == []


def _frozen_norm(task) -> FrozenBatchNorm2d:
    """Swap the backbone's first BatchNorm for a FrozenBatchNorm2d holding its (moved) statistics."""
    parent, name, norm = next(
        (parent, name, child)
        for parent in task.model.modules()
        for name, child in parent.named_children()
        if isinstance(child, torch.nn.BatchNorm2d)
    )
    frozen = FrozenBatchNorm2d(norm.num_features, eps=norm.eps)
    with torch.no_grad():
        for key in ("weight", "bias", "running_mean", "running_var"):
            getattr(frozen, key).copy_(getattr(norm, key) + 0.1)
    setattr(parent, name, frozen)
    return frozen


def test_losses_without_update_leaves_weights_statistics_modes_and_the_random_stream_as_they_were():
    """Mask R-CNN's proposal and RoI sampling draw from the random stream (a training pass moves it): the fork
    leaves it where it was, so two calls give the same losses and the next training batch draws as without
    them. Weights, BatchNorm and FrozenBatchNorm statistics (and BatchNorm's batch count) stay, and every
    module's mode comes back, whatever mix of modes it was called in."""
    task = _task()
    _frozen_norm(task)
    images, targets = _batch()
    torch.manual_seed(3)
    rng = torch.get_rng_state()
    with torch.no_grad():
        task.model.train()(images, targets)
    assert not torch.equal(torch.get_rng_state(), rng)  # a training pass draws: the fork has work to do
    torch.set_rng_state(rng)
    task.train()
    norm = next(m for m in task.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    norm.eval()  # e.g. a frozen backbone's BatchNorm
    modes = [module.training for module in task.model.modules()]
    before = _state(task)
    first = task.losses_without_update(images, targets)
    assert set(first) == set(TERMS) and all(torch.isfinite(v) for v in first.values())
    assert torch.equal(torch.get_rng_state(), rng)
    second = task.losses_without_update(images, targets)
    assert {k: float(v) for k, v in second.items()} == {k: float(v) for k, v in first.items()}
    assert [module.training for module in task.model.modules()] == modes
    after = task.state_dict()
    assert [name for name in before if not torch.equal(before[name], after[name])] == []
    task.eval()
    task.losses_without_update(images, targets)
    assert not any(module.training for module in task.model.modules())


def test_an_image_without_objects_gives_a_finite_loss():
    """Frames holding no object are ordinary in road data: the validation loss takes their empty targets."""
    task = _task().eval()
    images, targets = _batch()
    empty = {**targets[0], "masks": targets[0]["masks"][:0], "boxes": torch.zeros(0, 4),
             "labels": torch.zeros(0, dtype=torch.long)}  # fmt: skip
    losses = task.losses_without_update(images, [empty, targets[1]])
    assert set(losses) == set(TERMS) and all(torch.isfinite(v) for v in losses.values())
