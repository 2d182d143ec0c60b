"""Accident-anticipation metrics on per-clip scores (issue #18, spec section 3, handbook section 7).

Every function takes a list of :class:`ClipScores`: one record per clip with the per-frame probability of
contact within the alarm horizon, the contact frame ``toa`` (-1 for negatives) and the frame rate.

Conventions (all times in seconds of physical lead time):

- **Clip found at threshold th**: a crash clip is found if some frame ``t < toa`` has ``score >= th``; a
  negative clip (near miss or normal) is a false positive if any of its frames reaches ``th``.
- **video AP**: the step sum ``AP = sum_k (R_k - R_{k-1}) P_k`` over the sweep of thresholds in descending
  order, on the clip scores ``max(scores[:toa])`` / ``max(scores)``. A crash clip that can never be found
  (contact at frame 0, or no frame early enough for :func:`ap_before`) has no score but stays in the recall
  denominator. torchmetrics' ``binary_average_precision`` (sklearn's ``average_precision_score``: the same step
  sum, ties grouped) computes it on the clips that can be found; scaled by their share of the crash clips, it
  is the AP over all of them: clips never found only scale every recall step (``R_k = TP_k / n_pos``), the
  precisions do not see them (they are above no threshold). torchmetrics divides in float32: within 1e-7 of
  sklearn's float64. 0 when no crash clip can be found. NaN without negative clips (DoTA alone): precision is
  then 1 at every threshold, so the step sum is the share of crash clips that can be found, whatever the
  scores: no ranking is measured.
- **frame AP**: torchmetrics' ``binary_average_precision`` (the same step sum) over all frames of all clips
  pooled, label 1 on crash-clip frames with ``t >= toa - horizon * fps`` (contact within the horizon, or
  ongoing, as CCD's per-frame labels mark the crash frames), 0 elsewhere. **frame AP before contact**: the
  same on the frames a warning can still serve (crash clips cut at contact); lower, as the crash frames
  themselves are easy positives.
- **TTA at th** = mean over the crash clips found at th of ``(toa - first alarm frame) / fps``: the physical
  lead time, never more than ``toa / fps``.
- **mTTA** = mean over the sweep's distinct recall levels ``r > 0`` of the TTA at that level, where the TTA
  of a level is the one at the lowest sweep threshold that still has that recall (lowering the threshold
  without finding a new clip only moves first alarms earlier, so this is the level's largest TTA: the
  published code takes the same maximum per level). The sweep runs over every distinct frame score (plus 0
  and 1), so the result is exact. As in the published code, the full-recall level is reached at the lowest
  threshold, where every frame alarms: it contributes ``mean(toa / fps)``.
- **TTA@R80**: the TTA of the lowest recall level >= 0.8 (NaN if recall 0.8 is never reached), read at
  ``tta_r80_threshold``. It says nothing of the model where that threshold alarms on the negative clips at
  least as often as it finds crashes (no better than an alarm on every clip), or, without negatives, on every
  frame before contact (:func:`uninformative_tta`): a small or untrained test split reaches 80 % recall only
  at the lowest threshold, and its TTA@R80 is then the clips' whole lead.
- **legacy mTTA**: the widely copied formula ``mean(1 - first_alarm / toa) * (T / fps)`` with the same levels;
  it scales the relative lead by the clip length T instead of the time before contact, so it can exceed the
  physical maximum (DAD: contact at frame 90 of 100 at 20 fps: 4.5 s possible, up to 5.0 s reported).
  Reported only under the name ``legacy_mtta``.

How this differs from UString's ``src/eval_tools.py::evaluation`` (copied by DSTA and successors):
(1) it sweeps a fixed grid ``arange(max(min score, 0), 1, 0.001)`` instead of every distinct score, so ties
closer than 0.001 are merged; (2) its AP is a trapezoid between recall levels plus a rectangle from recall 0
(ours: sklearn's step sum, no interpolation); (3) its TTA is the legacy formula above (relative lead times
the padded clip length); (4) TTA@R80 is taken at the recall level *nearest* 0.8 (ours: the first level at or
above it); (5) its top recall level takes the TTA of an arbitrary threshold of that level (unstable sort), not
the maximum; (6) it drops its lowest recall level, assuming it is the zero padding of its arrays, and its grid
stops below 1.0. Same on both sides: found = any frame before toa at or above th, the per-level maximum.

ECE uses torchmetrics' ``binary_calibration_error`` (equal-width bins on the positive-class probability,
L1); Brier is the mean squared error of the same probabilities.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchmetrics.functional.classification import binary_average_precision, binary_calibration_error

__all__ = [
    "AP_BEFORE_SECONDS",
    "CLIP_KINDS",
    "ClipScores",
    "TTACurve",
    "ap_before",
    "brier",
    "ece",
    "false_alarm_rate",
    "fit_temperature",
    "frame_ap",
    "frame_labels",
    "horizon_targets",
    "lead_time_at_false_alarm_rate",
    "legacy_mtta",
    "mtta",
    "object_hit_rate",
    "operating_threshold",
    "summarize",
    "threshold_at_recall",
    "tta_at_recall",
    "tta_curve",
    "ttc_error",
    "uninformative_tta",
    "video_ap",
]

CLIP_KINDS = ("crash", "near_miss", "normal")
NEGATIVE_KINDS = ("near_miss", "normal")
AP_BEFORE_SECONDS = (0.5, 1.0, 1.5)
_EPS = 1e-9  # slack for frame arithmetic like toa - horizon * fps in floating point


@dataclass
class ClipScores:
    """One clip's per-frame outputs and ground truth (numpy, valid frames only: padding already cut).

    ``scores`` (T,) probability of contact within the alarm horizon; ``toa`` contact frame (-1: negative);
    ``object_scores`` (T, N) per-object risk (NaN where the slot holds no object); ``involved`` (N,) bool;
    ``ttc_pred`` / ``ttc_true`` (T,) seconds (NaN where undefined, inf for "never").
    """

    scores: Any
    toa: int
    fps: float
    kind: str = "crash"
    object_scores: Any = None
    involved: Any = None
    ttc_pred: Any = None
    ttc_true: Any = None
    clip_id: str = ""

    def __post_init__(self) -> None:
        name = f"clip {self.clip_id!r}" if self.clip_id else "clip"
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        n = len(self.scores)
        if n == 0:
            raise ValueError(f"{name}: scores is empty; expected one score per frame")
        if not np.all(np.isfinite(self.scores)) or self.scores.min() < 0 or self.scores.max() > 1:
            raise ValueError(
                f"{name}: scores must be finite probabilities in [0, 1], got range "
                f"[{np.nanmin(self.scores):.4g}, {np.nanmax(self.scores):.4g}]"
            )
        if self.kind not in CLIP_KINDS:
            raise ValueError(f"{name}: kind must be one of {CLIP_KINDS}, got {self.kind!r}")
        self.toa = int(self.toa)
        if self.kind == "crash" and not 0 <= self.toa < n:
            raise ValueError(f"{name}: a crash clip needs 0 <= toa < {n} frames, got toa={self.toa}")
        if self.kind != "crash" and self.toa != -1:
            raise ValueError(f"{name}: a {self.kind} clip has no contact: toa must be -1, got {self.toa}")
        self.fps = float(self.fps)
        if not math.isfinite(self.fps) or self.fps <= 0:
            raise ValueError(f"{name}: fps must be a positive number, got {self.fps}")
        if self.object_scores is not None:
            self.object_scores = np.asarray(self.object_scores, dtype=np.float64)
            if self.object_scores.ndim != 2 or self.object_scores.shape[0] != n:
                raise ValueError(f"{name}: object_scores must be (T={n}, N), got {self.object_scores.shape}")
        if self.involved is not None:
            self.involved = np.asarray(self.involved, dtype=bool).reshape(-1)
            if self.object_scores is not None and len(self.involved) != self.object_scores.shape[1]:
                raise ValueError(
                    f"{name}: involved has {len(self.involved)} slots, object_scores "
                    f"{self.object_scores.shape[1]}"
                )
        for key in ("ttc_pred", "ttc_true"):
            value = getattr(self, key)
            if value is not None:
                value = np.asarray(value, dtype=np.float64).reshape(-1)
                if len(value) != n:
                    raise ValueError(f"{name}: {key} has {len(value)} frames, scores {n}")
                setattr(self, key, value)

    @property
    def is_crash(self) -> bool:
        return self.kind == "crash"


def _check(records: Sequence[ClipScores]) -> list[ClipScores]:
    records = list(records)
    if not records:
        raise ValueError("records is empty: the metrics need at least one clip")
    for i, r in enumerate(records):
        if not isinstance(r, ClipScores):
            raise TypeError(f"records[{i}] is a {type(r).__name__}, expected ClipScores")
    return records


# ------------------------------------------------------------------------------------------------------------
# Threshold sweep over clips
# ------------------------------------------------------------------------------------------------------------


def _clip_score(r: ClipScores, lead_seconds: float = 0.0) -> float:
    """Highest score on the frames that may count: a crash clip's frames t < toa with toa - t >= lead * fps
    (-inf when there is none: the clip can never be found); every frame of a negative clip."""
    if not r.is_crash:
        return float(r.scores.max())
    last = min(r.toa - 1, math.floor(r.toa - lead_seconds * r.fps + _EPS))
    return float(r.scores[: last + 1].max()) if last >= 0 else -math.inf


def _step_ap(pos_scores: np.ndarray, neg_scores: np.ndarray) -> float:
    """``sum_k (R_k - R_{k-1}) P_k`` over thresholds at the distinct finite scores, descending; positives at
    -inf are never found but count in the recall denominator (torchmetrics' AP on the others, times their
    share). NaN without positives or without negatives (the precision is 1 at every threshold: nothing is
    ranked)."""
    n_pos = len(pos_scores)
    if n_pos == 0 or len(neg_scores) == 0:
        return math.nan
    found = pos_scores[np.isfinite(pos_scores)]
    if len(found) == 0:  # no threshold finds a crash clip: precision 0 wherever recall could rise
        return 0.0
    scores = torch.from_numpy(np.concatenate([found, neg_scores]))
    labels = torch.zeros(len(scores), dtype=torch.long)
    labels[: len(found)] = 1
    return len(found) / n_pos * float(binary_average_precision(scores, labels))


def ap_before(records: Sequence[ClipScores], seconds: float) -> float:
    """Video AP where a crash clip counts as found only if an alarm fires at a frame t with
    ``toa - t >= seconds * fps`` (and t < toa). ``seconds = 0`` is :func:`video_ap`. NaN without crash clips or
    without negative clips."""
    records = _check(records)
    if seconds < 0:
        raise ValueError(f"seconds must be >= 0, got {seconds}")
    pos = np.array([_clip_score(r, seconds) for r in records if r.is_crash], dtype=np.float64)
    neg = np.array([_clip_score(r) for r in records if not r.is_crash], dtype=np.float64)
    return _step_ap(pos, neg)


def video_ap(records: Sequence[ClipScores]) -> float:
    """Clip-level AP: a crash clip is found if any frame before contact reaches the threshold."""
    return ap_before(records, 0.0)


@dataclass
class TTACurve:
    """Per distinct recall level of the sweep (ascending recall): the lowest threshold with that recall and
    the TTA there (physical, seconds) and the legacy formula's value."""

    recall: np.ndarray
    threshold: np.ndarray
    tta: np.ndarray
    legacy_tta: np.ndarray


