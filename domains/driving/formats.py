"""Driving annotation file formats: KITTI 2D object labels, COCO detection JSON and YOLO txt.

Everything is read into one in-memory record (:class:`ImageAnnotation` holding :class:`ObjectLabel` s) so a
dataset, a converter or an evaluator needs to know one shape only. Boxes are ``(left, top, right, bottom)``
in pixels, continuous coordinates, so a box may reach ``right == width``.

Bad input policy (shared by every reader):

* structural problems (wrong field count, non-numeric value, undecodable image, label file without image,
  broken JSON/YAML) always raise :class:`LabelFormatError`, whose message starts with ``path:line:``
  (``path:`` alone where a whole file is wrong, ``path:annotations[i]:`` inside a COCO JSON);
* problems that only spoil one object or one image (degenerate/inverted box, box more than 1 px outside the
  image, unknown class, image without label file) drop that object/image and are *counted*: one
  :class:`LabelWarning` per read summarises the counts per kind with the first few locations.
  ``strict=True`` turns each of them into a :class:`LabelFormatError`;
* boxes at most 1 px outside the image (rounding in annotation tools) are clipped silently.

The parsers are hand-written: no maintained library reads KITTI labels, and pycocotools / ultralytics would
bring heavy dependencies for a few lines of parsing (and neither reports file:line).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from PIL import Image

from shared.files import distinct_names, visible_files, written_whole
from shared.images import DECODE_ERRORS

#: what Pillow raises on a file it cannot read: corrupt data, and an image over its decompression-bomb limit
#: (about 179 megapixels; an Exception, not an OSError), which would otherwise stop a whole run
PIL_DECODE_ERRORS = DECODE_ERRORS  # what PIL raises for a file that is no image or is cut short

KITTI_TYPES = ("Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram", "Misc", "DontCare")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
BOX_TOLERANCE_PX = 1.0  # boxes this far outside the image are clipped silently, further out they are dropped

# KITTI's "not available" values for the 3D fields of 2D-only objects (see the devkit readme: DontCare).
_NO_ALPHA = -10.0
_NO_DIMENSIONS = (-1.0, -1.0, -1.0)
_NO_LOCATION = (-1000.0, -1000.0, -1000.0)
_NO_ROTATION = -10.0


class LabelFormatError(ValueError):
    """A label or image file that cannot be read; the message starts with ``path:line:``.

    Given one argument, it is the whole message: that is how torch's DataLoader re-raises an error from a worker
    and how pickle rebuilds one (with three required arguments both fell back to a RuntimeError, so a bad file
    read by a worker printed a traceback instead of the one-line error)."""

    def __init__(self, path: str | os.PathLike, line: int | str | None = None, message: str | None = None):
        if message is None:
            if line is not None:
                raise TypeError("LabelFormatError(path, line, message): the message is missing")
            self.path, self.line, self.reason = "", None, str(path)
            super().__init__(str(path))
            return
        self.path = str(path)
        self.line = line
        self.reason = message
        where = f"{self.path}:{line}:" if line is not None else f"{self.path}:"
        super().__init__(f"{where} {message}")


class LabelWarning(UserWarning):
    """Objects or images were dropped while reading labels (counts are in the message)."""


class DropLog:
    """Counts what a reader dropped, per problem kind, keeping the first few locations of each.

    With ``strict=True`` the first problem raises :class:`LabelFormatError` instead of being counted.
    """

    max_examples = 3

    def __init__(self, strict: bool = False):
        self.strict = strict
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    @classmethod
    def owned(cls, log: DropLog | None, strict: bool) -> tuple[DropLog, bool]:
        """``(log, own)``: a reader's log, the caller's (``own`` False: the caller reports it) or a fresh one the
        reader reports itself. ``strict`` makes the caller's strict too: a strict read that was handed a log for
        its counts dropped what it should have raised on."""
        if log is None:
            return cls(strict=strict), True
        if strict:
            log.strict = True
        return log, False

    def add(self, kind: str, path: str | os.PathLike, line: int | str | None, message: str) -> None:
        if self.strict:
            raise LabelFormatError(path, line, f"{message} [{kind}; strict mode]")
        self.counts[kind] += 1
        where = f"{path}:{line}" if line is not None else str(path)
        examples = self.examples.setdefault(kind, [])
        if len(examples) < self.max_examples:
            examples.append(f"{where}: {message}")

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def merge(self, other: DropLog) -> None:
        for kind, n in other.counts.items():
            self.counts[kind] += n
            room = self.max_examples - len(self.examples.setdefault(kind, []))
            self.examples[kind].extend(other.examples.get(kind, [])[: max(room, 0)])

    def summary(self, verb: str = "dropped") -> str:
        if not self.counts:
            return f"nothing {verb}"
        parts = []
        for kind, n in sorted(self.counts.items()):
            shown = "; ".join(self.examples.get(kind, []))
            more = (
                f"; ... {n - len(self.examples[kind])} more" if n > len(self.examples.get(kind, [])) else ""
            )
            parts.append(f"{kind}: {n} ({shown}{more})")
        return f"{verb} " + ", ".join(parts)

    def report(self, what: str, stacklevel: int = 3, notes: DropLog | None = None) -> None:
        """Emit one summarising :class:`LabelWarning` if anything was dropped, or ``notes`` counted something
        read as it is but worth saying (YOLO images without a label file, polygons read as boxes)."""
        parts = [self.summary()] if self.counts else []
        if notes is not None and notes.counts:
            parts.append(notes.summary("noted"))
        if parts:
            warnings.warn(f"{what}: {'; '.join(parts)}", LabelWarning, stacklevel=stacklevel)


@dataclass
class ObjectLabel:
    """One object, with KITTI's fields (the 3D ones keep KITTI's 'not available' values when unknown)."""

    type: str
    bbox: tuple[float, float, float, float]  # left, top, right, bottom in pixels
    truncated: float = 0.0
    occluded: int = 0
    alpha: float = _NO_ALPHA
    dimensions: tuple[float, float, float] = _NO_DIMENSIONS  # height, width, length (m)
    location: tuple[float, float, float] = _NO_LOCATION  # x, y, z in camera coordinates (m)
    rotation_y: float = _NO_ROTATION
    score: float | None = None
    #: a ``DontCare`` object read from a COCO crowd (``iscrowd`` 1): its category, whose detections alone it
    #: ignores, as COCOeval does; None: KITTI's DontCare, which has no class, a region of every class
    crowd_class: str | None = None


@dataclass
class ImageAnnotation:
    """One image and its objects. ``image_id`` is the file stem (KITTI's ``000123``), or ``name`` when given
    (your own photos whose stems repeat across folders: :func:`domains.driving.common.predict_images`)."""

    image_path: str
    width: int
    height: int
    objects: list[ObjectLabel] = field(default_factory=list)
    name: str | None = None
    #: read the image as stored, its EXIF orientation not applied: its labels are a pixel map of the stored
    #: pixels (an instance map), which the orientation would turn away from the picture
    as_stored: bool = False

    @property
    def image_id(self) -> str:
        return self.name or Path(self.image_path).stem


# ----------------------------------------------------------------------------------------------- helpers


EXIF_ORIENTATION = 0x0112  # the EXIF tag a camera writes when the picture is to be shown turned


def image_size(path: str | os.PathLike, as_stored: bool = False) -> tuple[int, int]:
    """``(height, width)`` from the image header; :class:`LabelFormatError` if it cannot be decoded.

    Only the header is read (fast on 7k KITTI images); a file damaged after its header is caught when the
    dataset decodes it. An EXIF orientation that turns the picture (5-8: a phone held upright) swaps the two, as
    OpenCV's decoder (``read_rgb``) applies it, unless ``as_stored`` (the image is read as stored).
    """
    try:
        with Image.open(path) as im:
            width, height = im.size
            # getexif() decodes a whole PNG whose header holds no EXIF: only ask where the header may hold it
            has_exif = im.format in ("JPEG", "MPO", "TIFF", "WEBP") or "exif" in im.info
            if not as_stored and has_exif and im.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
                width, height = height, width
    except FileNotFoundError:
        raise LabelFormatError(path, None, "image file not found") from None
    except PIL_DECODE_ERRORS as e:
        raise LabelFormatError(path, None, f"cannot decode image ({e})") from None
    return height, width


def _fmt(value: float) -> str:
    """KITTI-style 2 decimals where that is exact, otherwise enough digits to round-trip within 1e-6."""
    if abs(value - round(value, 2)) < 1e-9:
        return f"{value:.2f}"
    text = f"{value:.6f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def read_text_file(path: Path) -> str:
    """The text of an annotation file; one that is not UTF-8 is a :class:`LabelFormatError` naming it."""
    try:  # utf-8-sig: a byte-order mark (Windows editors write one) would stick to the first field
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise LabelFormatError(path, None, "not a UTF-8 text file") from None


def _label_lines(
    path: Path, counts: tuple[int, ...] | Callable[[int], bool], expected: str, quote_line: bool = False
) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each non-blank line of a label file; another field count (one not in ``counts``,
    or that ``counts(n)`` refuses) is an error."""
    allowed = counts if callable(counts) else counts.__contains__
    for lineno, raw in enumerate(read_text_file(path).splitlines(), start=1):
        fields = raw.split()
        if not fields:
            continue
        if not allowed(len(fields)):
            quoted = f": {raw.strip()!r}" if quote_line else ""
            raise LabelFormatError(path, lineno, f"expected {expected}, got {len(fields)}{quoted}")
        yield lineno, fields


def _parse_float(text: str, path, line, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise LabelFormatError(path, line, f"non-numeric value {text!r} for {what}") from None
    if not math.isfinite(value):
        raise LabelFormatError(path, line, f"non-finite value {text!r} for {what}")
    return value


def _parse_int(text: str, path, line, what: str) -> int:
    value = _parse_float(text, path, line, what)
    if value != int(value):
        raise LabelFormatError(path, line, f"expected an integer for {what}, got {text!r}")
    return int(value)


def check_box(
    box: Sequence[float],
    size: tuple[int, int] | None,
    log: DropLog,
    path,
    line,
    hint: str = "",
) -> tuple[float, float, float, float] | None:
    """Validate one ``(l, t, r, b)`` box against an image of ``size=(H, W)``; ``None`` if dropped.

    Inverted/degenerate boxes and boxes more than 1 px outside the image go to ``log`` (the latter's message
    ends with ``hint``); boxes within 1 px are clipped. Without ``size`` only the left/top edges can be checked.
    """
    given = left, top, right, bottom = tuple(map(float, box))
    # the box as given, formatted only for a dropped one: every valid box formatting it cost ~10 % of a
    # 10k-image detection setup
    shown = lambda: f"({', '.join(_fmt(v) for v in given)})"
    if not (right > left and bottom > top):
        log.add(
            "bad_box", path, line, f"degenerate or inverted box {shown()} (need left < right, top < bottom)"
        )
        return None
    height, width = size if size is not None else (math.inf, math.inf)
    tol = BOX_TOLERANCE_PX
    if left < -tol or top < -tol or right > width + tol or bottom > height + tol:
        extent = f"{width}x{height} image" if size is not None else "image"
        log.add("outside_image", path, line, f"box {shown()} lies more than {tol:g} px outside the {extent}{hint}")
        return None
    left, top = max(left, 0.0), max(top, 0.0)
    right, bottom = min(right, float(width)), min(bottom, float(height))
    if not (right > left and bottom > top):  # only possible for a box hugging the border from outside
        log.add("bad_box", path, line, f"box {shown()} is empty after clipping to the image")
        return None
    return left, top, right, bottom


def images_by_stem(
    folder: Path, extensions: Sequence[str] = IMAGE_EXTENSIONS, stem: Callable[[Path], str] = lambda p: p.stem
) -> dict[str, Path]:
    """``{stem: path}`` of the images in ``folder`` (``stem``: a file's id, e.g. Cityscapes' name less its
    ``_leftImg8bit``); two with one id are an error (one label file or mask would serve both, and predict would
    write one's outputs over the other's)."""
    return files_by_stem(folder, extensions, "image", stem)


def files_by_stem(
    folder: Path, extensions: Sequence[str], what: str, stem: Callable[[Path], str] = lambda p: p.stem
) -> dict[str, Path]:
    """``{stem: path}`` of the ``what`` files (``image``, ``label file``) in ``folder``, suffixes in any case; two
    with one id (``000000.txt`` beside ``000000.TXT``) are an error naming both: one would be read, the other
    ignored without a word."""
    files: dict[str, Path] = {}
    for p in visible_files(folder, tuple(extensions)):  # a Mac copy's ._<name> forks are no images
        key = stem(p)
        if key in files:
            raise LabelFormatError(p, None, f"two {what}s share the id {key!r}: {files[key].name}, {p.name}")
        files[key] = p
    return files


def refuse_orphans(files: Iterable[Path], images: dict[str, Path], image_dir: Path, what: str) -> None:
    """A ``what`` (label file, instance map) whose stem names no image is an error naming it: read on, it would
    be ignored without a word."""
    for path in files:
        if path.stem not in images:
            raise LabelFormatError(path, None, f"{what} has no image {path.stem}.* in {image_dir}")


def place_image(src: str | os.PathLike, dst: str | os.PathLike, mode: str = "copy") -> None:
    """Put an image at ``dst``: ``copy``, ``hardlink`` (copies across devices) or ``symlink``."""
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if mode == "copy":
        shutil.copy2(src, dst)
    elif mode == "hardlink":
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    elif mode == "symlink":
        dst.symlink_to(src.resolve())
    else:
        raise ValueError(f"place_image: unknown mode {mode!r} (copy, hardlink, symlink)")


def name_repeated_stems(annotations: Sequence[ImageAnnotation], where: str, same_file_ok: bool = False) -> None:
    """Give images whose stems repeat across folders ids of their own (:func:`shared.files.distinct_names`), so
    their predictions, ground truth and split groups stay apart; ids that still repeat are an error naming both
    (``same_file_ok``: but for one file listed twice)."""
    paths = [Path(a.image_path) for a in annotations]
    own = {path: a.image_id for path, a in zip(paths, annotations)}  # the stem (less Cityscapes' suffixes)
    for ann, name in zip(annotations, distinct_names(paths, name=own.__getitem__)):
        if name != ann.image_id:
            ann.name = name
    _unique_names(annotations, where, same_file_ok)


def _unique_names(annotations: Iterable[ImageAnnotation], where: str, same_file_ok: bool = False) -> None:
    """Two images with one id are an error naming both; ``same_file_ok``: one file listed twice (a YOLO list
    oversampling it) keeps its one id. Ids that differ only by case are one (``A.png`` beside ``a.jpg``): on a
    macOS or Windows disk their ``label_2/A.txt`` and ``label_2/a.txt`` are one file."""
    seen: dict[str, str] = {}
    for ann in annotations:
        key = ann.image_id.casefold()
        if key in seen and not (same_file_ok and seen[key] == ann.image_path):
            raise LabelFormatError(
                where, None, f"two images share the id {ann.image_id!r}: {seen[key]}, {ann.image_path}"
            )
        seen[key] = ann.image_path


def _split_by_class(
    objects: Iterable[ObjectLabel],
    class_names: Sequence[str],
    dropped: Counter,
    category: Callable[[ObjectLabel], str] = lambda obj: obj.type,
) -> list[ObjectLabel]:
    """The objects whose ``category`` is one of ``class_names``; the others' types are counted in ``dropped``."""
    keep = []
    for obj in objects:
        if category(obj) in class_names:
            keep.append(obj)
        else:
            dropped[obj.type] += 1
    return keep


def _coco_category(obj: ObjectLabel) -> str:
    """The COCO category an object is written as: a crowd's own (``crowd_class``), else its type."""
    return obj.crowd_class if obj.type == "DontCare" and obj.crowd_class is not None else obj.type


def _warn_not_written(dropped: Counter, where: str) -> None:
    if dropped:
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(dropped.items()))
        warnings.warn(
            f"{where}: objects whose type is not in class_names were not written ({counts})",
            LabelWarning,
            stacklevel=3,
        )


# ------------------------------------------------------------------------------------------------- KITTI

_KITTI_FIELDS = (
    "type",
    "truncated",
    "occluded",
    "alpha",
    "bbox left",
    "bbox top",
    "bbox right",
    "bbox bottom",
    "height",
    "width",
    "length",
    "x",
    "y",
    "z",
    "rotation_y",
    "score",
)


def _kitti_numbers(fields: Sequence[str], path: Path, lineno: int) -> list[float]:
    """The 14 (15 with a score) numbers of a KITTI label line. A valid line takes the fast path, one ``float`` a
    field and one finiteness check a line; a bad one is parsed again field by field, whose error names the field
    (that per-field parse of every line was half the time reading a label took)."""
    try:
        nums = [float(v) for v in fields[1:]]
        if math.isfinite(sum(nums)):  # nan / inf (or a sum too large to hold): checked field by field below
            return nums
    except ValueError:
        pass
    return [_parse_float(v, path, lineno, _KITTI_FIELDS[i + 1]) for i, v in enumerate(fields[1:])]


def read_kitti_label(
    path: str | os.PathLike,
    image_size: tuple[int, int] | None = None,
    strict: bool = False,
    known_types: Sequence[str] | None = KITTI_TYPES,
    log: DropLog | None = None,
) -> list[ObjectLabel]:
    """Read one KITTI label file (15 fields a line, 16 with a result score).

    ``image_size=(height, width)`` enables the outside-the-image check. ``known_types=None`` accepts any type
    name (for KITTI-layout data with other classes).
    """
    path = Path(path)
    log, own = DropLog.owned(log, strict)
    objects: list[ObjectLabel] = []
    known = None if known_types is None else frozenset(known_types)
    for lineno, fields in _label_lines(path, (15, 16), "15 fields (16 with a score)", quote_line=True):
        name = fields[0]
        nums = _kitti_numbers(fields, path, lineno)
        occluded = int(nums[1])
        if occluded != nums[1]:
            _parse_int(fields[2], path, lineno, "occluded")  # raises, naming the field
        if known is not None and name not in known:
            log.add("unknown_class", path, lineno, f"unknown type {name!r} (known: {', '.join(known_types)})")
            continue
        box = check_box(nums[3:7], image_size, log, path, lineno)
        if box is None:
            continue
        objects.append(
            ObjectLabel(
                type=name,
                bbox=box,
                truncated=nums[0],
                occluded=occluded,
                alpha=nums[2],
                dimensions=tuple(nums[7:10]),
                location=tuple(nums[10:13]),
                rotation_y=nums[13],
                score=nums[14] if len(nums) == 15 else None,
            )
        )
    if own:
        log.report(f"read_kitti_label({path})")
    return objects


def kitti_type_name(name: str) -> str:
    """``name`` as one field of a KITTI-style text line (label files, instance lists), which readers split on
    whitespace: a class name holding spaces (COCO's ``traffic light``) is written with underscores
    (``traffic_light``), said in one :class:`LabelWarning` per name."""
    field = "_".join(name.split())
    if field != name:
        warnings.warn(
            f"type names in KITTI-style text files cannot hold spaces: {name!r} is written as {field!r}",
            LabelWarning,
            stacklevel=3,
        )
    return field


def write_kitti_label(
    path: str | os.PathLike, objects: Iterable[ObjectLabel], with_score: bool = False
) -> None:
    """Write one KITTI label file; ``with_score=True`` writes the 16th field (result files for evaluation).
    A type name that is empty or holds spaces is an error (converted labels keep their classes' names; predict
    writes :func:`kitti_type_name`'s)."""
    path = Path(path)
    lines = []
    for i, obj in enumerate(objects):
        if not obj.type or any(c.isspace() for c in obj.type):
            raise ValueError(
                f"{path}: object {i}: KITTI type names cannot be empty or contain spaces: {obj.type!r}"
            )
        values = [obj.truncated, obj.alpha, *obj.bbox, *obj.dimensions, *obj.location, obj.rotation_y]
        parts = [obj.type, _fmt(values[0]), str(int(obj.occluded)), *(_fmt(v) for v in values[1:])]
        if with_score:
            if obj.score is None:
                raise ValueError(f"{path}: object {i} ({obj.type}) has no score but with_score=True")
            parts.append(_fmt(obj.score))
        lines.append(" ".join(parts))
    path.parent.mkdir(parents=True, exist_ok=True)
    with written_whole(path) as tmp:
        tmp.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")


def resolve_kitti_split(
    root: str | os.PathLike, split_dir: str | None = "training", image_dir: str = "image_2"
) -> Path:
    """The folder holding ``image_2/``: ``root/split_dir`` if present, else ``root`` itself."""
    root = Path(root)
    if split_dir and (root / split_dir / image_dir).is_dir():
        return root / split_dir
    if (root / image_dir).is_dir():
        return root
    tried = [str(root / split_dir / image_dir)] if split_dir else []
    tried.append(str(root / image_dir))
    # a folder inside a KITTI root (its image_2/ or training/, one level too deep): name the root to give
    above = [
        folder for folder in list(root.absolute().parents)[:2]
        if (folder / image_dir).is_dir() or (split_dir and (folder / split_dir / image_dir).is_dir())
    ]  # fmt: skip
    inside = f"; it lies inside the KITTI root {above[-1]}: give that folder" if above else ""
    raise FileNotFoundError(f"{root}: no KITTI image folder (tried {', '.join(tried)}){inside}")


def read_kitti_dir(
    root: str | os.PathLike,
    split_dir: str | None = "training",
    strict: bool = False,
    known_types: Sequence[str] | None = KITTI_TYPES,
    log: DropLog | None = None,
    image_dir: str = "image_2",
    label_dir: str = "label_2",
) -> list[ImageAnnotation]:
    """Read a KITTI object split (``root/split_dir/{image_2,label_2}``, or ``root/{image_2,label_2}``), listed
    by :func:`kitti_frames`: a label file without an image, or two of one id, is an error; an image without a label
    file is dropped and counted."""
    log, own = DropLog.owned(log, strict)
    frames = kitti_frames(root, split_dir, log, image_dir=image_dir, label_dir=label_dir)
    out = [read_kitti_frame(image, label_file, known_types, log) for image, label_file, _ in frames]
    if own:
        log.report(f"read_kitti_dir({root})")
    return out


def kitti_frames(
    root: str | os.PathLike,
    split_dir: str | None,
    log: DropLog,
    maps_dir: str | None = None,
    image_dir: str = "image_2",
    label_dir: str = "label_2",
) -> list[tuple[Path, Path, Path | None]]:
    """``(image, label file, instance map)`` of each image of a KITTI-layout split that has them, from the
    folders' listings alone (no file is read): :func:`read_kitti_dir` reads them all, the data modules split on
    these ids and read the frames of the splits a stage uses only. ``maps_dir``: the instance maps' folder (None:
    no maps, the third entry None). Images without a label file (or map) are counted in ``log``; a label file or
    map without an image, or two of one id (``000000.txt`` beside ``000000.TXT``), is an error."""
    base = resolve_kitti_split(root, split_dir, image_dir)
    images_path = base / image_dir
    # (folder, suffix, the folder's name and a file's in messages)
    kinds = [(base / label_dir, ".txt", "KITTI label", "label file")]
    if maps_dir is not None:
        kinds.append((base / maps_dir, ".png", "instance map", "instance map"))
    for folder, _, what, _ in reversed(kinds):  # no map folder: a detection layout given as instances
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: {what} folder not found (next to {images_path})")
    images = images_by_stem(images_path)
    if not images:
        raise FileNotFoundError(f"{images_path}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    listed = []
    for folder, suffix, _, what in kinds:
        files = files_by_stem(folder, (suffix,), what)  # by stem, so 000000.TXT / 000000.PNG are found too
        refuse_orphans(files.values(), images, images_path, what)
        listed.append(files)
    out = []
    for stem, image in images.items():
        paths = [files.get(stem) for files in listed]
        if None in paths:
            folder, suffix, _, what = kinds[paths.index(None)]
            log.add("image_without_label", image, None, f"no {what} {folder / (stem + suffix)}")
            continue
        out.append((image, paths[0], paths[1] if maps_dir is not None else None))
    return out


def read_kitti_frame(
    image: str | os.PathLike, label_file: Path, known_types: Sequence[str] | None, log: DropLog
) -> ImageAnnotation:
    """One KITTI image's record: its size from the header, its label lines checked against it."""
    height, width = image_size(image)
    objects = read_kitti_label(label_file, (height, width), known_types=known_types, log=log)
    return ImageAnnotation(str(image), width, height, objects)


def write_kitti_dir(
    annotations: Sequence[ImageAnnotation],
    root: str | os.PathLike,
    split_dir: str | None = "training",
    with_score: bool = False,
    image_mode: str = "copy",
) -> Path:
    """Write ``root/split_dir/{image_2,label_2}`` (images placed by ``image_mode``); returns the split dir."""
    base = Path(root) / split_dir if split_dir else Path(root)
    _unique_names(annotations, str(base))
    for ann in annotations:
        src = Path(ann.image_path)
        place_image(src, base / "image_2" / (ann.image_id + src.suffix.lower()), image_mode)
        write_kitti_label(base / "label_2" / f"{ann.image_id}.txt", ann.objects, with_score=with_score)
    return base


# -------------------------------------------------------------------------------------------------- COCO


def _load_json(path: Path):
    try:
        text = read_text_file(path)  # a byte-order mark (Windows tools) read, as label files do
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: COCO JSON file not found") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise LabelFormatError(path, e.lineno, f"invalid JSON: {e.msg} (column {e.colno})") from None


def _require(item, keys: Sequence[str], path, where: str) -> None:
    if not isinstance(item, dict):
        raise LabelFormatError(path, where, f"expected an object, got {type(item).__name__}")
    missing = [k for k in keys if k not in item]
    if missing:
        raise LabelFormatError(path, where, f"missing key(s) {', '.join(missing)}")


def _coco_entries(
    entries: list, path: Path, section: str, required: tuple[str, ...], what: str
) -> Iterator[tuple[str, dict, int]]:
    """(where, entry, id) of each entry of a COCO section; ids must be integers, unique in the section."""
    seen: set[int] = set()
    for i, entry in enumerate(entries):
        where = f"{section}[{i}]"
        _require(entry, ("id", *required), path, where)
        eid = _parse_int(str(entry["id"]), path, where, f"{what} id")
        if eid in seen:
            raise LabelFormatError(path, where, f"duplicate {what} id {eid}")
        seen.add(eid)
        yield where, entry, eid


def coco_layout_images(json_path: str | os.PathLike) -> Path | None:
    """The image folder COCO's own layout gives an annotation file: ``<root>/<split>`` for
    ``<root>/annotations/<kind>_<split>.json`` (COCO ships ``annotations/instances_val2017.json`` beside
    ``val2017/``), where that folder exists; None otherwise."""
    path = Path(json_path)
    kind, _, split = path.stem.rpartition("_")
    folder = path.parent.parent / split
    return folder if path.parent.name == "annotations" and kind and split and folder.is_dir() else None


def coco_images_root(path: Path, images: list, images_root: Path | None) -> Path:
    """The folder a COCO JSON's ``file_name`` entries are relative to: ``images_root``, else the JSON's
    folder, unless its first image is not there but in :func:`coco_layout_images`' folder (COCO's release as
    downloaded: the JSON in ``annotations/``, the images in ``val2017/`` beside it)."""
    if images_root is not None:
        return images_root
    first = images[0].get("file_name") if images and isinstance(images[0], dict) else None
    layout = coco_layout_images(path)
    if first is None or layout is None or (path.parent / str(first)).is_file():
        return path.parent
    return layout if (layout / str(first)).is_file() else path.parent


def _coco_images(
    path: Path, images_root: Path | None, record: Callable[[str, int, int], Any]
) -> tuple[dict, dict[int, str], dict[int, Any]]:
    """A COCO JSON's content, its categories (id -> name) and its images (id -> ``record(file, width,
    height)``), checked: ``images`` / ``annotations`` / ``categories`` are lists, ids are unique integers, each
    image exists under the images root (:func:`coco_images_root`) and has the size the JSON says."""
    data = _load_json(path)
    _require(data, ("images", "annotations", "categories"), path, None)
    for key in ("images", "annotations", "categories"):
        if not isinstance(data[key], list):
            raise LabelFormatError(path, key, f"expected a list, got {type(data[key]).__name__}")
    root = coco_images_root(path, data["images"], images_root)
    categories = {
        cid: str(cat["name"])
        for _, cat, cid in _coco_entries(data["categories"], path, "categories", ("name",), "category")
    }
    records = {}
    for where, img, iid in _coco_entries(data["images"], path, "images", ("file_name",), "image"):
        file = root / str(img["file_name"])
        if not file.is_file():
            layout = coco_layout_images(path)
            found = layout is not None and (layout / str(img["file_name"])).is_file()
            there = f" It is in {layout}: name that folder" if found else ""
            raise LabelFormatError(
                path,
                where,
                f"image {img['file_name']!r} not found under {root} (file names are relative to the images "
                "root: the JSON's folder unless --data.images_root, or convert's --images-root, names "
                f"another).{there}",
            )
        # "as_stored": true (the suite's converter writes it for masks drawn on the stored pixels): the image is
        # read as stored, its EXIF orientation not applied, as the instance map it came from was
        as_stored = img.get("as_stored") is True
        height, width = image_size(file, as_stored=as_stored)
        for key, actual in (("width", width), ("height", height)):
            if key in img and _parse_int(str(img[key]), path, where, key) != actual:
                raise LabelFormatError(
                    path, where, f"{key} {img[key]} in the JSON but the image {file} has {actual}"
                )
        records[iid] = record(str(file), width, height)
        if as_stored:
            records[iid].as_stored = True
    name_repeated_stems(list(records.values()), str(path))
    return data, categories, records


def coco_category_names(json_path: str | os.PathLike) -> list[str]:
    """Category names of a COCO JSON in id order (used to keep class order when converting)."""
    data = _load_json(Path(json_path))
    cats = data.get("categories", []) if isinstance(data, dict) else []
    return [
        c["name"] for c in sorted(cats, key=lambda c: c.get("id", 0)) if isinstance(c, dict) and "name" in c
    ]


#: the key of the ``iscrowd`` annotations a KITTI DontCare region (of no class) is written as, one per class
#: category (COCOeval ignores a detection in a crowd of its own category only): the region's number, the same
#: on each, by which the suite's readers read them back as the one region of every class they were written for
DONTCARE_REGION = "dontcare_region"


def crowd_class(category: str | None, ann: dict | None = None) -> str | None:
    """The class a COCO crowd region (``iscrowd`` 1) of ``category`` ignores detections of: its own, as COCOeval
    has it; None (a region of every class, as KITTI's DontCare) for an annotation ``ann`` with a
    ``DONTCARE_REGION`` number (the converters write KITTI's DontCare as one such crowd per class category),
    for the ``DontCare`` category (older conversions wrote KITTI's DontCare as crowds of it, which COCOeval
    applies to no class), or for no category."""
    if ann is not None and DONTCARE_REGION in ann:
        return None
    return None if category in (None, "DontCare") else category


def repeated_dontcare(ann: dict, image_id: int, seen: set, path, where: str) -> bool:
    """Whether crowd ``ann`` repeats a KITTI DontCare region already read (written once per class category,
    each with the region's ``DONTCARE_REGION`` number): skipped, so the region is read once, as of every
    class. ``seen`` collects the ``(image_id, number)`` of the regions read."""
    if not ann.get("iscrowd", 0) or DONTCARE_REGION not in ann:
        return False
    key = (image_id, _parse_int(str(ann[DONTCARE_REGION]), path, where, DONTCARE_REGION))
    if key in seen:
        return True
    seen.add(key)
    return False


def dontcare_annotations(ann: dict, region: int, category_ids: Sequence[int], first_id: int) -> list[dict]:
    """KITTI's DontCare region ``ann`` (a COCO annotation) as the crowds COCOeval ignores every class's
    detections in: one ``iscrowd`` 1 copy per id of ``category_ids`` (the JSON's class categories), numbered
    from ``first_id``, each marked with the region's number ``region`` (:data:`DONTCARE_REGION`) so the
    suite's readers read them back as one region of every class (:func:`crowd_class`,
    :func:`repeated_dontcare`)."""
    return [
        {**ann, "id": first_id + k, "category_id": cid, "iscrowd": 1, DONTCARE_REGION: region}
        for k, cid in enumerate(category_ids)
    ]


def read_coco(
    json_path: str | os.PathLike,
    images_root: str | os.PathLike | None = None,
    strict: bool = False,
    log: DropLog | None = None,
) -> list[ImageAnnotation]:
    """Read a COCO detection JSON; ``file_name`` is relative to ``images_root`` (default: the JSON's folder,
    or for COCO's layout as downloaded, ``annotations/instances_val2017.json``, the ``val2017/`` beside it).

    ``iscrowd=1`` annotations become ``DontCare`` objects that keep their category (``crowd_class``, see
    :func:`crowd_class`): COCO's evaluation ignores a detection in a crowd for the crowd's category only,
    where KITTI's DontCare has no class and ignores every class (written by :func:`write_coco` as one crowd
    per class category, read back once, of every class). Extra KITTI fields written by :func:`write_coco` (key
    ``kitti``) and ``score`` are restored. Locations in errors are ``path:images[i]:`` /
    ``path:annotations[i]:`` (JSON has no useful lines).
    """
    path = Path(json_path)
    root = Path(images_root) if images_root is not None else None
    log, own = DropLog.owned(log, strict)
    data, categories, records = _coco_images(path, root, lambda file, w, h: ImageAnnotation(file, w, h, []))
    regions: set = set()  # the KITTI DontCare regions read (each written once per class category)
    for i, ann in enumerate(data["annotations"]):
        where = f"annotations[{i}]"
        _require(ann, ("image_id", "bbox", "category_id"), path, where)
        iid = _parse_int(str(ann["image_id"]), path, where, "image_id")
        if iid not in records:
            raise LabelFormatError(path, where, f"image_id {iid} is not in 'images'")
        bbox = ann["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise LabelFormatError(path, where, f"bbox must be a list [x, y, width, height], got {bbox!r}")
        x, y, w, h = (_parse_float(str(v), path, where, "bbox") for v in bbox)
        cid = _parse_int(str(ann["category_id"]), path, where, "category_id")
        if cid not in categories:
            log.add("unknown_class", path, where, f"category_id {cid} is not in 'categories'")
            continue
        if repeated_dontcare(ann, iid, regions, path, where):
            continue
        rec = records[iid]
        box = check_box((x, y, x + w, y + h), (rec.height, rec.width), log, path, where)
        if box is None:
            continue
        crowd = bool(ann.get("iscrowd", 0))
        extra = ann.get("kitti", {}) if isinstance(ann.get("kitti", {}), dict) else {}
        score = _parse_float(str(ann["score"]), path, where, "score") if "score" in ann else None
        obj = ObjectLabel(
            type="DontCare" if crowd else categories[cid],
            bbox=box,
            score=score,
            crowd_class=crowd_class(categories[cid], ann) if crowd else None,
        )
        for key in ("truncated", "alpha", "rotation_y"):
            if key in extra:
                setattr(obj, key, _parse_float(str(extra[key]), path, where, f"kitti.{key}"))
        if "occluded" in extra:
            obj.occluded = _parse_int(str(extra["occluded"]), path, where, "kitti.occluded")
        for key in ("dimensions", "location"):
            if key in extra:
                if not isinstance(extra[key], list) or len(extra[key]) != 3:
                    raise LabelFormatError(path, where, f"kitti.{key} must be a list of 3 numbers")
                setattr(
                    obj, key, tuple(_parse_float(str(v), path, where, f"kitti.{key}") for v in extra[key])
                )
        rec.objects.append(obj)
    if own:
        log.report(f"read_coco({path})")
    return list(records.values())


def write_coco(
    annotations: Sequence[ImageAnnotation],
    json_path: str | os.PathLike,
    class_names: Sequence[str],
    images_root: str | os.PathLike | None = None,
) -> Counter:
    """Write a COCO detection JSON (category ids 1..C in ``class_names`` order).

    ``file_name`` is relative to ``images_root`` (default: the JSON's folder) when the image lies under it.
    ``DontCare`` objects are written with ``iscrowd=1``: a COCO crowd read by :func:`read_coco` as one of its
    ``crowd_class`` (when that is one of ``class_names``), so a COCO -> COCO trip keeps each crowd's category;
    KITTI's DontCare (when ``DontCare`` is one of them: it stays a category, so the JSON's class list keeps
    it) as one crowd per other category (:func:`dontcare_annotations`; of ``DontCare`` when there is none), so
    COCOeval, which ignores a detection in a crowd of its own category only, ignores every class's there, as
    KITTI and :func:`read_coco` do. KITTI's extra fields go to an ``kitti`` key so a KITTI -> COCO -> KITTI
    trip keeps them. Returns the count of objects not written (category not in ``class_names``), also reported
    by one warning.
    """
    path = Path(json_path)
    root = Path(images_root) if images_root is not None else path.parent
    cat_ids = {name: i + 1 for i, name in enumerate(class_names)}
    every_class = [i for name, i in cat_ids.items() if name != "DontCare"] or [cat_ids.get("DontCare")]
    dropped: Counter = Counter()
    images, anns = [], []
    regions = 0
    for img_id, rec in enumerate(annotations, start=1):
        try:
            file_name = Path(os.path.relpath(Path(rec.image_path).resolve(), root.resolve())).as_posix()
            if file_name.startswith(".."):
                raise ValueError
        except ValueError:
            file_name = str(Path(rec.image_path).resolve())
        images.append({"id": img_id, "file_name": file_name, "width": rec.width, "height": rec.height})
        for obj in _split_by_class(rec.objects, class_names, dropped, category=_coco_category):
            left, top, right, bottom = obj.bbox
            w, h = right - left, bottom - top
            ann = {
                "id": len(anns) + 1,
                "image_id": img_id,
                "category_id": cat_ids[_coco_category(obj)],
                "bbox": [left, top, w, h],
                "area": w * h,
                "iscrowd": int(obj.type == "DontCare"),
                "segmentation": [[left, top, right, top, right, bottom, left, bottom]],
            }
            extra = {}
            for key, default in (
                ("truncated", 0.0),
                ("occluded", 0),
                ("alpha", _NO_ALPHA),
                ("dimensions", _NO_DIMENSIONS),
                ("location", _NO_LOCATION),
                ("rotation_y", _NO_ROTATION),
            ):
                value = getattr(obj, key)
                if value != default:
                    extra[key] = list(value) if isinstance(value, tuple) else value
            if extra:
                ann["kitti"] = extra
            if obj.score is not None:
                ann["score"] = obj.score
            if obj.type == "DontCare" and obj.crowd_class is None:  # KITTI's: a crowd of every class
                regions += 1
                anns += dontcare_annotations(ann, regions, every_class, len(anns) + 1)
            else:
                anns.append(ann)
    data = {
        "info": {"description": "written by domains.driving.formats.write_coco"},
        "images": images,
        "annotations": anns,
        "categories": [{"id": i, "name": n, "supercategory": "object"} for n, i in cat_ids.items()],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    _warn_not_written(dropped, f"write_coco({path})")
    return dropped


# -------------------------------------------------------------------------------------------------- YOLO


def load_dataset_yaml(path: Path) -> dict:
    """A YOLO dataset yaml as a mapping; not UTF-8, not YAML (with its line) or not a mapping: a
    :class:`LabelFormatError` naming the file."""
    try:
        text = read_text_file(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: dataset yaml not found") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise LabelFormatError(path, mark.line + 1 if mark else None, f"invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise LabelFormatError(
            path, None, "dataset yaml must be a mapping with keys path, train, val, test, names"
        )
    return data


def yolo_names(dataset_yaml: str | os.PathLike) -> list[str]:
    """Class names of a YOLO dataset yaml in index order (``names``: a list or an ``{index: name}`` dict)."""
    path = Path(dataset_yaml)
    return list(_yolo_name_map(load_dataset_yaml(path), path).values())


def _yolo_name_map(data: dict, path: Path) -> dict[int, str]:
    """``names`` as ``{index: name}``; an ``nc`` that disagrees with the names' count is refused, as Ultralytics
    refuses it (which of the two is wrong cannot be told)."""
    names = data.get("names")
    if isinstance(names, list):
        out = {i: str(n) for i, n in enumerate(names)}
    elif isinstance(names, dict):
        try:
            out = {int(k): str(v) for k, v in sorted(names.items(), key=lambda kv: int(kv[0]))}
        except (TypeError, ValueError):
            raise LabelFormatError(
                path, None, f"'names' keys must be class indices, got {list(names)}"
            ) from None
    else:
        raise LabelFormatError(path, None, "'names' must be a list or an {index: name} mapping")
    nc = data.get("nc")
    if nc is not None and (isinstance(nc, bool) or nc != len(out)):
        raise LabelFormatError(
            path, None, f"'nc: {nc}' disagrees with the {len(out)} 'names' {list(out.values())[:10]}: they must match"
        )
    return out


def _yolo_root(data: dict, path: Path) -> Path:
    """Dataset root: ``path`` (relative to the yaml's folder, else the cwd); default the yaml's folder."""
    if not data.get("path"):
        return path.parent
    root = Path(str(data["path"])).expanduser()
    if root.is_absolute():
        return root
    if (path.parent / root).exists() or not root.exists():
        return path.parent / root
    return root


def yolo_label_path(image_path: str | os.PathLike) -> Path:
    """Ultralytics' rule: the last ``/images/`` in the path becomes ``/labels/``, the suffix ``.txt``."""
    text = str(image_path)
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    if sa in text:
        head, tail = text.rsplit(sa, 1)
        text = head + sb + tail
    return Path(text).with_suffix(".txt")


def _yolo_sources(data: dict, split: str, path: Path) -> list[Path]:
    if split not in data or data[split] in (None, ""):
        raise LabelFormatError(
            path, None, f"no '{split}' entry (has: {', '.join(k for k in data if k != 'names')})"
        )
    entries = data[split] if isinstance(data[split], list) else [data[split]]
    root = _yolo_root(data, path)
    return [Path(str(e)) if Path(str(e)).is_absolute() else root / str(e) for e in entries]


def read_yolo(
    dataset_yaml: str | os.PathLike,
    split: str = "train",
    strict: bool = False,
    log: DropLog | None = None,
) -> list[ImageAnnotation]:
    """Read one split of a YOLO dataset (Ultralytics layout): ``class cx cy w h`` normalised, a line per box.

    The split entry may be a folder of images (searched recursively), a ``.txt`` list of image paths, or a
    list of those. An image without a label file is a background image (no objects), as in Ultralytics; a
    label file without an image is an error. A 6th field is read as a score (Ultralytics ``save_conf``). A
    YOLO-seg polygon line (``class x1 y1 x2 y2 x3 y3 ...``) is read as its polygon's bounding box, as
    Ultralytics' detection loader reads it. Background images and polygons are valid input, counted in the
    read's one :class:`LabelWarning` (:meth:`DropLog.report`), never errors in ``strict`` mode.
    """
    path = Path(dataset_yaml)
    log, own = DropLog.owned(log, strict)
    notes = DropLog()  # read as Ultralytics reads it, and said
    data = load_dataset_yaml(path)
    names = _yolo_name_map(data, path)
    image_files: list[Path] = []
    for src in _yolo_sources(data, split, path):
        if src.is_dir():
            found = visible_files(src, IMAGE_EXTENSIONS, recursive=True)
            labels_dir = yolo_label_path(src / "x.png").parent
            if labels_dir != src and labels_dir.is_dir():
                stems = {yolo_label_path(p) for p in found}
                for label in visible_files(labels_dir, (".txt",), recursive=True):
                    if label not in stems:
                        raise LabelFormatError(label, None, f"label file has no image in {src}")
            image_files += found
        elif src.is_file() and src.suffix == ".txt":
            for lineno, raw in enumerate(read_text_file(src).splitlines(), start=1):
                entry = raw.strip()
                if not entry:
                    continue
                p = Path(entry) if Path(entry).is_absolute() else src.parent / entry
                if not p.is_file():
                    raise LabelFormatError(src, lineno, f"listed image {entry!r} not found ({p})")
                image_files.append(p)
        else:
            raise FileNotFoundError(
                f"{path}: '{split}' entry {src} is neither an image folder nor a .txt list"
            )
    if not image_files:
        raise FileNotFoundError(f"{path}: no images found for split '{split}'")
    out = []
    for img in image_files:
        height, width = image_size(img)
        label = yolo_label_path(img)
        if label.is_file():
            objects = _read_yolo_label(label, (height, width), names, log, notes)
        else:
            objects = []
            message = f"no label file {label}: a background image, as in Ultralytics"
            notes.add("background_image", img, None, message)
        out.append(ImageAnnotation(str(img), width, height, objects))
    name_repeated_stems(out, f"{path} (split {split!r})", same_file_ok=True)  # a list may repeat an image
    # one warning: the drops and the notes of a log of our own, the notes alone where the caller reports its log
    (log if own else DropLog()).report(f"read_yolo({path}, split={split!r})", notes=notes)
    return out


def _yolo_field_count(n: int) -> bool:
    """A YOLO label line's field count: a box (5, 6 with a score) or a polygon (class + 3 or more x y pairs)."""
    return n in (5, 6) or (n >= 7 and n % 2 == 1)


def _read_yolo_label(
    path: Path, size: tuple[int, int], names: dict[int, str], log: DropLog, notes: DropLog
) -> list[ObjectLabel]:
    height, width = size
    boxes = []  # (line, class, box in fractions of the image, score)
    expected = (
        "5 fields 'class cx cy w h' (6 with a score) or a polygon 'class x1 y1 x2 y2 x3 y3 ...' (odd, >= 7)"
    )
    for lineno, fields in _label_lines(path, _yolo_field_count, expected):
        cls = _parse_int(fields[0], path, lineno, "class index")
        score = None
        if len(fields) <= 6:
            cx, cy, w, h = (
                _parse_float(v, path, lineno, k)
                for v, k in zip(fields[1:5], ("cx", "cy", "w", "h"), strict=True)
            )
            score = _parse_float(fields[5], path, lineno, "score") if len(fields) == 6 else None
            box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        else:  # YOLO-seg: the polygon's bounding box (Ultralytics' segments2boxes)
            xs = [_parse_float(v, path, lineno, "polygon x") for v in fields[1::2]]
            ys = [_parse_float(v, path, lineno, "polygon y") for v in fields[2::2]]
            box = (min(xs), min(ys), max(xs), max(ys))
        if cls not in names:
            log.add(
                "unknown_class", path, lineno, f"class index {cls} not in names (0..{max(names, default=-1)})"
            )
            continue
        if len(fields) > 6:
            message = f"a {len(xs)}-point polygon (YOLO-seg) read as its bounding box"
            notes.add("polygon_as_box", path, lineno, message)
        boxes.append((lineno, cls, box, score))
    # a box whose corner lies past the image's far edge (left or top > 1) is no rounding slip of a fraction:
    # a file where most do was written in pixels, and every box of it dropped as "outside the image"
    past = sum(box[0] > 1 or box[1] > 1 for _, _, box, _ in boxes)
    hint = "; YOLO coordinates are fractions of the image size (0-1), this file's look like pixels"
    hint = hint if past > len(boxes) / 2 else ""
    objects = []
    for lineno, cls, box, score in boxes:
        box = (box[0] * width, box[1] * height, box[2] * width, box[3] * height)
        box = check_box(box, size, log, path, lineno, hint)
        if box is not None:
            objects.append(ObjectLabel(type=names[cls], bbox=box, score=score))
    return objects


def write_yolo(
    annotations: Sequence[ImageAnnotation],
    out_root: str | os.PathLike,
    class_names: Sequence[str],
    split: str = "train",
    image_mode: str = "copy",
    yaml_name: str = "data.yaml",
) -> Path:
    """Write ``out_root/{images,labels}/<split>/`` and the dataset yaml; returns the yaml's path.

    The yaml has no ``path`` key, so readers (ours and Ultralytics) take its folder as the root and the
    dataset can be moved. An existing yaml gains the new split; its names must match ``class_names``.
    """
    root = Path(out_root)
    _unique_names(annotations, str(root / "images" / split))
    index = {name: i for i, name in enumerate(class_names)}
    dropped: Counter = Counter()
    for ann in annotations:
        src = Path(ann.image_path)
        place_image(src, root / "images" / split / (ann.image_id + src.suffix.lower()), image_mode)
        lines = []
        for obj in _split_by_class(ann.objects, class_names, dropped):
            left, top, right, bottom = obj.bbox
            vals = (
                (left + right) / 2 / ann.width,
                (top + bottom) / 2 / ann.height,
                (right - left) / ann.width,
                (bottom - top) / ann.height,
            )
            line = " ".join([str(index[obj.type]), *(f"{v:.10g}" for v in vals)])
            lines.append(line + (f" {obj.score:.6g}" if obj.score is not None else ""))
        label = root / "labels" / split / f"{ann.image_id}.txt"
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
    yaml_path = root / yaml_name
    data = load_dataset_yaml(yaml_path) if yaml_path.is_file() else {}
    if data.get("names") is not None and list(_yolo_name_map(data, yaml_path).values()) != list(class_names):
        raise ValueError(
            f"{yaml_path}: existing names {data['names']} differ from class_names {list(class_names)}"
        )
    data.update({split: f"images/{split}", "nc": len(class_names), "names": dict(enumerate(class_names))})
    yaml_path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    _warn_not_written(dropped, f"write_yolo({root}, split={split!r})")
    return yaml_path
