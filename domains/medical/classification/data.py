"""Lesion-present classification data: multi-reader CT patches labelled by what most readers marked.

Source: the LIDC HPU-Net PNG layout (``<split>/images/<patient>/<name>.png`` with four reader masks), the
synthetic set by default. A patch is ``present`` when at least ``min_readers`` readers outlined something
(default: a strict majority of the readers, 3 of LIDC's 4), else ``absent``; patches that only a minority marked are thus
``absent``, the label a majority vote gives. The patches are written once as an ImageFolder tree
``<crops>/<split>/{absent,present}/<patient>__<name>.png`` keeping the source's patient split, with a
``metadata.csv`` (patient, readers marking, mean lesion area) and a ``.complete`` marker holding the settings and
a stamp of the source's files (a patient added since cuts the patches again).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pytorch_lightning.utilities import rank_zero_info

from domains.medical.data import LIDCPngDataset
from domains.medical.synthetic import NUM_READERS, check_finished, ensure_synthetic_lidc
from shared.classification.data import ClassificationDataModule, CropFolder
from shared.images import write_image

CLASSES = ["absent", "present"]
CROPS_ROOT = "data/medical/classification"


def write_lesion_crops(
    lidc_root: str | Path,
    out: str | Path,
    min_readers: int | None = None,
    crop_size: int | None = None,
    num_readers: int = NUM_READERS,
) -> Path:
    """Write the labelled patches of ``lidc_root`` (``num_readers`` masks per image) as an ImageFolder tree at
    ``out`` (reused when there)."""
    out = Path(out)
    min_readers = num_readers // 2 + 1 if min_readers is None else int(min_readers)
    if not 1 <= min_readers <= num_readers:
        raise ValueError(f"min_readers must be in 1..{num_readers} (num_readers), got {min_readers}")
    settings = {"source": str(Path(lidc_root).resolve()), "min_readers": min_readers, "crop_size": crop_size}
    if num_readers != NUM_READERS:  # kept out of the default's settings: crops cut before stay current
        settings["num_readers"] = num_readers
    # the stamp covers what LIDCPngDataset reads: a patient added or a reader mask edited cuts the patches again
    sources = [
        Path(lidc_root) / split / part for split in ("train", "val", "test") for part in ("images", "gt")
    ]
    crops = CropFolder(out, settings, sources=sources)
    if crops.is_current():
        return out
    rows = []
    for split in ("train", "val", "test"):
        if not (Path(lidc_root) / split / "images").is_dir():
            continue
        data = LIDCPngDataset(lidc_root, split, crop_size=crop_size, num_readers=num_readers)
        crops.empty_class_folders(split, CLASSES)
        for i in range(len(data)):
            item = data.load(i)
            masks = np.asarray(item["masks"]) > 0
            marking = int(masks.reshape(len(masks), -1).any(axis=1).sum())
            label = CLASSES[int(marking >= min_readers)]
            rel = Path(split) / label / f"{item['id'].replace('/', '__')}.png"
            image = np.clip(np.round(np.asarray(item["image"]) * 255), 0, 255).astype(np.uint8)
            write_image(out / rel, image, what="slice")
            area = (
                float(masks.reshape(len(masks), -1).sum(1)[masks.reshape(len(masks), -1).any(1)].mean())
                if marking
                else 0.0
            )
            rows.append(
                {
                    "path": rel.as_posix(),
                    "label": label,
                    "group": item["group"],
                    "split": split,
                    "readers_marking": marking,
                    "mean_marked_area_px": round(area, 1),
                }
            )
    if not rows:
        raise FileNotFoundError(f"{lidc_root}: no <split>/images folders (LIDC HPU-Net PNG layout)")
    crops.finish(rows)
    present = sum(r["label"] == "present" for r in rows)
    rank_zero_info(
        f"lesion patches: {len(rows)} from {lidc_root} ({present} present by >= {min_readers} of "
        f"{num_readers} readers) written to {out}"
    )
    return out


class MedicalClassificationData(ClassificationDataModule):
    """Lesion-present patches (``--data.*``; the shared module's arguments follow these).

    Args:
        data_format: ``lidc_png`` (patches of the HPU-Net PNG layout at ``data_path``, or of the synthetic set
            when null, labelled present when ``min_readers`` readers marked a lesion), ``imagefolder`` or ``csv``.
        class_names: the labels, in order (also the model's: linked, written once).
        in_channels: 1: CT patches are grey.
        min_readers: readers who must mark a lesion for ``present``; null: a strict majority of ``num_readers`` (3 of 4).
        num_readers: reader masks per image of ``lidc_png`` (``_l0.png`` ..); 4 as in LIDC-IDRI.
    """

    source_formats = ("lidc_png",)

    def __init__(
        self,
        data_format: Literal["lidc_png", "imagefolder", "csv"] = "lidc_png",
        class_names: list[str] = CLASSES,
        in_channels: int = 1,
        min_readers: int | None = None,
        num_readers: int = NUM_READERS,
        **kwargs,
    ):
        super().__init__(data_format=data_format, class_names=class_names, in_channels=in_channels, **kwargs)
        self.min_readers, self.num_readers = min_readers, num_readers

    def convert_source(self, data_format: str, data_path: str | None) -> Path:
        if data_path is not None:
            check_finished(data_path)  # an interrupted synthetic set is refused, not cut into crops
        source, out = self.source_and_crops_dir(data_path, ensure_synthetic_lidc, "lidc", CROPS_ROOT)
        return write_lesion_crops(source, out, self.min_readers, num_readers=self.num_readers)
