"""What a synthetic street scene is: the layout data classes and the scene vocabulary, with no drawing.

:class:`ObjectSpec` (a labelled object, stuff item or anomaly on the ground plane), :class:`Building` and
:class:`Layout` (everything fixed over one sequence) describe a scene; :func:`~.layout.sample_layout` draws
one at random and :func:`~.render.render_frame` draws its frames. The lighting, weather and object-kind
vocabularies and the colour helper live here because the sampler, the primitive builders and the renderer
all need them, and a module of plain data keeps those imports free of cycles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from domains.driving.classes import ANOMALY_KINDS, GENERATED_TYPES, STUFF_KINDS
from domains.driving.synthetic.camera import Camera

DEFAULT_SIZE = (640, 192)  # (width, height): KITTI's 1242x375 halved, rounded to a multiple of 32
LIGHTINGS = ("day", "dusk", "night")
WEATHERS = ("clear", "rain", "fog")
VEHICLES = ("Car", "Van", "Truck")
# Everything the training generator may draw; the anomaly kinds are disjoint from it (checked by the renderer).
TRAINING_KINDS = tuple(GENERATED_TYPES) + tuple(STUFF_KINDS)
assert not set(ANOMALY_KINDS) & set(TRAINING_KINDS)

Color = tuple[int, int, int]


def _col(c, k: float = 1.0) -> Color:
    return tuple(int(min(255, max(0, round(v * k)))) for v in c)


@dataclass
class ObjectSpec:
    """One drawable on the ground plane: a labelled object, a stuff item or an anomaly.

    ``x``/``z`` place the bottom centre in world metres at frame 0; ``heading`` is the world yaw (0 = along +z,
    away from the camera, pi = oncoming); ``dims`` are KITTI's (height, width, length) in metres; ``speed`` is
    in metres per frame along the heading; ``style`` selects colours and variants deterministically.
    ``trajectory`` (optional, used only when set: the scenario clips of :mod:`.clips`) holds one
    ``(x, z, heading)`` row per frame and replaces the constant-velocity motion, so actors can brake,
    accelerate and change lanes.
    """

    kind: str
    x: float
    z: float
    heading: float = 0.0
    dims: tuple[float, float, float] = (1.53, 1.63, 3.88)
    speed: float = 0.0
    color: Color = (150, 150, 150)
    style: int = 0
    trajectory: np.ndarray | None = field(default=None, repr=False, compare=False)

    def _index(self, t: float) -> int:
        return min(max(int(np.rint(t)), 0), len(self.trajectory) - 1)

    def _row(self, t: float) -> np.ndarray:
        return self.trajectory[self._index(t)]

    def position(self, t: float) -> tuple[float, float]:
        if self.trajectory is not None:
            row = self._row(t)
            return float(row[0]), float(row[1])
        d = self.speed * t
        return self.x + d * math.sin(self.heading), self.z + d * math.cos(self.heading)

    def heading_at(self, t: float) -> float:
        return self.heading if self.trajectory is None else float(self._row(t)[2])

    def moving(self, t: float) -> bool:
        """Whether the item moves at frame ``t`` (walking legs and pedalling are animated only then)."""
        if self.trajectory is None:
            return self.speed > 0
        i = self._index(t)
        j = i + 1 if i + 1 < len(self.trajectory) else i - 1
        return j >= 0 and bool(np.hypot(*(self.trajectory[j, :2] - self.trajectory[i, :2])) > 1e-3)


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
    # optional per-frame ego travel (m), used only when set (scenario clips): the camera then follows the
    # ego's speed profile instead of moving ``ego_speed`` metres per frame
    ego_z: np.ndarray | None = field(default=None, repr=False, compare=False)

    def camera(self, t: int = 0, jitter: float = 0.0) -> Camera:
        w, h = self.size
        z = self.ego_speed * t if self.ego_z is None else float(self.ego_z[int(t)])
        return Camera(w, h, self.focal, self.cx, self.cy + jitter, self.cam_x, z, self.yaw)
