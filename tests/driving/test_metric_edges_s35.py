"""Edges of the detection and instance metrics that random data never reaches, each with a value worked out by
hand from the KITTI devkit's ``evaluate_object.cpp`` or COCOeval: two detections on one object, occlusion
reaching KITTI's difficulty levels from the raw labels, classes without ground truth, DontCare and crowd regions
of every class or of one, and scores or heights exactly at a limit."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from domains.driving.detection.metrics import kitti_average_precision, recall_by_height, with_crowd_regions
from domains.driving.formats import ImageAnnotation, ObjectLabel
from domains.driving.instances.data import mask_boxes
from domains.driving.instances.metrics import InstanceMetrics
from tests.driving.detection.test_metrics import det, gt
from tests.driving.test_detection import _cars, _evaluated_task, _kitti_through_the_task
from tests.driving.test_instances import _mask
from tests.helpers import FixedOutputs

# a COCO curve whose one object is found below one false alarm: precision 1/2 at every recall
ONE_FALSE_ALARM_FIRST = 0.5
# a COCO curve whose two objects are found one of two, at precision 1: 51 of its 101 recall points
HALF_FOUND = 51 / 101


# ------------------------------------------------------------------------------------------------ KITTI AP


def test_kitti_recall_pass_takes_the_highest_scoring_candidate_not_the_first():
    """The devkit's recall pass (computeStatistics, compute_fp false) gives each ground truth the highest-scoring
    detection overlapping it, whatever the list's order; the precision pass takes the best-overlapping one.

    Each of 41 images (41: AP|R40 samples every recall step, 1/41 ... 41/41, so the R40 quirk drops nothing):
    one car, detections in the order A (0.80, IoU 0.95), F (0.85, elsewhere), B (0.90, IoU 0.80).
    Recall thresholds: B's 0.90 in every image; at 0.90 only B scores: 41 TP, 0 FP -> precision 1 at every
    sampled recall, AP 1. Taking the first candidate (A) instead puts the threshold at 0.80, where A is the
    TP and B and F are false alarms: precision 1/3, AP 1/3."""
    truth = gt(box=(100, 100, 200, 200))
    a = det(box=(100, 100, 200, 195), score=0.80)
    f = det(box=(400, 100, 500, 200), score=0.85)
    b = det(box=(100, 100, 200, 180), score=0.90)
    out = kitti_average_precision([[a, f, b]] * 41, [[truth]] * 41, classes=("Car",))
    assert out["Car"] == pytest.approx(1.0)


def test_kitti_occlusion_of_the_raw_labels_reaches_the_difficulty_levels(monkeypatch):
    """The task hands each raw object's occlusion to the KITTI metric: a heavily occluded car (level 2) is
    don't care at easy and moderate (max occlusion 0 / 1) and counts at hard (max 2).

    41 images, each a visible car found at 0.9 and an occluded one missed. Easy and moderate: 41 of 41 found at
    precision 1 -> AP 1. Hard: 41 of 82 -> recall reaches 1/2, sampled at 1/40 ... 20/40 with precision 1 ->
    AP 20/40. With the occlusion dropped every level would read 0.5."""
    visible, hidden = (20.0, 20.0, 100.0, 80.0), (140.0, 20.0, 220.0, 80.0)  # 60 px tall in the 128x256 original
    anns = {
        f"{i:06d}": ImageAnnotation(
            f"{i:06d}.png", 256, 128, [ObjectLabel("Car", visible), ObjectLabel("Car", hidden, occluded=2)]
        )
        for i in range(41)
    }
    task, _ = _evaluated_task(monkeypatch, anns, kitti_min_height_scale=1.0)
    task.kitti_difficulties = ["easy", "moderate", "hard"]
    half = [[v / 2 for v in visible], [v / 2 for v in hidden]]  # the 64x128 tensor's coordinates
    targets = [{**_cars(half), "image_id": k, "orig_size": (128, 256)} for k in anns]
    task.model = FixedOutputs([_cars(half[:1], [0.9]) for _ in anns])
    task._evaluation_step(([torch.zeros(3, 64, 128)] * len(anns), targets), "val")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no Pedestrian ground truth: said, and its AP left out
        values = task._log_epoch_metrics("val")
    assert values["val/kitti_easy/Car"] == pytest.approx(1.0)
    assert values["val/kitti_moderate/Car"] == pytest.approx(1.0)
    assert values["val/kitti_hard/Car"] == pytest.approx(0.5)


# ----------------------------------------------------------------------------- classes without ground truth


def _car_and_false_pedestrian(size=(40, 40)) -> tuple[dict, dict]:
    """A car found exactly, and a pedestrian detection where the image has no pedestrian: (target, prediction)
    with masks."""
    masks = torch.stack([_mask(0, 10, 0, 10, size), _mask(20, 30, 20, 30, size)])
    target = {"boxes": mask_boxes(masks[:1].byte()), "labels": torch.tensor([0]), "masks": masks[:1]}
    pred = {"boxes": mask_boxes(masks.byte()), "labels": torch.tensor([0, 1]), "scores": torch.tensor([0.9, 0.8]),
            "masks": masks}  # fmt: skip
    return target, pred


def test_detection_task_leaves_out_the_ap_of_a_class_without_ground_truth(monkeypatch):
    """torchmetrics gives -1 for a class that is only predicted: no AP is logged for it (not -1, which a mean
    over logged classes would take as a figure)."""
    target, pred = _car_and_false_pedestrian()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one car: the KITTI small-set note
        values = _kitti_through_the_task(monkeypatch, [(target, pred)])
    assert values["val/ap/Car"] == pytest.approx(1.0) and values["val/ap50/Car"] == pytest.approx(1.0)
    assert not any(k.endswith("/Pedestrian") for k in values), sorted(values)


def test_instance_metrics_leave_out_the_ap_of_a_class_without_ground_truth():
    target, pred = _car_and_false_pedestrian()
    metric = InstanceMetrics(["Car", "Pedestrian"])
    metric.update([pred], [target])
    values = metric.compute("test")
    assert values["test/mask_ap/Car"] == pytest.approx(1.0) and values["test/box_ap/Car"] == pytest.approx(1.0)
    assert not any(k.endswith("/Pedestrian") for k in values), sorted(values)


# ------------------------------------------------------------------------------------- DontCare and crowds


def _scene(size=(40, 40)) -> tuple[dict, dict, torch.Tensor]:
    """A car (label 0) and a pedestrian (label 1) found exactly at 0.7 / 0.6, and a car and a pedestrian
    detection at 0.95 / 0.9 inside the region (rows 30..40, columns 0..20) that is returned for the caller to
    make DontCare or a crowd: (target, prediction, region mask)."""
    masks = torch.stack(
        [_mask(0, 10, 0, 10, size), _mask(0, 20, 20, 30, size), _mask(30, 40, 0, 8, size), _mask(30, 40, 10, 18, size)]
    )
    target = {"boxes": mask_boxes(masks[:2].byte()), "labels": torch.tensor([0, 1]), "masks": masks[:2]}
    pred = {"boxes": mask_boxes(masks.byte()), "labels": torch.tensor([0, 1, 0, 1]),
            "scores": torch.tensor([0.7, 0.6, 0.95, 0.9]), "masks": masks}  # fmt: skip
    return target, pred, _mask(30, 40, 0, 20, size)


def test_dontcare_ignores_the_detections_of_every_class_in_it():
    """KITTI's DontCare has no class: both unmatched detections in it are ignored, so each class's one object,
    found, gives AP50 1 (a false alarm above it would give 1/2)."""
    target, pred, region = _scene()
    metric = InstanceMetrics(["Car", "Pedestrian"])
    metric.update([pred], [{**target, "ignore_mask": region}])
    values = metric.compute("test")
    for kind in ("mask", "box"):
        assert values[f"test/{kind}_ap50/Car"] == pytest.approx(1.0)
        assert values[f"test/{kind}_ap50/Pedestrian"] == pytest.approx(1.0)
        assert values[f"test/{kind}_map50"] == pytest.approx(1.0)


def test_a_crowd_of_class_zero_ignores_detections_of_class_zero_only():
    """COCOeval: a crowd (iscrowd 1) ignores its own category's detections. A car crowd (label 0, the label
    that is easy to mistake for 'no class') hides the false car, not the false pedestrian: Car AP50 1,
    Pedestrian AP50 1/2 (its false alarm at 0.9 ranks above its hit at 0.6)."""
    target, pred, region = _scene()
    metric = InstanceMetrics(["Car", "Pedestrian"])
    metric.update([pred], [{**target, "crowd_masks": region[None], "crowd_labels": torch.tensor([0])}])
    values = metric.compute("test")
    for kind in ("mask", "box"):
        assert values[f"test/{kind}_ap50/Car"] == pytest.approx(1.0)
        assert values[f"test/{kind}_ap50/Pedestrian"] == pytest.approx(ONE_FALSE_ALARM_FIRST)
    # the regions handed to torchmetrics: a class-0 crowd is one region of class 0, DontCare one per class
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    box = torch.tensor([[0.0, 30, 20, 40]])
    assert with_crowd_regions(empty, box, 2, ignore_labels=torch.tensor([0]))["labels"].tolist() == [0]
    assert with_crowd_regions(empty, box, 2, ignore_labels=torch.tensor([-1]))["labels"].tolist() == [0, 1]


# ------------------------------------------------------------------------------------------ exact limits


def test_recall_by_height_counts_a_detection_scoring_exactly_min_score():
    """``score >= min_score`` as documented: a detection at exactly 0.05 finds its car."""
    truth = [{"boxes": [[0, 0, 20, 30]], "labels": [0]}]
    found = [{"boxes": [[0, 0, 20, 30]], "labels": [0], "scores": [0.05]}]
    car = recall_by_height(found, truth, num_classes=1, min_score=0.05)[0]
    assert [(b["n"], b["found"]) for b in car if b["n"]] == [(1, 1)]
    below = [{**found[0], "scores": [0.0499]}]
    assert [b["found"] for b in recall_by_height(below, truth, num_classes=1)[0] if b["n"]] == [0]


def test_instance_min_height_keeps_ground_truth_exactly_that_tall():
    """``min_height`` marks ground truth *shorter* than it as crowd: a 10-px car at min_height 10 still counts,
    so missing it leaves recall 1/2 (AP50 51/101); at min_height 10.5 it is ignored (AP50 1).

    (KITTI's devkit ignores ground truth *at* its minimum height, ``height <= MIN_HEIGHT``; this COCO
    diagnostic's documented rule is 'shorter than'.)"""
    masks = torch.stack([_mask(0, 10, 0, 10), _mask(20, 40, 20, 30)])  # 10 and 20 px tall
    target = {"boxes": mask_boxes(masks.byte()), "labels": torch.tensor([0, 0]), "masks": masks}
    found_tall = {"boxes": target["boxes"][1:], "labels": torch.tensor([0]), "scores": torch.tensor([0.9]),
                  "masks": masks[1:]}  # fmt: skip
    for height, expected in ((10, HALF_FOUND), (10.5, 1.0)):
        metric = InstanceMetrics(["Car"], min_height=height)
        metric.update([found_tall], [target])
        values = metric.compute("test")
        assert values[f"test/mask_h{height:g}_ap50/Car"] == pytest.approx(expected, abs=1e-4), height
        assert values[f"test/box_h{height:g}_map50"] == pytest.approx(expected, abs=1e-4), height
    assert math.isclose(float(target["boxes"][0, 3] - target["boxes"][0, 1]), 10.0)
