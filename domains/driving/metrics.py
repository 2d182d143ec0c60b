"""Driving metrics: pixel / component road-anomaly metrics and KITTI 2D average precision.

Pixel level (SegmentMeIfYouCan, Fishyscapes; handbook section 5): every non-void pixel of the whole data
set goes into one curve, never an average of per-image values. AP is sklearn's step sum
``sum_k (R_k - R_{k-1}) P_k`` over descending thresholds, AUROC the trapezoid ROC area and FPR95 the false
positive rate at the first threshold whose TPR reaches 0.95. ``PixelAnomalyAccumulator`` streams: it keeps
one (positive, negative) count per distinct score, never the pixels, and switches to a fixed histogram
when the number of distinct scores passes a cap.

Component level (SegmentMeIfYouCan, Chan et al. 2021): 8-connected components, sIoU per ground-truth
component, PPV per predicted component, F1 averaged over tau = 0.25 ... 0.75.

KITTI 2D AP|R40 follows the official devkit's ``evaluate_object.cpp`` rule for rule.

Why by hand: sklearn's curves need every pixel in memory at once (and sklearn is a dev-only dependency);
no maintained library provides SMIYC component metrics or the KITTI 2D evaluation.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torchvision.ops import box_iou

__all__ = [
    "KITTI_DIFFICULTY",
    "KITTI_IMAGE_HEIGHT",
    "KITTI_MIN_OVERLAP",
    "ComponentMetricsAccumulator",
    "PixelAnomalyAccumulator",
    "best_f1_threshold",
    "component_metrics",
    "component_stats",
    "kitti_average_precision",
    "pixel_anomaly_metrics",
    "recall_by_height",
]

ArrayLike = np.ndarray | torch.Tensor

# ----------------------------------------------------------------------------------------------------------
# Input helpers
# ----------------------------------------------------------------------------------------------------------


def _to_numpy(x: Any, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    try:
        return np.asarray(x)
    except Exception as exc:  # pragma: no cover - message only
        raise TypeError(f"{what}: expected an array or tensor, got {type(x).__name__}") from exc


def _where(name: str | int | None) -> str:
    if name is None:
        return ""
    return f" of image {name!r}" if isinstance(name, str) else f" of image index {name}"


def _check_pair(
    scores: Any, labels: Any, ignore_index: int, name: str | int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Validate one (scores, labels) pair; return scores as float64 and labels, same shape."""
    s = _to_numpy(scores, "scores")
    y = _to_numpy(labels, "labels")
    if s.shape != y.shape:
        raise ValueError(f"scores and labels{_where(name)} differ in shape: {s.shape} vs {y.shape}")
    if s.dtype == np.float16:
        s = s.astype(np.float32)  # np.isnan / unique are slow or unsupported on half on some builds
    if not np.issubdtype(s.dtype, np.number) and s.dtype != np.bool_:
        raise ValueError(f"scores{_where(name)}: expected numbers, got dtype {s.dtype}")
    s = s.astype(np.float64, copy=False)
    finite = np.isfinite(s)
    if not finite.all():
        pos = np.unravel_index(int(np.argmin(finite)), s.shape)
        kind = "NaN" if np.isnan(s[pos]) else "infinite value"
        raise ValueError(
            f"{kind} in anomaly scores{_where(name)} at position {tuple(int(p) for p in pos)}"
            f" ({int((~finite).sum())} non-finite values in total)"
        )
    bad = (y != 0) & (y != 1) & (y != ignore_index)
    if bad.any():
        values = np.unique(y[bad])[:10].tolist()
        raise ValueError(
            f"labels{_where(name)}: expected 0 (normal), 1 (anomaly) or {ignore_index} (void), found {values}"
        )
    return s, y


def _iter_pairs(scores: Any, labels: Any) -> Iterator[tuple[Any, Any, str | int | None]]:
    """Yield (scores, labels, name) from one array pair, two sequences, or an iterable of pairs/triples."""
    if labels is None:
        for i, item in enumerate(scores):
            if len(item) == 3:
                yield item[0], item[1], item[2]
            elif len(item) == 2:
                yield item[0], item[1], i
            else:
                raise ValueError(
                    f"item {i}: expected (scores, labels) or (scores, labels, name), got {len(item)}"
                )
        return
    if isinstance(scores, (np.ndarray, torch.Tensor)):
        if scores.ndim == 3:  # (B, H, W): one image per row, so errors can name the image index
            if labels.shape[:1] != scores.shape[:1]:
                raise ValueError(
                    f"scores and labels differ in shape: {tuple(scores.shape)} vs {tuple(labels.shape)}"
                )
            for i in range(scores.shape[0]):
                yield scores[i], labels[i], i
        else:
            yield scores, labels, None
        return
    scores, labels = list(scores), list(labels)
    if len(scores) != len(labels):
        raise ValueError(f"got {len(scores)} score maps but {len(labels)} label maps")
    for i, (s, y) in enumerate(zip(scores, labels, strict=True)):
        yield s, y, i


