"""Detection task lines that no test pinned (a mutation audit changed each and every test still passed): the
annotation index rebuilt for another data module, the 1-px rule and count of degenerate training boxes, the
KITTI gap said once, and no operating point fitted without ground truth."""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import torch

from tests.helpers import detection_task

TINY = {"backbone": "tiny_cnn", "backbone_kwargs": {"width": 8}, "input_size": (64, 128), "head_convs": 1}


def _data_module(folder: str) -> SimpleNamespace:
    return SimpleNamespace(splits={"test": [SimpleNamespace(image_id="a", image_path=f"{folder}/a.png")]})


def test_image_paths_come_from_the_data_module_attached_now():
    """A second run of the same task on another data module draws on that module's files, not on those of the
    first one the index was built from."""
    task = detection_task(**TINY)
    task.trainer = SimpleNamespace(datamodule=_data_module("/first"), predicting=False)
    assert task.image_path("a") == "/first/a.png"
    task.trainer = SimpleNamespace(datamodule=_data_module("/second"), predicting=False)
    assert task.image_path("a") == "/second/a.png"


def test_training_drops_and_counts_boxes_under_one_pixel_only():
    """A box 1 px wide or tall is kept; 0.5 px wide or tall is dropped, and each dropped box is counted."""
    task = detection_task(**TINY)
    boxes = torch.tensor(
        [[0.0, 0.0, 1.0, 5.0], [0.0, 0.0, 5.0, 1.0], [0.0, 0.0, 0.5, 5.0], [0.0, 0.0, 5.0, 0.5], [2, 2, 9, 9]]
    )
    (kept,) = task.training_targets([{"boxes": boxes, "labels": torch.arange(5)}])
    assert kept["labels"].tolist() == [0, 1, 4]
    assert task.dropped_degenerate == 2
    task.training_targets([{"boxes": boxes, "labels": torch.arange(5)}])
    assert task.dropped_degenerate == 4


def test_a_kitti_class_left_out_is_said_once_per_stage_and_level():
    task = detection_task(**TINY)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            task._say_kitti_classes_left_out("val", "hard", ["Cyclist"])
        task._say_kitti_classes_left_out("val", "easy", ["Cyclist"])
        task._say_kitti_classes_left_out("val", "easy", [])
    said = [str(w.message) for w in caught if "KITTI AP at" in str(w.message)]
    assert len(said) == 2 and "at hard" in said[0] and "at easy" in said[1]


def test_no_operating_point_is_fitted_on_a_split_without_ground_truth():
    """Detections but no object: F1 would rank thresholds by false alarms alone, so nothing is fitted or
    logged and ``predict`` keeps drawing at 0.5."""
    task = detection_task(**TINY)
    preds = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "scores": torch.tensor([0.9]),
              "labels": torch.tensor([0])}]  # fmt: skip
    targets = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    assert task._operating_point("val", preds, targets) == {}
    assert math.isnan(float(task.operating_threshold)) and task.predict_score_thresh == 0.5
