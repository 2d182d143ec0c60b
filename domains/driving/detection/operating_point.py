"""The detector's operating point: the score threshold where detection F1 is best on held-out images.

mAP integrates over every threshold; a person looking at boxes needs one. Per threshold, detections are
matched greedily (highest score first) to unmatched ground-truth boxes of the same class at IoU >= ``iou``
(the PASCAL / COCO matching rule), pooled over images and classes; F1 = 2 TP / (2 TP + FP + FN). Written by
hand: torchmetrics gives precision-recall curves per class but no pooled best-F1 threshold.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchvision.ops import box_iou

__all__ = ["best_f1_threshold", "match_detections", "per_image_f1"]


def match_detections(pred: dict, target: dict, iou: float = 0.5) -> tuple[np.ndarray, np.ndarray, int]:
    """Scores and true-positive flags of one image's detections (greedy by score) and its ground-truth count.

    ``pred``: ``boxes`` (N, 4) xyxy, ``scores`` (N,), ``labels`` (N,); ``target``: ``boxes``, ``labels``.
    """
    boxes, scores, labels = (torch.as_tensor(pred[k]) for k in ("boxes", "scores", "labels"))
    gt_boxes, gt_labels = torch.as_tensor(target["boxes"]), torch.as_tensor(target["labels"])
    order = torch.argsort(scores.float(), descending=True)
    boxes, scores, labels = boxes[order].float(), scores[order].float(), labels[order]
    tp = np.zeros(len(scores), dtype=bool)
    if len(gt_boxes) and len(boxes):
        overlaps = box_iou(boxes, gt_boxes.float())
        overlaps[labels[:, None] != gt_labels[None, :]] = -1.0  # another class never matches
        taken = torch.zeros(len(gt_boxes), dtype=torch.bool)
        for i in range(len(boxes)):
            row = overlaps[i].masked_fill(taken, -1.0)
            j = int(row.argmax())
            if float(row[j]) >= iou:
                taken[j] = True
                tp[i] = True
    return scores.numpy(), tp, len(gt_boxes)


def _f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else 1.0


def best_f1_threshold(
    preds: Sequence[dict],
    targets: Sequence[dict],
    iou: float = 0.5,
    thresholds: Sequence[float] = tuple(np.round(np.arange(0.05, 1.0, 0.05), 2)),
) -> dict[str, float]:
    """The threshold (among ``thresholds``) with the best pooled F1; returns it with its F1, precision, recall.

    Ties go to the lower threshold (more boxes shown for the same F1).
    """
    matched = [match_detections(p, t, iou) for p, t in zip(preds, targets, strict=True)]
    scores = np.concatenate([m[0] for m in matched]) if matched else np.zeros(0)
    tps = np.concatenate([m[1] for m in matched]) if matched else np.zeros(0, bool)
    n_gt = sum(m[2] for m in matched)
    best = None
    for t in thresholds:
        keep = scores >= t
        tp = int(tps[keep].sum())
        fp = int(keep.sum()) - tp
        row = {
            "threshold": float(t),
            "f1": _f1(tp, fp, n_gt - tp),
            "precision": tp / max(1, tp + fp),
            "recall": tp / max(1, n_gt),
        }
        if best is None or row["f1"] > best["f1"]:
            best = row
    return best


def per_image_f1(pred: dict, target: dict, threshold: float, iou: float = 0.5) -> float:
    """One image's F1 at ``threshold`` (1.0 for an empty image with no detections)."""
    scores, tp, n_gt = match_detections(pred, target, iou)
    keep = scores >= threshold
    hits = int(tp[keep].sum())
    return _f1(hits, int(keep.sum()) - hits, n_gt - hits)
