"""Tiny driving data sets written in tmp_path (and the painted scenes behind some), shared by the driving tests."""

from __future__ import annotations

import sys
import types

import cv2
import numpy as np

from tests.helpers import write_image

W, H = 64, 48


def painted_scene(rng: np.random.Generator, height: int, width: int):
    """Grey road image with 1-3 objects: wide blue 'cars', tall red 'pedestrians'; (image, [(name, box)]) with
    integer xyxy boxes (the detection and instance tests' scenes)."""
    image = np.full((height, width, 3), 110, np.uint8) + rng.integers(
        0, 20, (height, width, 3), dtype=np.uint8
    )
    objects = []
    for _ in range(int(rng.integers(1, 4))):
        if rng.random() < 0.6:
            name, w, h, color = "Car", int(rng.integers(24, 40)), int(rng.integers(14, 22)), (40, 60, 220)
        else:
            name, w, h, color = (
                "Pedestrian",
                int(rng.integers(8, 12)),
                int(rng.integers(22, 34)),
                (220, 40, 40),
            )
        x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        image[y : y + h, x : x + w] = color
        objects.append((name, (x, y, x + w, y + h)))
    return image, objects


#: a tiny Mask R-CNN (``RoadInstanceSegmenter`` arguments) for 128x64 painted scenes
TINY_MASK_RCNN = {
    "backbone": "tiny_cnn",
    "backbone_kwargs": {"width": 8},
    "input_size": (64, 128),
    "fpn_levels": 3,
    "fpn_channels": 16,
    "anchor_scale": 4.0,
    "proposals_train": 64,
    "proposals_test": 32,
    "rois_per_image": 32,
    "box_head_dim": 32,
    "mask_head_channels": 8,
    "mask_head_convs": 1,
}
KITTI_LINE = "{} 0.00 0 -10 {:.2f} {:.2f} {:.2f} {:.2f} 1.5 1.6 3.9 1.0 1.7 20.0 -1.5"


def write_instance_kitti(root, n=8, seed=0, size=(64, 128), dontcare=True, sequences=False):
    """``training/{image_2,label_2,instance}`` of painted ``size`` (height, width) scenes: object k painted with
    id k (later ones on top); ``dontcare``: a last DontCare line whose 6x6 corner is painted with its id;
    ``sequences``: two frames per sequence in ``sequences.txt`` (so the default split has val and test frames)."""
    rng = np.random.default_rng(seed)
    for sub in ("image_2", "label_2", "instance"):
        (root / "training" / sub).mkdir(parents=True, exist_ok=True)
    groups = []
    for i in range(n):
        image, objects = painted_scene(rng, *size)
        if dontcare:
            objects.append(("DontCare", (0, 0, 6, 6)))
        ids = np.zeros(size, np.uint16)
        for k, (_, (x1, y1, x2, y2)) in enumerate(objects, start=1):
            ids[y1:y2, x1:x2] = k
        cv2.imwrite(str(root / f"training/image_2/{i:06d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / f"training/instance/{i:06d}.png"), ids)
        lines = [KITTI_LINE.format(name, *box) for name, box in objects]
        (root / f"training/label_2/{i:06d}.txt").write_text("\n".join(lines) + "\n")
        groups.append(f"{i:06d} seq{i // 2:04d}")
    if sequences:
        (root / "sequences.txt").write_text("\n".join(groups) + "\n")
    return root


def write_kitti(root, n=8, semantic=True):
    """n images, two per sequence, with a sequence map, KITTI labels and semantic maps."""
    split = root / "training"
    lines = []
    for i in range(n):
        stem = f"{i:06d}"
        write_image(split / "image_2" / f"{stem}.png", seed=i)
        (split / "label_2").mkdir(parents=True, exist_ok=True)
        (split / "label_2" / f"{stem}.txt").write_text(
            "Car 0.00 0 -1.57 10.00 5.00 40.00 30.00 1.50 1.60 3.90 1.00 1.70 20.00 -1.50\n"
            "Van 0.00 0 -1.57 2.00 2.00 9.00 9.00 1.50 1.60 3.90 1.00 1.70 20.00 -1.50\n"
            "DontCare -1 -1 -10 45.00 30.00 60.00 44.00 -1 -1 -1 -1000 -1000 -1000 -10\n"
        )
        if semantic:
            (split / "semantic").mkdir(parents=True, exist_ok=True)
            mask = np.full((H, W), i % 3, np.uint8)
            mask[:4] = 255
            cv2.imwrite(str(split / "semantic" / f"{stem}.png"), mask)
        lines.append(f"{stem} seq{i // 2}")
    (split / "sequence_map.txt").write_text("\n".join(lines) + "\n")
    return root


def write_smiyc(root, n=3, size=(H, W)):
    for i in range(n):
        write_image(root / "images" / f"frame{i}.jpg", width=size[1], height=size[0], seed=i)
        label = np.zeros(size, np.uint8)
        label[10:20, 10:30] = 1
        label[:3] = 255
        (root / "labels_masks").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "labels_masks" / f"frame{i}.png"), label)
    return root


def fake_synthetic(monkeypatch, kitti=None, anomaly=None) -> None:
    """Stand in for :mod:`domains.driving.synthetic`, whose ``ensure_*`` functions the data modules import
    lazily when no data path is given: they then return these folders."""
    fake = types.ModuleType("domains.driving.synthetic")
    fake.ensure_synthetic_kitti = lambda: kitti
    fake.ensure_synthetic_anomaly = lambda: anomaly
    monkeypatch.setitem(sys.modules, "domains.driving.synthetic", fake)
