"""Primitive builders: vehicles, pedestrians, cyclists and street furniture as lists of 2D primitives.

A primitive is a tuple (kind, geometry..., albedo colour, emitted colour or None). Kinds:
``("poly", pts(N,2), col, emit)``, ``("circle", centre(2), radius, col, emit)``,
``("line", p0, p1, thick, col, emit)``, ``("ring", pts(N,2), thick, col, emit)`` and
``("tex", pts(N,2), (pattern, scale_px, col1, col2, seed), None, None)``. Each builder works in an item's
local frame (:class:`_Local`: along its heading, to its right, down) and projects through the camera, so the
silhouette, the 2D box and the KITTI 3D fields agree: vehicles are projected cuboids (body, cabin, wheels,
lights) shaded by the sun, people and cyclists are drawn from projected 3D joints. Rasterising the primitives
is :mod:`~.raster`'s job; the anomaly kinds are in :mod:`~.anomalies`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from domains.driving.synthetic.camera import Z_NEAR, Camera, _clip_near
from domains.driving.synthetic.scene import ObjectSpec, _col

_SHIRTS = [
    (200, 40, 40),
    (40, 60, 150),
    (230, 230, 230),
    (30, 30, 30),
    (60, 130, 60),
    (230, 150, 30),
    (120, 60, 130),
    (150, 150, 150),
    (90, 60, 40),
    (240, 200, 200),
]
_TROUSERS = [(40, 50, 90), (30, 30, 30), (90, 90, 95), (120, 100, 70), (60, 45, 35)]
_SKIN = [(235, 190, 160), (200, 150, 110), (150, 100, 70), (95, 65, 45)]
_HAIR = [(30, 25, 20), (80, 55, 30), (200, 170, 110), (120, 120, 120)]


class _Local:
    """An item's local frame in camera coordinates: a along the heading, b to its right, y down."""

    def __init__(self, cam: Camera, spec: ObjectSpec, t: float):
        px, pz = spec.position(t)
        heading = spec.heading_at(t)
        hd = np.array([math.sin(heading), 0.0, math.cos(heading)])
        rd = np.array([math.cos(heading), 0.0, -math.sin(heading)])
        self.cam = cam
        self.o = cam.to_cam(np.array([px, 0.0, pz]))
        self.hd = cam.dir_to_cam(hd)
        self.rd = cam.dir_to_cam(rd)
        self.basis = np.stack([self.hd, self.rd, np.array([0.0, 1.0, 0.0])])
        self.scale = cam.f / max(self.o[2], 1e-6)  # pixels per metre at the item's depth

    def pts(self, a, b, y) -> np.ndarray:
        a, b, y = np.broadcast_arrays(np.asarray(a, float), np.asarray(b, float), np.asarray(y, float))
        return self.o + np.stack([a, b, y], -1) @ self.basis

    def uv(self, a, b, y) -> np.ndarray | None:
        p = self.pts(a, b, y)
        if (p[..., 2] < Z_NEAR).any():
            return None
        return self.cam.project(p)

    def uv_named(self, points: dict[str, tuple]) -> dict[str, np.ndarray] | None:
        """Pixels of named local points (a, b, y); None when any is too near to draw."""
        names = list(points)
        uv = self.uv(*np.array([points[n] for n in names]).T)
        return None if uv is None else dict(zip(names, uv))

    def poly(self, a, b, y, color, out: list, emit=None) -> None:
        """Append the polygon with local corners (a, b, y) to ``out`` unless it is too near to draw."""
        q = self.uv(a, b, y)
        if q is not None:
            out.append(("poly", q, color, emit))


@dataclass
class _Ctx:
    sun: np.ndarray  # in camera coordinates
    lighting: str

    @property
    def lights_on(self) -> bool:
        return self.lighting != "day"


_FACES = {
    "front": (0, 1, 5, 4),
    "back": (2, 3, 7, 6),
    "right": (3, 0, 4, 7),
    "left": (1, 2, 6, 5),
    "top": (4, 5, 6, 7),
}
_FACE_NAMES = tuple(_FACES)
_FACE_IDX = np.array(list(_FACES.values()))


