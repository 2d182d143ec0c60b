"""Weights saved before outlier exposure began: the error names ``--ckpt_path last`` (the best checkpoint on
val/miou may be an epoch before it), and the warning for the plain scores is placed in the suite's task, where
the suite's one-line warning format applies (it was placed at Lightning's caller, in Lightning's format)."""

from __future__ import annotations

from pathlib import Path

import pytest

from domains.driving.anomaly.scores import AnomalyScoreError
from tests.driving.test_anomaly_audit_fixes import TINY
from tests.helpers import anomaly_task


def test_the_error_names_the_last_checkpoint_and_the_warning_is_the_task_s():
    task = anomaly_task(**TINY, oe_weight=0.5, oe_start_epoch=5)
    with pytest.raises(AnomalyScoreError, match=r"saved before --model.oe_start_epoch 5\): train on, take --ckpt_path last"):
        task.on_test_epoch_start()
    task.score = "msp"
    with pytest.warns(UserWarning, match="not testing 'outlier_prob'") as caught:
        task.on_test_epoch_start()
    assert Path(caught[0].filename).parts[-4:] == ("domains", "driving", "anomaly", "task.py")
