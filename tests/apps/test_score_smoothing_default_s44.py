"""An anomaly config without ``score_smoothing`` ran with the task's default sigma (1.0), so the demo and
``ship_weights`` fall back to that default, not to 0 (no smoothing), for such a config."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from apps import demo_models as dm
from apps import ship_weights
from domains.driving.anomaly.task import DEFAULT_SCORE_SMOOTHING


def _config(tmp_path: Path, model: str) -> Path:
    path = tmp_path / "anomaly.yaml"
    path.write_text(f"model:\n{model}\n", encoding="utf-8")
    return path


def test_ship_weights_reads_the_task_default_for_a_config_without_smoothing(tmp_path, monkeypatch):
    monkeypatch.setattr(ship_weights, "ROOT", tmp_path)
    _config(tmp_path, "  score: msp")
    record = {"command": "python -m domains.driving.anomaly fit -c anomaly.yaml"}
    assert DEFAULT_SCORE_SMOOTHING != 0
    assert ship_weights._settings("driving_anomaly", record)["score_smoothing"] == DEFAULT_SCORE_SMOOTHING
    _config(tmp_path, "  score_smoothing: 0")  # chosen off: kept off
    assert ship_weights._settings("driving_anomaly", record)["score_smoothing"] == 0.0


def test_the_demo_reads_the_task_default_for_a_demo_config_without_smoothing(tmp_path, monkeypatch):
    config = _config(tmp_path, "  score: msp")
    entry = dm.DEMO_MODELS["driving_anomaly"]
    monkeypatch.setattr(dm, "ROOT", tmp_path)
    monkeypatch.setitem(dm.DEMO_MODELS, "driving_anomaly", dataclasses.replace(entry, config=config.name))
    assert dm.anomaly_score_smoothing(None) == DEFAULT_SCORE_SMOOTHING
    assert dm.anomaly_score_smoothing(0.5) == 0.5  # the fit's own, where the file records it
    _config(tmp_path, "  score_smoothing: 0")
    assert dm.anomaly_score_smoothing(None) == 0.0
