"""Instance-segmentation data: three on-disk layouts read into per-object COCO RLE masks, augmentation that moves
masks (and the boxes taken from them) together, and the Lightning data module.

Layouts:

* ``kitti``: the synthetic KITTI layout (and any KITTI-style set with instance maps):
  ``training/{image_2,label_2,instance}/``; ``instance/<id>.png`` (uint16) holds ``k`` where the object of the
  ``k``-th non-blank line of ``label_2/<id>.txt`` is visible (DontCare lines included, 0 = no object).
* ``coco``: a COCO instance JSON: polygons, uncompressed or compressed RLE; ``iscrowd`` regions are ignored.
* ``png``: Cityscapes / KITTI-style panoptic id maps: ``images/<stem>.*`` and ``instances/<stem>.png`` where a
  pixel holds ``class_id * divisor + instance`` (Cityscapes ``*_instanceIds.png``: divisor 1000; values below the
  divisor are regions of a class without instance ids: crowds, ignored when the class is listed); or a
  Cityscapes download as it comes (``leftImg8bit/`` + ``gtFine/``: :func:`read_cityscapes_instances`).

Every mask is kept as a COCO compressed RLE (``faster_coco_eval``'s mask API, the COCO tools already in the
dependency set): a few hundred bytes per object, so a whole split's annotations sit in memory and travel to
loader workers cheaply; a mask is decoded only when its image is loaded. The data module splits a ``kitti``
set on its file names, then reads the maps of the splits a stage uses (fit: train and val; validate: val;
test: test) for their ids alone: an object's mask is where its image's map holds its id, taken from the map
when the image is loaded (an RLE per object cost most of setup).

Bad input: an instance map whose size differs from its image is an error naming both files; ids with no label
line, empty or malformed COCO segmentations, polygons more than 1 px outside the image, unknown classes and
png maps with no value >= the divisor (8-bit maps, plain instance ids: no object) are dropped and counted in
one :class:`LabelWarning` per reader (``strict``: the first one raises :class:`LabelFormatError` naming the
file and line / annotation index and id).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from inspect import signature
from pathlib import Path
from typing import Literal

import albumentations as A
import faster_coco_eval.core.mask as mask_api
import numpy as np
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import Dataset
from torchvision.ops import masks_to_boxes

from domains.driving.classes import DONTCARE
from domains.driving.common import (
    CITYSCAPES_IMAGE_SUFFIX,
    cityscapes_splits,
    data_source,
    is_cityscapes_root,
    read_annotated_rgb,
    read_label_map,
    sort_objects,
    split_by_sequence,
    to_image_tensor,
)
from domains.driving.detection.data import DetectorDataModule, ignore_label
from domains.driving.formats import (
    BOX_TOLERANCE_PX,
    DropLog,
    ImageAnnotation,
    LabelFormatError,
    _coco_images,
    _label_lines,
    _parse_int,
    _require,
    crowd_class,
    image_size,
    images_by_stem,
    kitti_frames,
    repeated_dontcare,
    resolve_kitti_split,
)
from shared.data import group_split
from shared.files import visible_entries

#: Cityscapes label ids of its instance classes, named as the suite's classes where they are the same thing
#: (person -> Pedestrian, rider -> Cyclist); the others keep Cityscapes' names and are dropped unless listed in
#: class_names.
CITYSCAPES_INSTANCE_CLASSES = {
    24: "Pedestrian",
    25: "Cyclist",
    26: "Car",
    27: "Truck",
    28: "Bus",
    31: "Train",
    32: "Motorcycle",
    33: "Bicycle",
}
#: suffixes stripped from file stems so an image and its map pair up (Cityscapes names both by the frame)
STEM_SUFFIXES = ("_leftImg8bit", "_gtFine_instanceIds", "_instanceIds")


@dataclass
class InstanceObject:
    """One object: its type name, its mask as a COCO compressed RLE and where it came from (for messages).
    ``crowd_class``: a ``DontCare`` region that is a crowd of one class (COCO ``iscrowd``, a Cityscapes class
    region without instances), which ignores detections of that class only; None: of every class (KITTI).
    ``rle`` None: the mask is where its image's ``instance_map`` holds ``map_id``, read when the image
    loads."""

    type: str
    rle: dict | None
    source: str = ""
    crowd_class: str | None = None
    map_id: int = 0


@dataclass
class InstanceAnnotation(ImageAnnotation):
    """One image and its object masks (``image_id`` is the file stem, as for detection, less Cityscapes'
    suffixes). ``instance_map``: the KITTI instance map its objects' masks are read from when it loads (their
    ``map_id``), when they hold no RLE."""

    objects: list[InstanceObject] = field(default_factory=list)
    instance_map: str | None = None

    @property
    def image_id(self) -> str:
        return self.name or _stem(Path(self.image_path))


def _stem(path: Path) -> str:
    stem = path.stem
    for suffix in STEM_SUFFIXES:
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def encode_masks(masks: np.ndarray) -> list[dict]:
    """(K, H, W) binary masks -> K COCO compressed RLEs."""
    if len(masks) == 0:
        return []
    return mask_api.encode(np.asfortranarray(np.moveaxis(masks.astype(np.uint8), 0, -1)))


def decode_masks(rles: Sequence[dict], height: int, width: int) -> np.ndarray:
    """K COCO RLEs -> (K, H, W) uint8 masks (``(0, H, W)`` for none)."""
    if not rles:
        return np.zeros((0, height, width), np.uint8)
    return np.ascontiguousarray(np.moveaxis(mask_api.decode(list(rles)), -1, 0))


def _visible(occlusion: str) -> bool:
    """Whether a KITTI label's occlusion field says the object is in view (0 fully, 1 partly)."""
    try:
        return float(occlusion) < 2
    except ValueError:
        return False


