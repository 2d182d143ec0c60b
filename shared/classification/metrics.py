"""The classification metrics, all from torchmetrics: accuracy, macro F1, confusion matrix (and per-class recall
from it), ECE."""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassCalibrationError,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
)


class ClassificationMetrics(nn.Module):
    """One stage's metric states (torchmetrics syncs them across DDP ranks at ``compute``).

    ``compute`` returns ``acc`` (micro: share of images right), ``f1_macro`` (unweighted mean over classes, so
    a rare class counts as much as a common one; classes neither present nor predicted are left out),
    ``recall_<class>`` (NaN for a class with no item in the split), ``ece`` (expected calibration error, L1
    over ``ece_bins`` equal-width confidence bins) and ``confusion`` (rows: true class, columns: predicted).
    """

    def __init__(self, class_names: list[str], ece_bins: int = 10):
        super().__init__()
        n = len(class_names)
        self.class_names = list(class_names)
        self.acc = MulticlassAccuracy(n, average="micro")
        self.f1 = MulticlassF1Score(n, average="macro")
        self.ece = MulticlassCalibrationError(n, n_bins=ece_bins, norm="l1")
        self.confusion = MulticlassConfusionMatrix(n)

    def update(self, probs: torch.Tensor, labels: torch.Tensor) -> None:
        for metric in (self.acc, self.f1, self.ece, self.confusion):
            metric.update(probs, labels)

    def compute(self) -> dict:
        out = {"acc": self.acc.compute(), "f1_macro": self.f1.compute(), "ece": self.ece.compute()}
        confusion = self.confusion.compute()
        # the confusion matrix's diagonal over its rows; 0 / 0 for a class with no true item is NaN, no recall
        # (torchmetrics' MulticlassRecall says 0.0 there, which reads as "every one missed")
        recall = confusion.diag().float() / confusion.sum(1).float()
        for name, value in zip(self.class_names, recall, strict=True):
            out[f"recall_{name}"] = value
        out["confusion"] = confusion
        return out

    def reset(self) -> None:
        for metric in (self.acc, self.f1, self.ece, self.confusion):
            metric.reset()


def confusion_table(confusion: torch.Tensor, class_names: list[str]) -> str:
    """The confusion matrix as a markdown table (rows: true class, columns: predicted)."""
    lines = ["| true \\ predicted | " + " | ".join(class_names) + " |", "|---|" + "---:|" * len(class_names)]
    for name, row in zip(class_names, confusion.tolist(), strict=True):
        lines.append(f"| {name} | " + " | ".join(str(int(v)) for v in row) + " |")
    return "\n".join(lines)
