"""Classification data people own: an ImageFolder tree or a CSV of ``path,label[,group]``, and the data module.

* ImageFolder: ``<root>/<split>/<class>/*.png|jpg`` with splits ``train``, ``val`` and (optionally) ``test``.
* CSV: a header row with ``path`` and ``label`` (and an optional ``group``: patient, sequence); paths relative
  to the CSV's folder. Rows are split by group (every row its own group without the column) with
  :func:`shared.data.group_split`, so no patient or drive lands in two splits.

Domains add their own sources (KITTI object crops, multi-reader lesion patches) by subclassing
:class:`ClassificationDataModule` and converting them once to an ImageFolder tree (``convert_source``).
Bad input (an empty class folder, a non-image file, a CSV row whose file is missing or whose label is not in
``class_names``, a file listed twice) is counted and reported in one warning, or with ``strict: true`` raised at
the first one; the message names the folder, file or row. A file listed twice with two labels is always an
error. An image that passes the check but does not decode during training is replaced by the next item and
named in a warning (``strict`` decodes every image before training instead). 16-bit images
(12-bit CT in a PNG, TIFF) are read at full depth and contrast-stretched per image to 0..255
(:func:`read_image`), said once.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import os
import random
import re
import time
import unicodedata
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from PIL import Image, PngImagePlugin
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import Dataset

from shared.backbones import IMAGENET_MEAN, IMAGENET_STD
from shared.data import SPLIT_NAMES, SplitLoaders, check_cap, group_split
from shared.files import counting_hidden_files, holding_generated_sets, visible_entries, visible_inputs
from shared.images import ImageDecodeError, check_jpeg_whole, stretch_to_uint8

#: files read as images (ImageFolder, CSV rows, predict_path); others in predict_path are counted in a warning
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")
#: the eight bytes every PNG file starts with (the PNG specification, section 5.2)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LINE_BREAK = re.compile(r"\r\n|\r|\n")  # as the csv module counts lines


class ClassificationDataError(ValueError):
    """A data set that cannot be used as given; the message names the folder, file, row or option."""


class ClassificationDataWarning(UserWarning):
    """Items were skipped while reading a data set (counts and the first locations are in the message)."""


@dataclass(frozen=True)
class Sample:
    """One labelled image: its file, class index and group (patient, sequence, or the file itself)."""

    path: str
    label: int
    group: str


class Problems:
    """Counts skipped items per kind with the first few locations; ``strict`` raises at the first one."""

    def __init__(self, strict: bool, what: str):
        self.strict, self.what = strict, what
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    def add(self, kind: str, where: str, message: str) -> None:
        if self.strict:
            raise ClassificationDataError(f"{where}: {message} [{kind}; strict mode]")
        self.counts[kind] += 1
        shown = self.examples.setdefault(kind, [])
        if len(shown) < 3:
            shown.append(f"{where}: {message}")

    def report(self) -> None:
        if not self.counts:
            return
        parts = [
            f"{kind}: {n} (e.g. {'; '.join(self.examples[kind])})" for kind, n in sorted(self.counts.items())
        ]
        warnings.warn(
            f"{self.what}: skipped {', '.join(parts)} (strict: true makes these errors)",
            ClassificationDataWarning,
            stacklevel=3,
        )


def source_stamp(paths) -> dict:
    """A cheap content stamp of the files a cutter reads (folders walked, files taken as they are, missing ones
    skipped): their count, total bytes, newest modification time and a digest of every (path, size, mtime), so a
    label edited, a file added, removed or renamed changes it and stale crops are not reused. Only ``stat`` is
    read, never the contents: 30-60 ms for 7,500 files, 0.1-0.4 s for KITTI's 15,000 (image_2 + label_2)."""
    entries = []
    for root in paths:
        root = os.path.realpath(root)  # data/kitti, ./data/kitti and /abs/data/kitti: one stamp
        if os.path.isfile(root):
            entries.append((root, os.stat(root)))
            continue
        for folder, _subfolders, files in os.walk(root):
            for name in files:
                try:
                    entries.append((os.path.join(folder, name), os.stat(os.path.join(folder, name))))
                except FileNotFoundError:  # removed while listed (or a broken link): not part of the source
                    continue
    entries.sort(key=lambda e: e[0])
    digest = hashlib.sha1()
    for name, st in entries:
        digest.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    newest = max((st.st_mtime_ns for _, st in entries), default=0)
    return {
        "files": len(entries),
        "bytes": sum(st.st_size for _, st in entries),
        "newest": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(newest / 1e9)) if entries else None,
        "digest": digest.hexdigest()[:16],
    }