def _check_map_size(map_path: Path, label: np.ndarray, image_path: Path, size: tuple[int, int]) -> None:
    if label.shape != size:
        raise LabelFormatError(
            map_path,
            None,
            f"instance map is {label.shape[1]}x{label.shape[0]} but its image {image_path} is "
            f"{size[1]}x{size[0]}",
        )


def _finish(log: DropLog, own: bool, what: str) -> None:
    if own:
        log.report(what, stacklevel=4)


# ------------------------------------------------------------------------------------------ KITTI layout


def read_kitti_instances(
    root: str | Path,
    split_dir: str | None = "training",
    strict: bool = False,
    log: DropLog | None = None,
    instance_dir: str = "instance",
) -> list[InstanceAnnotation]:
    """Images, label lines and instance maps of a KITTI-layout split (the synthetic set's layout).

    Object ``k`` of an image is the ``k``-th non-blank line of its label file; its mask is where the map holds
    ``k``. Label lines with no pixel have no mask and are skipped: silently when the line says the object is
    largely occluded (KITTI occlusion 2) or of unknown occlusion (3, "unknown" per the devkit) or is DontCare,
    else counted (``label_without_pixels``: a visible object without a mask says the map and the labels
    disagree).
    """
    log, own = DropLog.owned(log, strict)
    out = [_read_kitti_frame(*frame, log) for frame in kitti_frames(root, split_dir, log, instance_dir)]
    _finish(log, own, f"read_kitti_instances({root})")
    return out


def _map_ids(instance: np.ndarray) -> np.ndarray:
    """The ids (> 0) an instance map holds, sorted (a count per value for 8 / 16-bit maps: faster than
    ``np.unique``'s sort)."""
    ids = np.flatnonzero(np.bincount(instance.ravel())) if instance.dtype in (np.uint8, np.uint16) else None
    ids = np.unique(instance) if ids is None else ids
    return ids[ids > 0]


def _read_kitti_frame(
    image_path: Path, label_path: Path, map_path: Path, log: DropLog, masks: bool = True
) -> InstanceAnnotation:
    """One image of :func:`read_kitti_instances`: its label lines and the ids of its map, checked against each
    other. ``masks`` False: its objects hold no RLE but their ``map_id``, their masks read from the map when
    the image loads (:class:`InstanceDataset`)."""
    size = image_size(image_path, as_stored=True)  # as its instance map is
    lines = [
        (n, fields[0], fields[2])  # line number, type, occlusion
        for n, fields in _label_lines(label_path, (15, 16), "15 fields (16 with a score)", quote_line=True)
    ]
    instance = read_label_map(map_path)
    _check_map_size(map_path, instance, image_path, size)
    ids = _map_ids(instance)
    for bad in ids[ids > len(lines)]:
        log.add(
            "instance_without_label",
            map_path,
            None,
            f"instance id {int(bad)} has no label line ({label_path} has {len(lines)})",
        )
    ids = ids[ids <= len(lines)]
    for k in sorted(set(range(1, len(lines) + 1)) - set(ids.tolist())):  # a line no pixel of the map has
        line, kind, occlusion = lines[k - 1]
        if kind != DONTCARE and _visible(occlusion):  # said visible: the map should hold it
            log.add(
                "label_without_pixels", label_path, line,
                f"{kind} (instance id {k}, occlusion {occlusion}: visible) has no pixel in {map_path}",
            )  # fmt: skip
    rles = encode_masks(instance[None] == ids[:, None, None]) if masks else [None] * len(ids)
    objects = [
        InstanceObject(lines[k - 1][1], rle, f"{label_path}:{lines[k - 1][0]}", map_id=k)
        for k, rle in zip(ids.tolist(), rles)
    ]
    instance_map = None if masks else str(map_path)
    return InstanceAnnotation(
        str(image_path), size[1], size[0], objects, as_stored=True, instance_map=instance_map
    )


