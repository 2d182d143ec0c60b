"""Metric names that runs are compared by across tasks: the detector logs ``val/loss`` as every task does (its
training loss on the validation images, nothing learnt from them), and the accident task logs its alarm
threshold once (``<stage>/threshold``), not again as ``<stage>/alarm_threshold``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from tests.driving.accident.test_accident_audit_s32 import _logged, _task
from tests.driving.accident.test_task import _val_records
from tests.helpers import detection_task, quiet_trainer

pytestmark = pytest.mark.usefixtures("one_thread")

# ------------------------------------------------------------------------------------------------ detection


def _detector(**network):
    """A tiny FCOS on 32x64 images whose tiny_cnn backbone has BatchNorm layers."""
    return detection_task(
        backbone="tiny_cnn", backbone_kwargs={"width": 8}, class_names=["Car", "Pedestrian"],
        input_size=(32, 64), fpn_channels=32, head_convs=1, kitti_difficulties=[], **network,
    )  # fmt: skip


def _batch(n: int = 2, seed: int = 0) -> tuple[list[torch.Tensor], list[dict]]:
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, 32, 64, generator=g) for _ in range(n)]
    targets = [
        {"boxes": torch.tensor([[4.0, 4, 20, 20], [30, 6, 50, 28]]), "labels": torch.tensor([0, 1]),
         "image_id": str(i)}
        for i in range(n)
    ]  # fmt: skip
    return images, targets


def _val_losses(task) -> dict[str, float]:
    """What the validation loss logs for one batch (name -> the batch's value)."""
    logged = {}
    task.log = lambda name, value, **kw: logged.update({name: (float(value.compute()), kw.get("prog_bar"))})
    task._log_validation_loss(_batch())
    return logged


def _state(task) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in task.state_dict().items()}


def test_validation_logs_the_detector_loss_and_its_terms_beside_the_metrics():
    task = _detector()
    task.model.backbone.train()  # a run whose BatchNorm has moved off its initial statistics
    with torch.no_grad():
        task.model(*_batch(seed=1))
    task.eval()
    before = _state(task)
    (logged,) = quiet_trainer(limit_val_batches=1).validate(
        task, DataLoader([_batch()], batch_size=None), verbose=False
    )
    terms = {"val/classification", "val/bbox_regression", "val/bbox_ctrness"}
    assert {"val/loss", *terms} <= set(logged) and "val/map50" in logged
    assert logged["val/loss"] == pytest.approx(sum(logged[t] for t in terms), rel=1e-5) and logged["val/loss"] > 0
    # nothing learnt: weights, BatchNorm statistics (and their batch count) as they were; only the operating
    # point is fitted
    after = task.state_dict()
    assert [name for name in before if not torch.equal(before[name], after[name])] == ["operating_threshold"]


def test_the_validation_loss_is_the_network_as_evaluated_and_leaves_every_mode_as_it_was():
    """BatchNorm on its running statistics (the network that detects), not the batch's: shifting them moves
    the loss. Every module's mode comes back, in eval (validation) as in train mode."""
    task = _detector().eval()
    first = _val_losses(task)
    assert first["val/loss"][1] is True  # on the progress bar, as every task's val/loss
    assert _val_losses(task) == first  # no state moved between two calls
    assert not any(module.training for module in task.model.modules())
    norm = next(m for m in task.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    task.train()
    norm.eval()  # e.g. a frozen backbone's BatchNorm
    modes = [module.training for module in task.model.modules()]
    _val_losses(task)
    assert [module.training for module in task.model.modules()] == modes
    norm.running_mean += 3.0
    assert _val_losses(task)["val/loss"][0] != pytest.approx(first["val/loss"][0])


def test_a_semantic_head_adds_its_term_and_without_maps_no_loss_is_logged():
    """With class maps the auxiliary semantic loss is a term of val/loss; ``validate`` of such a checkpoint on
    data without maps logs no loss (it would need them) instead of failing."""
    task = _detector(semantic_classes=2).eval()
    logged = {}
    task.log = lambda name, value, **kw: logged.update({name: float(value.compute())})
    images, targets = _batch()
    task._log_validation_loss((images, [{**t, "semantic": torch.zeros(32, 64, dtype=torch.long)} for t in targets]))
    assert logged["val/semantic"] > 0 and "val/loss" in logged
    logged.clear()
    task._log_validation_loss((images, targets))
    assert logged == {}


@pytest.mark.parametrize("seed", range(4))
def test_multi_scale_training_validates_its_loss_at_the_evaluation_size(seed):
    """Training draws a scale per batch from train_scales; the validation loss is read at the evaluation size,
    the same as a single-scale network's with these weights, whatever the stream holds, and draws nothing from
    it: the next training batch draws as it would have."""
    multi = _detector(train_scales=(0.5, 1.0)).eval()
    single = _detector().eval()
    single.load_state_dict(multi.state_dict())
    torch.manual_seed(seed)
    rng = torch.get_rng_state()
    assert _val_losses(multi) == _val_losses(single)
    assert torch.equal(torch.get_rng_state(), rng)


# ------------------------------------------------------------------------------------------------- accident


def _risk(peak: float) -> list[np.ndarray]:
    """Four clips' raw log-odds (10 frames, 4 horizons) rising to ``peak`` probability."""
    risk = np.linspace(-2.0, np.log(peak / (1 - peak)), 10, dtype=np.float32)
    return [np.repeat(risk[:, None], 4, axis=1)] * 4


@pytest.mark.parametrize("stage", ["val", "test"])
def test_the_alarm_threshold_is_logged_once(stage):
    """Crash clips rising to 0.95 (contact at frame 8), normal clips peaking at 0.6. Validation fits the alarm
    threshold (just above the normal clips' peak), test reads the model's; either logs it once, as
    ``<stage>/threshold`` (what ``recall_at_threshold`` is read at), never again as ``alarm_threshold``."""
    task = _task(input_kind="boxes")
    task.model.alarm_threshold.fill_(0.75)
    task._records[stage] = _val_records("crash", 8, _risk(0.95)) + [
        {**r, "clip_id": f"n{i}"} for i, r in enumerate(_val_records("normal", -1, _risk(0.6)))
    ]
    logged = _logged(task)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # four crash clips: TTA@R80 notes
        task._log_epoch_metrics(stage)
    threshold = float(task.model.alarm_threshold)
    assert (threshold != 0.75) is (stage == "val")  # fitted at validation, the model's at test
    assert logged[f"{stage}/threshold"] == threshold
    assert {name for name in logged if "threshold" in name} == {
        f"{stage}/threshold", f"{stage}/recall_at_threshold", f"{stage}/lead_time_at_threshold",
        f"{stage}/tta_r80_threshold",
    }  # fmt: skip
