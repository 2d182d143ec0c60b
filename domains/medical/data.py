"""Multi-reader lesion segmentation data: LIDC PNG crops, the LIDC pickle, Decathlon NIfTI slices.

Every dataset yields the same item, so models and metrics never care where the data came from:

    {"image": float32 (1,H,W) in [0,1], "masks": float32 (R,H,W) in {0,1}, "id": str, "group": str}

(Decathlon items add ``"source"``, enough to write a predicted slice back into a NIfTI volume.)
``R`` is the number of readers (4 for LIDC, 1 for Decathlon); an all-zero reader mask means that reader
marked nothing. Splits are by group (patient / series / case), never by slice, because neighbouring slices
of one patient are near copies and a slice-level split leaks them into the test set.

:class:`MedicalDataModule` adds the training-time view: ``"mask"`` (1,H,W), the reader a step trains on
(one random reader per image per step, as in PHiSeg, or every (image, reader) pair), and augmentation
applied identically to the image and every reader mask.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import pickle
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, default_collate

from domains.medical.volumes import (
    FLOAT32_MAX,
    PERCENTILES,
    axial_axes,
    axial_slices,
    nonfinite_affine_problem,
    percentile_window,
    window_problem,
)
from shared.data import (
    EpochSeeded,
    SplitLoaders,
    check_cap,
    group_split,
    reseed_pipeline,
    same_setting,
    segmentation_augmentations,
)
from shared.files import (
    counting_hidden_files,
    distinct_names,
    holding_generated_sets,
    is_hidden,
    vanished_note,
    visible_entries,
    visible_inputs,
)
from shared.images import DECODE_ERRORS, ImageDecodeError, check_jpeg_whole, stretch_to_unit
from shared.task import CheckpointMismatchError

SPLITS = ("train", "val", "test")
DATA_FORMATS = ("lidc_png", "lidc_pickle", "decathlon")
#: Pillow modes of grey images (1-bit, 8-bit, 16- and 32-bit): a LIDC file in another mode is decoded at setup
GREY_MODES = ("1", "L", "I", "I;16", "I;16B", "I;16L")


def _unreadable_nifti(path: Path, exc: BaseException) -> str:
    """The error for a NIfTI file the reader failed on, with the error at the bottom of the chain: MONAI wraps
    the reader's in "applying transform <LoadImaged object at 0x...>", which says nothing of the file. A plain
    ``.nii`` saved under a ``.nii.gz`` name (readers choose gzip by the name) is said as such, with the fix."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    if str(path).lower().endswith(".gz") and _plain_nifti_header(path):
        return f"{path}: named .gz but not gzip-compressed: rename to .nii ({Path(path).name[:-3]})"
    return f"{path}: cannot read NIfTI: truncated, or no NIfTI ({type(exc).__name__}: {exc})"


def _plain_nifti_header(path: Path) -> bool:
    """Whether ``path`` begins as an uncompressed NIfTI-1 / -2 header does (``sizeof_hdr`` 348 or 540, either
    byte order), not as gzip."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    return len(head) == 4 and {int.from_bytes(head, "little"), int.from_bytes(head, "big")} & {348, 540} != set()


class MedicalDataWarning(UserWarning):
    """Medical data read in a way worth knowing (e.g. 16-bit PNGs stretched per image)."""


class MedicalDataError(ValueError):
    """Bad content in a medical data file; the message starts with the file (and key/slice) at fault."""


class ColourImageError(MedicalDataError):
    """An image in true colour (channels that differ) where a grey scan is read: refused for labelled data,
    read as its luminance by ``predict`` on one's own images (:func:`build_predict_dataset`)."""


# --------------------------------------------------------------------------------------------- helpers


def _check_split(split: str, where: str) -> None:
    if split not in (*SPLITS, "all"):
        raise ValueError(f"{where}: split must be one of {[*SPLITS, 'all']}, got {split!r}")


def _center_crop(array: np.ndarray, crop_size: int | None, where: str) -> np.ndarray:
    """Centre-crop the last two axes to ``crop_size`` (real LIDC crops are 180x180, models use 128)."""
    if crop_size is None:
        return array
    h, w = array.shape[-2:]
    if h < crop_size or w < crop_size:
        raise MedicalDataError(f"{where}: image is {h}x{w}, smaller than crop_size={crop_size}")
    top, left = (h - crop_size) // 2, (w - crop_size) // 2
    return array[..., top : top + crop_size, left : left + crop_size]


def _split_by_group(
    groups: list[str], split: str, fractions: Sequence[float], seed: int
) -> tuple[list[int], dict[str, int]]:
    """Indices of ``split`` ("all": every item) and the number of groups each split got (for the message
    :meth:`MedicalDataModule.setup` gives when a split a stage needs is empty)."""
    parts = group_split(groups, fractions=fractions, seed=seed, names=SPLITS, verbose=False)
    counts = {name: len({groups[i] for i in idx}) for name, idx in parts.items()}
    return (list(range(len(groups))) if split == "all" else parts[split]), counts


def _first_few(items: Sequence[str], shown: int = 3) -> str:
    """``items`` for a message: the first ``shown`` and how many more."""
    more = f"; ... {len(items) - shown} more" if len(items) > shown else ""
    return "; ".join(items[:shown]) + more


def _binary(masks: np.ndarray) -> np.ndarray:
    """Whether each mask of ``masks`` (..., H, W) is {0, v} with v > 0, or all zero: every pixel 0 or the
    maximum, in one pass for a slice's readers stacked (a fifth of ``np.unique``'s time, which sorts; 40 us
    for four 128 px masks). False may still be binary to :func:`_not_binary` (NaN), which says."""
    flat = masks.reshape(*masks.shape[:-2], -1)
    if flat.shape[-1] == 0:
        return np.ones(flat.shape[:-1], bool)
    top = flat.max(axis=-1, keepdims=True)
    return ((flat == top) | (flat == 0)).all(axis=-1) & (top[..., 0] >= 0)


def _not_binary(mask: np.ndarray, where: str) -> str | None:
    """The error for a mask whose values are not {0, v} (a soft or multi-label mask), or None."""
    if _binary(mask):
        return None
    values = np.unique(mask)
    fg = values[values != 0]
    if len(fg) > 1 or (len(fg) == 1 and fg[0] < 0):
        shown = ", ".join(str(v) for v in values[:6]) + (" ..." if len(values) > 6 else "")
        return f"{where}: mask is not binary: values {{{shown}}} (expected 0 and one foreground value)"
    return None


def _binarise(mask: np.ndarray, where: str) -> np.ndarray:
    """{0, v} -> {0, 1} uint8; any other value set is an error (:func:`_not_binary`)."""
    error = _not_binary(mask, where)
    if error:
        raise MedicalDataError(error)
    return (mask != 0).astype(np.uint8)


def _to_item(record: dict) -> dict:
    """numpy record -> tensors (the common item format)."""
    item = dict(record)
    item["image"] = torch.from_numpy(np.ascontiguousarray(record["image"], dtype=np.float32))[None]
    item["masks"] = torch.from_numpy(np.ascontiguousarray(record["masks"], dtype=np.float32))
    return item


class MedicalDataset(Dataset):
    """Shared API: ``load(i)`` gives numpy arrays (for augmentation), ``__getitem__`` gives tensors.

    Subclasses set ``ids``, ``groups`` and ``num_readers`` and implement ``load``.
    """

    ids: list[str]
    groups: list[str]
    num_readers: int

    def __len__(self) -> int:
        return len(self.ids)

    #: files ``predict`` left out before reading any item, each as "<path>: <why>" (:func:`build_predict_dataset`)
    not_predicted: Sequence[str] = ()

    def load(self, index: int) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict:
        return _to_item(self.load(index))

    def refused_item(self, index: int, error: str) -> dict:
        """A blank stand-in for item ``index``, which :meth:`load` refused with ``error`` (a volume's intensity
        window, NaN voxels): ``predict`` passes it on marked, so the task skips it and names it at the end
        (:meth:`~domains.medical.task.MedicalSegmentationTask.predict_step`) instead of the run dying on it
        with the files after it unwritten. 1x1: :func:`pad_collate` pads it to its batch mates."""
        return {
            "image": np.zeros((1, 1), np.float32),
            "masks": np.zeros((self.num_readers, 1, 1), np.uint8),
            "id": self.ids[index],
            "group": self.groups[index],
            "error": error,
        }


# ------------------------------------------------------------------------------------------- LIDC PNG