def tta_curve(records: Sequence[ClipScores]) -> TTACurve:
    """Recall levels of the sweep and their TTA (see the module docstring for the exact definition)."""
    records = _check(records)
    crashes = [r for r in records if r.is_crash]
    empty = np.zeros(0)
    if not crashes:
        return TTACurve(empty, empty, empty, empty)
    clip_scores = np.array([_clip_score(r) for r in crashes])
    finite = np.isfinite(clip_scores)
    levels = np.unique(clip_scores[finite])[::-1]  # distinct clip scores, descending: one recall level each
    if len(levels) == 0:
        return TTACurve(empty, empty, empty, empty)
    # A level holds for th in (next lower clip score, level]; its largest TTA is reached just above that
    # bound: every frame with score > bound alarms. The lowest level's bound is -inf (threshold 0 or the
    # lowest score): every frame alarms.
    bounds = np.concatenate([levels[1:], [-math.inf]])
    candidates = np.unique(
        np.concatenate(
            [[0.0, 1.0]]
            + [r.scores[: r.toa] for r in crashes]
            + [[_clip_score(r)] for r in records if not r.is_crash]
        )
    )
    thresholds = candidates[np.searchsorted(candidates, bounds, side="right")]
    thresholds[~np.isfinite(bounds)] = candidates[0]
    found = clip_scores[:, None] >= levels[None, :]  # (clips, levels)
    first = np.stack(
        [  # first frame with score > bound, per clip and level (prefix max is non-decreasing)
            np.searchsorted(np.maximum.accumulate(r.scores[: r.toa]), bounds, side="right")
            if r.toa > 0
            else np.zeros(len(bounds), dtype=np.int64)
            for r in crashes
        ]
    ).astype(np.float64)
    toa = np.array([r.toa for r in crashes], dtype=np.float64)[:, None]
    fps = np.array([r.fps for r in crashes])[:, None]
    length = np.array([len(r.scores) for r in crashes], dtype=np.float64)[:, None]
    n_found = found.sum(axis=0)
    recall = n_found / len(crashes)
    with np.errstate(divide="ignore", invalid="ignore"):
        tta = np.where(found, (toa - first) / fps, 0.0).sum(axis=0) / n_found
        legacy = np.where(found, (1.0 - first / toa) * length / fps, 0.0).sum(axis=0) / n_found
    order = np.argsort(recall, kind="stable")
    return TTACurve(
        np.asarray(recall)[order], thresholds[order], np.asarray(tta)[order], np.asarray(legacy)[order]
    )


