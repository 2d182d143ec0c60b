"""Road-anomaly data: semantic maps for training the segmenter, SegmentMeIfYouCan-layout sets for testing."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import albumentations as A
import cv2
import numpy as np
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import Dataset, Sampler

from domains.driving.classes import CITYSCAPES_LABEL_TO_TRAIN_ID, CITYSCAPES_TRAIN_CLASSES
from domains.driving.common import (
    ANOMALY_LABEL_VALUES,
    CITYSCAPES_IMAGE_SUFFIX,
    IGNORE_INDEX,
    check_decodes,
    cityscapes_splits,
    default_anomaly_root,
    default_kitti_root,
    finished_data_path,
    is_cityscapes_root,
    predict_images,
    read_label_map,
    read_rgb,
    read_sequence_groups,
    sequence_split_hint,
    to_image_tensor,
)
from domains.driving.formats import (
    IMAGE_EXTENSIONS,
    DropLog,
    LabelFormatError,
    LabelWarning,
    images_by_stem,
    resolve_kitti_split,
)
from shared.data import SplitLoaders, check_cap, group_split, reseed_pipeline, split_table
from shared.files import counting_hidden_files, holding_generated_sets, visible_entries, visible_files

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


#: an image's label mask: ``<name>.png`` (this suite's) or SegmentMeIfYouCan's ``<name>_labels_semantic.png``
MASK_SUFFIXES = ("", "_labels_semantic")


def label_masks(labels_dir: Path, stems: Sequence[str]) -> dict[str, Path]:
    """``{stem: mask}`` of the images ``stems`` that have a label mask in ``labels_dir`` (:data:`MASK_SUFFIXES`,
    ``.png`` in any case: ``.PNG`` too). An image with two masks is an error naming both: which one is scored
    would be a guess (the first one found won silently)."""
    by_stem: dict[str, list[Path]] = {}
    for path in visible_files(labels_dir, (".png",)):
        by_stem.setdefault(path.stem, []).append(path)
    found = {}
    for stem in stems:
        masks = [path for suffix in MASK_SUFFIXES for path in by_stem.get(f"{stem}{suffix}", [])]
        if len(masks) > 1:
            raise LabelFormatError(
                masks[1], None, f"image {stem!r} has two label masks, {masks[0].name} and {masks[1].name}: "
                "keep one",
            )  # fmt: skip
        if masks:
            found[stem] = masks[0]
    return found


def _unread_files(folder: Path, taken: Sequence[Path], recursive: bool = False) -> list[Path]:
    """The visible files in ``folder`` (below it too, with ``recursive``) that are not ``taken``: named, so that
    a 000003.tif or a city subfolder is not left out without a word."""
    taken = set(taken)
    return [p for p in visible_files(folder, recursive=recursive) if p not in taken]


STRICT_HINT = "--data.strict true makes these errors"


class SeededItems(Sampler):
    """A training sampler's indices as ``(index, seed, epoch)`` keys: the dataset seeds the augmentation of
    each item from them alone (:func:`reseed_pipeline`), so a run draws the same crops and flips whatever
    reads the item: any number of loader workers, forked or spawned, or the main process.

    Before, the draws came from the pipeline's own generators in whichever process read the item (each worker
    reseeded from torch's worker seed, the main process running on from ``Compose(seed=...)``): the short
    passes, which read in the main process where workers would be spawned, gave val/miou 0.2115 under
    ``fork`` and 0.1986 under ``spawn`` for one seed and 2 workers (0.1612 / 0.1538 on 60 small frames, 2
    epochs; seeded per item, 0.1749 under both, the weights equal). The epoch travels with the index because a
    persistent worker never sees an attribute set in the main process after it started. Lightning calls
    :meth:`set_epoch` at each training epoch (its DDP wrapper passes it on); without it every pass is epoch 0.
    Other attributes (``weights``, ``generator``) are the wrapped sampler's.

    The order is the wrapped sampler's, which follows (seed, epoch) too (:class:`shared.data.SeededShuffle`,
    :class:`shared.data.RepeatFactorSampler`; :meth:`set_epoch` is passed on): seeded once per fit and run on,
    it drew epoch 0's order again in a fit resumed at epoch k (``--ckpt_path last``), under epoch k's
    augmentation, and a short pass (class counts, calibration) moved the order of every later epoch.
    """

    def __init__(self, sampler: Sampler, seed: int):
        self.sampler, self.seed, self.epoch = sampler, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if callable(getattr(self.sampler, "set_epoch", None)):
            self.sampler.set_epoch(epoch)

    def __iter__(self):
        seed, epoch = self.seed, self.epoch  # the epoch of the pass, fixed when it starts
        # the order is the wrapped sampler's (shared.data's samplers follow (seed, epoch) themselves); drawn here,
        # whole: a sampler draws at its first index, after another pass may have reseeded it
        return iter([(int(index), seed, epoch) for index in self.sampler])

    def __len__(self) -> int:
        return len(self.sampler)


class _MaskedImages(Dataset):
    """Images with one label map each (``self.items``: image path, map path, name), read and checked alike.

    Items are ``{"image": float32 (3, H, W) in [0, 1], <mask_key>: int64 (H, W), "name": str}`` plus, so that
    ``predict`` can map its outputs back to the file's pixels, ``orig_size`` (H, W) before the transform,
    ``unpadded_size`` (H, W) after it (``pad_collate`` may pad beyond it) and ``image_path``; ``transform``
    (albumentations) sees ``image`` and ``mask``. Subclasses name the map and may check its values; with
    ``keep_native_mask`` an item also carries ``native_<mask_key>``, the map as read (uint8 numpy) when the
    transform changed its size, else None: ``test`` scores at the mask's own size without reading it again.
    """

    mask_key = "mask"  # the map's key in an item
    mask_what = "mask"  # the map in error messages
    keep_native_mask = False
    transform: A.Compose | None
    items: list[tuple[Path, Path, str]]

    def _check_values(self, mask: np.ndarray, path: Path) -> None:
        """Raise on map values the format does not allow (any value by default)."""

    def _read_map(self, path: Path) -> np.ndarray:
        """The label map of ``path`` as trained on (the file's values by default)."""
        return read_label_map(path)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: int | tuple[int, int, int]) -> dict:
        """Item ``key``: an index, or :class:`SeededItems`' ``(index, seed, epoch)``, which seeds ``transform``
        from those three alone."""
        i = key
        if isinstance(key, tuple):
            i, seed, epoch = key
            if self.transform is not None:
                reseed_pipeline(self.transform, (seed, epoch, i))
        image_path, mask_path, name = self.items[i]
        # as stored, as the mask is: EXIF orientation applied to the image alone misaligned the two
        image, mask = read_rgb(image_path, ignore_orientation=True), self._read_map(mask_path)
        if image.shape[:2] != mask.shape:
            raise LabelFormatError(
                mask_path,
                None,
                f"{self.mask_what} is {mask.shape[1]}x{mask.shape[0]} but image "
                f"{image_path.name} is {image.shape[1]}x{image.shape[0]}",
            )
        self._check_values(mask, mask_path)
        orig_size = (int(image.shape[0]), int(image.shape[1]))
        native = mask
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        tensor = to_image_tensor(image)
        item = {
            "image": tensor,
            self.mask_key: torch.as_tensor(np.asarray(mask), dtype=torch.int64),
            "name": name,
            "orig_size": orig_size,
            "unpadded_size": (int(tensor.shape[-2]), int(tensor.shape[-1])),
            "image_path": str(image_path),
            "as_stored": True,  # predict draws its overlay on the file read the same way
        }
        if self.keep_native_mask:
            item[f"native_{self.mask_key}"] = native if item["unpadded_size"] != orig_size else None
        return item


