"""The anomaly objects: their random specs and their drawing primitives (never in the training data).

``ANOMALY_KINDS`` (cardboard boxes, tyres, rocks, animals, cones, odd textured shapes) lie on the road of the
anomaly set only. :func:`_anomaly_spec` draws one kind's size, colour and variant from the layout's random
generator (so its draws stay in the layout sampler's order); :func:`_anomaly_prims` turns a spec into
primitives in the format of :mod:`~.primitives` with the kind's drawing function in ``_PRIMITIVES``. Both are
kept together so that a new kind is one module's change.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from domains.driving.classes import ANOMALY_KINDS
from domains.driving.synthetic.primitives import _Ctx, _Local, _solid
from domains.driving.synthetic.scene import ObjectSpec, _col


def _anomaly_spec(rng: np.random.Generator, kind: str, x: float, z: float) -> ObjectSpec:
    """One ``kind``'s spec at ``(x, z)``, drawn from the layout's ``rng`` in a fixed order (a draw more or
    less shifts every scene after it). An if-chain, not a table like ``_PRIMITIVES``: each branch is 2-5 draws,
    and the tyre's and the animal's change the style and heading drawn for all kinds, which table entries would
    each have to take and hand back."""
    style = int(rng.integers(0, 2**31))
    heading = float(rng.uniform(-math.pi, math.pi))
    if kind == "cardboard_box":
        s = rng.uniform(0.3, 0.9)
        dims = (s * rng.uniform(0.6, 1.0), s * rng.uniform(0.7, 1.1), s * rng.uniform(0.9, 1.4))
        color = _col((rng.uniform(150, 190), rng.uniform(110, 140), rng.uniform(65, 90)))
    elif kind == "tyre":
        r = rng.uniform(0.28, 0.45)
        standing = bool(rng.random() < 0.5)
        dims = (2 * r, 0.22, 2 * r) if standing else (0.22, 2 * r, 2 * r)
        style = style * 2 + int(standing)
        color = (22, 22, 24)
    elif kind == "rock":
        s = rng.uniform(0.2, 0.8)
        dims = (s * rng.uniform(0.5, 0.9), s, s * rng.uniform(0.8, 1.2))
        g = rng.uniform(90, 150)
        color = _col((g * rng.uniform(0.95, 1.15), g, g * rng.uniform(0.8, 1.0)))
    elif kind == "animal":
        le = float(np.exp(rng.uniform(np.log(0.6), np.log(2.2))))
        dims = (le * rng.uniform(0.6, 0.8), le * 0.3, le)
        color = [(120, 80, 45), (30, 28, 25), (225, 220, 210), (150, 140, 130), (190, 150, 100)][
            int(rng.integers(5))
        ]
        heading = float(rng.choice([rng.uniform(-math.pi, math.pi), math.pi / 2 * rng.choice([-1, 1])]))
    elif kind == "cone":
        h = rng.uniform(0.3, 0.8)
        dims = (h, h * 0.5, h * 0.5)
        color = [(255, 100, 10), (250, 60, 20), (250, 210, 20)][int(rng.integers(3))]
    elif kind == "odd_shape":
        dims = (rng.uniform(0.2, 1.4), rng.uniform(0.3, 1.5), rng.uniform(0.3, 1.5))
        color = _col(rng.uniform(0, 255, 3))
    else:
        raise ValueError(f"unknown anomaly kind {kind!r}; expected one of {ANOMALY_KINDS}")
    return ObjectSpec(kind, x, z, heading, tuple(round(float(d), 3) for d in dims), 0.0, color, style)


def _cardboard_box(fr: _Local, spec: ObjectSpec, ctx: _Ctx, rng: np.random.Generator, out: list) -> None:
    h, w, le = spec.dims
    _solid(fr, ctx, -le / 2, le / 2, -w / 2, w / 2, 0.0, -h, spec.color, out=out)
    fr.poly(
        [-le / 2, le / 2, le / 2, -le / 2],
        [-0.03, -0.03, 0.03, 0.03],
        [-h - 0.002] * 4,
        (200, 185, 150),
        out,
    )
    if spec.style % 3 != 0:  # plain; else a printed side
        return
    q = fr.uv([le / 2 + 0.005] * 4, [-w / 3, w / 3, w / 3, -w / 3], [-h * 0.3, -h * 0.3, -h * 0.7, -h * 0.7])
    if q is not None:
        tex = ("stripes", max(2.0, 0.04 * fr.scale), (30, 30, 30), spec.color, spec.style)
        out.append(("tex", q, tex, None, None))


def _tyre(fr: _Local, spec: ObjectSpec, ctx: _Ctx, rng: np.random.Generator, out: list) -> None:
    phi = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    if spec.style % 2 == 1:
        _standing_tyre(fr, spec, phi, out)
    else:
        _lying_tyre(fr, spec, phi, out)


def _hull(pts: list[np.ndarray]) -> np.ndarray:
    return cv2.convexHull(np.concatenate(pts).astype(np.float32)).reshape(-1, 2).astype(np.float64)


def _standing_tyre(fr: _Local, spec: ObjectSpec, phi: np.ndarray, out: list) -> None:
    h, w, _ = spec.dims
    r = h / 2
    pts = [fr.uv(r * np.cos(phi), np.full_like(phi, bb), -r + r * np.sin(phi)) for bb in (-w / 2, w / 2)]
    if any(p is None for p in pts):
        return
    out.append(("poly", _hull(pts), spec.color, None))
    nearer_left = np.linalg.norm(fr.pts(0, -w / 2, -r)) < np.linalg.norm(fr.pts(0, w / 2, -r))
    near = pts[0] if nearer_left else pts[1]
    c = near.mean(0)
    out.append(("poly", c + (near - c) * 0.55, (120, 120, 125), None))
    out.append(("poly", c + (near - c) * 0.2, (60, 60, 60), None))


def _lying_tyre(fr: _Local, spec: ObjectSpec, phi: np.ndarray, out: list) -> None:
    h, _, le = spec.dims
    r = le / 2
    top = fr.uv(r * np.cos(phi), r * np.sin(phi), np.full_like(phi, -h))
    bot = fr.uv(r * np.cos(phi), r * np.sin(phi), np.zeros_like(phi))
    if top is None or bot is None:
        return
    out.append(("poly", _hull([top, bot]), spec.color, None))
    c = top.mean(0)
    out.append(("poly", c + (top - c) * 0.55, (50, 50, 52), None))


def _on_ground(fr: _Local, c: np.ndarray, ang: np.ndarray, rad: np.ndarray, spec: ObjectSpec) -> np.ndarray:
    """An outline around pixel ``c`` (angles, relative radii; the item's width and height), cut at the ground."""
    h, w, _ = spec.dims
    pts = c + np.stack([np.cos(ang) * rad * w / 2, np.sin(ang) * rad * h / 2], -1) * fr.scale
    ground = fr.uv(0, 0, 0)[1]
    pts[:, 1] = np.minimum(pts[:, 1], ground)
    return pts


def _rock(fr: _Local, spec: ObjectSpec, ctx: _Ctx, rng: np.random.Generator, out: list) -> None:
    n = int(rng.integers(7, 12))
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = rng.uniform(0.7, 1.0, n)
    c = fr.uv(0, 0, -spec.dims[0] / 2)
    if c is None:
        return
    tex = ("noise", max(2.0, 0.12 * fr.scale), _col(spec.color, 0.6), _col(spec.color, 1.25), spec.style)
    out.append(("tex", _on_ground(fr, c, ang, rad, spec), tex, None, None))


def _animal(fr: _Local, spec: ObjectSpec, ctx: _Ctx, rng: np.random.Generator, out: list) -> None:
    H, w, L = spec.dims
    s = fr.scale
    phase = (spec.style % 50) * 0.3
    j = {
        "hip": (-0.32 * L, 0, -0.62 * H),
        "shoulder": (0.28 * L, 0, -0.66 * H),
        "head": (0.5 * L, 0, -0.95 * H),
        "tail": (-0.52 * L, 0, -0.45 * H),
    }
    for name, a, b in (("fl", 0.26, -0.12), ("fr", 0.3, 0.12), ("rl", -0.3, -0.12), ("rr", -0.34, 0.12)):
        swing = 0.08 * L * math.sin(phase + (0 if name in ("fl", "rr") else math.pi))
        j[f"top_{name}"] = (a * L, b * w, -0.6 * H)
        j[f"foot_{name}"] = (a * L + swing, b * w, 0.0)
    P = fr.uv_named(j)
    if P is None:
        return
    body = spec.color
    for leg in ("fl", "fr", "rl", "rr"):
        out.append(
            ("line", P[f"top_{leg}"], P[f"foot_{leg}"], max(1.0, 0.09 * H * s), _col(body, 0.85), None)
        )
    out.append(("line", P["hip"], P["shoulder"], max(1.0, 0.42 * H * s), body, None))
    out.append(("line", P["shoulder"], P["head"], max(1.0, 0.16 * H * s), body, None))
    out.append(("circle", P["head"], 0.12 * H * s, _col(body, 0.95), None))
    out.append(("line", P["hip"], P["tail"], max(1.0, 0.04 * H * s), _col(body, 0.8), None))
    if spec.style % 3 == 0:  # spotted coat
        for _ in range(4):
            q = P["hip"] + (P["shoulder"] - P["hip"]) * rng.uniform(0.1, 0.9)
            out.append(("circle", q + rng.uniform(-0.08, 0.08, 2) * H * s, 0.1 * H * s, (25, 25, 25), None))


def _cone(fr: _Local, spec: ObjectSpec, ctx: _Ctx, rng: np.random.Generator, out: list) -> None:
    base = fr.uv(0, 0, 0)
    if base is None:
        return
    hw_ = spec.dims[1] / 2 * fr.scale
    H = spec.dims[0] * fr.scale
    foot = base + np.array([[-hw_, 0], [hw_, 0], [hw_, -0.08 * H], [-hw_, -0.08 * H]])
    out.append(("poly", foot, (30, 30, 30), None))
    cone = base + np.array(
        [[-0.7 * hw_, -0.08 * H], [0.7 * hw_, -0.08 * H], [0.12 * hw_, -H], [-0.12 * hw_, -H]]
    )
    out.append(("poly", cone, spec.color, None))
    for f0, f1 in ((0.35, 0.5), (0.65, 0.75)):
        ww0, ww1 = 0.7 - 0.58 * f0, 0.7 - 0.58 * f1
        band = base + np.array(
            [[-ww0 * hw_, -f0 * H], [ww0 * hw_, -f0 * H], [ww1 * hw_, -f1 * H], [-ww1 * hw_, -f1 * H]]
        )
        out.append(("poly", band, (240, 240, 240), None))


def _odd_shape(fr: _Local, spec: ObjectSpec, ctx: _Ctx, rng: np.random.Generator, out: list) -> None:
    h, w, le = spec.dims
    pattern = ("checker", "stripes", "noise", "checker")[spec.style % 4]
    c2 = _col(rng.uniform(0, 255, 3))
    tex = (pattern, max(2.0, rng.uniform(0.06, 0.2) * fr.scale), spec.color, c2, spec.style)
    variant = (spec.style >> 2) % 3
    if variant == 0:  # lying slab (lost cargo: a board or pallet)
        q = fr.uv([-le / 2, le / 2, le / 2, -le / 2], [-w / 2, -w / 2, w / 2, w / 2], [-0.1] * 4)
        _solid(fr, ctx, -le / 2, le / 2, -w / 2, w / 2, 0.0, -0.1, _col(spec.color, 0.6), out=out)
        if q is not None:
            out.append(("tex", q, tex, None, None))
        return
    c = fr.uv(0, 0, -h / 2)  # standing star (variant 1) or blob (2)
    if c is None:
        return
    n = int(rng.integers(5, 9))
    ang = np.linspace(0, 2 * np.pi, 2 * n, endpoint=False) + rng.uniform(0, 1)
    rad = np.where(np.arange(2 * n) % 2 == 0, 1.0, 0.45) if variant == 1 else rng.uniform(0.6, 1.0, 2 * n)
    out.append(("tex", _on_ground(fr, c, ang, rad, spec), tex, None, None))


# kind -> drawing function (fr, spec, ctx, rng, out); rng is the spec's own generator, its draws in order
_PRIMITIVES = {
    "cardboard_box": _cardboard_box,
    "tyre": _tyre,
    "rock": _rock,
    "animal": _animal,
    "cone": _cone,
    "odd_shape": _odd_shape,
}


def _anomaly_prims(fr: _Local, spec: ObjectSpec, ctx: _Ctx, out: list) -> None:
    draw = _PRIMITIVES.get(spec.kind)
    if draw is None:
        raise ValueError(
            f"_anomaly_prims: unknown anomaly kind {spec.kind!r}; expected one of {ANOMALY_KINDS} "
            "(a new kind needs its drawing function in anomalies._PRIMITIVES)"
        )
    draw(fr, spec, ctx, np.random.default_rng(spec.style), out)
