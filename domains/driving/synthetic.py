"""Procedural road scenes with exact labels: KITTI boxes (2D + honest 3D fields), semantic/instance maps, anomalies.

Why hand-written: no maintained library renders labelled driving scenes without a game engine (CARLA needs a
GPU server and gigabytes); OpenCV drawing on a pinhole camera gives data with *exact*
labels, fast enough to generate on first use.

Geometry. World: x to the right of the road axis, y down (ground plane y = 0), z along the road. The camera
sits 1.65 m above the ground (KITTI), with a small yaw; its principal point row (the horizon) and column vary
per sequence, so the vanishing point moves a little. The focal length is KITTI's relative to the image width
(721.5 px at 1242 px). Objects stand on the ground plane; their KITTI 3D fields come from that geometry: the
location is the bottom centre in camera coordinates (y = 1.65), ``rotation_y`` the heading about the camera's
y axis and ``alpha = rotation_y - atan2(x, z)``. Vehicles are drawn as projected cuboids (body, cabin, wheels,
lights), people and cyclists from projected 3D joints, so the image, the boxes and the 3D fields agree.

Drawing is back to front (painter's order by camera depth). Each item is first rasterised on its own canvas,
which gives the full (unclipped) silhouette: the 2D box is that silhouette's tight box clipped to the image
(continuous pixel-edge coordinates: ``right = last column + 1``), truncation is the fraction of the full box's
area outside the image, and occlusion comes from the fraction of the object's in-image silhouette still
visible in the final instance map: >= 0.9 -> 0, >= 0.5 -> 1, > 0 -> 2 (level 3, "unknown", is never produced).
Objects with no visible pixel are left out of the labels (counted); objects whose clipped box is lower than
``DONTCARE_MIN_HEIGHT`` px are written as ``DontCare`` boxes.

Lighting (day / dusk / night, with lamps, head- and tail-lights and lit windows) is applied to the image, then
weather through albumentations (RandomRain, RandomFog, Blur/MotionBlur, GaussNoise), image only.

The anomaly generator uses the same scenes from a different seed stream and adds objects that the training
generator never draws (``ANOMALY_KINDS``: cardboard boxes, tyres, rocks, animals, cones, odd textured shapes)
lying on the road. Its ``labels_masks`` hold 0 normal, 1 anomaly and 255 void on a band ``void_width`` (2) px
wide *outside* each anomaly's visible silhouette: blur and weather mix the colours of the edge pixels, and the
band keeps even a two-pixel anomaly's own pixels labelled 1.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import albumentations as A
import cv2
import numpy as np

from domains.driving.classes import (
    ANOMALY_KINDS,
    ANOMALY_MASK_ANOMALY,
    ANOMALY_MASK_VOID,
    DONTCARE,
    GENERATED_TYPES,
    OBJECT_DIMENSIONS,
    SEMANTIC_ID,
    STUFF_KINDS,
    VOID,
    semantic_palette,
)

__all__ = [
    "DEFAULT_SIZE",
    "LIGHTINGS",
    "TRAINING_KINDS",
    "WEATHERS",
    "Building",
    "Camera",
    "Frame",
    "LabeledObject",
    "Layout",
    "ObjectSpec",
    "colorize_semantic",
    "ensure_synthetic_anomaly",
    "ensure_synthetic_kitti",
    "generate_anomaly",
    "generate_kitti",
    "main",
    "render_frame",
    "render_scene",
    "sample_layout",
]

DEFAULT_SIZE = (640, 192)  # (width, height): KITTI's 1242x375 halved, rounded to a multiple of 32
DEFAULT_KITTI_ROOT = "data/driving/synthetic_kitti"
DEFAULT_ANOMALY_ROOT = "data/driving/synthetic_anomaly"
CAMERA_HEIGHT = 1.65  # m, KITTI
FOCAL_PER_WIDTH = 721.5377 / 1242.0  # KITTI P2 focal length over image width
HORIZON_PER_HEIGHT = 172.854 / 375.0  # KITTI P2 principal point row over image height
DONTCARE_MIN_HEIGHT = 10.0  # px: smaller (clipped) boxes are written as DontCare
MIN_RENDER_DEPTH = 2.0  # m: objects whose bottom centre is nearer are behind/beside the camera, not drawn
Z_NEAR = 0.5  # m: near clipping plane for polygons
LIGHTINGS = ("day", "dusk", "night")
WEATHERS = ("clear", "rain", "fog")
VEHICLES = ("Car", "Van", "Truck")
# Everything the training generator may draw; the anomaly kinds are disjoint from it (checked by the renderer).
TRAINING_KINDS = tuple(GENERATED_TYPES) + tuple(STUFF_KINDS)
MARKER = ".complete"  # written last: a folder without it is an interrupted generation
STAMP = ".synthetic_generator"  # written first: marks a folder as ours so it may be cleaned and regenerated
_KITTI_STREAM, _ANOMALY_STREAM = 0x4B495454, 0x414E4F4D  # separate seed streams: no scene is in both sets
_SHIFT = 3  # OpenCV fixed-point drawing: coordinates carry 3 fractional bits
_ONE = 1 << _SHIFT
_STUFF_SEMANTIC = {
    "tree": SEMANTIC_ID["vegetation"],
    "streetlight": SEMANTIC_ID["pole"],
    "sign": SEMANTIC_ID["pole"],
}
_OBJECT_SEMANTIC = {
    "Car": SEMANTIC_ID["car"],
    "Van": SEMANTIC_ID["truck"],
    "Truck": SEMANTIC_ID["truck"],
    "Pedestrian": SEMANTIC_ID["person"],
    "Cyclist": SEMANTIC_ID["cyclist"],
}
assert not set(ANOMALY_KINDS) & set(TRAINING_KINDS)

Color = tuple[int, int, int]


# ----------------------------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class Camera:
    """Pinhole camera at height ``h`` above the ground, at world (x, z) with a yaw; no roll or pitch."""

    width: int
    height: int
    f: float
    cx: float
    cy: float
    x: float = 0.0
    z: float = 0.0
    yaw: float = 0.0
    h: float = CAMERA_HEIGHT

    @cached_property
    def _rt(self) -> np.ndarray:
        # transpose of the world-to-camera rotation (yaw about y), for row vectors
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])

    @cached_property
    def _centre(self) -> np.ndarray:
        return np.array([self.x, -self.h, self.z])

    def dir_to_cam(self, d: np.ndarray) -> np.ndarray:
        """World direction(s) (..., 3) to camera coordinates."""
        return np.asarray(d, dtype=np.float64) @ self._rt

    def to_cam(self, p: np.ndarray) -> np.ndarray:
        """World point(s) (..., 3) to camera coordinates (x right, y down, z forward)."""
        return (np.asarray(p, dtype=np.float64) - self._centre) @ self._rt

    def project(self, pc: np.ndarray) -> np.ndarray:
        """Camera point(s) (..., 3) with z > 0 to pixel coordinates (..., 2)."""
        return pc[..., :2] * (self.f / pc[..., 2:3]) + (self.cx, self.cy)

    @property
    def P2(self) -> np.ndarray:
        """3x4 KITTI projection matrix of this (rectified) camera."""
        return np.array([[self.f, 0, self.cx, 0], [0, self.f, self.cy, 0], [0, 0, 1, 0]], dtype=np.float64)


def _clip_near(poly: np.ndarray) -> np.ndarray | None:
    """Sutherland-Hodgman clip of a camera-space polygon (N, 3) against z >= Z_NEAR."""
    z = poly[:, 2]
    if (z >= Z_NEAR).all():
        return poly
    if (z < Z_NEAR).all():
        return None
    out = []
    n = len(poly)
    for i in range(n):
        a, b = poly[i], poly[(i + 1) % n]
        ina, inb = a[2] >= Z_NEAR, b[2] >= Z_NEAR
        if ina:
            out.append(a)
        if ina != inb:
            out.append(a + (Z_NEAR - a[2]) / (b[2] - a[2]) * (b - a))
    return np.array(out) if len(out) >= 3 else None


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2 * math.pi) - math.pi


def _fx(pts: np.ndarray) -> np.ndarray:
    """Float pixel coordinates to OpenCV fixed point (clamped far outside any canvas)."""
    return (np.asarray(pts) * _ONE).round().astype(np.int32)


def _col(c, k: float = 1.0) -> Color:
    return tuple(int(min(255, max(0, round(v * k)))) for v in c)


# ------------------------------------------------------------------------------------------ scene layout
@dataclass
class ObjectSpec:
    """One drawable on the ground plane: a labelled object, a stuff item or an anomaly.

    ``x``/``z`` place the bottom centre in world metres at frame 0; ``heading`` is the world yaw (0 = along +z,
    away from the camera, pi = oncoming); ``dims`` are KITTI's (height, width, length) in metres; ``speed`` is
    in metres per frame along the heading; ``style`` selects colours and variants deterministically.
    """

    kind: str
    x: float
    z: float
    heading: float = 0.0
    dims: tuple[float, float, float] = (1.53, 1.63, 3.88)
    speed: float = 0.0
    color: Color = (150, 150, 150)
    style: int = 0

    def position(self, t: float) -> tuple[float, float]:
        d = self.speed * t
        return self.x + d * math.sin(self.heading), self.z + d * math.cos(self.heading)


@dataclass
class Building:
    """A block beside the road: street face at ``x_face``, extending ``depth`` metres away from the road."""

    side: int  # -1 left, +1 right
    x_face: float
    z0: float
    z1: float
    height: float
    depth: float
    color: Color
    window: Color
    kind: str = "building"  # or "hedge" (vegetation)
    floor: float = 3.2
    bay: float = 3.0
    style: int = 0


@dataclass
class Layout:
    """Everything that stays fixed over one sequence; ``render_frame(layout, t)`` draws frame ``t``."""

    size: tuple[int, int]
    focal: float
    cx: float
    cy: float
    cam_x: float
    yaw: float
    ego_speed: float
    road_left: float
    road_right: float
    kerb_width: float
    sidewalk_left: float
    sidewalk_right: float
    lane_lines: list[tuple[float, str]]
    dash_phase: float
    buildings: list[Building]
    backdrop: list[tuple[float, np.ndarray, np.ndarray]]  # (x, z samples, heights)
    objects: list[ObjectSpec]
    lighting: str = "day"
    weather: str = "clear"
    palette: dict = field(default_factory=dict)
    sun: tuple[float, float, float] = (0.4, -0.8, -0.45)
    crosswalk_z: float | None = None
    patches: list[tuple[float, float, float, float]] = field(default_factory=list)
    seed: int = 0
    n_frames: int = 1
    allow_anomalies: bool = False

    def camera(self, t: int = 0, jitter: float = 0.0) -> Camera:
        w, h = self.size
        return Camera(w, h, self.focal, self.cx, self.cy + jitter, self.cam_x, self.ego_speed * t, self.yaw)


_CAR_PAINTS = [
    ((235, 235, 235), 0.22),
    ((160, 163, 168), 0.17),
    ((95, 97, 102), 0.14),
    ((25, 25, 28), 0.16),
    ((30, 50, 110), 0.08),
    ((150, 25, 25), 0.08),
    ((30, 70, 45), 0.04),
    ((190, 175, 140), 0.04),
    ((70, 120, 190), 0.04),
    ((220, 180, 40), 0.03),
]
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
_FACADES = [
    (180, 160, 140),
    (200, 190, 170),
    (150, 110, 90),
    (120, 120, 125),
    (210, 200, 185),
    (170, 140, 110),
    (140, 150, 160),
    (225, 215, 190),
    (110, 80, 70),
]


def _pick(rng: np.random.Generator, weighted):
    cols, w = zip(*weighted)
    w = np.asarray(w) / np.sum(w)
    return cols[int(rng.choice(len(cols), p=w))]


def _dims(rng: np.random.Generator, kind: str) -> tuple[float, float, float]:
    (hm, hs), (wm, ws), (lm, ls) = OBJECT_DIMENSIONS[kind]
    h = float(np.clip(rng.normal(hm, hs), hm - 2 * hs, hm + 2 * hs))
    w = float(np.clip(rng.normal(wm, ws), wm - 2 * ws, wm + 2 * ws))
    lo = {"Truck": 6.0}.get(kind, lm - 2 * ls)
    le = float(np.clip(rng.normal(lm, ls), lo, lm + 2 * ls))
    return round(h, 2), round(w, 2), round(le, 2)


def _extent(o: ObjectSpec, t: float) -> tuple[float, float, float, float]:
    x, z = o.position(t)
    _h, w, le = o.dims
    if o.kind == "tree":
        w = le = 0.6
    elif o.kind in ("streetlight", "sign"):
        w = le = 0.3
    if abs(math.sin(o.heading)) > 0.5:
        return x, z, le / 2, w / 2
    return x, z, w / 2, le / 2


def _collides(o: ObjectSpec, others: list[ObjectSpec], n_frames: int, margin: float = 0.4) -> bool:
    """Footprint overlap (axis-aligned, with a margin) at the first, middle and last frame of the sequence."""
    for t in sorted({0, (n_frames - 1) // 2, n_frames - 1}):
        xa, za, ea, fa = _extent(o, t)
        for p in others:
            xb, zb, eb, fb = _extent(p, t)
            if abs(xa - xb) < ea + eb + margin and abs(za - zb) < fa + fb + margin:
                return True
    return False


def _anomaly_spec(rng: np.random.Generator, kind: str, x: float, z: float) -> ObjectSpec:
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


def sample_layout(
    seed: int,
    size: tuple[int, int] = DEFAULT_SIZE,
    *,
    n_frames: int = 1,
    anomalies: int | bool = 0,
    lighting: str | None = None,
    weather: str | None = None,
    density: float = 1.0,
) -> Layout:
    """Draw a random street (road, lanes, sidewalks, buildings, vegetation, poles) and its traffic.

    ``n_frames`` is the sequence length the traffic is planned for (no collisions, nothing runs into the
    ego car). ``anomalies`` (an int, or True for 1-3) puts that many anomaly objects on the road; training
    data uses the default 0. ``lighting``/``weather`` force one of ``LIGHTINGS``/``WEATHERS``.
    """
    width, height = size
    if width < 64 or height < 32:
        raise ValueError(f"sample_layout: image size {size} too small (need at least 64x32)")
    if lighting is not None and lighting not in LIGHTINGS:
        raise ValueError(f"lighting {lighting!r} not in {LIGHTINGS}")
    if weather is not None and weather not in WEATHERS:
        raise ValueError(f"weather {weather!r} not in {WEATHERS}")
    rng = np.random.default_rng(seed)
    f = FOCAL_PER_WIDTH * width
    cx = width / 2 + rng.uniform(-0.02, 0.02) * width
    cy = HORIZON_PER_HEIGHT * height + rng.uniform(-0.05, 0.05) * height
    lane_w = rng.uniform(3.0, 3.7)
    n_right = int(rng.choice([1, 2, 2, 3]))
    n_left = int(rng.choice([0, 1, 1, 1, 2]))
    park_right = 2.3 if rng.random() < 0.6 else 0.0
    park_left = 2.3 if (n_left > 0 and rng.random() < 0.5) else 0.0
    road_right = n_right * lane_w + park_right
    road_left = -(n_left * lane_w + park_left) - (0.3 if n_left == 0 else 0.0)
    lines: list[tuple[float, str]] = []
    for k in range(1, n_right):
        lines.append((k * lane_w, "dashed"))
    for k in range(1, n_left):
        lines.append((-k * lane_w, "dashed"))
    lines.append(
        (
            0.0,
            "solid" if n_left == 0 or rng.random() < 0.4 else ("double" if rng.random() < 0.3 else "dashed"),
        )
    )
    if park_right:
        lines.append((n_right * lane_w, "solid"))
    if park_left:
        lines.append((-n_left * lane_w, "solid"))
    ego_lane = int(rng.integers(n_right))
    cam_x = (ego_lane + 0.5) * lane_w + rng.uniform(-0.3, 0.3)
    yaw = float(np.clip(rng.normal(0, 0.02), -0.05, 0.05))
    ego_speed = 0.0 if rng.random() < 0.1 else float(rng.uniform(0.4, 1.6))
    kerb = float(rng.uniform(0.15, 0.3))
    sw_left, sw_right = float(rng.uniform(1.5, 5.0)), float(rng.uniform(1.5, 5.0))
    z_end = ego_speed * (n_frames - 1)
    # always drawn, then overridden: forcing the lighting or weather keeps the rest of the scene
    drawn_lighting = str(rng.choice(LIGHTINGS, p=[0.6, 0.2, 0.2]))
    drawn_weather = str(rng.choice(WEATHERS, p=[0.66, 0.17, 0.17]))
    lighting, weather = lighting or drawn_lighting, weather or drawn_weather

    urban = rng.random() < 0.75
    buildings: list[Building] = []
    backdrop = []
    for side in (-1, 1):
        face = (road_left - kerb - sw_left) if side < 0 else (road_right + kerb + sw_right)
        built = urban or rng.random() < 0.3
        z = -40.0 + rng.uniform(0, 10)
        max_depth = 0.0
        while z < 220 + z_end:
            if rng.random() < (0.22 if built else 0.7):
                z += rng.uniform(3, 18)  # gap: grass and the backdrop show through
                continue
            length = rng.uniform(8, 30)
            if built and rng.random() < 0.85:
                hb = rng.uniform(9, 24) if urban else rng.uniform(5, 9)
                depth = rng.uniform(8, 15)
                buildings.append(
                    Building(
                        side,
                        face,
                        z,
                        z + length,
                        hb,
                        depth,
                        _col(_FACADES[int(rng.integers(len(_FACADES)))], rng.uniform(0.85, 1.1)),
                        _col((60, 75, 90), rng.uniform(0.6, 1.3)),
                        "building",
                        float(rng.uniform(3.0, 3.6)),
                        float(rng.uniform(2.4, 4.0)),
                        int(rng.integers(2**31)),
                    )
                )
                max_depth = max(max_depth, depth)
            else:
                buildings.append(
                    Building(
                        side,
                        face,
                        z,
                        z + length,
                        rng.uniform(0.8, 2.2),
                        rng.uniform(0.8, 1.5),
                        _col((50, 95, 40), rng.uniform(0.7, 1.2)),
                        (0, 0, 0),
                        "hedge",
                    )
                )
            z += length + (rng.uniform(0, 4) if rng.random() < 0.5 else 0)
        xb = face + side * (max_depth + rng.uniform(3, 25))
        zs = np.arange(-40.0, 420.0, 2.5)
        smooth = np.interp(zs, np.arange(-40.0, 440.0, 20.0), rng.uniform(5, 16, 24))
        backdrop.append((float(xb), zs, smooth + rng.uniform(0, 2.5, zs.size)))

    objects: list[ObjectSpec] = []
    ego = ObjectSpec("Car", cam_x, -1.2, 0.0, (1.5, 1.8, 4.8), ego_speed)
    z_lo, z_hi = -15.0, 95.0 + z_end

    def add(o: ObjectSpec, margin: float = 0.4) -> bool:
        if _collides(o, [ego, *objects], n_frames, margin):
            return False
        objects.append(o)
        return True

    # traffic: right lanes drive away (heading 0), left lanes come towards the camera (heading pi)
    lanes = [((k + 0.5) * lane_w, 0.0) for k in range(n_right)] + [
        (-(k + 0.5) * lane_w, math.pi) for k in range(n_left)
    ]
    for k, (x_lane, heading) in enumerate(lanes):
        same = heading == 0.0
        speed = (
            ego_speed if (same and k == ego_lane) else max(0.0, rng.normal(ego_speed if same else 1.0, 0.3))
        )
        z = z_lo + rng.uniform(0, 12)
        while z < z_hi:
            kind = str(rng.choice(VEHICLES, p=[0.74, 0.14, 0.12]))
            dims = _dims(rng, kind)
            zc = z + dims[2] / 2
            if rng.random() < min(0.95, 0.45 * density) and not (
                same and k == ego_lane and zc < 7 + dims[2] / 2
            ):
                paint = _pick(rng, _CAR_PAINTS) if kind != "Truck" else _col(rng.uniform(60, 240, 3))
                add(
                    ObjectSpec(
                        kind,
                        x_lane + rng.uniform(-0.35, 0.35),
                        zc,
                        heading + rng.normal(0, 0.015),
                        dims,
                        speed,
                        paint,
                        int(rng.integers(2**31)),
                    )
                )
            z += dims[2] + rng.uniform(4, 28) / max(density, 0.1)
    # parked cars along the kerbs
    for x_park, on in ((road_right - 1.15, park_right), (road_left + 1.15, park_left)):
        if not on:
            continue
        z = z_lo + rng.uniform(0, 5)
        while z < z_hi:
            kind = str(rng.choice(["Car", "Van"], p=[0.85, 0.15]))
            dims = _dims(rng, kind)
            if rng.random() < 0.7 * min(density, 1.3):
                heading = (0.0 if rng.random() < 0.7 else math.pi) + rng.normal(0, 0.03)
                add(
                    ObjectSpec(
                        kind,
                        x_park + rng.uniform(-0.2, 0.2),
                        z + dims[2] / 2,
                        heading,
                        dims,
                        0.0,
                        _pick(rng, _CAR_PAINTS),
                        int(rng.integers(2**31)),
                    )
                )
            z += dims[2] + rng.uniform(0.8, 4)
    # pedestrians on the sidewalks (some in groups), a few crossing
    for side, lo, hi in (
        (1, road_right + kerb + 0.4, road_right + kerb + sw_right - 0.3),
        (-1, road_left - kerb - sw_left + 0.3, road_left - kerb - 0.4),
    ):
        for _ in range(int(rng.poisson(1.6 * density))):
            x, z = rng.uniform(lo, hi), rng.uniform(-5, 70 + z_end)
            walking = rng.random() < 0.7
            heading = (
                float(rng.choice([0.0, math.pi])) + rng.normal(0, 0.1) if walking else rng.uniform(-3.1, 3.1)
            )
            group = 1 + int(rng.random() < 0.3) * int(rng.integers(1, 3))
            for g in range(group):
                add(
                    ObjectSpec(
                        "Pedestrian",
                        float(x + 0.55 * g * rng.uniform(0.8, 1.2)),
                        float(z + rng.uniform(-0.6, 0.6)),
                        float(heading),
                        _dims(rng, "Pedestrian"),
                        rng.uniform(0.11, 0.17) if walking else 0.0,
                        (0, 0, 0),
                        int(rng.integers(2**31)),
                    ),
                    margin=0.05,
                )
    crosswalk = None
    if rng.random() < 0.25:
        crosswalk = float(rng.uniform(12, 45) + z_end)
    for _ in range(int(rng.poisson(0.6 * density)) + (2 if crosswalk else 0)):
        z = crosswalk + rng.uniform(-1, 1) if crosswalk else rng.uniform(8, 50)
        heading = math.pi / 2 * rng.choice([-1, 1])
        add(
            ObjectSpec(
                "Pedestrian",
                float(rng.uniform(road_left, road_right)),
                float(z),
                float(heading),
                _dims(rng, "Pedestrian"),
                float(rng.uniform(0.0, 0.15)),
                (0, 0, 0),
                int(rng.integers(2**31)),
            )
        )
    # cyclists near the right edge of the driving lanes, sometimes oncoming on the left
    for _ in range(int(rng.poisson(0.9 * density))):
        oncoming = n_left > 0 and rng.random() < 0.3
        x = (-(n_left * lane_w) + 0.8) if oncoming else (n_right * lane_w - 0.8)
        add(
            ObjectSpec(
                "Cyclist",
                float(x + rng.uniform(-0.3, 0.3)),
                float(rng.uniform(4, 60 + z_end)),
                (math.pi if oncoming else 0.0) + rng.normal(0, 0.04),
                _dims(rng, "Cyclist"),
                float(rng.uniform(0.35, 0.7)),
                _col(rng.uniform(20, 230, 3)),
                int(rng.integers(2**31)),
            )
        )
    # stuff: trees, street lamps and signs on the sidewalks
    for side in (-1, 1):
        edge = (road_right + kerb) if side > 0 else (road_left - kerb)
        sw = sw_right if side > 0 else sw_left
        if rng.random() < 0.6:
            z = -20 + rng.uniform(0, 8)
            gap = rng.uniform(7, 16)
            while z < 150 + z_end:
                add(
                    ObjectSpec(
                        "tree",
                        edge + side * min(0.9, sw / 2),
                        z,
                        0.0,
                        (rng.uniform(5, 9), rng.uniform(2.5, 4.5), 0.4),
                        0.0,
                        _col((55, 100, 40), rng.uniform(0.7, 1.2)),
                        int(rng.integers(2**31)),
                    ),
                    margin=0.0,
                )
                z += gap * rng.uniform(0.8, 1.2)
        if rng.random() < 0.7:
            z = -25 + rng.uniform(0, 10)
            gap = rng.uniform(22, 35)
            while z < 170 + z_end:
                add(
                    ObjectSpec(
                        "streetlight",
                        edge + side * 0.4,
                        z,
                        0.0,
                        (rng.uniform(6.5, 8.5), 0.2, 0.2),
                        0.0,
                        (110, 110, 115),
                        int(rng.integers(2**31)) * 2 + (1 if side > 0 else 0),
                    ),
                    margin=0.0,
                )
                z += gap
        for _ in range(int(rng.integers(0, 3))):
            add(
                ObjectSpec(
                    "sign",
                    edge + side * 0.5,
                    float(rng.uniform(5, 120)),
                    0.0,
                    (2.6, 0.6, 0.1),
                    0.0,
                    (200, 200, 200),
                    int(rng.integers(2**31)),
                ),
                margin=0.0,
            )
    if anomalies:
        n_anom = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1])) if anomalies is True else int(anomalies)
        placed = 0
        for _ in range(60 * n_anom):
            if placed == n_anom:
                break
            kind = str(rng.choice(ANOMALY_KINDS))
            z = float(np.exp(rng.uniform(np.log(6.0), np.log(60.0))))
            x = float(rng.uniform(road_left + 0.6, road_right - 0.6))
            if abs(x - cam_x) < 1.5 and rng.random() < 0.5:  # favour the ego lane a bit less than uniform
                x = float(rng.uniform(road_left + 0.6, road_right - 0.6))
            placed += add(_anomaly_spec(rng, kind, x, z), margin=0.3)
    road_tone = rng.uniform(70, 110) * (0.75 if weather == "rain" else 1.0)
    palette = {
        "road": _col((road_tone, road_tone, road_tone * rng.uniform(1.0, 1.08))),
        "patch": _col((road_tone * 0.8, road_tone * 0.8, road_tone * 0.84)),
        "marking": _col((235, 235, 225), rng.uniform(0.8, 1.0)),
        "sidewalk": _col(rng.choice([(165, 160, 150), (175, 140, 130), (150, 150, 150), (190, 180, 165)])),
        "kerb": _col((195, 195, 190), rng.uniform(0.85, 1.0)),
        "grass": _col((80, 115, 45), rng.uniform(0.75, 1.15)),
        "backdrop": _col((45, 80, 40), rng.uniform(0.7, 1.2)),
        "cloud": float(rng.uniform(0, 1)),
        "ambient": float(rng.uniform(0.85, 1.15)),
    }
    patches = [
        (
            float(rng.uniform(road_left, road_right - 2)),
            float(rng.uniform(0, 150)),
            float(rng.uniform(1, 4)),
            float(rng.uniform(2, 12)),
        )
        for _ in range(int(rng.integers(0, 5)))
    ]
    sun = np.array([rng.uniform(-0.8, 0.8), -rng.uniform(0.4, 1.0), rng.uniform(-0.8, 0.8)])
    return Layout(
        size=(width, height),
        focal=f,
        cx=cx,
        cy=cy,
        cam_x=cam_x,
        yaw=yaw,
        ego_speed=ego_speed,
        road_left=road_left,
        road_right=road_right,
        kerb_width=kerb,
        sidewalk_left=sw_left,
        sidewalk_right=sw_right,
        lane_lines=lines,
        dash_phase=float(rng.uniform(0, 12)),
        buildings=buildings,
        backdrop=backdrop,
        objects=objects,
        lighting=lighting,
        weather=weather,
        palette=palette,
        sun=tuple(sun / np.linalg.norm(sun)),
        crosswalk_z=crosswalk,
        patches=patches,
        seed=int(seed),
        n_frames=n_frames,
        allow_anomalies=bool(anomalies),
    )


# ------------------------------------------------------------------------------------------- primitives
# A primitive is a tuple (kind, geometry..., albedo colour, emitted colour or None). Kinds:
#   ("poly", pts(N,2), col, emit)  ("circle", centre(2), radius, col, emit)  ("line", p0, p1, thick, col, emit)
#   ("ring", pts(N,2), thick, col, emit)  ("tex", pts(N,2), (pattern, scale_px, col1, col2, seed), None, None)


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


class _Local:
    """An item's local frame in camera coordinates: a along the heading, b to its right, y down."""

    def __init__(self, cam: Camera, spec: ObjectSpec, t: float):
        px, pz = spec.position(t)
        hd = np.array([math.sin(spec.heading), 0.0, math.cos(spec.heading)])
        rd = np.array([math.cos(spec.heading), 0.0, -math.sin(spec.heading)])
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


