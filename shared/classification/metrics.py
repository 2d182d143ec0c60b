"""The classification metrics, all from torchmetrics: accuracy, macro F1, confusion matrix (and per-class recall
from it), ECE, and the ranking metrics that do not depend on the argmax threshold (AUROC; for two classes also
average precision)."""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics.aggregation import CatMetric
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassCalibrationError,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
)
from torchmetrics.functional.classification import binary_auroc, binary_average_precision

NAN = float("nan")


class ClassificationMetrics(nn.Module):
    """One stage's metric states (torchmetrics syncs them across DDP ranks at ``compute``).

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
    (torchmetrics says 0 there, which reads as "ranked everything wrong").
    """

    def __init__(self, class_names: list[str], ece_bins: int = 10):
        super().__init__()
        n = len(class_names)
        self.class_names = list(class_names)
        self.acc = MulticlassAccuracy(n, average="micro")
        self.f1 = MulticlassF1Score(n, average="macro")
        self.ece = MulticlassCalibrationError(n, n_bins=ece_bins, norm="l1")
        self.confusion = MulticlassConfusionMatrix(n)
        # every probability and label of the split, for the ranking metrics (AUROC needs them all)
        self.probs, self.labels = CatMetric(nan_strategy="disable"), CatMetric(nan_strategy="disable")

    def _thresholded(self):
        """The metrics of the probabilities' argmax (the ranking metrics read ``probs`` and ``labels``)."""
        return (self.acc, self.f1, self.ece, self.confusion)

    def update(self, probs: torch.Tensor, labels: torch.Tensor) -> None:
        for metric in self._thresholded():
            metric.update(probs, labels)
        self.probs.update(probs)
        self.labels.update(labels)

    def compute(self) -> dict:
        out = {"acc": self.acc.compute(), "f1_macro": self.f1.compute(), "ece": self.ece.compute()}
        confusion = self.confusion.compute()
        # the confusion matrix's diagonal over its rows; 0 / 0 for a class with no true item is NaN, no recall
        # (torchmetrics' MulticlassRecall says 0.0 there, which reads as "every one missed")
        counts = confusion.sum(1)
        recall = confusion.diag().float() / counts.float()
        for name, value in zip(self.class_names, recall, strict=True):
            out[f"recall_{name}"] = value
        out["balanced_accuracy"] = recall.nanmean()
        # a class's one-vs-rest ranking is defined when the split holds items of it and items of another class
        ranked = ((counts > 0) & (counts < counts.sum())).tolist()
        if any(ranked):
            probs, labels = self.probs.compute(), self.labels.compute().long()
        undefined = recall.new_tensor(NAN)
        if len(self.class_names) == 2:
            for key, metric in (("auroc", binary_auroc), ("average_precision", binary_average_precision)):
                out[key] = metric(probs[:, 1], labels) if ranked[1] else undefined
            out["sensitivity"], out["specificity"] = recall[1], recall[0]
        else:
            per_class = [binary_auroc(probs[:, c], labels == c) for c, ok in enumerate(ranked) if ok]
            out["auroc"] = torch.stack(per_class).mean() if per_class else undefined
        out["confusion"] = confusion
        return out

    def reset(self) -> None:
        for metric in (*self._thresholded(), self.probs, self.labels):
            metric.reset()


def confusion_table(confusion: torch.Tensor, class_names: list[str]) -> str:
    """The confusion matrix as a markdown table (rows: true class, columns: predicted)."""
    lines = ["| true \\ predicted | " + " | ".join(class_names) + " |", "|---|" + "---:|" * len(class_names)]
    for name, row in zip(class_names, confusion.tolist(), strict=True):
        lines.append(f"| {name} | " + " | ".join(str(int(v)) for v in row) + " |")
    return "\n".join(lines)
