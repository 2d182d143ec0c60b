"""The documented conventions of metrics that mutations changed unnoticed, pinned by hand-computed values: the
anomaly best-F1 threshold's tie rule, the two-class decision at the threshold itself, when a class's ranking
metrics are defined, and the medical metrics' default mean probability."""

import math

import numpy as np
import pytest
import torch


def test_best_f1_ties_go_to_the_highest_threshold():
    """2 anomaly pixels. score >= 0.9: TP 1, FP 0, F1 = 2/(1+0+2) = 2/3; >= 0.6: TP 2, FP 2,
    F1 = 4/(4+2) = 2/3, a tie, which goes to 0.9; >= 0.1: 4/(5+2) = 4/7."""
    from domains.driving.anomaly.metrics import PixelAnomalyAccumulator, best_f1_threshold

    scores, labels = np.array([[0.9, 0.6, 0.6, 0.6, 0.1]]), np.array([[1, 1, 0, 0, 0]])
    best = best_f1_threshold(scores, labels)
    assert best == pytest.approx({"threshold": 0.9, "f1": 2 / 3, "precision": 1.0, "recall": 0.5})
    acc = PixelAnomalyAccumulator()
    acc.update(scores, labels)
    assert acc.best_f1_threshold() == best


def test_a_probability_at_the_threshold_is_the_positive_class():
    """``decide``: the positive class where its probability is *at least* the threshold; without one, the
    argmax."""
    from shared.classification.metrics import ClassificationMetrics, decide

    probs = torch.tensor([[0.6, 0.4], [0.2, 0.8], [0.7, 0.3]])
    assert decide(probs, 0.4).tolist() == [1, 1, 0]
    assert decide(probs, 0.8).tolist() == [0, 1, 0]
    assert decide(probs).tolist() == [0, 1, 0]
    metrics = ClassificationMetrics(["normal", "lesion"])
    metrics.update(probs, torch.tensor([1, 1, 0]))
    assert float(metrics.compute(threshold=0.4)["acc"]) == pytest.approx(1.0)  # > 0.4 would say 2/3
    assert float(metrics.compute()["acc"]) == pytest.approx(2 / 3)


def _computed(class_names, probs, labels) -> dict:
    from shared.classification.metrics import ClassificationMetrics

    metrics = ClassificationMetrics(class_names)
    metrics.update(torch.tensor(probs), torch.tensor(labels))
    return metrics.compute()


def test_ranking_metrics_need_items_of_the_class_and_of_another():
    """AUROC / AP by hand where both kinds are in the split; NaN where every item is of one class
    (torchmetrics would give a number for a ranking of positives only)."""
    # two classes, positive probabilities 0.2 (normal), 0.8, 0.1 (lesions): AUROC = 1/2 (0.8 > 0.2,
    # 0.1 < 0.2); ranked 0.8 (P 1, R 1/2), 0.2, 0.1 (P 2/3, R 1): AP = 1/2 + 1/2 * 2/3 = 5/6
    probs = [[0.8, 0.2], [0.2, 0.8], [0.9, 0.1]]
    out = _computed(["normal", "lesion"], probs, [0, 1, 1])
    assert float(out["auroc"]) == pytest.approx(0.5)
    assert float(out["average_precision"]) == pytest.approx(5 / 6)
    out = _computed(["normal", "lesion"], probs, [1, 1, 1])
    assert math.isnan(out["auroc"]) and math.isnan(out["average_precision"])
    assert float(out["sensitivity"]) == pytest.approx(1 / 3) and math.isnan(out["specificity"])
    # three classes: class a one-vs-rest 1.0 (0.7 and 0.45 above 0.3), b 1/2 (0.4 above 0.2, below 0.5), c
    # has no item: left out, mean 0.75; every item of class a: no class has items and non-items
    probs = [[0.7, 0.2, 0.1], [0.45, 0.5, 0.05], [0.3, 0.4, 0.3]]
    assert float(_computed(["a", "b", "c"], probs, [0, 0, 1])["auroc"]) == pytest.approx(0.75)
    assert math.isnan(_computed(["a", "b", "c"], probs, [0, 0, 0])["auroc"])


def test_the_default_mean_probability_is_the_mean_of_the_samples():
    """One pixel of four marked by 1 of 4 samples: mean 0.25, under the 0.5 threshold, so the prediction is
    empty as the one reader's mask is (Dice 1), and ECE = 1/4 pixels x |0.25 - 0| = 0.0625 (the maximum of the
    samples, 1, would give Dice 0 and ECE 0.25)."""
    from domains.medical.metrics import SegmentationUncertaintyMetrics

    samples = torch.zeros(1, 4, 2, 2)
    samples[0, 0, 0, 0] = 1
    readers = torch.zeros(1, 1, 2, 2)
    default = SegmentationUncertaintyMetrics()
    default.update(samples, None, readers)
    out = default.compute()
    assert out["dice_readers"] == pytest.approx(1.0) and out["ece"] == pytest.approx(0.0625)
    explicit = SegmentationUncertaintyMetrics()
    explicit.update(samples, samples.mean(1, keepdim=True), readers)
    assert explicit.compute() == pytest.approx(out, nan_ok=True)  # the *_lesion means: no lesion, NaN