def _wheel(fr: _Local, a: float, b: float, r: float, out: list, rim: Color = (150, 150, 155)) -> None:
    phi = np.linspace(0, 2 * np.pi, 14, endpoint=False)
    tyre = fr.uv(a + r * np.cos(phi), np.full_like(phi, b), -r + r * np.sin(phi))
    if tyre is None:
        return
    out.append(("poly", tyre, (22, 22, 24), None))
    hub = fr.uv(a + 0.55 * r * np.cos(phi), np.full_like(phi, b * 1.005), -r + 0.55 * r * np.sin(phi))
    out.append(("poly", hub, rim, None))


def _lamps(fr, ctx, a, b_in, b_out, y0, y1, col, emit, out) -> None:
    for s in (-1, 1):
        b = [s * b_in, s * b_out, s * b_out, s * b_in]
        fr.poly([a, a, a, a], b, [y0, y0, y1, y1], col, out, emit if ctx.lights_on else None)


def _vehicle_prims(fr: _Local, spec: ObjectSpec, ctx: _Ctx, t: float) -> list:
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
    stride = 0.3 * bl * math.sin(phase) if spec.speed > 0 else 0.04
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
    crank = (t * 0.8 + spec.style % 7) if spec.speed > 0 else 0.3
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


def _anomaly_prims(fr: _Local, spec: ObjectSpec, ctx: _Ctx, out: list) -> None:
    rng = np.random.default_rng(spec.style)
    h, w, le = spec.dims
    s = fr.scale
    kind = spec.kind
    if kind == "cardboard_box":
        _solid(fr, ctx, -le / 2, le / 2, -w / 2, w / 2, 0.0, -h, spec.color, out=out)
        fr.poly(
            [-le / 2, le / 2, le / 2, -le / 2],
            [-0.03, -0.03, 0.03, 0.03],
            [-h - 0.002] * 4,
            (200, 185, 150),
            out,
        )
        if spec.style % 3 == 0:  # printed side
            q = fr.uv(
                [le / 2 + 0.005] * 4, [-w / 3, w / 3, w / 3, -w / 3], [-h * 0.3, -h * 0.3, -h * 0.7, -h * 0.7]
            )
            if q is not None:
                out.append(
                    (
                        "tex",
                        q,
                        ("stripes", max(2.0, 0.04 * s), (30, 30, 30), spec.color, spec.style),
                        None,
                        None,
                    )
                )
    elif kind == "tyre":
        standing = spec.style % 2 == 1
        phi = np.linspace(0, 2 * np.pi, 20, endpoint=False)
        if standing:
            r = h / 2
            pts = [
                fr.uv(r * np.cos(phi), np.full_like(phi, bb), -r + r * np.sin(phi)) for bb in (-w / 2, w / 2)
            ]
            if any(p is None for p in pts):
                return
            hull = cv2.convexHull(np.concatenate(pts).astype(np.float32)).reshape(-1, 2).astype(np.float64)
            out.append(("poly", hull, spec.color, None))
            near = (
                pts[0]
                if np.linalg.norm(fr.pts(0, -w / 2, -r)) < np.linalg.norm(fr.pts(0, w / 2, -r))
                else pts[1]
            )
            c = near.mean(0)
            out.append(("poly", c + (near - c) * 0.55, (120, 120, 125), None))
            out.append(("poly", c + (near - c) * 0.2, (60, 60, 60), None))
        else:
            r = le / 2
            top = fr.uv(r * np.cos(phi), r * np.sin(phi), np.full_like(phi, -h))
            bot = fr.uv(r * np.cos(phi), r * np.sin(phi), np.zeros_like(phi))
            if top is None or bot is None:
                return
            hull = (
                cv2.convexHull(np.concatenate([top, bot]).astype(np.float32))
                .reshape(-1, 2)
                .astype(np.float64)
            )
            out.append(("poly", hull, spec.color, None))
            c = top.mean(0)
            out.append(("poly", c + (top - c) * 0.55, (50, 50, 52), None))
    elif kind == "rock":
        n = int(rng.integers(7, 12))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = rng.uniform(0.7, 1.0, n)
        c = fr.uv(0, 0, -h / 2)
        if c is None:
            return
        pts = c + np.stack([np.cos(ang) * rad * w / 2, np.sin(ang) * rad * h / 2], -1) * s
        ground = fr.uv(0, 0, 0)[1]
        pts[:, 1] = np.minimum(pts[:, 1], ground)
        out.append(
            (
                "tex",
                pts,
                ("noise", max(2.0, 0.12 * s), _col(spec.color, 0.6), _col(spec.color, 1.25), spec.style),
                None,
                None,
            )
        )
    elif kind == "animal":
        L, H = le, h
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
                out.append(
                    ("circle", q + rng.uniform(-0.08, 0.08, 2) * H * s, 0.1 * H * s, (25, 25, 25), None)
                )
    elif kind == "cone":
        base = fr.uv(0, 0, 0)
        if base is None:
            return
        hw_ = w / 2 * s
        H = h * s
        out.append(
            (
                "poly",
                base + np.array([[-hw_, 0], [hw_, 0], [hw_, -0.08 * H], [-hw_, -0.08 * H]]),
                (30, 30, 30),
                None,
            )
        )
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
    elif kind == "odd_shape":
        pattern = ("checker", "stripes", "noise", "checker")[spec.style % 4]
        c2 = _col(rng.uniform(0, 255, 3))
        tex = (pattern, max(2.0, rng.uniform(0.06, 0.2) * s), spec.color, c2, spec.style)
        variant = (spec.style >> 2) % 3
        if variant == 0:  # lying slab (lost cargo: a board or pallet)
            q = fr.uv([-le / 2, le / 2, le / 2, -le / 2], [-w / 2, -w / 2, w / 2, w / 2], [-0.1] * 4)
            _solid(fr, ctx, -le / 2, le / 2, -w / 2, w / 2, 0.0, -0.1, _col(spec.color, 0.6), out=out)
            if q is not None:
                out.append(("tex", q, tex, None, None))
        else:  # standing star or blob
            c = fr.uv(0, 0, -h / 2)
            if c is None:
                return
            n = int(rng.integers(5, 9))
            ang = np.linspace(0, 2 * np.pi, 2 * n, endpoint=False) + rng.uniform(0, 1)
            rad = (
                np.where(np.arange(2 * n) % 2 == 0, 1.0, 0.45)
                if variant == 1
                else rng.uniform(0.6, 1.0, 2 * n)
            )
            pts = c + np.stack([np.cos(ang) * rad * w / 2, np.sin(ang) * rad * h / 2], -1) * s
            ground = fr.uv(0, 0, 0)[1]
            pts[:, 1] = np.minimum(pts[:, 1], ground)
            out.append(("tex", pts, tex, None, None))
    else:
        raise ValueError(f"unknown anomaly kind {kind!r}")


