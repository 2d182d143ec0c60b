"""Physics baselines for accident anticipation (issue #18, handbook section 7): time to collision (TTC) from
2D box tracks, and the exact constant-velocity and constant-acceleration oracles on ground-truth 3D positions.

The constant-acceleration oracle sees a braking, an evasive manoeuvre or a pedestrian slowing down one frame
after it starts (two frames of a changed velocity), so its lead time at a low false-alarm rate says how early
a clip's outcome can be told from perfect 3D positions: an upper reference for any model.

Both give a per-frame per-object TTC (s; inf = never, NaN = unknown) and, through :func:`ttc_risk`, a
per-frame score in [0, 1] that goes into the same metrics as the network (:mod:`.metrics`). Written by hand:
no maintained library computes TTC from box tracks or footprint intersections.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "TrackBaseline",
    "constant_acceleration_oracle",
    "constant_velocity_oracle",
    "frame_ttc",
    "track_baseline",
    "track_ttc",
    "tracks_to_arrays",
    "ttc_risk",
]


def _positive_fps(fps: float) -> float:
    fps = float(fps)
    if not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive number, got {fps}")
    return fps


def track_ttc(boxes: Any, valid: Any, fps: float, span: int = 3) -> np.ndarray:
    """Per-frame per-object TTC (T, N) from the scale change of the box height.

    Pinhole camera: an object of fixed height at depth z has image height ``h ∝ 1 / z``. With closing speed v,
    ``h_t / h_{t-k} = z_{t-k} / z_t = 1 + k v dt / z_t``, so ``TTC_t = z_t / v = k dt / (h_t / h_{t-k} - 1)``:
    the handbook's ``dt / (h_t / h_{t-1} - 1)`` for k = 1, exact for a constant closing speed for every k.
    The smoothing is this longer baseline: k = ``span`` frames (or fewer when the object was not visible that
    long ago; the largest visible k <= span is used), which divides the effect of pixel noise by about k.
    inf where the box does not grow (not approaching), NaN where the object is not visible at t or at any of
    the ``span`` frames before. The TTC is to the object reaching the camera plane: the box scale knows
    neither the object's length nor where the ego's bumper is.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    if boxes.ndim != 3 or boxes.shape[-1] != 4 or valid.shape != boxes.shape[:2]:
        raise ValueError(
            f"track_ttc: boxes must be (T, N, 4) and valid (T, N), got {boxes.shape} and {valid.shape}"
        )
    if span < 1:
        raise ValueError(f"track_ttc: span must be >= 1, got {span}")
    dt = 1.0 / _positive_fps(fps)
    heights = boxes[..., 3] - boxes[..., 1]
    valid = valid & np.isfinite(heights) & (heights > 0)
    ttc = np.full(heights.shape, np.nan)
    filled = np.zeros(heights.shape, dtype=bool)
    for k in range(span, 0, -1):  # longest baseline first; shorter ones fill what is left
        use = np.zeros(heights.shape, dtype=bool)
        use[k:] = valid[k:] & valid[:-k] & ~filled[k:]
        ratio = np.ones(heights.shape)
        ratio[k:] = np.where(use[k:], heights[k:] / np.where(valid[:-k], heights[:-k], 1.0), 1.0)
        with np.errstate(divide="ignore"):
            value = np.where(ratio > 1.0, k * dt / (ratio - 1.0), np.inf)
        ttc[use] = value[use]
        filled |= use
    return ttc


def ttc_risk(ttc: Any, horizon: float = 2.0) -> np.ndarray:
    """Risk in [0, 1]: the share of the alarm horizon already used up, ``1 - min(TTC, H) / H``.

    1 at contact (TTC <= 0), 0 for TTC >= H, linear between; 0 where the TTC is unknown (NaN) or infinite.
    The threshold sweep of the metrics then turns it into an alarm at ``TTC <= H (1 - threshold)``."""
    if horizon <= 0:
        raise ValueError(f"ttc_risk: horizon must be > 0, got {horizon}")
    ttc = np.asarray(ttc, dtype=np.float64)
    risk = 1.0 - np.clip(ttc, 0.0, horizon) / horizon
    return np.where(np.isnan(ttc), 0.0, risk)


