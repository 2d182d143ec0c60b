"""Detection validation computes ``val/loss`` and the detections it scores from one pass of the network
(``DetectionTask.losses_and_detections``), with the numbers of the two passes it ran before (a training-mode pass
for the loss, an eval pass for the detections)."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import detection_task

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"backbone": "tiny_cnn", "backbone_kwargs": {"width": 8}, "input_size": (64, 128), "head_convs": 1}


def _batch(semantic: bool, sizes=((96, 192), (96, 192))):  # not the network's 64x128: resized, targets moved
    torch.manual_seed(1)
    images = [torch.rand(3, h, w) for h, w in sizes]
    targets = []
    for h, w in sizes:
        target = {
            "boxes": torch.tensor([[10.0, 8.0, 40.0, 30.0], [60.0, 20.0, 70.0, 50.0]]),
            "labels": torch.tensor([0, 1]),
            "image_id": "x",
            "orig_size": (h, w),
        }
        if semantic:
            target["semantic"] = torch.randint(0, 3, (h, w))
        targets.append(target)
    return images, targets


def _task(semantic: bool):
    torch.manual_seed(0)
    # a low score threshold: the untrained network's detections are many, not none
    task = detection_task(**TINY, semantic_classes=3 if semantic else 0, score_thresh=0.01, kitti_difficulties=[])
    return task.eval()


@pytest.mark.parametrize("semantic", [False, True])
def test_one_pass_gives_the_two_passes_losses_and_detections(semantic):
    task = _task(semantic)
    images, targets = _batch(semantic)
    before = torch.get_rng_state()
    losses, found = task.losses_and_detections(images, targets)
    assert torch.equal(torch.get_rng_state(), before)  # nothing drawn: training's draws are left as they were
    expected = task.losses_without_update(images, targets)
    assert sorted(losses) == sorted(expected) and ("semantic" in losses) == semantic
    for name, value in expected.items():
        assert float(losses[name]) == pytest.approx(float(value), abs=1e-6), name
    alone = task.model(images)
    assert sum(len(d["boxes"]) for d in alone) > 0
    for one, two in zip(found, alone, strict=True):
        assert torch.equal(one["labels"], two["labels"])
        torch.testing.assert_close(one["boxes"], two["boxes"], atol=1e-6, rtol=0)
        torch.testing.assert_close(one["scores"], two["scores"], atol=1e-6, rtol=0)


def test_a_validation_step_runs_the_network_once_and_logs_the_same_loss(monkeypatch):
    task = _task(False)
    images, targets = _batch(False)
    expected = float(sum(task.losses_without_update(images, targets).values()))
    calls = []
    task.model.detector.backbone.register_forward_hook(lambda *args: calls.append(1))
    logged = {}
    log = lambda name, value, count, **kwargs: logged.setdefault(name, float(value))
    monkeypatch.setattr(task, "log_mean", log)
    monkeypatch.setattr(task, "_annotations", dict)  # no trainer here
    task.validation_step((images, targets), 0)
    assert len(calls) == 1 and logged["val/loss"] == pytest.approx(expected, abs=1e-6)
    assert len(task._f1_boxes["val"][0]) == 2  # both images scored


def test_images_of_two_sizes_take_two_passes():
    """Detections go one pass per image size (the padding is not inert), the loss over the padded batch."""
    task = _task(False)
    images, targets = _batch(False, sizes=((64, 128), (48, 128)))
    assert task.losses_and_detections(images, targets) is None
    assert task.train().losses_and_detections(*_batch(False)) is None
