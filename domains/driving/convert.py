"""Convert detection labels between KITTI, COCO and YOLO.

    python -m domains.driving.convert --from kitti --to coco --src data/kitti --dst data/kitti_coco

Layouts written: KITTI ``dst/training/{image_2,label_2}``; COCO ``dst/annotations.json`` + ``dst/images/``;
YOLO ``dst/data.yaml`` + ``dst/{images,labels}/<split>/``. Sources: a KITTI root, a COCO JSON (images relative
to its folder unless ``--images-root``), a YOLO dataset yaml. Images are copied (``--link``: hard links).

The destination is written into a temporary folder beside it and renamed at the end, so a failure leaves
nothing half-written; a non-empty destination is refused unless ``--overwrite`` (at the start, and at the end
one another run wrote meanwhile: :func:`put_in_place`, which also puts a replaced destination back where the
final rename fails), and one that is the source, holds it or lies inside it always (:func:`source_overlap`), as
is one holding any file the conversion reads (:func:`held_source_files`: images, labels, YOLO ``.txt`` image
lists, the sequence map) and a symbolic link (its target is never replaced through it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from domains.driving.common import sequence_map_candidates, source_sequence_map
from domains.driving.formats import (
    KITTI_TYPES,
    DropLog,
    ImageAnnotation,
    LabelFormatError,
    _yolo_sources,
    coco_category_names,
    load_dataset_yaml,
    place_image,
    read_coco,
    read_kitti_dir,
    read_yolo,
    resolve_kitti_split,
    write_coco,
    write_kitti_dir,
    write_yolo,
    yolo_label_path,
    yolo_names,
)
from shared.files import temporary_folder

FORMATS = ("kitti", "coco", "yolo")
YOLO_SPLITS = ("train", "val", "test")


def read_source(
    fmt: str,
    src: Path,
    log: DropLog,
    split: str | None = None,
    images_root: str | None = None,
    extra_types: list[str] | None = None,
) -> tuple[dict[str, list[ImageAnnotation]], list[str]]:
    """Read a source into ``{split: annotations}`` plus its class order (for the default ``--classes``)."""
    if fmt == "kitti":
        known = (*KITTI_TYPES, *(extra_types or []))
        items = read_kitti_dir(src, split_dir=split or "training", known_types=known, log=log)
        present = {o.type for a in items for o in a.objects}
        order = [t for t in known if t in present] + sorted(present - set(known))
        return {"train": items}, order
    if fmt == "coco":
        items = read_coco(src, images_root=images_root, log=log)
        return {"train": items}, coco_category_names(src)
    # the readers' own loader: broken YAML or a yaml that is no mapping is one error naming the file and line
    entries = load_dataset_yaml(Path(src))
    splits = [split] if split else [s for s in YOLO_SPLITS if entries.get(s)]
    if not splits:
        raise LabelFormatError(src, None, f"no split entries ({', '.join(YOLO_SPLITS)}) in the dataset yaml")
    return {s: read_yolo(src, s, log=log) for s in splits}, yolo_names(src)


def write_destination(
    fmt: str, splits: dict[str, list[ImageAnnotation]], dst: Path, class_names: list[str], image_mode: str
) -> Counter:
    """Write every split (KITTI and COCO hold one set: splits are merged). Returns unwritten counts."""
    dropped: Counter = Counter()
    with warnings.catch_warnings():  # the per-writer warning is replaced by the printed summary
        warnings.simplefilter("ignore")
        if fmt == "yolo":
            for name, items in splits.items():
                write_yolo(items, dst, class_names, split=name, image_mode=image_mode)
                dropped += Counter(o.type for a in items for o in a.objects if o.type not in class_names)
            return dropped
        merged = [a for items in splits.values() for a in items]
        seen: dict[str, str] = {}
        for a in merged:
            if seen.setdefault(a.image_id, a.image_path) != a.image_path:
                hint = ""
                if len(splits) > 1:  # YOLO's splits, merged: one split at a time keeps both images
                    hint = (
                        f" ({fmt.upper()} holds one set, so the splits {', '.join(splits)} are merged: convert "
                        "one split at a time with --split NAME, each to its own --dst)"
                    )
                raise ValueError(
                    f"two source images share the id {a.image_id!r}: {seen[a.image_id]}, {a.image_path}{hint}"
                )
        if fmt == "kitti":
            dropped += Counter(o.type for a in merged for o in a.objects if o.type not in class_names)
            keep = [
                ImageAnnotation(
                    a.image_path, a.width, a.height, [o for o in a.objects if o.type in class_names]
                )
                for a in merged
            ]
            write_kitti_dir(keep, dst, "training", image_mode=image_mode)
        else:
            placed = []
            for a in merged:
                target = dst / "images" / (a.image_id + Path(a.image_path).suffix.lower())
                place_image(a.image_path, target, image_mode)
                placed.append(ImageAnnotation(str(target), a.width, a.height, a.objects))
            # the writer's own count: a COCO crowd (DontCare of a category) is written when its category is
            dropped += write_coco(placed, dst / "annotations.json", class_names)
    return dropped


def kitti_name_problems(fmt: str, src: Path, class_names: list[str], from_option: bool) -> list[str]:
    """Where each class name that cannot be a KITTI type (empty, or holding whitespace: KITTI lines split on it)
    comes from: ``--classes``, the COCO JSON's ``categories[i]`` or the YOLO yaml's ``names[i]``, with the
    underscore name to use instead. Converted labels keep their classes' names (only ``predict`` writes
    :func:`domains.driving.formats.kitti_type_name`'s underscores), so these are refused before anything is
    written."""
    bad = [name for name in class_names if not name or any(c.isspace() for c in name)]
    if not bad:
        return []
    where: dict[str, str] = {}
    if not from_option and fmt == "coco":
        import json

        try:
            categories = json.loads(src.read_text(encoding="utf-8")).get("categories", [])
        except (ValueError, OSError, AttributeError):  # read once already: not expected
            categories = []
        for i, cat in enumerate(categories):
            if isinstance(cat, dict) and cat.get("name") in bad:
                where.setdefault(cat["name"], f"{src}:categories[{i}]")
    elif not from_option and fmt == "yolo":
        for i, name in enumerate(yolo_names(src)):
            where.setdefault(name, f"{src}:names[{i}]")
    out = []
    for name in bad:
        origin = "--classes" if from_option else where.get(name, str(src))
        fix = "_".join(name.split())
        suggestion = f"rename it {fix!r}" if fix else "give it a name"
        out.append(f"{origin}: class {name!r} cannot be a KITTI type (KITTI lines split on whitespace): {suggestion}")
    return out


def sequence_map_place(fmt: str, src: Path, split: str | None) -> tuple[Path, Path | None]:
    """Where the source's sequence map is looked for: ``(split_root, source_file)`` of
    :func:`~domains.driving.common.find_sequence_groups` (KITTI: its split folder; COCO / YOLO: beside the file)."""
    if fmt == "kitti":
        return resolve_kitti_split(src, split or "training"), None
    return src.parent, src


def source_map(fmt: str, src: Path, split: str | None, splits: dict[str, list[ImageAnnotation]]):
    """:func:`source_sequence_map` of the source, from :func:`sequence_map_place`."""
    ids = [a.image_id for items in splits.values() for a in items]
    split_root, source_file = sequence_map_place(fmt, src, split)
    return source_sequence_map(split_root, ids, source_file=source_file)


def sequence_map_files(split_root: Path, source_file: Path | None = None) -> list[Path]:
    """The files :func:`~domains.driving.common.find_sequence_groups` reads the drives from (none: no map), in
    its order: ``<source stem>.sequences.txt``, else the first of :func:`sequence_map_candidates` all there.
    For :func:`held_source_files`: a map reached through a link lies anywhere, and ``--overwrite`` deleted it."""
    if source_file is not None and (beside := source_file.with_suffix(".sequences.txt")).is_file():
        return [beside]
    return next((list(files) for files in sequence_map_candidates(split_root) if all(f.is_file() for f in files)), [])


def yolo_list_files(dataset_yaml: Path, splits: Sequence[str]) -> list[Path]:
    """The ``.txt`` image lists (``train: lists/train.txt``) that ``splits`` of a YOLO yaml name, which
    :func:`~domains.driving.formats.read_yolo` read: they may lie anywhere (an absolute entry, the ``path:``
    root), so they are checked as the images are (:func:`held_source_files`)."""
    data = load_dataset_yaml(dataset_yaml)
    return [
        entry
        for split in splits
        for entry in _yolo_sources(data, split, dataset_yaml)
        if entry.is_file() and entry.suffix == ".txt"  # what read_yolo reads as a list
    ]


def summary(
    src_fmt: str,
    dst_fmt: str,
    splits: dict[str, list[ImageAnnotation]],
    class_names: list[str],
    log: DropLog,
    not_written: Counter,
) -> str:
    items = [a for v in splits.values() for a in v]
    per_class = Counter(o.type for a in items for o in a.objects if o.type in class_names)
    per_split = ", ".join(f"{k} {len(v)}" for k, v in splits.items())
    lines = [
        (
            f"converted {src_fmt} -> {dst_fmt}: {len(items)} images ({per_split}), "
            f"{sum(per_class.values())} objects"
        ),
        "| class | objects |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {per_class.get(name, 0)} |" for name in class_names]
    written = sum(1 for a in items if not any(o.type in class_names for o in a.objects))
    lines.append(f"images without objects written: {written}")
    lines.append(f"dropped while reading: {dict(log.counts) or 'none'}")
    for kind, examples in log.examples.items():
        lines += [f"  {kind}: {e}" for e in examples]
    lines.append(f"not written (type not in --classes): {dict(not_written) or 'none'}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m domains.driving.convert", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--from", dest="src_format", choices=FORMATS, required=True)
    parser.add_argument("--to", dest="dst_format", choices=FORMATS, required=True)
    parser.add_argument("--src", required=True, help="KITTI root, COCO JSON or YOLO dataset yaml")
    parser.add_argument("--dst", required=True, help="destination folder (must be empty or absent)")
    parser.add_argument(
        "--classes",
        nargs="+",
        default=None,
        help="types to write, in class-index order (default: all types in the source)",
    )
    parser.add_argument(
        "--split",
        default=None,
        help="KITTI: split folder (default training); YOLO: one split (default: all present)",
    )
    parser.add_argument(
        "--images-root", default=None, help="COCO: folder the file_name entries are relative to"
    )
    parser.add_argument(
        "--strict", action="store_true", help="bad boxes / unknown classes are errors, not dropped"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty destination")
    parser.add_argument("--link", action="store_true", help="hard-link images instead of copying them")
    return parser


#: the exit status of bad input, as argparse's own errors and the instance converter (the README says 2)
INPUT_ERROR = 2


def source_overlap(src: str | Path, dst: str | Path, new_file_inside: bool = False) -> str | None:
    """Why ``--dst`` cannot be written, or None: it is ``--src``, holds it or lies inside it. ``--overwrite``
    replaces the destination whole, so one holding the source deleted it (and everything beside it); output
    inside the source mixes into what is read. ``new_file_inside``: a destination inside the source that does
    not exist yet is fine (the instance converter's JSON, written beside the images it names). Compared as
    given (absolute) and resolved (symlinks followed), so a link on either side is no way round. Both
    converters ask it before reading or writing anything."""
    given = (Path(os.path.abspath(src)), Path(os.path.abspath(dst)))
    real = (Path(src).resolve(), Path(dst).resolve())
    for s, d in (given, real):
        if s == d:
            relation = "is"
        elif s.is_relative_to(d):
            relation = "holds"
        elif d.is_relative_to(s) and not (new_file_inside and not os.path.lexists(dst)):
            relation = "lies inside"
        else:
            continue
        detail = f" (resolved: {d} and {s})" if (s, d) == real and real != given else ""
        detail += " and exists" if new_file_inside and relation == "lies inside" else ""
        outside = "a new file name or a --dst outside --src" if new_file_inside else "a --dst outside --src"
        return (
            f"--dst {dst} {relation} --src {src}{detail}: the destination is replaced whole (--overwrite), "
            f"so it must not hold the source nor be part of it; choose {outside}"
        )
    return None


def source_files(fmt: str, src: Path, split: str | None, splits: dict[str, list[ImageAnnotation]]) -> list[Path]:
    """The files a conversion read: the source (a COCO JSON, a YOLO yaml), every image and its label file
    (KITTI's ``label_2/*.txt``, YOLO's beside ``images/`` in ``labels/``), YOLO's ``.txt`` image lists and the
    sequence map (:func:`sequence_map_files`), for :func:`held_source_files`."""
    images = [Path(a.image_path) for items in splits.values() for a in items]
    if fmt == "kitti":
        labels = kitti_label_files(resolve_kitti_split(src, split or "training"))
    elif fmt == "yolo":
        labels = [p for p in map(yolo_label_path, images) if p.is_file()] + yolo_list_files(src, list(splits))
    else:
        labels = []
    return [src, *images, *labels, *sequence_map_files(*sequence_map_place(fmt, src, split))]


def kitti_label_files(split_root: Path) -> list[Path]:
    """Every ``.txt`` in a KITTI split's ``label_2/`` (any case, hidden ones too: what a reader may read)."""
    folder = split_root / "label_2"
    return [p for p in folder.iterdir() if p.suffix.lower() == ".txt"] if folder.is_dir() else []


def held_source_files(src: str | Path, dst: str | Path, files: list[Path], what: str = "--dst") -> str | None:
    """Why ``--dst`` (``what`` names it: the instance converter's sequence map beside it) cannot be replaced, or
    None: it is or holds a file the conversion reads. The source's images, labels, image lists and sequence map
    need not lie under ``--src`` (:func:`source_overlap` guards that path only): a COCO JSON's images root is
    its folder, a YOLO yaml names its ``path`` root and its lists, a link in a KITTI root leads elsewhere, and
    ``--overwrite`` deleted them with the destination. Asked once the source is read, before anything is
    written; compared as given (absolute) and resolved (symlinks followed), as :func:`source_overlap` does."""
    if not os.path.lexists(dst):  # nothing lies in it
        return None
    roots = (Path(os.path.abspath(dst)), Path(dst).resolve())
    held: dict[Path, Path] = {}  # resolved -> as read
    for file in files:
        real = file.resolve()
        if Path(os.path.abspath(file)).is_relative_to(roots[0]) or real.is_relative_to(roots[1]):
            held.setdefault(real, file)
    if not held:
        return None
    real, first = min(held.items(), key=lambda item: item[1])
    resolved = f" (resolved: {real})" if real != Path(os.path.abspath(first)) else ""
    count = f"{len(held)} file{'s' if len(held) > 1 else ''}"
    return (
        f"{what} {dst} holds {count} the conversion reads from --src {src}, e.g. {first}{resolved}: the "
        "destination is replaced whole (--overwrite), so it must not hold the source's images, labels, image "
        "lists or sequence map; choose a --dst apart from them"
    )


def put_in_place(tmp: Path, dst: Path, overwrite: bool = False) -> Path | None:
    """Rename the written ``tmp`` to ``dst``. Returns the destination it replaced (``--overwrite``), renamed
    aside to ``.<name>.old-*``, for the caller to delete once the output is in place, or None.

    Without ``overwrite``, ``dst`` was absent or an empty folder when the run started. One that another run
    filled or made meanwhile (two converters to one ``--dst`` at once) is refused, never replaced: it was renamed
    aside and deleted, and both runs reported their conversion. The rename itself refuses it (no check
    beforehand that a third run could slip past): it fails onto a folder that is not empty or onto a file (on
    Windows onto anything), and the empty folder given is removed first.

    A final rename that fails otherwise (permissions, a full or read-only disk) puts the folder it replaces
    back under its name (:func:`_restore`): it was left hidden as ``.<name>.old-*`` (or the empty folder gone)
    while the error said nothing was written."""
    if overwrite and dst.exists():
        old = dst.with_name(f".{dst.name}.old-{tmp.name.split('.')[-2]}")
        os.rename(dst, old)
        try:
            os.rename(tmp, dst)
        except OSError as err:
            _restore(tmp, dst, err, lambda: os.rename(old, dst), f"renamed aside to {old}")
        except BaseException:  # stopped (Ctrl-C) between the two renames: the old one goes back first
            os.rename(old, dst)
            raise
        return old
    mode = dst.stat().st_mode if dst.is_dir() and not dst.is_symlink() else None  # an empty folder given
    try:
        if mode is not None:
            dst.rmdir()  # fails where another run filled it
        os.rename(tmp, dst)
    except OSError as e:
        if not os.path.lexists(dst):  # nothing there, or the empty folder given, removed first: made again
            undo = (lambda: (os.mkdir(dst), os.chmod(dst, mode))) if mode is not None else (lambda: None)
            _restore(tmp, dst, e, undo, "the empty folder, removed first")
        if dst.is_dir() and not dst.is_symlink() and not any(dst.iterdir()):  # still empty: its rmdir failed
            _restore(tmp, dst, e, lambda: None, "")
        raise FileExistsError(
            f"--dst {dst}: another run wrote it while this one converted (it was empty or absent at the "
            "start); it is left as that run made it, and this run's output removed: give another --dst, or "
            "--overwrite to replace it"
        ) from e
    return None


def _restore(tmp: Path, dst: Path, err: OSError, undo: Callable[[], object], held: str) -> NoReturn:
    """After the rename of ``tmp`` to ``dst`` failed with ``err``: ``undo()`` puts back what ``dst`` was
    (``held`` says where it is meanwhile), then an OSError naming both paths is raised; if putting it back
    fails too, one saying where the old destination is now."""
    why = err.strerror or err
    try:
        undo()
    except OSError as failed:
        raise OSError(
            f"could not rename the output {tmp} to --dst {dst} ({why}), nor put back the destination it replaces, "
            f"{held} ({failed}): put it back under {dst} yourself"
        ) from err
    raise OSError(f"could not rename the output {tmp} to --dst {dst} ({why}); --dst is left as it was") from err


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    src, dst = Path(args.src), Path(args.dst)
    if not src.exists():
        print(f"error: {src}: source not found", file=sys.stderr)
        return INPUT_ERROR
    if problem := source_overlap(src, dst):
        print(f"error: {problem}\nnothing was read or written", file=sys.stderr)
        return INPUT_ERROR
    if dst.is_symlink():  # the output would replace the link, not fill its target: never written through one
        print(
            f"error: --dst {dst} is a symbolic link (to {os.readlink(dst)}): the output is renamed into place, "
            "which would replace the link with a folder here, and its target is never replaced through it; give "
            "the target itself as --dst, or remove the link\nnothing was read or written",
            file=sys.stderr,
        )
        return INPUT_ERROR
    if dst.exists() and (dst.is_file() or any(dst.iterdir())) and not args.overwrite:
        print(
            f"error: {dst}: destination exists and is not empty (use --overwrite to replace it)",
            file=sys.stderr,
        )
        return INPUT_ERROR
    log = DropLog(strict=args.strict)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_folder(dst.parent, dst.name)
    try:
        splits, source_classes = read_source(
            args.src_format, src, log, args.split, args.images_root, args.classes
        )
        class_names = list(args.classes) if args.classes else source_classes
        if args.dst_format == "yolo" and not args.classes:  # YOLO has no ignore regions: not a class to learn
            class_names = [name for name in class_names if name != "DontCare"]
        if not class_names:
            dropped = f"; every object was dropped while reading, {log.summary()}" if log.total else ""
            raise ValueError(f"{src}: no classes found; pass --classes{dropped}")
        if args.dst_format == "kitti" and (bad := kitti_name_problems(
            args.src_format, src, class_names, from_option=bool(args.classes)
        )):  # fmt: skip
            raise ValueError("\n".join(bad))
        if problem := held_source_files(src, dst, source_files(args.src_format, src, args.split, splits)):
            raise ValueError(problem)
        not_written = write_destination(
            args.dst_format, splits, tmp, class_names, "hardlink" if args.link else "copy"
        )
        sequences, sequence_note = source_map(args.src_format, src, args.split, splits)
        if sequences is not None:  # where every destination's reader looks
            (tmp / "sequences.txt").write_text(sequences, encoding="utf-8")
        old = put_in_place(tmp, dst, args.overwrite)  # the destination replaced, renamed aside
    except (LabelFormatError, ValueError, FileNotFoundError, OSError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"error: {e}\nnothing was written to {dst}", file=sys.stderr)
        return INPUT_ERROR
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:  # the output is in place: a folder that cannot be deleted is said, not hidden
        try:
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        except OSError as e:
            print(
                f"warning: wrote {dst}, but could not delete the destination it replaced, now {old} ({e}): "
                "delete it yourself",
                file=sys.stderr,
            )
    print(summary(args.src_format, args.dst_format, splits, class_names, log, not_written))
    print(sequence_note + (f", written to {dst / 'sequences.txt'}" if sequences is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