def _solid(
    fr: _Local, ctx: _Ctx, a0, a1, b0, b1, yb, yt, color, shrink=(0, 0, 0), face_colors=None, out=None
):
    """A (possibly tapered) box in the local frame: bottom at ``yb``, top at ``yt`` (< yb, y is down).

    ``shrink`` = (front, back, sides) inset of the top face, for windscreens and tapered cabins. Faces facing
    away from the camera are culled; each face is shaded by the sun. Returns the visible face names.
    """
    sf, sb, ss = shrink
    a = np.array([a1, a1, a0, a0, a1 - sf, a1 - sf, a0 + sb, a0 + sb])
    b = np.array([b1, b0, b0, b1, b1 - ss, b0 + ss, b0 + ss, b1 - ss])
    y = np.array([yb] * 4 + [yt] * 4)
    corners = fr.pts(a, b, y)
    polys = corners[_FACE_IDX]  # (5, 4, 3)
    e1, e2 = polys[:, 1] - polys[:, 0], polys[:, 2] - polys[:, 0]
    n = np.stack(
        [
            e1[:, 1] * e2[:, 2] - e1[:, 2] * e2[:, 1],
            e1[:, 2] * e2[:, 0] - e1[:, 0] * e2[:, 2],
            e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0],
        ],
        -1,
    )
    c = polys.mean(1)
    n = n * np.where(((c - corners.mean(0)) * n).sum(1) < 0, -1.0, 1.0)[:, None]  # outward
    norm = np.linalg.norm(n, axis=1)
    facing = ((n * c).sum(1) < 0) & (norm > 1e-9)
    shades = 0.62 + 0.5 * np.maximum(0.0, (n @ ctx.sun) / np.maximum(norm, 1e-9))
    visible = []
    for i in np.flatnonzero(facing):
        clipped = _clip_near(polys[i])
        if clipped is None:
            continue
        name = _FACE_NAMES[i]
        visible.append(name)
        col = (face_colors or {}).get(name, color)
        out.append(("poly", fr.cam.project(clipped), _col(col, shades[i]), None))
    return visible


def _wheel(fr: _Local, a: float, b: float, r: float, out: list) -> None:
    phi = np.linspace(0, 2 * np.pi, 14, endpoint=False)
    tyre = fr.uv(a + r * np.cos(phi), np.full_like(phi, b), -r + r * np.sin(phi))
    if tyre is None:
        return
    out.append(("poly", tyre, (22, 22, 24), None))
    hub = fr.uv(a + 0.55 * r * np.cos(phi), np.full_like(phi, b * 1.005), -r + 0.55 * r * np.sin(phi))
    out.append(("poly", hub, (150, 150, 155), None))


def _lamps(fr, ctx, a, b_in, b_out, y0, y1, col, emit, out) -> None:
    for s in (-1, 1):
        b = [s * b_in, s * b_out, s * b_out, s * b_in]
        fr.poly([a, a, a, a], b, [y0, y0, y1, y1], col, out, emit if ctx.lights_on else None)


