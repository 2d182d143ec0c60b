"""What the driving tasks share: image and label-map readers, sequence groups, the synthetic default roots.

Real data and the built-in synthetic data take one code path: the generator in :mod:`domains.driving.synthetic`
writes the KITTI and SegmentMeIfYouCan layouts that real data use, and the data modules only call it when no
``data_path`` is given. Splits are by driving *sequence* (consecutive frames are near duplicates, so a
frame-level split leaks), read from a sequence mapping file where one exists, else by image id.
"""

from __future__ import annotations

import contextlib
import gc
import os
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from pytorch_lightning.utilities import rank_zero_info

from domains.driving.formats import (
    IMAGE_EXTENSIONS,
    PIL_DECODE_ERRORS,
    DropLog,
    LabelFormatError,
    LabelWarning,
    image_size,
    read_text_file,
)
from shared.files import count_hidden, distinct_names, is_hidden, vanished_note, visible_inputs
from shared.images import ImageDecodeError, check_jpeg_whole, stretch_to_uint8
from shared.images import check_decodes as _check_decodes

IGNORE_INDEX = 255  # void pixels in semantic and anomaly masks
ANOMALY_LABEL_VALUES = (0, 1, IGNORE_INDEX)

# --------------------------------------------------------------------------------------------- utilities


def _imread(path: str | Path, flags: int, missing: str, undecodable: str) -> np.ndarray:
    """``cv2.imread`` that names the file: FileNotFoundError when absent, LabelFormatError when undecodable."""
    array = cv2.imread(str(path), flags)
    if array is None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: {missing} not found{vanished_note(path)}")
        raise LabelFormatError(path, None, f"cannot decode {undecodable}")
    return array


def read_rgb(path: str | Path, ignore_orientation: bool = False) -> np.ndarray:
    """Decode an image to RGB uint8 (H, W, 3); :class:`LabelFormatError` naming the file if it cannot. A 16-bit
    (or float) image is read at full depth and stretched to 0..255 (:func:`shared.images.stretch_to_uint8`):
    a plain read keeps only its high byte, which leaves 12-bit camera data nearly black.

    A JPEG's, PNG's or WebP's EXIF orientation is applied (a phone photo comes out upright) unless ``ignore_orientation``: an image
    with a label mask is read as stored, as its mask is (masks are drawn on the stored pixels; rotating the image
    alone misaligned them, or failed on a size that matches on disk)."""
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH
    flags |= cv2.IMREAD_IGNORE_ORIENTATION if ignore_orientation else 0
    image = _imread(path, flags, "image file", "image")
    try:  # OpenCV fills a cut-short JPEG with grey, saying so on stderr only
        check_jpeg_whole(path)
    except ImageDecodeError as err:
        raise LabelFormatError(path, None, err.reason) from None
    if image.dtype != np.uint8:
        image = stretch_to_uint8(image, path, LabelWarning)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_label_map(path: str | Path, colour: bool = False) -> np.ndarray:
    """Decode a single-channel label PNG (a 3-channel grey PNG is accepted: its channels must agree). A 1-bit PNG
    (what ``Image.fromarray(bool_mask).save`` writes) gives its 0 / 1 values, which OpenCV scales to 0 / 255
    (every anomaly pixel would read as void). ``colour``: a colour map is returned as (H, W, 3) RGB instead of
    refused.

    A palette PNG is read by what its palette holds (every entry, not only those an image uses: Pascal VOC's
    palette is coloured, though its colour for cat is grey):

    - every entry grey (R = G = B): the grey values, what the file shows and what Pillow's
      ``convert("L")`` gives. Optimisers (pngquant, ``Image.convert("P")``) store a grey 0 / 1 / 255 mask or a
      Cityscapes train-id map this way, with the entries in any order: their indices meant nothing (a 0 / 255
      normal + void mask read as 0 / 1 turned void into anomaly). A palette whose greys are its indices
      (0, 1, 2, ...) gives the same either way. A map whose ids are the indices under a grey palette drawn to
      be seen (ids 1, 2, 3 shown as 60, 120, 180) reads as those greys, which the readers' value checks refuse
      rather than misread: save such a map as a grey (mode L) PNG.
    - any entry coloured (Pascal VOC style, a colour per class): the indices, the class ids by that
      convention, not the colours OpenCV would expand them to (``colour``: the colours, unless all are grey).
    """
    try:  # Pillow reads only the header here: the mode says whether the pixels are palette indices (or bits)
        with Image.open(path) as image:
            if image.mode == "1":
                return np.array(image, dtype=np.uint8)
            if image.mode == "P":
                indices = np.array(image)
                palette = np.array(image.getpalette("RGB") or [], np.uint8).reshape(-1, 3)
                # the whole palette, not the entries an image happens to use: VOC's colour for cat (7) is grey
                if len(palette) and (palette == palette[:, :1]).all() and int(indices.max()) < len(palette):
                    return palette[:, 0][indices]  # a grey palette: the greys, as the file shows
                return np.array(image.convert("RGB")) if colour else indices
    except FileNotFoundError:
        pass  # _imread names the missing file
    except PIL_DECODE_ERRORS as err:
        raise LabelFormatError(path, None, f"cannot decode label mask ({err})") from None
    label = _imread(path, cv2.IMREAD_UNCHANGED, "label mask", "label mask")
    if label.ndim == 3:
        if label.shape[2] == 4 and (label[..., 3] == label[..., 3].max()).all():
            label = label[..., :3]  # an opaque alpha channel says nothing
        if (
            label.shape[2] == 3
            and np.array_equal(label[..., 0], label[..., 1])
            and np.array_equal(label[..., 0], label[..., 2])
        ):
            label = label[..., 0]
        elif colour and label.shape[2] == 3 and label.dtype == np.uint8:
            label = cv2.cvtColor(label, cv2.COLOR_BGR2RGB)
        else:
            shape = f"shape {label.shape}" + (f", {label.dtype}" if colour else "")
            expected = "single-channel or 8-bit RGB" if colour else "single-channel"
            alpha = ""
            if label.shape[2] == 4:  # an opaque one is dropped above: this one hides or fades pixels
                alpha = f" (its alpha channel is not opaque: {int((label[..., 3] < label[..., 3].max()).sum())} px "
                alpha += "below the maximum; save the mask without alpha)"
            raise LabelFormatError(path, None, f"label mask must be {expected}, got {shape}{alpha}")
    return label


