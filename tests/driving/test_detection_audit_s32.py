"""Audit fixes: COCO crowds keep their category (detection and instance AP as COCOeval), detections independent
of the batch, YOLO-seg polygon lines, classes with no training object, YOLO images without a label file."""

from __future__ import annotations

import contextlib
import io
import json
import warnings

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
import yaml
from faster_coco_eval import COCO, COCOeval_faster
from faster_coco_eval.core import mask as mask_api
from torchmetrics.detection import MeanAveragePrecision

from domains.driving.detection.data import DetectionDataModule, DetectionDataset
from domains.driving.detection.metrics import with_crowd_regions
from domains.driving.detection.model import RoadDetector
from domains.driving.formats import (
    DropLog,
    ImageAnnotation,
    LabelFormatError,
    LabelWarning,
    ObjectLabel,
    read_coco,
    read_yolo,
    write_coco,
)
from domains.driving.instances.data import InstanceDataset, read_coco_instances, read_png_instances
from domains.driving.instances.metrics import InstanceMetrics
from tests.driving.layouts import write_kitti
from tests.helpers import write_image

# ------------------------------------------------------------------------ 1: a COCO crowd keeps its category

CAR, PED, CYC = 3, 7, 9  # category ids not starting at 1


def _crowd_case(tmp_path, segmentation: bool = False):
    """Two 100x100 images: a car and a pedestrian; a car and a crowd of pedestrians top-left, with a false car
    detection inside the crowd (the highest score), and a crowd of cyclists (no class of the model) bottom-right
    with another false car in it. COCOeval: both false cars count (a crowd ignores its own category only)."""
    for name in ("a", "b"):
        write_image(tmp_path / f"{name}.png", width=100, height=100)
    boxes = [(11, CAR, [10, 10, 40, 50], 0), (11, PED, [60, 20, 10, 40], 0), (12, CAR, [20, 40, 60, 50], 0),
             (12, PED, [0, 0, 30, 30], 1), (12, CYC, [70, 0, 30, 30], 1)]  # fmt: skip
    anns = []
    for k, (iid, cid, (x, y, w, h), crowd) in enumerate(boxes, start=1):
        ann = {
            "id": k,
            "image_id": iid,
            "category_id": cid,
            "bbox": [x, y, w, h],
            "area": w * h,
            "iscrowd": crowd,
        }
        if segmentation:
            ann["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
        anns.append(ann)
    gt = {
        "images": [
            {"id": i, "file_name": f"{n}.png", "width": 100, "height": 100} for i, n in ((11, "a"), (12, "b"))
        ],
        "categories": [
            {"id": CAR, "name": "Car"},
            {"id": PED, "name": "Pedestrian"},
            {"id": CYC, "name": "Cyclist"},
        ],
        "annotations": anns,
    }
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    dets = [  # (image, category, xywh, score)
        (11, CAR, [10, 10, 40, 50], 0.9), (11, CAR, [14, 14, 40, 50], 0.8), (11, PED, [60, 21, 10, 38], 0.7),
        (12, CAR, [20, 42, 60, 48], 0.6),
        (12, CAR, [2, 2, 23, 23], 0.95),  # a false car inside the pedestrian crowd
        (12, CAR, [72, 2, 24, 24], 0.85),  # a false car inside the cyclist crowd
        (12, PED, [3, 3, 20, 20], 0.99),  # a pedestrian inside the pedestrian crowd: ignored
        (12, PED, [85, 85, 10, 10], 0.5),
    ]  # fmt: skip
    return tmp_path / "gt.json", dets


def _cocoeval_map(gt_path, dets, iou_type="bbox", masks=None) -> float:
    res = [{"image_id": i, "category_id": c, "bbox": b, "score": s} for i, c, b, s in dets]
    if masks is not None:
        for r, m in zip(res, masks):
            rle = mask_api.encode(np.asfortranarray(m.numpy().astype(np.uint8)))
            r["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
    with contextlib.redirect_stdout(io.StringIO()):
        ground = COCO(str(gt_path))
        evaluation = COCOeval_faster(ground, ground.loadRes(res), iou_type)
        evaluation.evaluate(), evaluation.accumulate(), evaluation.summarize()
    return float(evaluation.stats[0])


def _box(xywh):
    return [xywh[0], xywh[1], xywh[0] + xywh[2], xywh[1] + xywh[3]]


def _detections_of(ann, dets, label: dict) -> dict:
    """The crowd case's detections of one image, as the detector returns them."""
    mine = [d for d in dets if d[0] == {"a": 11, "b": 12}[ann.image_id]]
    return {
        "boxes": torch.tensor([_box(b) for _, _, b, _ in mine], dtype=torch.float32),
        "scores": torch.tensor([s for *_, s in mine]),
        "labels": torch.tensor([label[c] for _, c, _, _ in mine]),
    }


def test_a_coco_crowd_ignores_detections_of_its_own_category_only_as_cocoeval(tmp_path):
    """A crowd of pedestrians hid a false car in it (every ignore box was a crowd of every class): mAP 0.92 where
    COCOeval says 0.73. The cyclist crowd (a category that is no class of the model) hides no car either."""
    gt_path, dets = _crowd_case(tmp_path)
    reference = _cocoeval_map(gt_path, dets)
    names, label = ["Car", "Pedestrian"], {CAR: 0, PED: 1}
    dataset = DetectionDataset(read_coco(gt_path), names)
    metric = MeanAveragePrecision(box_format="xyxy", backend="faster_coco_eval")
    for k, ann in enumerate(dataset.annotations):
        _, target = dataset[k]
        pred = _detections_of(ann, dets, label)
        gt = {"boxes": target["boxes"], "labels": target["labels"]}
        metric.update(
            [pred], [with_crowd_regions(gt, target["ignore_boxes"], 2, ignore_labels=target["ignore_labels"])]
        )
    # Car: FP 0.95, TP 0.9, FP 0.85, FP 0.8 (its car is taken), TP 0.6: precision 1/2 up to recall 1/2 and 2/5
    # after it, on COCO's 101 recall points; Pedestrian 1 (its false alarm ranks last). Both cars hidden: 0.92
    car = (51 * 0.5 + 50 * 0.4) / 101
    assert reference == pytest.approx((car + 1) / 2, abs=1e-9)
    assert float(metric.compute()["map"]) == pytest.approx(reference, abs=1e-6)


def test_crowd_labels_follow_their_boxes_through_the_transform_and_the_class_map(tmp_path):
    """The crowd's class rides through albumentations with its box; KITTI's DontCare stays of every class."""
    objects = [
        ObjectLabel("Car", (10.0, 10.0, 20.0, 20.0)),
        ObjectLabel("DontCare", (0.0, 0.0, 8.0, 8.0)),  # KITTI: no class
        ObjectLabel("DontCare", (30.0, 0.0, 40.0, 8.0), crowd_class="Van"),  # trained as Car
        ObjectLabel("DontCare", (50.0, 0.0, 60.0, 8.0), crowd_class="Pedestrian"),
        ObjectLabel("DontCare", (70.0, 0.0, 80.0, 8.0), crowd_class="Tram"),  # no class here: left out
    ]
    ann = ImageAnnotation(str(write_image(tmp_path / "x.png", width=100, height=40)), 100, 40, objects)
    flip = A.Compose(
        [A.HorizontalFlip(p=1.0)], bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"])
    )
    _, target = DetectionDataset([ann], ["Car", "Pedestrian"], flip, class_map={"Van": "Car"})[0]
    assert target["labels"].tolist() == [0] and target["ignore_labels"].tolist() == [-1, 0, 1]
    np.testing.assert_allclose(target["ignore_boxes"][:, 0].numpy(), [92, 60, 40])  # flipped: 100 - right


def test_with_crowd_regions_gives_a_region_of_every_class_or_of_its_own():
    target = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    regions = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]])
    out = with_crowd_regions(target, regions, 3, ignore_labels=torch.tensor([-1, 2]))
    assert out["labels"].tolist() == [0, 1, 2, 2] and out["iscrowd"].tolist() == [1, 1, 1, 1]
    assert out["boxes"][:3].eq(regions[0]).all() and out["boxes"][3].eq(regions[1]).all()
    assert with_crowd_regions(target, regions, 2)["labels"].tolist() == [
        0,
        1,
        0,
        1,
    ]  # no labels: KITTI's rule
    with pytest.raises(ValueError, match="1 ignore_labels for 2 ignore regions"):
        with_crowd_regions(target, regions, 2, ignore_labels=torch.tensor([0]))


