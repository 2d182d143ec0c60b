"""Mask R-CNN road-user instances: the three readers and their bad-input reports, the COCO converter, mask
augmentation, mask / box AP, training signal, detector-backbone transfer, CLI fit and predict.

Everything runs on tiny hand-made data (128x64 images, rectangles as objects) in tmp_path.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from torchvision.ops import box_iou as _box_iou

from domains.driving.formats import LabelFormatError, LabelWarning
from domains.driving.instances.convert import main as convert_main
from domains.driving.instances.data import (
    InstanceAnnotation,
    InstanceDataModule,
    InstanceDataset,
    decode_masks,
    mask_boxes,
    read_coco_instances,
    read_kitti_instances,
    read_png_instances,
)
from domains.driving.instances.metrics import InstanceMetrics, masks_in_ignore_fraction
from domains.driving.instances.model import RoadInstanceSegmenter
from domains.driving.instances.task import InstanceTask, load_instance_task
from tests.driving.layouts import KITTI_LINE, TINY_MASK_RCNN, painted_scene, write_instance_kitti
from tests.helpers import FixedOutputs, detection_task, write_image

ROOT = Path(__file__).resolve().parents[2]
QUICK_CONFIG = ROOT / "domains/driving/instances/configs/quick.yaml"
TRANSFER_CONFIG = ROOT / "domains/driving/instances/configs/transfer.yaml"
SHIPPED_DETECTOR = ROOT / "apps/weights/driving_detection.safetensors"
W, H = 128, 64
TINY = TINY_MASK_RCNN


def make_instance_kitti(root: Path, n: int = 8, seed: int = 0) -> Path:
    """Painted 128x64 scenes, object k painted with id k, plus a DontCare line (last) painted in its corner."""
    return write_instance_kitti(root, n, seed, size=(H, W))


def _write_pair(root: Path, ids: np.ndarray, labels: list[tuple[str, tuple]], stem="000000", size=(H, W)):
    write_image(root / "training/image_2" / f"{stem}.png", width=size[1], height=size[0])
    (root / "training/label_2").mkdir(parents=True, exist_ok=True)
    (root / "training/instance").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / "training/instance" / f"{stem}.png"), ids.astype(np.uint16))
    text = "\n".join(KITTI_LINE.format(name, *box) for name, box in labels)
    (root / "training/label_2" / f"{stem}.txt").write_text(text + "\n\n")  # a blank line is no object


# ------------------------------------------------------------------------------------------------ readers


def test_kitti_instance_maps_pair_ids_with_label_lines_and_dontcare_is_ignored(tmp_path):
    ids = np.zeros((H, W), np.uint16)
    ids[10:20, 30:50] = 1  # line 1: Van (trained as Car)
    ids[5:40, 60:70] = 3  # line 3: Pedestrian; line 2 (a hidden Car) has no pixel
    ids[50:60, 0:8] = 4  # line 4: DontCare
    labels = [("Van", (30, 10, 50, 20)), ("Car", (0, 0, 5, 5)), ("Pedestrian", (60, 5, 70, 40))]
    labels.append(("DontCare", (0, 50, 8, 60)))
    _write_pair(tmp_path, ids, labels)
    (ann,) = read_kitti_instances(tmp_path)
    assert [o.type for o in ann.objects] == ["Van", "Pedestrian", "DontCare"]
    assert ann.objects[1].source.endswith("000000.txt:3")
    masks = decode_masks([o.rle for o in ann.objects], H, W)
    assert masks.sum(axis=(1, 2)).tolist() == [200, 350, 80]

    ds = InstanceDataset([ann], ["Car", "Pedestrian"], class_map={"Van": "Car"})
    image, target = ds[0]
    assert image.shape == (3, H, W)
    assert target["labels"].tolist() == [0, 1]
    # boxes are the masks' tight boxes in pixel-edge coordinates
    assert target["boxes"].tolist() == [[30.0, 10.0, 50.0, 20.0], [60.0, 5.0, 70.0, 40.0]]
    assert target["masks"].shape == (2, H, W) and target["masks"].dtype == torch.uint8
    assert int(target["ignore_mask"].sum()) == 80 and bool(target["ignore_mask"][55, 3])


def test_kitti_bad_maps_name_the_file(tmp_path):
    ids = np.zeros((H // 2, W), np.uint16)  # half the image's height
    _write_pair(tmp_path / "a", ids, [("Car", (0, 0, 5, 5))])
    with pytest.raises(LabelFormatError, match=r"instance/000000\.png.*instance map is 128x32 but its image"):
        read_kitti_instances(tmp_path / "a")

    ids = np.zeros((H, W), np.uint16)
    ids[0:5, 0:5] = 1
    ids[10:15, 10:15] = 7  # no line 7
    _write_pair(tmp_path / "b", ids, [("Car", (0, 0, 5, 5))])
    with pytest.warns(LabelWarning, match=r"instance_without_label: 1 .*instance id 7 has no label line"):
        (ann,) = read_kitti_instances(tmp_path / "b")
    assert [o.type for o in ann.objects] == ["Car"]
    with pytest.raises(LabelFormatError, match=r"instance/000000\.png: instance id 7 .*strict"):
        read_kitti_instances(tmp_path / "b", strict=True)
    strict = InstanceDataModule("kitti", str(tmp_path / "b"), ["Car"], strict=True, num_workers=0)
    with pytest.raises(LabelFormatError, match=r"instance id 7 has no label line"):
        strict.setup("fit")


def test_a_label_line_without_pixels_is_counted_and_data_without_objects_is_refused_for_fit(tmp_path):
    """A Car line whose id no pixel of the map has was dropped uncounted; ten maps whose ids no class table
    knows (or all zero) gave a data module of no object, which fit trained on the background alone."""
    _write_pair(tmp_path / "a", np.zeros((H, W), np.uint16), [("Car", (0, 0, 5, 5))])
    with pytest.warns(LabelWarning, match=r"label_without_pixels: 1 .*Car \(instance id 1, occlusion 0: visible\) has no pixel"):
        (ann,) = read_kitti_instances(tmp_path / "a")
    assert ann.objects == []
    hidden = tmp_path / "hidden" / "training" / "label_2" / "000000.txt"  # a fully hidden object: no pixel, rightly
    _write_pair(tmp_path / "hidden", np.zeros((H, W), np.uint16), [("Car", (0, 0, 5, 5))])
    hidden.write_text(hidden.read_text().replace("Car 0.00 0 ", "Car 0.00 3 "))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_kitti_instances(tmp_path / "hidden", strict=True)[0].objects == []
    dm = InstanceDataModule("kitti", str(tmp_path / "a"), ["Car"], num_workers=0, split_fractions=[1.0, 0.0, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"none of the 1 images of .* holds an object .*background only"):
            dm.setup("fit")
        dm = InstanceDataModule("kitti", str(tmp_path / "a"), ["Car"], num_workers=0, split_fractions=[0.0, 0.0, 1.0])
        dm.setup("test")  # frames without objects may be scored
        assert dm.datasets["test"].objects == 0


def test_kitti_instance_maps_and_labels_with_upper_case_suffixes_are_found(tmp_path):
    """000000.PNG was counted as a missing map (looked up as 000000.png), though the orphan check had seen it."""
    ids = np.zeros((H, W), np.uint16)
    ids[0:5, 0:5] = 1
    _write_pair(tmp_path, ids, [("Car", (0, 0, 5, 5))])
    base = tmp_path / "training"
    (base / "instance" / "000000.png").rename(base / "instance" / "000000.PNG")
    (base / "label_2" / "000000.txt").rename(base / "label_2" / "000000.TXT")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing dropped
        (ann,) = read_kitti_instances(tmp_path)
    assert [o.type for o in ann.objects] == ["Car"]


def _coco(tmp_path: Path, annotations: list[dict]) -> Path:
    write_image(tmp_path / "img.png", width=W, height=H)
    data = {
        "images": [{"id": 1, "file_name": "img.png", "width": W, "height": H}],
        "annotations": [{"image_id": 1, "category_id": 1, **a} for a in annotations],
        "categories": [{"id": 1, "name": "Car"}, {"id": 2, "name": "Pedestrian"}],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_reads_polygons_and_both_rle_forms_and_crowds(tmp_path):
    column_major = np.zeros((H, W), np.uint8)
    column_major[:, 100:102] = 1  # columns 100-101, every row: uncompressed RLE counts in column order
    counts = [100 * H, 2 * H, (W - 102) * H]
    from faster_coco_eval.core import mask as mask_api

    compressed = mask_api.encode(np.asfortranarray(column_major[:, :, None]))[0]
    path = _coco(
        tmp_path,
        [
            {"id": 1, "segmentation": [[10, 10, 30, 10, 30, 20, 10, 20]]},
            {"id": 2, "category_id": 2, "segmentation": {"size": [H, W], "counts": counts}},
            {"id": 3, "segmentation": {"size": [H, W], "counts": compressed["counts"].decode()}},
            {"id": 4, "iscrowd": 1, "category_id": 2, "segmentation": [[0, 0, 5, 0, 5, 5, 0, 5]]},
        ],
    )
    (ann,) = read_coco_instances(path, strict=True)
    assert [o.type for o in ann.objects] == ["Car", "Pedestrian", "Car", "DontCare"]
    assert ann.objects[3].crowd_class == "Pedestrian"  # a crowd ignores detections of its own class
    # a crowd of a category that is not in 'categories' ignores no class's detections (COCOeval), as detection
    unknown = _coco(tmp_path / "unknown", [{"id": 9, "iscrowd": 1, "category_id": 9, "segmentation": [[0, 0, 5, 0, 5, 5]]}])
    with pytest.raises(LabelFormatError, match=r"category_id 9 is not in 'categories' \[unknown_class"):
        read_coco_instances(unknown, strict=True)
    masks = decode_masks([o.rle for o in ann.objects], H, W)
    assert masks[1].sum() == 2 * H and np.array_equal(masks[1], masks[2])
    assert masks[0][10:20, 10:30].all() and masks[0].sum() <= 21 * 11


@pytest.mark.parametrize(
    "segmentation, kind",
    [
        ([], "empty_segmentation"),
        ([[1, 2, 3, 4]], "empty_segmentation"),
        ([[0, 0, 0, 0, 0, 0]], "empty_segmentation"),
        ([[1, 2, 3, 4, 5]], "bad_segmentation"),
        ([["a", 2, 3, 4, 5, 6]], "bad_segmentation"),
        ({"size": [H, W], "counts": [5, 3]}, "bad_segmentation"),
        ({"size": [H + 1, W], "counts": [H * W]}, "bad_segmentation"),
        ({"size": [H, W], "counts": "zz!!"}, "bad_segmentation"),
        ("oops", "bad_segmentation"),
        ([[10, 10, 300, 10, 300, 20, 10, 20]], "outside_image"),
    ],
)
def test_coco_bad_segmentations_are_counted_or_raise_naming_the_annotation(tmp_path, segmentation, kind):
    good = {"id": 1, "segmentation": [[10, 10, 30, 10, 30, 20, 10, 20]]}
    path = _coco(tmp_path, [good, {"id": 42, "segmentation": segmentation}])
    with pytest.warns(LabelWarning, match=rf"{kind}: 1 \(.*instances\.json:annotations\[1\] \(id 42\)"):
        (ann,) = read_coco_instances(path)
    assert len(ann.objects) == 1
    with pytest.raises(LabelFormatError, match=r"instances\.json:annotations\[1\] \(id 42\):.*strict"):
        read_coco_instances(path, strict=True)


def test_png_layout_decodes_class_and_instance_and_checks_sizes(tmp_path):
    label = np.zeros((H, W), np.int32)
    label[0:10, 0:20] = 26 * 1000 + 1  # car 1
    label[20:30, 0:20] = 26 * 1000 + 2  # car 2
    label[40:60, 50:55] = 24 * 1000 + 0  # person 0 (instance id 0 is an instance too)
    label[0:5, 100:128] = 26  # a car crowd: ignore region
    label[50:60, 100:110] = 60 * 1000 + 1  # unknown class: counted
    write_image(tmp_path / "images" / "f_leftImg8bit.png", width=W, height=H)
    (tmp_path / "instances").mkdir()
    cv2.imwrite(str(tmp_path / "instances" / "f_gtFine_instanceIds.png"), label.astype(np.uint16))
    with pytest.warns(LabelWarning, match=r"unknown_class: 1"):
        (ann,) = read_png_instances(tmp_path)
    assert ann.image_id == "f"
    assert sorted(o.type for o in ann.objects) == ["Car", "Car", "DontCare", "Pedestrian"]
    sizes = {o.source.rsplit(" ", 1)[1]: int(decode_masks([o.rle], H, W).sum()) for o in ann.objects}
    assert sizes == {"26001": 200, "26002": 200, "24000": 100, "26": 140}

    cv2.imwrite(str(tmp_path / "instances" / "f_gtFine_instanceIds.png"), label[:, :64].astype(np.uint16))
    with pytest.raises(LabelFormatError, match=r"f_gtFine_instanceIds\.png: instance map is 64x64"):
        read_png_instances(tmp_path)


def test_png_layout_refuses_two_files_of_one_id_and_names_an_empty_or_nested_images_folder(tmp_path):
    """frame.png beside frame_instanceIds.png (or frame_leftImg8bit.png beside frame.jpg): one was dropped
    silently. Cityscapes' city sub-folders gave no image and 'group_split: no items to split'."""
    label = np.full((H, W), 26 * 1000 + 1, np.uint16)
    write_image(tmp_path / "images" / "f_leftImg8bit.png", width=W, height=H)
    (tmp_path / "instances").mkdir()
    cv2.imwrite(str(tmp_path / "instances" / "f_gtFine_instanceIds.png"), label)
    cv2.imwrite(str(tmp_path / "instances" / "f.png"), label)
    with pytest.raises(LabelFormatError, match=r"two images share the id 'f'"):
        read_png_instances(tmp_path)
    (tmp_path / "instances" / "f.png").unlink()
    write_image(tmp_path / "images" / "f.jpg", width=W, height=H)
    with pytest.raises(LabelFormatError, match=r"two images share the id 'f'"):
        read_png_instances(tmp_path)
    nested = tmp_path / "nested"
    write_image(nested / "images" / "aachen" / "f_leftImg8bit.png", width=W, height=H)
    (nested / "instances" / "aachen").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"images: no images in it; its sub-folders \(aachen\) are not read"):
        read_png_instances(nested)


