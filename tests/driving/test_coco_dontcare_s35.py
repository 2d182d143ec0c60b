"""KITTI's DontCare in converted COCO JSON: COCOeval ignores a detection in a crowd of its own category only,
so a DontCare region written as a crowd of a ``DontCare`` category hid no class's detections from standard
tools (a false car on it: Car AP50 0.5 by faster_coco_eval, 1.0 by the suite). It is written as one crowd per
class category; the suite reads those back as the one region of every class it read before, and old JSONs as
before.

One 128x64 frame in tmp_path: a car, a pedestrian and a DontCare region (KITTI labels and instance map).
"""

from __future__ import annotations

import contextlib
import io
import json

import cv2
import numpy as np
import torch
from faster_coco_eval import COCO, COCOeval_faster

from domains.driving import convert
from domains.driving.classes import DETECTION_CLASS_MAP
from domains.driving.detection.data import DetectionDataset
from domains.driving.formats import DONTCARE_REGION, coco_category_names, read_coco
from domains.driving.instances.convert import write_coco_instances
from domains.driving.instances.data import InstanceDataset, read_coco_instances, read_kitti_instances
from tests.driving.layouts import KITTI_LINE
from tests.helpers import write_image

W, H = 128, 64
OBJECTS = [("Car", (10, 10, 50, 40)), ("Pedestrian", (60, 5, 72, 40)), ("DontCare", (90, 20, 120, 50))]
CLASSES = ["Car", "Pedestrian"]


def _kitti(root):
    """``training/{image_2,label_2,instance}``: one frame of OBJECTS, object k painted with id k."""
    write_image(root / "training/image_2/000000.png", width=W, height=H)
    ids = np.zeros((H, W), np.uint16)
    for k, (_, (x1, y1, x2, y2)) in enumerate(OBJECTS, start=1):
        ids[y1:y2, x1:x2] = k
    (root / "training/instance").mkdir(parents=True)
    cv2.imwrite(str(root / "training/instance/000000.png"), ids)
    (root / "training/label_2").mkdir(parents=True)
    lines = [KITTI_LINE.format(name, *box) for name, box in OBJECTS]
    (root / "training/label_2/000000.txt").write_text("\n".join(lines) + "\n")
    return root


def _instances_json(tmp_path):
    path = tmp_path / "instances.json"
    write_coco_instances(read_kitti_instances(_kitti(tmp_path / "kitti")), path, CLASSES, DETECTION_CLASS_MAP)
    return path


def _detection_json(tmp_path):
    """``domains.driving.convert --from kitti --to coco`` (default classes: Car, Pedestrian, DontCare)."""
    src, dst = _kitti(tmp_path / "kitti"), tmp_path / "coco"
    assert convert.main(["--from", "kitti", "--to", "coco", "--src", str(src), "--dst", str(dst)]) == 0
    return dst / "annotations.json"


def _old_layout(path):
    """The JSON as converters wrote it before: each DontCare region one crowd of the DontCare category."""
    data = json.loads(path.read_text())
    dontcare = next(c["id"] for c in data["categories"] if c["name"] == "DontCare")
    anns, seen = [], set()
    for ann in data["annotations"]:
        region = ann.pop(DONTCARE_REGION, None)
        if region is None:
            anns.append(ann)
        elif region not in seen:
            seen.add(region)
            anns.append({**ann, "category_id": dontcare})
    old = path.with_name("old.json")
    old.write_text(json.dumps({**data, "annotations": anns}))
    return old


def _crowds(path) -> int:
    return sum(ann["iscrowd"] for ann in json.loads(path.read_text())["annotations"])


def _ap50(gt_path, iou_type: str) -> dict[str, float]:
    """faster_coco_eval's AP50 per class of detections = every true object (score 0.5) plus one detection of
    each class on the DontCare region (score 0.9, so a false positive there halves the AP)."""
    data = json.loads(gt_path.read_text())
    cats = {c["name"]: c["id"] for c in data["categories"]}
    truth = {a["category_id"]: a for a in data["annotations"] if not a["iscrowd"]}  # one object per class
    region = next(a for a in data["annotations"] if a["iscrowd"])
    results = []
    for name in CLASSES:
        for ann, score in ((truth[cats[name]], 0.5), (region, 0.9)):
            result = {
                "image_id": ann["image_id"],
                "category_id": cats[name],
                "bbox": ann["bbox"],
                "score": score,
            }
            if iou_type == "segm":
                result["segmentation"] = ann["segmentation"]
            results.append(result)
    out = {}
    for name in CLASSES:
        with contextlib.redirect_stdout(io.StringIO()):
            ground = COCO(str(gt_path))
            evaluation = COCOeval_faster(ground, ground.loadRes(results), iou_type)
            evaluation.params.catIds = [cats[name]]
            evaluation.evaluate(), evaluation.accumulate(), evaluation.summarize()
        out[name] = round(float(evaluation.stats[1]), 3)
    return out


