"""Rasterising primitives: one item's primitives drawn on its own canvas, with coverage and emission.

Each item is drawn on a private canvas bounded to three times the image around it, which gives its full
(unclipped) silhouette: the renderer takes the 2D box, truncation and occlusion from it before pasting the
pixels into the frame. Drawing uses OpenCV's fixed-point coordinates (``_SHIFT`` fractional bits) and
``LINE_8`` so a silhouette is exactly the set of pixels written; ``"tex"`` primitives fill their polygon with
a checker, stripe or noise texture. The primitive format is described in :mod:`~.primitives`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from domains.driving.synthetic.camera import _ONE, _SHIFT, _fx


def _bounds(p) -> tuple[float, float, float, float]:
    k = p[0]
    if k in ("poly", "tex"):
        a = p[1]
        return a[:, 0].min(), a[:, 1].min(), a[:, 0].max(), a[:, 1].max()
    if k == "ring":
        a, r = p[1], p[2] / 2 + 1
        return a[:, 0].min() - r, a[:, 1].min() - r, a[:, 0].max() + r, a[:, 1].max() + r
    if k == "circle":
        (x, y), r = p[1], p[2]
        return x - r, y - r, x + r, y + r
    (x0, y0), (x1, y1), r = p[1], p[2], p[3] / 2 + 1
    return min(x0, x1) - r, min(y0, y1) - r, max(x0, x1) + r, max(y0, y1) + r


def _draw(img: np.ndarray, p, color, off: np.ndarray) -> None:
    k = p[0]
    if k in ("poly", "tex"):
        cv2.fillPoly(img, [_fx(p[1] - off)], color, cv2.LINE_8, _SHIFT)
    elif k == "circle":
        c = _fx(np.asarray(p[1]) - off)
        cv2.circle(img, (int(c[0]), int(c[1])), max(1, round(p[2] * _ONE)), color, -1, cv2.LINE_8, _SHIFT)
    elif k == "line":
        a, b = _fx(np.asarray(p[1]) - off), _fx(np.asarray(p[2]) - off)
        cv2.line(
            img,
            (int(a[0]), int(a[1])),
            (int(b[0]), int(b[1])),
            color,
            max(1, round(p[3])),
            cv2.LINE_8,
            _SHIFT,
        )
    elif k == "ring":
        cv2.polylines(img, [_fx(p[1] - off)], True, color, max(1, round(p[2])), cv2.LINE_8, _SHIFT)


def _texture(spec, h: int, w: int, x0: int, y0: int) -> np.ndarray:
    pattern, scale, c1, c2, seed = spec
    c1, c2 = np.array(c1, np.float32), np.array(c2, np.float32)
    yy, xx = np.mgrid[y0 : y0 + h, x0 : x0 + w].astype(np.float32)
    k = max(1.5, float(scale))
    if pattern == "checker":
        m = ((np.floor(xx / k) + np.floor(yy / k)) % 2)[..., None]
    elif pattern == "stripes":
        ang = (seed % 180) * math.pi / 180
        m = (np.floor((xx * math.cos(ang) + yy * math.sin(ang)) / k) % 2)[..., None]
    else:  # "noise": speckle on blobs
        rng = np.random.default_rng(seed)
        coarse = rng.random((max(2, int(h / k) + 2), max(2, int(w / k) + 2))).astype(np.float32)
        blob = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR)
        m = np.clip(blob * 0.8 + rng.random((h, w), dtype=np.float32) * 0.35, 0, 1)[..., None]
    return (c1 * (1 - m) + c2 * m).astype(np.uint8)


@dataclass
class _Patch:
    x0: int
    y0: int
    rgb: np.ndarray
    mask: np.ndarray
    emis: np.ndarray | None


def _rasterize(prims: list, width: int, height: int) -> _Patch | None:
    """Draw an item's primitives on its own canvas (bounded to 3x the image around it)."""
    if not prims:
        return None
    b = np.array([_bounds(p) for p in prims], dtype=np.float64)
    x0 = math.floor(max(b[:, 0].min(), -width)) - 1
    y0 = math.floor(max(b[:, 1].min(), -height)) - 1
    x1 = math.ceil(min(b[:, 2].max(), 2 * width)) + 2
    y1 = math.ceil(min(b[:, 3].max(), 2 * height)) + 2
    if x1 <= x0 + 1 or y1 <= y0 + 1 or x1 < 0 or y1 < 0 or x0 > width or y0 > height:
        return None
    h, w = y1 - y0, x1 - x0
    canvas = np.zeros((h, w, 4), np.uint8)  # RGB + coverage: one draw call per primitive
    emis = None
    off = np.array([x0, y0], np.float64)
    for p in prims:
        if p[0] == "tex":
            tmp = np.zeros((h, w), np.uint8)
            _draw(tmp, p, 1, off)
            sel = tmp.astype(bool)
            canvas[sel, :3] = _texture(p[2], h, w, x0, y0)[sel]
            canvas[sel, 3] = 1
            if emis is not None:
                emis[sel] = 0
            continue
        col, emit = p[-2], p[-1]
        _draw(canvas, p, (*col, 1), off)
        if emit is not None and emis is None:
            emis = np.zeros((h, w, 3), np.uint8)
        if emis is not None:
            _draw(emis, p, emit if emit is not None else (0, 0, 0), off)
    mask = canvas[..., 3].astype(bool)
    if not mask.any():
        return None
    return _Patch(x0, y0, canvas[..., :3], mask, emis)