# ----------------------------------------------------------------------------------------------------------
# Pixel level
# ----------------------------------------------------------------------------------------------------------


class PixelAnomalyAccumulator:
    """Streaming counts for pooled pixel AP / AUROC / FPR95 over a whole data set.

    Exact mode: one (positive, negative) count per distinct score value, merged after every ``update``
    with ``np.unique``; results equal sklearn's on the concatenated pixels (ties included), while memory
    grows with the number of *distinct* scores, not pixels.

    Binned mode (approximation): once more than ``max_distinct`` distinct values are seen, the counts are
    re-binned into ``max_distinct`` equal-width bins over the observed score range and later pixels go into
    those bins (no quantiles, so no second pass is needed). Scores inside one bin count as tied: with
    2**20 bins AP / AUROC typically move by far less than 1e-3. If later scores fall outside the range, the
    range is widened and old bins are moved by their centres, which adds at most one bin width of error.
    ``compute()["binned"]`` says which mode produced the numbers.
    """

    def __init__(self, ignore_index: int = 255, max_distinct: int = 2**20) -> None:
        if max_distinct < 2:
            raise ValueError(f"max_distinct must be >= 2, got {max_distinct}")
        self.ignore_index = ignore_index
        self.max_distinct = int(max_distinct)
        self.reset()

    def reset(self) -> None:
        self.values = np.empty(0, dtype=np.float64)  # exact mode: sorted distinct scores
        self.pos = np.empty(0, dtype=np.int64)
        self.neg = np.empty(0, dtype=np.int64)
        self.binned = False
        self.lo = self.hi = 0.0  # binned mode: range of the fixed bins
        self.num_void = 0
        self.num_images = 0

    # -- updating -----------------------------------------------------------------------------------------
    def update(self, scores: ArrayLike, labels: ArrayLike, name: str | int | None = None) -> None:
        """Add one image (or any batch of pixels); ``name`` only labels error messages."""
        s, y = _check_pair(scores, labels, self.ignore_index, name)
        valid = y != self.ignore_index
        self.num_void += int(y.size - valid.sum())
        self.num_images += 1
        s, y = s[valid], y[valid]
        if s.size == 0:
            return
        is_pos = y == 1
        if self.binned:
            self._add_binned(s, is_pos)
            return
        uniq, inv = np.unique(s, return_inverse=True)
        pos = np.bincount(inv[is_pos], minlength=uniq.size)
        neg = np.bincount(inv[~is_pos], minlength=uniq.size)
        if self.values.size:
            # Fast path (quantised scores): every value already known -> add counts in place.
            at = np.searchsorted(self.values, uniq)
            if at[-1] < self.values.size and np.array_equal(self.values[at], uniq):
                self.pos[at] += pos
                self.neg[at] += neg
                return
            uniq, inv = np.unique(np.concatenate([self.values, uniq]), return_inverse=True)
            pos = np.bincount(inv, weights=np.concatenate([self.pos, pos]), minlength=uniq.size)
            neg = np.bincount(inv, weights=np.concatenate([self.neg, neg]), minlength=uniq.size)
        self.values, self.pos, self.neg = uniq, pos.astype(np.int64), neg.astype(np.int64)
        if self.values.size > self.max_distinct:
            self._switch_to_bins()

    def _bin_index(self, s: np.ndarray) -> np.ndarray:
        width = (self.hi - self.lo) / self.max_distinct
        idx = np.floor((s - self.lo) / width).astype(np.int64)
        return np.clip(idx, 0, self.max_distinct - 1)

    def _switch_to_bins(self) -> None:
        self.lo, self.hi = float(self.values[0]), float(self.values[-1])
        idx = self._bin_index(self.values)
        self.pos = np.bincount(idx, weights=self.pos, minlength=self.max_distinct).astype(np.int64)
        self.neg = np.bincount(idx, weights=self.neg, minlength=self.max_distinct).astype(np.int64)
        self.values = np.empty(0, dtype=np.float64)
        self.binned = True

    def _add_binned(self, s: np.ndarray, is_pos: np.ndarray) -> None:
        s_min, s_max = float(s.min()), float(s.max())
        if s_min < self.lo or s_max > self.hi:
            old_width = (self.hi - self.lo) / self.max_distinct
            centres = self.lo + (np.arange(self.max_distinct) + 0.5) * old_width
            self.lo, self.hi = min(self.lo, s_min), max(self.hi, s_max)
            idx = self._bin_index(centres)
            self.pos = np.bincount(idx, weights=self.pos, minlength=self.max_distinct).astype(np.int64)
            self.neg = np.bincount(idx, weights=self.neg, minlength=self.max_distinct).astype(np.int64)
        idx = self._bin_index(s)
        self.pos += np.bincount(idx[is_pos], minlength=self.max_distinct)
        self.neg += np.bincount(idx[~is_pos], minlength=self.max_distinct)

    # -- reading ------------------------------------------------------------------------------------------
    def curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(thresholds descending, cumulative TP, cumulative FP) for predictions ``score >= threshold``.

        In binned mode a threshold is a bin's left edge.
        """
        if self.binned:
            width = (self.hi - self.lo) / self.max_distinct
            thresholds = self.lo + np.arange(self.max_distinct) * width
        else:
            thresholds = self.values
        keep = (self.pos + self.neg) > 0
        thresholds, pos, neg = thresholds[keep][::-1], self.pos[keep][::-1], self.neg[keep][::-1]
        return thresholds, np.cumsum(pos), np.cumsum(neg)

    @property
    def num_positive(self) -> int:
        return int(self.pos.sum())

    @property
    def num_negative(self) -> int:
        return int(self.neg.sum())

    def compute(self, tpr_at: float = 0.95) -> dict[str, Any]:
        """``ap``, ``auroc``, ``fpr95`` (FPR at the first threshold with TPR >= ``tpr_at``) and counts."""
        if not 0.0 < tpr_at <= 1.0:
            raise ValueError(f"tpr_at must lie in (0, 1], got {tpr_at}")
        _, tps, fps = self.curve()
        n_pos, n_neg = self.num_positive, self.num_negative
        out: dict[str, Any] = {
            "ap": float("nan"),
            "auroc": float("nan"),
            "fpr95": float("nan"),
            "tpr_at": float(tpr_at),
            "num_pixels": n_pos + n_neg,
            "num_positive": n_pos,
            "num_negative": n_neg,
            "num_void": self.num_void,
            "num_images": self.num_images,
            "num_thresholds": int(tps.size),
            "binned": self.binned,
        }
        if n_pos == 0:
            warnings.warn(
                "no anomaly (label 1) pixels: AP, AUROC and FPR95 are undefined (NaN)", stacklevel=2
            )
            return out
        precision = tps / (tps + fps)
        recall = tps / n_pos
        out["ap"] = float(np.sum(np.diff(recall, prepend=0.0) * precision))
        if n_neg == 0:
            warnings.warn("no normal (label 0) pixels: AUROC and FPR95 are undefined (NaN)", stacklevel=2)
            return out
        tpr = np.concatenate([[0.0], recall])
        fpr = np.concatenate([[0.0], fps / n_neg])
        out["auroc"] = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))
        k = int(np.argmax(recall >= tpr_at))  # recall reaches 1 at the last threshold, so k exists
        out["fpr95"] = float(fps[k] / n_neg)
        return out

    def best_f1_threshold(self) -> dict[str, float]:
        """Threshold ``t`` maximising pixel F1 of ``score >= t`` (the highest such t on ties)."""
        thresholds, tps, fps = self.curve()
        n_pos = self.num_positive
        if n_pos == 0:
            raise ValueError("best F1 threshold is undefined without anomaly (label 1) pixels")
        f1 = 2.0 * tps / (tps + fps + n_pos)
        k = int(np.argmax(f1))
        return {
            "threshold": float(thresholds[k]),
            "f1": float(f1[k]),
            "precision": float(tps[k] / (tps[k] + fps[k])),
            "recall": float(tps[k] / n_pos),
        }


def _accumulate(scores: Any, labels: Any, ignore_index: int, max_distinct: int) -> PixelAnomalyAccumulator:
    acc = PixelAnomalyAccumulator(ignore_index=ignore_index, max_distinct=max_distinct)
    for s, y, name in _iter_pairs(scores, labels):
        acc.update(s, y, name=name)
    return acc


def pixel_anomaly_metrics(
    scores: Any,
    labels: Any = None,
    *,
    ignore_index: int = 255,
    tpr_at: float = 0.95,
    max_distinct: int = 2**20,
) -> dict[str, Any]:
    """Pooled pixel AP / AUROC / FPR95 (label 1 = anomaly, 0 = normal, ``ignore_index`` = void).

    ``scores``/``labels``: two arrays or tensors of equal shape, two sequences of per-image maps, or
    ``labels=None`` and an iterable of ``(scores, labels)`` or ``(scores, labels, name)``. Streams through
    ``PixelAnomalyAccumulator`` so a generator over a large data set never holds all pixels.
    """
    return _accumulate(scores, labels, ignore_index, max_distinct).compute(tpr_at=tpr_at)


def best_f1_threshold(
    scores: PixelAnomalyAccumulator | Any, labels: Any = None, *, ignore_index: int = 255
) -> dict[str, float]:
    """Pixel threshold with the best F1 (SMIYC thresholds component metrics there).

    Pass a filled ``PixelAnomalyAccumulator`` or the same inputs as ``pixel_anomaly_metrics``.
    """
    if isinstance(scores, PixelAnomalyAccumulator):
        return scores.best_f1_threshold()
    return _accumulate(scores, labels, ignore_index, 2**20).best_f1_threshold()


# ----------------------------------------------------------------------------------------------------------
# Component level (SegmentMeIfYouCan)
# ----------------------------------------------------------------------------------------------------------

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
SIOU_THRESHOLDS = np.linspace(0.25, 0.75, 11)


def component_stats(
    score_map: ArrayLike,
    label_map: ArrayLike,
    threshold: float,
    *,
    ignore_index: int = 255,
    min_pred_size: int = 0,
    min_gt_size: int = 0,
    name: str | int | None = None,
) -> dict[str, np.ndarray]:
    """Per-component sIoU (ground truth) and PPV (prediction) of one image, as in SMIYC.

    Prediction: ``score >= threshold`` inside the region of interest (non-void). Components are
    8-connected. For a ground-truth component K with P(K) the union of predicted components touching it,
    ``sIoU(K) = |K & P(K)| / |(K | P(K)) minus A(K)|`` where A(K) are the pixels of the *other*
    ground-truth components (a prediction covering two neighbouring objects is not punished twice).
    PPV of a predicted component = the fraction of its pixels that are anomaly ground truth.
    ``min_pred_size`` drops smaller predicted components and ``min_gt_size`` turns smaller ground-truth
    components into void, as the benchmark's own settings do (AnomalyTrack 500 / 100, ObstacleTrack
    50 / 10); both are off (0) by default.
    """
    s, y = _check_pair(score_map, label_map, ignore_index, name)
    if s.ndim != 2:
        raise ValueError(f"component metrics{_where(name)}: expected (H, W) maps, got shape {s.shape}")
    roi = y != ignore_index
    gt_cc, n_gt = ndimage.label(y == 1, structure=_EIGHT_CONNECTED)
    pred_cc, n_pred = ndimage.label((s >= threshold) & roi, structure=_EIGHT_CONNECTED)
    if min_pred_size > 0:
        small = np.bincount(pred_cc.ravel(), minlength=n_pred + 1) < min_pred_size
        small[0] = False
        pred_cc[small[pred_cc]] = 0
    if min_gt_size > 0:
        small = np.bincount(gt_cc.ravel(), minlength=n_gt + 1) < min_gt_size
        small[0] = False
        roi &= ~small[gt_cc]
        gt_cc[small[gt_cc]] = 0
    g, p = gt_cc[roi].astype(np.int64), pred_cc[roi].astype(np.int64)
    # Contingency table: table[i, j] = pixels in GT component i and predicted component j (0 = none).
    table = np.bincount(g * (n_pred + 1) + p, minlength=(n_gt + 1) * (n_pred + 1)).reshape(
        n_gt + 1, n_pred + 1
    )
    gt_size = table[1:, :].sum(axis=1)
    pred_size = table[:, 1:].sum(axis=0)
    gt_ids = np.flatnonzero(gt_size > 0)  # components removed by the size filters have no pixels left
    pred_ids = np.flatnonzero(pred_size > 0)

    overlap = table[1:, 1:][gt_ids][:, pred_ids]  # (G, P)
    touches = overlap > 0
    inter = overlap.sum(axis=1)
    # |(K | P(K)) minus A(K)| = |K| + pixels of P(K) outside every GT component.
    union = gt_size[gt_ids] + touches @ table[0, 1:][pred_ids]
    siou = inter / np.maximum(union, 1)
    ppv = (pred_size[pred_ids] - table[0, 1:][pred_ids]) / pred_size[pred_ids]
    return {"sIoU_gt": siou.astype(np.float64), "PPV": ppv.astype(np.float64)}


class ComponentMetricsAccumulator:
    """Pools component statistics over images; ``compute()`` gives sIoU_gt, PPV and mean F1.

    Counts at each tau follow the SMIYC paper: a ground-truth component is a TP when sIoU > tau, else a FN;
    a predicted component is a FP when PPV <= tau. F1(tau) = 2 TP / (2 TP + FN + FP) on the pooled counts,
    ``mean_F1`` its average over tau in linspace(0.25, 0.75, 11). sIoU_gt and PPV are means over all
    components of the data set.
    """

    def __init__(
        self,
        threshold: float,
        *,
        ignore_index: int = 255,
        min_pred_size: int = 0,
        min_gt_size: int = 0,
        taus: Sequence[float] = tuple(SIOU_THRESHOLDS),
    ) -> None:
        self.threshold = float(threshold)
        self.kwargs = {
            "ignore_index": ignore_index,
            "min_pred_size": min_pred_size,
            "min_gt_size": min_gt_size,
        }
        self.taus = np.asarray(taus, dtype=np.float64)
        self.reset()

    def reset(self) -> None:
        self.siou: list[np.ndarray] = []
        self.ppv: list[np.ndarray] = []
        self.num_images = 0

    def update(self, score_map: ArrayLike, label_map: ArrayLike, name: str | int | None = None) -> None:
        stats = component_stats(score_map, label_map, self.threshold, name=name, **self.kwargs)
        self.siou.append(stats["sIoU_gt"])
        self.ppv.append(stats["PPV"])
        self.num_images += 1

    def compute(self) -> dict[str, Any]:
        siou = np.concatenate(self.siou) if self.siou else np.empty(0)
        ppv = np.concatenate(self.ppv) if self.ppv else np.empty(0)
        tp = (siou[None, :] > self.taus[:, None]).sum(axis=1)
        fn = siou.size - tp
        fp = (ppv[None, :] <= self.taus[:, None]).sum(axis=1)
        denom = 2 * tp + fn + fp
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), np.nan)
        return {
            "sIoU_gt": float(siou.mean()) if siou.size else float("nan"),
            "PPV": float(ppv.mean()) if ppv.size else float("nan"),
            "mean_F1": float(f1.mean()) if denom.all() else float("nan"),
            "f1_per_tau": f1.tolist(),
            "tp": tp.tolist(),
            "fn": fn.tolist(),
            "fp": fp.tolist(),
            "taus": self.taus.tolist(),
            "threshold": self.threshold,
            "num_gt_components": int(siou.size),
            "num_pred_components": int(ppv.size),
            "num_images": self.num_images,
        }


def component_metrics(
    score_maps: Any,
    label_maps: Any = None,
    threshold: float | None = None,
    *,
    ignore_index: int = 255,
    min_pred_size: int = 0,
    min_gt_size: int = 0,
) -> dict[str, Any]:
    """SMIYC component metrics (``sIoU_gt``, ``PPV``, ``mean_F1`` and the counts) over a data set.

    Inputs as in ``pixel_anomaly_metrics`` (one (H, W) pair, sequences, or an iterable of pairs with
    ``label_maps=None``). ``threshold`` is the pixel threshold; SMIYC uses ``best_f1_threshold``.
    """
    if threshold is None:
        raise ValueError("component_metrics needs a pixel threshold (see best_f1_threshold)")
    acc = ComponentMetricsAccumulator(
        threshold, ignore_index=ignore_index, min_pred_size=min_pred_size, min_gt_size=min_gt_size
    )
    for s, y, name in _iter_pairs(score_maps, label_maps):
        acc.update(s, y, name=name)
    return acc.compute()


# ----------------------------------------------------------------------------------------------------------
# KITTI 2D object detection AP|R40
# ----------------------------------------------------------------------------------------------------------
# Written by hand after the official devkit (devkit_object/cpp/evaluate_object.cpp: cleanData,
# computeStatistics, getThresholds, eval_class, and the R40 sum of the 2019 update) because no maintained
# Python library provides KITTI's 2D AP. Semantics kept on purpose, quirks included:
# - GT of the neighbour class (Van for Car, Person_sitting for Pedestrian) and GT outside the difficulty
#   (occlusion / truncation above the maximum, height below the minimum) are "ignored": not counted as FN,
#   and a detection matched to them is neither TP nor FP.
# - Detections lower than the minimum height (height truncated to an int, as the C++ does) are ignored,
#   whatever their class; detections of other classes are not considered at all.
# - A detection left unmatched whose overlap with a DontCare box (intersection / detection area) exceeds
#   the class's IoU threshold is not a FP.
# - Recall is sampled with getThresholds: one score threshold per 1/40 of recall, so with fewer than about
#   80 valid ground-truth objects the AP is underestimated (2 perfectly found objects give 1/40).

KITTI_MIN_OVERLAP = {
    "car": 0.7,
    "pedestrian": 0.5,
    "cyclist": 0.5,
    "van": 0.7,
    "truck": 0.7,
    "person_sitting": 0.5,
    "tram": 0.7,
}
KITTI_IMAGE_HEIGHT = 375  # px; the min heights below are in pixels of KITTI's 1242x375 frames
KITTI_DIFFICULTY = {  # name: (min box height px, max occlusion level, max truncation)
    "easy": (40, 0, 0.15),
    "moderate": (25, 1, 0.30),
    "hard": (25, 2, 0.50),
}
_NEIGHBOUR = {"car": "van", "pedestrian": "person_sitting"}
_N_SAMPLE_PTS = 41


class _Image:
    """One image's boxes as arrays; types lower-cased like the devkit's strcasecmp."""

    def __init__(self, gts: Any, dets: Any, name: Any) -> None:
        g = _records(gts, ("bbox", "truncated", "occluded"), name, "ground truth")
        d = _records(dets, ("bbox", "score"), name, "detections")
        self.gt_types = g["type"]
        self.gt_boxes = g["bbox"]
        self.gt_trunc = g["truncated"]
        self.gt_occ = g["occluded"]
        self.det_types = d["type"]
        self.det_boxes = d["bbox"]
        self.det_scores = d["score"]
        gb = torch.from_numpy(self.gt_boxes)
        db = torch.from_numpy(self.det_boxes)
        self.iou = torch.nan_to_num(box_iou(db, gb), nan=0.0).numpy()  # (D, G)
        dc = self.gt_boxes[self.gt_types == "dontcare"]
        self.dc_overlap = _inter_over_first_area(self.det_boxes, dc)  # (D, #DontCare)


def _records(data: Any, fields: tuple[str, ...], name: Any, what: str) -> dict[str, np.ndarray]:
    """Per-image objects as a list of dicts or a dict of sequences -> dict of arrays."""
    if isinstance(data, Mapping):
        n = len(data.get("type", data.get("name", [])))
        rows = [{k: v[i] for k, v in data.items()} for i in range(n)]
    else:
        rows = list(data)
    out: dict[str, list] = {"type": [], **{f: [] for f in fields}}
    for k, row in enumerate(rows):
        where = f"{what} of image {name!r}, object {k}"
        typ = row.get("type", row.get("name"))
        if typ is None:
            raise ValueError(f"{where}: missing 'type'")
        out["type"].append(str(typ).lower())
        for f in fields:
            if f not in row:
                raise ValueError(f"{where}: missing {f!r} (needs type, {', '.join(fields)})")
            out[f].append(row[f])
    res = {"type": np.asarray(out["type"], dtype=object)}
    boxes = np.asarray(out["bbox"], dtype=np.float64).reshape(-1, 4)
    if not np.isfinite(boxes).all() or (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
        raise ValueError(f"{what} of image {name!r}: boxes must be finite (left, top, right, bottom)")
    res["bbox"] = boxes
    for f in fields:
        if f != "bbox":
            res[f] = np.asarray(out[f], dtype=np.float64).reshape(-1)
            if not np.isfinite(res[f]).all():
                raise ValueError(f"{what} of image {name!r}: non-finite {f!r}")
    return res


def _inter_over_first_area(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a_i & b_j| / |a_i| (the devkit's boxoverlap criterion 0, used for DontCare regions)."""
    if a.shape[0] == 0 or b.shape[0] == 0:
        return np.zeros((a.shape[0], b.shape[0]))
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.where((w > 0) & (h > 0), w * h, 0.0)
    area = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nan_to_num(inter / area[:, None], nan=0.0)