def test_converter_round_trip_and_data_module_reads_the_json(tmp_path, capsys):
    data = make_instance_kitti(tmp_path / "kitti", n=6)
    ids = [f"{i:06d}" for i in range(6)]
    (data / "sequences.txt").write_text("".join(f"{i} drive{int(i) // 2}\n" for i in ids))  # 3 drives of 2
    out = tmp_path / "coco" / "instances.json"
    convert_main(["--from", "kitti", "--src", str(data), "--dst", str(out), "--classes", "Car", "Pedestrian"])
    original = read_kitti_instances(data)
    back = read_coco_instances(out, strict=True)
    assert [a.image_id for a in back] == [a.image_id for a in original]
    for a, b in zip(original, back):
        assert [o.type for o in a.objects] == [o.type for o in b.objects]
        assert np.array_equal(
            decode_masks([o.rle for o in a.objects], H, W), decode_masks([o.rle for o in b.objects], H, W)
        )
    saved = json.loads(out.read_text())
    first = saved["annotations"][0]
    assert first["area"] == int(decode_masks([back[0].objects[0].rle], H, W).sum())
    assert {c["name"] for c in saved["categories"]} == {"Car", "Pedestrian", "DontCare"}
    with pytest.raises(SystemExit) as stop:
        convert_main(["--from", "kitti", "--src", str(data), "--dst", str(out)])  # exists: refused
    assert stop.value.code == 2 and f"error: {out} exists (use --overwrite)" in capsys.readouterr().err

    # the source's drives ride along beside the JSON, and the data module splits by them
    assert out.with_suffix(".sequences.txt").read_text() == (data / "sequences.txt").read_text()

    dm = InstanceDataModule("coco", str(out.parent), ["Car", "Pedestrian"], num_workers=0, batch_size=2)
    dm.setup("fit")
    assert sum(len(d) for d in dm.datasets.values()) == 6
    drives = [{int(a.image_id) // 2 for a in d.annotations} for d in dm.datasets.values() if len(d)]
    assert sum(len(d) for d in drives) == 3  # each drive in one split only
    images, targets = next(iter(dm.train_dataloader()))
    assert len(images) == 2 and all(t["masks"].shape[0] == len(t["boxes"]) for t in targets)


def test_png_converter_takes_the_maps_class_ids_and_writes_nothing_when_no_object_fits(tmp_path, capsys):
    """KITTI-STEP's maps (train id 13 = car) could not be given their ids: the conversion wrote a JSON of 0
    masks and exited 0."""
    label = np.zeros((H, W), np.uint16)
    label[0:10, 0:20] = 13 * 1000 + 1
    write_image(tmp_path / "step" / "images" / "f.png", width=W, height=H)
    (tmp_path / "step" / "instances").mkdir()
    cv2.imwrite(str(tmp_path / "step" / "instances" / "f.png"), label)
    out = tmp_path / "out.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the unknown class 13, counted
        with pytest.raises(SystemExit) as stop:
            convert_main(["--from", "png", "--src", str(tmp_path / "step"), "--dst", str(out)])
    assert stop.value.code == 2 and not out.exists()
    assert "no object of any class in its 1 images" in capsys.readouterr().err
    convert_main(["--from", "png", "--src", str(tmp_path / "step"), "--dst", str(out), "--class-ids", "13=Car"])
    assert [o.type for o in read_coco_instances(out)[0].objects] == ["Car"]
    with pytest.raises(SystemExit):
        convert_main(["--from", "png", "--src", str(tmp_path / "step"), "--dst", str(out), "--class-ids", "car=13"])
    assert "--class-ids: 'car' is not a class id" in capsys.readouterr().err


def test_converter_writes_vans_as_cars_like_training_on_the_kitti_folder(tmp_path, capsys):
    """The README's ``--classes Car Pedestrian Cyclist`` conversion must keep the vans the configs train as cars
    (``class_map: {Van: Car, ...}``), or convert-then-fit would learn them as background."""
    ids = np.zeros((H, W), np.uint16)
    ids[10:20, 0:30] = 1  # Van, 300 px
    ids[30:40, 40:60] = 2  # Car, 200 px
    ids[20:60, 100:108] = 3  # Truck: not a trained class either way
    ids[40:60, 70:80] = 4  # Person_sitting, 200 px
    labels = [("Van", (0, 10, 30, 20)), ("Car", (40, 30, 60, 40)), ("Truck", (100, 20, 108, 60))]
    labels.append(("Person_sitting", (70, 40, 80, 60)))
    _write_pair(tmp_path / "kitti", ids, labels)
    out = tmp_path / "coco" / "instances.json"
    classes = ["Car", "Pedestrian", "Cyclist"]
    convert_main(
        ["--from", "kitti", "--src", str(tmp_path / "kitti"), "--dst", str(out), "--classes", *classes]
    )
    printed = capsys.readouterr().out
    assert "renamed by --class-map: {'Van->Car': 1, 'Person_sitting->Pedestrian': 1}" in printed
    assert "not written (type not in --classes): {'Truck': 1}" in printed
    saved = json.loads(out.read_text())
    names = {c["id"]: c["name"] for c in saved["categories"]}
    written = sorted((names[a["category_id"]], a["area"]) for a in saved["annotations"])
    assert written == [("Car", 200), ("Car", 300), ("Pedestrian", 200)]
    # a set of vans alone converts to cars: the no-object check counts the objects after the renames
    vans = np.zeros((H, W), np.uint16)
    vans[10:20, 0:30] = 1
    _write_pair(tmp_path / "vans", vans, [("Van", (0, 10, 30, 20))])
    convert_main(["--from", "kitti", "--src", str(tmp_path / "vans"), "--dst", str(tmp_path / "v.json"), "--classes", "Car"])
    assert [o.type for o in read_coco_instances(tmp_path / "v.json")[0].objects] == ["Car"]

    # training targets from the JSON and from the KITTI folder: the same labels and masks
    def targets(fmt: str, path: Path) -> dict:
        class_map = {"Van": "Car", "Person_sitting": "Pedestrian"}  # the configs' class_map
        dm = InstanceDataModule(
            fmt, str(path), classes, class_map=class_map, num_workers=0, split_fractions=(1, 0, 0)
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the dropped Truck's LabelWarning; empty val / test splits
            dm.setup("fit")
        return dm.datasets["train"][0][1]

    from_json, from_kitti = targets("coco", out), targets("kitti", tmp_path / "kitti")
    assert sorted(from_json["labels"].tolist()) == sorted(from_kitti["labels"].tolist()) == [0, 0, 1]
    assert sorted(from_json["masks"].sum(dim=(1, 2)).tolist()) == [200, 200, 300]

    # no pairs: every name kept (Van its own category, renamed at read time by the data module's class_map)
    out2 = tmp_path / "coco" / "kept.json"
    convert_main(["--from", "kitti", "--src", str(tmp_path / "kitti"), "--dst", str(out2), "--class-map"])
    assert [c["name"] for c in json.loads(out2.read_text())["categories"]] == [
        "Car", "Van", "Truck", "Person_sitting", "DontCare"
    ]  # fmt: skip
    with pytest.raises(SystemExit):
        convert_main(
            ["--from", "kitti", "--src", str(tmp_path / "kitti"), "--dst", str(out2), "--class-map", "Van"]
        )
    assert "--class-map: 'Van' is not TYPE=CLASS" in capsys.readouterr().err


def test_augmentation_moves_masks_and_boxes_together(tmp_path):
    ids = np.zeros((H, W), np.uint16)
    ids[10:20, 0:30] = 1
    ids[30:60, 100:110] = 2
    _write_pair(tmp_path, ids, [("Car", (0, 10, 30, 20)), ("Pedestrian", (100, 30, 110, 60))])
    (ann,) = read_kitti_instances(tmp_path)
    flip = A.Compose([A.HorizontalFlip(p=1.0)], seed=0)
    _, target = InstanceDataset([ann], ["Car", "Pedestrian"], flip)[0]
    assert target["boxes"].tolist() == [[98.0, 10.0, 128.0, 20.0], [18.0, 30.0, 28.0, 60.0]]
    # a crop that cuts the pedestrian away drops its mask, box and label together
    crop = A.Compose([A.Crop(x_min=0, y_min=0, x_max=64, y_max=32)], seed=0)
    _, target = InstanceDataset([ann], ["Car", "Pedestrian"], crop)[0]
    assert target["labels"].tolist() == [0] and target["masks"].shape == (1, 32, 64)
    assert torch.equal(target["boxes"], mask_boxes(target["masks"]))


# ------------------------------------------------------------------------------------------------ metrics


def _mask(y1, y2, x1, x2, size=(40, 40)):
    m = torch.zeros(size, dtype=torch.bool)
    m[y1:y2, x1:x2] = True
    return m


def test_metrics_by_hand():
    gt_masks = torch.stack([_mask(0, 10, 0, 10), _mask(20, 30, 20, 40)])
    target = {"boxes": mask_boxes(gt_masks.byte()), "labels": torch.tensor([0, 1]), "masks": gt_masks}
    # perfect prediction: every AP is 1
    metric = InstanceMetrics(["Car", "Pedestrian"])
    metric.update([{**target, "scores": torch.tensor([0.9, 0.8])}], [target])
    values = metric.compute("val")
    for key in ("mask_map", "mask_map50", "box_map", "box_map50", "mask_ap50/Car", "mask_ap/Pedestrian"):
        assert values[f"val/{key}"] == pytest.approx(1.0), key
    # right box, wrong mask: the car's predicted mask is a quarter of its box (mask IoU 0.25 < 0.5), so its
    # mask AP50 is 0 while its box AP50 stays 1; the pedestrian is missed (recall 0 in both)
    quarter = _mask(0, 5, 0, 5)
    pred = {
        "boxes": target["boxes"][:1],
        "scores": torch.tensor([0.9]),
        "labels": torch.tensor([0]),
        "masks": quarter[None],
    }
    metric = InstanceMetrics(["Car", "Pedestrian"])
    metric.update([pred], [target])
    values = metric.compute("test")
    assert values["test/box_ap50/Car"] == pytest.approx(1.0) and values[
        "test/mask_ap50/Car"
    ] == pytest.approx(0.0)
    assert values["test/box_map50"] == pytest.approx(0.5) and values["test/mask_ap50/Pedestrian"] == 0.0
    # one of two same-class objects found: precision 1 up to recall 0.5, so 51 of COCO's 101 recall points
    target2 = {**target, "labels": torch.tensor([0, 0])}
    metric = InstanceMetrics(["Car"])
    metric.update([{**target2, "boxes": target2["boxes"][:1], "masks": gt_masks[:1], "labels": torch.tensor([0]),
                    "scores": torch.tensor([0.9])}], [target2])  # fmt: skip
    assert metric.compute("val")["val/mask_map50"] == pytest.approx(51 / 101, abs=1e-4)


def test_coco_keys_feed_the_logged_names_by_hand():
    """Each logged AP comes from its own torchmetrics key: a match at one IoU between COCO's thresholds makes AP,
    AP50, AP75, per-class AP and recall all differ. COCO: 10 IoU thresholds 0.50:0.05:0.95, a detection matches
    when its IoU reaches the threshold; AP = mean over 101 recall points of the interpolated precision (the best
    precision at that recall or beyond), averaged over the thresholds (and classes with ground truth)."""
    gt_masks = _mask(0, 10, 0, 10)[None]  # a 10x10 car
    target = {"boxes": mask_boxes(gt_masks.byte()), "labels": torch.tensor([0]), "masks": gt_masks}
    # an 8x9 mask inside it (mask IoU 72 / 100 = 0.72) with the ground truth's box (box IoU 1): the mask is
    # matched at 0.50, 0.55, 0.60, 0.65, 0.70 (AP 1 each), missed at 0.75 ... 0.95 (AP 0)
    inner = {**target, "masks": _mask(0, 8, 0, 9)[None], "scores": torch.tensor([0.9])}
    metric = InstanceMetrics(["Car", "Pedestrian"])
    metric.update([inner], [target])
    values = metric.compute("val")
    assert values["val/mask_map50"] == pytest.approx(1.0)
    assert values["val/mask_map"] == pytest.approx(0.5)  # 5 of 10 thresholds
    assert values["val/mask_map75"] == pytest.approx(0.0)
    assert values["val/mask_ap/Car"] == pytest.approx(0.5)
    assert values["val/mask_ap50/Car"] == pytest.approx(1.0)
    assert values["val/box_map"] == pytest.approx(1.0) and values["val/box_map75"] == pytest.approx(1.0)
    assert "val/mask_ap/Pedestrian" not in values  # no ground truth: COCO's -1, left out

    # plus a higher-scoring false car (disjoint mask and box): at each threshold where the car matches, the
    # ranking is FP (precision 0, recall 0), TP (precision 1/2, recall 1): precision 1/2 at all 101 recall
    # points -> AP 1/2 there, 0 elsewhere. Mask: AP50 1/2, AP75 0, AP 5 x 1/2 / 10 = 1/4, while recall at 100
    # detections stays 5/10 = 1/2 (a per-class AP read from the recall key would say 0.5). Box (IoU 1 for the
    # true car): AP 1/2 at every threshold.
    false = _mask(20, 30, 20, 30)[None]
    two = {
        "boxes": torch.cat([mask_boxes(false.byte()), target["boxes"]]),
        "labels": torch.tensor([0, 0]),
        "scores": torch.tensor([0.95, 0.9]),
        "masks": torch.cat([false, inner["masks"]]),
    }
    metric = InstanceMetrics(["Car", "Pedestrian"])
    metric.update([two], [target])
    values = metric.compute("test")
    assert values["test/mask_map50"] == pytest.approx(0.5)
    assert values["test/mask_map"] == pytest.approx(0.25)
    assert values["test/mask_map75"] == pytest.approx(0.0)
    assert values["test/mask_ap/Car"] == pytest.approx(0.25)
    assert values["test/mask_ap50/Car"] == pytest.approx(0.5)
    assert values["test/box_map"] == pytest.approx(0.5) and values["test/box_ap/Car"] == pytest.approx(0.5)
    assert values["test/box_map75"] == pytest.approx(0.5)


def test_min_height_ignores_small_ground_truth_by_hand():
    # a 10-px and a 20-px tall car; the model finds only the tall one
    gt_masks = torch.stack([_mask(0, 10, 0, 10), _mask(20, 40, 20, 30)])
    target = {"boxes": mask_boxes(gt_masks.byte()), "labels": torch.tensor([0, 0]), "masks": gt_masks}
    found_tall = {**target, "boxes": target["boxes"][1:], "masks": gt_masks[1:], "labels": torch.tensor([0]),
                  "scores": torch.tensor([0.9])}  # fmt: skip
    every, tall = InstanceMetrics(["Car"]), InstanceMetrics(["Car"], min_height=15)
    for metric in (every, tall):
        metric.update([found_tall], [target])
    assert every.compute("test")["test/mask_ap50/Car"] == pytest.approx(51 / 101, abs=1e-4)  # recall 0.5
    values = tall.compute("test")  # the short car is ignored: recall 1
    assert values["test/mask_h15_ap50/Car"] == pytest.approx(1.0)
    assert values["test/box_h15_map50"] == pytest.approx(1.0) and "test/mask_ap50/Car" not in values
    # a detection on an ignored (short) car is no false alarm: precision stays 1 for the tall one
    found_both = {**target, "scores": torch.tensor([0.95, 0.9])}
    tall = InstanceMetrics(["Car"], min_height=15)
    tall.update([found_both], [target])
    assert tall.compute("val")["val/mask_h15_map50"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="min_height"):
        InstanceMetrics(["Car"], min_height=-1)


def test_masks_in_ignore_fraction_by_hand():
    masks = torch.stack([_mask(0, 10, 0, 10), _mask(0, 10, 5, 15), _mask(30, 40, 30, 40)])
    ignore = _mask(0, 10, 0, 10)
    assert masks_in_ignore_fraction(masks, ignore).tolist() == [1.0, 0.5, 0.0]
    assert masks_in_ignore_fraction(masks, torch.zeros(40, 40, dtype=torch.bool)).tolist() == [0.0] * 3


# ---------------------------------------------------------------------------------------- model and task


def test_loss_falls_on_a_few_images(one_thread):
    torch.manual_seed(0)
    images, targets = _painted_batch(3, seed=8)  # 6 objects: 3 cars, 3 pedestrians
    model = RoadInstanceSegmenter(2, **TINY).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses, mask_losses = [], []
    for _ in range(25):
        parts = model(images, targets)
        assert all(torch.isfinite(v) for v in parts.values())
        loss = sum(parts.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        mask_losses.append(parts["loss_mask"].item())
    # seen here: total 0.41, mask 0.24 of their start (a model fed constant grey images: 0.27-0.34, 0.43-0.52)
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:3]), losses
    assert np.mean(mask_losses[-5:]) < 0.5 * np.mean(mask_losses[:3]), mask_losses
    # Only a model that sees finds the cars: a Car detection with box IoU > 0.5 and mask IoU > 0.5 to a
    # ground-truth car of its own image (seen: 2 of 3 cars at box IoU 0.72 and 0.65, mask IoU 0.69 and 0.62;
    # fed grey images, the same training finds none: every image gets the same detections, best IoU 0.07).
    model.eval()
    with torch.no_grad():
        preds = model(images)
    cars_found = 0
    for pred, target in zip(preds, targets):
        cars = pred["labels"] == 0
        for box, mask in zip(target["boxes"][target["labels"] == 0], target["masks"][target["labels"] == 0]):
            box_ious = _box_iou(pred["boxes"][cars], box[None].float())[:, 0]
            mask_iou = [_mask_iou(m > 0.5, mask.bool()) for m in pred["masks"][cars]]
            cars_found += any(b > 0.5 and m > 0.5 for b, m in zip(box_ious.tolist(), mask_iou))
    assert cars_found >= 2, cars_found
    with torch.no_grad():
        (out,) = model([torch.rand(3, 100, 300)])
    assert set(out) == {"boxes", "scores", "labels", "masks"}
    assert out["masks"].shape[1:] == (100, 300) and (out["labels"] < 2).all()


def test_evaluation_ignores_and_counts_detections_in_dontcare(monkeypatch):
    task = InstanceTask(network=RoadInstanceSegmenter(2, **TINY), class_names=["Car", "Pedestrian"])
    logged = {}
    monkeypatch.setattr(task, "log_dict", lambda values, **kw: logged.update(values))
    monkeypatch.setattr(task, "log", lambda name, value, **kw: logged.update({name: value}))
    gt_masks = _mask(0, 10, 0, 10)[None]
    ignore = _mask(20, 40, 20, 40)  # a DontCare region, 20x20
    target = {
        "boxes": mask_boxes(gt_masks.byte()),
        "labels": torch.tensor([0]),
        "masks": gt_masks.byte(),
        "ignore_mask": ignore,
    }
    # the true car (0.9); a higher-scoring car wholly inside DontCare (0.95): ignored, else it would rank first as
    # a false alarm (precision 1/2 at every recall: AP 0.5); a lower-scoring one (0.3) exactly half inside
    # (share 0.5 = ignore_overlap, not more): not counted; a crowd match at IoU 0.5, a false alarm ranked after
    # the true car at the higher thresholds (AP stays 1)
    inside, half = _mask(25, 35, 25, 35), _mask(15, 25, 20, 30)  # half: rows 15-19 outside, 20-24 inside
    assert masks_in_ignore_fraction(torch.stack([inside, half]), ignore).tolist() == [1.0, 0.5]
    masks = torch.stack([gt_masks[0], inside, half])
    preds = [
        {
            "boxes": mask_boxes(masks.byte()).float(),
            "scores": torch.tensor([0.9, 0.95, 0.3]),
            "labels": torch.tensor([0, 0, 0]),
            "masks": masks.float() * 0.8,  # probabilities above mask_thresh 0.5
        }
    ]
    task.model = FixedOutputs(preds)  # mask probabilities (N, H, W)
    task._evaluation_step(([torch.zeros(3, 40, 40)], [target]), "val")
    values = task._log_epoch_metrics("val")
    assert values["val/ignored_detections"] == 1
    assert values["val/mask_map50"] == pytest.approx(1.0) and values["val/mask_map"] == pytest.approx(1.0)
    assert values["val/box_map50"] == pytest.approx(1.0)
    assert logged["val/mask_map50"] == pytest.approx(1.0) and logged["val/ignored_detections"] == 1


def test_a_true_car_lying_mostly_in_dontcare_stays_a_hit():
    """COCO's crowd rule (the KITTI devkit's DontCare rule): a detection is ignored only when it matches no
    object. The car has 60 % of its pixels under a DontCare region; found exactly it is a hit (it was dropped
    before the metric: mask AP 0); a false alarm in the other, distant region is ignored, one outside counts."""
    car = _mask(0, 10, 0, 10)
    ignore = _mask(0, 10, 4, 20) | _mask(30, 40, 30, 40)  # two regions: over the car's right 60 %, far corner
    target = {"boxes": mask_boxes(car[None].byte()), "labels": torch.tensor([0]), "masks": car[None].byte(),
              "ignore_mask": ignore}  # fmt: skip

    def ap50(extra: torch.Tensor | None) -> dict:
        masks = torch.stack([car] if extra is None else [car, extra])
        pred = {"boxes": mask_boxes(masks.byte()).float(), "scores": torch.tensor([0.9, 0.95][: len(masks)]),
                "labels": torch.zeros(len(masks), dtype=torch.long), "masks": masks}  # fmt: skip
        metric = InstanceMetrics(["Car"])
        metric.update([pred], [target])
        return metric.compute("val")

    values = ap50(None)
    assert values["val/mask_map50"] == pytest.approx(1.0) and values["val/box_map50"] == pytest.approx(1.0)
    assert values["val/mask_map"] == pytest.approx(1.0)
    # a higher-scoring false alarm inside the far region: ignored (its box lies in that region's own box, not
    # in one box around both regions)
    assert ap50(_mask(32, 38, 32, 38))["val/mask_map50"] == pytest.approx(1.0)
    assert ap50(_mask(32, 38, 32, 38))["val/box_map50"] == pytest.approx(1.0)
    # the same false alarm between the regions ranks first: precision 1/2 at recall 1
    assert ap50(_mask(22, 28, 22, 28))["val/mask_map50"] == pytest.approx(0.5, abs=0.01)
    assert ap50(_mask(22, 28, 22, 28))["val/box_map50"] == pytest.approx(0.5, abs=0.01)

    # through the task: the detection is counted as lying mostly in DontCare, and scored as the hit it is
    task = InstanceTask(network=RoadInstanceSegmenter(1, **TINY), class_names=["Car"])
    task.log_dict = task.log = lambda *args, **kwargs: None
    pred = {"boxes": target["boxes"].float(), "scores": torch.tensor([0.9]), "labels": torch.tensor([0]),
            "masks": car[None].float() * 0.8}  # fmt: skip
    task.model = FixedOutputs([pred])
    task._evaluation_step(([torch.zeros(3, 40, 40)], [target]), "val")
    values = task._log_epoch_metrics("val")
    assert values["val/ignored_detections"] == 1 and values["val/mask_map50"] == pytest.approx(1.0)


def test_detector_backbone_transfers_into_the_instance_model(tmp_path):

    torch.manual_seed(0)
    detector = detection_task(
        backbone="tiny_cnn", backbone_kwargs={"width": 8}, fpn_channels=32, head_convs=1
    )
    ckpt = tmp_path / "detector.ckpt"
    torch.save({"state_dict": detector.state_dict()}, ckpt)
    task = InstanceTask(
        network=RoadInstanceSegmenter(3, **TINY),
        pretrained_backbone=str(ckpt),
        pretrained_prefix="model.detector.backbone.body.",
    )
    source = detector.model.backbone.state_dict()
    target = task.model.backbone.state_dict()
    assert source.keys() == target.keys()
    assert all(torch.equal(source[k], target[k]) for k in source)


def _mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum() / (a | b).sum().clamp(min=1))


def _painted_batch(n: int, seed: int) -> tuple[list[torch.Tensor], list[dict]]:
    rng = np.random.default_rng(seed)
    images, targets = [], []
    for image, objects in (painted_scene(rng, H, W) for _ in range(n)):
        images.append(torch.from_numpy(image.transpose(2, 0, 1).copy()).float() / 255)
        masks = torch.zeros(len(objects), H, W, dtype=torch.uint8)
        for k, (_, (x1, y1, x2, y2)) in enumerate(objects):
            masks[k, y1:y2, x1:x2] = 1
        labels = torch.tensor([0 if name == "Car" else 1 for name, _ in objects])
        targets.append({"masks": masks, "boxes": mask_boxes(masks), "labels": labels})
    return images, targets


def _train_steps(model: RoadInstanceSegmenter, steps: int) -> None:
    images, targets = _painted_batch(2, seed=3)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_frozen_backbone_keeps_its_weights_and_batchnorm_statistics_while_the_heads_learn(one_thread):
    torch.manual_seed(0)
    frozen = RoadInstanceSegmenter(2, **TINY, freeze_backbone=True)
    trained = RoadInstanceSegmenter(2, **TINY)
    trained.load_state_dict(frozen.state_dict())  # same keys: checkpoints of either load into the other
    assert not any(p.requires_grad for p in frozen.backbone.parameters())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in frozen.backbone.modules())
    for model in (frozen, trained):
        model.eval().train()  # as Lightning's fit starts
    assert not frozen.backbone.training and frozen.segmenter.rpn.training and trained.backbone.training
    start = {k: v.clone() for k, v in frozen.state_dict().items()}
    for model in (frozen, trained):
        _train_steps(model, steps=2)

    def changed(model, part):
        after = model.state_dict()
        return [k for k in start if k.startswith(part) and not torch.equal(after[k], start[k])]

    backbone = "segmenter.backbone.body."
    assert changed(frozen, backbone) == []  # weights, running means and variances, batch counts
    assert changed(frozen, "segmenter.roi_heads.mask_head") and changed(frozen, "segmenter.backbone.fpn")
    # the same steps move an unfrozen backbone and its statistics
    trained_changes = changed(trained, backbone)
    assert any(k.endswith("running_mean") for k in trained_changes)
    assert any(k.endswith("weight") for k in trained_changes)