def _vehicle_prims(fr: _Local, spec: ObjectSpec, ctx: _Ctx) -> list:
    h, w, le = spec.dims
    out: list = []
    paint = spec.color
    glass = _col((45, 55, 68), 0.9 + 0.3 * ((spec.style >> 3) % 2))
    dark = (28, 28, 30)
    half_l, half_w = le / 2, w / 2

    def chassis(inset: float, yb: float, ybody: float, shrink: tuple) -> list[str]:
        """The dark underbody (``inset`` shorter at each end), then the painted body; its visible faces."""
        a, b = half_l - inset, half_w - 0.15
        _solid(fr, ctx, -a, a, -b, b, -0.08, yb - 0.05, dark, out=out)
        return _solid(fr, ctx, -half_l, half_l, -half_w, half_w, yb, ybody, paint, shrink=shrink, out=out)

    if spec.kind == "Car":
        r = 0.3 * min(1.15, le / 3.9)
        yb, ybody = -0.22, -0.56 * h
        vis = chassis(0.6, yb, ybody, (0.25, 0.1, 0.05))
        wheels = [(half_l - 0.78, r), (-half_l + 0.8, r)]
        cab = (-half_l + 0.55, half_l - 1.25, (0.55, 0.3, 0.14))
        top_y = -h
    elif spec.kind == "Van":
        r = 0.34
        yb, ybody = -0.28, -h
        vis = chassis(0.7, yb, ybody, (0.55, 0.0, 0.06))
        wheels = [(half_l - 0.85, r), (-half_l + 0.95, r)]
        cab = None
        top_y = -h
    else:  # Truck: cab + cargo box, drawn far part first
        r = 0.48
        cab_l = min(2.3, 0.35 * le)
        _solid(fr, ctx, -half_l + 0.4, half_l - 0.3, -half_w + 0.2, half_w - 0.2, -0.15, -0.95, dark, out=out)
        parts = [
            (half_l - cab_l, half_l, -0.5, -0.86 * h, paint, (0.35, 0, 0.08)),
            (
                -half_l,
                half_l - cab_l - 0.25,
                -1.0,
                -h,
                _col((230, 230, 225), 0.7 + 0.3 * ((spec.style >> 5) % 2)),
                (0, 0, 0),
            ),
        ]
        dist = [float(np.linalg.norm(fr.pts((p[0] + p[1]) / 2, 0, p[3] / 2))) for p in parts]
        vis = []
        for i in np.argsort(dist)[::-1]:
            a0, a1, y0, y1, col, sh = parts[i]
            v = _solid(fr, ctx, a0, a1, -half_w, half_w, y0, y1, col, shrink=sh, out=out)
            if i == 0:
                vis = v
        wheels = [(half_l - 1.2, r), (-half_l + 1.4, r), (-half_l + 2.5, r)]
        cab = None
        top_y = -h
    # windows
    if spec.kind == "Van":
        for side, sgn in (("right", 1), ("left", -1)):
            if side in vis:
                fr.poly(
                    [half_l - 0.65, half_l - 1.7, half_l - 1.7, half_l - 0.95],
                    [sgn * (half_w + 0.01)] * 4,
                    [-0.6 * h, -0.6 * h, -0.9 * h, -0.9 * h],
                    glass,
                    out,
                )
        if "front" in vis:
            fr.poly(
                [half_l - 0.06, half_l - 0.06, half_l - 0.5, half_l - 0.5],
                [half_w - 0.12, -half_w + 0.12, -half_w + 0.12, half_w - 0.12],
                [-0.58 * h, -0.58 * h, -0.95 * h, -0.95 * h],
                _col(glass, 1.15),
                out,
            )
    if spec.kind == "Truck" and "front" in vis:
        fr.poly(
            [half_l + 0.01] * 4,
            [half_w - 0.15, -half_w + 0.15, -half_w + 0.2, half_w - 0.2],
            [-0.55 * h, -0.55 * h, -0.8 * h, -0.8 * h],
            _col(glass, 1.15),
            out,
        )
    # wheels on the visible sides
    for side, sgn in (("right", 1), ("left", -1)):
        if side in vis:
            for a, rr in wheels:
                _wheel(fr, a, sgn * (half_w + 0.01), rr, out)
    # lights and plates
    ylamp0 = -0.62 if spec.kind != "Truck" else -0.55
    if "back" in vis:
        _lamps(
            fr,
            ctx,
            -half_l - 0.01,
            half_w - 0.32,
            half_w - 0.06,
            ylamp0 - 0.12,
            ylamp0 + 0.05 if spec.kind != "Car" else -0.48 * h - 0.04,
            (170, 25, 25),
            (255, 45, 35),
            out,
        )
        fr.poly(
            [-half_l - 0.012] * 4,
            [0.26, -0.26, -0.26, 0.26],
            [-0.38, -0.38, -0.49, -0.49],
            (225, 225, 215),
            out,
        )
    if "front" in vis:
        _lamps(
            fr,
            ctx,
            half_l + 0.01,
            half_w - 0.35,
            half_w - 0.07,
            -0.55,
            -0.68,
            (225, 225, 210),
            (255, 250, 220),
            out,
        )
    # cabin for cars: glass sides with a roof, pillars in the paint colour
    if cab is not None:
        a0, a1, sh = cab
        faces = {"front": glass, "back": glass, "right": glass, "left": glass, "top": paint}
        before = len(out)
        _solid(
            fr,
            ctx,
            a0,
            a1,
            -half_w + 0.06,
            half_w - 0.06,
            ybody,
            top_y,
            paint,
            shrink=sh,
            face_colors=faces,
            out=out,
        )
        edge = max(1.0, 0.07 * fr.scale)
        for p in out[before:]:
            out.append(("ring", p[1], edge, _col(paint, 0.9), None))
    return out


