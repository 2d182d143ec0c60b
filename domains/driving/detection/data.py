"""Detection data: KITTI / COCO / YOLO datasets, augmentation that moves boxes, and the Lightning data module."""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal

import albumentations as A
import numpy as np
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import Dataset

from domains.driving.classes import DETECTION_CLASS_MAP, DONTCARE
from domains.driving.common import (
    collector_paused,
    data_source,
    default_kitti_root,
    predict_images,
    read_annotated_rgb,
    read_label_map,
    sequence_split_hint,
    sort_objects,
    split_by_sequence,
    to_image_tensor,
)
from domains.driving.formats import (
    KITTI_TYPES,
    DropLog,
    ImageAnnotation,
    LabelFormatError,
    LabelWarning,
    coco_layout_images,
    kitti_frames,
    load_dataset_yaml,
    read_coco,
    read_kitti_frame,
    read_text_file,
    read_yolo,
    resolve_kitti_split,
)
from shared.data import (
    DETECTION_MIN_VISIBILITY,
    SplitLoaders,
    check_cap,
    detection_augmentations,
    detection_bbox_params,
)
from shared.files import holding_generated_sets, visible_files

# ------------------------------------------------------------------------------------------- detection


def _report_own_splits(
    source: Path,
    splits: dict[str, list[ImageAnnotation]],
    named: str = "its own splits",
    fix: str = "the yaml's '{}:'",
) -> None:
    """Print the images per split of a YOLO yaml naming its own (or of ``--data.split_files``: ``named``),
    and warn where two of them share images (a coco8-style yaml whose ``val:`` is its ``train:`` folder
    validates on the training images): the split table and leak check of the sets the suite splits itself.
    ``fix``: what to give the split its own images (``{}``: its name)."""
    rank_zero_info(f"{source}: {named}: " + ", ".join(f"{k} {len(v)} images" for k, v in splits.items()))
    paths = {name: {str(Path(a.image_path).resolve()) for a in items} for name, items in splits.items()}
    for first, second in (("train", "val"), ("train", "test"), ("val", "test")):
        if shared := paths.get(first, set()) & paths.get(second, set()):
            rank_zero_warn(
                f"{source}: {len(shared)} of the {second} split's {len(paths[second])} images are also in "
                f"{first} (e.g. {min(shared)}): {second} scores images it has seen; give "
                f"{fix.format(second)} its own images",
                category=LabelWarning,
            )


#: the lists ``--data.split_files`` reads from a folder (KITTI's ``ImageSets/``: its ``test.txt`` lists the
#: unlabelled ``testing/`` images, whose ids are also ``training/``'s, so it is not read)
SPLIT_LIST_NAMES = ("train", "val")
#: what ``--data.split_files`` takes, for messages
SPLIT_FILES_FORM = (
    "a folder holding train.txt and val.txt (KITTI's ImageSets/) or {train: file, val: file, test: file}, "
    "one image id (the file name less its extension) a line"
)


def split_list_files(split_files: str | dict[str, str]) -> dict[str, Path]:
    """The list file of each split ``--data.split_files`` names (:data:`SPLIT_FILES_FORM`), each found."""
    if isinstance(split_files, dict):
        if bad := sorted(set(split_files) - {"train", "val", "test"}):
            raise ValueError(f"--data.split_files: unknown split(s) {bad}; expected {SPLIT_FILES_FORM}")
        files = {name: Path(split_files[name]) for name in ("train", "val", "test") if name in split_files}
    else:
        folder = Path(split_files)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"--data.split_files {folder}: no such folder; expected {SPLIT_FILES_FORM}"
            )
        files = {name: folder / f"{name}.txt" for name in SPLIT_LIST_NAMES}
    for name, file in files.items():
        if not file.is_file():
            raise FileNotFoundError(
                f"--data.split_files: {file} ({name} list) not found; expected {SPLIT_FILES_FORM}"
            )
    return files


def split_by_lists(items: Sequence[ImageAnnotation], files: dict[str, Path], source: Path) -> dict[str, list]:
    """The images each list file names (one image id a line; blank lines and ``#`` comments skipped), in its
    order: KITTI's 3DOP ``ImageSets/train.txt`` / ``val.txt``. An id that is none of the images read from
    ``source`` or is listed twice in one file is an error naming the file and line."""
    by_id = {item.image_id: item for item in items}
    splits = {}
    for name, file in files.items():
        lines: dict[str, int] = {}
        for lineno, raw in enumerate(read_text_file(file).splitlines(), start=1):
            image_id = raw.strip()
            if not image_id or image_id.startswith("#"):
                continue
            if image_id in lines:
                raise LabelFormatError(
                    file, lineno, f"image id {image_id!r} is listed twice (line {lines[image_id]})"
                )
            if image_id not in by_id:
                example = f" (ids are file names less their extension, e.g. {min(by_id)!r})" if by_id else ""
                raise LabelFormatError(
                    file,
                    lineno,
                    f"image id {image_id!r} is none of the {len(by_id)} images read from {source}{example}",
                )
            lines[image_id] = lineno
        splits[name] = [by_id[image_id] for image_id in lines]
    return splits