def _clean(img: _Image, cls: str, level: tuple[float, int, float]) -> tuple[np.ndarray, np.ndarray, int]:
    """devkit cleanData: ignored_gt / ignored_det in {-1 not considered, 0 valid, 1 ignored}."""
    min_h, max_occ, max_trunc = level
    height = img.gt_boxes[:, 3] - img.gt_boxes[:, 1]
    valid = img.gt_types == cls
    neighbour = img.gt_types == _NEIGHBOUR.get(cls, "\0")
    too_hard = (img.gt_occ > max_occ) | (img.gt_trunc > max_trunc) | (height < min_h)
    ignored_gt = np.full(len(height), -1, dtype=np.int64)
    ignored_gt[neighbour | (valid & too_hard)] = 1
    ignored_gt[valid & ~too_hard] = 0
    det_h = np.trunc(np.abs(img.det_boxes[:, 3] - img.det_boxes[:, 1]))  # C++: int32_t height = fabs(...)
    ignored_det = np.where(img.det_types == cls, 0, -1)
    ignored_det[det_h < min_h] = 1
    return ignored_gt, ignored_det, int((ignored_gt == 0).sum())


def _statistics(
    img: _Image,
    ignored_gt: np.ndarray,
    ignored_det: np.ndarray,
    min_overlap: float,
    compute_fp: bool,
    thresh: float = 0.0,
) -> tuple[int, int, int, list[float]]:
    """devkit computeStatistics for one image -> (tp, fp, fn, scores of the TPs)."""
    no_detection = -1e7
    scores = img.det_scores
    assigned = np.zeros(len(scores), dtype=bool)
    below = scores < thresh if compute_fp else np.zeros(len(scores), dtype=bool)
    tp = fp = fn = 0
    tp_scores: list[float] = []
    for i in range(len(ignored_gt)):
        if ignored_gt[i] == -1:
            continue
        det_idx, valid_detection, max_overlap, assigned_ignored = -1, no_detection, 0.0, False
        for j in range(len(scores)):
            if ignored_det[j] == -1 or assigned[j] or below[j]:
                continue
            overlap = img.iou[j, i]
            if overlap <= min_overlap:
                continue
            if not compute_fp:
                # recall thresholds: the highest-scoring candidate
                if scores[j] > valid_detection:
                    det_idx, valid_detection = j, scores[j]
            elif (overlap > max_overlap or assigned_ignored) and ignored_det[j] == 0:
                # precision: the best-overlapping valid candidate, preferred to ignored (too small) ones
                max_overlap, det_idx, valid_detection, assigned_ignored = overlap, j, 1.0, False
            elif valid_detection == no_detection and ignored_det[j] == 1:
                det_idx, valid_detection, assigned_ignored = j, 1.0, True
        if valid_detection == no_detection:
            fn += int(ignored_gt[i] == 0)
        elif ignored_gt[i] == 1 or ignored_det[det_idx] == 1:
            assigned[det_idx] = True  # matched to something ignored: neither TP nor FP
        else:
            tp += 1
            tp_scores.append(float(scores[det_idx]))
            assigned[det_idx] = True
    if compute_fp:
        counted = ~assigned & (ignored_det == 0) & ~below
        fp = int(counted.sum())
        for c in range(img.dc_overlap.shape[1]):  # unmatched detections inside DontCare are not FPs
            hit = counted & (img.dc_overlap[:, c] > min_overlap)
            fp -= int(hit.sum())
            counted &= ~hit
    return tp, fp, fn, tp_scores