def frame_ttc(ttc: Any, mask: Any = None) -> np.ndarray:
    """(T,) the smallest TTC over the objects of each frame (optionally only where ``mask``); NaN entries are
    skipped (objects outside ``mask`` count as inf); inf when no object has a finite TTC, NaN when every
    object is unknown."""
    ttc = np.asarray(ttc, dtype=np.float64)
    if mask is not None:
        ttc = np.where(np.asarray(mask, dtype=bool), ttc, np.inf)
    known = ~np.isnan(ttc)
    out = np.where(known, ttc, np.inf).min(axis=1) if ttc.shape[1] else np.full(len(ttc), np.nan)
    out[~known.any(axis=1)] = np.nan
    return out


@dataclass
class TrackBaseline:
    """The track baseline's outputs: ``ttc`` / ``object_risk`` (T, N), ``frame_ttc`` / ``scores`` (T,)."""

    ttc: np.ndarray
    object_risk: np.ndarray
    frame_ttc: np.ndarray
    scores: np.ndarray


def track_baseline(
    boxes: Any,
    valid: Any,
    fps: float,
    image_width: float,
    horizon: float = 2.0,
    span: int = 3,
    band: tuple[float, float] = (1 / 3, 2 / 3),
) -> TrackBaseline:
    """The box-scale TTC baseline scored per frame: only objects in the ego path count (box centre within the
    ``band`` of the image width, as fractions: the middle third by default), the frame score is the highest
    :func:`ttc_risk` among them, and the per-object risk is 0 outside the band."""
    if not 0 <= band[0] < band[1] <= 1:
        raise ValueError(
            f"track_baseline: band must be 0 <= left < right <= 1 (fractions of the width), got {band}"
        )
    if image_width <= 0:
        raise ValueError(f"track_baseline: image_width must be > 0, got {image_width}")
    boxes = np.asarray(boxes, dtype=np.float64)
    ttc = track_ttc(boxes, valid, fps, span)
    centre = (boxes[..., 0] + boxes[..., 2]) / 2.0 / image_width
    in_path = np.asarray(valid, dtype=bool) & (centre >= band[0]) & (centre <= band[1])
    risk = np.where(in_path, ttc_risk(ttc, horizon), 0.0)
    scores = risk.max(axis=1) if risk.shape[1] else np.zeros(len(risk))
    return TrackBaseline(ttc=ttc, object_risk=risk, frame_ttc=frame_ttc(ttc, in_path), scores=scores)


