"""Sampling a random street layout: ``sample_layout`` runs one small sampler per stage, in a fixed order.

The stages are: the street's cross-section and the ego camera (:func:`_sample_street`), lighting and weather
(:func:`_sample_conditions`), buildings, hedges and the backdrop (:func:`_sample_buildings`), then the objects
(moving traffic, parked cars, pedestrians on the sidewalks, a crosswalk and crossing pedestrians, cyclists,
trees / street lamps / signs, and in the anomaly set the anomalies), and last the colours, road patches and the
sun. All stages draw from one ``numpy`` generator seeded by the layout seed, so the stage order *is* part of
the output: a stage may be rewritten only if it makes the same draws in the same order (the byte-level test
``tests/driving/test_synthetic_bytes.py`` checks this). Objects are placed through :class:`_Placer`, which
drops any whose footprint would overlap another's (or the ego car's) at the first, middle or last frame of
the sequence.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from domains.driving.classes import ANOMALY_KINDS, OBJECT_DIMENSIONS
from domains.driving.synthetic.anomalies import _anomaly_spec
from domains.driving.synthetic.camera import FOCAL_PER_WIDTH, HORIZON_PER_HEIGHT
from domains.driving.synthetic.scene import (
    DEFAULT_SIZE,
    LIGHTINGS,
    VEHICLES,
    WEATHERS,
    Building,
    Layout,
    ObjectSpec,
    _col,
)

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
    if abs(math.sin(o.heading_at(t))) > 0.5:
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


_TRAFFIC_Z = (-15.0, 95.0)  # m: moving and parked vehicles are placed over this span (plus the ego's travel)


@dataclass
class _Street:
    """The road's cross-section and the ego camera of one sequence: drawn first, read by every later stage."""

    focal: float
    cx: float
    cy: float
    lane_w: float
    n_right: int  # lanes driving away from the camera (right of the road axis)
    n_left: int  # oncoming lanes
    park_right: float  # width of the parking strip along each kerb (0: none)
    park_left: float
    road_left: float
    road_right: float
    lane_lines: list[tuple[float, str]]
    ego_lane: int
    cam_x: float
    yaw: float
    ego_speed: float
    kerb: float
    sw_left: float
    sw_right: float
    z_end: float  # m: how far the ego camera moves over the sequence


@dataclass
class _Placer:
    """The objects placed so far; ``add`` keeps a new one only if it collides with none of them (nor the ego)."""

    ego: ObjectSpec
    n_frames: int
    objects: list[ObjectSpec] = field(default_factory=list)

    def add(self, o: ObjectSpec, margin: float = 0.4) -> bool:
        if _collides(o, [self.ego, *self.objects], self.n_frames, margin):
            return False
        self.objects.append(o)
        return True


# ------------------------------------------------------------------------ street, conditions and buildings
def _lane_lines(
    rng: np.random.Generator, lane_w: float, n_right: int, n_left: int, park_right: float, park_left: float
) -> list[tuple[float, str]]:
    """Lane dividers (dashed), the centre line (solid, double or dashed) and the parking strips' edges."""
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
    return lines


def _sample_street(rng: np.random.Generator, width: int, height: int, n_frames: int) -> _Street:
    """Principal point, lanes, parking strips, kerbs and sidewalks, and the ego car's lane, yaw and speed."""
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
    lines = _lane_lines(rng, lane_w, n_right, n_left, park_right, park_left)
    ego_lane = int(rng.integers(n_right))
    cam_x = (ego_lane + 0.5) * lane_w + rng.uniform(-0.3, 0.3)
    yaw = float(np.clip(rng.normal(0, 0.02), -0.05, 0.05))
    ego_speed = 0.0 if rng.random() < 0.1 else float(rng.uniform(0.4, 1.6))
    kerb = float(rng.uniform(0.15, 0.3))
    sw_left, sw_right = float(rng.uniform(1.5, 5.0)), float(rng.uniform(1.5, 5.0))
    z_end = ego_speed * (n_frames - 1)
    return _Street(
        f,
        cx,
        cy,
        lane_w,
        n_right,
        n_left,
        park_right,
        park_left,
        road_left,
        road_right,
        lines,
        ego_lane,
        cam_x,
        yaw,
        ego_speed,
        kerb,
        sw_left,
        sw_right,
        z_end,
    )