def mtta(records: Sequence[ClipScores]) -> float:
    """Mean physical TTA (s) over the sweep's recall levels; NaN if no crash clip is ever found."""
    curve = tta_curve(records)
    return float(curve.tta.mean()) if len(curve.tta) else math.nan


def legacy_mtta(records: Sequence[ClipScores]) -> float:
    """The widely copied ``mean(1 - first_alarm / toa) * (T / fps)`` over the same levels: NOT a physical
    lead time (it can exceed ``toa / fps``); reported for comparison with published numbers only."""
    curve = tta_curve(records)
    return float(curve.legacy_tta.mean()) if len(curve.legacy_tta) else math.nan


def _recall_level(curve: TTACurve, recall: float) -> int | None:
    """Index of the lowest recall level >= ``recall`` in ``curve`` (None if never reached)."""
    reached = np.flatnonzero(curve.recall >= recall - _EPS)
    return int(reached[0]) if len(reached) else None


def tta_at_recall(records: Sequence[ClipScores], recall: float = 0.8) -> float:
    """Physical TTA (s) at the lowest recall level >= ``recall``; NaN if that recall is never reached."""
    curve = tta_curve(records)
    level = _recall_level(curve, recall)
    return float(curve.tta[level]) if level is not None else math.nan


def threshold_at_recall(records: Sequence[ClipScores], recall: float = 0.8) -> float:
    """The alarm threshold :func:`tta_at_recall` reads its TTA at (a model sure of every crash near contact
    puts it close to 1, crossed only late); NaN if that recall is never reached."""
    curve = tta_curve(records)
    level = _recall_level(curve, recall)
    return float(curve.threshold[level]) if level is not None else math.nan