def check_decodes(path: Path) -> None:
    """:func:`shared.images.check_decodes`, its error a :class:`LabelFormatError` naming the file."""
    try:
        _check_decodes(path)
    except ImageDecodeError as err:
        raise LabelFormatError(path, None, err.reason) from None


#: a data set's label-map folders, with the image folder beside them and the layout: images found in one of
#: them, beside that image folder, are label maps (and SegmentMeIfYouCan's colour previews), not photos
LABEL_MAP_FOLDERS = {
    "labels_masks": ("images", "SegmentMeIfYouCan"),
    "instances": ("images", "png instance"),
    "semantic": ("image_2", "KITTI"),
    "semantic_rgb": ("image_2", "KITTI"),
    "instance": ("image_2", "KITTI"),
    "gtFine": ("leftImg8bit", "Cityscapes"),
    "gtCoarse": ("leftImg8bit", "Cityscapes"),
}


def _refuse_label_maps(root: Path, paths: Sequence[Path]) -> None:
    """ValueError when ``paths`` (found below the folder ``root``) hold a data set's label maps: a folder of
    :data:`LABEL_MAP_FOLDERS` with its image folder beside it (both must be there: one's own photos in a folder
    named ``semantic`` are predicted), below ``root``, at it, or above it (``<cityscapes>/gtFine/val``, what
    one gives for a split). The error names the image folder to give instead (the root's own, if there)."""
    here = Path(os.path.abspath(root))  # normalised, not resolved: a linked gtFine/ keeps its layout
    for folder in here.parents:
        images = _image_folder(folder)
        if images is not None:
            same = images / here.relative_to(folder)  # leftImg8bit/val/frankfurt for gtFine/val/frankfurt
            raise _label_map_error(root, paths, folder, same if same.is_dir() else images)
    seen: set[Path] = set()
    for start in dict.fromkeys(path.parent for path in paths):
        for folder in (start, *start.parents):
            if folder in seen:
                break
            seen.add(folder)
            images = _image_folder(folder)
            if images is not None:
                maps = [path for path in paths if folder in path.parents]
                raise _label_map_error(root, maps, folder, images)
            if folder == root:
                break