class LIDCPngDataset(MedicalDataset):
    """LIDC crops in the DeepMind HPU-Net PNG layout (also what :mod:`domains.medical.synthetic` writes).

    ``<root>/<split>/images/<patient>/<name>.png`` with readers ``<root>/<split>/gt/<patient>/<name>_l{r}.png``.
    The file listing (every reader mask's presence), each file's header and each mask's values are checked
    here, so a bad file stops the run at setup; an item's pixels are read again when it loads. ``max_items``
    (:class:`MedicalDataModule`'s cap of this split, not a reader option) limits those file checks to the
    images the cap keeps (:func:`_cap_indices`): ``validate`` on 48 of 180 images decoded all 720 masks.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        crop_size: int | None = 128,
        num_readers: int = 4,
        max_items: int | None = None,
    ):
        self.root = Path(root)
        self.split = split
        self.crop_size = crop_size
        if isinstance(num_readers, bool) or not isinstance(num_readers, int) or num_readers < 1:
            raise ValueError(f"--data.dataset_kwargs num_readers: a whole number of readers >= 1, got {num_readers!r}")
        self.num_readers = num_readers
        img_dir = self.root / split / "images"
        gt_dir = self.root / split / "gt"
        if not img_dir.is_dir():
            raise FileNotFoundError(
                f"{img_dir}: no such folder (expected <root>/<split>/images/<patient>/*.png)"
                + _level_hint(self.root)
            )
        if not gt_dir.is_dir():
            raise FileNotFoundError(
                f"{gt_dir}: no such folder (expected <root>/<split>/gt/<patient>/*_l0.png)"
            )
        found, ignored, missing = self._list(img_dir, gt_dir, num_readers)
        if missing:
            raise FileNotFoundError(self._missing_masks_message(missing, len(found) + len(missing)))
        self.image_paths = [path for path, _ in found]
        self.mask_paths = [readers for _, readers in found]
        self.ids = [f"{path.parent.name}/{path.stem}" for path in self.image_paths]
        self.groups = [path.parent.name for path in self.image_paths]
        if ignored:
            rank_zero_info(
                f"[LIDCPngDataset] {img_dir}: ignored {len(ignored)} entries that are not "
                f"<patient>/<name>.png (e.g. {ignored[0].name})"
            )
        if not self.image_paths:
            raise FileNotFoundError(f"{img_dir}: no images found (expected <patient>/<name>.png below it)")
        self._check_headers(img_dir, _cap_indices(len(self.image_paths), max_items))
        self._warn_unread_masks(gt_dir)
        self._warn_shared_patients()

    @staticmethod
    def _list(
        img_dir: Path, gt_dir: Path, num_readers: int
    ) -> tuple[list[tuple[Path, list[Path]]], list[Path], list[tuple[Path, list[Path]]]]:
        """The images below ``img_dir`` with their reader masks, the entries that are no
        ``<patient>/<name>.png``, and the images lacking reader masks with the masks they lack."""
        found, ignored, missing = [], [], []
        with counting_hidden_files(img_dir):  # a Mac's ._ files: one count over every patient folder
            for patient_dir in visible_entries(img_dir):
                if not patient_dir.is_dir():
                    ignored.append(patient_dir)
                    continue
                named: dict[str, Path] | None = None  # its reader masks (:func:`_reader_masks`), listed once
                for path in visible_entries(patient_dir):
                    if path.suffix.lower() != ".png" or not path.is_file():
                        ignored.append(path)
                        continue
                    if named is None:
                        named = _reader_masks(gt_dir / patient_dir.name)
                    names = [f"{path.stem}_l{r}.png" for r in range(num_readers)]
                    lacking = [gt_dir / patient_dir.name / name for name in names if name not in named]
                    (missing if lacking else found).append((path, lacking or [named[name] for name in names]))
        return found, ignored, missing

    def _missing_masks_message(self, missing: list[tuple[Path, list[Path]]], total: int) -> str:
        """Every missing reader mask counted, of this split and the other split folders (listed for this
        message only: one run says them all), the first few named per split. The DeepMind release has every
        reader's file for every image (an empty mask: the reader marked nothing), so a missing one is a
        damaged copy, to be restored; the hint to read fewer readers (which drops a reader from every image)
        only when every image lacks the same last ones."""
        per_split = {} if self.split in SPLITS else {self.split: (missing, total)}
        for other in SPLITS:
            img_dir, gt_dir = self.root / other / "images", self.root / other / "gt"
            if other == self.split:
                per_split[other] = (missing, total)
                continue
            if not (img_dir.is_dir() and gt_dir.is_dir()):
                continue
            try:
                with warnings.catch_warnings():  # its hidden files are said when the split itself is read
                    warnings.simplefilter("ignore")
                    found, _, lacking = self._list(img_dir, gt_dir, self.num_readers)
            except MedicalDataError:  # one mask twice (.png, .PNG): said when that split is read
                continue
            if lacking:
                per_split[other] = (lacking, len(found) + len(lacking))
        count = sum(len(masks) for images, _ in per_split.values() for _, masks in images)
        parts = []
        for split, (images, of) in per_split.items():
            names = [str(mask.relative_to(self.root)) for _, masks in images for mask in masks]
            parts.append(f"{split}/ {len(names)} in {len(images)} of its {of} images ({_first_few(names)})")
        last = self.num_readers - 1
        lacked = {  # the reader numbers each image lacks: alike, and the last ones, in every image, or not
            tuple(int(mask.stem.rpartition("_l")[2]) for mask in masks)
            for images, _ in per_split.values()
            for _, masks in images
        }
        first = min(lacked)[0]
        every = all(len(images) == of for images, of in per_split.values())
        if every and first > 0 and lacked == {tuple(range(first, last + 1))}:
            splits = ", ".join(f"{split}/" for split in per_split)
            hint = (
                f"every image of {splits} has readers _l0 .. _l{first - 1} only: to read {first} readers per "
                f"image give --data.dataset_kwargs '{{num_readers: N}}' with N = {first}"
            )
        else:
            hint = (
                f"the DeepMind release has all {self.num_readers} reader files for every image (a reader "
                "who marked nothing has an all-zero mask), so these are lost from this copy: restore them "
                "from the release (for a reader who marked nothing, an all-zero PNG of the image's size)"
            )
        return (
            f"{self.root}: {count} reader mask(s) missing (expected {self.num_readers} readers per image, "
            f"<split>/gt/<patient>/<name>_l0.png .. _l{last}.png): {'; '.join(parts)}; {hint}"
        )

    def _check_headers(self, img_dir: Path, indices: Sequence[int]) -> None:
        """Every image of ``indices`` (those the run reads) and its reader masks read as far as a cheap check
        goes, so a bad file stops the run at setup, named, not part-way through training: its header (a
        non-image, an empty file), a PNG's chunks (verified: a file cut short), a JPEG's end
        (:func:`~shared.images.check_jpeg_whole`), each mask's size against its image's. A file stored in
        colour (RGB, palette) is decoded (:meth:`_read`: grey stored as colour is accepted). Every mask is
        decoded and its values checked (binary, :func:`_not_binary`): a blurred or resized mask stopped
        training at the step that read it, hours into a run on the real set, without a checkpoint. All bad
        files in one message. 180 px release-like set, 500 images and their 2,000 masks: 0.3-0.5 s without the
        values, 1.0-1.4 s with them (0.3-0.5 ms a mask, mostly its decode; a busy 2-core machine)."""
        bad, soft = [], []
        for index in indices:
            path, mask_paths = self.image_paths[index], self.mask_paths[index]
            try:
                size = self._header_size(path)
                for mask_path in mask_paths:
                    mask_size = self._header_size(mask_path)
                    if mask_size != size:
                        raise MedicalDataError(
                            f"{mask_path}: mask is {mask_size[0]}x{mask_size[1]} but image {path} is "
                            f"{size[0]}x{size[1]}"
                        )
                    if error := _not_binary(self._read(mask_path), str(mask_path)):
                        soft.append(error)
            except MedicalDataError as err:
                bad.append(str(err))
        problems, checked = [], len(indices)
        kept = f" (only the {checked} of {len(self)} that max_items keeps were checked)"
        kept = kept if checked < len(self) else ""
        if bad:
            problems.append(
                f"{len(bad)} of {checked} images (or their reader masks) cannot be read{kept}: "
                f"{_first_few(bad)}"
            )
        if soft:
            problems.append(
                f"{len(soft)} of {checked * self.num_readers} reader masks are not binary{kept} (a "
                "reader's mask holds 0 and one value, 0 and 255 in the release; a blurred or interpolated "
                f"copy does not: restore these): {_first_few(soft)}"
            )
        if problems:
            raise MedicalDataError(f"{img_dir if bad else img_dir.parent / 'gt'}: {'; and '.join(problems)}")

    @classmethod
    def _header_size(cls, path: Path) -> tuple[int, int]:
        """(width, height) of an image or mask file from its header, checked as :meth:`_check_headers` says."""
        try:
            with Image.open(path) as image:
                size, mode, png = image.size, image.mode, image.format == "PNG"
                if png:
                    image.verify()
            if not png:  # a JPEG under a .png name, say
                check_jpeg_whole(path)
        except ImageDecodeError as err:
            raise MedicalDataError(str(err)) from None
        except DECODE_ERRORS as err:
            # Pillow's "cannot identify image file '<path>'" names the file a second time
            why = "no image format recognised" if isinstance(err, UnidentifiedImageError) else err
            raise MedicalDataError(f"{path}: cannot decode the image (corrupt or not an image: {why})") from None
        if mode not in GREY_MODES:
            cls._read(path)  # colour: grey if its channels agree
        return size

    def _warn_unread_masks(self, gt_dir: Path) -> None:
        """Reader masks the listing does not read, counted: readers past ``num_readers`` (a 5-reader set read
        as 4 scores GED and Hungarian IoU against fewer readers than it has) and masks of no image."""
        images = set(self.ids)
        extra, orphans, most = [], [], self.num_readers
        # names compared as text, a Path made only for a mask said (pathlib's glob took 55 us a mask)
        with os.scandir(gt_dir) as listing:
            patients = sorted(entry.name for entry in listing if entry.is_dir() and not is_hidden(entry.name))
        for patient in patients:
            with os.scandir(gt_dir / patient) as listing:
                names = sorted(entry.name for entry in listing if entry.name.lower().endswith(".png"))
            for name in names:
                stem, _, reader = name[: -len(".png")].rpartition("_l")
                known = f"{patient}/{stem}" in images
                if not reader.isdigit() or (known and int(reader) < self.num_readers) or is_hidden(name):
                    continue
                if known:
                    extra.append(gt_dir / patient / name)
                    most = max(most, int(reader) + 1)
                else:
                    orphans.append(gt_dir / patient / name)
        if extra:
            warnings.warn(
                f"{gt_dir}: {len(extra)} reader mask(s) past _l{self.num_readers - 1}.png are not read (e.g. "
                f"{extra[0].relative_to(gt_dir)}): the metrics compare with {self.num_readers} readers; with "
                f"{most} readers per image give --data.dataset_kwargs '{{num_readers: {most}}}'",
                MedicalDataWarning,
                stacklevel=3,
            )
        if orphans:
            warnings.warn(
                f"{gt_dir}: {len(orphans)} reader mask(s) belong to no image of {gt_dir.parent / 'images'} and "
                f"are not read (e.g. {orphans[0].relative_to(gt_dir)}: no {orphans[0].parent.name}/"
                f"{orphans[0].stem.rpartition('_l')[0]}.png)",
                MedicalDataWarning,
                stacklevel=3,
            )

    def _warn_shared_patients(self) -> None:
        """The split folders are the split: a patient also in an earlier split's folder (a copy, a merge) makes
        validation or test figures on patients the model trained on, which nothing else would say."""
        mine = set(self.groups)
        for other in SPLITS[: SPLITS.index(self.split)] if self.split in SPLITS else ():
            folder = self.root / other / "images"
            shared = sorted(mine & {p.name for p in folder.iterdir() if p.is_dir()}) if folder.is_dir() else []
            if shared:
                warnings.warn(
                    f"{self.root}: {len(shared)} patient folder(s) are in both {other}/ and {self.split}/ (e.g. "
                    f"{shared[0]}): the {self.split} figures include patients of {other}",
                    MedicalDataWarning,
                    stacklevel=2,
                )

    @staticmethod
    def _read(path: Path, upright: bool = False, luminance: bool = False) -> np.ndarray:
        """The grey pixels of an image or mask file, as stored; ``upright``: a JPEG's EXIF orientation applied
        (a phone photo comes out upright, as the driving tasks read photos), for images without masks. Grey
        stored as colour (equal channels) is one channel; true colour is :class:`ColourImageError`, or with
        ``luminance`` OpenCV's luminance (0.299 R + 0.587 G + 0.114 B), as the demo's upload reads it."""
        flags = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR if upright else cv2.IMREAD_UNCHANGED
        array = cv2.imread(str(path), flags)
        if array is None and not Path(path).is_file():  # listed at setup, gone now: not "corrupt"
            raise MedicalDataError(f"{path}: no such file (gone since the data were listed){vanished_note(path)}")
        if array is None:
            raise MedicalDataError(f"{path}: cannot decode the image (corrupt or not an image)")
        try:  # OpenCV fills a cut-short JPEG with grey (whatever its name says), saying so on stderr only
            check_jpeg_whole(path)
        except ImageDecodeError as err:
            raise MedicalDataError(str(err)) from None
        if array.ndim == 3:  # OpenCV's channel order: B, G, R(, A)
            if array.shape[2] in (3, 4) and (array[..., :3] == array[..., :1]).all():
                return array[..., 0]
            if array.shape[2] in (3, 4) and luminance:
                return cv2.cvtColor(np.ascontiguousarray(array[..., :3]), cv2.COLOR_BGR2GRAY)
            raise ColourImageError(
                f"{path}: expected a grayscale PNG, got {array.shape[2]} differing channels"
            )
        return array

    @classmethod
    def read_image(cls, path: Path, upright: bool = False, luminance: bool = False) -> np.ndarray:
        """The grey image at ``path`` as float32 (H, W) in [0, 1]: 8 bits / 255, 16 bits stretched per image.
        Also what ``predict`` on one's own 2-D images reads (:class:`ImageFileDataset`, ``upright`` and
        ``luminance``: see :meth:`_read`), so both agree."""
        raw = cls._read(path, upright, luminance)
        if raw.dtype == np.uint8:
            return raw.astype(np.float32) / 255.0
        if raw.dtype == np.uint16:  # a 12-bit CT in 16 bits: /65535 left it at most 0.06, nearly black
            return stretch_to_unit(raw, path, MedicalDataWarning)
        raise MedicalDataError(f"{path}: unsupported image dtype {raw.dtype} (8- or 16-bit grey expected)")

    def load(self, index: int) -> dict:
        path = self.image_paths[index]
        image = self.read_image(path)
        masks = []
        for mask_path in self.mask_paths[index]:
            mask = self._read(mask_path)
            if mask.shape != image.shape:
                raise MedicalDataError(
                    f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but image {path} is "
                    f"{image.shape[1]}x{image.shape[0]}"
                )
            masks.append(_binarise(mask, str(mask_path)))
        return {
            "image": _center_crop(image, self.crop_size, str(path)),
            "masks": _center_crop(np.stack(masks), self.crop_size, str(path)),
            "id": self.ids[index],
            "group": self.groups[index],
        }


def _level_hint(root: Path) -> str:
    """What a ``lidc_png`` root without ``<split>/images`` is likely: one split folder (``train/``, holding
    ``images/`` and ``gt/``) or the ``images/`` folder itself, given one level too deep; "" otherwise. The
    bare "<root>/train/train/images: no such folder" left the user to work out which level the reader
    wanted."""
    if (root / "images").is_dir() and (root / "gt").is_dir():
        return f"; {root} holds images/ and gt/, so it is one split folder: give its parent, {root.parent}"
    if root.name in ("images", "gt") and root.parent.name in SPLITS:
        above = root.parent.parent
        return f"; {root} is a split's {root.name}/ folder: give the folder above its split, {above}"
    return ""


def _reader_masks(folder: Path) -> dict[str, Path]:
    """The reader mask files in a patient's ``gt`` folder by name with the suffix in lower case:
    ``s0_l0.PNG`` is found as ``s0_l0.png``, as images may be ``.PNG`` (a Windows or camera export); both in
    one folder is an error naming them. One ``os.scandir``, whose listing says which entries are files: a stat
    per mask (four per image) was most of the listing's time."""
    try:
        with os.scandir(folder) as listing:
            files = sorted(e.name for e in listing if e.name.lower().endswith(".png") and e.is_file())
    except (FileNotFoundError, NotADirectoryError):  # no gt folder for the patient: every mask is missing
        return {}
    found: dict[str, Path] = {}
    for file in files:
        path, name = folder / file, f"{file[: -len('.png')]}.png"
        if name in found:
            raise MedicalDataError(
                f"{found[name]} and {path}: one reader mask twice (.png, .PNG): remove one"
            )
        found[name] = path
    return found


# ---------------------------------------------------------------------------------------- LIDC pickle

_PICKLE_CACHE: dict[tuple, dict] = {}

#: the keys every entry of the LIDC pickle has
PICKLE_KEYS = ("image", "masks", "series_uid")
#: image values this far outside [0, 1] are an error (nearer, float rounding: clipped when the slice loads)
PICKLE_RANGE_TOL = 1e-3


