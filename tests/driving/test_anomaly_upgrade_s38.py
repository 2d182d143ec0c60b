"""Score smoothing of checkpoints made before its default moved (0 -> the configs' 1.0): ``test`` / ``predict``
say which sigma they use when the checkpoint's fit config used another or the file does not say, and the export
takes the fit's sigma, which fit checkpoints record in their config (``suite_config``), unless given."""

from __future__ import annotations

import json
import logging

import pytest
import torch
import yaml

from domains.driving.anomaly.export import main as anomaly_export
from domains.driving.anomaly.task import AnomalySegmentationTask, fit_score_smoothing
from tests.helpers import anomaly_task

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"encoder_kwargs": {"channels": [4, 8, 16]}, "oe_weight": 0.0, "input_size": (32, 64)}


def _checkpoint(path, fit_smoothing: float | None = None) -> str:
    """A tiny anomaly checkpoint; with ``fit_smoothing``, carrying a fit config (as CLI fits write) that used it,
    else none (as files written before checkpoints carried their run's config)."""
    from pytorch_lightning import Trainer

    torch.manual_seed(0)
    trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, max_steps=0)
    trainer.strategy.connect(anomaly_task(**TINY))
    trainer.save_checkpoint(path)
    if fit_smoothing is not None:
        checkpoint = torch.load(path, weights_only=True)
        config = {"model": {"score": "msp", "score_smoothing": fit_smoothing}, "data": {"image_size": [32, 64]}}
        torch.save(checkpoint | {"suite_config": yaml.safe_dump(config)}, path)
    return str(path)


def _notes(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "score maps smoothed" in r.getMessage()]


def test_an_old_checkpoint_says_once_at_test_and_predict_start_which_sigma_it_scores_with(tmp_path, caplog):
    """A checkpoint made before fits recorded their config (e.g. at 89182e3) is scored with sigma 1.0 unsaid, where a
    Python load of it had given raw maps then."""
    task = AnomalySegmentationTask.load_checked(_checkpoint(tmp_path / "old.ckpt"))
    assert task.score_smoothing == 1.0 and task.fit_score_smoothing is None
    with caplog.at_level(logging.INFO, logger="pytorch_lightning"):
        task.on_test_start()
        task.on_predict_start()  # once per loaded checkpoint, not once per hook
    [note] = _notes(caplog)
    assert "sigma 1 px" in note and "does not record" in note and "--model.score_smoothing 0 gives raw maps" in note

    caplog.clear()
    raw = AnomalySegmentationTask.load_checked(tmp_path / "old.ckpt", score_smoothing=0.0)
    with caplog.at_level(logging.INFO, logger="pytorch_lightning"):
        raw.on_predict_start()
    [note] = _notes(caplog)
    assert "sigma 0 px" in note and "--model.score_smoothing 1 gives the shipped configs' smoothing" in note


def test_a_checkpoint_fit_with_another_sigma_is_named_and_one_fit_with_this_runs_is_quiet(tmp_path, caplog):
    raw_fit = _checkpoint(tmp_path / "raw.ckpt", fit_smoothing=0.0)
    task = AnomalySegmentationTask.load_checked(raw_fit)
    assert task.fit_score_smoothing == 0.0
    with caplog.at_level(logging.INFO, logger="pytorch_lightning"):
        task.on_test_start()
    [note] = _notes(caplog)
    assert "sigma 1 px, not the 0 of the config the checkpoint's fit ran with" in note
    assert "--model.score_smoothing 0 scores as that config did" in note

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pytorch_lightning"):
        AnomalySegmentationTask.load_checked(raw_fit, score_smoothing=0.0).on_test_start()
        AnomalySegmentationTask.load_checked(_checkpoint(tmp_path / "one.ckpt", fit_smoothing=1)).on_test_start()
    assert _notes(caplog) == []


@pytest.mark.parametrize(
    "checkpoint, expected",
    [({"suite_config": "model:\n  score_smoothing: 2\n"}, 2.0), ({"suite_config": "model: {score_smoothing: 0.0}"}, 0.0),
     ({}, None), ({"suite_config": "model: {score: msp}"}, None), ({"suite_config": "model: [unclosed"}, None),
     ({"suite_config": "model: {score_smoothing: true}"}, None), ({"suite_config": "- a list"}, None),
     ({"suite_config": b"model: {score_smoothing: 1}"}, None)],
)  # fmt: skip
def test_fit_score_smoothing_reads_the_fits_config_and_only_a_number_from_it(checkpoint, expected):
    assert fit_score_smoothing(checkpoint) == expected


def test_the_export_takes_the_fits_sigma_unless_given(tmp_path, capsys):
    """Fit checkpoints record their config, so 'checkpoints do not store it' no longer held: a model fit with
    score_smoothing 0 was exported with 1.0."""
    out = tmp_path / "onnx"
    anomaly_export(["--ckpt", _checkpoint(tmp_path / "raw.ckpt", fit_smoothing=0.0), "--out", str(out)])
    assert json.loads((out / "segmenter.json").read_text())["score_smoothing"] == 0.0
    assert "score maps smoothed" not in capsys.readouterr().out


def test_the_export_of_a_file_without_its_fits_config_says_which_sigma_it_writes(tmp_path, capsys):
    out = tmp_path / "onnx"
    anomaly_export(["--ckpt", _checkpoint(tmp_path / "old.ckpt"), "--out", str(out)])
    assert json.loads((out / "segmenter.json").read_text())["score_smoothing"] == 1.0
    printed = capsys.readouterr().out
    assert "does not record" in printed and "--score-smoothing 0 gives raw maps" in printed