# -------------------------------------------------------------------------------------- panoptic PNG layout

KITTI_STEP_DIVISOR = 256 * 256  # a colour map's instance id G * 256 + B stays below it


def read_panoptic_map(path: Path, divisor: int) -> tuple[np.ndarray, int]:
    """The ``class_id * divisor + instance`` values (int64) of a panoptic PNG and the divisor they use.

    A single-channel map is read as stored (Cityscapes' ``*_instanceIds.png``: divisor 1000). A colour map is
    KITTI-STEP's encoding: R the class id, G * 256 + B the instance id, 0 for stuff and crowd regions; it is
    re-encoded with :data:`KITTI_STEP_DIVISOR`, an instance 0 as the bare class id (a region without instances,
    as in Cityscapes)."""
    label = read_label_map(path, colour=True).astype(np.int64)
    if label.ndim == 2:
        return label, divisor
    cls, instance = label[..., 0], label[..., 1] * 256 + label[..., 2]
    return np.where(instance > 0, cls * KITTI_STEP_DIVISOR + instance, cls), KITTI_STEP_DIVISOR


def _no_instance_values(
    log: DropLog, map_path: Path, skipped: dict[int, int], divisor: int, class_ids: dict[int, str]
) -> None:
    """Count a single-channel map with no value >= ``divisor`` whose other values name no listed class, in a
    set where no map has such a value: read as ``class_id * divisor + instance`` it holds no object, which is
    what an 8-bit map (values cut to 0..255) or plain instance ids 1..N look like; counted, so it is not
    silently read as background. Beside maps with instance values it is a frame without objects (a real
    Cityscapes frame can be), and says nothing."""
    shown = ", ".join(str(v) for v in list(skipped)[:5]) + (", ..." if len(skipped) > 5 else "")
    cid = min(class_ids) if class_ids else 26
    log.add(
        "no_instance_values",
        map_path,
        None,
        f"no value >= {divisor}, and its values {shown} ({sum(skipped.values())} pixels) name no listed "
        f"class id {sorted(class_ids)}: they were skipped, leaving the image without objects. An 8-bit map "
        f"or plain instance ids? Values must be class_id * {divisor} + instance (e.g. {cid * divisor + 1} "
        f"for the first object of class id {cid}): re-encode the maps, or give the divisor they use "
        "(--data.png_divisor; convert's --divisor). Where no frame of the set truly shows such an object, it "
        "reads the same: then nothing was lost",
    )


