"""Road-object classification data: object crops cut once from a KITTI folder (the synthetic set by default).

Each labelled object of a class in ``class_names`` whose box is at least ``min_height`` px tall becomes a
square crop (the box's longer side plus ``context`` on each side, edges replicated past the image border),
resized to ``crop_size`` and written as ``<crops>/<split>/<class>/<image id>_<line>.png``. Splits are by
driving sequence (``read_sequence_groups``): crops of one drive never land in two splits. ``metadata.csv``
beside them keeps each crop's source image, label line, truncation, occlusion and box height, so results can
be broken down by KITTI difficulty later. A ``.complete`` marker holding the settings and a stamp of the source's
files is written last; the same settings on an unchanged source reuse the crops (a label file edited since cuts
them again, and says so). With ``strict`` a bad label line, an unknown type or an image without a label
file raises :class:`~domains.driving.formats.LabelFormatError` naming the file (and line), also when crops
cut without ``strict`` (which dropped it, counted in a warning) would be reused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pytorch_lightning.utilities import rank_zero_info

from domains.driving.common import (
    default_kitti_root,
    finished_data_path,
    read_rgb,
    read_sequence_groups,
    sequence_map_candidates,
)
from domains.driving.formats import KITTI_TYPES, read_kitti_dir, resolve_kitti_split
from shared.classification.data import ClassificationDataModule, CropFolder
from shared.data import group_split
from shared.images import write_image

CLASSES = ["Car", "Van", "Truck", "Pedestrian", "Cyclist"]
CROPS_ROOT = "data/driving/classification"


def square_crop(
    image: np.ndarray, box: tuple[float, float, float, float], context: float, size: int
) -> np.ndarray:
    """A square patch centred on ``box`` (side: longer box side x (1 + 2 context)), resized to ``size``."""
    left, top, right, bottom = box
    side = max(right - left, bottom - top) * (1 + 2 * context)
    cx, cy = (left + right) / 2, (top + bottom) / 2
    x0, y0 = round(cx - side / 2), round(cy - side / 2)
    x1, y1 = x0 + max(1, round(side)), y0 + max(1, round(side))
    h, w = image.shape[:2]
    pad = max(0, -x0, -y0, x1 - w, y1 - h)
    if pad:
        image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0, x1, y1 = x0 + pad, y0 + pad, x1 + pad, y1 + pad
    return cv2.resize(image[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_AREA)


def kitti_sources(kitti_root: str | Path) -> list[Path]:
    """What the cutter reads, for the crops' source stamp: ``image_2/``, ``label_2/`` and every file
    :func:`find_sequence_groups` may take the drives from (a map added later changes the split too)."""
    base = resolve_kitti_split(kitti_root)
    maps = [path for files in sequence_map_candidates(base) for path in files]
    return [base / "image_2", base / "label_2", *maps]


def write_kitti_crops(
    kitti_root: str | Path,
    out: str | Path,
    class_names: list[str] = CLASSES,
    crop_size: int = 64,
    min_height: float = 20.0,
    context: float = 0.15,
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    strict: bool = False,
) -> Path:
    """Cut the object crops of ``kitti_root`` into an ImageFolder tree at ``out`` (reused if already there).
    ``strict``: the first label problem raises instead of being dropped; the source is read (labels and
    image headers) even when the crops are reused, a strict run never trains on crops a lenient cut made."""
    out = Path(out)
    settings = {
        "source": str(Path(kitti_root).resolve()),
        "class_names": list(class_names),
        "crop_size": int(crop_size),
        "min_height": float(min_height),
        "context": float(context),
        "split_fractions": [float(f) for f in split_fractions],
        "seed": int(seed),
    }
    crops = CropFolder(out, settings, sources=kitti_sources(kitti_root))
    known = tuple(dict.fromkeys((*KITTI_TYPES, *class_names)))  # each type once, in the message too

    def read() -> list:
        return sorted(read_kitti_dir(kitti_root, strict=strict, known_types=known), key=lambda a: a.image_id)

    # strict is not a crop setting (a clean source gives the same crops either way), so it is checked here,
    # before a reuse: crops cut without it may come from a source holding what strict refuses
    images = read() if strict else None
    if crops.is_current():
        return out
    if images is None:
        images = read()
    groups = read_sequence_groups(resolve_kitti_split(kitti_root), [a.image_id for a in images])
    split_of_image = {
        images[i].image_id: name
        for name, idx in group_split(groups, split_fractions, seed=seed, verbose=False).items()
        for i in idx
    }
    group_of = {a.image_id: g for a, g in zip(images, groups, strict=True)}
    for split in ("train", "val", "test"):
        crops.empty_class_folders(split, class_names)
    rows, counts = [], {}
    for ann in images:
        objects = [
            (k, obj)
            for k, obj in enumerate(ann.objects, start=1)
            if obj.type in class_names and obj.bbox[3] - obj.bbox[1] >= min_height
        ]
        if not objects:
            continue
        image = read_rgb(ann.image_path)
        split = split_of_image[ann.image_id]
        for k, obj in objects:
            crop = square_crop(image, obj.bbox, context, crop_size)
            rel = Path(split) / obj.type / f"{ann.image_id}_{k:03d}.png"
            write_image(out / rel, crop, rgb=True, what="crop")
            rows.append(
                {
                    "path": rel.as_posix(),
                    "label": obj.type,
                    "group": group_of[ann.image_id],
                    "split": split,
                    "image": ann.image_path,
                    "line": k,
                    "truncated": obj.truncated,
                    "occluded": obj.occluded,
                    "box_height": round(obj.bbox[3] - obj.bbox[1], 1),
                }
            )
            counts[(split, obj.type)] = counts.get((split, obj.type), 0) + 1
    if not rows:
        raise ValueError(f"{kitti_root}: no object of {class_names} at least {min_height} px tall")
    crops.finish(rows)
    rank_zero_info(
        f"KITTI object crops: {len(rows)} from {len(images)} images of {kitti_root} written to {out}"
    )
    return out


class DrivingClassificationData(ClassificationDataModule):
    """Road-object crops (``--data.*``; the shared module's arguments follow these).

    Args:
        data_format: ``kitti`` (object crops cut once from the KITTI folder ``data_path``, or from the synthetic
            set when null), ``imagefolder`` or ``csv``.
        class_names: the KITTI types to classify, in label order (also the model's: linked, written once).
        crop_min_height: objects whose box is lower (px, source pixels) are not cut (KITTI's Hard level is 25 px of
            375).
        crop_context: margin around the box, per side, as a share of its longer side.
        crop_size: side of the written crops in px (the network's input size is ``image_size``).

    ``strict`` (the shared module's) also reaches the KITTI reader: a bad label line, an unknown type or an
    image without a label file raises naming the file (and line), even where crops cut without it would be
    reused.
    """

    source_formats = ("kitti",)
    drawn_formats = ("csv", "kitti")  # KITTI crops are split by drive with seed and split_fractions

    def __init__(
        self,
        data_format: Literal["kitti", "imagefolder", "csv"] = "kitti",
        class_names: list[str] = CLASSES,
        crop_min_height: float = 20.0,
        crop_context: float = 0.15,
        crop_size: int = 64,
        **kwargs,
    ):
        super().__init__(data_format=data_format, class_names=class_names, **kwargs)
        self.crop_min_height, self.crop_context, self.crop_size = (
            float(crop_min_height),
            float(crop_context),
            int(crop_size),
        )

    def convert_source(self, data_format: str, data_path: str | None) -> Path:
        if data_path is not None:
            finished_data_path(data_path)  # an interrupted synthetic set is refused, not cut into crops
        source, out = self.source_and_crops_dir(data_path, default_kitti_root, "kitti", CROPS_ROOT)
        return write_kitti_crops(
            source,
            out,
            self.class_names,
            crop_size=self.crop_size,
            min_height=self.crop_min_height,
            context=self.crop_context,
            split_fractions=self.split_fractions,
            seed=self.seed,
            strict=self.strict,
        )