def _casts_shadow(spec: ObjectSpec) -> bool:
    """Items with a box-like footprint get a dark contact shadow (standing billboard shapes do not)."""
    if spec.kind == "odd_shape":
        return (spec.style >> 2) % 3 == 0  # the lying slab variant
    if spec.kind == "tyre":
        return spec.style % 2 == 0  # lying
    return spec.kind in VEHICLES or spec.kind in ("cardboard_box", "rock")


def _reach(spec: ObjectSpec) -> float:
    """Radius (m) around the bottom centre that contains everything drawn for an item."""
    h, w, le = spec.dims
    if spec.kind == "tree":
        return h + w
    if spec.kind == "streetlight":
        return h + 2.3
    if spec.kind == "sign":
        return h + 0.8
    return max(h, le / 2 + w / 2) + 0.3


def _off_screen(fr: _Local, spec: ObjectSpec, cam: Camera) -> bool:
    """Conservative test: the item's reach box projects entirely outside the image."""
    e = _reach(spec)
    x, y, z = fr.o
    if z - e <= Z_NEAR:
        return False
    zs = (z - e, z + e)
    us = [cam.f * xx / zz + cam.cx for xx in (x - e, x + e) for zz in zs]
    vs = [cam.f * yy / zz + cam.cy for yy in (y - e, y + e) for zz in zs]
    return max(us) < 0 or min(us) > cam.width or max(vs) < 0 or min(vs) > cam.height