def read_png_instances(
    root: str | Path,
    class_ids: dict[int, str] | None = None,
    divisor: int = 1000,
    strict: bool = False,
    log: DropLog | None = None,
    folders: tuple[Path, Path] | None = None,
    map_suffix: str = "",
) -> list[InstanceAnnotation]:
    """``root/images/*`` with ``root/instances/<stem>.png`` holding ``class_id * divisor + instance`` per pixel
    (or KITTI-STEP's colour encoding: :func:`read_panoptic_map`). ``folders``: the image and map folders
    where they lie elsewhere (a KITTI-STEP download's sequence folders), instead of ``root``'s.
    ``map_suffix``: read only the maps whose name ends so (``_gtFine_instanceIds``: a Cityscapes city folder
    also holds its ``_labelIds`` / ``_color`` maps).

    ``class_ids`` names the class ids (default: Cityscapes' instance classes); other ids with instances are
    dropped and counted (``unknown_class``). A value below ``divisor`` that is a listed class id is a region of
    that class without instances (a Cityscapes crowd): it becomes a ``DontCare`` ignore region of that class. A
    single-channel map with no value >= ``divisor`` but other non-zero values is counted when no map of the set
    has such a value (``no_instance_values``: 8-bit maps or plain instance ids, which would otherwise read as
    background).
    """
    root = Path(root)
    class_ids = dict(CITYSCAPES_INSTANCE_CLASSES if class_ids is None else class_ids)
    if divisor < 2:
        raise ValueError(f"read_png_instances: divisor must be >= 2, got {divisor}")
    log, own = DropLog.owned(log, strict)
    image_dir, map_dir = folders if folders is not None else (root / "images", root / "instances")
    for folder in (image_dir, map_dir):
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{folder}: folder not found (the png layout is images/ + instances/, or a Cityscapes "
                "download as it comes: leftImg8bit/ + gtFine/)"
            )
    maps = images_by_stem(map_dir, (".png",), stem=_stem)  # frame.png beside frame_instanceIds.png: an error
    maps = {stem: path for stem, path in maps.items() if path.stem.endswith(map_suffix)}
    images = images_by_stem(image_dir, stem=_stem)
    if not images:
        inside = sorted(p.name for p in visible_entries(image_dir) if p.is_dir())
        hint = ""
        if inside:  # Cityscapes' city folders
            hint = (
                f"; its sub-folders ({', '.join(inside[:3])}) are not read: put every image directly in images/ "
                "and every map in instances/ (one folder for all cities)"
            )
        raise FileNotFoundError(f"{image_dir}: no images in it{hint}")
    for stem, map_path in maps.items():
        if stem not in images:
            raise LabelFormatError(map_path, None, f"instance map has no image {stem}* in {image_dir}")
    out, suspects, any_instances = [], [], False  # suspects: maps without instance values (see below)
    for stem, image_path in sorted(images.items()):
        if stem not in maps:
            log.add("image_without_label", image_path, None, f"no instance map {map_dir / stem}*.png")
            continue
        size = image_size(image_path, as_stored=True)  # as its instance map is
        label, per_class = read_panoptic_map(maps[stem], divisor)
        _check_map_size(maps[stem], label, image_path, size)
        objects, skipped = [], {}  # skipped: values below the divisor that name no listed class -> pixels
        values, pixels = np.unique(label, return_counts=True)
        for value, n in zip(values.tolist(), pixels.tolist()):
            cls = value // per_class if value >= per_class else value
            if cls not in class_ids:
                if value >= per_class:
                    log.add(
                        "unknown_class",
                        maps[stem],
                        None,
                        f"class id {cls} (value {value}) not in {class_ids}",
                    )
                elif value:  # a class without instances (Cityscapes' road, sky): fine beside instance values
                    skipped[value] = n
                continue
            name, crowd = (class_ids[cls], None) if value >= per_class else (DONTCARE, class_ids[cls])
            (rle,) = encode_masks((label == value)[None])
            objects.append(InstanceObject(name, rle, f"{maps[stem]}:value {value}", crowd))
        any_instances = any_instances or values[-1] >= per_class
        if skipped and per_class == divisor and not values[-1] >= per_class:  # a single-channel map
            suspects.append((maps[stem], skipped))
        out.append(InstanceAnnotation(str(image_path), size[1], size[0], objects, as_stored=True))
    if not any_instances:  # a map of a set with instance values elsewhere is a frame without objects
        for map_path, skipped in suspects:
            _no_instance_values(log, map_path, skipped, divisor, class_ids)
    _finish(log, own, f"read_png_instances({root})")
    return out


def read_cityscapes_instances(
    root: str | Path,
    class_ids: dict[int, str] | None = None,
    divisor: int = 1000,
    strict: bool = False,
    log: DropLog | None = None,
) -> tuple[list[InstanceAnnotation], list[str]]:
    """A Cityscapes download as it comes: ``leftImg8bit/<split>/<city>/<frame>_leftImg8bit.png`` with
    ``gtFine/<split>/<city>/<frame>_gtFine_instanceIds.png``, of the splits holding both (train, val: test's
    maps hold no labels). Each city is read by :func:`read_png_instances` (its ``_gtFine_instanceIds`` maps
    only), so every check and message is that reader's: a thing class's value ``labelId * 1000 + k`` is an
    object, a bare listed labelId (a crowd: a group without instance split) an ignore region of that class.
    Returns the annotations and each one's city (its drive: a city's frames are neighbours)."""
    root = Path(root)
    log, own = DropLog.owned(log, strict)
    images_root, maps_root, splits = cityscapes_splits(root)
    items: list[InstanceAnnotation] = []
    cities: list[str] = []
    for split in splits:
        for city in sorted(p for p in visible_entries(images_root / split) if p.is_dir()):
            maps = maps_root / split / city.name
            if not maps.is_dir():
                raise FileNotFoundError(f"{maps}: the gtFine maps of {city} are missing")
            read = read_png_instances(
                city, class_ids, divisor, log=log, folders=(city, maps), map_suffix="_gtFine_instanceIds"
            )
            items += read
            cities += [city.name] * len(read)
    if not items:
        raise FileNotFoundError(
            f"{images_root}: no *{CITYSCAPES_IMAGE_SUFFIX}.png in {'/, '.join(splits)}/<city>/"
        )
    _finish(log, own, f"read_cityscapes_instances({root})")
    return items, cities


# ---------------------------------------------------------------------------------------------------- COCO


