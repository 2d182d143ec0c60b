"""Detection metrics: KITTI 2D average precision (AP|R40, Easy / Moderate / Hard) and recall by box height.

KITTI 2D AP|R40 follows the official devkit's ``evaluate_object.cpp`` rule for rule (no maintained Python library
provides it). COCO mAP comes from torchmetrics in the task.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou

__all__ = [
    "KITTI_DIFFICULTY",
    "KITTI_IMAGE_HEIGHT",
    "KITTI_MIN_OVERLAP",
    "kitti_average_precision",
    "recall_by_height",
]

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
    """devkit cleanData: ignored_gt / ignored_det in {-1 not considered, 0 valid, 1 ignored}. As the devkit
    has it, a ground-truth box *at* the minimum height is too hard (``height <= MIN_HEIGHT``: a 25 px car is
    ignored at moderate, not a miss), a detection only below it (``height < MIN_HEIGHT``)."""
    min_h, max_occ, max_trunc = level
    height = img.gt_boxes[:, 3] - img.gt_boxes[:, 1]
    valid = img.gt_types == cls
    neighbour = img.gt_types == _NEIGHBOUR.get(cls, "\0")
    too_hard = (img.gt_occ > max_occ) | (img.gt_trunc > max_trunc) | (height <= min_h)
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
        # the devkit visits every detection and skips those overlapping too little: only the others, in order
        for j in np.flatnonzero(img.iou[:, i] > min_overlap):
            if ignored_det[j] == -1 or assigned[j] or below[j]:
                continue
            overlap = img.iou[j, i]
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


#: how the warning that too few objects cap AP|R40 starts (the detection task's sanity check filters it by this)
FEW_OBJECTS_WARNING = "KITTI AP: only"


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
    few: dict[str, int] = {}  # classes with too few objects for AP|R40 to reach 1: one warning for them all
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
        if n_gt < _N_SAMPLE_PTS:
            few[cls_name] = n_gt
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
    if few:
        counts = ", ".join(f"{n} valid {name}" for name, n in few.items())
        objects = "object" if list(few.values()) == [1] else "objects"
        caps = " / ".join(f"{(n - 1) / (_N_SAMPLE_PTS - 1):.3f}" for n in few.values())
        warnings.warn(
            f"{FEW_OBJECTS_WARNING} {counts} ground-truth {objects} at {level_name}; the devkit samples recall in "
            f"steps of 1/{_N_SAMPLE_PTS - 1} and fills at most one step per object, so AP|R40 is at most {caps} "
            f"here even for a perfect detector: evaluate on {_N_SAMPLE_PTS}+ objects per class, or read the COCO AP",
            stacklevel=2,
        )
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


def ap50_per_class(result: dict, prefix: str = "") -> dict[int, float]:
    """Per-class AP at IoU 0.5 from a ``MeanAveragePrecision(extended_summary=True)`` result (``prefix``:
    ``"bbox_"`` / ``"segm_"`` with several IoU types): torchmetrics' per-class values average all IoU
    thresholds, but its precision table (IoU, recall, class, area, max detections) keeps each curve, and the
    first threshold is 0.5. One metric object then gives COCO AP and AP50 per class; classes without ground
    truth (all -1) are left out."""
    precision = result[f"{prefix}precision"]
    out = {}
    for k, cls in enumerate(result["classes"].reshape(-1).tolist()):
        curve = precision[0, :, k, 0, -1]
        curve = curve[curve > -1]
        if len(curve):
            out[int(cls)] = float(curve.mean())
    return out


def with_crowd_regions(
    target: dict,
    ignore_boxes: torch.Tensor,
    num_classes: int,
    ignore_masks: torch.Tensor | None = None,
    ignore_labels: torch.Tensor | None = None,
) -> dict:
    """A COCO ground truth (``boxes``, ``labels``, optional ``masks`` and ``iscrowd``) with each ignore region
    added as a crowd region (``iscrowd`` 1), for torchmetrics' ``MeanAveragePrecision``: its box from
    ``ignore_boxes`` and, for mask AP, its mask from ``ignore_masks`` (R, H, W). ``ignore_labels`` (R,) gives
    each region's class: a COCO crowd ignores detections of its own category only, as COCOeval has it; -1 (and
    every region without ``ignore_labels``) is KITTI's DontCare, which has no class: a crowd region of every
    class. COCOeval matches a detection to a real object first and ignores it only when it matches none and lies
    in a crowd region of its class (crowd IoU: the share of the detection inside it, at each IoU threshold), as
    the KITTI devkit ignores only the detections left unassigned in DontCare: a true car that is mostly inside a
    DontCare box stays a hit."""
    boxes, labels = target["boxes"], target["labels"]
    ignore_boxes = ignore_boxes.to(boxes).reshape(-1, 4)
    if ignore_labels is None:
        ignore_labels = torch.full((len(ignore_boxes),), -1, dtype=torch.int64)
    if ignore_labels.numel() != len(ignore_boxes):
        raise ValueError(
            f"with_crowd_regions: {ignore_labels.numel()} ignore_labels for {len(ignore_boxes)} ignore regions"
        )
    every = torch.arange(num_classes, dtype=labels.dtype)
    per_region = [every if int(c) < 0 else every.new_tensor([int(c)]) for c in ignore_labels.reshape(-1).cpu()]
    region = torch.repeat_interleave(
        torch.arange(len(ignore_boxes)), torch.tensor([len(c) for c in per_region], dtype=torch.int64)
    )
    crowd_labels = torch.cat([every[:0], *per_region]).to(labels.device)
    crowd = target.get("iscrowd", torch.zeros_like(labels))
    out = {
        **target,
        "boxes": torch.cat([boxes, ignore_boxes[region.to(ignore_boxes.device)]]),
        "labels": torch.cat([labels, crowd_labels]),
        "iscrowd": torch.cat([crowd.to(labels), torch.ones_like(crowd_labels)]),
    }
    if ignore_masks is not None:
        ignore_masks = ignore_masks.to(target["masks"])
        out["masks"] = torch.cat([target["masks"], ignore_masks[region.to(ignore_masks.device)]])
    return out