def _item_prims(fr: _Local, spec: ObjectSpec, ctx: _Ctx, t: float) -> list:
    out: list = []
    if spec.kind in VEHICLES:
        return _vehicle_prims(fr, spec, ctx, t)
    if spec.kind == "Pedestrian":
        _person_prims(fr, spec, t, out)
    elif spec.kind == "Cyclist":
        _cyclist_prims(fr, spec, t, out)
    elif spec.kind in STUFF_KINDS:
        _stuff_prims(fr, spec, ctx, out)
    elif spec.kind in ANOMALY_KINDS:
        _anomaly_prims(fr, spec, ctx, out)
    else:
        raise ValueError(
            f"unknown object kind {spec.kind!r}; expected one of {TRAINING_KINDS + ANOMALY_KINDS}"
        )
    return out


# ------------------------------------------------------------------------------------------------ labels
@dataclass
class LabeledObject:
    """A drawn object with exact labels. Boxes are (left, top, right, bottom) in continuous pixel coordinates."""

    kind: str
    instance_id: (
        int  # value in Frame.instance; 0 when fully hidden. Visible objects are 1..K in drawing order
    )
    is_anomaly: bool
    full_box: tuple[float, float, float, float]  # tight box of the whole silhouette, may leave the image
    box: tuple[float, float, float, float]  # full_box clipped to the image
    truncation: float
    in_image_pixels: int  # silhouette pixels inside the image, before occlusion
    visible_pixels: int  # pixels of this instance in the final instance map
    dims: tuple[float, float, float]  # h, w, l (m)
    location: tuple[float, float, float]  # bottom centre, camera coordinates (m)
    rotation_y: float
    alpha: float
    ground_point: tuple[float, float]  # pixel of the bottom centre

    @property
    def visible_fraction(self) -> float:
        return self.visible_pixels / max(1, self.in_image_pixels)

    @property
    def occlusion(self) -> int:
        v = self.visible_fraction
        return 0 if v >= 0.9 else 1 if v >= 0.5 else 2

    @property
    def hidden(self) -> bool:
        return self.visible_pixels == 0

    @property
    def dontcare(self) -> bool:
        return self.box[3] - self.box[1] < DONTCARE_MIN_HEIGHT

    def kitti_line(self) -> str:
        """The 15-field KITTI label line (DontCare with KITTI's placeholder values for small objects)."""
        l_, t_, r_, b_ = self.box
        if self.dontcare:
            return f"{DONTCARE} -1 -1 -10 {l_:.2f} {t_:.2f} {r_:.2f} {b_:.2f} -1 -1 -1 -1000 -1000 -1000 -10"
        h, w, le = self.dims
        x, y, z = self.location
        return (
            f"{self.kind} {self.truncation:.2f} {self.occlusion:d} {self.alpha:.2f} "
            f"{l_:.2f} {t_:.2f} {r_:.2f} {b_:.2f} {h:.2f} {w:.2f} {le:.2f} {x:.2f} {y:.2f} {z:.2f} {self.rotation_y:.2f}"
        )