def _recall_thresholds(v: list[float], n_gt: int) -> list[float]:
    """devkit getThresholds: scores whose recall is closest to each of 0, 1/40, 2/40, ..."""
    v = sorted(v, reverse=True)
    thresholds: list[float] = []
    current = 0.0
    for i, score in enumerate(v):
        left = (i + 1) / n_gt
        right = (i + 2) / n_gt if i < len(v) - 1 else left
        if (right - current) < (current - left) and i < len(v) - 1:
            continue
        thresholds.append(score)
        current += 1.0 / (_N_SAMPLE_PTS - 1.0)
    return thresholds


def kitti_average_precision(
    detections: Sequence[Any] | Mapping[Any, Any],
    ground_truths: Sequence[Any] | Mapping[Any, Any],
    classes: Iterable[str] = ("Car", "Pedestrian", "Cyclist"),
    difficulty: str = "moderate",
    min_overlap: Mapping[str, float] | None = None,
    min_height_scale: float = 1.0,
) -> dict[str, float]:
    """KITTI 2D AP|R40 per class in [0, 1] (the devkit prints it times 100).

    ``detections`` / ``ground_truths``: one entry per image, both lists in the same order or dicts with the
    same keys (names appear in errors). An entry is a list of dicts (or a dict of sequences) with
    ``type``, ``bbox`` (left, top, right, bottom in pixels) and ``score`` for detections, ``type``,
    ``bbox``, ``truncated``, ``occluded`` for ground truth (DontCare boxes included, as in label_2).
    ``difficulty``: easy / moderate / hard. A class without any valid ground truth gives NaN (warned).
    ``min_height_scale`` multiplies the difficulty's minimum box height (40 / 25 px of a 375-px frame), so that
    images rendered or stored at another resolution keep the same objects: ``image_height / KITTI_IMAGE_HEIGHT``
    (0.512 for 192-px frames). 1 is the devkit.
    """
    level_name = str(difficulty).lower()
    if level_name not in KITTI_DIFFICULTY:
        raise ValueError(f"difficulty must be one of {list(KITTI_DIFFICULTY)}, got {difficulty!r}")
    if not (math.isfinite(min_height_scale) and min_height_scale > 0):
        raise ValueError(f"min_height_scale must be a positive number, got {min_height_scale!r}")
    min_h, max_occ, max_trunc = KITTI_DIFFICULTY[level_name]
    level = (min_h * min_height_scale, max_occ, max_trunc)
    if isinstance(ground_truths, Mapping):
        if not isinstance(detections, Mapping) or set(detections) != set(ground_truths):
            missing = set(ground_truths) ^ set(detections if isinstance(detections, Mapping) else [])
            raise ValueError(
                f"detections and ground truths must cover the same images; differing: "
                f"{sorted(map(str, missing))[:10]}"
            )
        names = list(ground_truths)
        pairs = [(ground_truths[k], detections[k]) for k in names]
    else:
        if len(detections) != len(ground_truths):
            raise ValueError(
                f"got detections for {len(detections)} images but ground truth for {len(ground_truths)}"
            )
        names = list(range(len(ground_truths)))
        pairs = list(zip(ground_truths, detections, strict=True))
    images = [_Image(g, d, name) for (g, d), name in zip(pairs, names, strict=True)]
    overlaps = {**KITTI_MIN_OVERLAP, **{k.lower(): v for k, v in (min_overlap or {}).items()}}

    if isinstance(classes, str):
        classes = (classes,)
    result: dict[str, float] = {}
    for cls_name in classes:
        cls = cls_name.lower()
        if cls not in overlaps:
            raise ValueError(
                f"no IoU threshold for class {cls_name!r}; pass min_overlap={{{cls_name!r}: ...}}"
            )
        thr = overlaps[cls]
        cleaned = [_clean(img, cls, level) for img in images]
        n_gt = sum(c[2] for c in cleaned)
        if n_gt == 0:
            warnings.warn(
                f"KITTI AP: no valid {cls_name} ground truth at {level_name}: AP is NaN", stacklevel=2
            )
            result[cls_name] = float("nan")
            continue
        v: list[float] = []
        for img, (ig, idet, _) in zip(images, cleaned, strict=True):
            v += _statistics(img, ig, idet, thr, compute_fp=False)[3]
        thresholds = _recall_thresholds(v, n_gt)
        precision = np.zeros(_N_SAMPLE_PTS)
        for t, score_thr in enumerate(thresholds):
            tp = fp = 0
            for img, (ig, idet, _) in zip(images, cleaned, strict=True):
                s_tp, s_fp, _, _ = _statistics(img, ig, idet, thr, compute_fp=True, thresh=score_thr)
                tp, fp = tp + s_tp, fp + s_fp
            precision[t] = tp / (tp + fp) if tp + fp > 0 else 0.0
        # interpolate: precision at recall r = max precision at any recall >= r
        precision = np.maximum.accumulate(precision[::-1])[::-1]
        result[cls_name] = float(precision[1:].sum() / (_N_SAMPLE_PTS - 1))
        if not math.isfinite(result[cls_name]):  # pragma: no cover - defensive
            raise RuntimeError(f"KITTI AP for {cls_name} is not finite")
    return result


