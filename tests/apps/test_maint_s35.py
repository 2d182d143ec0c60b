"""Maintenance s35: an unknown demo key is an error, not the anomaly model; the shipped detector card keeps the
threshold the task fitted; the upload's 16-bit conversion takes only what it uses."""

from __future__ import annotations

import inspect
import json
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from apps import demo_models as dm
from apps import ship_weights
from apps import uploads as up
from domains.driving.detection.operating_point import best_f1_threshold
from tests.apps.tiny import TINY_DETECTOR
from tests.helpers import detection_task

# ------------------------------------------------------------------------------------ A: unknown keys


def test_an_unknown_demo_key_is_an_error_naming_it_and_the_known_ones(monkeypatch):
    known = r"known keys: \['medical_unet'.*'driving_accident'\]"
    with pytest.raises(ValueError, match=rf"network_name: .*'driving_lanes'; {known}"):
        dm.network_name("driving_lanes", {"network": {"init_args": {"encoder": "resnet18"}}})
    with pytest.raises(ValueError, match=rf"data_description: .*'driving_lanes'; {known}"):
        dm.data_description("driving_lanes", {})
    with pytest.raises(ValueError, match=rf"data_description: .*'driving_lanes'; {known}"):
        dm.data_description("driving_lanes", {"data_path": "/data/lanes"})  # not "one's own data" either

    def no_anomaly_data(data_hp):
        raise AssertionError("the anomaly data module was built for another key")

    monkeypatch.setattr(ship_weights, "anomaly_datamodule", no_anomaly_data)
    with pytest.raises(ValueError, match=r"subset_figures: no test subset for key 'driving_lanes'; known keys"):
        ship_weights.subset_figures("driving_lanes", None, {})
    # the anomaly model is still described, by its own key
    args = {"encoder": "resnet18", "encoder_kwargs": {"depth": 3}}
    assert dm.network_name("driving_anomaly", {"network": {"init_args": args}}) == (
        "U-Net segmenter on resnet18 {'depth': 3} + outlier head"
    )
    assert dm.data_description("driving_anomaly", {}) == (
        "synthetic road-scene semantic maps from domains.driving.synthetic (defaults, seed 0), split by sequence"
    )


# -------------------------------------------------------------------- B: the detector's operating point


def _one_image_boxes() -> tuple[list[dict], list[dict]]:
    """Two cars; detections: a hit at 0.9, a false box at 0.6, a hit at 0.3. Pooled F1: 0.8 at 0.3 and below
    (TP 2 FP 1), 0.5 at 0.6, 2/3 at 0.9 (TP 1 FP 0 FN 1)."""
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    pred = {
        "boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0], [20.0, 20.0, 30.0, 30.0]]),
        "scores": torch.tensor([0.9, 0.6, 0.3]),
        "labels": torch.tensor([0, 0, 0]),
    }
    return [pred], [{"boxes": gt, "labels": torch.tensor([0, 0]), "image_id": "000000"}]


@pytest.fixture
def detection_stubs(monkeypatch):
    """evaluate_detection on one hand-made validation / test image: no data set, no network run."""
    data = SimpleNamespace(batch_size=4, splits={"test": []}, val_dataloader=list, test_dataloader=list)
    monkeypatch.setattr(ship_weights, "subset_figures", lambda key, task, data_hp: {"test/map50": 0.5})
    monkeypatch.setattr(ship_weights, "detection_datamodule", lambda data_hp: data)
    monkeypatch.setattr(ship_weights, "_detection_boxes", lambda task, loader, batches=None: _one_image_boxes())
    monkeypatch.setattr(ship_weights, "copy_examples", lambda scored, annotations, folder, name: {})


def test_the_detector_card_keeps_the_threshold_the_task_fitted(detection_stubs, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fitted threshold is read quietly
        point = ship_weights.evaluate_detection(None, {}, tmp_path, fitted=0.9)["operating_point"]
    assert point["threshold"] == 0.9  # not 0.05, where F1 would be best on these boxes
    assert (point["f1"], point["precision"], point["recall"]) == (0.6667, 1.0, 0.5)
    assert "fitted by the task at the run's last validation (operating_threshold)" in point["rule"]


@pytest.mark.parametrize("fitted", [None, float("nan")])
def test_without_a_fitted_threshold_the_detector_card_fits_one_and_says_so(detection_stubs, tmp_path, fitted):
    with pytest.warns(UserWarning, match="hold no fitted operating_threshold; fitting the best-F1 threshold"):
        point = ship_weights.evaluate_detection(None, {}, tmp_path, fitted=fitted)["operating_point"]
    assert point["threshold"] == best_f1_threshold(*_one_image_boxes())["threshold"] == 0.05
    assert point["f1"] == 0.8 and "fitted here" in point["rule"]


@pytest.mark.parametrize("buffer", [0.35, None])
def test_ship_passes_the_runs_operating_threshold_to_the_detector_card(tmp_path, monkeypatch, buffer):
    """A gpu_recipes run folder (record + every task weight in fp16) of a tiny detector: ship reads the task's
    operating_threshold buffer before it keeps only the plain network (NaN for a run without one)."""
    torch.manual_seed(0)
    task = detection_task(**TINY_DETECTOR)
    state = {k: v.half() if v.is_floating_point() else v for k, v in task.state_dict().items()}
    if buffer is None:
        del state["operating_threshold"]
    else:
        state["operating_threshold"] = torch.tensor(buffer).half()
    runs, out = tmp_path / "runs", tmp_path / "weights"
    runs.mkdir()
    out.mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, str(runs / "detection_2x.safetensors"))
    record = {
        "command": "python -m domains.driving.detection fit",
        "device": "CPU",
        "fit_seconds": 1.0,
        "steps": 1,
        "epochs": 1,
        "metrics": {"test/map50": 0.1},
        "hyper_parameters": json.loads(json.dumps(dict(task.hparams))),
        "data_hyper_parameters": {},
    }
    (runs / "detection_2x.json").write_text(json.dumps(record))
    seen = {}

    def evaluate(task, data_hp, examples_dir, fitted=None):
        seen["fitted"] = fitted
        return {"subset": {"metrics": {}}}

    monkeypatch.setattr(ship_weights, "evaluate_detection", evaluate)
    ship_weights.ship("driving_detection", runs, out)
    if buffer is None:
        assert np.isnan(seen["fitted"])
    else:
        assert seen["fitted"] == pytest.approx(0.35, abs=1e-3)  # fp16 in the run's file


# ------------------------------------------------------------------------------------------ E: uploads


def test_16_bit_to_8_bit_takes_the_array_and_the_notes_only():
    assert list(inspect.signature(up._to_uint8).parameters) == ["array", "notes"]
    notes = []
    out = up._to_uint8(np.array([[100, 300]], np.uint16), notes)
    assert out.tolist() == [[0, 255]] and notes == ["16-bit image rescaled to 8-bit (values 100..300 -> 0..255)"]