def note_unused_image_sets(split_root: Path) -> None:
    """Say, in one info line, that a KITTI root's ``ImageSets/*.txt`` (beside ``training/``) are not used: the
    split is by drive; ``--data.split_files`` takes them, splitting by image."""
    for folder in dict.fromkeys((split_root.parent / "ImageSets", split_root / "ImageSets")):
        if lists := [p.name for p in visible_files(folder, (".txt",))] if folder.is_dir() else []:
            rank_zero_info(
                f"{folder}: {', '.join(lists)} found but not used: the split is by drive "
                f"(--data.split_fractions). --data.split_files {folder} takes its train.txt / val.txt (the "
                "3DOP split papers report), which split by image, not by drive: frames of one drive land in "
                "both"
            )
            return


class SplitRecords(Mapping):
    """Split name -> its records, each split read on first use (``read(name, records)``): a stage reads the
    splits it runs on at setup, and another only when something asks for it (a loader, ``dm.splits["test"]``).
    ``planned``: each split's records as the split chose them, stand-ins holding the image id alone where
    ``read`` reads their files (counts and ids need no file read); ``read_splits``: those read so far."""

    def __init__(self, planned: dict[str, list], read: Callable[[str, list], list]):
        self.planned = planned
        self.read_splits: dict[str, list] = {}
        self._read = read

    def __getitem__(self, name: str) -> list:
        if name not in self.read_splits:
            self.read_splits[name] = self._read(name, self.planned[name])
        return self.read_splits[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.planned)

    def __len__(self) -> int:
        return len(self.planned)

    def __contains__(self, name: object) -> bool:  # Mapping's would read the split
        return name in self.planned


def _possessive(noun: str) -> str:
    """``the data's``, ``the train and val splits'``."""
    return f"{noun}'" if noun.endswith("s") else f"{noun}'s"


#: the splits ``setup(stage)`` reads (None: all); another is read when first asked for
SETUP_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}


def ignore_label(obj, class_names: Sequence[str], class_map: dict[str, str]) -> int | None:
    """The class an ignore object (``DontCare``) ignores detections of: -1, every class, for one without a class
    (KITTI's DontCare); a crowd's own (``crowd_class``, renamed by ``class_map``: COCOeval ignores a detection in
    a crowd of its category only); None for a crowd of a category that is none of ``class_names``, which
    ignores none of their detections."""
    crowd = getattr(obj, "crowd_class", None)
    if crowd is None:
        return -1
    name = class_map.get(crowd, crowd)
    return list(class_names).index(name) if name in class_names else None