class CropFolder:
    """An ImageFolder tree of crops cut once from a source data set (``out/<split>/<class>/*.png`` and
    ``metadata.csv``), reused while the ``settings`` it was cut with match its ``.complete`` marker, which is
    written last (a folder without it is an interrupted cut, done again).

    ``sources`` (the files and folders the cutter reads) add a :func:`source_stamp` to the settings: crops of a
    source edited since (a label renamed, a patient added) are cut again, and the log says why. A new cut first
    removes every crop of the earlier one (a new ``class_names`` leaves no folder of an old class behind)."""

    MARKER = ".complete"
    CUTTING = ".cutting"  # while a cut runs: an interrupted one is still recognised as ours
    STAMP = "source_files"

    def __init__(self, out: str | Path, settings: dict, sources=()):
        self.out, self.settings = Path(out), dict(settings)
        if sources:
            self.settings[self.STAMP] = source_stamp(sources)
        self.marker = self.out / self.MARKER
        self._cleared = False

    def _read_marker(self) -> dict | None:
        try:
            return json.loads(self.marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # no marker, or a torn one: cut again

    def is_current(self) -> bool:
        """True when the crops are there for these settings (said, so a reuse is never silent); refuses a
        non-empty folder that is not ours."""
        old = self._read_marker()
        out = self.out
        if old == self.settings:
            stamp = self.settings.get(self.STAMP) or {}
            seen = f" (source unchanged: {stamp.get('files')} files, newest {stamp.get('newest')})"
            rank_zero_info(f"{out}: reusing the crops cut with the same settings{seen}; delete it to cut again")
            return True
        if old is not None:
            changed = sorted(k for k in {*old, *self.settings} if old.get(k) != self.settings.get(k))
            settings = [k for k in changed if k != self.STAMP]
            why = [f"settings {', '.join(settings)} changed"] if settings else []
            was, now = old.get(self.STAMP), self.settings.get(self.STAMP)
            if was and now and was != now:
                why.append(
                    f"the source changed since its crops were cut ({was['files']} -> {now['files']} files, "
                    f"{was['bytes']} -> {now['bytes']} bytes, newest {was['newest']} -> {now['newest']})"
                )
            elif now and not was:
                why.append("no record of the source's files (crops cut by an older version)")
            why = why or [f"settings {', '.join(changed)} changed"]
            rank_zero_info(f"{out}: {'; '.join(why)}: cutting the crops again")
        if (
            out.exists()
            and any(out.iterdir())
            and not self.marker.is_file()
            and not (out / "metadata.csv").is_file()
            and not (out / self.CUTTING).is_file()
        ):
            raise FileExistsError(f"{out}: exists and holds no crops of ours; choose another crops_dir")
        return False

    def _remove_earlier_crops(self) -> None:
        """A new cut starts from no crops: the earlier cut's ``<split>/<class>/*.png`` go (a new ``class_names``
        leaves no folder of an old class behind), then the folders left empty; other files stay."""
        self.marker.unlink(missing_ok=True)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / self.CUTTING).touch()
        for split in SPLIT_NAMES:
            for old in (self.out / split).glob("*/*.png"):
                old.unlink()
            for folder in [*(self.out / split).glob("*/"), self.out / split]:
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()

    def empty_class_folders(self, split: str, class_names) -> None:
        """Create ``out/<split>/<class>`` for each class, the first call after removing every crop of the earlier
        cut (all splits); the crops are stale until :meth:`finish`."""
        if not self._cleared:
            self._remove_earlier_crops()
            self._cleared = True
        for name in class_names:
            (self.out / split / name).mkdir(parents=True, exist_ok=True)

    def finish(self, rows: list[dict]) -> Path:
        """Write ``metadata.csv`` (one row per crop) and then the marker; returns the folder."""
        with (self.out / "metadata.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        self.marker.write_text(json.dumps(self.settings), encoding="utf-8")
        (self.out / self.CUTTING).unlink(missing_ok=True)
        return self.out


def check_fraction(value: float, option: str) -> float:
    """A share in (0, 1]; a :class:`ClassificationDataError` naming ``option`` otherwise."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ClassificationDataError(f"{option}: expected a number in (0, 1], got {value!r}") from None
    if not 0 < number <= 1:
        raise ClassificationDataError(f"{option}: must be in (0, 1] (a share of the labels), got {value}")
    return number


def _check_class_names(class_names: list[str]) -> list[str]:
    names = [str(c) for c in class_names]
    # distinct as text, not only as code points: "grün" typed (NFC) and as a Mac writes it (NFD) are one class
    if len(names) < 2 or len({unicodedata.normalize("NFC", n) for n in names}) != len(names):
        raise ClassificationDataError(f"class_names: need at least 2 distinct names, got {names}")
    return names


def _is_image(path: Path, full: bool = False) -> bool:
    """True when the file should decode. A PNG (by its signature, whatever its name) is verified: every
    chunk's CRC to its end, so a truncated or bit-flipped file fails here instead of mid-epoch. Pillow's own
    chunk reader does it, straight from the file: 35-40 us for a 64 px crop where ``Image.open`` then
    ``verify`` took 60-90 (parsing the header chunks twice; most of a 10,000-crop set's start). Other formats
    have their header parsed (Pillow's verify checks nothing more in a JPEG), a JPEG's end read too (a
    cut-short one, which OpenCV fills with grey: :func:`~shared.images.check_jpeg_whole`). ``full`` (strict
    mode) decodes the file with the decoder training uses, so nothing that passes can fail later: 0.1 ms for a
    64 px crop, 2 ms for a 512 px PNG, 3.5 ms for a 1 MP JPEG (minutes for a million images, hence only on
    request); without it a file that still fails is replaced and counted during training
    (:class:`ClassificationDataset`)."""
    try:
        with open(path, "rb") as fh:
            png = fh.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE
            if png:
                PngImagePlugin.PngStream(fh).verify()  # to IEND: a file cut short ends in an error
        if not png:
            with Image.open(path) as im:
                im.size  # noqa: B018 - touching the size parses the header
            check_jpeg_whole(path)
    except Exception:  # noqa: BLE001 - whatever the decoder raises, the file is not readable
        return False
    return not full or cv2.imread(str(path), cv2.IMREAD_UNCHANGED) is not None


# -------------------------------------------------------------------------------------------- readers


def read_image_folder(
    root: str | Path, class_names: list[str], strict: bool = False, max_items: int | None = None
) -> dict[str, list[Sample]]:
    """``{split: [Sample]}`` from ``<root>/<split>/<class>/*``; ``test`` may be absent (then it is ``val``).

    A class folder that is missing or holds no image is an error in ``train`` (the class cannot be learnt);
    elsewhere a warning (``strict``: an error). A folder not in ``class_names`` is an error (a typo would
    silently drop a class); a file that is not an image is skipped and counted.

    ``max_items`` (``--data.max_items``): only the files that a split's cut keeps are checked (every file of the
    folder was): per split the first ``max_items`` of the class round-robin (:func:`interleave_classes`), and the
    first image of a class left out of them (the class checks need each class's presence). The data module's
    cut of these keeps what its cut of the whole split kept.
    """
    root = Path(root)
    class_names = _check_class_names(class_names)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: ImageFolder root not found")
    present = [s for s in SPLIT_NAMES if (root / s).is_dir()]
    if "train" not in present or "val" not in present:
        found = sorted(p.name for p in root.iterdir() if p.is_dir())[:8]
        raise ClassificationDataError(
            f"{root}: expected split folders train/ and val/ (and optionally test/), each holding one folder per "
            f"class {class_names}; found folders {found}"
        )
    problems = Problems(strict, f"ImageFolder {root}")
    splits: dict[str, list[Sample]] = {}
    wanted = [unicodedata.normalize("NFC", name) for name in class_names]  # the folder names, compared in NFC
    with counting_hidden_files(root):  # one count of hidden files over every class folder
        for split in present:
            folder = root / split
            # hidden folders (.ipynb_checkpoints) are no classes: counted, not read. Names compare in Unicode
            # NFC: a Mac copy writes "grün" as u + combining diaeresis (NFD), which looks the same as typed
            folders: dict[str, Path] = {}
            for entry in (p for p in visible_entries(folder) if p.is_dir()):
                other = folders.setdefault(unicodedata.normalize("NFC", entry.name), entry)
                if other != entry:  # one name in two Unicode forms: which folder is the class cannot be told
                    raise ClassificationDataError(
                        f"{folder}: class folders {other.name!r} and {entry.name!r} are one name in two Unicode "
                        "forms (NFC and NFD, e.g. copied from a Mac and typed): merge them"
                    )
            unknown = [p.name for name, p in folders.items() if name not in wanted]
            if unknown:
                raise ClassificationDataError(
                    f"{folder}: class folder(s) {unknown} are not in class_names {class_names} (add them to "
                    "class_names or move them out)"
                )
            dirs = [folders.get(wanted[label], folder / name) for label, name in enumerate(class_names)]
            groups = [f"{split}/{name}" for name in class_names]
            images = [_class_images(*args, strict, problems) for args in zip(dirs, range(len(dirs)), groups)]
            kept = [list(found) for found in images] if max_items is None else _round_robin(images, max_items)
            for class_dir, name, found, more in zip(dirs, class_names, kept, images):
                if not found and max_items is not None:
                    found.extend(itertools.islice(more, 1))  # the class's first image, checked only here
                if not found:
                    message = f"class {name!r} has no images (empty or missing class folder)"
                    if split == "train":
                        raise ClassificationDataError(
                            f"{class_dir}: {message}; every class needs training images"
                        )
                    problems.add("empty_class", str(class_dir), message)
            splits[split] = [item for found in kept for item in found]
    problems.report()
    if "test" not in splits:
        rank_zero_info(f"{root}: no test/ folder: the test split is the validation split")
        splits["test"] = splits["val"]
    return splits


def _class_images(
    class_dir: Path, label: int, group: str, strict: bool, problems: Problems
) -> Iterator[Sample]:
    """The readable images of one class folder, in name order, each checked (:func:`_is_image`) as it is
    reached (``group``: ``<split>/<class>``, each image's group its own); what is skipped goes to ``problems``."""
    # a Mac's ._image.png resource forks, .DS_Store: not the user's images (counted, not read)
    for path in visible_entries(class_dir) if class_dir.is_dir() else []:
        # an image is opened anyway: asking first whether it is a folder cost a stat per image
        if path.suffix.lower() in IMAGE_SUFFIXES and _is_image(path, strict):
            yield Sample(str(path), label, f"{group}/{path.stem}")
        elif path.is_dir():
            problems.add("subfolder", str(path), "sub-folders inside a class folder are not read")
        else:
            problems.add("not_an_image", str(path), "not a readable image file")


def _round_robin(classes: list[Iterator[Sample]], n: int) -> list[list[Sample]]:
    """Per class, its items among the first ``n`` of :func:`interleave_classes` over ``classes``, drawing no item
    past them (itertools' zip_longest would check a whole row of files to yield its first)."""
    kept: list[list[Sample]] = [[] for _ in classes]
    live, taken = list(range(len(classes))), 0
    while live and taken < n:
        for i in list(live):
            if taken == n:
                break
            item = next(classes[i], None)
            if item is None:
                live.remove(i)
            else:
                kept[i].append(item)
                taken += 1
    return kept


def read_label_csv(path: str | Path, class_names: list[str], strict: bool = False) -> list[Sample]:
    """Samples from a CSV with columns ``path,label[,group]`` (header row required); rows are named by line.

    A file is one sample however often it is listed: listed again with another label it is an error naming both
    lines (which label is right cannot be guessed); again with the same label it is kept once, with its first
    row's group, and counted in the warning (under two groups it would land in two splits: train and test)."""
    path = Path(path)
    class_names = _check_class_names(class_names)
    if path.is_dir():
        raise ClassificationDataError(f"{path}: is a folder; the csv format reads one label file (path,label[,group])")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: label CSV not found")
    # labels compare in Unicode NFC, as ImageFolder's folder names: a Mac writes "grün" decomposed (NFD)
    index = {unicodedata.normalize("NFC", name): i for i, name in enumerate(class_names)}
    problems = Problems(strict, f"label CSV {path}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # a spreadsheet's byte-order mark is no header
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise ClassificationDataError(
            f"{path}:{line}: not UTF-8 text (byte {raw[error.start]:#04x}); save it as UTF-8 (a spreadsheet's "
            "'CSV UTF-8')"
        ) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        columns = [c.strip() for c in reader.fieldnames or []]
        if "path" not in columns or "label" not in columns:
            raise ClassificationDataError(
                f"{path}:1: the header must name the columns path,label[,group]; got {columns}"
            )
        reader.fieldnames = columns
        items = []
        first: dict[str, tuple[int, str]] = {}  # resolved file -> (line, label) of the row that kept it
        for row in reader:
            where = f"{path}:{reader.line_num}"
            values = [value for value in row.values() if isinstance(value, str)]
            breaks = sum(len(LINE_BREAK.findall(value)) for value in values)
            breaks -= any(value.endswith(("\n", "\r")) for value in values)  # a quote open to the file's end
            if breaks:
                # csv reads a quote that is never closed as a field running to the next quote or the file's end:
                # the rows inside it would be lost without a word
                raise ClassificationDataError(
                    f"{path}:{reader.line_num - breaks}: a quote (\") opened on this line runs to line "
                    f"{reader.line_num}, taking the rows between into one field; close or remove it"
                )
            rel = (row.get("path") or "").strip()
            label = unicodedata.normalize("NFC", (row.get("label") or "").strip())
            if not rel:
                problems.add("missing_path", where, "empty path")
                continue
            image = Path(rel) if Path(rel).is_absolute() else path.parent / rel
            if not image.is_file():
                problems.add("missing_file", where, f"image {image} does not exist")
                continue
            if label not in index:
                problems.add("unknown_label", where, f"label {label!r} is not in class_names {class_names}")
                continue
            key = str(image.resolve())  # ./a.png and a.png are one file
            if key in first:
                line, kept = first[key]
                if kept != label:
                    raise ClassificationDataError(
                        f"{where}: {image} is labelled {label!r} here but {kept!r} at {path}:{line}; a file can "
                        "have one label (fix or remove one of the rows)"
                    )
                problems.add("duplicate", where, f"{image} is listed again (first at line {line}); kept once")
                continue
            if image.suffix.lower() not in IMAGE_SUFFIXES or not _is_image(image, strict):
                problems.add("not_an_image", where, f"{image} is not a readable image file")
                continue
            first[key] = (reader.line_num, label)
            group = (row.get("group") or "").strip() or rel
            items.append(Sample(str(image), index[label], group))
    except csv.Error as error:  # e.g. a field over csv's size limit: the rest of the file inside one quote
        raise ClassificationDataError(
            f"{path}: {error} (read to line {reader.line_num}); an unclosed quote (\") takes the rows after it into "
            "one field"
        ) from None
    problems.report()
    if not items:
        raise ClassificationDataError(f"{path}: no usable rows")
    return items


def subsample_labels(items: list[Sample], fraction: float, seed: int = 0) -> list[Sample]:
    """A seeded, class-stratified share ``fraction`` of ``items`` (at least one item per class present)."""
    fraction = check_fraction(fraction, "label_fraction")
    if fraction == 1:
        return list(items)
    rng = random.Random(seed)
    by_class: dict[int, list[Sample]] = {}
    for item in items:
        by_class.setdefault(item.label, []).append(item)
    kept: list[Sample] = []
    for label in sorted(by_class):
        group = by_class[label]
        kept += rng.sample(group, max(1, round(fraction * len(group))))
    return sorted(kept, key=lambda s: s.path)


def interleave_classes(items: list[Sample]) -> list[Sample]:
    """The items round-robin across classes (each class keeping its order), so that any prefix is balanced:
    Lightning's ``limit_val_batches`` / ``limit_test_batches`` take the first batches of an unshuffled loader,
    and folder readers list the items class by class (the first 10 validation batches were all one class)."""
    by_class: dict[int, list[Sample]] = {}
    for item in items:
        by_class.setdefault(item.label, []).append(item)
    rows = itertools.zip_longest(*(by_class[label] for label in sorted(by_class)))
    return [item for row in rows for item in row if item is not None]


def check_split_classes(splits: dict[str, list[Sample]], class_names: list[str], source) -> None:
    """A class with no training item cannot be learnt: an error naming it (a group split can starve one when
    its groups are few); an empty validation or test split is a warning."""
    trained = {item.label for item in splits.get("train", [])}
    anywhere = {item.label for items in splits.values() for item in items}
    absent = [name for label, name in enumerate(class_names) if label not in anywhere]
    if absent:
        raise ClassificationDataError(f"{source}: no item of class(es) {absent} at all (check class_names)")
    missing = [name for label, name in enumerate(class_names) if label not in trained]
    if missing:
        raise ClassificationDataError(
            f"{source}: no training item of class(es) {missing} after the split (their groups all went to "
            "val / test): add items, give those classes more groups, or change split_fractions"
        )
    for name in ("val", "test"):
        if name in splits and not splits[name]:
            warnings.warn(
                f"{source}: the {name} split is empty (an empty {name}/ folder, or too few groups for the split "
                "fractions)",
                ClassificationDataWarning,
                stacklevel=3,
            )
            continue
        present = {item.label for item in splits.get(name, ())}
        lacking = [c for label, c in enumerate(class_names) if label not in present]
        # test aliased to val (an ImageFolder without test/) is said once, as val
        if lacking and name in splits and (name == "val" or splits[name] is not splits.get("val")):
            # a 1:9 CSV split by patient put no malignant case in val at seeds 0, 2, 3: macro F1 1.0, unsaid
            warnings.warn(
                f"{source}: the {name} split holds no item of class(es) {lacking}: its figures say nothing of them "
                "(macro F1 leaves them out, their recall is NaN)"
                + (", and the best checkpoint is chosen without them" if name == "val" else "")
                + ": give those classes more groups (patients), or change split_fractions or seed",
                ClassificationDataWarning,
                stacklevel=3,
            )


def class_table(splits: dict[str, list[Sample]], class_names: list[str]) -> str:
    """Markdown table of images per class and split (printed at setup, so a missing class shows at once)."""
    names = list(splits)
    counts = {s: Counter(item.label for item in items) for s, items in splits.items()}
    lines = ["| class | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for i, name in enumerate(class_names):
        lines.append(f"| {name} | " + " | ".join(str(counts[s][i]) for s in names) + " |")
    lines.append("| **all** | " + " | ".join(str(len(splits[s])) for s in names) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- dataset


def classification_transforms(
    train: bool, image_size: tuple[int, int], in_channels: int, augment: bool = True, seed: int | None = None
) -> A.Compose:
    """Resize (and on training images flip, small affine, brightness / contrast), then ImageNet-style scaling.

    Grey images use the mean of ImageNet's channel statistics, matching how ``load_backbone_weights`` folds an
    RGB first conv into one channel.
    """
    mean = IMAGENET_MEAN if in_channels == 3 else (float(np.mean(IMAGENET_MEAN)),) * in_channels
    std = IMAGENET_STD if in_channels == 3 else (float(np.mean(IMAGENET_STD)),) * in_channels
    steps: list = [A.Resize(height=image_size[0], width=image_size[1])]
    if train and augment:
        steps += [
            A.HorizontalFlip(p=0.5),
            A.Affine(
                scale=(0.9, 1.1),
                translate_percent=(-0.05, 0.05),
                rotate=(-8, 8),
                border_mode=cv2.BORDER_REFLECT_101,
                p=0.5,
            ),
            A.RandomBrightnessContrast(p=0.3),
        ]
    steps.append(A.Normalize(mean=mean, std=std, max_pixel_value=255.0))
    return A.Compose(steps, seed=seed)


def read_image(path: str | Path, in_channels: int) -> np.ndarray:
    """Decode to uint8 (H, W, C) with C = ``in_channels`` (1: grey, 3: RGB); errors name the file.

    Training, evaluation, ``predict`` and the Grad-CAM overlays all read through here: 16-bit images are read
    at full depth and contrast-stretched per image (:func:`stretch_to_uint8`); 8-bit ones are unchanged. A JPEG
    cut short is an error (OpenCV would fill its missing rows with grey)."""
    flags = (cv2.IMREAD_GRAYSCALE if in_channels == 1 else cv2.IMREAD_COLOR) | cv2.IMREAD_ANYDEPTH
    image = cv2.imread(str(path), flags)
    if image is None and in_channels == 3:  # OpenCV's colour read refuses a float grey TIFF it reads as stored
        grey = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        image = cv2.merge([grey] * 3) if grey is not None and grey.ndim == 2 else None
    if image is None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: image file not found")
        raise ClassificationDataError(f"{path}: cannot decode image")
    try:  # OpenCV fills a cut-short JPEG with grey, saying so on stderr only
        check_jpeg_whole(path)
    except ImageDecodeError as err:
        raise ClassificationDataError(str(err)) from None
    if image.dtype != np.uint8:
        image = stretch_to_uint8(image, path, ClassificationDataWarning)
    if in_channels == 1:
        return image[..., None]
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class ClassificationDataset(Dataset):
    """``{"image": float (C, H, W), "label": int64, "path": str, "error": str}`` per :class:`Sample` (label -1:
    unknown).

    ``skip_unreadable`` (``predict`` on a user's folder): an image that does not decode gives a blank image and its
    reason in ``error`` instead of stopping the run, so one broken file among thousands costs only its own row
    (the task lists and counts it); ``error`` is "" otherwise.

    ``replace_unreadable`` (training without ``strict``): an image that does not decode is replaced by the next
    item that does, said in a warning naming it (once per file and loader process). The data check verifies PNGs
    (and a JPEG's end) but only parses other headers (a full decode of every file is a strict-mode option:
    minutes on a large set), so a file can still fail here, and one bad file hours into a run should cost its own
    sample, not the run. Otherwise the error stops the run, naming the file.
    """

    #: items tried after an unreadable one before giving up (then the data set itself is broken: an error)
    MAX_REPLACEMENTS = 10

    def __init__(
        self,
        items: list[Sample],
        in_channels: int,
        transform: A.Compose,
        skip_unreadable: bool = False,
        replace_unreadable: bool = False,
    ):
        if in_channels not in (1, 3):
            raise ClassificationDataError(f"in_channels: 1 (grey) or 3 (RGB), got {in_channels}")
        self.items, self.in_channels, self.transform = list(items), in_channels, transform
        self.skip_unreadable, self.replace_unreadable = skip_unreadable, replace_unreadable

    def __len__(self) -> int:
        return len(self.items)

    def labels(self) -> list[int]:
        return [item.label for item in self.items]

    def _replacement(self, i: int, failure: Exception) -> tuple[Sample, np.ndarray]:
        """The next item after ``i`` that decodes; an error naming the files when none of the next ones does."""
        tries = min(self.MAX_REPLACEMENTS, len(self.items) - 1)
        for step in range(1, tries + 1):
            item = self.items[(i + step) % len(self.items)]
            try:
                return item, read_image(item.path, self.in_channels)
            except (ClassificationDataError, OSError):
                continue
        raise ClassificationDataError(
            f"{failure} and none of the next {tries} images decodes either (from {self.items[i].path}): check the "
            "data set's files"
        ) from failure

    def __getitem__(self, i: int) -> dict:
        item = self.items[i]
        error = ""
        try:
            image = read_image(item.path, self.in_channels)
        except (ClassificationDataError, OSError) as err:
            if self.skip_unreadable:
                image, error = np.zeros((8, 8, self.in_channels), np.uint8), str(err)
            elif self.replace_unreadable:
                item, image = self._replacement(i, err)
                warnings.warn(
                    f"{err}; replaced by {item.path} in this epoch (fix or remove the file; strict: true decodes "
                    "every image before training and stops at the first)",
                    ClassificationDataWarning,
                    stacklevel=2,
                )
            else:
                raise
        image = self.transform(image=image)["image"]
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float(),
            "label": torch.tensor(item.label, dtype=torch.long),
            "path": item.path,
            "error": error,
        }


# ------------------------------------------------------------------------------------------ data module


def source_tag(path: str | Path) -> str:
    """A short stable name for a source folder (its resolved path's digest), for the crops it converts to."""
    return hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:10]


class ClassificationDataModule(SplitLoaders):
    """Image classification data (``--data.*``).

    Args:
        data_format: ``imagefolder``, ``csv``, or a source of the domain (see the domain's data module).
        data_path: the ImageFolder root, the CSV file, or the domain source's folder; null: the domain's
            built-in synthetic set (converted to crops once under ``data/``).
        class_names: the classes, in label order (also the model's: linked, written once).
        in_channels: 1 reads images as grey, 3 as RGB (also the model's).
        image_size: [H, W] every image is resized to.
        batch_size: images per batch.
        num_workers: loader processes; null: one less than the CPU cores, at most 4.
        augment: flips, small affine and brightness / contrast on training images.
        strict: bad items (non-images, missing files, unknown labels, empty val/test class folders) raise
            naming the file or row, instead of being skipped and counted in one warning; every image is decoded
            once before training (0.1-4 ms each), so none can fail mid-epoch. Without it an image that fails
            to decode during training is replaced by the next one, named in a warning.
        split_fractions: train / val / test shares for a CSV (split by its group column).
        label_fraction: share of the training labels used, in (0, 1] (class-stratified, seeded): learning curves.
        seed: seed of the split, the label subsample and the augmentation.
        max_items: at most this many images per split (smoke tests).
        predict_path: a folder of images (any layout below it) for ``predict``, read alone (``data_path`` is
            then neither read nor generated; ``class_names`` must still be the checkpoint's); null: the test split.
        crops_dir: where a domain source is converted to crops; null: under ``data/<domain>/classification``.
    """

    INPUT_SETTINGS = ("image_size",)

    #: extra ``data_format`` values a domain understands (converted by :meth:`convert_source`)
    source_formats: tuple[str, ...] = ()
    #: formats split by ``seed`` and ``split_fractions`` (the others are split by their folders)
    drawn_formats: tuple[str, ...] = ("csv",)
    default_format: str = "imagefolder"

    def __init__(
        self,
        data_format: str = "imagefolder",
        data_path: str | None = None,
        class_names: list[str] | None = None,
        in_channels: int = 3,
        image_size: tuple[int, int] = (64, 64),
        batch_size: int = 32,
        num_workers: int | None = None,
        augment: bool = True,
        strict: bool = False,
        split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
        label_fraction: float = 1.0,
        seed: int = 0,
        max_items: int | None = None,
        predict_path: str | None = None,
        crops_dir: str | None = None,
    ):
        super().__init__()
        formats = ("imagefolder", "csv", *self.source_formats)
        if data_format not in formats:
            raise ClassificationDataError(f"data_format: one of {list(formats)}, got {data_format!r}")
        if data_path is None and data_format in ("imagefolder", "csv") and predict_path is None:
            # said before the network is built; predicting one's own images needs no labelled set
            raise ClassificationDataError(f"data_path: needed with data_format {data_format!r}")
        if class_names is None:
            raise ClassificationDataError("class_names: the list of classes, in label order, is needed")
        self.class_names = _check_class_names(class_names)
        if in_channels not in (1, 3):
            raise ClassificationDataError(f"in_channels: 1 (grey) or 3 (RGB), got {in_channels}")
        if len(image_size) != 2 or min(image_size) < 8:
            raise ClassificationDataError(f"image_size: [H, W] of at least 8 px, got {image_size}")
        if len(split_fractions) != 3:
            raise ClassificationDataError(
                f"split_fractions: 3 values (train/val/test), got {split_fractions}"
            )
        self.label_fraction = check_fraction(label_fraction, "label_fraction")
        self.save_hyperparameters()
        self.data_format, self.data_path = data_format, data_path
        self.in_channels = in_channels
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.set_loader_options(batch_size, num_workers)
        self.augment, self.strict = augment, strict
        self.split_fractions = tuple(split_fractions)
        self.seed, self.max_items = seed, check_cap(max_items, "--data.max_items")
        self.predict_path, self.crops_dir = predict_path, crops_dir
        self.splits: dict[str, list[Sample]] = {}
        self.datasets: dict[str, ClassificationDataset] = {}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # a domain's hook: convert its own source (or its synthetic default, when data_path is None) to an
    # ImageFolder tree once and return its root
    def convert_source(self, data_format: str, data_path: str | None) -> Path:  # pragma: no cover - abstract
        raise ClassificationDataError(
            f"data_format {data_format!r} has no converter in {type(self).__name__}"
        )

    def source_and_crops_dir(
        self, data_path: str | None, synthetic: Callable[[], str | Path], kind: str, crops_root: str
    ) -> tuple[Path, Path]:
        """For :meth:`convert_source`: the source folder (``data_path``, else ``synthetic()``, the domain's
        generated set) and where its crops go (``crops_dir``, else ``crops_root/synthetic_<kind>`` or
        ``crops_root/<kind>_<source tag>``)."""
        source = Path(data_path) if data_path is not None else Path(synthetic())
        if not source.exists():
            raise FileNotFoundError(f"data_path {source}: no such {kind.upper()} folder")
        tag = f"synthetic_{kind}" if data_path is None else f"{kind}_{source_tag(source)}"
        return source, Path(self.crops_dir) if self.crops_dir else Path(crops_root) / tag

    def split_settings(self, hparams: dict, stage: str) -> dict:
        """Only a drawn split moves with ``seed`` / ``split_fractions``: an ImageFolder's is its folders."""
        drawn = hparams.get("data_format", self.data_format) in self.drawn_formats
        return super().split_settings(hparams, stage) if drawn else {}

    def prepare_data(self) -> None:
        # predict on one's own images: the labelled source is neither generated nor cut
        if self.data_format in self.source_formats and not self.predicting_own_images():
            self._crops_root()

    def _crops_root(self) -> Path:
        """The converted source's ImageFolder root, converted (or its crops checked) once per data module:
        ``prepare_data`` and ``setup`` both need it, and the check stamps every source file."""
        if getattr(self, "_converted", None) is None:
            with holding_generated_sets():  # the source checked and cut from one generation of a synthetic set
                self._converted = self.convert_source(self.data_format, self.data_path)
        return self._converted

    def read_splits(self) -> dict[str, list[Sample]]:
        if self.data_path is None and self.data_format in ("imagefolder", "csv"):
            raise ClassificationDataError(f"data_path: needed with data_format {self.data_format!r}")
        if self.data_format == "csv":
            items = read_label_csv(self.data_path, self.class_names, self.strict)
            index = group_split([s.group for s in items], self.split_fractions, seed=self.seed)
            return {name: [items[i] for i in idx] for name, idx in index.items()}
        root = (
            Path(self.data_path)
            if self.data_format == "imagefolder"
            else self._crops_root()
        )
        return read_image_folder(root, self.class_names, self.strict, self.max_items)

    def setup(self, stage: str | None = None) -> None:
        if stage in ("predict", None) and self.predict_path is not None and "predict" not in self.datasets:
            self.datasets["predict"] = self._predict_dataset(self._predict_items())
        if stage == "predict" and self.predict_path is not None:
            return  # your own images only: data_path is not read (nor its crops cut)
        if "train" in self.datasets:
            return
        splits = self.read_splits()
        check_split_classes(splits, self.class_names, self.data_path)
        # val / test interleaved by class, so limit_*_batches see every class; train (shuffled by its loader)
        # keeps its order unless max_items cuts it
        cut = self.max_items is not None
        splits = {n: interleave_classes(v) if n != "train" or cut else v for n, v in splits.items()}
        if cut:
            splits = {name: items[: self.max_items] for name, items in splits.items()}
            kept = {item.label for item in splits.get("train", [])}
            if len(kept) < len(self.class_names):
                warnings.warn(
                    f"{self.data_path}: max_items={self.max_items} keeps {len(kept)} of the "
                    f"{len(self.class_names)} classes in training",
                    ClassificationDataWarning,
                    stacklevel=2,
                )
        if not splits.get("train"):
            raise ClassificationDataError(f"{self.data_path}: the training split is empty")
        splits["train"] = subsample_labels(splits["train"], self.label_fraction, self.seed)
        self.splits = splits
        share = f" ({self.label_fraction:.0%} of the training labels)" if self.label_fraction < 1 else ""
        rank_zero_info(f"classification data{share}:\n{class_table(splits, self.class_names)}")
        for name, items in splits.items():
            transform = classification_transforms(
                name == "train", self.image_size, self.in_channels, self.augment, self.seed
            )
            # a broken training image costs its own sample; one of val / test would be scored as another image's
            # second copy, so there it stops the run, naming the file
            self.datasets[name] = ClassificationDataset(
                items, self.in_channels, transform, replace_unreadable=name == "train" and not self.strict
            )
        if self.predict_path is None:
            # predict on the test split lists an unreadable file (unreadable.csv) like predict on one's own images,
            # rather than predicting its replacement twice
            self.datasets["predict"] = self._predict_dataset(splits["test"])

    def split_groups(self, name: str) -> set[str] | None:
        """The CSV ``group`` values (or files) of split ``name``, for the checkpoint's leak check."""
        items = getattr(self, "splits", {}).get(name)
        return None if items is None else {item.group for item in items}

    def _predict_dataset(self, items: list[Sample]) -> ClassificationDataset:
        """What ``predict`` reads: ``items`` unaugmented, an image that does not decode listed (``unreadable.csv``)
        and skipped, not fatal."""
        transform = classification_transforms(False, self.image_size, self.in_channels)
        return ClassificationDataset(items, self.in_channels, transform, skip_unreadable=True)

    def _predict_items(self) -> list[Sample]:
        """Every image file below ``predict_path``; files of other types are counted in one warning naming an
        example (they used to vanish: neither predicted nor listed in ``unreadable.csv``)."""
        root = Path(self.predict_path)
        if root.is_file():
            raise ClassificationDataError(f"predict_path {root}: is a file; give the folder that holds the images")
        if not root.is_dir():
            raise FileNotFoundError(f"predict_path {root}: no such folder")
        files = visible_inputs(root, None, "predict_path", ClassificationDataWarning)
        paths = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        if not paths:
            raise ClassificationDataError(f"predict_path {root}: no images ({', '.join(IMAGE_SUFFIXES)})")
        others = [p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
        if others:
            warnings.warn(
                f"predict_path {root}: {len(others)} file(s) not predicted, their type is not an image type read "
                f"({', '.join(IMAGE_SUFFIXES)}), e.g. {others[0]}",
                ClassificationDataWarning,
                stacklevel=3,
            )
        return [Sample(str(p), -1, str(p)) for p in paths]


__all__ = [
    "ClassificationDataError",
    "ClassificationDataModule",
    "ClassificationDataWarning",
    "ClassificationDataset",
    "Sample",
    "check_fraction",
    "class_table",
    "classification_transforms",
    "read_image_folder",
    "read_label_csv",
    "subsample_labels",
]