def test_write_coco_and_read_coco_keep_a_crowds_category(tmp_path):
    """read -> write -> read: the pedestrian crowd stays a pedestrian crowd (it was not written at all unless
    DontCare was a class, and then as a DontCare crowd); KITTI's DontCare goes as a crowd of each class and comes
    back as one region of every class."""
    gt_path, _ = _crowd_case(tmp_path)
    items = read_coco(gt_path)
    crowds = [(o.type, o.crowd_class) for o in items[1].objects if o.type == "DontCare"]
    assert crowds == [("DontCare", "Pedestrian"), ("DontCare", "Cyclist")]
    items[0].objects.append(ObjectLabel("DontCare", (0.0, 0.0, 5.0, 5.0)))  # KITTI's, no class
    with pytest.warns(LabelWarning, match=r"not written \(DontCare: 1\)"):  # the cyclist crowd: not a class
        write_coco(items, tmp_path / "out.json", ["Car", "Pedestrian", "DontCare"])
    data = json.loads((tmp_path / "out.json").read_text())
    crowd = [(a["image_id"], a["category_id"]) for a in data["annotations"] if a["iscrowd"]]
    # KITTI's DontCare as a crowd of each class (1 Car, 2 Pedestrian: COCOeval ignores every class there), the
    # pedestrian crowd as 2 (Pedestrian)
    assert crowd == [(1, 1), (1, 2), (2, 2)]
    again = read_coco(tmp_path / "out.json")
    assert [o.crowd_class for a in again for o in a.objects if o.type == "DontCare"] == [None, "Pedestrian"]