def _segmentation_rle(segm, height: int, width: int, path: Path, where: str, log: DropLog) -> dict | None:
    """The COCO RLE of one annotation's ``segmentation`` (polygons or RLE), ``None`` if it is dropped."""
    if isinstance(segm, list):
        if not segm:
            log.add("empty_segmentation", path, where, "segmentation is an empty polygon list")
            return None
        for polygon in segm:
            ok = isinstance(polygon, list) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in polygon
            )
            if not ok or len(polygon) % 2:
                log.add("bad_segmentation", path, where, "a polygon must be a flat list of x, y numbers")
                return None
            if len(polygon) < 6:
                log.add(
                    "empty_segmentation", path, where, f"polygon with {len(polygon) // 2} points (need 3)"
                )
                return None
            xs, ys = np.asarray(polygon[0::2]), np.asarray(polygon[1::2])
            tol = BOX_TOLERANCE_PX
            if xs.min() < -tol or ys.min() < -tol or xs.max() > width + tol or ys.max() > height + tol:
                log.add(
                    "outside_image",
                    path,
                    where,
                    f"polygon reaches ({xs.min():g}..{xs.max():g}, {ys.min():g}..{ys.max():g}), more than "
                    f"{tol:g} px outside the {width}x{height} image",
                )
                return None
        rle = mask_api.merge(mask_api.frPyObjects(segm, height, width))
    elif isinstance(segm, dict) and "counts" in segm and "size" in segm:
        if list(segm["size"]) != [height, width]:
            log.add(
                "bad_segmentation", path, where, f"RLE size {segm['size']} but the image is {height}x{width}"
            )
            return None
        counts = segm["counts"]
        try:
            if isinstance(counts, list):  # uncompressed RLE
                rle = mask_api.frPyObjects(segm, height, width)
            elif isinstance(counts, (str, bytes)):
                rle = {
                    "size": [height, width],
                    "counts": counts.encode() if isinstance(counts, str) else counts,
                }
            else:
                raise TypeError(f"counts must be a list or a string, got {type(counts).__name__}")
            mask_api.decode(rle)  # checks the run lengths add up to the image
        except (ValueError, RuntimeError, TypeError) as err:
            log.add("bad_segmentation", path, where, f"malformed RLE ({err})")
            return None
    else:
        log.add("bad_segmentation", path, where, f"segmentation must be polygons or an RLE, got {segm!r:.60}")
        return None
    if mask_api.area(rle) == 0:
        log.add("empty_segmentation", path, where, "segmentation covers no pixel")
        return None
    return rle


def read_coco_instances(
    json_path: str | Path,
    images_root: str | Path | None = None,
    strict: bool = False,
    log: DropLog | None = None,
) -> list[InstanceAnnotation]:
    """Read a COCO instance JSON (``file_name`` relative to ``images_root``, default the JSON's folder or
    COCO's layout's image folder: :func:`~domains.driving.formats.read_coco`).

    ``iscrowd`` annotations become ``DontCare`` ignore regions of their category (of every class for the
    ``DontCare`` category or an unknown one: :func:`~domains.driving.formats.crowd_class`). Problem locations read
    ``path:annotations[i] (id N):``.
    """
    path = Path(json_path)
    root = Path(images_root) if images_root is not None else None
    log, own = DropLog.owned(log, strict)
    data, categories, records = _coco_images(
        path, root, lambda file, w, h: InstanceAnnotation(file, w, h, [])
    )
    regions: set = set()  # the KITTI DontCare regions read (each written once per class category)
    for i, ann in enumerate(data["annotations"]):
        where = f"annotations[{i}]" + (f" (id {ann['id']})" if isinstance(ann, dict) and "id" in ann else "")
        _require(ann, ("image_id", "category_id"), path, where)
        iid = _parse_int(str(ann["image_id"]), path, where, "image_id")
        if iid not in records:
            raise LabelFormatError(path, where, f"image_id {iid} is not in 'images'")
        if "segmentation" not in ann:
            log.add("empty_segmentation", path, where, "no 'segmentation'")
            continue
        cid = _parse_int(str(ann["category_id"]), path, where, "category_id")
        crowd = bool(ann.get("iscrowd", 0))
        if cid not in categories:  # a crowd too: COCOeval ignores no class's detections in it (as read_coco)
            log.add("unknown_class", path, where, f"category_id {cid} is not in 'categories'")
            continue
        if repeated_dontcare(ann, iid, regions, path, where):
            continue
        rec = records[iid]
        rle = _segmentation_rle(ann["segmentation"], rec.height, rec.width, path, where, log)
        if rle is not None:
            name = DONTCARE if crowd else categories[cid]
            of = crowd_class(categories[cid], ann) if crowd else None
            rec.objects.append(InstanceObject(name, rle, f"{path}:{where}", of))
    _finish(log, own, f"read_coco_instances({path})")
    return list(records.values())


