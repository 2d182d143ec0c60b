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
lying on the road. Its ``labels_masks`` hold 0 normal and 1 anomaly (each anomaly's visible silhouette), and 255
void on a band ``void_width`` px wide *outside* each anomaly when asked (0 by default). Blur and weather mix the
colours of the edge pixels, but a void band all round an anomaly cuts SegmentMeIfYouCan's predicted components at
its edge (void pixels are removed before components are labelled, as the benchmark's code does): a constant score
map scored sIoU 1.0 and mean F1 0.70 on the banded labels, 0.0 without. The edge pixels it hid now count as
normal: the shipped anomaly model's test pixel AP went from 0.653 to 0.618 (mean F1 0.366 to 0.401).

Package layout (each module's docstring says more): :mod:`.camera` (pinhole camera, clipping, fixed-point
pixels), :mod:`.scene` (``ObjectSpec``, ``Building``, ``Layout`` and the scene vocabulary), :mod:`.layout`
(``sample_layout`` and its per-stage samplers), :mod:`.primitives` and :mod:`.anomalies` (items as 2D
primitives), :mod:`.raster` (primitives to pixels), :mod:`.render` (``render_frame``: sky, ground, items,
lighting, weather), :mod:`.labels` (``LabeledObject``, ``Frame``, KITTI lines), :mod:`.writers` (the data
sets on disk), :mod:`.clips` (accident-anticipation scenario clips: crashes, near misses, ordinary driving,
with continuous-time contact) and :mod:`.cli` (``python -m domains.driving.synthetic``).
"""

from __future__ import annotations

from domains.driving.synthetic.camera import (
    CAMERA_HEIGHT,
    FOCAL_PER_WIDTH,
    HORIZON_PER_HEIGHT,
    Z_NEAR,
    Camera,
)
from domains.driving.synthetic.cli import main
from domains.driving.synthetic.clips import DEFAULT_ACCIDENT_ROOT, ensure_synthetic_clips, generate_clips
from domains.driving.synthetic.labels import DONTCARE_MIN_HEIGHT, Frame, LabeledObject
from domains.driving.synthetic.layout import sample_layout
from domains.driving.synthetic.render import MIN_RENDER_DEPTH, colorize_semantic, render_frame, render_scene
from domains.driving.synthetic.scene import (
    DEFAULT_SIZE,
    LIGHTINGS,
    TRAINING_KINDS,
    VEHICLES,
    WEATHERS,
    Building,
    Color,
    Layout,
    ObjectSpec,
)
from domains.driving.synthetic.writers import (
    DEFAULT_ANOMALY_ROOT,
    DEFAULT_KITTI_ROOT,
    MARKER,
    MIN_ANOMALY_PIXELS,
    STAMP,
    ensure_synthetic_anomaly,
    ensure_synthetic_kitti,
    generate_anomaly,
    generate_kitti,
)

__all__ = [
    "CAMERA_HEIGHT",
    "DEFAULT_ACCIDENT_ROOT",
    "DEFAULT_ANOMALY_ROOT",
    "DEFAULT_KITTI_ROOT",
    "DEFAULT_SIZE",
    "DONTCARE_MIN_HEIGHT",
    "FOCAL_PER_WIDTH",
    "HORIZON_PER_HEIGHT",
    "LIGHTINGS",
    "MARKER",
    "MIN_ANOMALY_PIXELS",
    "MIN_RENDER_DEPTH",
    "STAMP",
    "TRAINING_KINDS",
    "VEHICLES",
    "WEATHERS",
    "Z_NEAR",
    "Building",
    "Camera",
    "Color",
    "Frame",
    "LabeledObject",
    "Layout",
    "ObjectSpec",
    "colorize_semantic",
    "ensure_synthetic_anomaly",
    "ensure_synthetic_clips",
    "ensure_synthetic_kitti",
    "generate_anomaly",
    "generate_clips",
    "generate_kitti",
    "main",
    "render_frame",
    "render_scene",
    "sample_layout",
]