def _cli_args(data: Path, *extra: str) -> list[str]:
    args = ["-c", str(QUICK_CONFIG), "--data.data_path", str(data), "--data.num_workers", "0"]
    args += ["--data.batch_size", "2", "--data.image_size", "null", "--trainer.enable_progress_bar", "false"]
    args += ["--trainer.enable_model_summary", "false"]
    for key, value in TINY.items():
        value = (
            value
            if isinstance(value, str)
            else json.dumps(list(value) if isinstance(value, tuple) else value)
        )
        args += [f"--model.network.init_args.{key}", value]
    return args + list(extra)


@pytest.fixture(scope="module")
def short_fit(tmp_path_factory, one_thread) -> tuple[Path, Path]:
    """Eight painted scenes and the checkpoint of a plain two-step CLI fit on them (read only)."""
    from domains.driving.instances.__main__ import main

    root = tmp_path_factory.mktemp("instances_fit")
    data = make_instance_kitti(root / "kitti", n=8)
    with contextlib.chdir(root):  # logs land there, not in the repository
        main(["fit", *_cli_args(data, "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1")])
    return data, root / "lightning_logs/driving_instances/quick/checkpoints/last.ckpt"


def test_cli_fit_fast_dev_run_and_predict_writes_maps_and_overlays(short_fit, tmp_path, monkeypatch):
    from domains.driving.instances.__main__ import main

    data, ckpt = short_fit
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # fit + validate under bf16 autocast (the float32 path runs below)
        cli = main(
            ["fit", *_cli_args(data, "--trainer.fast_dev_run", "1", "--trainer.precision", "bf16-mixed")]
        )
    assert cli.trainer.global_step == 1
    metrics = cli.trainer.callback_metrics
    assert {"val/mask_map50", "val/box_map50", "train/loss_mask"} <= set(metrics)

    # the plain two-step fit (short_fit) wrote last.ckpt
    assert ckpt.is_file()
    loaded = load_instance_task(ckpt)
    assert isinstance(loaded.model, RoadInstanceSegmenter) and loaded.class_names == [
        "Car",
        "Pedestrian",
        "Cyclist",
    ]
    out = tmp_path / "pred"
    predict = ["--ckpt_path", str(ckpt), "--model.predict_dir", str(out), "--model.score_thresh", "0.0"]
    cli = main(["predict", *_cli_args(data, *predict, "--model.predict_score_thresh", "0.0")])
    test_ids = {a.image_id for a in cli.datamodule.splits["test"]}
    assert test_ids and {p.stem for p in (out / "instances").glob("*.png")} == test_ids
    written = sum(len((out / "instances" / f"{i}.txt").read_text().splitlines()) for i in test_ids)
    assert written > 0  # score thresholds 0: the two-step model's detections are all written
    for image_id in test_ids:
        ids = cv2.imread(str(out / "instances" / f"{image_id}.png"), cv2.IMREAD_UNCHANGED)
        assert ids.dtype == np.uint16 and ids.shape == (H, W)
        lines = (out / "instances" / f"{image_id}.txt").read_text().splitlines()
        assert ids.max() <= len(lines) and all(len(line.split()) == 7 for line in lines)
        overlay = cv2.imread(str(out / "overlays" / f"{image_id}.png"))
        assert overlay is not None and overlay.shape == (H, W, 3)

    # test and predict under bf16 autocast (CPU here; the path a GPU takes): masks and metrics get float32.
    # The two-step network finds nothing (every AP 0, as a metric stuck at 0 would say): test scores the test
    # images' own objects as its detections (boxes and scores in bf16, as autocast leaves them), every AP 1
    def ground_truth_detections(task, batch, batch_idx):
        task.model = FixedOutputs([
            {"boxes": t["boxes"].bfloat16(), "scores": torch.ones(len(t["labels"]), dtype=torch.bfloat16),
             "labels": t["labels"], "masks": t["masks"].float()}
            for t in batch[1]
        ])  # fmt: skip
        return evaluate(task, batch, batch_idx)

    evaluate = InstanceTask.test_step
    bf16 = ["--ckpt_path", str(ckpt), "--trainer.precision", "bf16-mixed", "--model.score_thresh", "0.0"]
    with warnings.catch_warnings(), monkeypatch.context() as patch:
        warnings.simplefilter("ignore")
        patch.setattr(InstanceTask, "test_step", ground_truth_detections)
        cli = main(["test", *_cli_args(data, *bf16, "--model.min_heights", "[8]")])
        metrics = cli.trainer.callback_metrics
        for name in ("mask_map50", "mask_map", "box_map50", "mask_h8_map50"):
            assert float(metrics[f"test/{name}"]) == pytest.approx(1.0), name
        assert {v.dtype for v in metrics.values()} == {torch.float32}
        out = tmp_path / "pred_bf16"
        main(["predict", *_cli_args(data, *bf16, "--model.predict_dir", str(out))])
    assert {p.stem for p in (out / "instances").glob("*.png")} == test_ids
    for image_id in test_ids:
        ids = cv2.imread(str(out / "instances" / f"{image_id}.png"), cv2.IMREAD_UNCHANGED)
        assert ids.dtype == np.uint16 and ids.shape == (H, W)