# ------------------------------------------------------------------------------------------------ dataset


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(K, H, W) masks -> (K, 4) xyxy boxes in pixel-edge coordinates (right = last column + 1), as KITTI's.

    torchvision's ``masks_to_boxes`` gives pixel centres (a one-pixel mask has a zero-size box): add 1.
    """
    boxes = masks_to_boxes(masks) if len(masks) else torch.zeros(0, 4)
    return boxes + torch.tensor([0.0, 0.0, 1.0, 1.0])


def _object_masks(
    objects: Sequence[InstanceObject], ann: InstanceAnnotation, instance: np.ndarray | None
) -> np.ndarray:
    """(K, H, W) uint8 masks of ``objects``: their RLEs decoded, or where ``instance`` (their image's map,
    ``ann.instance_map``) holds their ids."""
    if instance is None:
        return decode_masks([obj.rle for obj in objects], ann.height, ann.width)
    ids = np.asarray([obj.map_id for obj in objects], np.int64)
    return (instance[None] == ids[:, None, None]).astype(np.uint8)


class InstanceDataset(Dataset):
    """Images and Mask R-CNN targets from :class:`InstanceAnnotation` records.

    Returns ``(image, target)``: ``image`` float32 (3, H, W) in [0, 1]; ``target`` holds ``masks`` uint8
    (K, H, W), ``boxes`` float32 (K, 4) xyxy (the masks' tight boxes, so boxes and masks can never disagree
    after a crop or flip), ``labels`` int64 (K,) indices into ``class_names``, ``ignore_mask`` bool (H, W)
    (the union of the DontCare regions of every class: KITTI's), ``crowd_masks`` uint8 (R, H, W) and
    ``crowd_labels`` int64 (R,) (crowds of one class, COCO's ``iscrowd`` and Cityscapes' class regions: they
    ignore detections of their class only, as COCOeval; those of no class here are left out), ``image_id`` and
    ``orig_size`` (H, W) before the transform and ``cropped_out`` int, the objects and crowds whose mask the
    transform emptied (a training crop left none of it, or a resize none of a sliver): counted as the detection
    dataset counts the boxes its crops remove, and summed by the task alike (``train/cropped_out_boxes``); the
    DontCare regions, one merged ignore mask here, are not counted (detection counts its ignore boxes).

    ``class_map`` renames types first (``{Van: Car}``); types neither in ``class_names`` nor ``ignore_types``
    are dropped, counted in ``self.dropped`` and reported in one info line naming ``split`` (train, val, ...:
    the splits' counts told apart); ``self.objects`` counts those kept.
    ``transform``: an albumentations ``Compose``; every mask (and the ignore mask) goes through it with the
    image (nearest-neighbour resampling). Masks a crop removes entirely are dropped, and counted
    (``cropped_out``).
    """

    def __init__(
        self,
        annotations: Sequence[InstanceAnnotation],
        class_names: Sequence[str],
        transform: A.Compose | None = None,
        ignore_types: Sequence[str] = (DONTCARE,),
        class_map: dict[str, str] | None = None,
        split: str | None = None,
    ):
        self.annotations = list(annotations)
        self.class_names = list(class_names)
        self.transform = transform
        self.class_map = dict(class_map or {})
        per_image, self.dropped = sort_objects(
            self.annotations, self.class_names, self.class_map, ignore_types,
            f"InstanceDataset ({split} split)" if split else "InstanceDataset",
        )  # fmt: skip
        # per image: (objects, labels, regions of every class, crowds, crowd labels)
        self._items = []
        for kept, labels, ignored in per_image:
            regions = [(obj, ignore_label(obj, self.class_names, self.class_map)) for obj in ignored]
            crowds = [(obj, c) for obj, c in regions if c is not None and c >= 0]
            self._items.append(
                (
                    kept,
                    np.asarray(labels, np.int64),
                    [obj for obj, c in regions if c == -1],
                    [obj for obj, _ in crowds],
                    np.asarray([c for _, c in crowds], np.int64),
                )
            )
        self.objects = sum(len(labels) for _, labels, _ in per_image)  # of the classes, over all images

    def __len__(self) -> int:
        return len(self.annotations)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict]:
        ann = self.annotations[i]
        image = read_annotated_rgb(ann)
        kept, labels, ignored, crowd_objects, crowd_labels = self._items[i]
        instance = None if ann.instance_map is None else read_label_map(ann.instance_map)
        masks = _object_masks(kept, ann, instance)
        crowds = _object_masks(crowd_objects, ann, instance)
        ignore = _object_masks(ignored, ann, instance).any(axis=0).astype(np.uint8)
        shown = None  # objects and crowds with pixels before the transform (none move without one)
        if self.transform is not None:
            shown = int(masks.any(axis=(1, 2)).sum()) + int(crowds.any(axis=(1, 2)).sum())
            # the ignore mask rides last, so an image with no objects still sends one mask through the
            # transform and gets back the transformed size for its (0, H', W') object stack
            out = self.transform(image=image, masks=[*masks, *crowds, ignore])
            image = out["image"]
            moved = np.asarray(out["masks"], dtype=np.uint8)
            masks, crowds, ignore = moved[: len(masks)], moved[len(masks) : -1], moved[-1]
        # any over (H, W), not a reshape to (K, -1): numpy cannot infer -1 for K = 0 objects
        keep = masks.any(axis=(1, 2))
        masks_t = torch.from_numpy(np.ascontiguousarray(masks[keep]))
        kept_crowds = crowds.any(axis=(1, 2))  # a crop may leave a crowd out
        target = {
            "masks": masks_t,
            "boxes": mask_boxes(masks_t),
            "labels": torch.from_numpy(labels[keep]),
            "ignore_mask": torch.from_numpy(np.ascontiguousarray(ignore)).bool(),
            "crowd_masks": torch.from_numpy(np.ascontiguousarray(crowds[kept_crowds])),
            "crowd_labels": torch.from_numpy(crowd_labels[kept_crowds]),
            "image_id": ann.image_id,
            "orig_size": (ann.height, ann.width),
            "cropped_out": 0 if shown is None else shown - int(keep.sum()) - int(kept_crowds.sum()),
        }
        return to_image_tensor(image), target


def _coco_json_hint(path: Path, data_format: str, err: FileNotFoundError) -> FileNotFoundError:
    """A reader's "not found" for a COCO JSON given as a ``kitti`` / ``png`` set, which named folders inside the
    JSON (``ann.json/training/image_2``), with the setting that reads it; the reader's own error otherwise."""
    fix = "for a COCO instance JSON add --data.data_format coco"
    if path.is_file() and path.suffix.lower() == ".json":
        return FileNotFoundError(
            f"{path}: --data.data_format is {data_format}, which reads a folder, but this is a JSON file: {fix}"
        )
    if path.is_dir() and (jsons := sorted(p.name for p in visible_entries(path) if p.suffix.lower() == ".json")):
        return FileNotFoundError(f"{err}; it holds {', '.join(jsons[:3])}: {fix}")
    return err


#: the base's default; InstanceDataModule declares the setting itself for its help alone (jsonargparse documents
#: a parameter passed on in ``**kwargs`` from the docstring of the class declaring it, the base's YOLO rule)
_SPLIT_FRACTIONS = signature(DetectorDataModule).parameters["split_fractions"].default


class InstanceDataModule(DetectorDataModule):
    """Instance masks from KITTI-layout instance maps, a COCO instance JSON or panoptic PNGs.

    Split by driving sequence (``--data.*``; the shared ones:
    :class:`~domains.driving.detection.data.DetectorDataModule`).

    Args:
        data_format: ``kitti`` (``training/{image_2,label_2,instance}``), ``coco`` (instance JSON, or a folder
            holding one) or ``png`` (``images/`` + ``instances/`` with ``class_id * png_divisor +
            instance``, or a Cityscapes download as it comes, ``leftImg8bit/`` + ``gtFine/`` with its
            ``*_instanceIds.png``: its train and val frames split by city, not by its own train / val).
        data_path: the root / file; null: the synthetic KITTI-layout set (generated on first use).
        png_class_ids: class id -> name for ``png`` (null: Cityscapes' person, rider, car, ...).
        png_divisor: the class multiplier of single-channel ``png`` maps (Cityscapes 1000). KITTI-STEP's colour
            maps (R the class, G * 256 + B the instance) are recognised and need none; give their class ids
            (Cityscapes train ids: 11 person, 12 rider, 13 car, ...) in ``png_class_ids``.
        split_fractions: train / val / test shares of the images, split by driving sequence as a sequence map
            names them (``sequences.txt``, ``sequence_map.txt``, ``mapping.txt`` or KITTI's ``mapping/`` in the
            data folder or its parent; ``<stem>.sequences.txt`` beside a COCO JSON; with none, each image is a
            sequence of its own), a Cityscapes download's frames by city. No format keeps splits of its own:
            Cityscapes' train and val frames are pooled, then split.
    """

    data_formats = ("kitti", "coco", "png")

    def __init__(
        self,
        data_format: Literal["kitti", "coco", "png"] = "kitti",
        data_path: str | None = None,
        *args,
        png_class_ids: dict[int, str] | None = None,
        png_divisor: int = 1000,
        split_fractions: tuple[float, float, float] = _SPLIT_FRACTIONS,
        **kwargs,
    ):
        # positional arguments after data_path are DetectorDataModule's, in its order (class_names, class_map...),
        # up to strict: split_fractions is given by name
        super().__init__(data_format, data_path, *args, split_fractions=split_fractions, **kwargs)
        self.png_class_ids = None if png_class_ids is None else {int(k): v for k, v in png_class_ids.items()}
        self.png_divisor = png_divisor

    def _read_splits(self) -> dict[str, list[InstanceAnnotation]]:
        path = data_source(self.data_path, ("*.json",) if self.data_format == "coco" else ())
        if self.data_format == "png" and is_cityscapes_root(path):
            return self._cityscapes_splits(path)
        try:
            if self.data_format == "kitti":
                return self._kitti_splits(path)
            if self.data_format == "png":
                items = read_png_instances(path, self.png_class_ids, self.png_divisor, strict=self.strict)
                split_root = path
        except FileNotFoundError as err:
            raise _coco_json_hint(path, self.data_format, err) from None
        if self.data_format == "coco":
            items, split_root = read_coco_instances(path, self.images_root, strict=self.strict), path.parent
            self.note_coco_layout(path, items)
        label_file = path if self.data_format == "coco" else None  # its .sequences.txt, if any
        return split_by_sequence(
            items, split_root, self.split_fractions, self.seed, self.max_items, source_file=label_file
        )

    def _kitti_splits(self, root: Path) -> dict[str, list[InstanceAnnotation]]:
        """A KITTI-layout set split by sequence and cut to ``max_items`` from its file names alone: stand-ins
        holding the image id, each split's labels and maps read and checked when it is used
        (:meth:`_read_records`: the stage's splits only; every map of every split cost validate 4 s)."""
        log = DropLog(strict=self.strict)
        self._kitti_root = root
        frames = kitti_frames(root, "training", log, "instance")
        log.report(f"read_kitti_instances({root})")
        self._kitti_frame_files = {str(frame[0]): frame for frame in frames}
        named = [InstanceAnnotation(str(frame[0]), 0, 0) for frame in frames]  # the id is all a split needs
        split_root = resolve_kitti_split(root)
        return split_by_sequence(named, split_root, self.split_fractions, self.seed, self.max_items)

    def _read_records(self, name: str, records: list[InstanceAnnotation]) -> list[InstanceAnnotation]:
        """A KITTI split's images: labels and map ids read and checked (:func:`_read_kitti_frame`; problems
        counted in one warning naming the split, or with ``strict`` an error naming the file), the masks left
        in the map until the image loads (encoding every map's masks was most of setup); other formats'
        records as they are."""
        if self.data_format != "kitti":
            return records
        log = DropLog(strict=self.strict)
        frames = [self._kitti_frame_files[ann.image_path] for ann in records]
        out = [_read_kitti_frame(*frame, log, masks=False) for frame in frames]
        log.report(f"read_kitti_instances({self._kitti_root}), {name} split")
        return out

    def _cityscapes_splits(self, root: Path) -> dict[str, list[InstanceAnnotation]]:
        """A Cityscapes download's labelled frames (:func:`read_cityscapes_instances`), split by city as
        :func:`~domains.driving.common.split_by_sequence` splits by drive: sorted by id, cut to
        ``max_items``."""
        items, cities = read_cityscapes_instances(
            root, self.png_class_ids, self.png_divisor, strict=self.strict
        )
        order = sorted(range(len(items)), key=lambda i: items[i].image_id)[: self.max_items]
        groups = [cities[i] for i in order]
        rank_zero_info(
            f"Cityscapes {root}: {len(order)} frames of {len(set(groups))} cities "
            "(*_gtFine_instanceIds.png), split by city (--data.split_fractions; its own train / val split is "
            "not kept)"
        )
        index = group_split(groups, self.split_fractions, seed=self.seed)
        return {name: [items[order[i]] for i in idx] for name, idx in index.items()}

    record_type = InstanceAnnotation

    def make_dataset(self, name: str, items: list[InstanceAnnotation]) -> InstanceDataset:
        # the detector's steps on the masks alone: the boxes are re-derived from the moved masks
        return InstanceDataset(
            items, self.class_names, self.transform(name, boxes=False), class_map=self.class_map, split=name
        )


__all__ = [
    "CITYSCAPES_INSTANCE_CLASSES",
    "InstanceAnnotation",
    "InstanceDataModule",
    "InstanceDataset",
    "InstanceObject",
    "decode_masks",
    "encode_masks",
    "mask_boxes",
    "read_cityscapes_instances",
    "read_coco_instances",
    "read_kitti_instances",
    "read_png_instances",
]