def uninformative_tta(records: Sequence[ClipScores], recall: float = 0.8) -> str | None:
    """Why :func:`tta_at_recall` says nothing of the model on these clips, in words; None where it does. At the
    threshold it is read at, (1) the negative clips alarm at least as often as crash clips are found (no better
    than chance: an alarm raised on every clip finds as many and warns as early), or (2), without negative
    clips, every frame before contact alarms (the threshold is at or below the lowest of those scores), so the
    TTA is each clip's whole lead, whatever the model."""
    curve = tta_curve(records)
    level = _recall_level(curve, recall)
    if level is None:
        return None
    threshold, found = float(curve.threshold[level]), float(curve.recall[level])
    negatives = [r for r in records if not r.is_crash]
    if negatives:
        rate = false_alarm_rate(negatives, threshold, NEGATIVE_KINDS)
        if rate >= found:
            return (
                f"at the threshold it is read at ({threshold:.4g}) {rate:.0%} of the {len(negatives)} negative "
                f"clips alarm, no fewer than the {found:.0%} of crash clips found: no better than an alarm on "
                "every clip"
            )
        return None
    lowest = min(float(r.scores[: r.toa].min()) for r in records if r.is_crash and r.toa > 0)
    if threshold <= lowest:
        return (
            f"its threshold ({threshold:.4g}) is at or below every score before contact: every frame alarms, so "
            "it is each clip's whole lead whatever the model (and no negative clip tells a warning from an alarm "
            "that never stops)"
        )
    return None