def test_an_instance_crowd_ignores_masks_of_its_own_category_only(tmp_path):
    """Mask AP as COCOeval's: the false car masks inside the pedestrian and the cyclist crowds count, where crowds
    of every class hid them."""
    gt_path, dets = _crowd_case(tmp_path, segmentation=True)
    names, label = ["Car", "Pedestrian"], {CAR: 0, PED: 1}
    dataset = InstanceDataset(read_coco_instances(gt_path), names)
    metric, all_masks = InstanceMetrics(names), []
    for k, ann in enumerate(dataset.annotations):
        _, target = dataset[k]
        assert not target["ignore_mask"].any()  # no region of every class
        mine = [d for d in dets if d[0] == {"a": 11, "b": 12}[ann.image_id]]
        masks = torch.zeros(len(mine), 100, 100, dtype=torch.bool)
        for j, (_, _, (x, y, w, h), _) in enumerate(mine):
            masks[j, y : y + h, x : x + w] = True
        all_masks += list(masks)
        pred = {
            "boxes": torch.tensor([_box(b) for _, _, b, _ in mine], dtype=torch.float32),
            "scores": torch.tensor([s for *_, s in mine]),
            "labels": torch.tensor([label[c] for _, c, _, _ in mine]),
            "masks": masks,
        }
        metric.update([pred], [target])
    assert target["crowd_labels"].tolist() == [1] and target["crowd_masks"].shape == (1, 100, 100)
    values = metric.compute("test")
    order = sorted(range(len(dets)), key=lambda i: dets[i][0])  # the masks went by image
    reference = _cocoeval_map(gt_path, [dets[i] for i in order], "segm", all_masks)
    assert reference == pytest.approx(((51 * 0.5 + 50 * 0.4) / 101 + 1) / 2, abs=1e-6)  # as the boxes' above
    assert values["test/mask_map"] == pytest.approx(reference, abs=1e-6)