def _person_prims(fr: _Local, spec: ObjectSpec, t: float, out: list) -> None:
    rng = np.random.default_rng(spec.style)
    shirt = _SHIRTS[int(rng.integers(len(_SHIRTS)))]
    trousers = _TROUSERS[int(rng.integers(len(_TROUSERS)))]
    skin, hair = _SKIN[int(rng.integers(len(_SKIN)))], _HAIR[int(rng.integers(len(_HAIR)))]
    k = spec.dims[0] / 1.75
    phase = (spec.style % 100) * 0.37 + t * 0.9
    bw, bl = spec.dims[1] / 0.66, spec.dims[2] / 0.84  # body proportions follow the labelled w and l
    stride = 0.3 * bl * math.sin(phase) if spec.moving(t) else 0.04
    s = fr.scale
    j = {
        "foot_l": (stride, -0.1 * bw, 0.0),
        "foot_r": (-stride, 0.1 * bw, 0.0),
        "hip_l": (0.0, -0.1 * bw, -0.92 * k),
        "hip_r": (0.0, 0.1 * bw, -0.92 * k),
        "sh_l": (0.0, -0.19 * bw, -1.42 * k),
        "sh_r": (0.0, 0.19 * bw, -1.42 * k),
        "hand_l": (-0.8 * stride, -0.23 * bw, -0.82 * k),
        "hand_r": (0.8 * stride, 0.23 * bw, -0.82 * k),
        "hip": (0.0, 0.0, -0.95 * k),
        "neck": (0.0, 0.0, -1.45 * k),
        "head": (0.0, 0.0, -1.62 * k),
        "crown": (0.0, 0.0, -1.64 * k),
    }
    P = fr.uv_named(j)
    if P is None:
        return
    legw = max(1.0, 0.15 * s)
    for side in ("l", "r"):
        out.append(("line", P[f"hip_{side}"], P[f"foot_{side}"], legw, trousers, None))
    out.append(("poly", np.array([P["sh_l"], P["sh_r"], P["hip_r"], P["hip_l"]]), shirt, None))
    out.append(("line", P["hip"], P["neck"], max(1.0, 0.26 * s), shirt, None))
    for side in ("l", "r"):
        out.append(("line", P[f"sh_{side}"], P[f"hand_{side}"], max(1.0, 0.09 * s), _col(shirt, 0.85), None))
    out.append(("circle", P["crown"], 0.11 * k * s, hair, None))
    out.append(("circle", P["head"], 0.095 * k * s, skin, None))


def _cyclist_prims(fr: _Local, spec: ObjectSpec, t: float, out: list) -> None:
    rng = np.random.default_rng(spec.style)
    shirt = _SHIRTS[int(rng.integers(len(_SHIRTS)))]
    trousers = _TROUSERS[int(rng.integers(len(_TROUSERS)))]
    skin = _SKIN[int(rng.integers(len(_SKIN)))]
    helmet = _col(rng.uniform(30, 240, 3))
    s = fr.scale
    k = spec.dims[0] / 1.74
    r, base = 0.34, 0.52 * spec.dims[2] / 1.76
    phi = np.linspace(0, 2 * np.pi, 18, endpoint=False)
    thin = max(1.0, 0.04 * s)
    for a in (-base, base):
        ring = fr.uv(a + r * np.cos(phi), np.zeros_like(phi), -r + r * np.sin(phi))
        if ring is None:
            return
        out.append(("ring", ring, max(1.0, 0.05 * s), (20, 20, 20), None))
    crank = (t * 0.8 + spec.style % 7) if spec.moving(t) else 0.3
    pts = {
        "rear": (-base, 0, -r),
        "front": (base, 0, -r),
        "bb": (-0.05, 0, -0.3),
        "seat": (-0.22, 0, -0.92 * k),
        "head_tube": (0.38, 0, -0.98 * k),
        "bar_l": (0.36, -0.25, -1.02 * k),
        "bar_r": (0.36, 0.25, -1.02 * k),
        "ped_l": (-0.05 + 0.17 * math.cos(crank), -0.1, -0.3 + 0.17 * math.sin(crank)),
        "ped_r": (-0.05 - 0.17 * math.cos(crank), 0.1, -0.3 - 0.17 * math.sin(crank)),
        "hip": (-0.2, 0, -1.0 * k),
        "shoulder": (0.12, 0, -1.46 * k),
        "head": (0.22, 0, -1.62 * k),
    }
    P = fr.uv_named(pts)
    if P is None:
        return
    frame = spec.color
    for a, b in (
        ("rear", "bb"),
        ("bb", "seat"),
        ("seat", "rear"),
        ("bb", "head_tube"),
        ("seat", "head_tube"),
        ("head_tube", "front"),
        ("bar_l", "bar_r"),
    ):
        out.append(("line", P[a], P[b], thin, frame, None))
    for side in ("l", "r"):
        knee = (P["hip"] + P[f"ped_{side}"]) / 2 + np.array([0.18 * s, -0.12 * s])
        out.append(("line", P["hip"], knee, max(1.0, 0.14 * s), trousers, None))
        out.append(("line", knee, P[f"ped_{side}"], max(1.0, 0.12 * s), trousers, None))
        out.append(("line", P["shoulder"], P[f"bar_{side}"], max(1.0, 0.08 * s), _col(shirt, 0.85), None))
    out.append(("line", P["hip"], P["shoulder"], max(1.0, 0.28 * s), shirt, None))
    out.append(("circle", P["head"], 0.1 * k * s, skin, None))
    out.append(("circle", P["head"] + np.array([0, -0.03 * s]), 0.1 * k * s, helmet, None))


