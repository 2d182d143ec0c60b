"""Road-anomaly metrics: pixel level (SegmentMeIfYouCan, Fishyscapes) and component level.

Pixel level (handbook section 5): every non-void pixel of the whole data set goes into one curve, never an
average of per-image values. AP is sklearn's step sum ``sum_k (R_k - R_{k-1}) P_k`` over descending thresholds,
AUROC the trapezoid ROC area and FPR95 the false positive rate at the first threshold whose TPR reaches 0.95.
``PixelAnomalyAccumulator`` streams: it keeps one (positive, negative) count per distinct score, never the
pixels, and switches to a fixed histogram when the number of distinct scores passes a cap.

Component level (SegmentMeIfYouCan, Chan et al. 2021): 8-connected components, sIoU per ground-truth
component, PPV per predicted component, F1 averaged over tau = 0.25 ... 0.75.

Why by hand: sklearn's curves need every pixel in memory at once (and sklearn is a dev-only dependency); no
maintained library provides SMIYC component metrics.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from shared.device import to_numpy

__all__ = [
    "ComponentMetricsAccumulator",
    "PixelAnomalyAccumulator",
    "SpilledMaps",
    "best_f1_threshold",
    "component_metrics",
    "component_stats",
    "pixel_anomaly_metrics",
]

ArrayLike = np.ndarray | torch.Tensor

# ----------------------------------------------------------------------------------------------------------
# Input helpers
# ----------------------------------------------------------------------------------------------------------


def _where(name: str | int | None) -> str:
    if name is None:
        return ""
    return f" of image {name!r}" if isinstance(name, str) else f" of image index {name}"


def _check_pair(
    scores: Any, labels: Any, ignore_index: int, name: str | int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Validate one (scores, labels) pair; return scores as float64 and labels, same shape."""
    s = to_numpy(scores)  # bf16 / fp16 tensors become float32
    y = to_numpy(labels)
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