class DetectionDataset(Dataset):
    """Images and torchvision-style detection targets from :class:`ImageAnnotation` records.

    Returns ``(image, target)``: ``image`` float32 (3, H, W) in [0, 1]; ``target`` holds ``boxes`` float32
    (K, 4) xyxy pixels, ``labels`` int64 (K,) in 0..C-1 (index into ``class_names``), ``ignore_boxes``
    float32 (J, 4) (``ignore_types`` regions, KITTI DontCare and COCO crowds: unmatched detections there are
    neither TP nor FP), ``ignore_labels`` int64 (J,) (the class a COCO crowd ignores detections of, as
    COCOeval: its own; -1 for KITTI's DontCare, which has no class: every class), ``image_id`` str,
    ``orig_size`` (H, W) before the transform and ``cropped_out`` int, the boxes (objects and ignore regions)
    the transform removed (a training crop left less than ``min_visibility`` of them): the item carries its
    count, so it survives DataLoader workers, and the task sums it (``train/cropped_out_boxes``). A crowd of a
    category that is none of the classes ignores none of their detections (COCOeval scores them as another
    category's), so it is left out.

    ``class_map`` renames types before lookup (``{"Van": "Car"}`` trains vans as cars); types neither in
    ``class_names`` nor in ``ignore_types`` are dropped, counted in ``self.dropped`` and reported once;
    ``self.objects`` counts those kept.
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
        split: str | None = None,
    ):
        self.annotations = list(annotations)
        self.class_names = list(class_names)
        self.transform = transform
        self.ignore_types = tuple(ignore_types)
        self.class_map = dict(class_map or {})
        if overlap := set(self.class_names) & set(self.ignore_types):
            raise ValueError(f"DetectionDataset: {sorted(overlap)} are both classes and ignore types")
        per_image, self.dropped = sort_objects(
            self.annotations, self.class_names, self.class_map, self.ignore_types,
            f"DetectionDataset ({split} split)" if split else "DetectionDataset",  # the splits' counts told apart
        )  # fmt: skip
        self.objects = sum(len(labels) for _, labels, _ in per_image)  # of the classes, over all images
        self._targets = []  # per image: boxes, labels, ignore boxes, ignore labels
        for kept, labels, ignored in per_image:
            regions = [(obj.bbox, ignore_label(obj, self.class_names, self.class_map)) for obj in ignored]
            regions = [(box, c) for box, c in regions if c is not None]
            self._targets.append(
                (
                    np.asarray([obj.bbox for obj in kept], dtype=np.float32).reshape(-1, 4),
                    np.asarray(labels, dtype=np.int64),
                    np.asarray([box for box, _ in regions], dtype=np.float32).reshape(-1, 4),
                    np.asarray([c for _, c in regions], dtype=np.int64),
                )
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

    def __len__(self) -> int:
        return len(self.annotations)

    def image_classes(self) -> list[set[int]]:
        """The class ids each image holds (for repeat-factor sampling)."""
        return [set(labels.tolist()) for _, labels, _, _ in self._targets]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict]:
        ann = self.annotations[i]
        image = read_annotated_rgb(ann)
        boxes, labels, ignore, ignore_labels = self._targets[i]
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
            # ignore regions ride as negative labels (-1 - (c + 1) for class c, -1 for every class), so flips and
            # crops move them with the image and the split after it gives each back its class
            all_boxes = np.concatenate([boxes, ignore])
            all_labels = np.concatenate([labels, np.where(ignore_labels < 0, -1, -2 - ignore_labels)])
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
            ignore_labels = np.where(all_labels[~keep] == -1, -1, -2 - all_labels[~keep])
        # boxes in (objects and ignore regions) minus boxes out: what a crop left less than min_visibility of
        cropped_out = len(self._targets[i][1]) + len(self._targets[i][3]) - len(labels) - len(ignore_labels)
        target = {
            "boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(labels, dtype=torch.int64).reshape(-1),
            "ignore_boxes": torch.as_tensor(ignore, dtype=torch.float32).reshape(-1, 4),
            "ignore_labels": torch.as_tensor(ignore_labels, dtype=torch.int64).reshape(-1),
            "image_id": ann.image_id,
            "orig_size": (ann.height, ann.width),
            "cropped_out": int(cropped_out),
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


def detection_transforms(
    train: bool,
    image_size: tuple[int, int] | None = None,
    augment: bool = True,
    seed: int | None = None,
    crop_scale: tuple[float, float] = (0.6, 1.0),
    crop_prob: float = 0.5,
    boxes: bool = True,
    min_visibility: float = DETECTION_MIN_VISIBILITY,
) -> A.Compose | None:
    """Train: flips, photometric jitter and (with ``image_size``) scale crops; eval: fit into ``image_size``
    (or nothing).

    Images are fitted into the ``(H, W)`` box keeping their aspect ratio, never squashed to it: a 4:3 photo
    squashed to the synthetic frames' 640x192 stretches every car 2.5x sideways, and the shipped detector's
    mAP fell from 0.21 to 0.05 (0.19 to 0.07 for 16:9 photos). KITTI's 1242x375 becomes 636x192, the synthetic
    640x192 stays as it is.

    ``boxes``: carry pascal_voc ``bboxes`` (+ ``labels``) through the steps; False for targets that are only
    masks (the instance task re-derives its boxes from the moved masks); ``min_visibility``: a box a crop left
    less of its area than this is dropped (:func:`shared.data.detection_bbox_params`, the augmentation's own)."""
    resize = [A.LongestMaxSize(max_size_hw=(image_size[0], image_size[1]))] if image_size else []
    steps = []
    if train and augment:
        steps = detection_augmentations(
            height=image_size[0] if image_size else None,
            width=image_size[1] if image_size else None,
            crop_scale=tuple(crop_scale),
            crop_prob=crop_prob,
            seed=seed,
        ).transforms
    if not steps and not resize:
        return None
    # the crop may not fire (crop_prob < 1): a final fit into image_size bounds every sample (a crop is exact)
    bbox_params = detection_bbox_params(min_visibility) if boxes else None
    return A.Compose([*steps, *resize], bbox_params=bbox_params, seed=seed)


class DetectorDataModule(SplitLoaders):
    """What the data modules of the torchvision detectors (boxes here, masks in :mod:`domains.driving.instances`)
    share: annotation records split by driving sequence, resized, moved by the detector's augmentation and
    collated as lists. A subclass names its ``data_formats``, reads its records (:meth:`_read_splits`) and builds
    a split's dataset (:meth:`make_dataset`). Its own ``--data.*`` arguments come first, then these:

    Args:
        class_names: the model's classes, in label order (must equal ``model.class_names``).
        class_map: renames source types before they are matched to ``class_names`` (default
            :data:`~domains.driving.classes.DETECTION_CLASS_MAP`, the configs' ``{Van: Car, Person_sitting:
            Pedestrian}``: KITTI vans train as cars, sitting persons as pedestrians, each where its target is
            one of ``class_names``; null drops them; a map of your own must name classes only). DontCare boxes /
            crowd regions are ignored.
        image_size: [H, W] box every image is fitted into, keeping its aspect ratio; null: native size.
        batch_size: images per batch.
        num_workers: loader processes; null: one less than the CPU cores, at most 4.
        augment: training augmentation (flip, colour, zoom-in crops; needs image_size for the crops).
        strict: a bad label line / annotation raises (naming file and line) instead of a counted warning.
        split_fractions: train / val / test shares, split by sequence. A YOLO yaml with its own train and val
            entries keeps its split; one with train and test but no val keeps its test and cuts val out of train
            by sequence (the train : val shares).
        seed: seed of the split and the augmentation.
        max_items: read at most this many images (smoke tests).
        crop_scale: [min, max] share of the image area a zoom-in training crop keeps (resized back to
            ``image_size``).
        crop_prob: share of training images that get a zoom-in crop.
        predict_path: ``predict`` on your own images instead of the test split: a folder (searched recursively)
            or one image file; no labels needed, and data_path is not read. Unreadable images are skipped and
            counted.
        images_root: ``coco``: the folder the JSON's ``file_name`` entries are relative to; null: the JSON's
            folder, or for COCO's layout as downloaded (``annotations/instances_val2017.json``) the
            ``val2017/`` beside ``annotations/`` (said in one info line).
    """

    INPUT_SETTINGS = ("image_size",)

    #: the ``data_format`` values the subclass reads
    data_formats: tuple[str, ...] = ()
    #: the record of an image without labels (``predict_path``)
    record_type: type = ImageAnnotation

    def __init__(
        self,
        data_format: str,
        data_path: str | None = None,
        class_names: list[str] = ["Car", "Pedestrian", "Cyclist"],  # noqa: B006 - becomes a CLI default
        class_map: dict[str, str] | None = DETECTION_CLASS_MAP,  # the configs' (a CLI default: not mutated)
        image_size: tuple[int, int] | None = None,
        batch_size: int = 4,
        num_workers: int | None = None,
        augment: bool = True,
        strict: bool = False,
        split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
        seed: int = 0,
        max_items: int | None = None,
        crop_scale: tuple[float, float] = (0.6, 1.0),
        crop_prob: float = 0.5,
        predict_path: str | None = None,
        images_root: str | None = None,
    ):
        super().__init__()
        owner = type(self).__name__
        if not self.data_formats:  # the base itself: its choices' message indexed an empty tuple
            raise TypeError(
                f"{owner} reads no data_format (its data_formats is empty): DetectorDataModule is the shared "
                "base of DetectionDataModule (boxes) and InstanceDataModule (masks); use one of them"
            )
        if data_format not in self.data_formats:
            choices = f"{', '.join(self.data_formats[:-1])} or {self.data_formats[-1]}"
            raise ValueError(f"{owner}: data_format must be {choices}, got {data_format!r}")
        if images_root is not None and data_format != "coco":
            raise ValueError(
                f"{owner}: --data.images_root is read for --data.data_format coco only, not {data_format}"
            )
        if len(split_fractions) != 3:
            raise ValueError(
                f"{owner}: split_fractions needs 3 values (train/val/test), got {split_fractions}"
            )
        self.save_hyperparameters()
        self.data_format, self.data_path = data_format, data_path
        self.class_names = list(class_names)
        self.class_map = dict(class_map or {})
        if self.class_map == DETECTION_CLASS_MAP:  # the default: only its renames into these classes (Car alone:
            self.class_map = {k: v for k, v in self.class_map.items() if v in self.class_names}  # no Pedestrian)
        if image_size is not None and (len(image_size) != 2 or min(image_size) <= 0):
            raise ValueError(  # a 0 fitted every image to 1x1 pixel and went on
                f"{owner}: --data.image_size must be [height, width], both > 0 (null: native size), got "
                f"{list(image_size)}"
            )
        self.image_size = tuple(image_size) if image_size else None
        self.set_loader_options(batch_size, num_workers)
        self.augment, self.strict = augment, strict
        self.split_fractions, self.seed = tuple(split_fractions), seed
        self.max_items = check_cap(max_items, "--data.max_items")
        try:  # albumentations checks the crop settings: fail here, naming them, not when setup() builds it
            detection_augmentations(crop_scale=tuple(crop_scale), crop_prob=crop_prob, height=32, width=32)
        except ValueError as err:
            raise ValueError(f"{owner}: bad crop_scale {crop_scale} / crop_prob {crop_prob}: {err}") from err
        self.crop_scale, self.crop_prob = tuple(crop_scale), crop_prob
        self.predict_path = predict_path
        self.images_root = images_root
        self.splits = SplitRecords({}, self._read_split)  # filled by setup
        self.datasets: dict[str, Dataset] = {}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def prepare_data(self) -> None:
        if self.data_path is None and not self.predicting_own_images():
            default_kitti_root()

    def _read_splits(self) -> dict[str, list]:
        """The annotation records of each split, or stand-ins holding their image ids that
        :meth:`_read_records` reads when the split is used."""
        raise NotImplementedError

    def _read_records(self, name: str, records: list) -> list:
        """Split ``name``'s records with their files read where :meth:`_read_splits` gave stand-ins (the
        subclass's formats that split on file names); as they are by default."""
        return records

    def _read_split(self, name: str, records: list) -> list:
        """Split ``name`` read (:meth:`_read_records`), its dataset built: :class:`SplitRecords`' reader."""
        records = self._read_records(name, records)
        self.datasets[name] = self.make_dataset(name, records)
        return records

    def note_coco_layout(self, source: Path, items: Sequence[ImageAnnotation]) -> None:
        """Say, in one info line, that a COCO JSON's images were read from COCO's layout's image folder (the
        ``val2017/`` beside ``annotations/instances_val2017.json``), not from the JSON's folder:
        ``images_root`` was null and they were not there."""
        layout = coco_layout_images(source)
        if self.images_root is None and layout and items and Path(items[0].image_path).is_relative_to(layout):
            rank_zero_info(
                f"{source}: its images are not beside it but in {layout} (COCO's layout: annotations/ beside "
                f"{layout.name}/): read from there; --data.images_root names another folder"
            )

    def make_dataset(self, name: str, items: list) -> Dataset:
        """The dataset of split ``name`` over its records ``items``."""
        raise NotImplementedError

    def transform(self, name: str, boxes: bool = True) -> A.Compose | None:
        """The :func:`detection_transforms` of split ``name`` (augmented for ``train``)."""
        return detection_transforms(
            name == "train", self.image_size, self.augment, self.seed, self.crop_scale, self.crop_prob, boxes
        )

    def setup(self, stage: str | None = None) -> None:
        if stage in ("predict", None) and self.predict_path is not None and "predict" not in self.datasets:
            self.datasets["predict"] = self.make_dataset("predict", self.predict_records())
        if stage == "predict" and self.predict_path is not None:
            return  # your own images only: data_path is not read
        # a --force run waits for the listing, not the run: never half a set
        with holding_generated_sets(), collector_paused():
            first = not self.splits
            if first:
                self.splits = SplitRecords(self._read_splits(), self._read_split)
            self.check_splits(self.splits.planned, stage, self.split_hint())  # before a file is read
            # the stage's splits only: validate read and checked every label of all three to score val
            for name in SETUP_SPLITS.get(getattr(stage, "value", stage), tuple(self.splits)):
                if name in self.splits:
                    self.splits[name]  # read on first use: its dataset is built
        if first:
            self.warn_class_map_without_objects()
            self.check_classes_found(stage)

    def split_dataset(self, name: str) -> Dataset:
        """Split ``name``'s dataset, the split read on first use where the stage's setup did not read it (a
        ``test`` whose caller also asks for the val loader)."""
        if name not in self.datasets and name in self.splits:
            self.splits[name]  # read on first use: its dataset is built
        return super().split_dataset(name)

    def _read_scope(self) -> str:
        """The data the checks saw, for their messages: "the data" when every split with images was read, else
        the splits the stage read (the others' files are not read)."""
        read = list(self.splits.read_splits)
        if all(name in read or not records for name, records in self.splits.planned.items()):
            return "the data"
        return f"the {' and '.join(read)} split{'s' if len(read) > 1 else ''}"

    GROUP_UNIT = "images"

    def split_groups(self, name: str) -> set[str] | None:
        """The image ids of split ``name`` (its drives would do, but the records do not keep them), for the
        checkpoint's leak check."""
        records = self.splits.planned.get(name)  # ids alone: an unread split is not read for them
        return None if records is None else {record.image_id for record in records}

    def split_hint(self) -> str:
        """What to change when a split comes out empty."""
        return sequence_split_hint(self.split_fractions)

    def check_classes_found(self, stage: str | None = None) -> None:
        """Refuse ``class_names`` that match none of the data's objects (``car`` against ``Car``): each dataset
        only warns of what it drops, and fit would train on no object at all. Data with no object of any class
        is refused for ``fit`` too (ids the maps' class table does not know; a layout read as something else);
        ``test`` and ``predict`` may score frames without objects. The splits the stage read are checked."""
        read = self.splits.read_splits
        datasets = [self.datasets[name] for name in read]
        if any(dataset.objects for dataset in datasets):
            if stage in (None, "fit"):
                self.warn_classes_without_objects()
            return
        found = sum((dataset.dropped for dataset in datasets), Counter())
        scope = self._read_scope()
        where = self.data_path or "the synthetic set"
        if not found and stage == "fit":
            images = sum(len(items) for items in read.values())
            of = "" if scope == "the data" else f" ({scope[4:]})"
            raise ValueError(
                f"{type(self).__name__}: none of the {images} images of {where}{of} holds an object (of "
                f"--data.class_names {self.class_names} or any other): fit would learn the background only. "
                "Check the layout (--data.data_format) and the class ids your maps use"
            )
        if found:
            types = ", ".join(f"{name} ({n})" for name, n in sorted(found.items()))
            whose = _possessive(scope)
            raise ValueError(
                f"{type(self).__name__}: none of {whose} objects is of a class in --data.class_names "
                f"{self.class_names} (--data.class_map {self.class_map}); {whose} types are {types}: set "
                "--data.class_names to them (or rename them with --data.class_map)"
            )

    def warn_class_map_without_objects(self) -> None:
        """Warn of each ``class_map`` key that is the type of no object in the data (any split), naming the data's
        types and the one it may have meant (the same but for case, or a close spelling): ``--data.class_map
        '{Vna: Car}'`` renamed nothing, and the vans were dropped as a type not trained on, with no word of the
        map. The configs' own renames (:data:`DETECTION_CLASS_MAP`: KITTI's Van, Person_sitting) are not
        warned of: most data sets have neither. The splits the stage read are looked at."""
        read = self.splits.read_splits.values()
        found = Counter(obj.type for records in read for record in records for obj in record.objects)
        scope = self._read_scope()
        for key in self.class_map:
            if found[key] or key in DETECTION_CLASS_MAP:
                continue
            lower = {name.lower(): name for name in sorted(found)}
            close = difflib.get_close_matches(key.lower(), list(lower), n=1)  # Vna: Van at 0.67
            near = lower.get(key.lower()) or (lower[close[0]] if close else None)
            hint = f"; did you mean {near!r}?" if near else ""
            types = ", ".join(f"{name} ({n})" for name, n in found.most_common(12)) or "none"
            types += f" and {len(found) - 12} more" if len(found) > 12 else ""
            rank_zero_warn(
                f"{type(self).__name__}: --data.class_map key {key!r} is the type of no object in {scope}, "
                f"so it renames nothing; {_possessive(scope)} types are {types}{hint}"
            )

    def warn_classes_without_objects(self) -> None:
        """Warn of each class with no object in the training split, naming the data's type it may have meant
        (the same but for case, or a close spelling): ``--data.class_names '[Truck, tram]'`` on data that says
        ``Tram`` trained a class with no example, said only in the info line of types not trained on."""
        records = self.splits.read_splits.get("train") or []
        found = Counter(self.class_map.get(obj.type, obj.type) for record in records for obj in record.objects)
        others = {name.lower(): name for name in sorted(found) if name not in self.class_names}
        others.pop(DONTCARE.lower(), None)
        for name in self.class_names:
            if found[name]:
                continue
            close = difflib.get_close_matches(name.lower(), list(others), n=1, cutoff=0.75)
            near = others.get(name.lower()) or (others[close[0]] if close else None)
            hint = ""
            if near:
                case = " (class names are case-sensitive)" if near.lower() == name.lower() else ""
                hint = (
                    f"; the data has {near!r}{case} with {found[near]} objects, not trained on: did you mean it?"
                )
            rank_zero_warn(
                f"{type(self).__name__}: class {name!r} of --data.class_names has no object in the training "
                f"split ({len(records)} images): it is trained on no example{hint}"
            )  # a setting that matches no label, not a bad label: a UserWarning, not a LabelWarning

    def predict_records(self) -> list[ImageAnnotation]:
        """Label-free records of ``predict_path``'s images (:func:`~domains.driving.common.predict_images`)."""
        found = predict_images(
            self.predict_path, name=lambda path: self.record_type(str(path), 0, 0).image_id
        )
        return [self.record_type(str(path), width, height, name=name) for path, height, width, name in found]

    collate_fn = staticmethod(detection_collate)


class DetectionDataModule(DetectorDataModule):
    """2D detection data from KITTI, COCO or YOLO files, split by driving sequence.

    ``python -m ... fit --help`` lists these arguments as ``--data.*``; the shared ones:
    :class:`DetectorDataModule`.

    Args:
        data_format: ``kitti``, ``coco`` or ``yolo``.
        data_path: KITTI root (``training/{image_2,label_2}`` or ``{image_2,label_2}``), COCO JSON (images
            relative to its folder; or a folder holding one ``*.json``) or YOLO dataset yaml (or a folder holding
            one); null: the synthetic KITTI-layout set, generated on first use under data/driving/synthetic_kitti.
        repeat_threshold: repeat-factor sampling (LVIS) of training images by their rarest class; null: off.
        semantic_maps: training targets carry the per-pixel class maps (``semantic/<id>.png`` beside
            ``image_2/``) for the detector's auxiliary semantic loss (``model.network.init_args.semantic_classes`` > 0).
        split_files: take the splits from lists of image ids instead of splitting by sequence: a folder
            holding ``train.txt`` and ``val.txt`` (KITTI's ``ImageSets/``, the 3DOP split most KITTI papers
            report) or ``{train: file, val: file, test: file}``; images in no list are not used. Such lists
            split by image, not by drive: frames of one drive land in train and val (3DOP's do), so val
            scores frames next to ones trained on. null: split by sequence (``split_fractions``).
    """

    data_formats = ("kitti", "coco", "yolo")
    SPLIT_SETTINGS = (*DetectorDataModule.SPLIT_SETTINGS, "split_files")

    def __init__(
        self,
        data_format: Literal["kitti", "coco", "yolo"] = "kitti",
        data_path: str | None = None,
        *args,
        repeat_threshold: float | None = None,
        semantic_maps: bool = False,
        split_files: str | dict[str, str] | None = None,
        **kwargs,
    ):
        # positional arguments after data_path are DetectorDataModule's, in its order (class_names, class_map...)
        super().__init__(data_format, data_path, *args, **kwargs)
        self.repeat_threshold = repeat_threshold
        self.semantic_maps = semantic_maps
        self.split_files = split_files

    def _source(self) -> Path:
        patterns = {"coco": ("*.json",), "yolo": ("*.yaml", "*.yml")}.get(self.data_format, ())
        return data_source(self.data_path, patterns)

    def _yolo_splits(self, source: Path) -> dict | None:
        """The YOLO dataset yaml's entries when it names its own splits (train, and val or test), else None."""
        entries = load_dataset_yaml(source)
        return entries if entries.get("train") and (entries.get("val") or entries.get("test")) else None

    def _own_yolo_splits(self) -> dict | None:
        return self._yolo_splits(self._source()) if self.data_format == "yolo" else None

    def split_settings(self, hparams: dict, stage: str) -> dict:
        """A YOLO set naming its own splits keeps them: no setting moves an image of those (the seed and
        fractions only cut val out of train where the yaml names no val); ``split_files`` are the split."""
        if hparams.get("split_files") is not None:
            return {"split_files": hparams["split_files"]}
        entries = self._own_yolo_splits()
        if entries is not None and (entries.get("val") or stage == "test"):
            return {}
        return super().split_settings(hparams, stage)

    def split_hint(self) -> str:
        if self.split_files is not None:
            return (
                f"the splits are the lists of --data.split_files {self.split_files} (train.txt and val.txt "
                "of a folder): add images to the empty one's list, or name a test list ({train: ..., val: "
                "..., test: ...}; papers on KITTI's 3DOP split report val: name val.txt as test too)"
            )
        entries = self._own_yolo_splits()
        if entries is not None and entries.get("val"):  # split_fractions moves nothing in such a set
            add = "" if entries.get("test") else "; add a 'test:' entry to it (an image folder or a .txt list)"
            return f"the dataset yaml {self._source()} names its own splits, which are used as they are{add}"
        return super().split_hint()

    def _read_splits(self) -> dict[str, list[ImageAnnotation]]:
        source = self._source()
        label_file = None if self.data_format == "kitti" else source  # a JSON / yaml: its .sequences.txt
        files = None if self.split_files is None else split_list_files(self.split_files)
        if self.data_format == "kitti":
            items = self._kitti_stand_ins(source)  # split on the ids: a split's files are read when used
            split_root = resolve_kitti_split(source)
            if files is None:
                note_unused_image_sets(split_root)
        elif self.data_format == "coco":
            items, split_root = read_coco(source, self.images_root, strict=self.strict), source.parent
            self.note_coco_layout(source, items)
        else:
            if (entries := self._yolo_splits(source)) is not None:
                if files is not None:
                    raise ValueError(
                        f"{source} names its own splits (its train / val / test entries): --data.split_files "
                        "would replace them; give one or the other"
                    )
                splits = {
                    name: read_yolo(source, name, strict=self.strict)
                    for name in ("train", "val", "test")
                    if entries.get(name)
                }
                # train + test only: val is cut out of train by sequence, test stays the yaml's
                if "val" not in splits:
                    train, val = self.split_fractions[:2]
                    if not train > 0 or not val > 0:
                        raise ValueError(
                            f"{source} names train and test but no val, which is cut out of train by the first "
                            f"two shares of --data.split_fractions: both must be > 0, got {self.split_fractions}"
                        )
                    shares = (train / (train + val), val / (train + val))
                    splits |= split_by_sequence(
                        splits["train"], source.parent, shares, self.seed,
                        source_file=source, names=("train", "val"),
                    )  # fmt: skip
                splits = {name: self._cap(splits[name]) for name in ("train", "val", "test") if name in splits}
                _report_own_splits(source, splits)
                return splits
            items, split_root = read_yolo(source, "train", strict=self.strict), source.parent
        if files is not None:
            listed = split_by_lists(items, files, source)
            unused = len(items) - len({record.image_id for split in listed.values() for record in split})
            splits = {name: self._cap(split) for name, split in listed.items()}
            _report_own_splits(
                source, splits, "the splits of --data.split_files (by image, not by drive: frames of one "
                f"drive may be in train and val, as in KITTI's 3DOP split; {unused} images in no list, not "
                "used)",
                "the {} list",
            )  # fmt: skip
            return splits
        return split_by_sequence(
            items, split_root, self.split_fractions, self.seed, self.max_items, source_file=label_file
        )

    def _kitti_stand_ins(self, source: Path) -> list[ImageAnnotation]:
        """A KITTI root's images as records holding their ids alone (:func:`kitti_frames`: the folders'
        listings), their label files kept for :meth:`_read_records`."""
        log = DropLog(strict=self.strict)
        frames = kitti_frames(source, "training", log)
        log.report(f"read_kitti_dir({source})")
        self._kitti_root = source
        self._kitti_label_files = {str(image): label for image, label, _ in frames}
        return [ImageAnnotation(str(image), 0, 0) for image in self._kitti_label_files]

    def _read_records(self, name: str, records: list[ImageAnnotation]) -> list[ImageAnnotation]:
        """A KITTI split's images read as :func:`~domains.driving.formats.read_kitti_dir` reads them: each
        size from its header, its label lines checked against it (bad ones counted in one warning naming the
        split, or with ``strict`` an error naming the file and line); other formats' records as they are."""
        if self.data_format != "kitti":
            return records
        log = DropLog(strict=self.strict)
        known = (*KITTI_TYPES, *self.class_names, *self.class_map)
        out = [
            read_kitti_frame(stand_in.image_path, self._kitti_label_files[stand_in.image_path], known, log)
            for stand_in in records
        ]
        log.report(f"read_kitti_dir({self._kitti_root}), {name} split")
        return out

    def _cap(self, items: list[ImageAnnotation]) -> list[ImageAnnotation]:
        return items[: self.max_items] if self.max_items is not None else items

    def make_dataset(self, name: str, items: list[ImageAnnotation]) -> DetectionDataset:
        return DetectionDataset(
            items,
            self.class_names,
            self.transform(name),
            class_map=self.class_map,
            semantic_maps=self.semantic_maps and name == "train",
            split=name,
        )