@dataclass
class Frame:
    """One rendered frame: RGB image, id maps and exact object labels."""

    image: np.ndarray  # (H, W, 3) uint8 RGB, lighting and weather applied
    semantic: np.ndarray  # (H, W) uint8 ids into SEMANTIC_CLASSES; anomalies are VOID (255)
    instance: np.ndarray  # (H, W) uint16, 0 = no object, else LabeledObject.instance_id
    ground_semantic: np.ndarray  # (H, W) uint8: the ground and sky only, before anything standing was drawn
    objects: list[LabeledObject]
    calib: np.ndarray  # 3x4 P2
    lighting: str
    weather: str
    layout_seed: int
    t: int
    stats: dict

    @property
    def anomaly(self) -> np.ndarray:
        """Boolean map of visible anomaly pixels."""
        ids = [o.instance_id for o in self.objects if o.is_anomaly and o.instance_id > 0]
        return np.isin(self.instance, ids) if ids else np.zeros(self.instance.shape, bool)

    def anomaly_mask(self, void_width: int = 2) -> np.ndarray:
        """SegmentMeIfYouCan label: 0 normal, 1 anomaly, 255 void on a band ``void_width`` px around anomalies."""
        anom = self.anomaly.astype(np.uint8)
        out = anom * ANOMALY_MASK_ANOMALY
        if void_width > 0 and anom.any():
            k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * void_width + 1, 2 * void_width + 1))
            band = (cv2.dilate(anom, k) > 0) & (anom == 0)
            out[band] = ANOMALY_MASK_VOID
        return out.astype(np.uint8)

    def kitti_lines(self) -> list[str]:
        """Label lines of the visible detection objects (anomalies and fully hidden objects excluded)."""
        return [o.kitti_line() for o in self.objects if not o.is_anomaly and not o.hidden]


# -------------------------------------------------------------------------------------------- rendering
_LIGHT = {
    "day": {"ambient": (1.0, 1.0, 1.0), "sky_top": (70, 125, 200), "sky_hor": (185, 210, 235), "glow": 0.0},
    "dusk": {"ambient": (0.72, 0.58, 0.5), "sky_top": (55, 55, 115), "sky_hor": (245, 150, 85), "glow": 0.7},
    "night": {"ambient": (0.16, 0.18, 0.26), "sky_top": (4, 6, 16), "sky_hor": (28, 30, 48), "glow": 1.4},
}


def _sky(layout: Layout, cam: Camera, rng: np.random.Generator) -> np.ndarray:
    w, h = layout.size
    p = _LIGHT[layout.lighting]
    top, hor = np.array(p["sky_top"], np.float32), np.array(p["sky_hor"], np.float32)
    if layout.weather != "clear" or layout.palette["cloud"] > 0.8:  # overcast: grey sky
        grey = np.array([150, 155, 162], np.float32) * (0.25 if layout.lighting == "night" else 1.0)
        top, hor = 0.3 * top + 0.7 * grey, 0.5 * hor + 0.5 * grey
    tt = np.clip(np.arange(h, dtype=np.float32) / max(cam.cy, 1.0), 0, 1)[:, None, None] ** 0.7
    sky = top * (1 - tt) + hor * tt
    sky = np.broadcast_to(sky, (h, w, 3)).copy()
    cloud = layout.palette["cloud"]
    if cloud > 0.3 and layout.lighting != "night":
        small = np.random.default_rng(layout.seed).random((4, 12)).astype(np.float32)
        blob = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        c = np.clip((blob - (1.1 - cloud)) * 3, 0, 1)[..., None] * (1 - tt)
        sky = sky * (1 - 0.6 * c) + 0.6 * c * np.array([235, 235, 240], np.float32)
    return sky


def _world_poly(img, sem, cam: Camera, poly_w, color, cls, emis=None, emit=None) -> None:
    pc = _clip_near(cam.to_cam(np.asarray(poly_w, np.float64)))
    if pc is None:
        return
    pts = [_fx(cam.project(pc))]
    cv2.fillPoly(img, pts, color, cv2.LINE_8, _SHIFT)
    if sem is not None:
        cv2.fillPoly(sem, pts, int(cls), cv2.LINE_8, _SHIFT)
    if emis is not None:
        cv2.fillPoly(emis, pts, emit if emit is not None else (0, 0, 0), cv2.LINE_8, _SHIFT)


def _strip(x0, x1, z0, z1, y0=0.0, y1=0.0) -> np.ndarray:
    return np.array([[x0, y0, z0], [x1, y0, z0], [x1, y1, z1], [x0, y1, z1]], np.float64)


def _draw_ground(img, sem, layout: Layout, cam: Camera) -> None:
    pal = layout.palette
    near, far = cam.z - 5.0, cam.z + 600.0
    ids = SEMANTIC_ID
    _world_poly(img, sem, cam, _strip(-800, 800, near, far), pal["grass"], ids["vegetation"])
    rl, rr, kerb = layout.road_left, layout.road_right, layout.kerb_width
    _world_poly(
        img,
        sem,
        cam,
        _strip(rl - kerb - layout.sidewalk_left, rl - kerb, near, far),
        pal["sidewalk"],
        ids["sidewalk"],
    )
    _world_poly(
        img,
        sem,
        cam,
        _strip(rr + kerb, rr + kerb + layout.sidewalk_right, near, far),
        pal["sidewalk"],
        ids["sidewalk"],
    )
    _world_poly(img, sem, cam, _strip(rl - kerb, rl, near, far), pal["kerb"], ids["kerb"])
    _world_poly(img, sem, cam, _strip(rr, rr + kerb, near, far), pal["kerb"], ids["kerb"])
    _world_poly(img, sem, cam, _strip(rl, rr, near, far), pal["road"], ids["road"])
    for x, z, w, le in layout.patches:
        _world_poly(img, sem, cam, _strip(x, x + w, z, z + le), pal["patch"], ids["road"])
    # lane markings: dashed lines are fixed in the world, so they move past the camera between frames
    quads = []
    for x, style in layout.lane_lines:
        hw = 0.07
        if style in ("solid", "double"):
            offs = (-0.12, 0.12) if style == "double" else (0.0,)
            for o in offs:
                quads.append(_strip(x + o - hw, x + o + hw, near, cam.z + 250))
        else:
            period, dash = 9.0, 3.0
            k0 = math.floor((near - layout.dash_phase) / period)
            for k in range(k0, k0 + int(140 / period) + 2):
                z0 = layout.dash_phase + k * period
                quads.append(_strip(x - hw, x + hw, z0, z0 + dash))
    if layout.crosswalk_z is not None:
        zc = layout.crosswalk_z
        for x in np.arange(rl + 0.3, rr - 0.3, 1.0):
            quads.append(_strip(x, x + 0.5, zc - 1.5, zc + 1.5))
    for q in quads:
        _world_poly(img, sem, cam, q, pal["marking"], ids["lane_marking"])