def _stuff_prims(fr: _Local, spec: ObjectSpec, ctx: _Ctx, out: list) -> None:
    s = fr.scale
    rng = np.random.default_rng(spec.style)
    if spec.kind == "tree":
        height, crown = spec.dims[0], spec.dims[1]
        trunk_top = height - crown * 0.9
        uv = fr.uv([0, 0], [0, 0], [0, -trunk_top - 0.3])
        if uv is None:
            return
        out.append(("line", uv[0], uv[1], max(1.0, 0.28 * s), (75, 55, 40), None))
        for _ in range(int(rng.integers(4, 8))):
            ca, cb = rng.uniform(-0.4, 0.4, 2) * crown
            cy_ = -(trunk_top + crown * rng.uniform(0.3, 0.65))
            c = fr.uv(ca, cb, cy_)
            if c is not None:
                out.append(
                    (
                        "circle",
                        c,
                        crown * rng.uniform(0.3, 0.5) * s,
                        _col(spec.color, rng.uniform(0.75, 1.2)),
                        None,
                    )
                )
        return
    if spec.kind == "streetlight":
        height = spec.dims[0]
        toward_road = -1.0 if spec.style % 2 else 1.0  # right-side lamps lean left (towards the road)
        uv = fr.uv(
            [0, 0, 0, 0],
            [0, 0, toward_road * 1.6, toward_road * 1.6],
            [0, -height, -height - 0.1, -height + 0.05],
        )
        if uv is None:
            return
        w = max(1.0, 0.14 * s)
        out.append(("line", uv[0], uv[1], w, spec.color, None))
        out.append(("line", uv[1], uv[2], max(1.0, 0.09 * s), spec.color, None))
        lamp = fr.uv(
            [0.25, 0.25, -0.25, -0.25],
            [toward_road * 1.3, toward_road * 1.9, toward_road * 1.9, toward_road * 1.3],
            [-height + 0.05] * 4,
        )
        head = fr.uv(
            [0, 0, 0, 0],
            [toward_road * 1.2, toward_road * 2.0, toward_road * 2.0, toward_road * 1.2],
            [-height - 0.12, -height - 0.12, -height + 0.06, -height + 0.06],
        )
        if head is not None:
            out.append(("poly", head, (90, 90, 95), None))
        if lamp is not None:
            out.append(("poly", lamp, (230, 230, 210), (255, 230, 170) if ctx.lights_on else None))
        return
    # sign: a thin pole with a round, triangular or rectangular plate facing the traffic
    uv = fr.uv([0, 0], [0, 0], [0, -spec.dims[0]])
    if uv is None:
        return
    out.append(("line", uv[0], uv[1], max(1.0, 0.08 * s), (140, 140, 145), None))
    c = fr.uv(0, 0, -spec.dims[0] - 0.3)
    r = 0.32 * s
    kind = spec.style % 3
    if kind == 0:
        out.append(("circle", c, r, (200, 20, 25), None))
        out.append(("circle", c, r * 0.75, (240, 240, 240), None))
    elif kind == 1:
        tri = c + np.array([[0, -r * 1.1], [r * 1.1, r * 0.8], [-r * 1.1, r * 0.8]])
        out.append(("poly", tri, (200, 20, 25), None))
        out.append(("poly", c + (tri - c) * 0.7, (240, 240, 240), None))
    else:
        out.append(("poly", c + np.array([[-r, -r], [r, -r], [r, r], [-r, r]]), (20, 70, 160), None))
        out.append(("poly", c + np.array([[-r, -r], [r, -r], [r, r], [-r, r]]) * 0.6, (235, 235, 235), None))