def _image_folder(folder: Path) -> Path | None:
    """The image folder beside ``folder`` when ``folder`` is a data set's label-map folder, else None."""
    images, _ = LABEL_MAP_FOLDERS.get(folder.name, (None, None))
    return folder.parent / images if images and (folder.parent / images).is_dir() else None


def _label_map_error(root: Path, maps: Sequence[Path], folder: Path, instead: Path) -> ValueError:
    images, layout = LABEL_MAP_FOLDERS[folder.name]
    return ValueError(
        f"--data.predict_path {root}: {len(maps)} of its images are {layout} label maps ({folder.name}/ "
        f"beside {images}/, e.g. {maps[0]}), not photos: give --data.predict_path {instead}"
    )


def predict_images(predict_path: str | Path, name=lambda path: path.stem) -> list[tuple[Path, int, int, str]]:
    """``(path, height, width, name)`` of the images a ``--data.predict_path`` names: a folder (searched
    recursively, hidden files such as a Mac copy's ``._name.jpg`` left out) or one file, sizes from the headers.
    Predict writes ``<name>.*`` per image: ``name(path)`` (the stem), or, where that repeats
    (``drive_a/000000.png``, ``drive_b/000000.png``: dashcam drives), the path below the folder joined by ``__``
    (``drive_a__000000``). An image that cannot be decoded whole (a truncated file) is skipped and counted in one
    warning naming them. A folder holding a data set's label maps beside its images (a SegmentMeIfYouCan root:
    ``labels_masks/`` beside ``images/``; KITTI's ``semantic/``, Cityscapes' ``gtFine/``), or a folder
    inside one (``gtFine/val/frankfurt``), is an error naming the image folder (:func:`_refuse_label_maps`):
    its masks were predicted as photos."""
    root = Path(predict_path)
    if root.is_file():
        paths = [root]
    elif root.is_dir():
        paths = visible_inputs(root, IMAGE_EXTENSIONS, "--data.predict_path", LabelWarning)
    else:
        raise FileNotFoundError(f"--data.predict_path {root}: no such file or folder")
    if not paths:
        raise FileNotFoundError(f"--data.predict_path {root}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    if root.is_dir():
        _refuse_label_maps(root, paths)
    found, log = [], DropLog()
    for path in paths:
        try:
            size = image_size(path)
            check_decodes(path)
        except LabelFormatError as err:
            log.add("unreadable", path, None, err.reason)
        else:
            found.append((path, *size))
    log.report(f"--data.predict_path {root}: {log.total} of {len(paths)} images are not predicted")
    if not found:
        raise LabelFormatError(root, None, f"none of its {len(paths)} images can be read")
    names = distinct_names([path for path, _, _ in found], root, name)
    named = [(path, h, w, unique) for (path, h, w), unique in zip(found, names)]
    names = Counter(n.casefold() for *_, n in named)  # Road.txt and road.txt are one file on macOS / Windows
    if repeated := [n for n, count in names.items() if count > 1]:  # a.png beside a.jpg
        same = [str(path) for path, *_, n in named if n.casefold() == repeated[0]]
        raise ValueError(
            f"--data.predict_path {root}: {len(repeated)} image names repeat (e.g. {' and '.join(same[:2])}); "
            "predict writes one file per name: rename one"
        )
    return named


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector held off while a data module reads its records. The records (paths,
    objects, boxes) hold no cycles, so reference counting frees what is dropped, but their allocations start
    a collection every 700 and a full one now and then, which walks the whole heap that torch and Lightning
    make large: a quarter of a 10k-image KITTI setup's CPU time (0.9 s of 3.2-4.4 s). The collector's next run
    after the block looks at them once. A collector the caller turned off stays off. Written by hand: the
    standard library has no such context manager."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def read_annotated_rgb(ann) -> np.ndarray:
    """The RGB image of an annotation record (``image_path``, ``width``, ``height``), which must be the size the
    record says: :class:`LabelFormatError` naming the file otherwise. Read as stored when the record says so
    (``as_stored``: its labels are a pixel map), else with its EXIF orientation applied."""
    image = read_rgb(ann.image_path, ignore_orientation=ann.as_stored)
    if image.shape[:2] != (ann.height, ann.width):
        raise LabelFormatError(
            ann.image_path, None, f"image is {image.shape[1]}x{image.shape[0]} but its annotation says "
            f"{ann.width}x{ann.height}",
        )  # fmt: skip
    return image


def sort_objects(
    annotations: Sequence,
    class_names: Sequence[str],
    class_map: dict[str, str],
    ignore_types: Sequence[str],
    owner: str,
) -> tuple[list[tuple[list, list[int], list]], Counter[str]]:
    """Each image's objects sorted into what is trained on and what is ignored, per image ``(kept, labels,
    ignored)``: each object whose type, renamed by ``class_map``, is a class, with its label (index into
    ``class_names``), and those whose type is in ``ignore_types`` (KITTI DontCare, COCO crowds). Other types are dropped: counted in the returned Counter and reported in one
    info line. Duplicate ``class_names`` or ``class_map`` targets that are neither a class nor an
    ignore type raise ValueError; messages start with ``owner``."""
    index = {name: i for i, name in enumerate(class_names)}
    if len(index) != len(class_names):
        raise ValueError(f"{owner}: duplicate class names {list(class_names)}")
    bad = {k: v for k, v in class_map.items() if v not in index and v not in ignore_types}
    if bad:
        raise ValueError(f"{owner}: class_map targets {bad} are not in class_names {list(class_names)}")
    dropped: Counter[str] = Counter()
    per_image = []
    for ann in annotations:
        kept, labels, ignored = [], [], []
        for obj in ann.objects:
            name = class_map.get(obj.type, obj.type)
            if name in index:
                kept.append(obj)
                labels.append(index[name])
            elif name in ignore_types:
                ignored.append(obj)
            else:
                dropped[obj.type] += 1
        per_image.append((kept, labels, ignored))
    if dropped:  # as intended (KITTI's Truck and Misc for a Car / Pedestrian / Cyclist detector): said, not warned
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(dropped.items()))
        rank_zero_info(
            f"{owner}: objects whose type is not in class_names {list(class_names)} (class_map {class_map}) are "
            f"not trained on or scored: {counts}"
        )
    return per_image, dropped


