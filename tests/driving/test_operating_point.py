"""Best-F1 detection threshold, checked against counts worked out by hand."""

from __future__ import annotations

import pytest
import torch

from domains.driving.detection.operating_point import best_f1_threshold, match_detections, per_image_f1


def _image():
    # two cars (label 0) and a pedestrian (label 1)
    target = {
        "boxes": torch.tensor([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 45, 20]]),
        "labels": torch.tensor([0, 0, 1]),
    }
    pred = {
        "boxes": torch.tensor(
            [[0, 0, 10, 10], [0, 0, 10, 11], [20, 0, 30, 10], [40, 0, 45, 20], [60, 0, 70, 10]]
        ),
        "scores": torch.tensor([0.9, 0.8, 0.3, 0.6, 0.7]),
        # the pedestrian box is predicted as a car: no match across classes
        "labels": torch.tensor([0, 0, 0, 0, 0]),
    }
    return pred, target


def test_greedy_matching_counts_duplicates_and_wrong_classes_as_false_positives():
    pred, target = _image()
    scores, tp, n_gt = match_detections(pred, target)
    # by score: 0.9 car1 TP, 0.8 duplicate of car1 FP, 0.7 nothing FP, 0.6 wrong class FP, 0.3 car2 TP
    assert scores.tolist() == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.3])
    assert tp.tolist() == [True, False, False, False, True] and n_gt == 3


def test_an_overlap_of_exactly_the_iou_threshold_matches():
    """The PASCAL / COCO rule the module follows is IoU >= threshold, not >."""
    target = {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([0])}
    # the prediction holds the 10x10 box inside its 10x20 area: IoU = 100 / 200 = 0.5 exactly
    pred = {"boxes": torch.tensor([[0.0, 0, 10, 20]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([0])}
    _, tp, n_gt = match_detections(pred, target, iou=0.5)
    assert tp.tolist() == [True] and n_gt == 1


def test_best_threshold_by_hand():
    pred, target = _image()
    # F1 = 2 TP / (2 TP + FP + FN). t=0.65: TP 1, FP 2, FN 2 -> 2/6; t=0.75: TP 1, FP 1 -> 2/5;
    # t=0.85: TP 1, FP 0, FN 2 -> 2/4; t=0.95: nothing -> 0/3
    best = best_f1_threshold([pred], [target], thresholds=(0.65, 0.75, 0.85, 0.95))
    assert best["threshold"] == 0.85 and best["f1"] == pytest.approx(0.5)
    assert best["precision"] == 1.0 and best["recall"] == pytest.approx(1 / 3)
    # t=0.25: TP 2, FP 3, FN 1 -> 4/8, the same F1: the tie goes to the lower threshold (more boxes shown)
    tie = best_f1_threshold([pred], [target], thresholds=(0.25, 0.85))
    assert tie["threshold"] == 0.25 and tie["recall"] == pytest.approx(2 / 3)
    assert per_image_f1(pred, target, 0.75) == pytest.approx(2 / 5)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    none = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
    assert per_image_f1(none, empty, 0.5) == 1.0
