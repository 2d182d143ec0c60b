"""Driving datasets and Lightning data modules: 2D detection (KITTI / COCO / YOLO) and road anomalies.

Real data and the built-in synthetic data take one code path: the generator in
:mod:`domains.driving.synthetic` writes the KITTI and SegmentMeIfYouCan layouts that real data use, and the
data modules only call it when no ``data_path`` is given.

Splits are by driving *sequence* (consecutive frames are near duplicates, so a frame-level split leaks), read
from a sequence mapping file where one exists, else by image id.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from domains.driving.formats import (
    KITTI_TYPES,
    ImageAnnotation,
    LabelFormatError,
    LabelWarning,
    images_by_stem,
    read_coco,
    read_kitti_dir,
    read_yolo,
    resolve_kitti_split,
)
from shared.data import (
    SplitLoaders,
    default_num_workers,
    detection_augmentations,
    group_split,
)

IGNORE_INDEX = 255  # void pixels in semantic and anomaly masks
ANOMALY_LABEL_VALUES = (0, 1, IGNORE_INDEX)

# --------------------------------------------------------------------------------------------- utilities


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode an image to RGB uint8 (H, W, 3); :class:`LabelFormatError` naming the file if it cannot."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: image file not found")
        raise LabelFormatError(path, None, "cannot decode image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_label_map(path: str | Path) -> np.ndarray:
    """Decode a single-channel label PNG (a 3-channel grey PNG is accepted: its channels must agree)."""
    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if label is None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: label mask not found")
        raise LabelFormatError(path, None, "cannot decode label mask")
    if label.ndim == 3:
        if (
            label.shape[2] >= 3
            and np.array_equal(label[..., 0], label[..., 1])
            and np.array_equal(label[..., 0], label[..., 2])
        ):
            label = label[..., 0]
        else:
            raise LabelFormatError(path, None, f"label mask must be single-channel, got shape {label.shape}")
    return label


def to_image_tensor(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """HWC uint8 (or float already in [0, 1]) -> float32 (3, H, W) in [0, 1]."""
    if isinstance(image, torch.Tensor):  # a transform ending in ToTensorV2
        tensor = image.float()
        return tensor / 255.0 if image.dtype == torch.uint8 else tensor
    tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    return tensor.float().div_(255.0) if image.dtype == np.uint8 else tensor.float()


SEQUENCE_MAP_NAMES = ("sequence_map.txt", "sequences.txt", "mapping.txt")


def read_sequence_groups(split_root: str | Path, ids: Sequence[str]) -> list[str]:
    """Sequence (drive) of each image id, for group-aware splits; falls back to the image id itself.

    Understands two layouts, looked for in ``split_root`` and its parent:
    * the KITTI devkit pair ``mapping/train_mapping.txt`` (``date drive frame`` per line) and
      ``mapping/train_rand.txt`` (one comma-separated line; image ``i`` is mapping line ``rand[i]``, 1-based);
    * a two-column text file ``<image_id> <sequence>`` (``sequence_map.txt``, ``sequences.txt``,
      ``mapping.txt``; ``#`` comments, commas or whitespace).
    Ids missing from the mapping are an error naming the file, not silently grouped alone.
    """
    split_root = Path(split_root)
    for folder in (split_root, split_root.parent):
        for mapping_dir in (folder / "mapping", folder / "devkit_object" / "mapping", folder):
            mapping, rand = mapping_dir / "train_mapping.txt", mapping_dir / "train_rand.txt"
            if mapping.is_file() and rand.is_file():
                return _kitti_devkit_groups(mapping, rand, ids)
        for name in SEQUENCE_MAP_NAMES:
            path = folder / name
            if path.is_file():
                return _two_column_groups(path, ids)
    return list(ids)


def _kitti_devkit_groups(mapping: Path, rand: Path, ids: Sequence[str]) -> list[str]:
    drives = [line.split() for line in mapping.read_text().splitlines() if line.strip()]
    for lineno, parts in enumerate(drives, start=1):
        if len(parts) != 3:
            raise LabelFormatError(mapping, lineno, f"expected 'date drive frame', got {' '.join(parts)!r}")
    try:
        order = [int(v) for v in rand.read_text().replace("\n", ",").split(",") if v.strip()]
    except ValueError as e:
        raise LabelFormatError(rand, 1, f"non-numeric index ({e})") from None
    groups = []
    for image_id in ids:
        try:
            idx = int(image_id)
            groups.append(drives[order[idx] - 1][1])
        except (ValueError, IndexError):
            raise LabelFormatError(
                rand, 1, f"image id {image_id!r} has no entry in {rand.name}/{mapping.name}"
            ) from None
    return groups


def _two_column_groups(path: Path, ids: Sequence[str]) -> list[str]:
    table: dict[str, str] = {}
    for lineno, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].replace(",", " ").split()
        if not line:
            continue
        if len(line) < 2:
            raise LabelFormatError(path, lineno, f"expected '<image_id> <sequence>', got {raw.strip()!r}")
        if line[0].lower() in ("id", "image_id", "image"):  # header row
            continue
        table[line[0]] = line[1]
    missing = [i for i in ids if i not in table]
    if missing:
        raise LabelFormatError(path, None, f"{len(missing)} image id(s) have no sequence, e.g. {missing[:3]}")
    return [table[i] for i in ids]


# ------------------------------------------------------------------------------------------- detection


class DetectionDataset(Dataset):
    """Images and torchvision-style detection targets from :class:`ImageAnnotation` records.

    Returns ``(image, target)``: ``image`` float32 (3, H, W) in [0, 1]; ``target`` holds ``boxes`` float32
    (K, 4) xyxy pixels, ``labels`` int64 (K,) in 0..C-1 (index into ``class_names``), ``ignore_boxes``
    float32 (J, 4) (``ignore_types`` regions, KITTI DontCare: detections there are neither TP nor FP),
    ``image_id`` str and ``orig_size`` (H, W) before the transform.

    ``class_map`` renames types before lookup (``{"Van": "Car"}`` trains vans as cars); types neither in
    ``class_names`` nor in ``ignore_types`` are dropped, counted in ``self.dropped`` and reported once.
    ``transform``: an albumentations ``Compose`` with ``BboxParams(format="pascal_voc",
    label_fields=["labels"])`` (see :func:`shared.data.detection_augmentations`); ignore boxes go through
    it too (label -1), so flips and crops move them with the image.
    ``semantic_maps``: with ``True``, each target also holds ``semantic`` int64 (H, W), the image's class map
    read from ``semantic/<stem>.png`` beside its image folder (the synthetic KITTI layout; 255 = void), cropped
    and flipped with the image, for the detector's auxiliary semantic loss. A missing map is an error here.
    """

    def __init__(
        self,
        annotations: Sequence[ImageAnnotation],
        class_names: Sequence[str],
        transform: A.Compose | None = None,
        ignore_types: Sequence[str] = ("DontCare",),
        class_map: dict[str, str] | None = None,
        semantic_maps: bool = False,
    ):
        self.annotations = list(annotations)
        self.class_names = list(class_names)
        self.transform = transform
        self.ignore_types = tuple(ignore_types)
        self.class_map = dict(class_map or {})
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"DetectionDataset: duplicate class names {self.class_names}")
        if overlap := set(self.class_names) & set(self.ignore_types):
            raise ValueError(f"DetectionDataset: {sorted(overlap)} are both classes and ignore types")
        bad = {
            k: v
            for k, v in self.class_map.items()
            if v not in self.class_names and v not in self.ignore_types
        }
        if bad:
            raise ValueError(
                f"DetectionDataset: class_map targets {bad} are not in class_names {self.class_names}"
            )
        self.semantic_paths: list[Path] | None = None
        if semantic_maps:
            self.semantic_paths = [semantic_map_path(ann.image_path) for ann in self.annotations]
            missing = [
                (a.image_path, p) for a, p in zip(self.annotations, self.semantic_paths) if not p.is_file()
            ]
            if missing:
                raise FileNotFoundError(
                    f"DetectionDataset: {len(missing)} of {len(self.annotations)} images have no semantic map "
                    f"(semantic_maps is on), e.g. {missing[0][1]} for {missing[0][0]}"
                )
        index = {name: i for i, name in enumerate(self.class_names)}
        self.dropped: Counter[str] = Counter()
        self._targets = []
        for ann in self.annotations:
            boxes, labels, ignore = [], [], []
            for obj in ann.objects:
                name = self.class_map.get(obj.type, obj.type)
                if name in index:
                    boxes.append(obj.bbox)
                    labels.append(index[name])
                elif name in self.ignore_types:
                    ignore.append(obj.bbox)
                else:
                    self.dropped[obj.type] += 1
            self._targets.append(
                (
                    np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                    np.asarray(labels, dtype=np.int64),
                    np.asarray(ignore, dtype=np.float32).reshape(-1, 4),
                )
            )
        if self.dropped:
            counts = ", ".join(f"{k}: {v}" for k, v in sorted(self.dropped.items()))
            warnings.warn(
                f"DetectionDataset: dropped objects whose type is not in class_names {self.class_names} "
                f"(class_map {self.class_map}): {counts}",
                LabelWarning,
                stacklevel=2,
            )

    def __len__(self) -> int:
        return len(self.annotations)

    def image_classes(self) -> list[set[int]]:
        """The class ids each image holds (for repeat-factor sampling)."""
        return [set(labels.tolist()) for _, labels, _ in self._targets]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict]:
        ann = self.annotations[i]
        image = read_rgb(ann.image_path)
        if image.shape[:2] != (ann.height, ann.width):
            raise LabelFormatError(
                ann.image_path,
                None,
                f"image is {image.shape[1]}x{image.shape[0]} but its "
                f"annotation says {ann.width}x{ann.height}",
            )
        boxes, labels, ignore = self._targets[i]
        semantic = None
        if self.semantic_paths is not None:
            semantic = read_label_map(self.semantic_paths[i])
            if semantic.shape != image.shape[:2]:
                raise LabelFormatError(
                    self.semantic_paths[i],
                    None,
                    f"semantic map is {semantic.shape[1]}x{semantic.shape[0]} but its image "
                    f"{ann.image_path} is {image.shape[1]}x{image.shape[0]}",
                )
        if self.transform is not None:
            all_boxes = np.concatenate([boxes, ignore])
            all_labels = np.concatenate([labels, np.full(len(ignore), -1, dtype=np.int64)])
            mask = {} if semantic is None else {"mask": semantic}  # albumentations crops / flips it too
            out = self.transform(image=image, bboxes=all_boxes, labels=all_labels, **mask)
            image, semantic = out["image"], out.get("mask")
            all_boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
            all_labels = np.asarray(out["labels"], dtype=np.int64).reshape(-1)
            height, width = image.shape[-2:] if isinstance(image, torch.Tensor) else image.shape[:2]
            # albumentations works in float32 normalised coordinates: clamp its rounding back into the image
            np.clip(all_boxes[:, 0::2], 0, width, out=all_boxes[:, 0::2])
            np.clip(all_boxes[:, 1::2], 0, height, out=all_boxes[:, 1::2])
            keep = all_labels >= 0
            boxes, labels, ignore = all_boxes[keep], all_labels[keep], all_boxes[~keep]
        target = {
            "boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(labels, dtype=torch.int64).reshape(-1),
            "ignore_boxes": torch.as_tensor(ignore, dtype=torch.float32).reshape(-1, 4),
            "image_id": ann.image_id,
            "orig_size": (ann.height, ann.width),
        }
        if semantic is not None:
            target["semantic"] = torch.as_tensor(np.asarray(semantic), dtype=torch.int64)
        return to_image_tensor(image), target


def semantic_map_path(image_path: str | Path) -> Path:
    """``<root>/semantic/<stem>.png`` for an image ``<root>/<image folder>/<stem>.<ext>`` (synthetic KITTI)."""
    image_path = Path(image_path)
    return image_path.parent.parent / "semantic" / f"{image_path.stem}.png"


def detection_collate(batch: Sequence[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """Lists of images and targets, as torchvision detectors take them (images may differ in size)."""
    images, targets = zip(*batch, strict=True) if batch else ((), ())
    return list(images), list(targets)


def _bbox_params() -> A.BboxParams:
    return A.BboxParams(format="pascal_voc", label_fields=["labels"], min_visibility=0.3)


def detection_transforms(
    train: bool,
    image_size: tuple[int, int] | None = None,
    augment: bool = True,
    seed: int | None = None,
    crop_scale: tuple[float, float] = (0.6, 1.0),
    crop_prob: float = 0.5,
) -> A.Compose | None:
    """Train: flips, photometric jitter and (with ``image_size``) scale crops; eval: resize (or nothing)."""
    resize = [A.Resize(height=image_size[0], width=image_size[1])] if image_size else []
    if train and augment:
        base = detection_augmentations(
            height=image_size[0] if image_size else None,
            width=image_size[1] if image_size else None,
            crop_scale=tuple(crop_scale),
            crop_prob=crop_prob,
            seed=seed,
        )
        # the crop may not fire (crop_prob < 1): a final Resize gives every sample one size
        return A.Compose([*base.transforms, *resize], bbox_params=_bbox_params(), seed=seed)
    if resize:
        return A.Compose(resize, bbox_params=_bbox_params(), seed=seed)
    return None


def _default_kitti_root() -> Path:
    from domains.driving.synthetic import ensure_synthetic_kitti  # lazy: the generator is optional at import

    return Path(ensure_synthetic_kitti())


def _default_anomaly_root() -> Path:
    from domains.driving.synthetic import ensure_synthetic_anomaly

    return Path(ensure_synthetic_anomaly())


def _warn_empty_splits(splits: dict[str, Sequence], owner: str) -> None:
    empty = [name for name, items in splits.items() if len(items) == 0]
    if empty:
        warnings.warn(
            f"{owner}: split(s) {empty} are empty (too few sequences for the split fractions)",
            UserWarning,
            stacklevel=3,
        )


class DetectionDataModule(SplitLoaders):
    """2D detection data from KITTI, COCO or YOLO files, split by sequence (``python -m ... fit --help`` lists
    these arguments as ``--data.*``).

    Args:
        data_format: ``kitti``, ``coco`` or ``yolo``.
        data_path: KITTI root (``training/{image_2,label_2}`` or ``{image_2,label_2}``), COCO JSON (images
            relative to its folder; or a folder holding one ``*.json``) or YOLO dataset yaml (or a folder holding
            one); null: the synthetic KITTI-layout set, generated on first use under data/driving/synthetic_kitti.
        class_names: the detector's classes, in label order (must equal ``model.class_names``).
        class_map: renames source types before they are matched to ``class_names`` (``{Van: Car}`` trains KITTI
            vans as cars; null drops vans). DontCare boxes become ignore regions.
        image_size: [H, W] every image is resized to; null: native size.
        batch_size: images per batch.
        num_workers: loader processes; null: one less than the CPU cores, at most 4.
        augment: training augmentation (flip, colour, zoom-in crops).
        strict: a bad label line raises (naming file and line) instead of a counted warning.
        split_fractions: train / val / test shares, split by sequence (a YOLO yaml with its own train and val
            entries keeps its split).
        seed: seed of the split and the augmentation.
        max_items: read at most this many images (smoke tests).
        repeat_threshold: repeat-factor sampling (LVIS) of training images by their rarest class; null: off.
        crop_scale: [min, max] share of the image area a zoom-in training crop keeps (resized back to
            ``image_size``).
        crop_prob: share of training images that get a zoom-in crop.
        semantic_maps: training targets carry the per-pixel class maps (``semantic/<id>.png`` beside
            ``image_2/``) for the detector's auxiliary semantic loss (``model.semantic_loss_weight``).
    """

    def __init__(
        self,
        data_format: Literal["kitti", "coco", "yolo"] = "kitti",
        data_path: str | None = None,
        class_names: list[str] = ["Car", "Pedestrian", "Cyclist"],  # noqa: B006 - becomes a CLI default
        class_map: dict[str, str] | None = {"Van": "Car"},  # noqa: B006
        image_size: tuple[int, int] | None = None,
        batch_size: int = 4,
        num_workers: int | None = None,
        augment: bool = True,
        strict: bool = False,
        split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
        seed: int = 0,
        max_items: int | None = None,
        repeat_threshold: float | None = None,
        crop_scale: tuple[float, float] = (0.6, 1.0),
        crop_prob: float = 0.5,
        semantic_maps: bool = False,
    ):
        super().__init__()
        if data_format not in ("kitti", "coco", "yolo"):
            raise ValueError(
                f"DetectionDataModule: data_format must be kitti, coco or yolo, got {data_format!r}"
            )
        if len(split_fractions) != 3:
            raise ValueError(
                f"DetectionDataModule: split_fractions needs 3 values (train/val/test), got {split_fractions}"
            )
        self.save_hyperparameters()
        self.data_format = data_format
        self.data_path = data_path
        self.class_names = list(class_names)
        self.class_map = dict(class_map) if class_map else {}
        self.image_size = tuple(image_size) if image_size else None
        self.batch_size = batch_size
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.augment = augment
        self.strict = strict
        self.split_fractions = tuple(split_fractions)
        self.seed = seed
        self.max_items = max_items
        self.repeat_threshold = repeat_threshold
        try:  # albumentations checks the crop settings: fail here, naming them, not when setup() builds it
            detection_augmentations(crop_scale=tuple(crop_scale), crop_prob=crop_prob, height=32, width=32)
        except ValueError as err:
            raise ValueError(
                f"DetectionDataModule: bad crop_scale {crop_scale} / crop_prob {crop_prob}: {err}"
            ) from err
        self.crop_scale, self.crop_prob = tuple(crop_scale), crop_prob
        self.semantic_maps = semantic_maps
        self.splits: dict[str, list[ImageAnnotation]] = {}
        self.datasets: dict[str, DetectionDataset] = {}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def prepare_data(self) -> None:
        if self.data_path is None:
            _default_kitti_root()

    def _source(self) -> Path:
        path = Path(self.data_path) if self.data_path is not None else _default_kitti_root()
        if not path.exists():
            raise FileNotFoundError(f"{path}: data_path does not exist")
        if path.is_dir() and self.data_format in ("coco", "yolo"):
            pattern = ("*.json",) if self.data_format == "coco" else ("*.yaml", "*.yml")
            found = sorted(p for pat in pattern for p in path.glob(pat))
            if len(found) != 1:
                raise FileNotFoundError(
                    f"{path}: expected exactly one {'/'.join(pattern)} file, found "
                    f"{[p.name for p in found] or 'none'}"
                )
            path = found[0]
        return path

    def _read_splits(self) -> dict[str, list[ImageAnnotation]]:
        source = self._source()
        if self.data_format == "kitti":
            known = (*KITTI_TYPES, *self.class_names, *self.class_map)
            items = read_kitti_dir(source, strict=self.strict, known_types=known)
            split_root = resolve_kitti_split(source)
        elif self.data_format == "coco":
            items, split_root = read_coco(source, strict=self.strict), source.parent
        else:
            import yaml

            try:
                entries = yaml.safe_load(source.read_text()) or {}
            except yaml.YAMLError as err:
                raise LabelFormatError(source, None, f"not a valid YAML dataset file ({err})") from err
            if entries.get("train") and entries.get("val"):
                splits = {
                    name: read_yolo(source, name, strict=self.strict)
                    for name in ("train", "val", "test")
                    if entries.get(name)
                }
                return {name: self._cap(items) for name, items in splits.items()}
            items, split_root = read_yolo(source, "train", strict=self.strict), source.parent
        items = self._cap(sorted(items, key=lambda a: a.image_id))
        groups = read_sequence_groups(split_root, [a.image_id for a in items])
        index = group_split(groups, self.split_fractions, seed=self.seed)
        return {name: [items[i] for i in idx] for name, idx in index.items()}

    def _cap(self, items: list[ImageAnnotation]) -> list[ImageAnnotation]:
        return items[: self.max_items] if self.max_items is not None else items

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self.splits = self._read_splits()
        _warn_empty_splits(self.splits, "DetectionDataModule")
        for name, items in self.splits.items():
            transform = detection_transforms(
                name == "train", self.image_size, self.augment, self.seed, self.crop_scale, self.crop_prob
            )
            self.datasets[name] = DetectionDataset(
                items,
                self.class_names,
                transform,
                class_map=self.class_map,
                semantic_maps=self.semantic_maps and name == "train",
            )

    collate_fn = staticmethod(detection_collate)


# ------------------------------------------------------------------------------------- anomaly / semantic


def pad_collate(batch: Sequence[dict]) -> dict:
    """Stack dict samples; images of different sizes are zero-padded bottom/right, masks with 255 (void)."""
    height = max(item["image"].shape[-2] for item in batch)
    width = max(item["image"].shape[-1] for item in batch)
    out: dict = {}
    for key in batch[0]:
        values = [item[key] for item in batch]
        if isinstance(values[0], torch.Tensor):
            fill = 0.0 if key == "image" else IGNORE_INDEX
            padded = [
                torch.nn.functional.pad(v, (0, width - v.shape[-1], 0, height - v.shape[-2]), value=fill)
                for v in values
            ]
            out[key] = torch.stack(padded)
        else:
            out[key] = values
    return out


class _MaskedImages(Dataset):
    """Images with one label map each (``self.items``: image path, map path, name), read and checked alike.

    Items are ``{"image": float32 (3, H, W) in [0, 1], <mask_key>: int64 (H, W), "name": str}``; ``transform``
    (albumentations) sees ``image`` and ``mask``. Subclasses name the map and may check its values.
    """

    mask_key = "mask"  # the map's key in an item
    mask_what = "mask"  # the map in error messages
    transform: A.Compose | None
    items: list[tuple[Path, Path, str]]

    def _check_values(self, mask: np.ndarray, path: Path) -> None:
        """Raise on map values the format does not allow (any value by default)."""

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        image_path, mask_path, name = self.items[i]
        image, mask = read_rgb(image_path), read_label_map(mask_path)
        if image.shape[:2] != mask.shape:
            raise LabelFormatError(
                mask_path,
                None,
                f"{self.mask_what} is {mask.shape[1]}x{mask.shape[0]} but image "
                f"{image_path.name} is {image.shape[1]}x{image.shape[0]}",
            )
        self._check_values(mask, mask_path)
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        return {
            "image": to_image_tensor(image),
            self.mask_key: torch.as_tensor(np.asarray(mask), dtype=torch.int64),
            "name": name,
        }


class AnomalyDataset(_MaskedImages):
    """Road anomaly images in the SegmentMeIfYouCan layout.

    ``root/images/<name>.{png,jpg,jpeg,webp}`` and ``root/labels_masks/<name>.png`` (or SMIYC's own
    ``<name>_labels_semantic.png``) with 0 = normal, 1 = anomaly, 255 = void. Real RoadAnomaly21,
    RoadObstacle21 and Fishyscapes laid out this way load the same. Returns ``{"image": float32 (3, H, W) in
    [0, 1], "label": int64 (H, W), "name": str}``; ``transform`` is an albumentations ``Compose`` applied to
    ``image`` and ``mask``. SMIYC's test images have no public labels: an image without a label mask is an
    error unless ``require_labels=False``, which drops such images with a counted warning.
    """

    IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
    mask_key = "label"

    def __init__(self, root: str | Path, transform: A.Compose | None = None, require_labels: bool = True):
        self.root = Path(root)
        self.transform = transform
        images_dir, labels_dir = self.root / "images", self.root / "labels_masks"
        for folder in (images_dir, labels_dir):
            if not folder.is_dir():
                raise FileNotFoundError(
                    f"{folder}: folder not found (SegmentMeIfYouCan layout: images/, labels_masks/)"
                )
        images = sorted(
            p for p in images_dir.iterdir() if p.is_file() and p.suffix.lower() in self.IMAGE_EXTENSIONS
        )
        if not images:
            raise FileNotFoundError(f"{images_dir}: no images ({', '.join(self.IMAGE_EXTENSIONS)})")
        self.items: list[tuple[Path, Path, str]] = []
        unlabelled = []
        for image in images:
            candidates = (labels_dir / f"{image.stem}.png", labels_dir / f"{image.stem}_labels_semantic.png")
            label = next((c for c in candidates if c.is_file()), None)
            if label is None:
                if require_labels:
                    raise LabelFormatError(
                        image, None, f"no label mask {candidates[0]} (or {candidates[1].name})"
                    )
                unlabelled.append(image.name)
                continue
            self.items.append((image, label, image.stem))
        if unlabelled:
            warnings.warn(
                f"AnomalyDataset({self.root}): dropped {len(unlabelled)} image(s) without a label mask, "
                f"e.g. {unlabelled[:3]}",
                LabelWarning,
                stacklevel=2,
            )
        if not self.items:
            raise FileNotFoundError(f"{labels_dir}: no label masks for the images in {images_dir}")

    def _check_values(self, mask: np.ndarray, path: Path) -> None:
        bad = np.setdiff1d(np.unique(mask), ANOMALY_LABEL_VALUES)
        if bad.size:
            raise LabelFormatError(
                path,
                None,
                f"label values {bad.tolist()[:10]} are not allowed (0 = normal, 1 = anomaly, 255 = void)",
            )


class SemanticSegDataset(_MaskedImages):
    """KITTI-layout images with semantic maps: ``image_2/<id>.png``, ``semantic/<id>.png`` (uint8, 255 void).

    Trains the closed-set segmenter whose uncertainty flags road anomalies. Returns ``{"image": float32
    (3, H, W), "mask": int64 (H, W), "name": id}``. A missing semantic map is an error at construction.
    """

    mask_what = "semantic map"

    def __init__(self, kitti_root: str | Path, ids: Sequence[str], transform: A.Compose | None = None):
        base = resolve_kitti_split(kitti_root)
        images = images_by_stem(base / "image_2")
        self.transform = transform
        self.items: list[tuple[Path, Path, str]] = []
        for image_id in ids:
            if image_id not in images:
                raise FileNotFoundError(f"{base / 'image_2'}: no image for id {image_id!r}")
            semantic = base / "semantic" / f"{image_id}.png"
            if not semantic.is_file():
                raise FileNotFoundError(f"{semantic}: semantic map missing for image {images[image_id]}")
            self.items.append((images[image_id], semantic, image_id))

    def image_classes(self) -> list[set[int]]:
        """The class ids each semantic map holds (void left out), for repeat-factor sampling: reads every map."""
        return [set(np.unique(read_label_map(path)).tolist()) - {IGNORE_INDEX} for _, path, _ in self.items]


def segmentation_transforms(
    train: bool, image_size: tuple[int, int] | None = None, augment: bool = True, seed: int | None = None
) -> A.Compose | None:
    """Train: horizontal flip and scale crops (to ``image_size``) or scale jitter; eval: resize only.

    Padding fills masks with 255 so invented border pixels are void, not a class (masks use nearest).
    """
    if train and augment:
        if image_size:
            height, width = image_size
            geometry = [
                A.RandomResizedCrop(
                    size=(height, width),
                    scale=(0.5, 1.0),
                    ratio=(width / height * 0.8, width / height * 1.25),
                    p=1.0,
                )
            ]
        else:
            geometry = [
                A.Affine(
                    scale=(0.8, 1.25), border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=IGNORE_INDEX, p=0.5
                )
            ]
        return A.Compose([A.HorizontalFlip(p=0.5), *geometry], seed=seed)
    if image_size:
        return A.Compose([A.Resize(height=image_size[0], width=image_size[1])], seed=seed)
    return None


class SegmentationDataModule(SplitLoaders):
    """Semantic segmentation (train / val from a KITTI-layout split by sequence) and road-anomaly test / predict.

    Batches are dicts (``image``, ``mask`` or ``label``, ``name``); with ``image_size`` null, images of different
    sizes are padded (masks with 255 = void) by :func:`pad_collate`.

    Args:
        data_path: KITTI-layout root with ``image_2/`` and ``semantic/`` class maps; null: the synthetic set,
            generated on first use under data/driving/synthetic_kitti.
        image_size: [H, W] every image is resized to; null: native size.
        batch_size: images per batch.
        num_workers: loader processes; null: one less than the CPU cores, at most 4.
        augment: training augmentation.
        seed: seed of the split and the augmentation.
        max_items: read at most this many training images (smoke tests).
        anomaly_path: test / predict set in the SegmentMeIfYouCan layout (``images/``, ``labels_masks/`` with
            0 normal, 1 anomaly, 255 void: RoadAnomaly21, RoadObstacle21, Fishyscapes); null: the synthetic one.
        split_fractions: train / val shares, split by sequence.
        repeat_threshold: repeat-factor sampling of training images by the classes their maps hold; null: off.
    """

    def __init__(
        self,
        data_path: str | None = None,
        image_size: tuple[int, int] | None = None,
        batch_size: int = 4,
        num_workers: int | None = None,
        augment: bool = True,
        seed: int = 0,
        max_items: int | None = None,
        anomaly_path: str | None = None,
        split_fractions: tuple[float, float] = (0.85, 0.15),
        repeat_threshold: float | None = None,
    ):
        super().__init__()
        if len(split_fractions) != 2:
            raise ValueError(
                f"SegmentationDataModule: split_fractions needs 2 values (train, val), got {split_fractions}"
            )
        self.save_hyperparameters()
        self.data_path = data_path
        self.image_size = tuple(image_size) if image_size else None
        self.batch_size = batch_size
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.augment = augment
        self.seed = seed
        self.max_items = max_items
        self.anomaly_path = anomaly_path
        self.split_fractions = tuple(split_fractions)
        self.repeat_threshold = repeat_threshold
        self.datasets: dict[str, Dataset] = {}

    def prepare_data(self) -> None:
        if self.data_path is None:
            _default_kitti_root()
        if self.anomaly_path is None:
            _default_anomaly_root()

    def setup(self, stage: str | None = None) -> None:
        if not self.datasets:
            root = Path(self.data_path) if self.data_path is not None else _default_kitti_root()
            base = resolve_kitti_split(root)
            ids = sorted(images_by_stem(base / "image_2"))
            ids = ids[: self.max_items] if self.max_items is not None else ids
            if not ids:
                raise FileNotFoundError(f"{base / 'image_2'}: no images")
            groups = read_sequence_groups(base, ids)
            split = group_split(groups, self.split_fractions, seed=self.seed, names=("train", "val"))
            _warn_empty_splits(split, "SegmentationDataModule")
            for name, idx in split.items():
                transform = segmentation_transforms(name == "train", self.image_size, self.augment, self.seed)
                self.datasets[name] = SemanticSegDataset(root, [ids[i] for i in idx], transform)
        if stage in (None, "test", "predict") and "test" not in self.datasets:
            anomaly = Path(self.anomaly_path) if self.anomaly_path is not None else _default_anomaly_root()
            self.datasets["test"] = AnomalyDataset(anomaly, segmentation_transforms(False, self.image_size))

    collate_fn = staticmethod(pad_collate)