def test_cli_frozen_backbone_needs_all_its_weights_from_a_file_or_a_checkpoint(short_fit, tmp_path, monkeypatch):
    """A new fit with a frozen backbone is refused without weights for it, or with a file that leaves part of it
    unloaded (a wrong prefix); resuming from a checkpoint, which holds the backbone, is not."""
    from domains.driving.instances.__main__ import main

    data, ckpt = short_fit  # trained, not frozen: the checkpoint holds a whole backbone
    monkeypatch.chdir(tmp_path)
    frozen = ["--model.network.init_args.freeze_backbone", "true"]
    with pytest.raises(
        ValueError, match=r"freeze_backbone is true but no --model.pretrained_backbone was given"
    ):
        main(["fit", *_cli_args(data, *frozen, "--trainer.fast_dev_run", "1")])
    short = ["--trainer.max_steps", "1", "--trainer.limit_val_batches", "1", "--trainer.logger", "false"]
    wrong_prefix = ["--model.pretrained_backbone", str(ckpt), "--model.pretrained_prefix", "model.segmenter."]
    # a prefix that loads nothing is refused when the task is built (frozen or not); a partial load is the
    # frozen-backbone check's (tests/driving/accident/test_task.py)
    with pytest.raises(
        ValueError, match=r"no tensor matched backbone 'tiny_cnn' \(prefix 'model\.segmenter\.'\)"
    ):
        main(["fit", *_cli_args(data, *frozen, *wrong_prefix, "--trainer.fast_dev_run", "1")])
    right_prefix = [
        "--model.pretrained_backbone",
        str(ckpt),
        "--model.pretrained_prefix",
        "model.segmenter.backbone.body.",
    ]
    frozen_dir = ["--checkpoint.dirpath", str(tmp_path / "frozen")]
    cli = main(["fit", *_cli_args(data, *frozen, *right_prefix, *short, *frozen_dir)])
    assert cli.trainer.global_step == 1 and cli.model.model.backbone_frozen
    resume = ["--ckpt_path", str(tmp_path / "frozen/last.ckpt"), "--trainer.max_steps", "2"]
    resume += ["--trainer.max_epochs", "3", "--trainer.limit_val_batches", "1", "--trainer.logger", "false"]
    cli = main(["fit", *_cli_args(data, *resume, *frozen_dir)])  # no weights file: the checkpoint has them
    assert cli.trainer.global_step == 2 and cli.model.model.backbone_frozen