class AnomalyDataset(_MaskedImages):
    """Road anomaly images in the SegmentMeIfYouCan layout.

    ``root/images/<name>.{png,jpg,jpeg,webp}`` and ``root/labels_masks/<name>.png`` (or SMIYC's own
    ``<name>_labels_semantic.png``; ``.PNG`` too) with 0 = normal, 1 = anomaly, 255 = void. Real RoadAnomaly21,
    RoadObstacle21 and Fishyscapes laid out this way load the same. Returns ``{"image": float32 (3, H, W) in
    [0, 1], "label": int64 (H, W), "name": str}``; ``transform`` is an albumentations ``Compose`` applied to
    ``image`` and ``mask``. Images are read as stored (a JPEG's EXIF orientation is not applied), as their masks.

    SMIYC's download holds unlabelled benchmark images beside the labelled ``validation_*`` ones: an image
    without a label mask is an error unless ``require_labels=False``, which drops such images with a counted
    warning naming them; one whose mask is there in another format (``.jpg``) is an error either way. Every
    image is decoded in full here (a truncated JPEG otherwise comes out grey-filled without a word, scored as a
    road): one that cannot be is left out, counted and named in one warning, or an error with ``strict``; so are
    files in ``images/`` that are not read (another format, a subfolder).
    """

    IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
    mask_key = "label"
    keep_native_mask = True  # test scores every pixel of the mask at its own size

    def __init__(
        self,
        root: str | Path,
        transform: A.Compose | None = None,
        require_labels: bool = True,
        strict: bool = False,
    ):
        self.root = Path(root)
        self.transform = transform
        images_dir, labels_dir = self.root / "images", self.root / "labels_masks"
        for folder in (images_dir, labels_dir):
            if not folder.is_dir():
                inside = ""  # the set's images/ or labels_masks/ given for the set
                if self.root.name in ("images", "labels_masks") and (self.root.parent / "images").is_dir():
                    inside = f"; {self.root} is a folder inside the set: give --data.anomaly_path {self.root.parent}"
                raise FileNotFoundError(
                    f"{folder}: folder not found (--data.anomaly_path takes the SegmentMeIfYouCan root holding "
                    f"images/ and labels_masks/){inside}"
                )
        with counting_hidden_files(self.root):  # images/ and labels_masks/ are listed twice each
            images = images_by_stem(images_dir, self.IMAGE_EXTENSIONS)  # img0.png beside img0.jpg: an error
            log = DropLog(strict)
            for path in _unread_files(images_dir, list(images.values()), recursive=True):
                log.add("not_read", path, None, f"not read (only {', '.join(self.IMAGE_EXTENSIONS)} directly in images/)")
            if not images:
                unread = f"; {log.summary()}" if log.total else ""  # images/ of .bmp only: say what is there
                raise FileNotFoundError(f"{images_dir}: no images ({', '.join(self.IMAGE_EXTENSIONS)}){unread}")
            masks = label_masks(labels_dir, list(images))
            not_png: dict[str, list[Path]] = {}  # a mask saved as .jpg / .gif / .bmp / .tif is not read: say so
            for path in visible_files(labels_dir):
                if path.suffix.lower() != ".png":
                    not_png.setdefault(path.stem, []).append(path)
            self.items: list[tuple[Path, Path, str]] = []
            unlabelled = []
            for stem, image in images.items():
                label = masks.get(stem)
                if label is None:
                    others = sorted(p for suffix in MASK_SUFFIXES for p in not_png.get(f"{stem}{suffix}", []))
                    why = ""
                    if others:
                        jpeg = others[0].suffix.lower() in (".jpg", ".jpeg")
                        why = f"; {others[0].name} is there, but masks must be PNG" + (
                            " (JPEG alters label values)" if jpeg else ""
                        )
                    if require_labels or others:  # a mask there but unreadable: no benchmark image, not dropped
                        fix = (
                            "a mask that is there but cannot be read is an error, not an unlabelled image: save it "
                            "as PNG (values 0 / 1 / 255)"
                            if others
                            else "SegmentMeIfYouCan's unlabelled benchmark images are left out, counted, with "
                            "require_labels=False (what test does unless --data.strict true)"
                        )
                        raise LabelFormatError(
                            image, None, f"no label mask {labels_dir / (stem + '.png')} (or "
                            f"{stem}_labels_semantic.png){why}; {fix}",
                        )  # fmt: skip
                    unlabelled.append(image.name)
                    continue
                try:
                    check_decodes(image)
                except LabelFormatError as err:
                    log.add("undecodable", image, None, err.reason)
                    continue
                self.items.append((image, label, stem))
            # every candidate mask of an image is its own, SMIYC's colour previews (<name>_labels_semantic_color) too
            owned = {f"{stem}{suffix}" for stem in images for suffix in (*MASK_SUFFIXES, "_labels_semantic_color")}
            orphans = [p.name for p in visible_files(labels_dir, (".png",)) if p.stem not in owned]
        if orphans:
            warnings.warn(
                f"AnomalyDataset({self.root}): {len(orphans)} mask(s) in {labels_dir.name}/ belong to no image and "
                f"are not used, e.g. {orphans[:3]}",
                LabelWarning,
                stacklevel=2,
            )
        if unlabelled:
            warnings.warn(
                f"AnomalyDataset({self.root}): dropped {len(unlabelled)} image(s) without a label mask (SegmentMeIfYouCan's "
                f"benchmark images have none), e.g. {unlabelled[:3]}",
                LabelWarning,
                stacklevel=2,
            )
        log.report(f"AnomalyDataset({self.root}), files left out ({STRICT_HINT})", stacklevel=2)
        if not self.items:
            raise FileNotFoundError(f"{labels_dir}: no label masks for the readable images in {images_dir}")

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
    (3, H, W), "mask": int64 (H, W), "name": id}``. A missing semantic map (``.png``, any case) is an error at
    construction; each map's size and ids are checked when its item is read, and an image OpenCV cannot decode
    at all is an error naming it then. Not checked: a truncated image whose header reads (OpenCV fills the rest
    with grey), since a full decode of every training image at setup would cost about one more epoch of
    reading. Images are read as stored (EXIF orientation not applied), as their maps.

    ``kind``: ``labelIds`` for maps of Cityscapes label ids (KITTI's ``data_semantics``), read as the 19 train ids
    (:meth:`_read_map`); ``labelTrainIds`` or None: the maps' values as they are.
    """

    mask_what = "semantic map"
    #: what to give instead of a map holding ids past Cityscapes' label ids
    label_ids_hint = (
        "give KITTI's semantic/ maps as downloaded (its data_semantics: Cityscapes label ids); maps of other ids are "
        "read as they are with --data.cityscapes_ids unset"
    )

    def __init__(
        self,
        kitti_root: str | Path,
        ids: Sequence[str],
        transform: A.Compose | None = None,
        num_classes: int | None = None,
        kind: Literal["labelIds", "labelTrainIds"] | None = None,
    ):
        if kind is not None and kind not in CITYSCAPES_MAPS:
            raise ValueError(f"{type(self).__name__}: kind must be one of {list(CITYSCAPES_MAPS)} or None, got {kind!r}")
        base = resolve_kitti_split(kitti_root)
        images = images_by_stem(base / "image_2")
        maps = images_by_stem(base / "semantic", (".png",)) if (base / "semantic").is_dir() else {}
        self.transform = transform
        self.num_classes = num_classes
        self.kind = kind
        self.items: list[tuple[Path, Path, str]] = []
        for image_id in ids:
            if image_id not in images:
                raise FileNotFoundError(f"{base / 'image_2'}: no image for id {image_id!r}")
            if image_id not in maps:
                semantic = base / "semantic" / f"{image_id}.png"
                hint = ""
                if image_id.endswith(CITYSCAPES_IMAGE_SUFFIX):  # Cityscapes frames copied into image_2/
                    hint = f"; {CITYSCAPES_HINT}"
                raise FileNotFoundError(f"{semantic}: semantic map missing for image {images[image_id]}{hint}")
            self.items.append((images[image_id], maps[image_id], image_id))

    def _check_values(self, mask: np.ndarray, path: Path) -> None:
        """With ``num_classes``: every id must be a class or void. An id past the classes ended training in a
        bare 'Target 20 is out of bounds' from cross-entropy, naming no file, and 254 was taken silently for a
        pasted outlier (the outlier-exposure target)."""
        if self.num_classes is None:
            return
        outside = (mask >= self.num_classes) & (mask != IGNORE_INDEX)
        if outside.any():
            bad = np.unique(mask[outside]).tolist()
            raise LabelFormatError(
                path, None, f"class ids {bad[:10]} are not classes of the model (0..{self.num_classes - 1}, "
                f"{IGNORE_INDEX} = void{'; 254 is reserved for pasted outliers' if 254 in bad else ''}): set "
                "--model.network.init_args.num_classes, or map them to 255. KITTI's semantics maps hold Cityscapes "
                "labelIds (--data.cityscapes_ids labelIds reads them as its 19 train ids, road = 0, as its "
                "benchmark scores them); one's own ids need --model.road_ids their road classes too (the default "
                "[0, 1] is the synthetic set's road and lane marking), where outliers are pasted and the image "
                "score looks",
            )  # fmt: skip

    def _read_map(self, path: Path) -> np.ndarray:
        """A labelIds map as Cityscapes' train ids (:data:`~domains.driving.classes.CITYSCAPES_LABEL_TO_TRAIN_ID`,
        the void classes 255), as its evaluation scores them: read raw, the void classes were trained on and
        counted in val/miou (a prediction perfect on the 19 scored classes that called void road scored 0.665).
        Other maps as they are."""
        label = read_label_map(path)
        if self.kind != "labelIds":
            return label
        outside = (label >= len(CITYSCAPES_LABEL_TO_TRAIN_ID)) & (label != IGNORE_INDEX)
        if outside.any():
            raise LabelFormatError(
                path, None, f"ids {np.unique(label[outside]).tolist()[:10]} are not Cityscapes label ids "
                f"(0..{len(CITYSCAPES_LABEL_TO_TRAIN_ID) - 1}, 255): {self.label_ids_hint}",
            )  # fmt: skip
        return _LABEL_TO_TRAIN_ID[label]

    def image_classes(self) -> list[set[int]]:
        """The class ids each semantic map holds (void left out), for repeat-factor sampling: reads every map."""
        return [set(np.unique(self._read_map(path)).tolist()) - {IGNORE_INDEX} for _, path, _ in self.items]


# ------------------------------------------------------------------------------------------------ Cityscapes

#: its fine label maps, ``gtFine/<split>/<city>/<city>_<seq>_<frame><suffix>.png``, by ``--data.cityscapes_ids``;
#: either kind is trained on and scored as Cityscapes' 19 train ids, labelIds converted when read
CITYSCAPES_MAPS = {"labelIds": "_gtFine_labelIds", "labelTrainIds": "_gtFine_labelTrainIds"}
#: the model settings Cityscapes maps need: (num_classes, road_ids) of its train ids
CITYSCAPES_MODEL = (len(CITYSCAPES_TRAIN_CLASSES), (CITYSCAPES_TRAIN_CLASSES.index("road"),))
#: labelId -> train id of any uint8 value: void classes and values past the label ids -> 255
_LABEL_TO_TRAIN_ID = np.full(256, IGNORE_INDEX, np.uint8)
_LABEL_TO_TRAIN_ID[: len(CITYSCAPES_LABEL_TO_TRAIN_ID)] = CITYSCAPES_LABEL_TO_TRAIN_ID
CITYSCAPES_HINT = (
    "Cityscapes is read as downloaded: give --data.data_path the folder holding leftImg8bit/ and gtFine/ "
    "(leftImg8bit/<split>/<city>/<frame>_leftImg8bit.png, gtFine/<split>/<city>/<frame>_gtFine_labelIds.png or "
    "_gtFine_labelTrainIds.png)"
)


def cityscapes_model_settings() -> str:
    """The command-line settings a model trained on Cityscapes maps (either kind) needs, for messages."""
    num_classes, road_ids = CITYSCAPES_MODEL
    return f"--model.network.init_args.num_classes {num_classes} --model.road_ids {list(road_ids)}"


def _check_train_id_model(maps: str, num_classes: int | None) -> None:
    """Maps read as Cityscapes' train ids need a model of as many classes: a 34-class model on the raw labelIds
    trained on the void classes and counted them in val/miou."""
    if num_classes is not None and num_classes != CITYSCAPES_MODEL[0]:
        raise ValueError(
            f"{maps} are trained on and scored as Cityscapes' {CITYSCAPES_MODEL[0]} train ids (road = "
            f"{CITYSCAPES_MODEL[1][0]}; labelIds' void classes are 255, ignored, as Cityscapes' evaluation does), but "
            f"the model has {num_classes} classes: give {cityscapes_model_settings()}"
        )


def _cityscapes_map_kind(maps_root: Path, splits: Sequence[str], kind: str | None) -> str:
    """Which maps to read: ``kind`` (``--data.cityscapes_ids``), else the kind ``gtFine/`` holds, else, when it
    holds both (cityscapesscripts' createTrainIdLabelImgs writes the train ids beside the label ids), the train
    ids, which need no conversion; an error when it holds neither."""
    if kind is not None:
        if kind not in CITYSCAPES_MAPS:
            raise ValueError(f"--data.cityscapes_ids must be one of {list(CITYSCAPES_MAPS)} or null, got {kind!r}")
        return kind
    present = [
        name
        for name, suffix in CITYSCAPES_MAPS.items()
        if any(next((maps_root / split).glob(f"*/*{suffix}.png"), None) for split in splits)
    ]
    if not present:
        raise FileNotFoundError(
            f"{maps_root}: no *_gtFine_labelIds.png or *_gtFine_labelTrainIds.png maps in "
            f"{'/, '.join(splits)}/<city>/ ({CITYSCAPES_HINT})"
        )
    return present[-1]  # labelTrainIds where both are there


def read_cityscapes_semantic(
    root: str | Path, kind: str | None = None, num_classes: int | None = None, strict: bool = False
) -> tuple[str, dict[str, list[tuple[Path, Path, str, str]]]]:
    """The labelled frames of a Cityscapes download, per split read (``train``, ``val``, where both
    ``leftImg8bit/<split>`` and ``gtFine/<split>`` exist): ``(image, map, frame id, city)``, and which maps
    (``kind``, see :func:`_cityscapes_map_kind`). The frame id is the file name less ``_leftImg8bit``
    (``aachen_000000_000019``). An image without its map is an error naming the map; files in ``leftImg8bit/``
    not read (another format, outside a city folder) are counted in one warning (errors with ``strict``).

    Either kind of map is read as Cityscapes' 19 train ids (:class:`CityscapesSegDataset`), so a model of
    ``num_classes`` other than 19 is an error saying what to give: a 34-class model on the raw labelIds trained
    on the void classes and counted them in val/miou."""
    root = Path(root)
    if not (root / "gtFine").is_dir():
        raise FileNotFoundError(f"{root / 'gtFine'}: folder not found ({CITYSCAPES_HINT}; gtCoarse is not read)")
    images_root, maps_root, splits = cityscapes_splits(root)
    kind = _cityscapes_map_kind(maps_root, splits, kind)
    _check_train_id_model(f"--data.data_path {root}: Cityscapes' {kind} maps", num_classes)
    suffix = CITYSCAPES_MAPS[kind]
    found: dict[str, list[tuple[Path, Path, str, str]]] = {}
    log = DropLog(strict)
    with counting_hidden_files(images_root):
        for split in splits:
            items, taken = [], []
            for city in (p for p in visible_entries(images_root / split) if p.is_dir()):
                images = images_by_stem(city, stem=lambda p: p.stem.removesuffix(CITYSCAPES_IMAGE_SUFFIX))
                for frame, image in sorted(images.items()):
                    label = maps_root / split / city.name / f"{frame}{suffix}.png"
                    if not label.is_file():
                        raise FileNotFoundError(f"{label}: {kind} map missing for image {image}")
                    items.append((image, label, frame, city.name))
                    taken.append(image)
            for path in _unread_files(images_root / split, taken, recursive=True):
                log.add("not_read", path, None, f"not read (only {', '.join(IMAGE_EXTENSIONS)} in a city folder)")
            found[split] = items
    log.report(f"--data.data_path {root}, files left out ({STRICT_HINT})")
    if not any(found.values()):
        raise FileNotFoundError(f"{images_root}: no images in {'/, '.join(splits)}/<city>/ ({CITYSCAPES_HINT})")
    converted = ", read as train ids, void 255" if kind == "labelIds" else ""
    rank_zero_info(
        f"Cityscapes {root}: {kind} maps (*{suffix}.png{converted}; the model needs {cityscapes_model_settings()}), "
        + ", ".join(f"{split} {len(items)} frames" for split, items in found.items())
    )
    return kind, found


class CityscapesSegDataset(SemanticSegDataset):
    """Cityscapes frames with their gtFine maps (``items``: ``(image, map, frame id)``, and which ``kind`` of
    maps, from :func:`read_cityscapes_semantic`), read and checked as :class:`SemanticSegDataset`'s; labelIds
    maps as train ids (:meth:`_read_map`)."""

    mask_what = "gtFine map"
    label_ids_hint = (
        "give the gtFine labelIds maps as downloaded (train-id maps are *_gtFine_labelTrainIds.png, read with "
        "--data.cityscapes_ids labelTrainIds)"
    )

    def __init__(
        self,
        items: Sequence[tuple[Path, Path, str]],
        kind: Literal["labelIds", "labelTrainIds"],
        transform: A.Compose | None = None,
        num_classes: int | None = None,
    ):
        if kind not in CITYSCAPES_MAPS:
            raise ValueError(f"CityscapesSegDataset: kind must be one of {list(CITYSCAPES_MAPS)}, got {kind!r}")
        self.items, self.kind, self.transform, self.num_classes = list(items), kind, transform, num_classes



def segmentation_transforms(
    train: bool, image_size: tuple[int, int] | None = None, augment: bool = True, seed: int | None = None
) -> A.Compose | None:
    """Train: horizontal flip and scale crops (to ``image_size``) or scale jitter; eval: fit into ``image_size``
    keeping the aspect ratio (never squashed: 4:3 crops of the synthetic test scenes squashed to 640x192 gave
    the shipped model pixel AP 0.43, fitted 0.72); ``pad_collate`` pads a batch of mixed shapes.

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
        return A.Compose([A.LongestMaxSize(max_size_hw=(image_size[0], image_size[1]))], seed=seed)
    return None


class PredictImages(Dataset):
    """Your own road photos for ``predict`` (no labels): items as :class:`AnomalyDataset`'s without ``label``.
    ``images``: ``(path, height, width, name)`` from :func:`~domains.driving.common.predict_images`."""

    def __init__(self, images: Sequence[tuple[Path, int, int, str]], transform: A.Compose | None = None):
        self.images, self.transform = list(images), transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        path, *_, name = self.images[i]
        image = read_rgb(path)
        orig_size = (int(image.shape[0]), int(image.shape[1]))
        if self.transform is not None:
            image = self.transform(image=image)["image"]
        tensor = to_image_tensor(image)
        return {
            "image": tensor,
            "name": name,
            "orig_size": orig_size,
            "unpadded_size": (int(tensor.shape[-2]), int(tensor.shape[-1])),
            "image_path": str(path),
        }


#: photos above this many pixels at native size (``image_size`` null) are said: a 12 MP phone photo took 45 s and
#: 11.8 GB through the quick network on 2 cores
LARGE_PHOTO_PIXELS = 4_000_000


def _warn_full_size(images: Sequence[tuple[Path, int, int, str]], where) -> None:
    """One warning when ``predict`` would run photos far larger than road frames at their own size."""
    large = [(h * w, path, h, w) for path, h, w, _ in images if h * w > LARGE_PHOTO_PIXELS]
    if large:
        _, path, h, w = max(large)
        warnings.warn(
            f"--data.predict_path {where}: {len(large)} photo(s) above {LARGE_PHOTO_PIXELS / 1e6:g} MP (the largest "
            f"{path.name}, {w}x{h}) go through the network at their own size, since data.image_size is null: "
            "tens of seconds and gigabytes each. --data.image_size [H, W] (the training frames', e.g. [192, 640]) "
            "fits them into that size",
            UserWarning,
            stacklevel=3,
        )


class SegmentationDataModule(SplitLoaders):
    """Road-scene segmentation (KITTI layout or a Cityscapes download) and road-anomaly test / predict.

    Train / val: a KITTI-layout set split by sequence, or a Cityscapes download (its own split, or by city).

    Batches are dicts (``image``, ``mask`` or ``label``, ``name``); with ``image_size`` null, images of different
    sizes are padded (masks with 255 = void) by :func:`pad_collate`.

    Args:
        data_path: KITTI-layout root with ``image_2/`` and ``semantic/`` class maps, or a Cityscapes root as
            downloaded (``leftImg8bit/`` and ``gtFine/``: its own train / val split where it holds both, else
            split by city); null: the synthetic set, generated on first use under data/driving/synthetic_kitti.
        image_size: [H, W] training crops are resized to and evaluation images fitted into, keeping their aspect
            ratio; null: native size.
        batch_size: images per batch.
        num_workers: loader processes; null: one less than the CPU cores, at most 4.
        augment: training augmentation.
        seed: seed of the split, the training order and the augmentation (each item's from the seed, the epoch
            and its index, whatever the worker count or start method).
        max_items: read at most this many training images (smoke tests); with a Cityscapes download, this many
            of each split.
        anomaly_path: test / predict set in the SegmentMeIfYouCan layout (``images/``, ``labels_masks/`` with
            0 normal, 1 anomaly, 255 void: RoadAnomaly21, RoadObstacle21, Fishyscapes); null: the synthetic one.
        split_fractions: train / val shares, split by sequence.
        repeat_threshold: repeat-factor sampling of training images by the classes their maps hold; null: off.
        predict_path: ``predict`` on your own photos instead of the anomaly test set: a folder (searched
            recursively) or one image; no labels needed, and neither data_path nor anomaly_path is read.
            Unreadable images are skipped and counted.
        strict: files left out raise, naming them, instead of one counted warning: anomaly-set images without a
            label mask (SegmentMeIfYouCan's unlabelled benchmark images), images that cannot be decoded whole,
            and files in ``images/`` or ``image_2/`` that are not read (another format, a subfolder).
        cityscapes_ids: which Cityscapes maps to read: ``labelIds`` (``*_gtFine_labelIds.png``, the download's
            own) or ``labelTrainIds``; either is trained on and scored as the 19 train ids (labelIds converted,
            their void classes 255), so the model needs ``--model.network.init_args.num_classes 19
            --model.road_ids [0]``; null: the kind gtFine/ holds, labelTrainIds where it holds both. With a KITTI
            layout, which ids its ``semantic/`` maps hold: ``labelIds`` for KITTI's own (``data_semantics``, scored
            as Cityscapes' 19 train ids by its benchmark), ``labelTrainIds``; null: read as they are (the synthetic
            set's ids).
    """

    INPUT_SETTINGS = ("image_size",)
    GROUP_UNIT = "images"
    AUGMENTATION_FOLLOWS_WORKERS = False  # SeededItems: an item's draws follow the seed, epoch and item alone

    def split_groups(self, name: str) -> set[str] | None:
        """The image ids of the road-scene split ``name`` (train / val), for the checkpoint's leak check; the
        anomaly test set is never trained on."""
        dataset = self.datasets.get(name) if name in ("train", "val") else None
        return None if dataset is None else {image_id for *_, image_id in dataset.items}

    def split_settings(self, hparams: dict, stage: str) -> dict:
        """``test`` reads the anomaly set (``anomaly_path``), which no split setting moves."""
        return {} if stage == "test" else super().split_settings(hparams, stage)

    def data_set_settings(self, stage: str) -> tuple[str, ...]:
        """Validation is drawn from the road scenes (``data_path``, and which Cityscapes maps), whatever anomaly
        set ``test`` reads."""
        return ("anomaly_path",) if stage == "test" else ("data_path", "cityscapes_ids")

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
        predict_path: str | None = None,
        strict: bool = False,
        cityscapes_ids: Literal["labelIds", "labelTrainIds"] | None = None,
    ):
        super().__init__()
        if len(split_fractions) != 2:
            raise ValueError(
                f"SegmentationDataModule: split_fractions needs 2 values (train, val), got {split_fractions}"
            )
        self.save_hyperparameters()
        self.data_path = data_path
        self.image_size = tuple(image_size) if image_size else None
        self.set_loader_options(batch_size, num_workers)
        self.augment = augment
        self.seed = seed
        self.max_items = check_cap(max_items, "--data.max_items")
        self.anomaly_path = anomaly_path
        self.split_fractions = tuple(split_fractions)
        self.repeat_threshold = repeat_threshold
        self.predict_path = predict_path
        self.strict = strict
        self.cityscapes_ids = cityscapes_ids
        self.datasets: dict[str, Dataset] = {}

    def prepare_data(self) -> None:
        """Generates only the synthetic sets the command reads: ``test`` the anomaly split alone (with one's own
        ``anomaly_path`` it generated 1,500 KITTI scenes, 300 MB, for nothing), ``fit`` / ``validate`` the
        scenes."""
        if self.predicting_own_images():
            return
        stage = self.running_stage()
        if self.data_path is None and stage in (None, "fit", "validate"):
            default_kitti_root()
        if self.anomaly_path is None and stage in (None, "test", "predict"):
            default_anomaly_root()

    def setup(self, stage: str | None = None) -> None:
        if stage in ("predict", None) and self.predict_path is not None and "predict" not in self.datasets:
            images = predict_images(self.predict_path)
            if self.image_size is None:
                _warn_full_size(images, self.predict_path)
            self.datasets["predict"] = PredictImages(images, segmentation_transforms(False, self.image_size))
        if stage == "predict" and self.predict_path is not None:
            return  # your own photos only: neither data_path nor anomaly_path is read
        with holding_generated_sets():  # a --force run waits for the listing, not the run: never half a set
            if stage in (None, "fit", "validate") and "train" not in self.datasets:
                root = finished_data_path(self.data_path) if self.data_path is not None else default_kitti_root()
                task = getattr(getattr(self, "trainer", None), "lightning_module", None)
                classes = getattr(task, "num_classes", None)  # the model's: map ids past them are refused by name
                read = self._cityscapes_sets if is_cityscapes_root(root) else self._kitti_sets
                self.datasets.update(read(root, stage, classes))
            if stage in (None, "test", "predict") and "test" not in self.datasets:
                if self.anomaly_path is not None:
                    anomaly = finished_data_path(self.anomaly_path, "--data.anomaly_path")
                else:
                    anomaly = default_anomaly_root()
                transform = segmentation_transforms(False, self.image_size)
                # SMIYC's unlabelled benchmark images (beside its labelled validation_*): counted, not scored
                self.datasets["test"] = AnomalyDataset(
                    anomaly, transform, require_labels=self.strict, strict=self.strict
                )
                rank_zero_info(f"anomaly test set {anomaly}: {len(self.datasets['test'])} labelled images")

    def train_sampler(self) -> SeededItems:
        """The shared training order (repeat-factor sampling or a shuffle, from (``seed``, epoch):
        :meth:`SplitLoaders.train_sampler`) with each item's augmentation seeded from (``seed``, epoch, index)
        alone (:class:`SeededItems`)."""
        return SeededItems(super().train_sampler(), self.seed)

    def _train_transform(self, split: str) -> A.Compose | None:
        return segmentation_transforms(split == "train", self.image_size, self.augment, self.seed)

    def _kitti_sets(self, root: Path, stage: str | None, num_classes: int | None) -> dict[str, Dataset]:
        """The train / val datasets of a KITTI-layout set, split by driving sequence."""
        base = resolve_kitti_split(root)
        kind = self.cityscapes_ids
        if kind is not None:
            _check_train_id_model(f"--data.cityscapes_ids {kind}: {base / 'semantic'}", num_classes)
            rank_zero_info(f"{base / 'semantic'}: Cityscapes {kind} maps"
                           f"{', read as train ids, void 255' if kind == 'labelIds' else ''}")  # fmt: skip
        elif num_classes == len(CITYSCAPES_LABEL_TO_TRAIN_ID):
            warnings.warn(
                f"{base / 'semantic'}: a {num_classes}-class model reads the maps' label ids as they are, so the void "
                "classes (ego vehicle, out of roi, ...) are trained on and counted in val/miou. KITTI's semantics "
                "benchmark, as Cityscapes', scores the 19 train ids: --data.cityscapes_ids labelIds reads KITTI's "
                f"semantic/ maps so ({cityscapes_model_settings()})",
                UserWarning,
                stacklevel=2,
            )
        with counting_hidden_files(base / "image_2"):  # listed again per split: counted once
            log = DropLog(self.strict)
            images = images_by_stem(base / "image_2")
            for path in _unread_files(base / "image_2", list(images.values())):
                log.add("not_read", path, None, f"not an image this reader takes ({', '.join(IMAGE_EXTENSIONS)})")
            log.report(f"--data.data_path {root}, files left out ({STRICT_HINT})")
            ids = sorted(images)
            ids = ids[: self.max_items] if self.max_items is not None else ids
            if not ids:
                raise FileNotFoundError(f"{base / 'image_2'}: no images")
            groups = read_sequence_groups(base, ids)
            split = group_split(groups, self.split_fractions, seed=self.seed, names=("train", "val"))
            self.check_splits(split, stage, sequence_split_hint(self.split_fractions))
            return {
                name: SemanticSegDataset(root, [ids[i] for i in idx], self._train_transform(name), num_classes, kind)
                for name, idx in split.items()
            }

    def _cityscapes_sets(self, root: Path, stage: str | None, num_classes: int | None) -> dict[str, Dataset]:
        """The train / val datasets of a Cityscapes download: its own train / val split when it holds both
        (``split_fractions`` unused, ``max_items`` capping each), else the one split it holds, split by city (a
        city's frames are neighbours, as a drive's: never in two splits)."""
        kind, found = read_cityscapes_semantic(root, self.cityscapes_ids, num_classes, self.strict)
        cap = slice(self.max_items)
        if set(found) == {"train", "val"}:
            items = {name: found[name][cap] for name in ("train", "val")}
            order = [(name, item[3]) for name, split in items.items() for item in split]  # (split, city)
            index = {name: [i for i, (n, _) in enumerate(order) if n == name] for name in items}
            rank_zero_info(f"Cityscapes' own train / val split (--data.split_fractions unused):\n"
                           f"{split_table(index, [city for _, city in order])}")  # fmt: skip
            hint = f"{root}: add frames to leftImg8bit/train and leftImg8bit/val"
        else:
            (frames,) = found.values()
            index = group_split([city for *_, city in frames], self.split_fractions, seed=self.seed,
                                names=("train", "val"))  # fmt: skip
            # capped after the split: the frames come city by city, so a cap first kept one city, no split
            items = {name: [frames[i] for i in idx][cap] for name, idx in index.items()}
            hint = f"splits are whole cities: set --data.split_fractions (now {list(self.split_fractions)}) or add data"
        self.check_splits(items, stage, hint)
        return {
            name: CityscapesSegDataset([item[:3] for item in split], kind, self._train_transform(name), num_classes)
            for name, split in items.items()
        }

    collate_fn = staticmethod(pad_collate)