def _sample_conditions(
    rng: np.random.Generator, lighting: str | None, weather: str | None
) -> tuple[str, str]:
    """Lighting and weather: always drawn, then overridden, so forcing either keeps the rest of the scene."""
    drawn_lighting = str(rng.choice(LIGHTINGS, p=[0.6, 0.2, 0.2]))
    drawn_weather = str(rng.choice(WEATHERS, p=[0.66, 0.17, 0.17]))
    return lighting or drawn_lighting, weather or drawn_weather


def _sample_side(
    rng: np.random.Generator, st: _Street, side: int, urban: bool, buildings: list[Building]
) -> tuple[float, np.ndarray, np.ndarray]:
    """One side of the street: blocks of buildings or hedges with gaps (appended), then its backdrop line."""
    face = (st.road_left - st.kerb - st.sw_left) if side < 0 else (st.road_right + st.kerb + st.sw_right)
    built = urban or rng.random() < 0.3
    z = -40.0 + rng.uniform(0, 10)
    max_depth = 0.0
    while z < 220 + st.z_end:
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
    return (float(xb), zs, smooth + rng.uniform(0, 2.5, zs.size))


def _sample_buildings(rng: np.random.Generator, st: _Street) -> tuple[list[Building], list]:
    """Buildings (urban) or mostly hedges and gaps (rural) on both sides, and a tree-line backdrop behind each."""
    urban = rng.random() < 0.75
    buildings: list[Building] = []
    backdrop = [_sample_side(rng, st, side, urban, buildings) for side in (-1, 1)]
    return buildings, backdrop


