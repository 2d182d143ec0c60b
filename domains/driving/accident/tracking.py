"""Object slots from per-frame detections: a small IoU tracker, for clips that come without tracks.

The anticipator reads objects as fixed slots over a clip (a slot never changes object). Real clips (CCD
videos, an uploaded dashcam video) have no tracks, so the suite's detector boxes are linked frame to frame by
IoU with the Hungarian assignment (``scipy.optimize.linear_sum_assignment``), the SORT idea without its Kalman
filter: at 10 fps road users move little between frames, and a track may skip ``max_missed`` frames. Written by
hand because the maintained trackers (ByteTrack, OC-SORT, BoT-SORT) come with detector stacks and heavy
dependencies this suite does not carry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_iou

__all__ = ["detect_and_track", "link_detections", "tracks_to_slots"]


def link_detections(
    detections: list[np.ndarray], min_iou: float = 0.3, max_missed: int = 2
) -> list[dict[int, np.ndarray]]:
    """Per frame ``{track_id: box}`` from per-frame boxes ``(K_t, 4)`` (xyxy), linked by IoU >= ``min_iou``
    with the previous box of each live track; a track unseen for more than ``max_missed`` frames ends. Boxes
    of zero width or height are ignored."""
    if not 0 < min_iou <= 1:
        raise ValueError(f"min_iou must be in (0, 1], got {min_iou}")
    live: dict[int, tuple[np.ndarray, int]] = {}  # id -> (last box, frames missed)
    next_id, out = 0, []
    for boxes in detections:
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        # empty boxes (zero width or height) cover nothing: they would match nothing (IoU 0/0) and are left out
        boxes = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
        ids = list(live)
        assigned: dict[int, np.ndarray] = {}
        unmatched = set(range(len(boxes)))
        if ids and len(boxes):
            prev = torch.from_numpy(np.stack([live[i][0] for i in ids]))
            iou = box_iou(prev, torch.from_numpy(boxes)).numpy()
            rows, cols = linear_sum_assignment(-iou)
            for r, c in zip(rows, cols):
                if iou[r, c] >= min_iou:
                    assigned[ids[r]] = boxes[c]
                    unmatched.discard(int(c))
        for c in sorted(unmatched):
            assigned[next_id] = boxes[c]
            next_id += 1
        for i in ids:
            if i not in assigned:
                box, missed = live[i]
                if missed + 1 > max_missed:
                    del live[i]
                else:
                    live[i] = (box, missed + 1)
        for i, box in assigned.items():
            live[i] = (box, 0)
        out.append(assigned)
    return out


def tracks_to_slots(
    tracks: list[dict[int, np.ndarray]], max_objects: int = 19
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fixed slots for the clip: the ``max_objects`` tracks seen in the most frames (ties: the larger mean box
    first). Returns boxes ``(T, N, 4)``, valid ``(T, N)`` and the slots' track ids ``(N,)`` (-1: empty)."""
    seen: dict[int, list[float]] = {}
    for frame in tracks:
        for i, box in frame.items():
            seen.setdefault(i, []).append(float((box[2] - box[0]) * (box[3] - box[1])))
    order = sorted(seen, key=lambda i: (-len(seen[i]), -float(np.mean(seen[i])), i))[:max_objects]
    t = len(tracks)
    boxes = np.zeros((t, max_objects, 4), np.float32)
    valid = np.zeros((t, max_objects), bool)
    ids = np.full(max_objects, -1, np.int64)
    for slot, i in enumerate(order):
        ids[slot] = i
        for f, frame in enumerate(tracks):
            if i in frame:
                boxes[f, slot], valid[f, slot] = frame[i], True
    return boxes, valid, ids


def detect_and_track(
    detect: Callable[[np.ndarray], dict],
    frames: Sequence[np.ndarray],
    threshold: float,
    max_objects: int = 19,
    class_names: Sequence[str] = (),
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Objects of a clip without tracks: ``detect(frame)`` (``boxes`` xyxy in the frame's pixels, ``scores``,
    ``labels``, numpy) per frame, the boxes scoring >= ``threshold`` linked into tracks by IoU
    (:func:`link_detections`) and cut to ``max_objects`` fixed slots (:func:`tracks_to_slots`). Returns
    ``boxes`` (T, N, 4), ``box_valid`` (T, N), ``track_ids`` (N,), ``classes`` (each track's most frequent
    detector class, named by ``class_names``), ``detections`` and ``tracks`` (counts before the cut).
    ``progress(done, total)`` is called after each frame."""
    names = list(class_names or [])
    per_frame, labels = [], []
    for t, frame in enumerate(frames):
        pred = detect(frame)
        boxes = np.asarray(pred["boxes"])
        # zero-area boxes (clipped at the frame's edge) cover nothing; dropped here with their labels (kept aligned)
        keep = (np.asarray(pred["scores"]) >= threshold) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        per_frame.append(boxes[keep].astype(np.float32))
        labels.append(np.asarray(pred["labels"])[keep])
        if progress is not None:
            progress(t + 1, len(frames))
    tracks = link_detections(per_frame)
    boxes, valid, ids = tracks_to_slots(tracks, max_objects)
    votes: dict[int, list[int]] = {}
    for t, frame_tracks in enumerate(tracks):
        for tid, box in frame_tracks.items():  # the track's box is one of this frame's detections
            match = np.flatnonzero((per_frame[t] == box.astype(np.float32)).all(axis=1))
            if len(match):
                votes.setdefault(tid, []).append(int(labels[t][match[0]]))
    classes = {}
    for tid, vote in votes.items():
        label = int(np.bincount(vote).argmax())
        classes[tid] = names[label] if label < len(names) else str(label)
    return {
        "boxes": boxes,
        "box_valid": valid,
        "track_ids": ids,
        "classes": classes,
        "detections": int(sum(len(b) for b in per_frame)),
        "tracks": len({tid for frame_tracks in tracks for tid in frame_tracks}),  # before the cut to the slots
    }
