"""The classification metrics, all from torchmetrics: accuracy, macro F1, confusion matrix (and per-class recall
from it), ECE, and the ranking metrics that do not depend on the decision threshold (AUROC; for two classes also
average precision); and the threshold of a two-class decision (Youden's J on the ROC)."""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics.aggregation import CatMetric
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_average_precision,
    binary_roc,
    multiclass_accuracy,
    multiclass_calibration_error,
    multiclass_confusion_matrix,
    multiclass_f1_score,
)

NAN = float("nan")


class ClassificationMetrics(nn.Module):
    """One stage's metrics, from every probability and label of the split (torchmetrics' ``CatMetric`` states,
    synced across DDP ranks at ``compute``; the metrics themselves are torchmetrics' functional ones).

    ``compute`` returns ``acc`` (micro: share of images right), ``f1_macro`` (unweighted mean over classes, so
    a rare class counts as much as a common one; classes neither present nor predicted are left out),
    ``recall_<class>`` (NaN for a class with no item in the split), ``balanced_accuracy`` (the mean of those
    recalls over the classes in the split), ``auroc`` (from the probabilities, so a well-ranked model whose
    positives sit below the argmax threshold is seen: the positive class's for two classes, else the macro
    one-vs-rest mean over the classes that have items and non-items in the split; NaN when none has), ``ece``
    (expected calibration error, L1 over ``ece_bins`` equal-width confidence bins) and ``confusion`` (rows: true
    class, columns: predicted). With two classes the second (index 1) is the positive one, and there are also
    ``average_precision`` (of the positive class's probability), ``sensitivity`` (its recall) and
    ``specificity`` (the negative class's recall); like the recalls, NaN when the split lacks a class
    (torchmetrics says 0 there, which reads as "ranked everything wrong"). The predicted class is the argmax,
    or, given a two-class ``threshold``, the positive class where its probability is at least that.
    """

    def __init__(self, class_names: list[str], ece_bins: int = 10):
        super().__init__()
        self.class_names = list(class_names)
        self.ece_bins = ece_bins
        self.probs, self.labels = CatMetric(nan_strategy="disable"), CatMetric(nan_strategy="disable")

    def update(self, probs: torch.Tensor, labels: torch.Tensor) -> None:
        self.probs.update(probs)
        self.labels.update(labels)

    def split(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every probability (N, C) and label (N,) of the split, from every rank."""
        return self.probs.compute().reshape(-1, len(self.class_names)), self.labels.compute().long().reshape(-1)

    def compute(self, threshold: float | None = None) -> dict:
        n = len(self.class_names)
        probs, labels = self.split()
        predicted = decide(probs, threshold)
        out = {
            "acc": multiclass_accuracy(predicted, labels, n, average="micro"),
            "f1_macro": multiclass_f1_score(predicted, labels, n, average="macro"),
            "ece": multiclass_calibration_error(probs, labels, n, n_bins=self.ece_bins, norm="l1"),
        }
        confusion = multiclass_confusion_matrix(predicted, labels, n)
        # the confusion matrix's diagonal over its rows; 0 / 0 for a class with no true item is NaN, no recall
        # (torchmetrics' MulticlassRecall says 0.0 there, which reads as "every one missed")
        counts = confusion.sum(1)
        recall = confusion.diag().float() / counts.float()
        for name, value in zip(self.class_names, recall, strict=True):
            out[f"recall_{name}"] = value
        out["balanced_accuracy"] = recall.nanmean()
        # a class's one-vs-rest ranking is defined when the split holds items of it and items of another class
        ranked = ((counts > 0) & (counts < counts.sum())).tolist()
        undefined = recall.new_tensor(NAN)
        if n == 2:
            for key, metric in (("auroc", binary_auroc), ("average_precision", binary_average_precision)):
                out[key] = metric(probs[:, 1], labels) if ranked[1] else undefined
            out["sensitivity"], out["specificity"] = recall[1], recall[0]
        else:
            per_class = [binary_auroc(probs[:, c], labels == c) for c, ok in enumerate(ranked) if ok]
            out["auroc"] = torch.stack(per_class).mean() if per_class else undefined
        out["confusion"] = confusion
        return out

    def reset(self) -> None:
        self.probs.reset()
        self.labels.reset()


def decide(probs: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
    """The predicted class of each row of ``probs`` (N, C): the argmax, or with a ``threshold`` (two classes)
    the positive class (index 1) where its probability is at least ``threshold``."""
    if threshold is None:
        return probs.argmax(1)
    return (probs[:, 1] >= threshold).long()


def youden_threshold(positive_probs: torch.Tensor, labels: torch.Tensor) -> float | None:
    """The positive-class probability threshold of the largest Youden's J (sensitivity + specificity - 1) on
    these items, the highest such where several tie (a threshold ``t`` calls ``p >= t`` positive: the ROC's
    points, torchmetrics' ``binary_roc``); None when the items lack either class (J is undefined)."""
    labels = labels.long()
    if labels.min() == labels.max():
        return None
    fpr, tpr, thresholds = binary_roc(positive_probs, labels)
    return float(thresholds[int(torch.argmax(tpr - fpr))])


def confusion_table(confusion: torch.Tensor, class_names: list[str]) -> str:
    """The confusion matrix as a markdown table (rows: true class, columns: predicted)."""
    lines = ["| true \\ predicted | " + " | ".join(class_names) + " |", "|---|" + "---:|" * len(class_names)]
    for name, row in zip(class_names, confusion.tolist(), strict=True):
        lines.append(f"| {name} | " + " | ".join(str(int(v)) for v in row) + " |")
    return "\n".join(lines)