def _merge_sorted(
    table: tuple[np.ndarray, np.ndarray, np.ndarray], values: np.ndarray, pos: np.ndarray, neg: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``table`` (sorted distinct values, positive and negative counts) with the counts of sorted distinct
    ``values`` added: in place where a value is known, inserted in order where not (no sort of the table)."""
    known_values, known_pos, known_neg = table
    at = np.searchsorted(known_values, values)
    known = at < known_values.size
    known[known] = known_values[at[known]] == values[known]
    known_pos[at[known]] += pos[known]
    known_neg[at[known]] += neg[known]
    if known.all():
        return known_values, known_pos, known_neg
    new, where = ~known, at[~known]
    return (
        np.insert(known_values, where, values[new]),
        np.insert(known_pos, where, pos[new]),
        np.insert(known_neg, where, neg[new]),
    )


def _tally(values: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted distinct ``values`` with the summed counts of their repeats."""
    uniq, inv = np.unique(values, return_inverse=True)
    summed = (np.bincount(inv, weights=c, minlength=uniq.size).astype(np.int64) for c in (pos, neg))
    return uniq, *summed


def _empty_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.empty(0, np.float64), np.empty(0, np.int64), np.empty(0, np.int64)


class PixelAnomalyAccumulator:
    """Streaming counts for pooled pixel AP / AUROC / FPR95 over a whole data set.

    Exact mode: one (positive, negative) count per distinct score value; results equal sklearn's on the
    concatenated pixels (ties included), while memory grows with the number of *distinct* scores, not pixels.
    Pixels are gathered and counted by one sort per :attr:`FLUSH_PIXELS`, not per image.

    Binned mode (approximation), once more than ``max_distinct`` distinct values are seen: ``max_distinct``
    equal-width bins over the bulk of the scores, ``[lo, hi]`` between the :attr:`TAIL_SHARE` and
    ``1 - TAIL_SHARE`` quantiles of the pixels seen, with the scores outside it (the tails: a few pixels)
    counted exactly. So one outlier (a single 1e6 among scores in [0, 1]) no longer stretches the bins over
    its range (equal-width bins over the whole observed range had lost AP 0.19 -> 0.13 to it), and bins over
    [0, 1] are 1e-6 wide near 1 as near 0, where confident anomaly scores sit. Scores inside one bin count as
    tied (with 2**20 bins AP / AUROC move by far less than 1e-3). When the tails grow past ``max_distinct //
    8`` distinct values (later images scoring in another range), the bins are re-laid over the quantiles of all
    counts so far, old bins moved by their centres (at most one bin width of error). Counting is a
    ``bincount``, no sort. A bin's threshold is its left edge. ``compute()["binned"]`` and ``["bin_width"]``
    say which mode produced the numbers. (Written by hand: scikit-learn and torchmetrics either keep every
    pixel or bin on a fixed [0, 1] grid.)
    """

    #: pixels gathered before they are counted: one sort (exact) or one ``bincount`` (binned) per 2**20 pixels
    FLUSH_PIXELS = 2**20
    #: share of the pixels left out of the bins at each end, counted exactly instead
    TAIL_SHARE = 1e-4

    def __init__(self, ignore_index: int = 255, max_distinct: int = 2**20) -> None:
        if max_distinct < 2:
            raise ValueError(f"max_distinct must be >= 2, got {max_distinct}")
        self.ignore_index = ignore_index
        self.max_distinct = int(max_distinct)
        self.reset()

    def reset(self) -> None:
        self._exact = _empty_table()  # exact counts: of every score (exact mode), of the tails (binned mode)
        self._bins: tuple[np.ndarray, np.ndarray] | None = None  # binned mode: positive, negative per bin
        self._tails_laid = 0  # the tails' distinct values when the bins were last laid
        self.lo = self.hi = 0.0  # binned mode: the range of the bins
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []  # (scores, is_positive) not yet counted
        self._pending_pixels = 0
        self.num_void = 0
        self.num_images = 0

    @property
    def binned(self) -> bool:
        self._flush()
        return self._bins is not None

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
        self._pending.append((s, y == 1))
        self._pending_pixels += s.size
        if self._pending_pixels >= self.FLUSH_PIXELS:
            self._flush()

    def _flush(self) -> None:
        """Count the gathered pixels."""
        if not self._pending:
            return
        scores = np.concatenate([s for s, _ in self._pending])
        is_pos = np.concatenate([p for _, p in self._pending])
        self._pending, self._pending_pixels = [], 0
        if self._bins is not None:
            self._add_binned(scores, is_pos.astype(np.int64), (~is_pos).astype(np.int64))
            return
        values, inv = np.unique(scores, return_inverse=True)
        pos = np.bincount(inv, weights=is_pos, minlength=values.size).astype(np.int64)
        self._add_exact(values, pos, np.bincount(inv, minlength=values.size) - pos)

    def _add_exact(self, values: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> None:
        """Exact mode: add sorted distinct ``values``' counts; past ``max_distinct`` values, switch to bins."""
        self._exact = _merge_sorted(self._exact, values, pos, neg)
        if self._exact[0].size > self.max_distinct:
            values, pos, neg = self._exact
            self._exact = _empty_table()
            self._lay_bins(values, pos, neg)

    def _lay_bins(self, values: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> None:
        """Lay empty bins over the bulk of the counted ``values`` (sorted; their quantiles), then add them."""
        cumulative = np.cumsum(pos + neg)
        total, cut = int(cumulative[-1]), self.TAIL_SHARE * int(cumulative[-1])
        lo = float(values[np.searchsorted(cumulative, cut, side="right")]) if total else float(values[0])
        hi = float(values[np.searchsorted(cumulative, total - cut, side="left")]) if total else float(values[-1])
        if not hi > lo:  # a bulk of one value: the whole range
            lo, hi = float(values[0]), float(values[-1])
        self.lo, self.hi = lo, hi
        self._bins = (np.zeros(self.max_distinct, np.int64), np.zeros(self.max_distinct, np.int64))
        self._add_binned(values, pos, neg, relay=False)
        self._tails_laid = self._exact[0].size

    def _add_binned(self, values: np.ndarray, pos: np.ndarray, neg: np.ndarray, relay: bool = True) -> None:
        """Add counts at ``values``: into the bins where they lie within ``[lo, hi]``, to the exact tails where
        not; tails past ``max_distinct // 8`` distinct values (and twice what the last laying left) re-lay the
        bins over all counts."""
        inside = (values >= self.lo) & (values <= self.hi)
        width = (self.hi - self.lo) / self.max_distinct
        index = np.minimum(((values[inside] - self.lo) / width).astype(np.int64), self.max_distinct - 1)
        for counts, add in zip(self._bins, (pos, neg), strict=True):
            counts += np.bincount(index, weights=add[inside], minlength=self.max_distinct).astype(np.int64)
        if not inside.all():
            self._exact = _merge_sorted(self._exact, *_tally(values[~inside], pos[~inside], neg[~inside]))
        if relay and self._exact[0].size > max(self.max_distinct // 8, 2 * self._tails_laid, 1):
            values, pos, neg = self._table()  # the bins by their centres, with the tails
            self._exact, self._bins = _empty_table(), None
            self._lay_bins(values, pos, neg)

    def _table(self, centres: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sorted values with their counts: the exact ones, and in binned mode each occupied bin's (at its
        centre, or its left edge: the threshold that counts the whole bin) between the tails."""
        if self._bins is None:
            return self._exact
        occupied = np.flatnonzero(self._bins[0] + self._bins[1])
        width = (self.hi - self.lo) / self.max_distinct
        edges = self.lo + (occupied + (0.5 if centres else 0.0)) * width
        tails, tail_pos, tail_neg = self._exact
        below = np.searchsorted(tails, self.lo)
        return (
            np.concatenate([tails[:below], edges, tails[below:]]),
            np.concatenate([tail_pos[:below], self._bins[0][occupied], tail_pos[below:]]),
            np.concatenate([tail_neg[:below], self._bins[1][occupied], tail_neg[below:]]),
        )

    def merge(self, other: PixelAnomalyAccumulator) -> PixelAnomalyAccumulator:
        """Add another accumulator's counts (e.g. another DDP rank's); exact + exact stays exact, a binned
        side is binned (the other's bins enter by their centres). Returns ``self``."""
        self._flush()
        other._flush()
        self.num_void += other.num_void
        self.num_images += other.num_images
        values, pos, neg = other._table()
        if values.size == 0:
            return self
        if self._bins is None and other._bins is None:
            self._add_exact(values, pos, neg)
        elif self._bins is None:  # this side's exact counts and the other's bins: bins over both
            mine = self._exact
            self._exact = _empty_table()
            self._lay_bins(*_tally(np.concatenate([mine[0], values]), np.concatenate([mine[1], pos]),
                                   np.concatenate([mine[2], neg])))  # fmt: skip
        else:
            self._add_binned(values, pos, neg)
        return self

    # -- reading ------------------------------------------------------------------------------------------
    def curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(thresholds descending, cumulative TP, cumulative FP) for predictions ``score >= threshold``.

        In binned mode a bin's threshold is its left edge.
        """
        self._flush()
        values, pos, neg = self._table(centres=False)
        keep = (pos + neg) > 0
        thresholds, pos, neg = values[keep][::-1], pos[keep][::-1], neg[keep][::-1]
        return thresholds, np.cumsum(pos), np.cumsum(neg)

    @property
    def num_positive(self) -> int:
        self._flush()
        return int(self._exact[1].sum() + (self._bins[0].sum() if self._bins is not None else 0))

    @property
    def num_negative(self) -> int:
        self._flush()
        return int(self._exact[2].sum() + (self._bins[1].sum() if self._bins is not None else 0))

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
            # scores within one bin of this width tie (binned mode; the tails outside [lo, hi] stay exact); 0: exact
            "bin_width": (self.hi - self.lo) / self.max_distinct if self.binned else 0.0,
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

    Prediction: ``score >= threshold`` inside the region of interest (non-void): the pixels the best-F1
    threshold was chosen for. The benchmark's code (``default_instancer``) takes ``score > threshold`` with that
    same threshold, itself a score value, so it drops every pixel scored exactly at it: all of them for a
    saturated score (a perfect scorer's 0 / 1 map predicted nothing and scored mean F1 0); kept here, the one
    deliberate difference. Components are
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

    Counts at each tau follow the SMIYC evaluation code (``road_anomaly_benchmark/metrics/
    instance_segmentation.py``, whose numbers the leaderboard shows; the paper words the ties the other way): a
    ground-truth component is a TP when sIoU >= tau, else a FN; a predicted component is a FP when PPV < tau. F1(tau) = 2 TP / (2 TP + FN + FP) on the pooled counts,
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

    def merge(self, other: ComponentMetricsAccumulator) -> ComponentMetricsAccumulator:
        """Add another accumulator's components after this one's (e.g. another DDP rank's); returns ``self``."""
        self.siou += other.siou
        self.ppv += other.ppv
        self.num_images += other.num_images
        return self

    def compute(self) -> dict[str, Any]:
        siou = np.concatenate(self.siou) if self.siou else np.empty(0)
        ppv = np.concatenate(self.ppv) if self.ppv else np.empty(0)
        tp = (siou[None, :] >= self.taus[:, None]).sum(axis=1)
        fn = siou.size - tp
        fp = (ppv[None, :] < self.taus[:, None]).sum(axis=1)
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
    gather: Callable[[list], list] | None = None,
) -> dict[str, Any]:
    """SMIYC component metrics (``sIoU_gt``, ``PPV``, ``mean_F1`` and the counts) over a data set.

    Inputs as in ``pixel_anomaly_metrics`` (one (H, W) pair, sequences, or an iterable of pairs with
    ``label_maps=None``). ``threshold`` is the pixel threshold; SMIYC uses ``best_f1_threshold``. ``gather``
    (:func:`shared.task.gather_lists`): the maps are this DDP rank's share, and every rank's components are
    pooled in rank order, so that no rank holds another's maps.
    """
    if threshold is None:
        raise ValueError("component_metrics needs a pixel threshold (see best_f1_threshold)")
    acc = ComponentMetricsAccumulator(
        threshold, ignore_index=ignore_index, min_pred_size=min_pred_size, min_gt_size=min_gt_size
    )
    for s, y, name in _iter_pairs(score_maps, label_maps):
        acc.update(s, y, name=name)
    if gather is not None:
        first, *others = gather([acc])
        acc = first
        for other in others:
            acc.merge(other)
    return acc.compute()


class SpilledMaps:
    """``(score map, label map, name)`` of each test image, kept in an anonymous temporary file (in ``TMPDIR``)
    instead of memory, and read back one image at a time, as often as iterated.

    The component metrics threshold every map at the best-F1 pixel threshold, known only once every pixel of
    the set is counted, so the maps wait for the epoch's end: held in memory they grew the process by 0.6 MB
    an image of the synthetic 640x192 set (10 MB at SegmentMeIfYouCan's 2048x1024). On disk they take 5 bytes a
    pixel (float32 score, uint8 label); the file is unlinked from the start, so it goes with :meth:`close`, the
    object or the process, even one killed. Written here: ``np.save`` / ``np.load`` of consecutive arrays on one
    file is all it needs.
    """

    def __init__(self, directory: str | os.PathLike | None = None) -> None:
        self.directory = str(directory) if directory is not None else tempfile.gettempdir()
        # held open across the test epoch, closed by close() (or when the object goes)
        self._file = tempfile.TemporaryFile(prefix="anomaly_test_maps_", dir=directory)  # noqa: SIM115
        self.names: list[str] = []

    def append(self, score: np.ndarray, label: np.ndarray, name: str) -> None:
        try:
            np.save(self._file, np.asarray(score, dtype=np.float32))
            np.save(self._file, np.asarray(label, dtype=np.uint8))
        except OSError as err:
            raise OSError(
                f"component metrics: cannot keep the score map of image {name!r} ({np.shape(score)}) in a temporary "
                f"file in {self.directory} ({err}): free space there, point TMPDIR at a larger disk, or "
                "--model.component_metrics false"
            ) from err
        self.names.append(name)

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray, str]]:
        self._file.seek(0)
        try:
            for name in list(self.names):
                yield np.load(self._file), np.load(self._file), name
        finally:
            self._file.seek(0, os.SEEK_END)  # appends go after the maps, whatever was read

    def close(self) -> None:
        self._file.close()
        self.names = []