def test_transfer_config_trains_heads_on_the_shipped_detector_backbone(tmp_path, monkeypatch, one_thread):
    """transfer.yaml (mobilenet_v3_large at 384x1280, the demo detector's backbone, frozen; the weights file given
    by its absolute path, as the test runs elsewhere): one step on tiny scenes leaves the backbone equal to the
    file's weights."""
    from safetensors.torch import load_file

    from domains.driving.instances.__main__ import main

    data = make_instance_kitti(tmp_path / "kitti", n=8)
    monkeypatch.chdir(tmp_path)
    args = ["-c", str(TRANSFER_CONFIG), "--data.data_path", str(data), "--data.num_workers", "0"]
    args += ["--data.image_size", "null", "--trainer.fast_dev_run", "1"]
    args += ["--trainer.enable_progress_bar", "false", "--model.pretrained_backbone", str(SHIPPED_DETECTOR)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = main(["fit", *args])
    assert cli.trainer.global_step == 1 and cli.model.model.backbone_frozen
    prefix = "detector.backbone.body."
    shipped = {
        k.removeprefix(prefix): v for k, v in load_file(SHIPPED_DETECTOR).items() if k.startswith(prefix)
    }
    after = cli.model.model.backbone.state_dict()
    kept = [k for k in shipped if k in after and torch.equal(after[k], shipped[k])]
    assert len(kept) == len(shipped) > 100, (len(kept), len(shipped))


def test_benchmark_table_names_the_frozen_backbone_and_scores_heights_in_the_scored_pixels():
    """benchmarks/driving_instances.py on transfer.yaml: KITTI Moderate's 25 px of a 375-px frame are 12.8 px of
    the 192-px tensors the metrics see (not of the 384-px network input), and the table says what was frozen and
    what size the network ran at."""
    from argparse import Namespace

    import yaml

    from benchmarks.driving_instances import markdown, moderate_height

    config = yaml.safe_load(TRANSFER_CONFIG.read_text())
    model_kw, data_kw = config["model"], config["data"]
    assert moderate_height(data_kw) == 12.8
    model_kw["min_heights"] = [moderate_height(data_kw)]  # as run() sets it
    with pytest.raises(ValueError, match=r"x.yaml: data.image_size is null"):  # the files' own sizes: unknown
        moderate_height({**data_kw, "image_size": None}, "x.yaml")
    metrics = {
        "test/mask_ap50/Car": 0.6,
        "test/box_ap50/Car": 0.65,
        "test/mask_map50": 0.3,
        "test/box_map50": 0.4,
    }
    result = {
        "metrics": metrics, "config": model_kw, "data": data_kw, "device": "CPU", "steps": 10, "n_train": 20,
        "train_seconds": 60.0, "n_test": 5, "inference_ms": 100.0, "inference_size": (192, 640),
        "load_average": (0.5, 1.5),
    }  # fmt: skip
    argv = ["--budget-minutes", "1", "--config", "my config.yaml"]  # main(argv)'s own, not pytest's sys.argv
    text = markdown(result, Namespace(budget_minutes=1, precision="32-true", test_batches=None, argv=argv))
    assert "backbone mobilenet_v3_large (frozen), input [384, 1280]" in text
    assert "(batch 1, 640x192 images, scaled to the network's 1280x384)" in text
    assert "| Car | 0.600 | 0.650 | -0.050 |" in text and "| **mean** | 0.300 | 0.400 | -0.100 |" in text
    assert "under 12.8 px tall in the scored 640x192 frames" in text
    # a 1-minute run is a smoke run: its targets are not judged; at the benchmark's budget they are
    assert "**Smoke run**: 1 of the benchmark's 15 minutes" in text and "(not judged (smoke run))" in text
    full = markdown(result, Namespace(budget_minutes=15, precision="32-true", test_batches=None, argv=argv))
    assert "Car mask AP50 >= 0.6: 0.600 (met)" in full and "largest shortfall 0.050 (met)" in full
    assert text.rstrip().splitlines()[-1] == (
        "Command: `.venv/bin/python benchmarks/driving_instances.py --budget-minutes 1 --config 'my config.yaml'`"
    )


def test_predict_brings_only_the_written_detections_masks_to_the_photos_size():
    """All 100 detections' float maps at a 12 MP photo's size took 5.7 GB, for detections none of which was
    written (below predict_score_thresh)."""
    task = InstanceTask(network=RoadInstanceSegmenter(3, **TINY), predict_score_thresh=0.5)
    probs = torch.zeros(3, 20, 20)
    probs[0, 2:10, 4:12] = 0.9  # kept
    probs[1, 0:5, 0:5] = 0.9  # scored 0.2: below predict_score_thresh
    probs[2, 12:20, 12:20] = 0.5  # kept: exactly mask_thresh (0.5), scored exactly predict_score_thresh
    preds = [{"boxes": torch.tensor([[4.0, 2, 12, 10], [0, 0, 5, 5], [12, 12, 20, 20]]), "scores": torch.tensor([0.9, 0.2, 0.5]),
              "labels": torch.tensor([0, 1, 0]), "masks": probs}]  # fmt: skip
    task.model = FixedOutputs(preds)
    (out,) = task.predict_step(([torch.zeros(3, 20, 20)], [{"orig_size": (40, 60), "image_id": "x"}]), 0)
    assert out["scores"].tolist() == pytest.approx([0.9, 0.5]) and out["labels"].tolist() == [0, 0]
    assert out["masks"].shape == (2, 40, 60) and out["masks"].dtype == torch.bool
    whole = torch.nn.functional.interpolate(probs[[0, 2], None], size=(40, 60), mode="bilinear", align_corners=False)
    assert torch.equal(out["masks"], whole[:, 0] >= task.mask_thresh)  # as the whole stack gave
    assert out["boxes"].tolist() == [[12.0, 4.0, 36.0, 20.0], [36.0, 24.0, 60.0, 40.0]]  # x 3, x 2
    # rows y with (y + 0.5) / 2 - 0.5 >= 12, columns x with (x + 0.5) / 3 - 0.5 >= 12 read only 0.5s: at the
    # threshold, so in the mask (a pixel *reaching* mask_thresh belongs to the instance)
    at_thresh = torch.zeros(40, 60, dtype=torch.bool)
    at_thresh[25:, 37:] = True
    assert torch.equal(out["masks"][1], at_thresh)
    # the photo's own size (no resizing): thresholded as they are, 0.5 included
    (same,) = task.predict_step(([torch.zeros(3, 20, 20)], [{"orig_size": (20, 20), "image_id": "y"}]), 0)
    assert torch.equal(same["masks"], probs[[0, 2]] > 0)
    assert same["image_path"] is None and same["as_stored"] is False  # no data module: nothing known
    # an image of an instance-map layout is drawn on as stored, as its masks are (EXIF orientation aside)
    task.image_record = lambda image_id: InstanceAnnotation(f"/data/{image_id}.jpg", 20, 20, [], as_stored=True)
    (known,) = task.predict_step(([torch.zeros(3, 20, 20)], [{"orig_size": (20, 20), "image_id": "z"}]), 0)
    assert known["image_path"] == "/data/z.jpg" and known["as_stored"] is True