def test_a_cityscapes_class_region_is_a_crowd_of_its_class(tmp_path):
    """A png map's value 26 (cars without instance ids) ignored pedestrians too."""
    label = np.zeros((48, 64), np.uint16)
    label[0:10, 0:20] = 26 * 1000 + 1  # a car
    label[20:30, 0:20] = 26  # a crowd of cars
    write_image(tmp_path / "images" / "f.png")
    (tmp_path / "instances").mkdir()
    cv2.imwrite(str(tmp_path / "instances" / "f.png"), label)
    _, target = InstanceDataset(read_png_instances(tmp_path), ["Pedestrian", "Car"])[0]
    assert target["crowd_labels"].tolist() == [1] and int(target["crowd_masks"].sum()) == 200
    assert not target["ignore_mask"].any() and target["labels"].tolist() == [1]


# ------------------------------------------------------------------------------- 2: batch independence


def test_an_images_detections_do_not_depend_on_the_images_batched_with_it():
    """torchvision pads a batch to its largest image; the padding changed a photo's features (and its boxes)."""
    torch.manual_seed(0)
    model = RoadDetector(2, "mobilenet_v3_small", None, input_size=(64, 128), fpn_channels=32, head_convs=1,
                         score_thresh=0.0).eval()  # fmt: skip
    photo, wide, same = torch.rand(3, 48, 64), torch.rand(3, 32, 128), torch.rand(3, 48, 64)
    with torch.no_grad():
        (alone,) = model([photo])
        batched = model([wide, photo, same])
    assert len(batched) == 3
    torch.testing.assert_close(batched[1]["scores"], alone["scores"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(batched[1]["boxes"], alone["boxes"], rtol=1e-4, atol=1e-3)
    with torch.no_grad():
        (same_alone,) = model([same])
    torch.testing.assert_close(batched[2]["scores"], same_alone["scores"], rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------- 3: YOLO-seg polygon lines


def _yolo(tmp_path, lines, background: bool = False):
    root = tmp_path / "yolo"
    write_image(root / "images" / "train" / "a.png", width=200, height=100)
    if background:
        write_image(root / "images" / "train" / "empty.png", width=200, height=100)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "train" / "a.txt").write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text(yaml.safe_dump({"train": "images/train", "names": ["Car", "Pedestrian"]}))
    return root / "data.yaml"


def test_yolo_seg_polygon_lines_are_read_as_their_bounding_boxes_in_one_note(tmp_path):
    """A YOLO-seg set was refused whole ('expected 5 fields, got 9'); Ultralytics' detection loader takes each
    polygon's bounding box."""
    data = _yolo(
        tmp_path,
        ["0 0.5 0.5 0.2 0.2", "1 0.10 0.50 0.20 0.40 0.25 0.70 0.10 0.80", "0 0.6 0.1 0.9 0.1 0.7 0.3"],
    )
    with pytest.warns(
        LabelWarning, match=r"noted polygon_as_box: 2 \(.*a\.txt:2: a 4-point polygon"
    ) as record:
        (item,) = read_yolo(data, strict=True)  # valid input: no error in strict mode
    assert len(record) == 1
    assert [(o.type, o.bbox) for o in item.objects] == [
        ("Car", (80.0, 40.0, 120.0, 60.0)),
        ("Pedestrian", pytest.approx((20.0, 40.0, 50.0, 80.0))),
        ("Car", pytest.approx((120.0, 10.0, 180.0, 30.0))),
    ]
    for bad, count in (("0 0.1 0.2 0.3 0.4 0.5 0.6 0.7", 8), ("0 0.1 0.2 0.3", 4)):
        (data.parent / "labels" / "train" / "a.txt").write_text(bad + "\n")
        with pytest.raises(
            LabelFormatError, match=rf"a\.txt:1: expected 5 fields .* or a polygon .*, got {count}"
        ):
            read_yolo(data)


def test_yolo_images_without_a_label_file_are_counted_as_background(tmp_path):
    """KITTI counted them, YOLO said nothing (a labels folder in the wrong place read as all background)."""
    data = _yolo(tmp_path, ["0 0.5 0.5 0.2 0.2", "5 0.5 0.5 0.2 0.2"], background=True)
    with pytest.warns(LabelWarning) as record:
        items = read_yolo(data)
    (message,) = [str(r.message) for r in record]  # drops and notes in the read's one warning
    assert "dropped unknown_class: 1" in message
    assert "noted background_image: 1 (" in message and "empty.png: no label file" in message
    assert [len(a.objects) for a in sorted(items, key=lambda a: a.image_id)] == [1, 0]
    log = DropLog()  # a caller's log (convert): it reports the drops, the read says its notes
    with pytest.warns(LabelWarning, match="noted background_image: 1") as record:
        read_yolo(data, log=log)
    assert len(record) == 1 and "dropped" not in str(record[0].message) and log.counts == {"unknown_class": 1}


# ---------------------------------------------------------------- 4: a class with no object in training


def test_a_class_with_no_training_object_is_warned_naming_the_near_match(tmp_path):
    """``[Truck, tram]`` on data that says Tram trained a class with no object, said only in an info line."""
    root = write_kitti(tmp_path / "kitti", n=12)  # cars and vans
    classes = ["Car", "van", "Pedestrain"]
    dm = DetectionDataModule(data_path=str(root), class_names=classes, class_map={}, num_workers=0)
    with pytest.warns(UserWarning) as record:
        dm.setup("fit")
    said = [str(r.message) for r in record if "no object in the training split" in str(r.message)]
    assert len(said) == 2
    assert (
        "class 'van' " in said[0] and "the data has 'Van' (class names are case-sensitive) with 8 " in said[0]
    )
    assert "class 'Pedestrain' " in said[1] and "the data has" not in said[1]  # nothing near it
    typo = DetectionDataModule(data_path=str(root), class_names=["Car", "Vann"], class_map={}, num_workers=0)
    with pytest.warns(UserWarning, match="class 'Vann' .* the data has 'Van' with 8 objects, not trained on"):
        typo.setup("fit")
    fine = DetectionDataModule(data_path=str(root), class_names=["Car", "Van"], class_map={}, num_workers=0)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*no object in the training split")
        fine.setup("fit")


def test_the_tasks_own_test_map_on_a_coco_crowd_is_cocoevals(tmp_path, monkeypatch):
    """The task's evaluation step (not only the metric) gives each crowd its own class: 0.92 before, as if the
    pedestrian crowd hid the false car."""
    from types import SimpleNamespace

    from tests.helpers import detection_task

    gt_path, dets = _crowd_case(tmp_path)
    reference = _cocoeval_map(gt_path, dets)
    names, label = ["Car", "Pedestrian"], {CAR: 0, PED: 1}
    dataset = DetectionDataset(read_coco(gt_path), names)
    task = detection_task(class_names=tuple(names), kitti_difficulties=[])
    monkeypatch.setattr(type(task), "trainer", property(lambda self: SimpleNamespace(datamodule=None, predicting=False)))
    for k, ann in enumerate(dataset.annotations):
        image, target = dataset[k]
        pred = _detections_of(ann, dets, label)
        monkeypatch.setattr(task, "predict_original", lambda images, targets, pred=pred: [pred])
        task._evaluation_step(([image], [target]), "test")
    assert float(task._metric("test").compute()["map"]) == pytest.approx(reference, abs=1e-6)


def test_an_instance_crowd_covers_detections_of_its_own_class_in_the_ignored_count():
    """COCO crowds moved to crowd_masks: the ignored-detections count and the operating point's filter read
    only the every-class mask, so a detection in a crowd of its class counted as a false alarm."""
    from domains.driving.instances.metrics import masks_in_ignore_fraction

    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[:, :4, :4] = True  # two detections on one spot: a Car (0) and a Pedestrian (1)
    crowd = torch.zeros(1, 8, 8, dtype=torch.uint8)
    crowd[0, :4, :4] = 1  # a crowd of pedestrians there
    none = torch.zeros(8, 8, dtype=torch.uint8)
    covered = masks_in_ignore_fraction(masks, none, torch.tensor([0, 1]), crowd, torch.tensor([1]))
    assert covered.tolist() == [0.0, 1.0]
    kitti = none.clone()
    kitti[:2, :4] = 1  # half of each lies in a DontCare region of every class
    assert masks_in_ignore_fraction(masks, kitti).tolist() == [0.5, 0.5]
