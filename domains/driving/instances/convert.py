r"""Convert instance masks (KITTI layout with instance maps, or panoptic PNGs) to a COCO instance JSON.

    python -m domains.driving.instances.convert --from kitti --src data/driving/synthetic_kitti \
        --dst data/driving/synthetic_instances.json [--classes Car Pedestrian Cyclist] [--strict] \
        [--class-map Van=Car Person_sitting=Pedestrian]
    python -m domains.driving.instances.convert --from png --src cityscapes_like/ --dst out.json --divisor 1000
    python -m domains.driving.instances.convert --from png --src kitti_step/ --dst out.json \
        --class-ids 11=Pedestrian 13=Car          # KITTI-STEP's Cityscapes train ids (as data.png_class_ids)

``--from png`` reads ``src/images/`` + ``src/instances/``, or the KITTI-STEP download as it comes (``--split``
train or val): ``src/panoptic_maps/<split>/<seq>/<frame>.png`` with the images in
``src/images/<split>/<seq>/`` (DeepLab2's layout) or ``src/training/image_02/<seq>/`` (the KITTI tracking
download); every sequence folder is a drive, written to the sequence map, and frames that repeat across
sequences are named ``<seq>__<frame>``, as the instance data module names them when it reads the JSON. A
Cityscapes download is read as it comes (``src/leftImg8bit/`` + ``src/gtFine/``, its train and val
``*_gtFine_instanceIds.png``), every city a drive in the sequence map.

Masks are written as COCO compressed RLE (exact: reading the JSON back gives the same pixels), with ``bbox``
and ``area`` from the RLE (``faster_coco_eval``'s mask API). Images stay where they are: ``file_name`` is
relative to the JSON's folder when the image lies under it, else absolute. A DontCare / crowd region is
written as one ``iscrowd: 1`` annotation per class category (COCO evaluation ignores a detection in a crowd of
its own category only, so standard tools ignore every class's there, as KITTI and the suite do), each marked
with the region's ``dontcare_region`` number so the suite reads them back as one region of every class; the
``DontCare`` category is still listed (last), with no annotation. The source's sequence map (drives) is
written beside the JSON as ``<stem>.sequences.txt``, which the instance data module reads, so the converted
set still splits by drive. Both are written whole and put in place together, after the JSON; a symbolic link at
either name is refused (a link's target is never written through it), as is either name holding a file the
conversion reads (an image, a label, the source's sequence map).

Types are renamed by ``--class-map`` before they are matched to ``--classes`` (default: the training configs'
``class_map``, ``Van=Car Person_sitting=Pedestrian``; ``--class-map`` with no pairs keeps every name), so a
JSON written for ``--classes Car Pedestrian Cyclist`` holds the vans as cars, the objects training on the KITTI
folder itself uses.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import faster_coco_eval.core.mask as mask_api

from domains.driving.classes import DETECTION_CLASS_MAP, DONTCARE, KITTI_TYPES
from domains.driving.common import is_cityscapes_root, sequence_map_text, source_sequence_map
from domains.driving.convert import held_source_files, kitti_label_files, sequence_map_files, source_overlap
from domains.driving.formats import (
    DropLog,
    LabelFormatError,
    dontcare_annotations,
    name_repeated_stems,
    resolve_kitti_split,
)
from domains.driving.instances.data import (
    InstanceAnnotation,
    read_cityscapes_instances,
    read_kitti_instances,
    read_png_instances,
)
from shared.files import visible_entries, written_whole


def write_coco_instances(
    annotations: Sequence[InstanceAnnotation],
    json_path: str | Path,
    class_names: Sequence[str],
    class_map: dict[str, str] | None = None,
) -> Counter:
    """Write a COCO instance JSON (category ids 1..C in ``class_names`` order, DontCare last).
    DontCare in ``class_names`` is left out of the numbering: its regions are always written, each as one
    crowd per class category (:func:`~domains.driving.formats.dontcare_annotations`: COCOeval ignores every
    class's detections there; of the DontCare category when there is no class), DontCare listed once, last
    (two DontCare categories, one never used, were written for ``--classes Car DontCare``).

    ``class_map`` renames types first (``{"Van": "Car"}``), as the data modules' ``class_map`` does, so the
    JSON holds the objects training would use. Returns the count of objects not written (renamed type neither in
    ``class_names`` nor DontCare).
    """
    class_map = dict(class_map or {})
    path = Path(json_path)
    root = path.parent.resolve()
    cat_ids = {name: i + 1 for i, name in enumerate(n for n in class_names if n != DONTCARE)}
    crowd_id = len(cat_ids) + 1
    every_class = list(cat_ids.values()) or [crowd_id]
    dropped: Counter = Counter()
    images, anns = [], []
    regions = 0
    for image_id, rec in enumerate(annotations, start=1):
        file = Path(rec.image_path).resolve()
        rel = Path(os.path.relpath(file, root))
        file_name = rel.as_posix() if not rel.as_posix().startswith("..") else str(file)
        entry = {"id": image_id, "file_name": file_name, "width": rec.width, "height": rec.height}
        if rec.as_stored:  # its masks are on the stored pixels: read it back as stored (EXIF orientation aside)
            entry["as_stored"] = True
        images.append(entry)
        for obj in rec.objects:
            name = class_map.get(obj.type, obj.type)
            crowd = name == DONTCARE
            if not crowd and name not in cat_ids:
                dropped[name] += 1
                continue
            counts = obj.rle["counts"]
            ann = {
                "id": len(anns) + 1,
                "image_id": image_id,
                "category_id": crowd_id if crowd else cat_ids[name],
                "segmentation": {
                    "size": list(obj.rle["size"]),
                    "counts": counts.decode() if isinstance(counts, bytes) else counts,
                },
                "bbox": [float(v) for v in mask_api.toBbox(obj.rle)],
                "area": int(mask_api.area(obj.rle)),
                "iscrowd": int(crowd),
            }
            if crowd:  # a region of every class: one crowd per class category, as COCOeval needs
                regions += 1
                anns += dontcare_annotations(ann, regions, every_class, len(anns) + 1)
            else:
                anns.append(ann)
    categories = [{"id": i, "name": n, "supercategory": "road_user"} for n, i in cat_ids.items()]
    categories.append({"id": crowd_id, "name": DONTCARE, "supercategory": "ignore"})
    data = {
        "info": {"description": "written by domains.driving.instances.convert", "class_map": class_map},
        "images": images,
        "annotations": anns,
        "categories": categories,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with written_whole(path) as tmp:  # a failure leaves no half-written JSON
        tmp.write_text(json.dumps(data), encoding="utf-8")
    return dropped


KITTI_STEP_SPLITS = ("train", "val")


def is_kitti_step(root: Path) -> bool:
    """Whether ``root`` is a KITTI-STEP download (``panoptic_maps/``), not the flat ``images/`` + ``instances/``."""
    return (root / "panoptic_maps").is_dir() and not (root / "instances").is_dir()


def read_kitti_step(
    root: Path, split: str, class_ids: dict[int, str] | None, divisor: int, log: DropLog
) -> tuple[list[InstanceAnnotation], list[str]]:
    """The KITTI-STEP download's ``split``: ``panoptic_maps/<split>/<seq>/<frame>.png`` with their images in
    ``images/<split>/<seq>/`` or ``training/image_02/<seq>/``. Each sequence is read by
    :func:`read_png_instances` from its two folders, so every check and message is that reader's. Returns the
    annotations (frames that repeat across sequences named ``<seq>__<frame>``) and each one's sequence."""
    maps_root = root / "panoptic_maps" / split
    if not maps_root.is_dir():
        found = sorted(p.name for p in visible_entries(root / "panoptic_maps") if p.is_dir())
        found_text = ", ".join(found) or "none"
        raise FileNotFoundError(f"{maps_root}: no such KITTI-STEP split (--split; found: {found_text})")
    image_roots = (root / "images" / split, root / "training" / "image_02")
    sequences = sorted(p for p in visible_entries(maps_root) if p.is_dir())
    if not sequences:
        raise FileNotFoundError(f"{maps_root}: no sequence folders (KITTI-STEP: panoptic_maps/{split}/<seq>/*.png)")
    items: list[InstanceAnnotation] = []
    groups: list[str] = []
    for seq in sequences:
        image_dir = next((r / seq.name for r in image_roots if (r / seq.name).is_dir()), None)
        if image_dir is None:
            tried = " or ".join(str(r / seq.name) for r in image_roots)
            raise FileNotFoundError(f"{seq}: the images of sequence {seq.name} are not in {tried}")
        read = read_png_instances(seq, class_ids, divisor=divisor, log=log, folders=(image_dir, seq))
        items += read
        groups += [seq.name] * len(read)
    name_repeated_stems(items, str(maps_root))  # 0000/000000 and 0001/000000: 0000__000000, 0001__000000
    return items, groups


def _parse_class_map(
    pairs: Sequence[str], parser: argparse.ArgumentParser, option: str = "--class-map", form: str = "TYPE=CLASS",
    example: str = "Van=Car",
) -> dict[str, str]:
    """``["Van=Car", ...]`` -> ``{"Van": "Car", ...}``; a pair without one ``=`` is a usage error naming it."""
    out = {}
    for pair in pairs:
        source, sep, target = pair.partition("=")
        if not sep or not source or not target or "=" in target:
            parser.error(f"{option}: {pair!r} is not {form} (e.g. {example})")
        out[source] = target
    return out


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="python -m domains.driving.instances.convert",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--from", dest="source", choices=("kitti", "png"), required=True)
    parser.add_argument("--src", type=Path, required=True, help="KITTI root or png-layout folder")
    parser.add_argument("--dst", type=Path, required=True, help="COCO JSON to write")
    parser.add_argument(
        "--classes", nargs="+", default=None, help="categories in id order (default: the types present)"
    )
    parser.add_argument(
        "--class-map",
        nargs="*",
        metavar="TYPE=CLASS",
        default=[f"{k}={v}" for k, v in DETECTION_CLASS_MAP.items()],
        help="renames applied before --classes, as the configs' data.class_map (default: %(default)s; "
        "no pairs: keep every name)",
    )
    parser.add_argument("--divisor", type=int, default=1000, help="png layout: class multiplier")
    parser.add_argument(
        "--class-ids",
        nargs="+",
        metavar="ID=NAME",
        default=None,
        help="png layout: the class ids of the maps (as the configs' data.png_class_ids; default: Cityscapes' "
        "ids, 24 person, 26 car, ...; KITTI-STEP: 11=Pedestrian 13=Car)",
    )
    parser.add_argument(
        "--split",
        choices=KITTI_STEP_SPLITS,
        default="train",
        help="png layout, a KITTI-STEP download (panoptic_maps/<split>/): the split to convert (default: train)",
    )
    parser.add_argument("--strict", action="store_true", help="stop at the first bad map or id")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --dst (never --src, a folder holding it or an existing file in it)",
    )
    args = parser.parse_args(argv)
    class_map = _parse_class_map(args.class_map, parser)
    class_ids = None
    if args.class_ids is not None:
        named = _parse_class_map(args.class_ids, parser, option="--class-ids", form="ID=NAME", example="13=Car")
        if bad := [k for k in named if not k.isdigit()]:
            parser.error(f"--class-ids: {bad[0]!r} is not a class id (a number, e.g. 13=Car)")
        class_ids = {int(k): v for k, v in named.items()}
    if problem := source_overlap(args.src, args.dst, new_file_inside=True):  # a JSON may go beside its images
        parser.error(problem)
    sequences = args.dst.with_suffix(".sequences.txt")  # the source's drives, beside the JSON
    for path, what in ((args.dst, "--dst"), (sequences, "the sequence map written beside --dst,")):
        if path.is_symlink():  # written whole, the file would replace the link; never written through it
            parser.exit(
                2, f"error: {what} {path} is a symbolic link (to {os.readlink(path)}): the converter writes files, "
                "not through links; remove the link or give another --dst\nnothing was read or written\n",
            )  # fmt: skip
    if args.dst.exists() and not args.overwrite:
        parser.error(f"{args.dst} exists (use --overwrite)")
    log = DropLog(strict=args.strict)
    step_groups = None  # a KITTI-STEP download's sequence folders or Cityscapes' cities: its drives
    groups_what = "KITTI-STEP's sequence folders"
    try:
        if args.source == "kitti":
            items = read_kitti_instances(args.src, log=log)
        elif is_kitti_step(args.src):
            items, step_groups = read_kitti_step(args.src, args.split, class_ids, args.divisor, log)
        elif is_cityscapes_root(args.src):
            items, step_groups = read_cityscapes_instances(args.src, class_ids, args.divisor, log=log)
            groups_what = "Cityscapes' cities"
        else:
            items = read_png_instances(args.src, class_ids, divisor=args.divisor, log=log)
    except (LabelFormatError, FileNotFoundError) as err:
        hint = ""
        if args.source == "png" and not (args.src / "images").is_dir() and not is_kitti_step(args.src):
            hint = (
                " (or a KITTI-STEP download: panoptic_maps/<split>/<seq>/*.png with the images in "
                "images/<split>/<seq>/ or training/image_02/<seq>/; or a Cityscapes download: leftImg8bit/ + "
                "gtFine/)"
            )
        parser.exit(2, f"error: {err}{hint}\n")
    # the images (and KITTI's labels and maps) may lie outside --src through a link in it: never replaced
    read_files = [Path(p) for a in items for p in (a.image_path, a.instance_map) if p is not None]
    split_root = resolve_kitti_split(args.src) if args.source == "kitti" else args.src
    if args.source == "kitti":
        read_files += kitti_label_files(split_root)
    if step_groups is None:  # its drives come from a map file (KITTI-STEP's and Cityscapes' from the folders)
        read_files += sequence_map_files(split_root)
    for path, what in ((args.dst, "--dst"), (sequences, "the sequence map written beside --dst,")):
        if problem := held_source_files(args.src, path, read_files, what=what):
            parser.exit(2, f"error: {problem}\nnothing was written to {args.dst}\n")
    log.report(f"convert --from {args.source} {args.src}", stacklevel=2)
    present = {class_map.get(o.type, o.type) for a in items for o in a.objects} - {DONTCARE}
    classes = args.classes or [t for t in KITTI_TYPES if t in present] + sorted(present - set(KITTI_TYPES))
    classes = [c for c in classes if c != DONTCARE]  # its regions are always written, as crowds
    # the source's drives go beside the JSON (<stem>.sequences.txt), so the converted set still splits by
    # drive; read before anything is written, so a bad map leaves no JSON behind
    if not any(class_map.get(o.type, o.type) in classes for a in items for o in a.objects):
        hint = ""
        if args.source == "png":
            hint = " (are these the maps' class ids? --class-ids: KITTI-STEP's are 11=Pedestrian 13=Car)"
        parser.exit(
            2, f"error: {args.src}: no object of {classes or 'any class'} in its {len(items)} images{hint}; "
            f"nothing was written to {args.dst}\n",
        )  # fmt: skip
    ids = [a.image_id for a in items]
    try:
        if step_groups is not None:
            text = sequence_map_text(ids, step_groups)
            sequence_note = f"sequence map: {len(set(step_groups))} sequences ({groups_what})"
        else:
            text, sequence_note = source_sequence_map(split_root, ids)
    except ValueError as err:  # LabelFormatError included
        parser.exit(2, f"error: {err}\nnothing was written to {args.dst}\n")
    if text is not None:
        sequences.parent.mkdir(parents=True, exist_ok=True)  # the JSON's folder, made by its writer too
        with written_whole(sequences) as sequences_tmp:  # in place just after the JSON; gone if that fails
            sequences_tmp.write_text(text, encoding="utf-8")
            dropped = write_coco_instances(items, args.dst, classes, class_map)
    else:
        dropped = write_coco_instances(items, args.dst, classes, class_map)
        if sequences.is_file():  # an older conversion's map would not match these images
            sequences.unlink()
    n = sum(len(a.objects) for a in items) - sum(dropped.values())
    renamed = Counter(
        f"{o.type}->{class_map[o.type]}" for a in items for o in a.objects if o.type in class_map
    )
    renamed_note = f"; renamed by --class-map: {dict(renamed)}" if renamed else ""
    skipped = f"; not written (type not in --classes): {dict(dropped)}" if dropped else ""
    print(f"wrote {args.dst}: {len(items)} images, {n} masks, categories {classes}{renamed_note}{skipped}")
    print(sequence_note + (f", written to {sequences}" if text is not None else ""))
    return args.dst


if __name__ == "__main__":
    main()