def _draw_background(img, sem, emis, layout: Layout, cam: Camera, rng: np.random.Generator) -> None:
    """Backdrop tree lines and buildings: beyond the sidewalks, so nothing on the street can be behind them."""
    veg, bld = SEMANTIC_ID["vegetation"], SEMANTIC_ID["building"]
    for xb, zs, hs in layout.backdrop:
        keep = zs > cam.z - 10
        z, hgt = zs[keep], hs[keep]
        poly = np.concatenate(
            [
                np.stack([np.full_like(z, xb), -hgt, z], -1),
                np.stack([np.full_like(z, xb), np.zeros_like(z), z], -1)[::-1],
            ]
        )
        _world_poly(img, sem, cam, poly, _col(layout.palette["backdrop"]), veg)
    sun_c = cam.dir_to_cam(np.array(layout.sun))
    night = layout.lighting == "night"
    for side in (-1, 1):
        blocks = [b for b in layout.buildings if b.side == side and b.z1 > cam.z - 2]
        blocks.sort(key=lambda b: -b.z0)  # far first
        for b in blocks:
            cls = bld if b.kind == "building" else veg
            x_out = b.x_face + side * b.depth
            corners = {
                "street": np.array(
                    [
                        [b.x_face, 0, b.z0],
                        [b.x_face, 0, b.z1],
                        [b.x_face, -b.height, b.z1],
                        [b.x_face, -b.height, b.z0],
                    ]
                ),
                "near": np.array(
                    [
                        [b.x_face, 0, b.z0],
                        [x_out, 0, b.z0],
                        [x_out, -b.height, b.z0],
                        [b.x_face, -b.height, b.z0],
                    ]
                ),
                "top": np.array(
                    [
                        [b.x_face, -b.height, b.z0],
                        [x_out, -b.height, b.z0],
                        [x_out, -b.height, b.z1],
                        [b.x_face, -b.height, b.z1],
                    ]
                ),
            }
            normals = {
                "street": np.array([-side, 0, 0.0]),
                "near": np.array([0, 0, -1.0]),
                "top": np.array([0, -1.0, 0]),
            }
            for face in ("near", "top", "street"):
                cc = cam.to_cam(corners[face].mean(0))
                if np.dot(cam.dir_to_cam(normals[face]), cc) >= 0:
                    continue
                shade = 0.6 + 0.45 * max(0.0, float(np.dot(cam.dir_to_cam(normals[face]), sun_c)))
                _world_poly(img, sem, cam, corners[face], _col(b.color, shade), cls, emis)
            if b.kind != "building":
                continue
            # windows on the street face, vectorised: (floors x bays) quads slightly in front of the wall
            floors = np.arange(1.0, b.height - 1.2, b.floor)
            bays = np.arange(b.z0 + 0.8, b.z1 - 1.4, b.bay)
            if floors.size == 0 or bays.size == 0:
                continue
            fy, bz = np.meshgrid(floors, bays, indexing="ij")
            fy, bz = fy.ravel(), bz.ravel()
            wh, ww = 0.5 * b.floor, 0.45 * b.bay
            xw = b.x_face - side * 0.02
            q = np.stack(
                [
                    np.stack([np.full_like(bz, xw), -fy, bz], -1),
                    np.stack([np.full_like(bz, xw), -fy, bz + ww], -1),
                    np.stack([np.full_like(bz, xw), -fy - wh, bz + ww], -1),
                    np.stack([np.full_like(bz, xw), -fy - wh, bz], -1),
                ],
                1,
            )
            qc = cam.to_cam(q)
            ok = (qc[..., 2] > Z_NEAR).all(1)
            if not ok.any():
                continue
            uv = cam.project(qc[ok])
            wrng = np.random.default_rng(b.style)
            lit = wrng.random(len(fy))[ok] < (0.35 if night else 0.12 if layout.lighting == "dusk" else 0.0)
            tone = wrng.integers(0, 3, len(fy))[ok]
            pts = _fx(uv)
            for k, factor in enumerate((0.75, 1.0, 1.3)):
                sel = pts[(tone == k) & ~lit]
                if len(sel):
                    cv2.fillPoly(img, list(sel), _col(b.window, factor), cv2.LINE_8, _SHIFT)
            if lit.any():
                cv2.fillPoly(img, list(pts[lit]), (235, 200, 120), cv2.LINE_8, _SHIFT)
                cv2.fillPoly(emis, list(pts[lit]), (200, 160, 90), cv2.LINE_8, _SHIFT)