def _interval(p: np.ndarray, v: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Times (enter, exit) during which ``p + v t`` lies in [lo, hi] (empty: enter > exit)."""
    moving = v != 0
    safe_v = np.where(moving, v, 1.0)
    t1, t2 = (lo - p) / safe_v, (hi - p) / safe_v
    inside = (p >= lo) & (p <= hi)
    enter = np.where(moving, np.minimum(t1, t2), np.where(inside, -np.inf, np.inf))
    leave = np.where(moving, np.maximum(t1, t2), np.where(inside, np.inf, -np.inf))
    return enter, leave


def _locations_and_dims(locations: Any, dims: Any, caller: str) -> tuple[np.ndarray, np.ndarray]:
    """``locations`` (T, N, 3) as float64 with NaN for None, ``dims`` (N, 3); a named error otherwise."""
    loc = (
        np.array([[[np.nan] * 3 if p is None else p for p in row] for row in locations], dtype=np.float64)
        if not isinstance(locations, np.ndarray)
        else locations.astype(np.float64)
    )
    dims = np.asarray(dims, dtype=np.float64).reshape(-1, 3)
    if loc.ndim != 3 or loc.shape[2] != 3 or loc.shape[1] != len(dims):
        raise ValueError(
            f"{caller}: locations must be (T, N, 3) and dims (N, 3) with the same N, "
            f"got {loc.shape} and {dims.shape}"
        )
    return loc, dims


def _half_extents(dims: np.ndarray, headings: Any, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(T, N) half extents along x and z of each object's footprint turned by its heading relative to the ego
    (0: along z, as a car ahead; pi/2: across, as a crossing cyclist): the axis-aligned box around it. Without
    headings the footprint lies along z."""
    half_w, half_l = dims[:, 1] / 2.0, dims[:, 2] / 2.0
    if headings is None:
        return np.broadcast_to(half_w, shape), np.broadcast_to(half_l, shape)
    h = np.nan_to_num(np.asarray(headings, dtype=np.float64).reshape(shape))
    sin, cos = np.abs(np.sin(h)), np.abs(np.cos(h))
    return half_w * cos + half_l * sin, half_w * sin + half_l * cos


def constant_velocity_oracle(
    locations: Any,
    dims: Any,
    fps: float,
    ego_half_width: float = 0.9,
    ego_front: float = 0.0,
    ego_length: float = 4.5,
    headings: Any = None,
) -> np.ndarray:
    """Per-frame per-object TTC (T, N) of the exact constant-velocity extrapolation of ground-truth positions.

    ``locations`` (T, N, 3): KITTI camera coordinates (x right, y down, z forward; the object's bottom centre)
    with None / NaN where unknown; ``dims`` (N, 3): (h, w, l). Camera coordinates already move with the ego,
    so at frame k the relative velocity is ``(p_k - p_{k-1}) * fps`` and the object is extrapolated as
    ``p_k + v t``. Footprints, on the ground plane (x, z), axis-aligned (object length along z unless ``headings``):
    the ego occupies ``|x| <= ego_half_width``, ``ego_front - ego_length <= z <= ego_front`` (``ego_front``:
    camera to front bumper, m), the object ``|x - x_c| <= w / 2``, ``|z - z_c| <= l / 2``. They overlap iff the
    object centre is in the Minkowski sum ``|x_c| <= ego_half_width + w / 2`` and
    ``ego_front - ego_length - l / 2 <= z_c <= ego_front + l / 2``: one interval of t per axis, solved in
    closed form; the TTC is the start of their intersection with t >= 0 (0 if overlapping now, inf if the
    intervals never meet). NaN at a frame where this or the previous position is unknown (frame 0 included).
    ``headings`` (T, N), radians relative to the ego's (optional): w and l are then the half extents of the
    footprint turned by it (:func:`_half_extents`), so a crossing cyclist reaches its length across the lane.
    """
    fps = _positive_fps(fps)
    loc, dims = _locations_and_dims(locations, dims, "constant_velocity_oracle")
    x, z = loc[..., 0], loc[..., 2]
    vx, vz = np.full_like(x, np.nan), np.full_like(z, np.nan)
    vx[1:], vz[1:] = (x[1:] - x[:-1]) * fps, (z[1:] - z[:-1]) * fps
    half_w, half_l = _half_extents(dims, headings, x.shape)
    known = np.isfinite(x) & np.isfinite(z) & np.isfinite(vx) & np.isfinite(vz)
    x, z, vx, vz = (np.where(known, a, 0.0) for a in (x, z, vx, vz))
    x_hi = np.broadcast_to(ego_half_width + half_w, x.shape)
    z_lo = np.broadcast_to(ego_front - ego_length - half_l, z.shape)
    z_hi = np.broadcast_to(ego_front + half_l, z.shape)
    enter_x, leave_x = _interval(x, vx, -x_hi, x_hi)
    enter_z, leave_z = _interval(z, vz, z_lo, z_hi)
    start = np.maximum(0.0, np.maximum(enter_x, enter_z))
    end = np.minimum(leave_x, leave_z)
    ttc = np.where(start <= end, start, np.inf)
    return np.where(known, ttc, np.nan)


def _footprint(
    ego_half_width: float = 0.9, ego_front: float = 0.0, ego_length: float = 4.5, headings: Any = None
) -> tuple[float, float, float, Any]:
    """The ego footprint and object headings of :func:`constant_velocity_oracle`, with its defaults."""
    return ego_half_width, ego_front, ego_length, headings


def constant_acceleration_oracle(
    locations: Any, dims: Any, fps: float, max_time: float = 5.0, step: float = 0.01, **footprint: Any
) -> np.ndarray:
    """Per-frame per-object TTC (T, N) of the constant-acceleration extrapolation of ground-truth positions.

    As :func:`constant_velocity_oracle` (same coordinates, footprints and ``footprint`` keywords:
    ``ego_half_width``, ``ego_front``, ``ego_length``, ``headings``), but the relative motion is
    extrapolated as ``p_k + v_k t + a_k t^2 / 2`` with ``a_k = (p_k - 2 p_{k-1} + p_{k-2}) fps^2`` and
    ``v_k = (p_k - p_{k-1}) fps + a_k / (2 fps)``: both exact while the acceleration is constant. The overlap
    is a quadratic in t on each axis, so the first contact is searched on a ``step`` grid up to ``max_time``
    seconds (inf when none): ample for risks over a 2-s horizon. NaN where any of the three positions is
    unknown (frames 0 and 1 included). An extrapolated braking does not stop at rest: for a lead car that
    halts it errs early, as a cautious driver would.
    """
    fps = _positive_fps(fps)
    ego_half_width, ego_front, ego_length, headings = _footprint(**footprint)
    if not (max_time > 0 and 0 < step <= max_time):
        raise ValueError(f"constant_acceleration_oracle: need 0 < step <= max_time, got {step}, {max_time}")
    loc, dims = _locations_and_dims(locations, dims, "constant_acceleration_oracle")
    p = loc[..., [0, 2]]  # (T, N, 2): x, z
    v = np.full_like(p, np.nan)
    a = np.full_like(p, np.nan)
    a[2:] = (p[2:] - 2 * p[1:-1] + p[:-2]) * fps * fps
    v[2:] = (p[2:] - p[1:-1]) * fps + a[2:] / (2 * fps)
    known = np.isfinite(p).all(-1) & np.isfinite(v).all(-1) & np.isfinite(a).all(-1)
    half_w, half_l = _half_extents(dims, headings, known.shape)
    ts = np.arange(0.0, max_time + step / 2, step)
    ttc = np.full(known.shape, np.inf)
    for n in range(len(dims)):  # (T, G) per object keeps the memory small
        x = p[:, n, 0, None] + v[:, n, 0, None] * ts + 0.5 * a[:, n, 0, None] * ts * ts
        z = p[:, n, 1, None] + v[:, n, 1, None] * ts + 0.5 * a[:, n, 1, None] * ts * ts
        # the footprint as at frame k, kept while extrapolating
        hw, hl = half_w[:, n, None], half_l[:, n, None]
        touch = (
            (np.abs(x) <= ego_half_width + hw) & (z >= ego_front - ego_length - hl) & (z <= ego_front + hl)
        )
        first = touch.argmax(axis=1)
        ttc[:, n] = np.where(touch.any(axis=1), ts[first], np.inf)
    return np.where(known, ttc, np.nan)


def tracks_to_arrays(
    tracks: Mapping[str, Mapping[str, Any]], n_frames: int, ids: Sequence[str] | None = None
) -> dict[str, Any]:
    """The annotation JSON's ``tracks`` (spec section 1) as arrays for the baselines: ``ids`` (N,),
    ``boxes`` (T, N, 4) px and ``box_valid`` (T, N), ``locations`` (T, N, 3) m (NaN where null), ``dims`` (N, 3),
    ``headings`` (T, N) rad from the optional ``world`` poses (NaN where absent: read as along the road)."""
    ids = list(tracks) if ids is None else [str(i) for i in ids]
    boxes = np.full((n_frames, len(ids), 4), np.nan)
    locations = np.full((n_frames, len(ids), 3), np.nan)
    dims = np.zeros((len(ids), 3))
    world = np.full((n_frames, len(ids), 3), np.nan)
    for n, tid in enumerate(ids):
        track = tracks[tid]
        dims[n] = track["dims"]
        fields = (("box", boxes, 4), ("location", locations, 3)) + (
            (("world", world, 3),) if "world" in track else ()
        )
        for key, out, width in fields:
            values = track.get(key) or []
            if len(values) != n_frames:
                raise ValueError(f"track {tid}: {key} has {len(values)} frames, expected {n_frames}")
            for t, value in enumerate(values):
                if value is not None:
                    if len(value) != width:
                        raise ValueError(f"track {tid}: {key}[{t}] must have {width} numbers, got {value}")
                    out[t, n] = value
    return {
        "ids": ids,
        "boxes": boxes,
        "box_valid": np.isfinite(boxes).all(axis=2),
        "locations": locations,
        "dims": dims,
        "headings": world[..., 2],
    }