def to_image_tensor(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """HWC uint8 (or float already in [0, 1]) -> float32 (3, H, W) in [0, 1]."""
    if isinstance(image, torch.Tensor):  # a transform ending in ToTensorV2
        tensor = image.float()
        return tensor / 255.0 if image.dtype == torch.uint8 else tensor
    tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    return tensor.float().div_(255.0) if image.dtype == np.uint8 else tensor.float()


SEQUENCE_MAP_NAMES = ("sequence_map.txt", "sequences.txt", "mapping.txt")
HEADER_IDS = ("id", "image_id", "image")  # a first column naming the column: a header row, not an image


def read_sequence_groups(
    split_root: str | Path, ids: Sequence[str], source_file: str | Path | None = None
) -> list[str]:
    """Sequence (drive) of each image id, for group-aware splits (:func:`find_sequence_groups`). With no
    mapping every image is its own group, and a warning says so: frames of one drive can then land in train
    and test, which flatters the test figures."""
    groups = find_sequence_groups(split_root, ids, source_file)
    if groups is not None:
        return groups
    if ids:
        warnings.warn(
            f"{split_root}: no sequence map ({', '.join(SEQUENCE_MAP_NAMES)} or KITTI's mapping/ files): each of "
            f"the {len(ids)} images is its own group, so frames of one drive may land in train and test. Add an "
            "'<image_id> <sequence>' file to split by drive",
            UserWarning,
            stacklevel=2,
        )
    return list(ids)


def find_sequence_groups(
    split_root: str | Path, ids: Sequence[str], source_file: str | Path | None = None
) -> list[str] | None:
    """Sequence (drive) of each image id, or None when no mapping is found.

    Understands three layouts:
    * beside a label file (a COCO JSON, a YOLO yaml) given as ``source_file``: ``<its stem>.sequences.txt``,
      two columns as below (what ``domains.driving.instances.convert`` writes beside its JSON);
    * in ``split_root`` or its parent, the KITTI devkit pair ``mapping/train_mapping.txt`` (``date drive frame``
      per line) and ``mapping/train_rand.txt`` (one comma-separated line; image ``i`` is mapping line
      ``rand[i]``, 1-based);
    * there too, a two-column text file ``<image_id> <sequence>`` (``sequence_map.txt``, ``sequences.txt``,
      ``mapping.txt``; ``#`` comments, commas or whitespace). A line holding a tab is split at its tabs only,
      so ids with spaces (``my photo 1``) can be listed as ``my photo 1<TAB>drive_a``.
    Ids missing from a mapping are an error naming the file, not silently grouped alone.
    """
    if source_file is not None:
        beside = Path(source_file).with_suffix(".sequences.txt")
        if beside.is_file():
            return _two_column_groups(beside, ids)
    for files in sequence_map_candidates(split_root):
        if all(f.is_file() for f in files):
            return _kitti_devkit_groups(*files, ids) if len(files) == 2 else _two_column_groups(files[0], ids)
    return None


def sequence_map_candidates(split_root: str | Path) -> list[tuple[Path, ...]]:
    """Where :func:`find_sequence_groups` looks for a KITTI split's drives, in its order, in ``split_root`` then
    its parent: the devkit's ``(train_mapping.txt, train_rand.txt)`` pairs, then the two-column maps ``(file,)``."""
    split_root = Path(split_root)
    found: list[tuple[Path, ...]] = []
    for folder in (split_root, split_root.parent):
        for mapping_dir in (folder / "mapping", folder / "devkit_object" / "mapping", folder):
            found.append((mapping_dir / "train_mapping.txt", mapping_dir / "train_rand.txt"))
        found += [(folder / name,) for name in SEQUENCE_MAP_NAMES]
    return found


def sequence_map_text(ids: Sequence[str], groups: Sequence[str]) -> str:
    """The two-column ``<image_id> <sequence>`` text that :func:`find_sequence_groups` reads back; ids or
    sequences the reader would split or take for a header are refused."""
    unreadable = [
        v for v in (*ids, *groups) if not v or "," in v or "#" in v or any(c.isspace() for c in v)
    ] + [i for i in ids if i.lower() in HEADER_IDS]
    if unreadable:
        raise ValueError(
            f"ids and sequences must hold no spaces, commas or '#' and an id cannot be {'/'.join(HEADER_IDS)}: "
            f"got {unreadable[:3]}"
        )
    return "".join(f"{i} {g}\n" for i, g in zip(ids, groups, strict=True))


def source_sequence_map(
    split_root: str | Path, ids: Sequence[str], source_file: str | Path | None = None
) -> tuple[str | None, str]:
    """For a converter: the source's sequence map as the text to write beside the converted set (None when the
    source has none; bad ids raise ValueError before anything is written), and the line saying so."""
    groups = find_sequence_groups(split_root, ids, source_file)
    if groups is None:
        return None, "sequence map: none in the source, so the converted set splits image by image"
    return sequence_map_text(
        ids, groups
    ), f"sequence map: {len(set(groups))} sequences (splits stay by drive)"


def _kitti_devkit_groups(mapping: Path, rand: Path, ids: Sequence[str]) -> list[str]:
    drives = [line.split() for line in mapping.read_text(encoding="utf-8").splitlines() if line.strip()]
    for lineno, parts in enumerate(drives, start=1):
        if len(parts) != 3:
            raise LabelFormatError(mapping, lineno, f"expected 'date drive frame', got {' '.join(parts)!r}")
    try:
        order = [int(v) for v in rand.read_text(encoding="utf-8").replace("\n", ",").split(",") if v.strip()]
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
    for lineno, raw in enumerate(read_text_file(path).splitlines(), start=1):
        text = raw.split("#", 1)[0]
        if "\t" in text:  # tab-separated: the fields may hold spaces
            line = [field.strip() for field in text.split("\t") if field.strip()]
        else:
            line = text.replace(",", " ").split()
        if not line:
            continue
        if len(line) < 2:
            raise LabelFormatError(path, lineno, f"expected '<image_id> <sequence>', got {raw.strip()!r}")
        if line[0].lower() in HEADER_IDS:  # header row
            continue
        table[line[0]] = line[1]
    missing = [i for i in ids if i not in table]
    if missing:
        raise LabelFormatError(path, None, f"{len(missing)} image id(s) have no sequence, e.g. {missing[:3]}")
    return [table[i] for i in ids]


def default_kitti_root() -> Path:
    from domains.driving.synthetic import ensure_synthetic_kitti  # lazy: the generator is optional at import

    return Path(ensure_synthetic_kitti())


def default_anomaly_root() -> Path:
    from domains.driving.synthetic import ensure_synthetic_anomaly

    return Path(ensure_synthetic_anomaly())


def finished_data_path(path: str | Path, option: str = "--data.data_path") -> Path:
    """``path`` (given as ``option``), refused when it is, or lies in, a synthetic set whose generation was
    interrupted (the generator's stamp, no completion marker: :func:`domains.driving.synthetic.writers.
    check_finished`): its few frames were trained on without a word. Real data (no stamp) always pass."""
    from domains.driving.synthetic.writers import check_finished  # lazy, as the default roots

    check_finished(path, option)
    return Path(path)


def data_source(data_path: str | Path | None, patterns: Sequence[str] = ()) -> Path:
    """The file or folder a data module reads: ``data_path`` (null: the synthetic KITTI root), which must exist
    and be no interrupted synthetic set (:func:`finished_data_path`); a folder given where a file matching
    ``patterns`` (e.g. ``("*.json",)``) is wanted must hold exactly one."""
    path = finished_data_path(data_path) if data_path is not None else default_kitti_root()
    if not path.exists():
        raise FileNotFoundError(f"{path}: data_path does not exist")
    if patterns and path.is_dir():
        matches = sorted(p for pattern in patterns for p in path.glob(pattern))
        count_hidden(path, [p for p in matches if is_hidden(p)])  # a Mac copy's ._labels.json
        found = [p for p in matches if not is_hidden(p)]
        if len(found) != 1:
            raise FileNotFoundError(
                f"{path}: expected exactly one {'/'.join(patterns)} file, found {[p.name for p in found] or 'none'}"
            )
        path = found[0]
    return path


def sequence_split_hint(fractions) -> str:
    """What to change when a split by driving sequence comes out empty (for :func:`shared.data.check_stage_splits`)."""
    return f"splits are whole sequences: set --data.split_fractions (now {list(fractions)}) or add data"


def split_by_sequence(
    items: Sequence,
    split_root: str | Path,
    fractions: Sequence[float],
    seed: int,
    max_items: int | None = None,
    source_file: str | Path | None = None,
    names: Sequence[str] = ("train", "val", "test"),
) -> dict[str, list]:
    """Annotations (with ``image_id``) sorted by id, cut to ``max_items``, then split by driving sequence
    (:func:`read_sequence_groups` under ``split_root`` or beside ``source_file``) into ``fractions`` of the
    splits ``names`` (train / val / test)."""
    from shared.data import group_split

    items = sorted(items, key=lambda a: a.image_id)[:max_items]
    groups = read_sequence_groups(split_root, [a.image_id for a in items], source_file)
    index = group_split(groups, fractions, seed=seed, names=names)
    return {name: [items[i] for i in idx] for name, idx in index.items()}


# ------------------------------------------------------------------------------------------------ Cityscapes

#: a Cityscapes frame's image: ``leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png``
CITYSCAPES_IMAGE_SUFFIX = "_leftImg8bit"
#: the splits read (Cityscapes' test maps hold no labels)
CITYSCAPES_SPLITS = ("train", "val")


def is_cityscapes_root(root: Path) -> bool:
    """Whether ``root`` is a Cityscapes download (it holds ``leftImg8bit/``); its ``leftImg8bit/`` or ``gtFine/``
    given instead is an error naming the folder to give."""
    if root.name in ("leftImg8bit", "gtFine") and (root.parent / "leftImg8bit").is_dir():
        raise FileNotFoundError(f"--data.data_path {root} is a folder inside the Cityscapes root: give {root.parent}")
    return (root / "leftImg8bit").is_dir()


def cityscapes_splits(root: Path) -> tuple[Path, Path, list[str]]:
    """A Cityscapes download's ``leftImg8bit/`` and ``gtFine/`` and the splits (of :data:`CITYSCAPES_SPLITS`)
    both hold; an error when none is (the anomaly task reads its semantic maps, the instance task its
    instance maps)."""
    images_root, maps_root = root / "leftImg8bit", root / "gtFine"
    splits = [s for s in CITYSCAPES_SPLITS if (images_root / s).is_dir() and (maps_root / s).is_dir()]
    if not splits:
        raise FileNotFoundError(f"{root}: no {' or '.join(CITYSCAPES_SPLITS)}/ in both leftImg8bit/ and gtFine/")
    return images_root, maps_root, splits