def _light_map(layout: Layout, cam: Camera, lamps: list[tuple[float, float, float]]) -> np.ndarray:
    """Per-pixel RGB illumination: ambient, plus street-lamp pools and the ego headlights at dusk/night."""
    w, h = layout.size
    p = _LIGHT[layout.lighting]
    amb = np.array(p["ambient"], np.float32) * (
        layout.palette["ambient"] if layout.lighting == "day" else 1.0
    )
    if layout.weather != "clear" and layout.lighting == "day":
        amb = amb * 0.85
    if layout.lighting == "day":
        return np.broadcast_to(amb, (h, w, 3))
    # light pools fall off in three nested rings (one layer each, so overlapping pools do not stack up)
    layers = np.zeros((3, h, w), np.float32)
    strength = 1.0 if layout.lighting == "night" else 0.4
    phi = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    for x, z, _ in lamps:
        for i, r in enumerate((1.0, 0.65, 0.35)):
            circle = np.stack([x + 6.0 * r * np.cos(phi), np.zeros_like(phi), z + 8.0 * r * np.sin(phi)], -1)
            pc = _clip_near(cam.to_cam(circle))
            if pc is not None:
                cv2.fillPoly(layers[i], [_fx(cam.project(pc))], 0.2 * strength, cv2.LINE_8, _SHIFT)
    for i, r in enumerate((1.0, 0.7, 0.4)):
        beam = np.array(
            [
                [cam.x - 1.2 * r, 0, cam.z + 3],
                [cam.x + 1.2 * r, 0, cam.z + 3],
                [cam.x + 4.0 * r, 0, cam.z + 3 + 40 * r],
                [cam.x - 4.0 * r, 0, cam.z + 3 + 40 * r],
            ]
        )
        pc = _clip_near(cam.to_cam(beam))
        if pc is not None:
            tmp = np.zeros((h, w), np.float32)
            cv2.fillPoly(tmp, [_fx(cam.project(pc))], 0.25 * strength, cv2.LINE_8, _SHIFT)
            layers[i] = np.maximum(layers[i], tmp)
    k = int(max(3, w // 16)) | 1
    pool = cv2.GaussianBlur(layers.sum(0), (k, k), 0)
    warm = np.array([1.0, 0.88, 0.65], np.float32)
    return amb + pool[..., None] * warm


def _weather(layout: Layout, seed: int) -> A.Compose:
    """Image-only weather and sensor effects (albumentations 2.0 argument names), seeded per frame."""
    t: list = []
    if layout.weather == "rain":
        t.append(
            A.RandomRain(
                slant_range=(-8, 8),
                drop_width=1,
                blur_value=3,
                brightness_coefficient=0.85,
                rain_type=("drizzle", "drizzle", "heavy")[layout.seed % 3],
                p=1.0,
            )
        )
        t.append(A.Blur(blur_limit=(3, 3), p=0.4))
    t.append(A.MotionBlur(blur_limit=(3, 5), p=0.12))
    night = layout.lighting == "night"
    t.append(A.GaussNoise(std_range=(0.02, 0.05) if night else (0.005, 0.02), p=0.8 if night else 0.3))
    return A.Compose(t, seed=seed)


def render_frame(layout: Layout, t: int = 0, *, weather: bool = True) -> Frame:
    """Render frame ``t`` of a layout's sequence with its labels (deterministic in ``layout.seed`` and ``t``)."""
    width, height = layout.size
    rng = np.random.default_rng([layout.seed, t, 7])
    cam = layout.camera(t, jitter=float(np.clip(rng.normal(0, 0.5), -1.5, 1.5)) * height / 192)
    bad = [o.kind for o in layout.objects if o.kind in ANOMALY_KINDS]
    if bad and not layout.allow_anomalies:
        raise ValueError(f"layout {layout.seed}: anomaly objects {bad} in a layout without allow_anomalies")
    sky = _sky(layout, cam, rng)
    img = sky.astype(np.uint8)
    sem = np.full((height, width), SEMANTIC_ID["sky"], np.uint8)
    inst = np.zeros((height, width), np.uint16)
    emis = np.zeros((height, width, 3), np.uint8)
    _draw_ground(img, sem, layout, cam)
    ground_sem = sem.copy()
    _draw_background(img, sem, emis, layout, cam, rng)
    # contact shadows of vehicles and anomalies on the ground, before anything standing is drawn
    shadow = np.zeros((height, width), np.uint8)
    ctx = _Ctx(cam.dir_to_cam(np.array(layout.sun)), layout.lighting)
    items, n_behind, n_outside = [], 0, 0
    for spec in layout.objects:
        fr = _Local(cam, spec, t)
        if fr.o[2] < MIN_RENDER_DEPTH:
            n_behind += spec.kind not in STUFF_KINDS
            continue
        if _off_screen(fr, spec, cam):
            n_outside += spec.kind not in STUFF_KINDS
            continue
        items.append((float(fr.o[2]), spec, fr))
        if _casts_shadow(spec):
            _h, w, le = spec.dims
            q = fr.pts(
                [-le / 2 - 0.15, le / 2 + 0.15, le / 2 + 0.15, -le / 2 - 0.15],
                [-w / 2 - 0.1, -w / 2 - 0.1, w / 2 + 0.1, w / 2 + 0.1],
                [0, 0, 0, 0],
            )
            q = _clip_near(q)
            if q is not None:
                cv2.fillPoly(shadow, [_fx(cam.project(q))], 1, cv2.LINE_8, _SHIFT)
    sh = shadow.astype(bool)
    img[sh] = (img[sh].astype(np.float32) * 0.5).astype(np.uint8)
    items.sort(key=lambda it: -it[0])  # painter's order: far to near
    objects: list[LabeledObject] = []
    next_id = 1
    lamps = []
    for depth, spec, fr in items:
        if spec.kind == "streetlight":
            px, pz = spec.position(t)
            lamps.append((px + (-1.6 if spec.style % 2 else 1.6), pz, spec.dims[0]))
        patch = _rasterize(_item_prims(fr, spec, ctx, t), width, height)
        if patch is None:
            n_outside += spec.kind not in STUFF_KINDS
            continue
        ix0, iy0 = max(0, patch.x0), max(0, patch.y0)
        ix1, iy1 = min(width, patch.x0 + patch.mask.shape[1]), min(height, patch.y0 + patch.mask.shape[0])
        if ix1 <= ix0 or iy1 <= iy0:
            n_outside += spec.kind not in STUFF_KINDS
            continue
        sl = (slice(iy0 - patch.y0, iy1 - patch.y0), slice(ix0 - patch.x0, ix1 - patch.x0))
        m = patch.mask[sl]
        n_in = int(m.sum())
        if n_in == 0:
            n_outside += spec.kind not in STUFF_KINDS
            continue
        stuff = spec.kind in STUFF_KINDS
        anomaly = spec.kind in ANOMALY_KINDS
        region = (slice(iy0, iy1), slice(ix0, ix1))
        img[region][m] = patch.rgb[sl][m]
        sem[region][m] = (
            VOID if anomaly else (_STUFF_SEMANTIC[spec.kind] if stuff else _OBJECT_SEMANTIC[spec.kind])
        )
        inst[region][m] = 0 if stuff else next_id
        emis[region][m] = patch.emis[sl][m] if patch.emis is not None else 0
        if stuff:
            continue
        rows, cols = np.flatnonzero(patch.mask.any(1)), np.flatnonzero(patch.mask.any(0))
        full = (
            float(patch.x0 + cols[0]),
            float(patch.y0 + rows[0]),
            float(patch.x0 + cols[-1] + 1),
            float(patch.y0 + rows[-1] + 1),
        )
        box = (max(0.0, full[0]), max(0.0, full[1]), min(float(width), full[2]), min(float(height), full[3]))
        area_full = (full[2] - full[0]) * (full[3] - full[1])
        trunc = 1.0 - (box[2] - box[0]) * (box[3] - box[1]) / area_full
        x, y, z = (float(v) for v in fr.o)
        ry = _wrap(math.atan2(-fr.hd[2], fr.hd[0]))
        objects.append(
            LabeledObject(
                kind=spec.kind,
                instance_id=next_id,
                is_anomaly=anomaly,
                full_box=full,
                box=box,
                truncation=float(np.clip(trunc, 0.0, 1.0)),
                in_image_pixels=n_in,
                visible_pixels=0,
                dims=tuple(float(d) for d in spec.dims),
                location=(x, y, z),
                rotation_y=ry,
                alpha=_wrap(ry - math.atan2(x, z)),
                ground_point=tuple(float(v) for v in cam.project(fr.o)),
            )
        )
        next_id += 1
    # renumber: visible objects get 1..K in drawing order (= KITTI label line order), hidden ones 0
    counts = np.bincount(inst.ravel(), minlength=next_id)
    lut = np.zeros(next_id, np.uint16)
    k = 0
    for o in objects:
        o.visible_pixels = int(counts[o.instance_id])
        if o.visible_pixels:
            k += 1
            lut[o.instance_id] = k
        o.instance_id = int(lut[o.instance_id])
    inst = lut[inst]
    # lighting: albedo x illumination, sky kept as drawn, emitters added with a glow
    light = _light_map(layout, cam, lamps)
    out = img.astype(np.float32) * light
    is_sky = sem == SEMANTIC_ID["sky"]
    out[is_sky] = sky[is_sky]
    glow = _LIGHT[layout.lighting]["glow"]
    if glow > 0 and emis.any():
        e = emis.astype(np.float32)
        k = int(max(3, width // 60)) | 1
        out = (
            out
            + e * 0.8
            + cv2.GaussianBlur(e, (k, k), 0) * glow
            + cv2.GaussianBlur(e, (4 * k + 1, 4 * k + 1), 0) * glow * 0.8
        )
    out += rng.standard_normal((height, width), dtype=np.float32)[..., None] * 2.0
    image = np.clip(out, 0, 255).astype(np.uint8)
    if weather:
        wseed = int(rng.integers(2**31))
        if layout.weather == "fog":
            # RandomFog blends one full-image copy per fog particle (~30 ms at 640x192); it is smooth, so it
            # runs at half resolution and is scaled back up (its own final blur hides the resampling)
            small = cv2.resize(image, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
            fog = A.Compose([A.RandomFog(alpha_coef=0.08, fog_coef_range=(0.2, 0.45), p=1.0)], seed=wseed)
            image = cv2.resize(fog(image=small)["image"], (width, height), interpolation=cv2.INTER_LINEAR)
        image = _weather(layout, wseed + 1)(image=image)["image"]
    stats = {"behind_camera": n_behind, "outside_image": n_outside, "hidden": sum(o.hidden for o in objects)}
    return Frame(
        image, sem, inst, ground_sem, objects, cam.P2, layout.lighting, layout.weather, layout.seed, t, stats
    )


def render_scene(
    seed: int, size: tuple[int, int] = DEFAULT_SIZE, *, anomalies: int | bool = 0, **kw
) -> Frame:
    """One frame from a fresh layout: ``render_frame(sample_layout(seed, size, anomalies=..., **kw))``."""
    weather = kw.pop("apply_weather", True)
    return render_frame(sample_layout(seed, size, anomalies=anomalies, **kw), 0, weather=weather)


def colorize_semantic(semantic: np.ndarray) -> np.ndarray:
    """RGB visualisation of a semantic id map (void black)."""
    return np.asarray(semantic_palette(), np.uint8)[semantic]


# ------------------------------------------------------------------------------------------ data sets
def _imwrite(path: Path, array: np.ndarray) -> None:
    if not cv2.imwrite(str(path), array):
        raise OSError(f"{path}: cv2.imwrite failed (disk full or unwritable folder?)")


def _layout_seed(seed: int, stream: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, stream, index]).generate_state(1)[0])


def _prepare_root(root: Path, names: tuple[str, ...], settings: dict) -> None:
    """Make ``root`` ours: refuse a folder with foreign content, clear our own previous output."""
    if root.exists() and any(root.iterdir()):
        present = {p.name for p in root.iterdir()}
        ours = STAMP in present or MARKER in present
        foreign = sorted(present - set(names) - {STAMP, MARKER, "meta.json", "README.txt"})
        if not ours or foreign:
            raise FileExistsError(
                f"{root}: folder exists and was not (only) written by domains.driving.synthetic "
                f"(contains {sorted(present)[:6]}); refusing to overwrite it, choose another root"
            )
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).unlink(missing_ok=True)
    (root / STAMP).write_text(json.dumps(settings, sort_keys=True) + "\n")
    for name in names:
        p = root / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def _make_dirs(base: Path, names: tuple[str, ...]) -> dict[str, Path]:
    dirs = {k: base / k for k in names}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    return dirs


def _finish(root: Path, meta: dict, settings: dict) -> None:
    """``meta.json``, then the marker: written last, so only a finished set is ever reused."""
    (root / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    (root / MARKER).write_text(json.dumps(settings, sort_keys=True) + "\n")


def _ensure(caller: str, root: str | Path, kw: dict, allowed: set[str], settings, generate) -> Path:
    """Reuse the finished set at ``root`` when its marker holds these settings, else ``generate`` it."""
    root = Path(root)
    if set(kw) - allowed - {"verbose"}:
        raise TypeError(f"{caller}: unexpected arguments {sorted(set(kw) - allowed - {'verbose'})}")
    if _is_complete(root, settings(**{k: v for k, v in kw.items() if k in allowed})):
        return root
    return generate(root, **kw)


def _kitti_settings(n_images=1500, size=DEFAULT_SIZE, seed=0, frames_per_sequence=10, density=1.0) -> dict:
    return {
        "kind": "kitti",
        "n_images": int(n_images),
        "size": [int(size[0]), int(size[1])],
        "seed": int(seed),
        "frames_per_sequence": int(frames_per_sequence),
        "density": float(density),
    }


def generate_kitti(
    root: str | Path,
    n_images: int = 1500,
    size: tuple[int, int] = DEFAULT_SIZE,
    seed: int = 0,
    frames_per_sequence: int = 10,
    density: float = 1.0,
    verbose: bool = True,
) -> Path:
    """Write a synthetic KITTI object set; returns ``root`` (the split lives in ``root/training``).

    Layout: ``training/image_2/<id:06d>.png`` (RGB), ``training/label_2/<id>.txt`` (15 fields),
    ``training/calib/<id>.txt`` (KITTI P0..P3, R0_rect, Tr_*), ``training/semantic/<id>.png`` (uint8 ids,
    see ``SEMANTIC_CLASSES``), ``training/instance/<id>.png`` (uint16, 0 = none; instance ``k`` is the
    object of label line ``k`` counted from 1, DontCare lines included), ``sequences.txt`` (``<id> seqNNNN`` per line: the frames of a sequence share one street and
    move through it), ``meta.json`` (settings, counts, what was not labelled) and the ``.complete`` marker,
    written last.
    """
    if n_images < 1 or frames_per_sequence < 1:
        raise ValueError(
            f"generate_kitti: need n_images >= 1 and frames_per_sequence >= 1, got {n_images}, {frames_per_sequence}"
        )
    root = Path(root)
    settings = _kitti_settings(n_images, size, seed, frames_per_sequence, density)
    _prepare_root(root, ("training", "sequences.txt", "meta.json"), settings)
    dirs = _make_dirs(root / "training", ("image_2", "label_2", "calib", "semantic", "instance"))
    start = time.perf_counter()
    seq_lines, per_seq = [], []
    totals = {"objects": 0, "dontcare": 0, "hidden": 0, "behind_camera": 0, "outside_image": 0}
    per_class: dict[str, int] = {}
    layout = None
    for i in range(n_images):
        s, t = divmod(i, frames_per_sequence)
        if t == 0:
            n_frames = min(frames_per_sequence, n_images - i)
            layout = sample_layout(
                _layout_seed(seed, _KITTI_STREAM, s), size, n_frames=n_frames, density=density
            )
            per_seq.append(
                {
                    "sequence": f"seq{s:04d}",
                    "lighting": layout.lighting,
                    "weather": layout.weather,
                    "frames": n_frames,
                }
            )
        frame = render_frame(layout, t)
        name = f"{i:06d}"
        _imwrite(dirs["image_2"] / f"{name}.png", cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR))
        _imwrite(dirs["semantic"] / f"{name}.png", frame.semantic)
        _imwrite(dirs["instance"] / f"{name}.png", frame.instance)
        lines = frame.kitti_lines()
        (dirs["label_2"] / f"{name}.txt").write_text("".join(line + "\n" for line in lines))
        _write_calib(dirs["calib"] / f"{name}.txt", frame.calib)
        seq_lines.append(f"{name} seq{s:04d}")
        for line in lines:
            k = line.split(" ", 1)[0]
            per_class[k] = per_class.get(k, 0) + 1
        totals["objects"] += len(lines)
        totals["dontcare"] += sum(line.startswith(DONTCARE) for line in lines)
        for k in ("hidden", "behind_camera", "outside_image"):
            totals[k] += frame.stats[k]
    (root / "sequences.txt").write_text(
        "# image_id sequence_id (frames of a sequence share one street)\n" + "\n".join(seq_lines) + "\n"
    )
    elapsed = time.perf_counter() - start
    meta = {
        "generator": "domains.driving.synthetic.generate_kitti",
        "settings": settings,
        "seconds": round(elapsed, 1),
        "label_counts": per_class,
        "not_labelled": {
            "hidden": "objects drawn but fully covered by nearer ones",
            "counts": {k: totals[k] for k in ("hidden", "behind_camera", "outside_image")},
        },
        "dontcare_min_height_px": DONTCARE_MIN_HEIGHT,
        "occlusion_levels": "visible fraction of the in-image silhouette: >=0.9 -> 0, >=0.5 -> 1, >0 -> 2",
        "instance_ids": "instance/<id>.png value k (1-based) is the object of label line k (DontCare included)",
        "sequences": per_seq,
    }
    _finish(root, meta, settings)
    if verbose:
        print(
            f"synthetic KITTI: {n_images} images in {len(per_seq)} sequences at {root} ({elapsed:.1f} s); "
            f"labels {per_class}; not labelled: {meta['not_labelled']['counts']}"
        )
    return root


def _write_calib(path: Path, P2: np.ndarray) -> None:
    def row(m):
        return " ".join(f"{v:.12e}" for v in np.asarray(m, np.float64).ravel())

    eye = np.eye(3)
    velo = np.array(
        [[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0]], np.float64
    )  # x fwd, y left, z up (no offset)
    lines = [f"P{k}: {row(P2)}" for k in range(4)]
    lines += [f"R0_rect: {row(eye)}", f"Tr_velo_to_cam: {row(velo)}", f"Tr_imu_to_velo: {row(np.eye(3, 4))}"]
    path.write_text("\n".join(lines) + "\n")


def _is_complete(root: Path, settings: dict) -> bool:
    marker = root / MARKER
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()) == json.loads(json.dumps(settings, sort_keys=True))
    except (OSError, json.JSONDecodeError):
        return False


def ensure_synthetic_kitti(root: str | Path = DEFAULT_KITTI_ROOT, **kw) -> Path:
    """Generate the synthetic KITTI set on first use only (same settings as the marker: reuse); returns root."""
    allowed = {"n_images", "size", "seed", "frames_per_sequence", "density"}
    return _ensure("ensure_synthetic_kitti", root, kw, allowed, _kitti_settings, generate_kitti)


def _anomaly_settings(
    n_images=200, size=DEFAULT_SIZE, seed=0, anomaly_free_fraction=0.2, void_width=2, density=0.8
) -> dict:
    return {
        "kind": "anomaly",
        "n_images": int(n_images),
        "size": [int(size[0]), int(size[1])],
        "seed": int(seed),
        "anomaly_free_fraction": float(anomaly_free_fraction),
        "void_width": int(void_width),
        "density": float(density),
    }


MIN_ANOMALY_PIXELS = 25  # an anomaly frame is redrawn until this many anomaly pixels are visible


def generate_anomaly(
    root: str | Path,
    n_images: int = 200,
    size: tuple[int, int] = DEFAULT_SIZE,
    seed: int = 0,
    anomaly_free_fraction: float = 0.2,
    void_width: int = 2,
    density: float = 0.8,
    verbose: bool = True,
) -> Path:
    """Write a synthetic road-anomaly set in the SegmentMeIfYouCan layout; returns ``root``.

    ``images/<name>.png`` (RGB), ``labels_masks/<name>.png`` (0 normal, 1 anomaly, 255 void on a
    ``void_width``-px band outside each anomaly), ``semantic/<name>.png`` (in-distribution ids, anomalies
    255), ``meta.json`` (per image: anomaly kinds, lighting, weather) and the ``.complete`` marker, written
    last. Exactly ``round(n_images * anomaly_free_fraction)`` images have no anomaly. Scenes come from a
    seed stream disjoint from :func:`generate_kitti`'s.
    """
    if n_images < 1 or not 0.0 <= anomaly_free_fraction <= 1.0:
        raise ValueError(
            f"generate_anomaly: need n_images >= 1 and 0 <= anomaly_free_fraction <= 1, got "
            f"{n_images}, {anomaly_free_fraction}"
        )
    root = Path(root)
    settings = _anomaly_settings(n_images, size, seed, anomaly_free_fraction, void_width, density)
    _prepare_root(root, ("images", "labels_masks", "semantic", "meta.json"), settings)
    dirs = _make_dirs(root, ("images", "labels_masks", "semantic"))
    n_free = round(n_images * anomaly_free_fraction)
    free = set(np.random.default_rng([seed, _ANOMALY_STREAM]).permutation(n_images)[:n_free].tolist())
    start = time.perf_counter()
    per_image, kinds_total, redraws = [], {}, 0
    for i in range(n_images):
        with_anomaly = i not in free
        for attempt in range(20):
            layout = sample_layout(
                _layout_seed(seed, _ANOMALY_STREAM, i * 1000 + attempt),
                size,
                anomalies=with_anomaly,
                density=density,
            )
            frame = render_frame(layout, 0)
            if not with_anomaly or int(frame.anomaly.sum()) >= MIN_ANOMALY_PIXELS:
                break
            redraws += 1
        else:
            raise RuntimeError(
                f"generate_anomaly: image {i}: no visible anomaly after 20 layouts (size {size} too small?)"
            )
        name = f"synthetic_{i:05d}"
        _imwrite(dirs["images"] / f"{name}.png", cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR))
        _imwrite(dirs["labels_masks"] / f"{name}.png", frame.anomaly_mask(void_width))
        _imwrite(dirs["semantic"] / f"{name}.png", frame.semantic)
        kinds = [o.kind for o in frame.objects if o.is_anomaly and not o.hidden]
        for k in kinds:
            kinds_total[k] = kinds_total.get(k, 0) + 1
        per_image.append(
            {"name": name, "anomalies": kinds, "lighting": frame.lighting, "weather": frame.weather}
        )
    elapsed = time.perf_counter() - start
    meta = {
        "generator": "domains.driving.synthetic.generate_anomaly",
        "settings": settings,
        "seconds": round(elapsed, 1),
        "anomaly_free_images": n_free,
        "anomaly_counts": kinds_total,
        "redrawn_layouts": redraws,
        "labels": "0 normal, 1 anomaly, 255 void: a band of void_width px outside each anomaly's visible pixels",
        "images": per_image,
    }
    _finish(root, meta, settings)
    if verbose:
        print(
            f"synthetic road anomalies: {n_images} images ({n_free} anomaly-free) at {root} ({elapsed:.1f} s); "
            f"anomalies {kinds_total}"
        )
    return root


