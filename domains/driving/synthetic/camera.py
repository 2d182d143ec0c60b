"""The pinhole camera of the synthetic road scenes and the low-level geometry every drawing step shares.

World: x to the right of the road axis, y down (ground plane y = 0), z along the road. The camera sits
``CAMERA_HEIGHT`` (KITTI's 1.65 m) above the ground with a small yaw and no roll or pitch; its focal length is
KITTI's relative to the image width. Besides :class:`Camera` this holds the near-plane polygon clip, angle
wrapping and the conversion to OpenCV's fixed-point pixel coordinates, kept apart from the scene and the
renderer because both the layout sampler and every drawing module need them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

CAMERA_HEIGHT = 1.65  # m, KITTI
FOCAL_PER_WIDTH = 721.5377 / 1242.0  # KITTI P2 focal length over image width
HORIZON_PER_HEIGHT = 172.854 / 375.0  # KITTI P2 principal point row over image height
Z_NEAR = 0.5  # m: near clipping plane for polygons
_SHIFT = 3  # OpenCV fixed-point drawing: coordinates carry 3 fractional bits
_ONE = 1 << _SHIFT


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