def test_instance_json_dontcare_hides_every_class_from_cocoeval(tmp_path):
    """The false car and pedestrian on the DontCare region are ignored by faster_coco_eval (box and mask AP50
    1.0); the old layout scored them (0.5), where the suite ignored them."""
    path = _instances_json(tmp_path)
    for iou_type in ("bbox", "segm"):
        assert _ap50(path, iou_type) == {"Car": 1.0, "Pedestrian": 1.0}
        assert _ap50(_old_layout(path), iou_type) == {"Car": 0.5, "Pedestrian": 0.5}
    data = json.loads(path.read_text())
    crowds = [(a["category_id"], a[DONTCARE_REGION]) for a in data["annotations"] if a["iscrowd"]]
    assert crowds == [(1, 1), (2, 1)]  # one region, a crowd of each class
    assert [c["name"] for c in data["categories"]] == ["Car", "Pedestrian", "DontCare"]  # still listed


def test_detection_json_dontcare_hides_every_class_from_cocoeval(tmp_path):
    path = _detection_json(tmp_path)
    assert _ap50(path, "bbox") == {"Car": 1.0, "Pedestrian": 1.0}
    assert _ap50(_old_layout(path), "bbox") == {"Car": 0.5, "Pedestrian": 0.5}
    # DontCare stays a category: COCO -> KITTI / COCO keeps the regions by default, as before
    assert coco_category_names(path) == ["Car", "Pedestrian", "DontCare"]


def test_suite_reads_new_and_old_detection_json_alike(tmp_path):
    """One DontCare of every class (crowd_class None), read once: the same objects and targets as the old
    layout and as KITTI itself (its KITTI fields kept)."""
    path = _detection_json(tmp_path)
    assert _crowds(path) == 2  # the region, once per class
    new, old = read_coco(path), read_coco(_old_layout(path))
    assert new[0].objects == old[0].objects
    assert [(o.type, o.bbox, o.crowd_class) for o in new[0].objects] == [
        (name, tuple(float(v) for v in box), None) for name, box in OBJECTS
    ]
    assert new[0].objects[2].occluded == 0 and new[0].objects[2].alpha == -10  # KITTI_LINE's, restored
    (_, target), (_, before) = DetectionDataset(new, CLASSES)[0], DetectionDataset(old, CLASSES)[0]
    assert target["ignore_labels"].tolist() == [-1] and target["ignore_boxes"].tolist() == [[90, 20, 120, 50]]
    for key in ("boxes", "labels", "ignore_boxes", "ignore_labels"):
        assert torch.equal(target[key], before[key]), key


def test_suite_reads_new_and_old_instance_json_alike(tmp_path):
    """One DontCare region of every class (``ignore_mask``, no crowd of one class), as the old layout."""
    path = _instances_json(tmp_path)
    assert _crowds(path) == 2  # the region, once per class
    new, old = read_coco_instances(path), read_coco_instances(_old_layout(path))
    assert [(o.type, o.crowd_class, o.rle) for o in new[0].objects] == [
        (o.type, o.crowd_class, o.rle) for o in old[0].objects
    ]
    assert [(o.type, o.crowd_class) for o in new[0].objects] == [(name, None) for name, _ in OBJECTS]
    (_, target), (_, before) = InstanceDataset(new, CLASSES)[0], InstanceDataset(old, CLASSES)[0]
    assert int(target["ignore_mask"].sum()) == 30 * 30 and len(target["crowd_masks"]) == 0
    for key in ("masks", "boxes", "labels", "ignore_mask", "crowd_masks", "crowd_labels"):
        assert torch.equal(target[key], before[key]), key


def test_coco_to_coco_keeps_a_category_crowd_and_writes_dontcare_per_class(tmp_path):
    """A pedestrian crowd stays the pedestrians' only; an old JSON's DontCare crowd becomes one crowd per
    class; converting the result again gives the same JSON."""
    write_image(tmp_path / "a.png", width=W, height=H)
    old = {
        "images": [{"id": 1, "file_name": "a.png", "width": W, "height": H}],
        "categories": [{"id": k, "name": name} for k, name in enumerate((*CLASSES, "DontCare"), start=1)],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 30], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [60, 5, 12, 35], "iscrowd": 1},
            {"id": 3, "image_id": 1, "category_id": 3, "bbox": [90, 20, 30, 30], "iscrowd": 1},
        ],
    }
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert [(o.type, o.crowd_class) for o in read_coco(tmp_path / "old.json")[0].objects] == [
        ("Car", None), ("DontCare", "Pedestrian"), ("DontCare", None)
    ]  # fmt: skip
    first, second = tmp_path / "c1" / "annotations.json", tmp_path / "c2" / "annotations.json"
    for src, dst in ((tmp_path / "old.json", first), (first, second)):
        args = ["--from", "coco", "--to", "coco", "--src", str(src), "--dst", str(dst.parent)]
        assert convert.main(args) == 0
    written = json.loads(first.read_text())
    crowds = [
        (a["category_id"], a["bbox"], a.get(DONTCARE_REGION)) for a in written["annotations"] if a["iscrowd"]
    ]
    assert crowds == [(2, [60, 5, 12, 35], None), (1, [90, 20, 30, 30], 1), (2, [90, 20, 30, 30], 1)]
    assert [(o.type, o.crowd_class) for o in read_coco(first)[0].objects] == [
        ("Car", None), ("DontCare", "Pedestrian"), ("DontCare", None)
    ]  # fmt: skip
    assert json.loads(second.read_text()) == written