def ensure_synthetic_anomaly(root: str | Path = DEFAULT_ANOMALY_ROOT, **kw) -> Path:
    """Generate the synthetic anomaly set on first use only (same settings as the marker: reuse); returns root."""
    allowed = {"n_images", "size", "seed", "anomaly_free_fraction", "void_width", "density"}
    return _ensure("ensure_synthetic_anomaly", root, kw, allowed, _anomaly_settings, generate_anomaly)


def _preview(out: Path, seed: int, size: tuple[int, int]) -> list[Path]:
    """Write a few sample frames (image, boxes, semantic colours, anomaly mask) for a visual check."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    cases = [
        ("day", "clear", 0),
        ("dusk", "rain", 0),
        ("night", "clear", 0),
        ("day", "fog", 0),
        ("day", "clear", 2),
        ("night", "clear", 1),
    ]
    for k, (lighting, weather, anomalies) in enumerate(cases):
        frame = render_scene(seed + k, size, anomalies=anomalies, lighting=lighting, weather=weather)
        boxes = frame.image.copy()
        for o in frame.objects:
            if o.hidden:
                continue
            col = (255, 140, 0) if o.is_anomaly else (0, 255, 0) if not o.dontcare else (128, 128, 128)
            x0, y0, x1, y1 = (round(v) for v in o.box)
            cv2.rectangle(boxes, (x0, y0), (x1 - 1, y1 - 1), col, 1)
        rows = [frame.image, boxes, colorize_semantic(frame.semantic)]
        if anomalies:
            m = frame.anomaly_mask()
            vis = np.stack([m == 1, m == 255, np.zeros_like(m, bool)], -1).astype(np.uint8) * 255
            rows.append(vis)
        path = out / f"{k}_{lighting}_{weather}{'_anomaly' if anomalies else ''}.png"
        _imwrite(path, cv2.cvtColor(np.concatenate(rows, 0), cv2.COLOR_RGB2BGR))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """``python -m domains.driving.synthetic kitti|anomaly|preview --root ... --n-images ...``."""
    ap = argparse.ArgumentParser(
        prog="python -m domains.driving.synthetic", description=__doc__.splitlines()[0]
    )
    ap.add_argument("what", choices=("kitti", "anomaly", "preview"))
    ap.add_argument(
        "--root", default=None, help="output folder (default: data/driving/synthetic_{kitti,anomaly})"
    )
    ap.add_argument("--n-images", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--width", type=int, default=DEFAULT_SIZE[0])
    ap.add_argument("--height", type=int, default=DEFAULT_SIZE[1])
    ap.add_argument("--frames-per-sequence", type=int, default=10)
    ap.add_argument("--anomaly-free-fraction", type=float, default=0.2)
    ap.add_argument(
        "--force", action="store_true", help="regenerate even when a finished set with these settings exists"
    )
    args = ap.parse_args(argv)
    size = (args.width, args.height)
    if args.what == "preview":
        for p in _preview(Path(args.root or "/tmp/driving_samples"), args.seed, size):
            print(p)
        return 0
    if args.what == "kitti":
        kw = {"n_images": args.n_images or 1500, "frames_per_sequence": args.frames_per_sequence}
        root, generate, ensure = args.root or DEFAULT_KITTI_ROOT, generate_kitti, ensure_synthetic_kitti
    else:
        kw = {"n_images": args.n_images or 200, "anomaly_free_fraction": args.anomaly_free_fraction}
        root, generate, ensure = args.root or DEFAULT_ANOMALY_ROOT, generate_anomaly, ensure_synthetic_anomaly
    kw.update(size=size, seed=args.seed)
    path = generate(root, **kw) if args.force else ensure(root, **kw)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