# ------------------------------------------------------------------------------------------------------------
# Operating point: false alarms and lead time at a threshold
# ------------------------------------------------------------------------------------------------------------


def false_alarm_rate(
    records: Sequence[ClipScores], threshold: float, kind: str | Sequence[str] = "near_miss"
) -> float:
    """Share of clips of ``kind`` (one kind or several) with any frame >= ``threshold``; NaN if none."""
    records = _check(records)
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    if "crash" in kinds:
        raise ValueError("false_alarm_rate counts negatives: kind must be near_miss and / or normal")
    maxima = [float(r.scores.max()) for r in records if r.kind in kinds]
    return float(np.mean(np.asarray(maxima) >= threshold)) if maxima else math.nan


def operating_threshold(
    records: Sequence[ClipScores], max_false_alarm: float = 0.1, kinds: Sequence[str] = NEGATIVE_KINDS
) -> float:
    """The lowest threshold whose false-alarm rate on the negative clips of ``kinds`` is <= ``max_false_alarm``:
    the next float above the peak score of the negative clip that would break the cap (the negatives above it
    may alarm), 0 where every negative may. Choose it on validation: every threshold between that peak and the
    next clip score gives the same validation figures, and the lowest of them keeps the most recall on new
    clips (the next score up, as this returned before, missed a test crash peaking in between)."""
    records = _check(records)
    if not 0 <= max_false_alarm <= 1:
        raise ValueError(f"max_false_alarm must be in [0, 1], got {max_false_alarm}")
    neg_max = np.sort([float(r.scores.max()) for r in records if r.kind in kinds])[::-1]
    if len(neg_max) == 0:
        raise ValueError(f"operating_threshold needs at least one clip of kind {tuple(kinds)}")
    allowed = math.floor((max_false_alarm + _EPS) * len(neg_max))  # the negatives that may alarm
    return 0.0 if allowed >= len(neg_max) else float(np.nextafter(neg_max[allowed], math.inf))


def _lead_at(records: list[ClipScores], threshold: float) -> tuple[float, float]:
    """(recall, mean physical TTA over found crash clips) at a fixed threshold."""
    crashes = [r for r in records if r.is_crash]
    leads = []
    for r in crashes:
        hits = np.flatnonzero(r.scores[: r.toa] >= threshold)
        if len(hits):
            leads.append((r.toa - hits[0]) / r.fps)
    recall = len(leads) / len(crashes) if crashes else math.nan
    return recall, (float(np.mean(leads)) if leads else math.nan)


def lead_time_at_false_alarm_rate(
    records: Sequence[ClipScores], max_false_alarm: float = 0.1, kinds: Sequence[str] = NEGATIVE_KINDS
) -> dict[str, float]:
    """Compare methods at the same false-alarm rate: the :func:`operating_threshold` for the cap, and there
    the recall, the mean lead time of the found crash clips (s) and the false-alarm rate reached."""
    records = _check(records)
    threshold = operating_threshold(records, max_false_alarm, kinds)
    recall, lead = _lead_at(records, threshold)
    return {
        "threshold": threshold,
        "recall": recall,
        "lead_time": lead,
        "false_alarm_rate": false_alarm_rate(records, threshold, kinds),
    }


# ------------------------------------------------------------------------------------------------------------
# Frame level: AP and calibration
# ------------------------------------------------------------------------------------------------------------


def horizon_targets(
    toa: torch.Tensor, fps: torch.Tensor, frames: int, horizons: torch.Tensor
) -> torch.Tensor:
    """(B, T, H) bool: contact happens within each horizon of frame t (ongoing contact counts); all false on
    negative clips (``toa`` < 0). The one frame-label rule: training targets, frame AP, ECE and Brier."""
    t = torch.arange(frames, device=toa.device, dtype=torch.float64)
    time_to = (toa[:, None].double() - t[None]) / fps[:, None].double()
    return (toa >= 0)[:, None, None] & (time_to[..., None] <= horizons.to(time_to)[None, None] + _EPS)


