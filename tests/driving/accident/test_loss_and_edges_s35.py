"""Accident conventions no other test pinned (s35), by hand on tiny inputs: the training loss on a padded clip
(padding counts nowhere, the object loss over the alarm horizon, its weight), test metrics at the fitted
temperature, a tie in the mTTA sweep, a false alarm at exactly the peak score, contact at frame 0 and the
TTC < 2 s cut."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from domains.driving.accident.metrics import (
    ClipScores,
    false_alarm_rate,
    frame_labels,
    horizon_targets,
    mtta,
    operating_threshold,
    tta_curve,
    ttc_error,
)
from domains.driving.accident.task import AccidentTask
from tests.driving.accident.test_accident_audit_s32 import _logged, _task
from tests.driving.accident.test_model import tiny
from tests.driving.accident.test_task import _val_records

pytestmark = pytest.mark.usefixtures("one_thread")
FPS = 10.0


def _bce(z: float, y: int) -> float:
    """Binary cross-entropy of the logit ``z`` against the label ``y``: -y log s(z) - (1 - y) log(1 - s(z))."""
    return y * math.log1p(math.exp(-z)) + (1 - y) * math.log1p(math.exp(z))


def test_the_loss_skips_padding_and_weights_the_object_loss_over_the_alarm_horizon():
    """One crash clip (contact at frame 2, 10 fps) of 3 frames padded to 5; horizons 0.1 and 0.2 s. Targets
    (contact within h, or ongoing): frame 0 is 0.2 s before contact: [0, 1]; frames 1 and 2: [1, 1]. The padding
    (frames 3, 4) would read [1, 1] against logits far below 0: it must count nowhere. The object slots have boxes
    marked on the padding too (collate_clips clears them; a batch built otherwise may not): frame_valid alone
    decides. Objects take the alarm horizon (0.2 s): involved slot 0 is positive on frames 0-2 (the 0.1 s horizon
    would make frame 0 negative); slot 1, not involved, is seen on frames 1 and 2. Total = horizon + 0.25 object."""
    task = AccidentTask(network=tiny(horizons=(0.1, 0.2)), object_loss_weight=0.25)
    horizon_logits = torch.tensor([[[-1.0, 0.5], [0.2, 1.0], [1.5, 2.0], [-2.0, -1.0], [-3.0, -2.0]]])
    object_logits = torch.tensor([[[-0.5, 0.3], [1.0, -1.0], [2.0, 0.4], [-1.5, 1.2], [-2.5, 2.0]]])
    box_valid = torch.tensor([[[True, False]] + [[True, True]] * 4])
    batch = {
        "toa": torch.tensor([2]), "fps": torch.tensor([FPS]), "frame_valid": torch.tensor([[True] * 3 + [False] * 2]),
        "box_valid": box_valid, "involved": torch.tensor([[True, False]]),
    }  # fmt: skip
    terms = task.losses(batch, {"horizon_logits": horizon_logits, "object_logits": object_logits})
    horizon = (_bce(-1.0, 0) + _bce(0.5, 1) + _bce(0.2, 1) + _bce(1.0, 1) + _bce(1.5, 1) + _bce(2.0, 1)) / 6
    objects = (_bce(-0.5, 1) + _bce(1.0, 1) + _bce(2.0, 1) + _bce(-1.0, 0) + _bce(0.4, 0)) / 5
    assert float(terms["horizon"]) == pytest.approx(horizon, rel=1e-6)  # 0.3378
    assert float(terms["object"]) == pytest.approx(objects, rel=1e-6)  # 0.5281
    assert float(terms["total"]) == pytest.approx(horizon + 0.25 * objects, rel=1e-6)  # 0.4699


def test_test_metrics_read_the_risk_at_the_fitted_temperature():
    """The records keep the raw log-odds; test metrics must score sigmoid(logit / T), what predict and export
    give. T = 2, raw logits 2 logit(p). Crash clip (contact at frame 6 of 10: every frame within the 2 s alarm
    horizon, label 1): p 0.7 on frames 0-5, 0.9 on 6-9; normal clip p 0.3 (label 0). 15 bins, each value alone
    in its bin: ECE = (6 * 0.3 + 4 * 0.1 + 10 * 0.3) / 20 = 0.26, Brier = (6 * 0.09 + 4 * 0.01 + 10 * 0.09) / 20
    = 0.074. At the alarm threshold 0.75 no frame before contact alarms (0.7): recall 0. Uncalibrated,
    sigmoid(2 logit(0.7)) = 0.845 would alarm, and ECE / Brier would be 0.127 / 0.019."""

    def clip(*ps: tuple[float, int]) -> np.ndarray:
        raw = [2 * math.log(p / (1 - p)) for p, n in ps for _ in range(n)]
        return np.repeat(np.asarray(raw, np.float32)[:, None], 4, axis=1)  # the same at every horizon

    task = _task(input_kind="boxes")
    task.model.temperature.fill_(2.0)
    task.model.alarm_threshold.fill_(0.75)
    task._records["test"] = _val_records("crash", 6, [clip((0.7, 6), (0.9, 4))]) + [
        {**r, "clip_id": "n0"} for r in _val_records("normal", -1, [clip((0.3, 10))])
    ]
    logged = _logged(task)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # two clips: TTA@R80 says nothing of the model (warned)
        task._log_epoch_metrics("test")
    assert logged["test/temperature"] == 2.0
    assert logged["test/ece"] == pytest.approx(0.26, abs=1e-6)
    assert logged["test/brier"] == pytest.approx(0.074, abs=1e-6)
    assert logged["test/recall_at_threshold"] == 0.0


def test_mtta_does_not_count_a_frame_that_only_ties_the_next_recall_level():
    """Crash a (contact at frame 4): 0.5, then 0.9; crash b (contact at frame 2): 0.1, 0.5. Recall 1/2 (a only)
    holds for thresholds in (0.5, 0.9]: at any of them a's frame 0 (0.5) stays quiet, its first alarm is frame 1:
    TTA (4 - 1) / 10 = 0.3 s, legacy (1 - 1/4) * 6 / 10 = 0.45 s (a frame at 0.5 alarms only at threshold 0.5,
    where b is found as well: recall 1). Recall 1: every frame alarms: TTA mean(0.4, 0.2) = 0.3 s. mTTA 0.3 s."""
    a = ClipScores([0.5, 0.9, 0.9, 0.9, 1.0, 1.0], toa=4, fps=FPS)
    b = ClipScores([0.1, 0.5, 1.0, 1.0, 1.0, 1.0], toa=2, fps=FPS)
    curve = tta_curve([a, b])
    np.testing.assert_allclose(curve.recall, [0.5, 1.0])
    np.testing.assert_allclose(curve.threshold, [0.9, 0.0])
    np.testing.assert_allclose(curve.tta, [0.3, 0.3])
    np.testing.assert_allclose(curve.legacy_tta, [0.45, 0.6])
    assert mtta([a, b]) == pytest.approx(0.3)


def test_a_negative_peaking_exactly_at_the_threshold_is_a_false_alarm():
    """A clip alarms where any frame is >= the threshold: the near miss peaking at 0.6 alarms at 0.6, not just
    above it, which is where operating_threshold puts the threshold that keeps it quiet."""
    clips = [ClipScores([0.2, 0.6, 0.4], toa=-1, fps=FPS, kind="near_miss")]
    assert false_alarm_rate(clips, 0.6) == 1.0
    assert operating_threshold(clips, 0.0) == np.nextafter(0.6, 1.0)
    assert false_alarm_rate(clips, operating_threshold(clips, 0.0)) == 0.0


def test_contact_at_frame_zero_makes_every_frame_positive():
    """toa 0 is a crash under way from the first frame (negatives are toa -1): contact is ongoing at every
    frame, so every target and frame label is 1."""
    targets = horizon_targets(torch.tensor([0, -1]), torch.tensor([FPS, FPS]), 3, torch.tensor([0.5, 2.0]))
    assert targets[0].all() and not targets[1].any()
    np.testing.assert_array_equal(frame_labels(ClipScores([0.2, 0.3, 0.4], toa=0, fps=FPS)), [1, 1, 1])


def test_ttc_error_leaves_out_a_true_ttc_of_exactly_two_seconds():
    """Frames with a true TTC < 2 s count: 2.0 (predicted 5) and inf are left out; 1.0 (predicted 1.5): 0.5 s."""
    clip = ClipScores([0.0] * 3, toa=2, fps=FPS, ttc_true=[2.0, 1.0, np.inf], ttc_pred=[5.0, 1.5, 3.0])
    assert ttc_error([clip]) == pytest.approx(0.5)