def _folder_hint(folder: Path) -> str:
    """What a folder given as the LIDC pickle is likely meant as: a Decathlon folder (dataset.json), the PNG
    layout (``<split>/images``), or a folder holding pickles."""
    if (folder / "dataset.json").is_file():
        return f": {folder} holds a dataset.json, a Decathlon folder: give --data.data_format decathlon"
    if any((folder / split / "images").is_dir() for split in SPLITS):
        return ": a folder of <split>/images/ PNGs is --data.data_format lidc_png"
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in (".pickle", ".pkl"))
    pickles = [name for name in pickles if not is_hidden(folder / name)]
    if pickles:
        return f": give the file, e.g. {folder / pickles[0]} ({len(pickles)} pickle file(s) in it)"
    return (
        " (a folder of <split>/images/ PNGs is --data.data_format lidc_png, one with a dataset.json "
        "--data.data_format decathlon)"
    )


def _load_pickle(path: Path) -> dict:
    """Unpickle once per (path, mtime, size): train/val/test datasets share one copy in memory."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _PICKLE_CACHE:
        warnings.warn(
            f"{path}: unpickling runs arbitrary code; only load LIDC pickles you made or trust, from local disk",
            UserWarning,
            stacklevel=3,
        )
        try:
            with open(path, "rb") as fh:
                data = pickle.load(fh)
        except Exception as exc:  # UnpicklingError, EOFError, ValueError... all mean a broken file
            raise MedicalDataError(f"{path}: cannot unpickle ({type(exc).__name__}: {exc})") from exc
        _PICKLE_CACHE.clear()
        _PICKLE_CACHE[key] = data
    return _PICKLE_CACHE[key]


class LIDCPickleDataset(MedicalDataset):
    """The single-pickle LIDC release most PyTorch ports use, split by ``series_uid``: per scan, not per
    patient. The pickle stores no patient id, and LIDC-IDRI holds 1018 scans of 1010 patients, so the few
    patients with two scans may have one in training and the other in validation or test.

    Structure, shapes and values are checked at construction.
    """

    def __init__(
        self,
        path: str | Path,
        split: str,
        seed: int = 0,
        fractions: Sequence[float] = (0.7, 0.15, 0.15),
        crop_size: int | None = 128,
    ):
        self.path = Path(path)
        self.crop_size = crop_size
        _check_split(split, str(self.path))
        if self.path.is_dir():
            hint = _folder_hint(self.path)
            raise MedicalDataError(
                f"{self.path}: is a folder; the lidc_pickle format reads one .pickle file{hint}"
            )
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such LIDC pickle file")
        data = _load_pickle(self.path)
        if not isinstance(data, dict) or not data:
            raise MedicalDataError(
                f"{self.path}: expected a non-empty dict of slices, got {type(data).__name__}"
            )
        keys = sorted(data, key=str)
        self._check_entry_keys(data, keys)
        num_readers = None
        for key in keys:
            entry = data[key]
            where = f"{self.path} [key {key!r}]"
            shape = np.shape(entry["image"])
            if len(shape) != 2:
                raise MedicalDataError(f"{where}: image must be HxW, got shape {shape}")
            masks = entry["masks"]
            if not isinstance(masks, (list, tuple, np.ndarray)) or len(masks) == 0:
                raise MedicalDataError(f"{where}: 'masks' must be a list of reader masks")
            for r, m in enumerate(masks):
                if np.shape(m) != shape:
                    raise MedicalDataError(f"{where}: mask {r} has shape {np.shape(m)}, image has {shape}")
            if num_readers is None:
                num_readers = len(masks)
            elif len(masks) != num_readers:
                raise MedicalDataError(
                    f"{where}: {len(masks)} reader masks, earlier slices have {num_readers}"
                )
        self.num_readers = int(num_readers)
        self._check_image_values(data, keys)
        self._check_mask_values(data, keys)
        groups = [str(data[k]["series_uid"]) for k in keys]
        self.fractions, self.group_noun = tuple(fractions), "series"
        chosen, self.split_groups = _split_by_group(groups, split, fractions, seed)
        self._entries = [data[keys[i]] for i in chosen]
        self.ids = [str(keys[i]) for i in chosen]
        self.groups = [groups[i] for i in chosen]

    def _check_entry_keys(self, data: dict, keys: list) -> None:
        """Every entry is a dict with the keys read; the error names the keys missing and those the entry has
        (real pickles use other names, e.g. ``seriesuid``), and counts the entries alike."""
        bad = [k for k in keys if not isinstance(data[k], dict) or not set(PICKLE_KEYS) <= set(data[k])]
        if not bad:
            return
        key, entry = bad[0], data[bad[0]]
        where = f"{self.path} [key {key!r}]"
        others = f" ({len(bad)} of the {len(keys)} entries are so)" if len(bad) > 1 else ""
        expected = ", ".join(repr(k) for k in PICKLE_KEYS)
        if not isinstance(entry, dict):
            raise MedicalDataError(
                f"{where}: expected a dict with {expected}, got {type(entry).__name__}{others}"
            )
        missing = ", ".join(repr(k) for k in PICKLE_KEYS if k not in entry)
        has = sorted(map(repr, entry))
        shown = ", ".join(has[:10]) + (f", ... {len(has) - 10} more" if len(has) > 10 else "")
        raise MedicalDataError(
            f"{where}: missing {missing}; the entry has {shown or 'no keys'} (expected {expected}){others}"
        )

    def _check_image_values(self, data: dict, keys: list) -> None:
        """Every image finite and in [0, 1], checked here on the whole pickle (in memory already) rather than
        when a slice loads: a bad slice stopped training mid-epoch, one key at a time, without a checkpoint.
        Two reductions per image, no copy (NaN and inf carry through min / max): 0.13 s for 15,000 float32
        128x128 slices."""
        bad = []
        for key in keys:
            image = np.asarray(data[key]["image"])
            if image.size == 0:
                continue
            low, high = float(image.min()), float(image.max())
            if not (np.isfinite(low) and np.isfinite(high)):
                count = int(image.size - np.count_nonzero(np.isfinite(image)))
                bad.append(f"[key {key!r}]: image holds {count} NaN or infinite values")
            elif low < -PICKLE_RANGE_TOL or high > 1 + PICKLE_RANGE_TOL:
                bad.append(f"[key {key!r}]: image values in [{low:.3g}, {high:.3g}]")
        if not bad:
            return
        shown = "; ".join(bad[1:5]) + (f"; ... {len(bad) - 5} more" if len(bad) > 5 else "")
        more = f"; so do {len(bad) - 1} more of the {len(keys)} slices: {shown}" if len(bad) > 1 else ""
        raise MedicalDataError(
            f"{self.path} {bad[0]}{more} ({len(bad)} slice(s) in all; image values must be finite and in "
            "[0, 1]: fix or drop these slices)"
        )

    def _check_mask_values(self, data: dict, keys: list) -> None:
        """Every reader mask binary (:func:`_not_binary`), checked here on the whole pickle as the images
        are: a soft mask stopped training at the step that read it. One pass per slice's readers stacked
        (:func:`_binary`), ``np.unique`` only for the masks that fail it: 0.8 s for 15,000 slices of four
        128 px masks, where :meth:`_check_image_values` took 0.6 s on the same (busy) machine."""
        bad = []
        for key in keys:
            masks = np.asarray(data[key]["masks"])
            for r in np.flatnonzero(~_binary(masks)):
                if error := _not_binary(masks[r], f"[key {key!r}] mask {r}"):
                    bad.append(error)
        if bad:
            raise MedicalDataError(
                f"{self.path} {_first_few(bad)}; {len(bad)} of the {len(keys) * self.num_readers} reader "
                "masks are not binary (a reader's mask holds 0 and one value): fix or drop these slices"
            )

    def load(self, index: int) -> dict:
        entry = self._entries[index]
        where = f"{self.path} [key {self.ids[index]!r}]"
        # finite and in [0, 1] checked at construction (the entries are the pickle's, in memory, unchanged)
        image = np.asarray(entry["image"], dtype=np.float32)
        masks = np.stack(
            [_binarise(np.asarray(m), f"{where} mask {r}") for r, m in enumerate(entry["masks"])]
        )
        return {
            "image": _center_crop(np.clip(image, 0, 1), self.crop_size, where),
            "masks": _center_crop(masks, self.crop_size, where),
            "id": self.ids[index],
            "group": self.groups[index],
        }


# ------------------------------------------------------------------------------------ Decathlon NIfTI


def _declared_labels(names) -> dict[int, str]:
    """dataset.json's ``labels`` as {value: name} (entries whose key is no whole number left out)."""
    named = {}
    if isinstance(names, dict):
        for key, name in names.items():
            try:
                named[int(key)] = str(name)
            except (TypeError, ValueError):
                continue
    return named


def _foreground_labels(chosen, names, meta_path: Path) -> list[int] | None:
    """``foreground_labels`` checked against dataset.json's ``labels`` ({"0": "background", "1": "liver",
    "2": "cancer"}): label values or names (``2``, ``[2]``, ``[cancer]``). Unset, every non-zero label is the
    lesion, and a set naming several says which were merged: on Task03 Liver the "lesion" was 74 % liver."""
    named = _declared_labels(names)
    if chosen is None:
        merged = {k: v for k, v in sorted(named.items()) if k != 0}
        if len(merged) > 1:
            listed = ", ".join(f"{k} {v}" for k, v in merged.items())
            warnings.warn(
                f"{meta_path}: labels {listed} are all taken as the lesion; to train on some of them, give "
                f"--data.dataset_kwargs '{{foreground_labels: [{max(merged)}]}}'",
                MedicalDataWarning,
                stacklevel=3,
            )
        return None
    valid = ", ".join(f"{k} ({v})" for k, v in sorted(named.items()) if k != 0) or "the non-zero label values"
    by_name = {v: k for k, v in named.items()}
    labels = []
    for value in chosen if isinstance(chosen, (list, tuple)) else [chosen]:
        if isinstance(value, str) and value in by_name:
            labels.append(by_name[value])
        elif (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, str) and value.strip().lstrip("-").isdigit()
        ):
            labels.append(int(value))
        else:
            raise ValueError(
                f"foreground_labels {chosen!r}: {value!r} is neither a label value nor a name of {meta_path}; "
                f"valid: {valid}"
            )
    unknown = [v for v in labels if named and v not in named]
    if not labels or 0 in labels or unknown:
        raise ValueError(f"foreground_labels {labels}: not lesion labels of {meta_path}; valid: {valid}")
    return labels


#: MONAI's ``LoadImage`` builds every reader it has, its nvImageCodec DICOM reader too, and that reader (MONAI
#: 1.6) logs the first and warns the second on every machine without nvImageCodec: ~10 lines a Decathlon run
#: (a ``LoadImage`` per volume read) about a DICOM decoder the suite never uses (it reads NIfTI only).
_NVIMGCODEC_LOGGER = "monai.data.nvimgcodec_pydicom_plugin"
_NVIMGCODEC_LOG = "nvImageCodec is not available; skipping pydicom decoder plugin registration"
_NVIMGCODEC_WARNING = "NvImgCodecPydicomReader: nvImageCodec decoder plugin did not register successfully"


class _DropLogMessage(logging.Filter):
    """Drops the records of one logger whose message starts with ``text``; the logger's others pass."""

    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.text)


@contextmanager
def _quiet_dicom_plugin() -> Iterator[None]:
    """Silences only the two nvImageCodec messages above, only while a ``LoadImage`` is built (see there)."""
    logger, drop = logging.getLogger(_NVIMGCODEC_LOGGER), _DropLogMessage(_NVIMGCODEC_LOG)
    logger.addFilter(drop)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", _NVIMGCODEC_WARNING, category=UserWarning, module=r"monai\.data\.image_reader"
            )
            yield
    finally:
        logger.removeFilter(drop)


def _nifti_loader() -> Callable:
    """MONAI's ``LoadImage(image_only=True)``, built without its nvImageCodec DICOM reader's messages."""
    from monai.transforms import LoadImage

    with _quiet_dicom_plugin():
        return LoadImage(image_only=True)


def _select_channel(x, index: int):
    return x[index : index + 1]


#: a label whose affine differs from its image's by more than this (mm; direction cosines times spacing) is said
AFFINE_ATOL = 1e-3