# ----------------------------------------------------------------------------------------------------------
# Detection diagnostics
# ----------------------------------------------------------------------------------------------------------

#: box-height bins (px) of :func:`recall_by_height`: KITTI's 25 / 40 px difficulty limits among them
HEIGHT_BINS = (0.0, 15.0, 25.0, 40.0, 80.0, math.inf)


def recall_by_height(
    detections: Sequence[Mapping[str, Any]],
    ground_truth: Sequence[Mapping[str, Any]],
    num_classes: int,
    iou_threshold: float | Sequence[float] = 0.5,
    min_score: float = 0.05,
    bins: Sequence[float] = HEIGHT_BINS,
) -> list[list[dict]]:
    """Share of ground-truth boxes found, per class and box-height bin: where a detector's AP goes missing.

    ``detections`` / ``ground_truth``: one mapping per image with ``boxes`` (N, 4) xyxy and ``labels`` (N,)
    (detections also ``scores``). A ground-truth box counts as found when some detection of its class with
    score >= ``min_score`` overlaps it by IoU >= ``iou_threshold`` (one value, or one per class); detections
    are not used up, so this is recall as an upper bound, not the matching of AP. Returns, per class, one
    ``{"low", "high", "n", "found", "recall"}`` per bin (``recall`` NaN for an empty bin). A diagnostic that
    no library gives per size bin (COCO's small / medium / large areas do not fit KITTI-sized objects).
    """
    if len(detections) != len(ground_truth):
        raise ValueError(
            f"recall_by_height: {len(detections)} detection sets but {len(ground_truth)} ground-truth sets"
        )
    thresholds = [float(iou_threshold)] * num_classes if np.isscalar(iou_threshold) else list(iou_threshold)
    if len(thresholds) != num_classes:
        raise ValueError(f"recall_by_height: need {num_classes} IoU thresholds, got {len(thresholds)}")
    edges = np.asarray(bins, dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"recall_by_height: bins must be increasing edges, got {list(bins)}")
    n = np.zeros((num_classes, len(edges) - 1), np.int64)
    found = np.zeros_like(n)
    for k, (det, gt) in enumerate(zip(detections, ground_truth)):
        g_boxes = torch.as_tensor(gt["boxes"], dtype=torch.float64).reshape(-1, 4)
        g_labels = torch.as_tensor(gt["labels"]).reshape(-1).long()
        d_boxes = torch.as_tensor(det["boxes"], dtype=torch.float64).reshape(-1, 4)
        d_labels = torch.as_tensor(det["labels"]).reshape(-1).long()
        d_scores = torch.as_tensor(det["scores"], dtype=torch.float64).reshape(-1)
        if bool(((g_labels < 0) | (g_labels >= num_classes)).any()):
            raise ValueError(
                f"recall_by_height: image {k} has ground-truth labels outside 0..{num_classes - 1}"
            )
        keep = d_scores >= min_score
        d_boxes, d_labels = d_boxes[keep], d_labels[keep]
        ious = box_iou(g_boxes, d_boxes) if len(g_boxes) and len(d_boxes) else torch.zeros(len(g_boxes), 0)
        heights = (g_boxes[:, 3] - g_boxes[:, 1]).numpy()
        which = np.searchsorted(edges, heights, side="right") - 1
        for j in range(len(g_boxes)):
            b = int(which[j])
            if not 0 <= b < n.shape[1]:
                continue  # outside the bins
            c = int(g_labels[j])
            n[c, b] += 1
            same = d_labels == c
            if bool(same.any()) and float(ious[j][same].max()) >= thresholds[c]:
                found[c, b] += 1
    return [
        [
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "n": int(n[c, b]),
                "found": int(found[c, b]),
                "recall": float(found[c, b] / n[c, b]) if n[c, b] else float("nan"),
            }
            for b in range(n.shape[1])
        ]
        for c in range(num_classes)
    ]