# ------------------------------------------------------------------------------------------- object stages
def _sample_traffic(rng: np.random.Generator, st: _Street, place: _Placer, density: float) -> None:
    """Moving vehicles: right lanes drive away (heading 0), left lanes come towards the camera (heading pi)."""
    z_lo, z_hi = _TRAFFIC_Z[0], _TRAFFIC_Z[1] + st.z_end
    lanes = [((k + 0.5) * st.lane_w, 0.0) for k in range(st.n_right)] + [
        (-(k + 0.5) * st.lane_w, math.pi) for k in range(st.n_left)
    ]
    for k, (x_lane, heading) in enumerate(lanes):
        same = heading == 0.0
        own_lane = same and k == st.ego_lane
        speed = st.ego_speed if own_lane else max(0.0, rng.normal(st.ego_speed if same else 1.0, 0.3))
        z = z_lo + rng.uniform(0, 12)
        while z < z_hi:
            kind = str(rng.choice(VEHICLES, p=[0.74, 0.14, 0.12]))
            dims = _dims(rng, kind)
            zc = z + dims[2] / 2
            if rng.random() < min(0.95, 0.45 * density) and not (own_lane and zc < 7 + dims[2] / 2):
                paint = _pick(rng, _CAR_PAINTS) if kind != "Truck" else _col(rng.uniform(60, 240, 3))
                place.add(
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


def _sample_parked(rng: np.random.Generator, st: _Street, place: _Placer, density: float) -> None:
    """Parked cars and vans along the kerbs that have a parking strip."""
    z_lo, z_hi = _TRAFFIC_Z[0], _TRAFFIC_Z[1] + st.z_end
    for x_park, on in ((st.road_right - 1.15, st.park_right), (st.road_left + 1.15, st.park_left)):
        if not on:
            continue
        z = z_lo + rng.uniform(0, 5)
        while z < z_hi:
            kind = str(rng.choice(["Car", "Van"], p=[0.85, 0.15]))
            dims = _dims(rng, kind)
            if rng.random() < 0.7 * min(density, 1.3):
                heading = (0.0 if rng.random() < 0.7 else math.pi) + rng.normal(0, 0.03)
                place.add(
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


def _sample_pedestrians(rng: np.random.Generator, st: _Street, place: _Placer, density: float) -> None:
    """Pedestrians on both sidewalks, walking along the street or standing, some in groups of two or three."""
    for _side, lo, hi in (
        (1, st.road_right + st.kerb + 0.4, st.road_right + st.kerb + st.sw_right - 0.3),
        (-1, st.road_left - st.kerb - st.sw_left + 0.3, st.road_left - st.kerb - 0.4),
    ):
        for _ in range(int(rng.poisson(1.6 * density))):
            x, z = rng.uniform(lo, hi), rng.uniform(-5, 70 + st.z_end)
            walking = rng.random() < 0.7
            heading = (
                float(rng.choice([0.0, math.pi])) + rng.normal(0, 0.1) if walking else rng.uniform(-3.1, 3.1)
            )
            group = 1 + int(rng.random() < 0.3) * int(rng.integers(1, 3))
            for g in range(group):
                place.add(
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


def _sample_crossing(rng: np.random.Generator, st: _Street, place: _Placer, density: float) -> float | None:
    """Sometimes a crosswalk (two extra pedestrians on it), and a few pedestrians crossing the road; its z."""
    crosswalk = None
    if rng.random() < 0.25:
        crosswalk = float(rng.uniform(12, 45) + st.z_end)
    for _ in range(int(rng.poisson(0.6 * density)) + (2 if crosswalk else 0)):
        z = crosswalk + rng.uniform(-1, 1) if crosswalk else rng.uniform(8, 50)
        heading = math.pi / 2 * rng.choice([-1, 1])
        place.add(
            ObjectSpec(
                "Pedestrian",
                float(rng.uniform(st.road_left, st.road_right)),
                float(z),
                float(heading),
                _dims(rng, "Pedestrian"),
                float(rng.uniform(0.0, 0.15)),
                (0, 0, 0),
                int(rng.integers(2**31)),
            )
        )
    return crosswalk


def _sample_cyclists(rng: np.random.Generator, st: _Street, place: _Placer, density: float) -> None:
    """Cyclists near the right edge of the driving lanes, sometimes oncoming on the left."""
    for _ in range(int(rng.poisson(0.9 * density))):
        oncoming = st.n_left > 0 and rng.random() < 0.3
        x = (-(st.n_left * st.lane_w) + 0.8) if oncoming else (st.n_right * st.lane_w - 0.8)
        place.add(
            ObjectSpec(
                "Cyclist",
                float(x + rng.uniform(-0.3, 0.3)),
                float(rng.uniform(4, 60 + st.z_end)),
                (math.pi if oncoming else 0.0) + rng.normal(0, 0.04),
                _dims(rng, "Cyclist"),
                float(rng.uniform(0.35, 0.7)),
                _col(rng.uniform(20, 230, 3)),
                int(rng.integers(2**31)),
            )
        )


def _row_along_sidewalk(
    rng: np.random.Generator,
    chance: float,
    start: float,
    spread: float,
    gap: tuple[float, float],
    end: float,
    jitter: bool,
) -> Iterator[float]:
    """The z of each item of a row of roadside things on one sidewalk, drawn with probability ``chance``: the
    first at ``start`` + up to ``spread`` m, then one every ``gap`` m (drawn once per row; ``jitter``: each
    step varies by +-20 %) until ``end``."""
    if rng.random() >= chance:
        return
    z = start + rng.uniform(0, spread)
    step = rng.uniform(*gap)
    while z < end:
        yield z
        z += step * rng.uniform(0.8, 1.2) if jitter else step


def _sample_trees(
    rng: np.random.Generator, place: _Placer, side: int, edge: float, sw: float, z_end: float
) -> None:
    """A row of trees on one sidewalk (60 % of sidewalks), evenly spaced with some jitter."""
    for z in _row_along_sidewalk(rng, 0.6, -20, 8, (7, 16), 150 + z_end, jitter=True):
        dims = (rng.uniform(5, 9), rng.uniform(2.5, 4.5), 0.4)
        color = _col((55, 100, 40), rng.uniform(0.7, 1.2))
        style = int(rng.integers(2**31))
        tree = ObjectSpec("tree", edge + side * min(0.9, sw / 2), z, dims=dims, color=color, style=style)
        place.add(tree, margin=0.0)


def _sample_streetlights(
    rng: np.random.Generator, place: _Placer, side: int, edge: float, z_end: float
) -> None:
    """A row of street lamps on one sidewalk (70 % of sidewalks); the style's low bit is the side."""
    for z in _row_along_sidewalk(rng, 0.7, -25, 10, (22, 35), 170 + z_end, jitter=False):
        dims = (rng.uniform(6.5, 8.5), 0.2, 0.2)
        style = int(rng.integers(2**31)) * 2 + (1 if side > 0 else 0)
        lamp = ObjectSpec("streetlight", edge + side * 0.4, z, dims=dims, color=(110, 110, 115), style=style)
        place.add(lamp, margin=0.0)


def _sample_signs(rng: np.random.Generator, place: _Placer, side: int, edge: float) -> None:
    """Zero to two traffic signs on one sidewalk."""
    for _ in range(int(rng.integers(0, 3))):
        place.add(
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


def _sample_stuff(rng: np.random.Generator, st: _Street, place: _Placer) -> None:
    """Stuff on the sidewalks, left then right: trees, street lamps and signs."""
    for side in (-1, 1):
        edge = (st.road_right + st.kerb) if side > 0 else (st.road_left - st.kerb)
        sw = st.sw_right if side > 0 else st.sw_left
        _sample_trees(rng, place, side, edge, sw, st.z_end)
        _sample_streetlights(rng, place, side, edge, st.z_end)
        _sample_signs(rng, place, side, edge)


def _sample_anomalies(rng: np.random.Generator, st: _Street, place: _Placer, anomalies: int | bool) -> None:
    """``anomalies`` objects (True: 1-3) on the road, 6-60 m ahead (log-uniform), with up to 60 tries each."""
    n_anom = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1])) if anomalies is True else int(anomalies)
    placed = 0
    for _ in range(60 * n_anom):
        if placed == n_anom:
            break
        kind = str(rng.choice(ANOMALY_KINDS))
        z = float(np.exp(rng.uniform(np.log(6.0), np.log(60.0))))
        x = float(rng.uniform(st.road_left + 0.6, st.road_right - 0.6))
        if abs(x - st.cam_x) < 1.5 and rng.random() < 0.5:  # favour the ego lane a bit less than uniform
            x = float(rng.uniform(st.road_left + 0.6, st.road_right - 0.6))
        placed += place.add(_anomaly_spec(rng, kind, x, z), margin=0.3)


# ------------------------------------------------------------------------------------------- finish stages
def _sample_palette(rng: np.random.Generator, weather: str) -> dict:
    """Ground and backdrop colours (the road darker when wet), cloud cover and the ambient light level."""
    road_tone = rng.uniform(70, 110) * (0.75 if weather == "rain" else 1.0)
    return {
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


def _sample_patches(rng: np.random.Generator, st: _Street) -> list[tuple[float, float, float, float]]:
    """Up to four repaired patches of asphalt, (x, z, width, length) in metres."""
    return [
        (
            float(rng.uniform(st.road_left, st.road_right - 2)),
            float(rng.uniform(0, 150)),
            float(rng.uniform(1, 4)),
            float(rng.uniform(2, 12)),
        )
        for _ in range(int(rng.integers(0, 5)))
    ]


def _sample_sun(rng: np.random.Generator) -> tuple[float, float, float]:
    """Unit direction of the sunlight (world coordinates, pointing down: y < 0 is up)."""
    sun = np.array([rng.uniform(-0.8, 0.8), -rng.uniform(0.4, 1.0), rng.uniform(-0.8, 0.8)])
    return tuple(sun / np.linalg.norm(sun))


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
    # the stages share one generator: their order is part of the output (see the module docstring)
    st = _sample_street(rng, width, height, n_frames)
    lighting, weather = _sample_conditions(rng, lighting, weather)
    buildings, backdrop = _sample_buildings(rng, st)
    place = _Placer(ObjectSpec("Car", st.cam_x, -1.2, 0.0, (1.5, 1.8, 4.8), st.ego_speed), n_frames)
    _sample_traffic(rng, st, place, density)
    _sample_parked(rng, st, place, density)
    _sample_pedestrians(rng, st, place, density)
    crosswalk = _sample_crossing(rng, st, place, density)
    _sample_cyclists(rng, st, place, density)
    _sample_stuff(rng, st, place)
    if anomalies:
        _sample_anomalies(rng, st, place, anomalies)
    palette = _sample_palette(rng, weather)
    patches = _sample_patches(rng, st)
    sun = _sample_sun(rng)
    dash_phase = float(rng.uniform(0, 12))  # drawn last
    return Layout(
        size=(width, height),
        focal=st.focal,
        cx=st.cx,
        cy=st.cy,
        cam_x=st.cam_x,
        yaw=st.yaw,
        ego_speed=st.ego_speed,
        road_left=st.road_left,
        road_right=st.road_right,
        kerb_width=st.kerb,
        sidewalk_left=st.sw_left,
        sidewalk_right=st.sw_right,
        lane_lines=st.lane_lines,
        dash_phase=dash_phase,
        buildings=buildings,
        backdrop=backdrop,
        objects=place.objects,
        lighting=lighting,
        weather=weather,
        palette=palette,
        sun=sun,
        crosswalk_z=crosswalk,
        patches=patches,
        seed=int(seed),
        n_frames=n_frames,
        allow_anomalies=bool(anomalies),
    )