def _case_name(path: Path) -> str:
    """``ct_003`` of ``ct_003.nii.gz`` / ``ct_003.nii`` (the name of the file or link, never of a link's target)."""
    name = path.name
    for suffix in (".gz", ".nii"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name


def _gzip_size(path: Path) -> int:
    """The uncompressed size a gzip file's trailer states (ISIZE, modulo 2**32; RFC 1952): a whole file's answer
    in four bytes, where decompressing it to check would decode every volume once more before predict does. A
    file cut short ends in other bytes, which then disagree with the header's size."""
    with open(path, "rb") as fh:
        fh.seek(-4, 2)
        return int.from_bytes(fh.read(4), "little")


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith((".nii", ".nii.gz"))


def _nifti_header(path: Path, check_data: bool = False) -> dict:
    """The geometry of the NIfTI at ``path`` from its header (no voxel read): ``affine``, ``spatial_shape``
    (X, Y, Z) and the header fields the predicted volumes copy (``qform_code``, ``sform_code``,
    ``xyzt_units``). The image's, not its label's, is where predictions go. ``check_data``: also read the
    voxel data to its end (a truncated file fails here, not half-way through ``predict``), one chunk at a time."""
    return _nifti_header_and_shape(path, check_data)[0]


def _nifti_header_and_shape(path: Path, check_data: bool = False) -> tuple[dict, tuple[int, ...]]:
    """:func:`_nifti_header` and the file's whole shape, channels included, from one read of the header: the
    dict travels in every item, where a 5-D file's extra count could not be collated, and reading the header
    again for the channels read every case's file twice at setup."""
    import gzip

    import nibabel as nib

    try:
        image = nib.load(str(path))
        shape = tuple(int(v) for v in image.shape)
        if len(shape) < 3:
            raise MedicalDataError(f"{path}: expected a 3D volume (X, Y, Z) or (X, Y, Z, channels), got {shape}")
        if check_data:
            needed = int(image.dataobj.offset) + int(np.prod(shape)) * image.get_data_dtype().itemsize
            if str(path).lower().endswith(".gz"):
                size = _gzip_size(path)
                if size != needed % 2**32:  # not the size the header says: decompress to the end to know
                    size = 0
                    with gzip.open(path, "rb") as fh:  # checks the CRC too
                        while chunk := fh.read(1 << 24):
                            size += len(chunk)
            else:
                size = Path(path).stat().st_size
            if size < needed:
                raise MedicalDataError(f"{path}: truncated: {size:,} of the {needed:,} bytes its header says")
    except MedicalDataError:
        raise
    except Exception as exc:  # nibabel / gzip raise many types for truncated or non-NIfTI files
        raise MedicalDataError(_unreadable_nifti(path, exc)) from exc
    header = image.header
    if problem := nonfinite_affine_problem(image.affine, header.get_zooms()[:3]):
        raise MedicalDataError(f"{path}: {problem}")
    geometry = {
        "affine": np.asarray(image.affine, dtype=np.float64),
        "spatial_shape": np.asarray(shape[:3], dtype=np.int64),
        "qform_code": int(header["qform_code"]),
        "sform_code": int(header["sform_code"]),
        "xyzt_units": int(header["xyzt_units"]),
    }
    return geometry, shape


def _modality_problem(
    image_path: Path, shape: tuple[int, ...], modality_index: int, modalities: dict | None = None
) -> str | None:
    """Why ``modality_index`` names no channel of the NIfTI of whole ``shape`` (None when it does; a 5-D file
    is left to MONAI's reader). With the set's ``modalities`` (training), what to give instead; without (a volume
    to predict, whose model reads the channel its checkpoint names), that it needs that channel."""
    channels = 1 if len(shape) == 3 else shape[3] if len(shape) == 4 else None
    if channels is None or 0 <= modality_index < channels:
        return None
    problem = f"{image_path}: modality_index={modality_index} but the image has {channels} channel(s)"
    if modalities is None:
        return f"{problem}: this model reads channel {modality_index} (its checkpoint's modality_index)"
    named = f" {modalities}" if modalities else ""
    return f"{problem}{named}: give --data.dataset_kwargs '{{modality_index: N}}' with N in 0..{channels - 1}"


def _axial(header: dict) -> dict:
    """``header`` (:func:`_nifti_header`) on the grid slices are cut from (:func:`~domains.medical.volumes.axial_axes`): its shape and
    affine columns permuted, and ``axes``, the stored axis of each (the writer puts whole volumes back)."""
    axes = axial_axes(header["affine"])
    affine = header["affine"][:, [*axes, 3]]
    shape = header["spatial_shape"][list(axes)]
    return {**header, "affine": affine, "spatial_shape": shape, "axes": np.array(axes, dtype=np.int64)}


def _say_reoriented(sources: Sequence[dict]) -> None:
    """One line naming the volumes whose voxel axes were reordered for axial slices (:func:`~domains.medical.volumes.axial_axes`)."""
    moved = [source for source in sources if tuple(source["axes"]) != (0, 1, 2)]
    if moved:
        axes = tuple(int(a) for a in moved[0]["axes"])
        rank_zero_info(
            f"{moved[0]['image_path']}: its head-foot axis is voxel axis {axes[2]}, so its slices are cut "
            f"along it (voxel axes {axes} as x, y, z; {len(moved)} of {len(sources)} volumes so); the "
            "per-slice NIfTI outputs are on that grid, the whole-volume ones on the file's own"
        )


class DecathlonSliceDataset(MedicalDataset):
    """Medical Segmentation Decathlon / BraTS volumes cut into 2D axial slices, one reader.

    Volumes load through MONAI (``LoadImage``, ``EnsureChannelFirst``, percentile intensity scaling to
    [0,1], in-plane resize keeping the physical aspect ratio (the header's voxel sizes), then pad to
    ``crop_size``). Slices are taken along the voxel axis that runs head-foot, the third in Decathlon files (a
    volume saved with its axes permuted is reordered: :func:`~domains.medical.volumes.axial_axes`; ids ``z<k>`` count along it).
    ``foreground_labels`` chooses the label values that are the lesion (Task03 Liver: ``[2]``, the cancer;
    default every non-zero one, with a warning when dataset.json names several). Every slice with foreground
    is kept, plus ``round(empty_ratio * n_foreground)`` (at least ``min_empty``) seeded empty slices per
    volume; the counts are printed and kept in ``stats``. ``all_slices`` keeps every slice instead, labels or
    not: ``predict`` uses it, since a prediction is a whole volume and the labels must not choose which slices
    it covers.
    Labels are read at construction to index slices; images when used, with a small per-process cache of
    ``cache_volumes`` volumes, which training fills a few volumes at a time (:class:`VolumeGroupedSampler`).
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        crop_size: int = 128,
        modality_index: int = 0,
        empty_ratio: float = 0.25,
        min_empty: int = 1,
        seed: int = 0,
        fractions: Sequence[float] = (0.7, 0.15, 0.15),
        percentiles: tuple[float, float] = PERCENTILES,
        cache_volumes: int = 4,
        all_slices: bool = False,
        foreground_labels: Sequence[int] | None = None,
    ):
        from monai.transforms import EnsureChannelFirst

        self.root = Path(root)
        self._set_pipeline(crop_size, modality_index, percentiles, cache_volumes)
        self.num_readers = 1
        _check_split(split, str(self.root))
        meta_path = self.root / "dataset.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path}: missing (expected a Decathlon folder with dataset.json)")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8-sig"))  # a byte-order mark read
        except json.JSONDecodeError as exc:
            raise MedicalDataError(f"{meta_path}:{exc.lineno}: invalid JSON ({exc.msg})") from exc
        training = meta.get("training") if isinstance(meta, dict) else None
        if not training:
            raise MedicalDataError(f"{meta_path}: no 'training' list of image/label pairs")
        self.modalities = meta.get("modality", {})
        self.foreground_labels = _foreground_labels(foreground_labels, meta.get("labels"), meta_path)
        declared = np.array(sorted(_declared_labels(meta.get("labels"))))
        undeclared: dict[Path, list] = {}  # label file -> its values dataset.json does not name
        moved: list[tuple[Path, Path, float]] = []  # (label, image, largest affine difference)
        other_grid: list[str] = []  # labels whose voxel grid is not their image's
        cases = []
        for n, pair in enumerate(training):
            if not isinstance(pair, dict) or "image" not in pair or "label" not in pair:
                raise MedicalDataError(f"{meta_path}: training entry {n} needs 'image' and 'label'")
            # absolute with links kept: git-annex / DVC / a Hugging Face cache link each file to a blob named by
            # its hash, which resolve() made the case's name (and the reader lost the .nii suffix it goes by)
            image_path, label_path = (Path(os.path.abspath(self.root / pair[key])) for key in ("image", "label"))
            for key, p in (("image", image_path), ("label", label_path)):
                if not p.is_file():
                    broken = f": a link to {os.readlink(p)}, which does not exist" if p.is_symlink() else ""
                    raise FileNotFoundError(
                        f"{p}: listed in {meta_path} (training entry {n}, {key} {pair[key]!r}) but missing{broken}"
                    )
            cases.append((_case_name(image_path), image_path, label_path))
        self.fractions, self.group_noun = tuple(fractions), "cases"
        chosen, self.split_groups = _split_by_group([c[0] for c in cases], split, fractions, seed)
        cases = [cases[i] for i in chosen]

        load_label = _nifti_loader()
        channel_first = EnsureChannelFirst()
        rng = np.random.default_rng(seed)
        self.slices: list[tuple[int, int]] = []  # (case index, slice index along the third voxel axis)
        self.cases = cases
        self._sources: list[dict] = []
        self.stats = {
            "volumes": len(cases),
            "foreground_slices": 0,
            "empty_slices": 0,
            "empty_slices_kept": 0,
        }
        for c, (case, image_path, label_path) in enumerate(cases):
            label = self._load(load_label, channel_first, label_path)
            if label.ndim != 4 or label.shape[0] != 1:
                raise MedicalDataError(
                    f"{label_path}: expected a 3D single-channel label, got {tuple(label.shape)}"
                )
            # the image's geometry: a label saved without it (an identity affine) put predictions off the scan
            header, shape = _nifti_header_and_shape(image_path)
            self._check_modality(image_path, shape)
            values = axial_slices(np.asarray(label[0]), header["affine"])  # (Z, rows, cols)
            if len(declared) and self.foreground_labels is None:
                # read as the lesion by "every non-zero label": said, as a set whose dataset.json does not
                # describe its label files (a comparison per voxel; np.unique of a volume took seconds)
                other = values[np.isin(values, declared, invert=True)]
                if other.size:
                    undeclared[label_path] = [int(v) if float(v).is_integer() else float(v) for v in np.unique(other)]
            fg = self._foreground(values).reshape(values.shape[0], -1).any(axis=1)
            fg_idx, empty_idx = np.flatnonzero(fg), np.flatnonzero(~fg)
            n_keep = min(len(empty_idx), max(min_empty, round(empty_ratio * len(fg_idx))))
            keep_empty = empty_idx if all_slices else np.sort(rng.choice(empty_idx, n_keep, replace=False))
            self.stats["foreground_slices"] += len(fg_idx)
            self.stats["empty_slices"] += len(empty_idx)
            self.stats["empty_slices_kept"] += len(keep_empty)
            image_grid, label_grid = tuple(int(v) for v in header["spatial_shape"]), tuple(label.shape[1:])
            if image_grid != label_grid:  # said here, for every case, not when training first reads the case
                other_grid.append(
                    f"{image_path}: image grid {image_grid} differs from label {label_path} grid {label_grid}"
                )
            label_affine = np.asarray(label.meta.get("original_affine", label.affine), dtype=np.float64)
            if not np.allclose(label_affine, header["affine"], rtol=0, atol=AFFINE_ATOL):
                moved.append((label_path, image_path, float(np.abs(label_affine - header["affine"]).max())))
            self._sources.append(self._source(image_path, label_path, _axial(header)))
            self.slices.extend((c, int(z)) for z in sorted([*fg_idx, *keep_empty]))
        _say_reoriented(self._sources)
        if other_grid:
            more = f"; ... {len(other_grid) - 3} more" if len(other_grid) > 3 else ""
            raise MedicalDataError(
                f"{meta_path}: {len(other_grid)} of {len(cases)} labels are not on their image's voxel grid "
                f"(each slice's label must cover its image's): {'; '.join(other_grid[:3])}{more}"
            )
        if moved:
            label_path, image_path, gap = moved[0]
            warnings.warn(
                f"{label_path}: its affine differs from its image {image_path}'s by up to {gap:.4g} (mm) "
                f"({len(moved)} of {len(cases)} labels so): the image's places the slices, its spacing sets the "
                "resize and predictions are written on it; check that the label belongs to this image",
                MedicalDataWarning,
                stacklevel=2,
            )
        if undeclared:
            first, values = next(iter(undeclared.items()))
            warnings.warn(
                f"{first}: label values {values[:8]} are not among {meta_path}'s labels {declared.tolist()} "
                f"({len(undeclared)} of {len(cases)} label files hold such values); they are taken as the lesion "
                "with every non-zero label",
                MedicalDataWarning,
                stacklevel=2,
            )
        rank_zero_info(
            f"[DecathlonSliceDataset] {self.root} {split}: {len(cases)} volumes, "
            f"{self.stats['foreground_slices']} foreground slices, kept {self.stats['empty_slices_kept']} of "
            f"{self.stats['empty_slices']} empty slices"
        )
        self._name_slices()

    def _check_modality(self, image_path: Path, shape: tuple[int, ...]) -> None:
        """Refuse a ``modality_index`` the image has no channel for, from its header's ``shape``
        (:func:`_nifti_header_and_shape`): read at the first training batch, it stopped the run after the
        model was built (52 s here), not at setup."""
        if problem := _modality_problem(image_path, shape, self.modality_index, self.modalities):
            raise MedicalDataError(problem)

    def _set_pipeline(self, crop_size: int, modality_index: int, percentiles, cache_volumes: int) -> None:
        """The settings that decide what the network sees of a volume (labelled or not)."""
        self.crop_size = int(crop_size)
        self.modality_index = int(modality_index)
        self.percentiles = percentiles
        self.cache_volumes = cache_volumes

    def _source(self, image_path: Path, label_path: Path | None, header: dict) -> dict:
        """What the prediction writer needs to put a slice back into its volume: the image's geometry."""
        from nibabel import affines as nib_affines

        spacing = nib_affines.voxel_sizes(header["affine"])[:2]  # mm per voxel along X and Y
        x, y = (int(v) for v in header["spatial_shape"][:2])
        return {
            "image_path": str(image_path),
            "label_path": str(label_path or ""),
            **header,
            "resized": np.asarray(self._inplane_size(x, y, spacing), dtype=np.int64),
        }

    def _name_slices(self) -> None:
        self.ids = [f"{self.cases[c][0]}/z{z:03d}" for c, z in self.slices]
        self.groups = [self.cases[c][0] for c, _ in self.slices]
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray | None]] = OrderedDict()
        self._refused: dict[int, str] = {}  # case -> why :meth:`_volume` refused it (per loader process)

    def _foreground(self, label: np.ndarray) -> np.ndarray:
        """The lesion mask of a label array: ``foreground_labels`` if given, else every non-zero label."""
        return np.isin(label, self.foreground_labels) if self.foreground_labels else label > 0

    def _inplane_size(self, x: int, y: int, spacing) -> tuple[int, int]:
        """In-plane size after the resize that keeps the slice's physical aspect (longest side = crop_size),
        before padding. ``spacing``: mm per voxel along X and Y; with 0.5 x 1.0 mm voxels a 10 mm square lesion
        came out 13x6 pixels when the voxel grid's aspect was kept instead."""
        extent_x, extent_y = x * float(spacing[0] or 1.0), y * float(spacing[1] or 1.0)
        scale = self.crop_size / max(extent_x, extent_y)
        return max(1, round(extent_x * scale)), max(1, round(extent_y * scale))

    @staticmethod
    def _load(loader: Callable, channel_first: Callable, path: Path):
        try:
            return channel_first(loader(str(path)))
        except Exception as exc:  # nibabel/MONAI raise many types for truncated or non-NIfTI files
            raise MedicalDataError(_unreadable_nifti(path, exc)) from exc

    def _volume(self, c: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Processed (image, label) of case ``c`` as (crop, crop, Z) arrays (label None: an unlabelled
        volume), LRU-cached. A case refused once (:class:`MedicalDataError`) is refused again from memory: each
        of its slices asks, and ``predict`` skips them all (:meth:`refused_item`) without reading it Z times."""
        if c in self._cache:
            self._cache.move_to_end(c)
            return self._cache[c]
        if c in self._refused:
            raise MedicalDataError(self._refused[c])
        try:
            return self._read_volume(c)
        except MedicalDataError as err:
            self._refused[c] = str(err)
            raise

    def _read_volume(self, c: int) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`_volume` read from its files, and kept in the cache."""
        from monai.transforms import EnsureChannelFirst

        _case, image_path, label_path = self.cases[c]
        load, channel_first = _nifti_loader(), EnsureChannelFirst()
        # one file at a time, through the listing's reader: an error names its file, the image or the label
        files = (("image", image_path), ("label", label_path)) if label_path else (("image", image_path),)
        data = {key: self._load(load, channel_first, path) for key, path in files}
        keys = list(data)
        # checked at construction from the headers too; kept for a file rewritten since (a cheap comparison)
        if label_path and tuple(data["image"].shape[1:]) != tuple(data["label"].shape[1:]):
            raise MedicalDataError(
                f"{image_path}: image grid {tuple(data['image'].shape[1:])} differs from "
                f"label {label_path} grid {tuple(data['label'].shape[1:])}"
            )
        if not 0 <= self.modality_index < data["image"].shape[0]:
            raise MedicalDataError(
                f"{image_path}: modality_index={self.modality_index} but the image has "
                f"{data['image'].shape[0]} channel(s) {self.modalities or ''}"
            )
        channel = np.asarray(data["image"][self.modality_index])
        if channel.dtype.kind == "f" and not np.isfinite(channel).all():
            raise MedicalDataError(self._nonfinite_message(image_path, channel))
        window = self._window(image_path, channel)
        axes = tuple(int(a) for a in self._sources[c]["axes"])
        if axes != (0, 1, 2):  # slices cut along the head-foot axis (:func:`~domains.medical.volumes.axial_axes`)
            order = (0, *(a + 1 for a in axes))  # channels first
            data = {key: np.ascontiguousarray(np.transpose(np.asarray(v), order)) for key, v in data.items()}
        x, y, z = data["image"].shape[1:]
        size = (*(int(v) for v in self._sources[c]["resized"]), z)
        scale = min(size[0] / x, size[1] / y)
        crop = (self.crop_size, self.crop_size, z)
        with warnings.catch_warnings():
            if window[0] == window[1]:  # said by _window, naming the volume: not MONAI's bare line too
                warnings.filterwarnings("ignore", message=r"Divide by zero \(a_min == a_max\)")
            data = self._pipeline(keys, size, scale, crop, window)(data)
        image = np.asarray(data["image"][0], dtype=np.float32)
        label = self._foreground(np.asarray(data["label"][0])).astype(np.uint8) if label_path else None
        self._cache[c] = (image, label)
        while len(self._cache) > self.cache_volumes:
            self._cache.popitem(last=False)
        return image, label

    def _pipeline(self, keys: list[str], size: tuple, scale: float, crop: tuple, window: tuple) -> Callable:
        """The MONAI transforms of one case (:meth:`_volume`): its channel, scaled to [0, 1] by its intensity
        percentiles' ``window`` (:meth:`_window`, checked there: computed once, not again by a percentile
        transform), resized to ``size`` (``scale``: the in-plane zoom) and padded to ``crop``."""
        from monai.transforms import (
            Compose,
            Lambdad,
            Resized,
            ResizeWithPadOrCropd,
            ScaleIntensityRanged,
        )

        return Compose(
            [
                Lambdad(
                    keys="image",
                    func=partial(_select_channel, index=self.modality_index),
                ),
                ScaleIntensityRanged(
                    keys="image", a_min=window[0], a_max=window[1], b_min=0.0, b_max=1.0, clip=True
                ),
                Resized(
                    keys=keys,
                    spatial_size=size,
                    mode=("area" if scale < 1 else "trilinear", "nearest")[: len(keys)],
                ),
                ResizeWithPadOrCropd(keys=keys, spatial_size=crop),
            ]
        )

    def _nonfinite_message(self, image_path: Path, channel: np.ndarray) -> str:
        """The error for a channel holding NaN / infinite voxels as read (float32): a float64 file's finite
        values beyond float32's range are said as such (read again, on this error's path only)."""
        import nibabel as nib

        bad = int(channel.size - np.count_nonzero(np.isfinite(channel)))
        where = f"modality_index={self.modality_index}"
        image = nib.load(str(image_path))
        if image.get_data_dtype().itemsize > 4 and image.get_data_dtype().kind == "f":
            stored = np.asanyarray(image.dataobj)
            stored = stored[..., self.modality_index] if stored.ndim > 3 else stored
            over = int(np.count_nonzero(np.isfinite(stored) & (np.abs(stored) > FLOAT32_MAX)))
            if over:
                return (
                    f"{image_path}: {over:,} of {channel.size:,} voxels ({where}) hold {stored.dtype} values "
                    f"beyond +-{FLOAT32_MAX:.3g}, not representable as float32 (what the pipeline and the models "
                    "compute in): rescale the volume (e.g. to HU) or remove this case"
                )
        return (
            f"{image_path}: {bad:,} of {channel.size:,} voxels are NaN or infinite ({where}); the intensity "
            "scaling and the models need finite values: fix or remove this case"
        )

    def _window(self, image_path: Path, channel: np.ndarray) -> tuple[float, float]:
        """The percentile window that maps ``channel`` to [0, 1] (float64, as MONAI's scaling takes it),
        refused where it would give NaN or one value for every tissue
        (:func:`~domains.medical.volumes.window_problem`); an empty one (one value at both percentiles) is
        warned of, naming the volume."""
        low, high = self.percentiles
        lo, hi = percentile_window(channel, (low, high))
        channel_at = f"modality_index={self.modality_index}"
        if problem := window_problem(lo, hi, f"intensity window ({low:g}-{high:g} percentiles, {channel_at})"):
            raise MedicalDataError(
                f"{image_path}: {problem}: set 'no data' voxels to the background value (e.g. -1024 "
                "for CT) or fix the intensity scaling, or remove this case"
            )
        if lo == hi:
            warnings.warn(
                f"{image_path}: its {low:g}-{high:g} intensity percentiles ({channel_at}) are both {lo:g} (most "
                "voxels hold that one value): the window is empty, so its intensities are shifted by it and clipped to 0..1, not scaled; check the volume, or "
                "widen dataset_kwargs.percentiles",
                MedicalDataWarning,
                stacklevel=2,
            )
        return lo, hi

    def refused_item(self, index: int, error: str) -> dict:
        """:meth:`MedicalDataset.refused_item` at the slices' size, with the volume's ``source`` (its batch
        mates' have one)."""
        c, z = self.slices[index]
        blank = np.zeros((self.crop_size, self.crop_size), np.float32)
        return {
            **super().refused_item(index, error),
            "image": blank,
            "masks": np.zeros((self.num_readers, *blank.shape), np.uint8),
            "source": dict(self._sources[c], slice_index=z),
        }

    def load(self, index: int) -> dict:
        c, z = self.slices[index]
        image, label = self._volume(c)
        # (X, Y, Z) on the axial grid: slice z as (rows=Y, cols=X), like every other 2D image here
        image = np.ascontiguousarray(axial_slices(image)[z])
        source = dict(self._sources[c], slice_index=z)
        if label is None:  # no reader: masks (0, H, W)
            masks = np.zeros((0, *image.shape), np.uint8)
        else:
            masks = np.ascontiguousarray(axial_slices(label)[z][None])
        return {
            "image": image,
            "masks": masks,
            "id": self.ids[index],
            "group": self.groups[index],
            "source": source,
        }


# ------------------------------------------------------------------------------- one's own images (predict)

#: 2-D image files ``--data.predict_path`` reads (as the LIDC PNG items are read)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class NiftiImageDataset(DecathlonSliceDataset):
    """Unlabelled NIfTI volumes (``--data.predict_path``), every axial slice, through the Decathlon pipeline
    (``modality_index``, percentile scaling, the aspect-keeping resize to ``crop_size``): a volume predicts as
    it does in a labelled set, and is written back on its own grid and affine. Items have no reader mask
    (``masks`` (0, H, W)). ``headers``: each path's :func:`_nifti_header` where the caller read it already
    (:func:`build_predict_dataset`: the file is then read once), else read here."""

    def __init__(
        self,
        paths: Sequence[Path],
        names: Sequence[str],
        crop_size: int = 128,
        modality_index: int = 0,
        percentiles: tuple[float, float] = PERCENTILES,
        cache_volumes: int = 4,
        headers: Sequence[dict] | None = None,
    ):
        self._set_pipeline(crop_size, modality_index, percentiles, cache_volumes)
        self.num_readers, self.modalities, self.foreground_labels = 0, {}, None
        self.cases = [(name, Path(path), None) for path, name in zip(paths, names)]
        if headers is None:
            headers = [_nifti_header(path) for _name, path, _ in self.cases]
        self._sources, self.slices = [], []
        for c, ((_name, path, _), header) in enumerate(zip(self.cases, headers, strict=True)):
            self._sources.append(self._source(path, None, _axial(header)))
            self.slices.extend((c, z) for z in range(int(self._sources[-1]["spatial_shape"][2])))
        _say_reoriented(self._sources)
        self._name_slices()


class ImageFileDataset(MedicalDataset):
    """Unlabelled 2-D images (``--data.predict_path``), whole, read as the LIDC PNG items are
    (:meth:`LIDCPngDataset.read_image`), a JPEG's EXIF orientation applied (no mask to keep aligned with the
    stored pixels), a colour one as its luminance (an RGB export of a CT slice, a screenshot); no reader mask
    (``masks`` (0, H, W))."""

    num_readers = 0

    def __init__(self, paths: Sequence[Path], names: Sequence[str]):
        self.paths = [Path(p) for p in paths]
        self.ids = list(names)
        self.groups = list(names)

    def load(self, index: int) -> dict:
        image = LIDCPngDataset.read_image(self.paths[index], upright=True, luminance=True)
        return {
            "image": image,
            "masks": np.zeros((0, *image.shape), np.uint8),
            "id": self.ids[index],
            "group": self.groups[index],
        }


def _predict_files(predict_path: str | Path) -> tuple[Path, list[Path]]:
    """The NIfTI volumes or the 2-D images ``predict_path`` names (one file, or a folder searched below it
    without an earlier run's outputs: :func:`shared.files.visible_inputs`); other files counted in a warning."""
    root = Path(predict_path)
    if root.is_file():
        files = [root]
    elif (root / "dataset.json").is_file():  # a Decathlon folder: its unlabelled "test" volumes
        files = _decathlon_test_files(root / "dataset.json")
    elif root.is_dir():
        files = visible_inputs(root, None, "--data.predict_path", MedicalDataWarning)
    else:
        raise FileNotFoundError(f"--data.predict_path {root}: no such file or folder")
    volumes = [p for p in files if _is_nifti(p)]
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    kinds = f"NIfTI volumes (.nii, .nii.gz) or 2-D images ({', '.join(IMAGE_SUFFIXES)})"
    if volumes and images:
        raise MedicalDataError(
            f"--data.predict_path {root}: holds both NIfTI volumes (e.g. {volumes[0]}) and 2-D images (e.g. "
            f"{images[0]}): give a file or folder of one kind"
        )
    chosen = volumes or images
    if not chosen:
        raise FileNotFoundError(f"--data.predict_path {root}: no {kinds}")
    if others := [p for p in files if p not in set(chosen)]:
        warnings.warn(
            f"--data.predict_path {root}: {len(others)} file(s) not predicted, not of the kinds read ({kinds}), "
            f"e.g. {others[0]}",
            MedicalDataWarning,
            stacklevel=3,
        )
    return root, chosen


def _decathlon_test_files(meta_path: Path) -> list[Path]:
    """The volumes of a Decathlon ``dataset.json``'s ``test`` list (``imagesTs/``), links kept as named."""
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise MedicalDataError(f"{meta_path}:{exc.lineno}: invalid JSON ({exc.msg})") from exc
    listed = meta.get("test") if isinstance(meta, dict) else None
    if not listed or not isinstance(listed, list):
        raise MedicalDataError(
            f"--data.predict_path {meta_path.parent}: its dataset.json has no 'test' list; give the folder of "
            "the volumes to predict (e.g. imagesTs)"
        )
    files = []
    for n, entry in enumerate(listed):
        entry = entry.get("image") if isinstance(entry, dict) else entry  # some sets list {"image": ...}
        if not isinstance(entry, str):
            raise MedicalDataError(f"{meta_path}: test entry {n} is no file name: {entry!r}")
        path = Path(os.path.abspath(meta_path.parent / entry))
        if not path.is_file():
            raise FileNotFoundError(f"{path}: listed in {meta_path} (test entry {n}, {entry!r}) but missing")
        files.append(path)
    return files


def _holds_volumes(predict_path: str | Path) -> bool:
    """Whether ``--data.predict_path`` names NIfTI volumes (a file, a Decathlon folder, or a folder holding
    some) rather than 2-D images: which reader's settings apply to it."""
    root = Path(predict_path)
    if root.is_file():
        return _is_nifti(root)
    return (root / "dataset.json").is_file() or any(_is_nifti(p) for p in root.rglob("*.nii*"))


def build_predict_dataset(
    predict_path: str | Path, crop_size: int, size_problem: Callable[[int, int], str | None] | None = None, **settings
) -> MedicalDataset:
    """The unlabelled dataset of ``--data.predict_path``: NIfTI volumes (:class:`NiftiImageDataset`, with
    ``settings``' ``modality_index`` / ``percentiles`` / ``cache_volumes``) or 2-D images
    (:class:`ImageFileDataset`). Each file must read whole, and a 2-D image (predicted whole, not resized)
    must be large enough for the network (``size_problem(height, width)``: why not, or None; the task's
    :meth:`~domains.medical.task.MedicalSegmentationTask.predict_size_problem`); those that fail are skipped
    and named in one warning (an error if none is left). Images in true colour are read as their luminance, named in one
    warning (grey stored as RGB is read as grey, unsaid). Outputs are named after the files (``ct_100``,
    ``img_7``), by the path below the folder where a name repeats (``site_a__ct_100``:
    :func:`shared.files.distinct_names`)."""
    root, files = _predict_files(predict_path)
    nifti = _is_nifti(files[0])
    readable, failed, colour, small, no_channel = [], [], [], 0, 0
    headers = []  # each readable volume's, read once: NiftiImageDataset takes them
    for path in files:
        try:
            if nifti:  # a channel the volume lacks is refused here, before any volume is predicted
                header, shape = _nifti_header_and_shape(path, check_data=True)
                # without a modality_index setting, channel 0, which every volume has
                if problem := _modality_problem(path, shape, settings.get("modality_index", 0)):
                    no_channel += 1
                    raise MedicalDataError(problem)
                headers.append(header)
            else:
                try:
                    image = LIDCPngDataset.read_image(path, upright=True)
                except ColourImageError:  # decoded again only if in colour (rare): the check stays one read
                    image = LIDCPngDataset.read_image(path, upright=True, luminance=True)
                    colour.append(str(path))
                if size_problem is not None and (problem := size_problem(*image.shape[:2])):
                    small += 1
                    raise MedicalDataError(f"{path}: {problem}")
        except MedicalDataError as err:
            failed.append(str(err))
        else:
            readable.append(path)
    if colour:
        warnings.warn(
            f"--data.predict_path {root}: {len(colour)} of {len(files)} images are in colour and are read as "
            "their luminance (0.299 R + 0.587 G + 0.114 B; the models learnt grey scans): "
            + _first_few(colour),
            MedicalDataWarning,
            stacklevel=3,
        )
    counts = {
        "unreadable": len(failed) - small - no_channel,
        "too small for the network": small,
        "without the channel asked for": no_channel,
    }
    why = " or ".join(reason for reason, count in counts.items() if count)
    if failed:
        shown = "; ".join(failed[:3]) + (f"; ... {len(failed) - 3} more" if len(failed) > 3 else "")
        warnings.warn(
            f"--data.predict_path {root}: {len(failed)} of {len(files)} files are not predicted, {why}: {shown}",
            MedicalDataWarning,
            stacklevel=3,
        )
    if not readable:
        cannot = "can be read" if why == "unreadable" else f"can be predicted ({why}): {failed[0]}"
        raise MedicalDataError(f"--data.predict_path {root}: none of its {len(files)} files {cannot}")
    from .predict import output_folder_name

    stem = _case_name if nifti else (lambda path: path.stem)
    names = distinct_names(readable, root if root.is_dir() else None, stem)
    folders = [output_folder_name(n) for n in names]  # "scan 1" and "scan_1" write one folder
    keys = [n.casefold() for n in folders]  # and Scan/ and scan/ do on macOS / Windows disks
    if len(set(keys)) < len(keys):  # ct_1.nii beside ct_1.nii.gz
        key = next(k for k in keys if keys.count(k) > 1)
        name = folders[keys.index(key)]
        same = [str(p) for p, k in zip(readable, keys) if k == key]
        raise MedicalDataError(
            f"--data.predict_path {root}: {' and '.join(same[:2])} make one output name {name!r}: rename one"
        )
    if not nifti:
        dataset = ImageFileDataset(readable, names)
    else:
        wanted = ("modality_index", "percentiles", "cache_volumes")
        chosen = {k: v for k, v in settings.items() if k in wanted}
        dataset = NiftiImageDataset(readable, names, crop_size, **chosen, headers=headers)
    dataset.not_predicted = failed  # named again in predict's count at the end, with those refused while read
    return dataset


# -------------------------------------------------------------------------------------------- factory


#: the dataset class of each ``data_format``
DATASETS = {"lidc_png": LIDCPngDataset, "lidc_pickle": LIDCPickleDataset, "decathlon": DecathlonSliceDataset}


def dataset_defaults(cls: type) -> dict:
    """``cls``'s constructor defaults: what a setting left out of ``dataset_kwargs`` (or a checkpoint) was."""
    return {k: p.default for k, p in inspect.signature(cls).parameters.items() if p.default is not p.empty}


def build_dataset(format: str, path: str | Path, split: str, cap: int | None = None, **kw) -> MedicalDataset:
    """Dataset for ``format`` in {"lidc_png", "lidc_pickle", "decathlon"}; ``kw`` go to its constructor.
    ``cap`` (the split's ``max_items``, applied by :class:`MedicalDataModule`) goes to the LIDC PNG reader,
    whose file checks then read only the images it keeps; the others find their items from what they read
    whole."""
    _check_reader_options(format, kw)
    if format == "lidc_png":
        kw["max_items"] = cap
    return DATASETS[format](path, split, **kw)


def _check_reader_options(format: str, kw: dict) -> None:
    """``kw`` are options of ``format``'s reader: a typo in --data.dataset_kwargs ended in a bare "unexpected
    keyword argument" traceback (or, for ``predict_path``, went unread)."""
    if format not in DATASETS:
        raise ValueError(f"unknown medical data format {format!r}; valid formats: {', '.join(DATA_FORMATS)}")
    # max_items is the data module's --data.max_items (:func:`build_dataset`), no dataset_kwargs option
    reserved = ("root", "split", "max_items")
    accepted = [name for name in inspect.signature(DATASETS[format]).parameters if name not in reserved]
    if unknown := sorted(set(kw) - set(accepted)):
        raise ValueError(
            f"--data.dataset_kwargs: {', '.join(unknown)} not an option of the {format} reader; "
            f"valid: {', '.join(accepted)}"
        )


# ------------------------------------------------------------------------------------- training view


class ReaderDataset(Dataset):
    """Training/evaluation view over a base dataset: adds ``"mask"`` and ``"reader"``, optional augmentation.

    ``reader_sampling``: "random" draws one reader per item per call (PHiSeg); "all" makes every
    (image, reader) pair an item; "first" always uses reader 0 (evaluation). Randomness comes from torch's
    generator, which Lightning seeds and DataLoader workers split, so runs repeat and workers differ.

    ``skip_refused`` (``predict``): an item its reader refuses (:class:`MedicalDataError`: a volume's intensity
    window, NaN voxels, a file gone since it was listed) comes as a blank stand-in with the reason in
    ``"error"`` (:meth:`MedicalDataset.refused_item`; "" for the others), which the task skips and counts; fit,
    validate and test stop on it, naming the file (training on it is wrong).
    """

    def __init__(
        self,
        base: MedicalDataset,
        reader_sampling: Literal["random", "all"] = "random",
        augment: Callable | None = None,
        indices: Sequence[int] | None = None,
        skip_refused: bool = False,
    ):
        if reader_sampling not in ("random", "all", "first"):
            raise ValueError(f"reader_sampling must be 'random', 'all' or 'first', got {reader_sampling!r}")
        self.base = base
        self.reader_sampling = reader_sampling
        self.augment = augment
        self.indices = list(range(len(base))) if indices is None else list(indices)
        self.skip_refused = skip_refused
        self.num_readers = base.num_readers
        if reader_sampling == "all":
            self.items = [(i, r) for i in self.indices for r in range(base.num_readers)]
        else:
            self.items = [(i, None if reader_sampling == "random" else 0) for i in self.indices]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        i, reader = self.items[index]
        try:
            record = self.base.load(i)
        except MedicalDataError as err:
            if not self.skip_refused:
                raise
            record = self.base.refused_item(i, str(err))
        else:
            record = {**record, "error": ""} if self.skip_refused else record
        image, masks = record["image"], record["masks"]
        if self.augment is not None:
            # albumentations ignores global seeds: reseed it from torch so workers and runs stay reproducible,
            # each step from a stream of its own (reseed_pipeline: set_random_seed tied the flip to the affine)
            if hasattr(self.augment, "set_random_seed"):  # a plain callable of one's own draws its own
                reseed_pipeline(self.augment, (int(torch.randint(0, 2**63 - 1, ()).item()),))
            out = self.augment(image=image, masks=list(masks))
            image = np.asarray(out["image"], dtype=np.float32).reshape(image.shape)
            masks = np.stack([np.asarray(m) for m in out["masks"]]).reshape(masks.shape)
        if reader is None:
            reader = int(torch.randint(0, masks.shape[0], ()).item())
        item = _to_item(dict(record, image=image, masks=masks))
        item["mask"] = item["masks"][reader : reader + 1].clone()
        item["reader"] = reader
        return item


class _VolumeGroups(DistributedSampler):
    """The volumes in an order drawn from ``generator``, their slices laid out volume by volume and cut into
    ``num_replicas`` equal shares (padded as :class:`~torch.utils.data.DistributedSampler` pads), this rank's
    share taken ``volumes_at_once`` volumes at a time, the slices of those shuffled together
    (:class:`VolumeGroupedSampler`). One process: all the volumes, ``volumes_at_once`` at a time."""

    def __init__(
        self,
        volumes: Sequence[int],
        volumes_at_once: int,
        generator: torch.Generator,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        self.volumes = np.asarray(volumes, dtype=np.int64)
        self.volumes_at_once = max(1, int(volumes_at_once))
        self.generator = generator
        # num_samples (this rank's share, its len()) and total_size as DistributedSampler counts them
        super().__init__(self.volumes, num_replicas=num_replicas, rank=rank, shuffle=True, drop_last=False)

    def __iter__(self):
        ids, where = np.unique(self.volumes, return_inverse=True)
        place = np.empty(len(ids), dtype=np.int64)
        place[torch.randperm(len(ids), generator=self.generator).numpy()] = np.arange(len(ids))
        # every slice, volume by volume in the drawn order (by index within one), padded from its start
        laid = np.resize(np.argsort(place[where.reshape(-1)], kind="stable"), self.total_size)
        mine: list[int] = []
        for rank in range(self.num_replicas):  # every rank's draws: the ranks' generators stay in step
            share = laid[rank * self.num_samples : (rank + 1) * self.num_samples]
            held = self.volumes[share]
            _, first = np.unique(held, return_index=True)
            order = held[np.sort(first)]  # the share's volumes in the drawn order
            for start in range(0, len(order), self.volumes_at_once):
                items = np.sort(share[np.isin(held, order[start : start + self.volumes_at_once])])
                items = items[torch.randperm(len(items), generator=self.generator).numpy()]
                if rank == self.rank:
                    mine.extend(items.tolist())
        return iter(mine)


class VolumeGroupedSampler(EpochSeeded, _VolumeGroups):
    """Shuffled training order that reads a few volumes at a time: the volumes in a random order, taken
    ``volumes_at_once`` at a time, the slices of those shuffled together. A Decathlon slice loads, rescales and
    resizes its whole volume unless the dataset's small per-process cache holds it, and plain shuffling missed
    the cache on almost every slice (250 ms per slice against 21 in order, 12 volumes of 256x256x64). Batches
    then mix the slices of a few volumes, as patch-based 3D pipelines' batches do. The order follows (``seed``,
    epoch) as the other tasks' shuffles do (:class:`shared.data.EpochSeeded`): drawn from torch's global
    generator, a fit resumed at epoch k replayed epoch 0's order. Each loader worker has its own cache, so each
    loads a group's volumes once: a volume per worker per epoch, not one per slice.

    Under DDP (``num_replicas`` processes, the data module passes its trainer's) each rank takes a contiguous
    share of the volumes (a volume at a share's edge split between
    two ranks), grouped as above; the shares are of equal length, padded with the epoch's first slices, and
    together hold every slice. A :class:`~torch.utils.data.DistributedSampler` so that Lightning leaves it as
    it is: the sampler it wraps other samplers in deals their order round-robin to the ranks, which gave each
    rank slices of every volume, so each read every volume once per slice it got."""

    def __init__(
        self,
        volumes: Sequence[int],
        volumes_at_once: int,
        seed: int,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        super().__init__(volumes, volumes_at_once, seed=seed, num_replicas=num_replicas, rank=rank)


def pad_collate(items: Sequence[dict]) -> dict:
    """``default_collate`` after padding every item's maps at the bottom and right to the batch's largest
    image, with ``"size"`` (B, 2) the (H, W) each item had: ``predict`` sees whole images, whose sizes may
    differ, and cuts each back to its size before the network (see ``MedicalSegmentationTask.predict_step``).
    Images pad by replicating their edge, masks with zeros."""
    height = max(int(item["image"].shape[-2]) for item in items)
    width = max(int(item["image"].shape[-1]) for item in items)
    out = []
    for item in items:
        h, w = item["image"].shape[-2:]
        item = dict(item, size=torch.tensor([h, w]))
        if (h, w) != (height, width):
            pad = (0, width - w, 0, height - h)
            item["image"] = torch.nn.functional.pad(item["image"][None], pad, mode="replicate")[0]
            for key in ("masks", "mask"):
                if key in item:
                    item[key] = torch.nn.functional.pad(item[key], pad)
        out.append(item)
    return default_collate(out)


def _check_max_items(max_items):
    """``max_items`` read (a dotted option's "4" as 4: :func:`shared.data.check_cap`), refused where a cap
    would read as another one: a split name that is none (a typo capped nothing), a count below 1 (read as 1)."""
    if not isinstance(max_items, dict):
        return check_cap(max_items, "--data.max_items")
    for split in max_items:
        if split not in (*SPLITS, "predict"):
            raise ValueError(f"--data.max_items: {split!r} is no split; valid: {', '.join((*SPLITS, 'predict'))}")
    return {split: check_cap(cap, f"--data.max_items ({split})") for split, cap in max_items.items()}


def _cap_indices(n: int, cap: int | None) -> list[int]:
    """Evenly spread subset (spans many patients rather than the first one)."""
    if cap is None or cap >= n:
        return list(range(n))
    return sorted({round(v) for v in np.linspace(0, n - 1, max(cap, 1))})


def _fractions_hint(counts: dict[str, int], needed: list[str]) -> list[float] | None:
    """Split fractions that give every ``needed`` split at least one group (a group moved from the split
    that can best spare one), checked against :func:`group_split`'s rounding; None: too few groups."""
    counts, n = dict(counts), sum(counts.values())
    for name in needed:
        if counts[name] == 0:
            donor = max(SPLITS, key=lambda s: counts[s] - (s in needed))
            if counts[donor] - (donor in needed) < 1:
                return None
            counts[donor], counts[name] = counts[donor] - 1, 1
    shares = [round(counts[s] / n, 4) for s in SPLITS[:-1]]
    shares.append(round(1 - sum(shares), 4))
    parts = group_split(list(range(n)), shares, names=SPLITS, verbose=False)
    return shares if all(parts[s] for s in needed) else None


#: the training augmentation's brightness / contrast range (a share of the [0, 1] window): scanners, doses and
#: reconstruction kernels shift a windowed CT slice's grey levels by a few percent, and MRI has no absolute
#: scale at all (nnU-Net's intensity augmentation is wider: 0.75-1.25 gain); mild enough to leave a nodule's
#: contrast to the lung, which the readers outlined
AUGMENT_INTENSITY = 0.1


class MedicalDataModule(SplitLoaders):
    """Train / val / test loaders for multi-reader lesion segmentation, split by patient.

    Patients are ``lidc_png``'s folders and ``decathlon``'s cases; ``lidc_pickle`` names no patient, so its
    split is by scan.

    Every batch has ``image`` (B,1,H,W), ``masks`` (B,R,H,W), ``mask`` (B,1,H,W), ``reader`` (B,), ``id``
    and ``group``. Train: ``mask`` is the sampled reader; val / test: reader 0, never augmented.

    Args:
        data_format: ``lidc_png`` (the DeepMind HPU-Net crop layout), ``lidc_pickle`` (the pickle most PyTorch
            ports use; unpickling runs code: only files you trust) or ``decathlon`` (Medical Segmentation
            Decathlon / BraTS NIfTI, one reader).
        data_path: the data's root folder (or the pickle file); null: the synthetic four-reader LIDC set,
            generated on first use under data/medical/synthetic_lidc (``lidc_png`` only).
        crop_size: side of the square centre crop the models see (LIDC: 128).
        batch_size: images per batch.
        num_workers: loader processes; null: one less than the CPU cores, at most 4.
        reader_sampling: ``random`` (each training step a random reader's mask) or ``all`` (every reader as
            its own item).
        augment: training augmentation (:func:`shared.data.segmentation_augmentations`): a horizontal flip, a
            rotation of up to 10 degrees with a scale of 0.9-1.1, and on the image alone a brightness and
            contrast change of up to ``augment_intensity``, each on half the items.
        augment_intensity: that brightness / contrast range, a share of the [0, 1] range (0: no intensity
            step). On the LIDC-like readers, where a fainter lesion is marked by fewer readers, it cost the
            HPU-Net 0.06 GED (README, LIDC-like readers), not the Prob. U-Net.
        max_items: at most this many images per split (an int, or ``{val: 48, test: 96}``); ``predict`` reads
            every image of the test split (or of ``predict_path``) unless an int or a ``predict`` entry caps it
            (a NIfTI volume with slices left out is then written slice by slice only).
        seed: seed of the scan / patient split of ``lidc_pickle`` and ``decathlon`` (and of the empty slices
            Decathlon keeps); ``lidc_png`` is split by its folders, so the seed does not change it.
            Augmentation and the reader drawn per step follow ``seed_everything`` (torch's generator), not
            this seed.
        dataset_kwargs: passed to the dataset (e.g. ``{modality_index: 1}`` for Decathlon).
        synthetic: settings of the synthetic set generated when ``data_path`` is null (those of
            :func:`domains.medical.synthetic.generate_lidc_png`), e.g. ``{readers: lidc}`` for readers with
            the real LIDC statistics (generated under data/medical/synthetic_lidc_lidc_readers; other settings
            under a folder named after them, e.g. data/medical/synthetic_lidc_size-64); null: the default.
        predict_path: ``predict`` on your own unlabelled data instead of the test split (``data_path`` is then
            not read): a NIfTI volume (.nii / .nii.gz) or a folder of them (every axial slice, through the
            Decathlon pipeline with ``dataset_kwargs``' ``modality_index`` / ``percentiles`` and ``crop_size``;
            written back on each volume's grid and affine), a Decathlon folder (its dataset.json's ``test``
            list), or 2-D images (.png, .jpg, .tif, ...) or a folder of them (read as the LIDC PNGs, whole).
            Outputs are named after the files; a file that does not read, or that its reader refuses (an
            intensity window beyond any scan, NaN voxels), is skipped, named with its reason in a count at the
            end ("predicted 498 of 500 files; skipped 2"); none predicted is an error.
    """

    def __init__(
        self,
        data_format: Literal["lidc_png", "lidc_pickle", "decathlon"] = "lidc_png",
        data_path: str | None = None,
        crop_size: int = 128,
        batch_size: int = 16,
        num_workers: int | None = None,
        reader_sampling: Literal["random", "all"] = "random",
        augment: bool = True,
        augment_intensity: float = AUGMENT_INTENSITY,
        max_items: dict | int | None = None,
        seed: int = 0,
        dataset_kwargs: dict | None = None,
        synthetic: dict | None = None,
        predict_path: str | None = None,
    ):
        super().__init__()
        if data_format not in DATA_FORMATS:
            raise ValueError(
                f"unknown medical data format {data_format!r}; valid formats: {', '.join(DATA_FORMATS)}"
            )
        if reader_sampling not in ("random", "all"):
            raise ValueError(f"reader_sampling must be 'random' or 'all', got {reader_sampling!r}")
        if crop_size < 16:  # the networks halve the image at least four times
            raise ValueError(f"crop_size must be at least 16 pixels, got {crop_size}")
        if data_path is None and data_format != "lidc_png" and predict_path is None:
            self._no_data_path(data_format)
        if synthetic is not None:
            if data_path is not None:
                raise ValueError("synthetic: generator settings are used only with data_path null; drop one")
            from domains.medical.synthetic import check_synthetic_settings

            check_synthetic_settings(synthetic, option="synthetic")
        self.save_hyperparameters()
        self.synthetic = dict(synthetic or {})
        self.data_format = data_format
        self.data_path = data_path
        self.crop_size = crop_size
        self.set_loader_options(batch_size, num_workers)
        self.reader_sampling = reader_sampling
        self.augment = augment
        if not 0 <= augment_intensity < 1:
            raise ValueError(
                f"--data.augment_intensity must be in [0, 1) (a share of the range), got {augment_intensity}"
            )
        self.augment_intensity = float(augment_intensity)
        self.max_items = _check_max_items(max_items)
        self.seed = seed
        self.dataset_kwargs = dict(dataset_kwargs or {})
        self.predict_path = predict_path
        self.datasets: dict[str, ReaderDataset] = {}

    @staticmethod
    def _no_data_path(data_format: str) -> None:
        raise ValueError(
            f"data_path is required for data_format={data_format!r} (only lidc_png has a synthetic default; "
            "predict on unlabelled files needs only --data.predict_path)"
        )

    def _path(self) -> Path:
        from domains.medical.synthetic import check_finished, ensure_synthetic_lidc

        if self.data_path is not None:
            check_finished(self.data_path)  # a synthetic set stopped part-way is refused, not read
            return Path(self.data_path)
        if self.data_format != "lidc_png":
            self._no_data_path(self.data_format)

        return ensure_synthetic_lidc(**self.synthetic)

    def prepare_data(self) -> None:
        if self.data_path is None and not self.predicting_own_images():  # generate once, on the main process
            self._path()

    def _cap(self, split: str) -> int | None:
        if isinstance(self.max_items, dict):
            return self.max_items.get(split)
        return self.max_items

    @property
    def GROUP_UNIT(self) -> str:  # the base class's attribute, which messages name
        """The pickle names no patient: its split is by scan (``series_uid``)."""
        return "scans" if self.data_format == "lidc_pickle" else "patients"

    #: the training crop (2-D formats) or the square NIfTI slices are resized to: the resume, validate and test
    #: warnings name it when it differs from the checkpoint's (the Decathlon intensity settings and labels are
    #: refused outside fit: :meth:`check_checkpoint_inputs`; a resume names them too: :meth:`other_input_than`)
    INPUT_SETTINGS = ("crop_size",)

    def other_input_than(self, trained: dict) -> str | None:
        """:data:`INPUT_SETTINGS`, and the Decathlon input settings of ``dataset_kwargs`` (the channel and the
        intensity window the network reads) that differ from the checkpoint's (``trained``): a ``fit
        --ckpt_path`` resume on another channel went on unsaid."""
        shared = super().other_input_than(trained)
        before, now = self.input_settings(trained, "fit"), self.input_settings(dict(self.hparams), "fit")
        kwargs = [
            f"data.dataset_kwargs {k} {before[k]!r} (this command: {now[k]!r})"
            for k in before
            if k != "crop_size" and k in now and not same_setting(before[k], now[k])
        ]
        return ", ".join([shared] * bool(shared) + kwargs) or None

    def split_groups(self, name: str) -> set[str] | None:
        """The patients (cases) of split ``name`` once built, for the checkpoint's leak check."""
        view = self.datasets.get(name)
        return None if view is None else {str(view.base.groups[i]) for i in view.indices}

    def dataset(self, split: str) -> ReaderDataset:
        """The (cached) view of ``split`` the loaders use.

        ``"predict"`` is the test split as ``predict`` reads it: whole images, no centre crop (so outputs land
        on the source image), and every slice of a Decathlon volume (not the slices its labels pick); with
        ``predict_path``, the files it names instead (:func:`build_predict_dataset`), read the same way.
        """
        if split == "predict" and self.predict_path is not None and split not in self.datasets:
            # NIfTI volumes go through the Decathlon reader's pipeline whatever data_format the config names
            reader = "decathlon" if _holds_volumes(self.predict_path) else self.data_format
            _check_reader_options(reader, self.dataset_kwargs)
            # a 2-D image too small for the network is skipped and named, not the run's end (no model: unchecked)
            module = self.trainer.lightning_module if self.trainer is not None else None
            size_problem = getattr(module, "predict_size_problem", None)
            base = build_predict_dataset(self.predict_path, self.crop_size, size_problem, **self.dataset_kwargs)
            self.datasets[split] = ReaderDataset(base, "first", indices=self._capped(split, base), skip_refused=True)
        if split not in self.datasets:
            kw: dict[str, Any] = {"crop_size": self.crop_size}
            if self.data_format != "lidc_png":
                kw["seed"] = self.seed
            kw.update(self.dataset_kwargs)
            if split == "predict" and self.data_format == "decathlon":
                kw["all_slices"] = True  # crop_size stays: Decathlon resizes and pads, it never crops
            elif split == "predict":
                kw["crop_size"] = None
            source = "test" if split == "predict" else split
            with holding_generated_sets():  # a --force run waits for the listing, not the run: never half a set
                base = build_dataset(self.data_format, self._path(), source, self._cap(split), **kw)
            train = split == "train"
            augment = (
                segmentation_augmentations(seed=self.seed, intensity=self.augment_intensity)
                if (train and self.augment)
                else None
            )
            self.datasets[split] = ReaderDataset(
                base,
                self.reader_sampling if train else "first",
                augment=augment,
                indices=self._capped(split, base),
                skip_refused=split == "predict",  # a refused file is skipped and named; the other stages stop
            )
        return self.datasets[split]

    def _capped(self, split: str, base: MedicalDataset) -> list[int]:
        """The items of ``base`` that ``max_items`` keeps for ``split`` (said when it leaves some out)."""
        indices = _cap_indices(len(base), self._cap(split))
        if len(indices) < len(base):
            rank_zero_info(f"[MedicalDataModule] {split}: using {len(indices)} of {len(base)} images (max_items)")
        return indices

    def split_settings(self, hparams: dict, stage: str) -> dict:
        """``lidc_png`` is split by its folders (no setting moves an image); the others by ``seed`` and the
        dataset's ``fractions`` / ``seed``."""
        data_format = hparams.get("data_format", "lidc_png")
        if data_format == "lidc_png":
            return {}
        given = hparams.get("dataset_kwargs") or {}
        fractions = given.get("fractions", dataset_defaults(DATASETS[data_format])["fractions"])
        return {"seed": given.get("seed", hparams.get("seed", 0)), "fractions": fractions}

    def input_settings(self, hparams: dict, stage: str) -> dict:
        """The settings among ``hparams`` (init arguments: this module's or a checkpoint's) that decide what
        the network sees of a NIfTI slice (``crop_size``, which it is resized to, ``modality_index``,
        ``percentiles``) and, in ``validate`` / ``test``, what it is scored against (``foreground_labels``).
        The 2-D formats only crop, so they have none; splitting and caching settings are no input."""
        own = hparams.get("predict_path") if stage == "predict" else None
        if own is not None:  # one's own files: NIfTI volumes have these settings, 2-D images are read whole
            decathlon = False
            if not _holds_volumes(own):
                return {}
        else:
            decathlon = hparams.get("data_format", "lidc_png") == "decathlon"
            if not decathlon:
                return {}
        given, defaults = hparams.get("dataset_kwargs") or {}, dataset_defaults(DecathlonSliceDataset)
        keys = ["modality_index", "percentiles"]
        if decathlon and stage in ("validate", "test"):
            keys.append("foreground_labels")
        settings = {"crop_size": hparams.get("crop_size", dataset_defaults(type(self))["crop_size"])}
        return settings | {key: given.get(key, defaults[key]) for key in keys}

    def check_checkpoint_inputs(self, trained: dict, stage: str, source: str = "the checkpoint (--ckpt_path)") -> None:
        """Refuse to evaluate or predict a checkpoint on other inputs than it was fitted on (``trained``: its
        ``datamodule_hyper_parameters``): fitted on BraTS channel 2 with ``foreground_labels: [3]``, a ``test``
        without them scored channel 0 against every label, and said nothing. The error names each setting, both
        values and the option that gives the checkpoint's. A checkpoint that stored no data settings is not checked."""
        stage = getattr(stage, "value", stage)  # Lightning passes a TrainerFn
        if not trained:
            return
        before, now = self.input_settings(trained, stage), self.input_settings(dict(self.hparams), stage)
        if "foreground_labels" in before and "foreground_labels" in now:  # [enhancing tumour] is [3]
            before["foreground_labels"], now["foreground_labels"] = (
                self._label_values(before["foreground_labels"]),
                self._label_values(now["foreground_labels"]),
            )
        differs = [k for k in before if k in now and not same_setting(before[k], now[k])]
        if not differs:
            return
        given = dict(self.dataset_kwargs)
        listed = ", ".join(
            f"data.{'crop_size' if k == 'crop_size' else 'dataset_kwargs ' + k} {before[k]!r} (this command: "
            f"{now[k]!r}{'' if k == 'crop_size' or k in given else ', the default'})"
            for k in differs
        )
        fixes = [f"--data.crop_size {before['crop_size']}"] if "crop_size" in differs else []
        if any(k != "crop_size" for k in differs):  # jsonargparse replaces the whole dict: the others kept
            kwargs = {**given, **{k: before[k] for k in differs if k != "crop_size"}}
            shown = ", ".join(f"{k}: {json.dumps(v, default=str)}" for k, v in kwargs.items())
            fixes.append(f"--data.dataset_kwargs '{{{shown}}}'")
        raise CheckpointMismatchError(
            f"{source} was fitted with {listed}: the network would see other input than it learnt from (or be "
            f"scored against other labels). Give the checkpoint's: {' '.join(fixes)}"
        )

    def _label_values(self, chosen) -> Any:
        """``foreground_labels`` as label values by the data's dataset.json (names and values mean one thing;
        null, every non-zero label, is the declared non-zero labels: on a 0 / 1 set, null is [1])."""
        if self.data_path is None:
            return chosen
        meta_path = Path(self.data_path) / "dataset.json"
        try:
            names = json.loads(meta_path.read_text(encoding="utf-8-sig")).get("labels")
            if chosen is None:
                return sorted(value for value in _declared_labels(names) if value != 0) or None
            return sorted(_foreground_labels(chosen, names, meta_path))
        except (OSError, ValueError, AttributeError):  # read as given; the dataset says what is wrong
            return chosen

    def other_split_than(self, trained: dict, stage: str) -> str | None:
        """The shared check (called before ``validate`` / ``test``), after refusing other input settings
        than the checkpoint's (:meth:`check_checkpoint_inputs`; ``predict`` checks when the weights load)."""
        self.check_checkpoint_inputs(trained, stage)
        return super().other_split_than(trained, stage)

    @property
    def num_readers(self) -> int:
        """Readers per image (4 for LIDC, 1 for Decathlon); builds the val split if nothing is set up yet."""
        ds = next(iter(self.datasets.values()), None)
        return (ds if ds is not None else self.dataset("val")).num_readers

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ["train", "val"], "validate": ["val"], "test": ["test"], "predict": ["predict"]}
        with holding_generated_sets():  # every split listed from one generation of a synthetic set
            for split in wanted.get(stage, list(SPLITS)):
                if len(self.dataset(split)) == 0:
                    # otherwise Lightning runs zero batches and exits 0: no metrics, no predictions, no error
                    raise MedicalDataError(self._empty_split_message(split, stage, wanted.get(stage, [split])))

    def _empty_split_message(self, split: str, stage: str | None, needed: list[str]) -> str:
        """Why ``split`` is empty and what to change (the fractions, by their CLI name, or more data)."""
        base = self.dataset(split).base
        name = "test" if split == "predict" else split
        stage = getattr(stage, "value", stage)  # Lightning passes a TrainerFn
        what = f"`{stage}` needs the {name} split" if stage else f"the {name} split"
        counts = getattr(base, "split_groups", None)
        if counts is None:  # lidc_png: the split is a folder
            return f"{self._path()}: {what}, which is empty: add images under {self._path() / name}/images"
        noun, fractions = base.group_noun, [round(f, 4) for f in base.fractions]
        table = ", ".join(f"{s} {counts[s]}" for s in SPLITS)
        message = (
            f"{self._path()}: {what}, which is empty: {sum(counts.values())} {noun} split into {table} "
            f"(fractions {fractions} rounded to whole {noun}, --data.seed {self.seed})"
        )
        if counts[name]:  # groups, but no item (Decathlon volumes without foreground and min_empty 0)
            return (
                f"{message}; its {counts[name]} {noun} gave no slice: keep empty ones (min_empty) or add data"
            )
        needed = ["test" if s == "predict" else s for s in needed]
        hint = _fractions_hint(counts, needed)
        if hint is None:
            return f"{message}; {len(needed)} non-empty splits need at least {len(needed)} {noun}: add data"
        # jsonargparse replaces the whole dict: the hint keeps the user's other dataset_kwargs
        options = {**self.dataset_kwargs, "fractions": hint}
        shown = ", ".join(f"{k}: {json.dumps(v, default=str)}" for k, v in options.items())
        refit = (
            f" and fit again with it: other fractions split the {noun} anew, so the {name} split may then hold "
            f"{noun} a checkpoint trained on"
            if stage in ("validate", "test", "predict")
            else ""
        )
        return (
            f"{message}; add data, or give each split at least one of the {sum(counts.values())} {noun}, "
            f"e.g. --data.dataset_kwargs '{{{shown}}}'{refit}"
        )

    def split_dataset(self, name: str) -> ReaderDataset:
        return self.dataset(name)

    def train_sampler(self) -> Sampler:
        """Decathlon volumes a few at a time (:class:`VolumeGroupedSampler`); the 2D formats: plain shuffling."""
        view = self.dataset("train")
        if isinstance(view.base, DecathlonSliceDataset):
            volumes = [view.base.slices[i][0] for i, _ in view.items]
            ranks = {}  # under DDP: each rank's share of the volumes
            if self.trainer is not None:
                ranks = {"num_replicas": self.trainer.world_size, "rank": self.trainer.global_rank}
            return VolumeGroupedSampler(volumes, view.base.cache_volumes, self.order_seed, **ranks)
        return super().train_sampler()

    def predict_dataloader(self) -> DataLoader:
        """Whole images of the test split (see :meth:`dataset`), padded to the batch's largest by
        :func:`pad_collate`, in order."""
        return self._loader("predict", collate_fn=pad_collate)

    @property
    def pin_memory(self) -> bool:
        return torch.cuda.is_available()