def frame_labels(record: ClipScores, horizon: float = 2.0) -> np.ndarray:
    """1 on crash-clip frames with contact within ``horizon`` s or ongoing (:func:`horizon_targets`)."""
    toa = torch.tensor([record.toa if record.is_crash else -1])
    labels = horizon_targets(
        toa, torch.tensor([float(record.fps)]), len(record.scores), torch.tensor([horizon])
    )
    return labels[0, :, 0].numpy().astype(np.int64)


def _pooled(
    records: Sequence[ClipScores], horizon: float, before_contact: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every frame's score and label, pooled; ``before_contact``: crash clips end at their contact frame."""
    records = _check(records)
    ends = [r.toa if before_contact and r.is_crash else len(r.scores) for r in records]
    scores = torch.from_numpy(np.concatenate([r.scores[:end] for r, end in zip(records, ends)]))
    labels = torch.from_numpy(np.concatenate([frame_labels(r, horizon)[:end] for r, end in zip(records, ends)]))
    return scores, labels


def frame_ap(records: Sequence[ClipScores], horizon: float = 2.0, before_contact: bool = False) -> float:
    """Frame-level AP (torchmetrics, sklearn's step sum) of all frames pooled. ``before_contact``: only the
    frames a warning can still serve (crash clips cut at contact, as UString scores clips), without the frames
    of the crash itself, which are easy positives (on 24 synthetic test clips 0.69 before contact, 0.85 with).
    NaN without positive frames, or without negative ones (every frame a crash's, e.g. DoTA's short clips:
    precision is then 1 at every threshold and AP 1.0 whatever the scores), the latter warned."""
    scores, labels = _pooled(records, horizon, before_contact)
    if labels.sum() == 0:
        return math.nan
    if bool(labels.all()):
        warnings.warn(
            "frame AP: every frame is a positive (contact within the horizon or ongoing; no negative clip and no "
            "early frame): it would be 1.0 whatever the scores, so it is NaN (not logged)",
            stacklevel=2,
        )
        return math.nan
    return float(binary_average_precision(scores, labels))


def ece(records: Sequence[ClipScores], horizon: float = 2.0, n_bins: int = 15) -> float:
    """Expected calibration error of the per-frame risk against the frame label (torchmetrics: equal-width
    bins ``[k/n, (k+1)/n)``, ``sum_b |mean label - mean risk| * share of frames``)."""
    scores, labels = _pooled(records, horizon)
    return float(binary_calibration_error(scores, labels, n_bins=n_bins, norm="l1"))


def brier(records: Sequence[ClipScores], horizon: float = 2.0) -> float:
    """Brier score: mean squared difference between the per-frame risk and the frame label."""
    scores, labels = _pooled(records, horizon)
    return float(torch.mean((scores - labels.to(scores.dtype)) ** 2))


# ------------------------------------------------------------------------------------------------------------
# Time to collision and the object at risk
# ------------------------------------------------------------------------------------------------------------


def ttc_error(records: Sequence[ClipScores], max_true: float = 2.0, cap: float = 5.0) -> float:
    """Mean absolute error (s) of the predicted TTC on frames whose true TTC is finite and < ``max_true``.

    Predictions are clipped to ``[0, cap]`` first, so "never" (inf) costs a bounded error instead of an
    infinite mean; NaN predictions (no estimate) count as ``cap``. NaN if no frame qualifies."""
    records = _check(records)
    errors = []
    for r in records:
        if r.ttc_true is None or r.ttc_pred is None:
            continue
        use = np.isfinite(r.ttc_true) & (r.ttc_true < max_true)
        pred = np.clip(np.nan_to_num(r.ttc_pred[use], nan=cap, posinf=cap), 0.0, cap)
        errors.append(np.abs(pred - r.ttc_true[use]))
    errors = np.concatenate(errors) if errors else np.zeros(0)
    return float(errors.mean()) if len(errors) else math.nan


def object_hit_rate(records: Sequence[ClipScores]) -> float:
    """Share of crash clips whose highest-risk object (max object score over frames before contact) is an
    involved one. Ties count as misses (an involved object must score strictly above every other object);
    NaN object scores (empty slots) are ignored; clips without object scores or without any involved object
    are left out. NaN if no clip qualifies."""
    records = _check(records)
    hits = []
    for r in records:
        if not r.is_crash or r.object_scores is None or r.involved is None or not r.involved.any():
            continue
        before = r.object_scores[: r.toa]
        peak = np.full(before.shape[1], -math.inf)
        if len(before):
            seen = np.isfinite(before).any(axis=0)
            peak[seen] = np.nanmax(before[:, seen], axis=0)
        others = peak[~r.involved]
        best_other = others.max() if len(others) else -math.inf
        best_involved = peak[r.involved].max()
        hits.append(bool(np.isfinite(best_involved) and best_involved > best_other))
    return float(np.mean(hits)) if hits else math.nan


# ------------------------------------------------------------------------------------------------------------
# Summary, batch glue, calibration fit
# ------------------------------------------------------------------------------------------------------------


def summarize(
    records: Sequence[ClipScores], horizon: float = 2.0, threshold: float = 0.5
) -> dict[str, float]:
    """Every metric in one flat dict. ``threshold`` is the operating threshold for the false-alarm and
    lead-time figures: pass :func:`operating_threshold` of the *validation* split (choosing it on the test
    clips would flatter the false-alarm rate)."""
    records = _check(records)
    recall, lead = _lead_at(records, threshold)
    out = {
        "video_ap": video_ap(records),
        "frame_ap": frame_ap(records, horizon),
        "frame_ap_before_contact": frame_ap(records, horizon, before_contact=True),
        "mtta": mtta(records),
        "tta_r80": tta_at_recall(records, 0.8),
        "tta_r80_threshold": threshold_at_recall(records, 0.8),
        "legacy_mtta": legacy_mtta(records),
    }
    for seconds in AP_BEFORE_SECONDS:
        out[f"ap_{seconds:.1f}s"] = ap_before(records, seconds)
    out.update(
        {
            "threshold": float(threshold),
            "recall_at_threshold": recall,
            "lead_time_at_threshold": lead,
            "near_miss_false_alarms": false_alarm_rate(records, threshold, "near_miss"),
            "normal_false_alarms": false_alarm_rate(records, threshold, "normal"),
            "ece": ece(records, horizon),
            "brier": brier(records, horizon),
            "ttc_mae": ttc_error(records),
            "object_hit_rate": object_hit_rate(records),
        }
    )
    return out


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def fit_temperature(logits: Any, labels: Any, max_iter: int = 100) -> float:
    """Temperature scaling (Guo et al. 2017): the single T > 0 minimising the NLL of ``logits / T``.

    ``logits`` (M,) binary logits with 0/1 ``labels`` (binary cross-entropy), or (M, C) with class indices
    (cross-entropy). Optimised with torch LBFGS (strong Wolfe line search) on log T, so T stays positive.
    Fit on the validation split; at test time divide the logits by T (the ranking, hence AP, is unchanged).
    """
    logits = torch.as_tensor(_np(logits), dtype=torch.float64)
    labels = torch.as_tensor(_np(labels))
    if logits.numel() == 0 or len(logits) != len(labels):
        raise ValueError(
            f"fit_temperature: logits {tuple(logits.shape)} and labels {tuple(labels.shape)} must "
            "be non-empty with one label per row"
        )
    if not torch.isfinite(logits).all():
        raise ValueError("fit_temperature: logits must be finite")
    if logits.ndim == 1:
        target = labels.to(torch.float64).reshape(-1)

        def nll(z: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.binary_cross_entropy_with_logits(z, target)
    elif logits.ndim == 2:
        target = labels.to(torch.long).reshape(-1)

        def nll(z: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.cross_entropy(z, target)
    else:
        raise ValueError(f"fit_temperature: logits must be (M,) or (M, C), got {tuple(logits.shape)}")
    # Lightning evaluates under inference mode (no autograd): this small fit needs gradients wherever it runs
    with torch.inference_mode(False), torch.enable_grad():
        logits, target = logits.clone(), target.clone()
        log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = nll(logits / log_t.exp())
            loss.backward()
            return loss

        optimizer.step(closure)
    return float(log_t.detach().exp())
