"""Shipped weights loaded from Python keep what their model card records beside the network: the detector's
fitted operating point (``operating_point.threshold``: before, ``operating_threshold`` stayed NaN and
``predict`` drew at the unfitted default), the instance model's, and the smoothing sigma of the anomaly fit's
config (``settings.score_smoothing``: before, the task said the file did not record it). The expected values
are read from the card files, not through the loader."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from domains.driving.accident.task import AccidentTask
from domains.driving.anomaly.task import AnomalySegmentationTask
from domains.driving.detection.task import DetectionTask
from domains.driving.instances.task import InstanceTask

WEIGHTS = Path(__file__).resolve().parents[2] / "apps/weights"


def _card(key: str) -> dict:
    return json.loads((WEIGHTS / f"{key}.json").read_text(encoding="utf-8"))


def _shipped_with_threshold(tmp_path: Path, key: str, threshold: float) -> Path:
    """A copy of the shipped ``key`` whose card names another fitted threshold (the card's sha256 is the
    weights', so it still holds): the shipped 0.5 equals the tasks' unfitted default."""
    shutil.copy(WEIGHTS / f"{key}.safetensors", tmp_path / f"{key}.safetensors")
    card = _card(key)
    card["operating_point"]["threshold"] = threshold
    (tmp_path / f"{key}.json").write_text(json.dumps(card), encoding="utf-8")
    return tmp_path / f"{key}.safetensors"


def test_the_shipped_detector_draws_at_its_cards_operating_point(tmp_path):
    fitted = _card("driving_detection")["operating_point"]["threshold"]
    task = DetectionTask.load_checked(WEIGHTS / "driving_detection.safetensors")
    assert float(task.operating_threshold) == pytest.approx(fitted) and task.predict_score_thresh == fitted
    path = _shipped_with_threshold(tmp_path, "driving_detection", 0.37)
    assert DetectionTask.load_checked(path).predict_score_thresh == pytest.approx(0.37)
    given = DetectionTask.load_checked(path, predict_score_thresh=0.2)  # the caller's still wins
    assert given.predict_score_thresh == 0.2 and float(given.operating_threshold) == pytest.approx(0.37)


def test_the_shipped_instance_model_draws_at_its_cards_operating_point(tmp_path):
    task = InstanceTask.load_checked(WEIGHTS / "driving_instances.safetensors")
    assert task.predict_score_thresh == _card("driving_instances")["operating_point"]["threshold"]
    path = _shipped_with_threshold(tmp_path, "driving_instances", 0.42)
    assert InstanceTask.load_checked(path).predict_score_thresh == pytest.approx(0.42)
    assert InstanceTask.load_checked(path, predict_score_thresh=0.3).predict_score_thresh == 0.3


def test_the_shipped_anomaly_model_knows_its_fits_smoothing():
    sigma = _card("driving_anomaly")["settings"]["score_smoothing"]
    path = WEIGHTS / "driving_anomaly.safetensors"
    task = AnomalySegmentationTask.load_checked(path)
    assert (task.score_smoothing, task.fit_score_smoothing) == (sigma, sigma)
    # another sigma given: used, and the fit's still known (given twice, the build raised a TypeError)
    raw = AnomalySegmentationTask.load_checked(path, score_smoothing=0.0)
    assert (raw.score_smoothing, raw.fit_score_smoothing) == (0.0, sigma)


def test_the_shipped_accident_model_holds_its_fitted_threshold_and_temperature():
    """Kept in ``task.model`` (buffers stored as fp32 scalars), so nothing to restore: the card's rounded
    figures match the weights'."""
    point = _card("driving_accident")["operating_point"]
    task = AccidentTask.load_checked(WEIGHTS / "driving_accident.safetensors")
    assert math.isclose(float(task.model.alarm_threshold), point["threshold"], abs_tol=5e-5)
    assert math.isclose(float(task.model.temperature), point["temperature"], abs_tol=5e-5)
