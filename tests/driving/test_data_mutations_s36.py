"""Driving readers and converters on inputs a mutation audit found no test looking at: a non-square COCO
instance image, Cityscapes' instance ids, a first-class crowd, converter splits / classes / file names, stale
sequence maps, class-mapped KITTI types, turned JPEGs, a test split that leaks train, and 12 YOLO names."""

from __future__ import annotations

import json
import warnings

import cv2
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from domains.driving import convert
from domains.driving.detection.data import DetectionDataModule
from domains.driving.detection.predict import coco_result_ids, tensor_to_rgb
from domains.driving.formats import (
    DropLog,
    ImageAnnotation,
    LabelWarning,
    ObjectLabel,
    image_size,
    read_kitti_dir,
    write_yolo,
    yolo_names,
)
from domains.driving.instances import convert as instances_convert
from domains.driving.instances.convert import write_coco_instances
from domains.driving.instances.data import (
    InstanceAnnotation,
    InstanceDataset,
    InstanceObject,
    decode_masks,
    encode_masks,
    read_coco_instances,
    read_kitti_instances,
    read_png_instances,
)
from tests.driving.layouts import write_instance_kitti
from tests.driving.test_instances import H, W, _coco
from tests.driving.test_instances_audit_fixes import _png_set
from tests.driving.test_own_masks_and_conversions import _kitti, _yolo
from tests.helpers import write_image

CAR = ObjectLabel("Car", (10, 10, 40, 40))

# ------------------------------------------------------------------------------------ instance readers


def test_a_coco_polygon_right_of_the_images_height_is_read_where_it_lies(tmp_path):
    """On a 128x64 image a polygon at x 100-120 lies past x = height: it is inside the image (checked against
    its width) and rasterised on the (H, W) grid, not dropped nor drawn transposed."""
    assert (W, H) == (128, 64)
    path = _coco(tmp_path, [{"id": 1, "segmentation": [[100, 20, 120, 20, 120, 40, 100, 40]]}])
    (ann,) = read_coco_instances(path, strict=True)
    (obj,) = ann.objects
    assert obj.type == "Car" and list(obj.rle["size"]) == [H, W]
    ys, xs = np.nonzero(decode_masks([obj.rle], H, W)[0])
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (100, 119, 20, 39)
    assert len(xs) == 20 * 20


def test_a_coco_crowd_of_the_first_class_ignores_that_class(tmp_path):
    """Class index 0 is a class: its crowd is a crowd region labelled 0, not an ignore-all region nor lost."""
    square = [[10, 10, 30, 10, 30, 30, 10, 30]]
    path = _coco(
        tmp_path,
        [
            {"id": 1, "category_id": 2, "segmentation": [[60, 10, 80, 10, 80, 30, 60, 30]]},
            {"id": 2, "category_id": 1, "iscrowd": 1, "segmentation": square},
        ],
    )
    _, target = InstanceDataset(read_coco_instances(path, strict=True), ["Car", "Pedestrian"])[0]
    assert target["crowd_labels"].tolist() == [0]
    assert tuple(target["crowd_masks"].shape) == (1, H, W)
    assert int(target["crowd_masks"][0, 10:30, 10:30].sum()) == 400 == int(target["crowd_masks"].sum())
    assert target["labels"].tolist() == [1]


def test_every_cityscapes_instance_id_reads_as_its_class(tmp_path):
    """Cityscapes' label ids 24-33 (person, rider, car, truck, bus, caravan, trailer, train, motorcycle,
    bicycle) as class_id * 1000 + 1: each listed one is its class (rider: Cyclist); caravan and trailer (no
    class of the suite) are counted as unknown."""
    label = np.zeros((32, 64), np.uint16)
    for i, class_id in enumerate(range(24, 34)):
        label[:, 6 * i : 6 * i + 6] = class_id * 1000 + 1
    log = DropLog()
    (ann,) = read_png_instances(_png_set(tmp_path, label), log=log)
    assert [o.type for o in ann.objects] == [
        "Pedestrian", "Cyclist", "Car", "Truck", "Bus", "Train", "Motorcycle", "Bicycle",
    ]  # fmt: skip
    assert [o.crowd_class for o in ann.objects] == [None] * 8
    assert dict(log.counts) == {"unknown_class": 2}
    first, second = log.examples["unknown_class"]
    assert "class id 29" in first and "class id 30" in second


# ------------------------------------------------------------------------------------ instance converter


def test_the_instance_converter_writes_a_masks_tight_xywh_box(tmp_path):
    """A mask over x 20-59, y 5-14 of a 100x50 image: COCO bbox [x, y, width, height] = [20, 5, 40, 10]."""
    mask = np.zeros((1, 50, 100), np.uint8)
    mask[0, 5:15, 20:60] = 1
    image = write_image(tmp_path / "a.png", width=100, height=50)
    ann = InstanceAnnotation(str(image), 100, 50, [InstanceObject("Car", encode_masks(mask)[0])])
    write_coco_instances([ann], tmp_path / "x.json", ["Car"])
    (written,) = json.loads((tmp_path / "x.json").read_text())["annotations"]
    assert written["bbox"] == [20.0, 5.0, 40.0, 10.0] and written["area"] == 400


def test_a_source_without_sequences_removes_an_older_conversions_sequence_map(tmp_path):
    """Converting a KITTI set with drives writes out.sequences.txt; a png set converted over it with
    --overwrite has none, and the old map (naming images the new JSON lacks) must not stay beside it."""
    kitti = write_instance_kitti(tmp_path / "kitti", n=4, sequences=True)
    out = tmp_path / "out.json"
    instances_convert.main(["--from", "kitti", "--src", str(kitti), "--dst", str(out)])
    assert out.with_suffix(".sequences.txt").is_file()
    label = np.zeros((32, 64), np.uint16)
    label[2:8, 3:9] = 26001  # a Cityscapes car
    png = _png_set(tmp_path / "png", label)
    instances_convert.main(["--from", "png", "--src", str(png), "--dst", str(out), "--overwrite"])
    assert not out.with_suffix(".sequences.txt").exists()
    assert [i["file_name"] for i in json.loads(out.read_text())["images"]] == ["png/images/f.png"]


# ------------------------------------------------------------------------------------ detection converter


def test_yolo_to_yolo_keeps_the_test_split(tmp_path):
    src = _yolo(
        tmp_path / "src", "train: images/train\nval: images/val\ntest: images/test\nnames: [Car]\n",
        splits=("train", "val", "test"),
    )  # fmt: skip
    dst = tmp_path / "dst"
    assert convert.main(["--from", "yolo", "--to", "yolo", "--src", str(src), "--dst", str(dst)]) == 0
    data = yaml.safe_load((dst / "data.yaml").read_text())
    assert {s: data.get(s) for s in ("train", "val", "test")} == {
        "train": "images/train", "val": "images/val", "test": "images/test",
    }  # fmt: skip
    for split in ("train", "val", "test"):
        assert (dst / "labels" / split / "a.txt").read_text().split() == ["0", "0.5", "0.5", "0.2", "0.2"]


def test_kitti_to_kitti_with_classes_writes_only_those_classes(tmp_path):
    src = _kitti(
        tmp_path / "k",
        ["Car 0.00 0 -10 10 10 50 40 1 1 1 1 1 1 0", "Pedestrian 0.00 0 -10 60 10 70 40 1 1 1 1 1 1 0"],
    )
    dst = tmp_path / "o"
    args = ["--from", "kitti", "--to", "kitti", "--src", str(src), "--dst", str(dst), "--classes", "Car"]
    assert convert.main(args) == 0
    (written,) = read_kitti_dir(dst)
    assert [(o.type, o.bbox) for o in written.objects] == [("Car", (10.0, 10.0, 50.0, 40.0))]
    assert (dst / "training" / "label_2" / "000000.txt").read_text().count("\n") == 1


def test_yolo_images_of_one_name_in_two_folders_stay_two_coco_images(tmp_path):
    """images/train/a/000001.png and images/train/b/000001.png: COCO's images/ gets one file each, each the
    pixels of its own source (not one overwriting the other)."""
    src = tmp_path / "src"
    for folder, value, x in (("a", 10, "0.3"), ("b", 200, "0.7")):
        image = src / "images" / "train" / folder / "000001.png"
        image.parent.mkdir(parents=True)
        cv2.imwrite(str(image), np.full((50, 100, 3), value, np.uint8))
        (src / "labels" / "train" / folder).mkdir(parents=True)
        (src / "labels" / "train" / folder / "000001.txt").write_text(f"0 {x} 0.5 0.2 0.2\n")
    (src / "data.yaml").write_text("train: images/train\nnames: [Car]\n")
    dst = tmp_path / "dst"
    args = ["--from", "yolo", "--to", "coco", "--src", str(src / "data.yaml"), "--dst", str(dst)]
    assert convert.main(args) == 0
    data = json.loads((dst / "annotations.json").read_text())
    files = {i["id"]: i["file_name"] for i in data["images"]}
    assert len(set(files.values())) == 2
    by_box = {a["bbox"][0]: files[a["image_id"]] for a in data["annotations"]}
    assert sorted(by_box) == [20.0, 60.0]  # x centre 0.3 / 0.7 of 100 px, 20 px wide
    for left, value in ((20.0, 10), (60.0, 200)):
        pixels = cv2.imread(str(dst / by_box[left]))
        assert pixels.shape == (50, 100, 3) and (pixels == value).all()


# ------------------------------------------------------------------------------------ detection data


def test_a_kitti_type_renamed_by_the_class_map_is_read(tmp_path):
    """Motorbike is no KITTI type; class_map {Motorbike: Cyclist} names it, so the reader keeps it."""
    src = _kitti(tmp_path / "k", ["Motorbike 0.00 0 -10 10 10 40 40 1 1 1 1 1 1 0"])
    dm = DetectionDataModule(
        "kitti", str(src), class_names=["Cyclist"], class_map={"Motorbike": "Cyclist"}, num_workers=0,
        split_fractions=(1.0, 0.0, 0.0),
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error", LabelWarning)  # nothing dropped
        dm.setup("fit")
    assert dm.datasets["train"].objects == 1
    _, target = dm.datasets["train"][0]
    assert target["labels"].tolist() == [0]  # Cyclist, the first class


def test_a_yolo_test_split_that_is_the_train_folder_warns(tmp_path):
    text = "train: images/train\nval: images/val\ntest: images/train\nnames: [Car]\n"
    src = _yolo(tmp_path, text, splits=("train", "val"))
    dm = DetectionDataModule("yolo", str(src), class_names=["Car"], num_workers=0)
    leak = r"1 of the test split's 1 images are also in train \(e\.g\. .*train/a\.png\)"
    with pytest.warns(LabelWarning, match=leak):
        dm.setup("fit")


# ------------------------------------------------------------------------------------------------ formats


@pytest.mark.parametrize(
    "orientation, size", [(1, (20, 40)), (5, (40, 20)), (6, (40, 20)), (7, (40, 20)), (8, (40, 20))]
)
def test_image_size_swaps_for_every_turning_exif_orientation(tmp_path, orientation, size):
    """EXIF orientations 5-8 turn the picture a quarter (5 and 7 also mirror it): OpenCV decodes it turned."""
    image = Image.new("RGB", (40, 20))
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(tmp_path / "a.jpg", exif=exif.tobytes())
    assert image_size(tmp_path / "a.jpg") == size == cv2.imread(str(tmp_path / "a.jpg")).shape[:2]
    assert image_size(tmp_path / "a.jpg", as_stored=True) == (20, 40)


def test_yolo_names_as_a_dict_of_twelve_keep_index_order(tmp_path):
    names = "".join(f"  {i}: c{i}\n" for i in range(12))  # as yaml orders them: 0, 1, 2, ..., 11
    (tmp_path / "data.yaml").write_text(f"train: images\nnames:\n{names}")
    assert yolo_names(tmp_path / "data.yaml") == [f"c{i}" for i in range(12)]


# ------------------------------------------------------------------------------------------------ minor


def test_only_a_visible_kitti_line_without_pixels_is_counted(tmp_path):
    """Lines 2 (occlusion 2: largely occluded) and 3 (occlusion 1) have no pixel in the map: only line 3, said
    visible, shows the map and labels disagree."""
    line = "Car 0.00 {} 0 {} 10 {} 40 1 1 1 1 1 1 0"
    src = _kitti(tmp_path / "k", [line.format(0, 10, 40), line.format(2, 60, 90), line.format(1, 100, 130)])
    instance = np.zeros((100, 200), np.uint16)
    instance[10:40, 10:40] = 1
    (src / "training" / "instance").mkdir()
    cv2.imwrite(str(src / "training" / "instance" / "000000.png"), instance)
    log = DropLog()
    (ann,) = read_kitti_instances(src, log=log)
    assert [o.map_id for o in ann.objects] == [1]
    assert dict(log.counts) == {"label_without_pixels": 1}
    (example,) = log.examples["label_without_pixels"]
    assert "000000.txt:3: Car (instance id 3, occlusion 1: visible)" in example


def test_max_items_caps_each_own_yolo_split_at_that_many(tmp_path):
    for split in ("train", "val"):
        records = [
            ImageAnnotation(str(write_image(tmp_path / "img" / f"{split}{i}.png", 100, 50)), 100, 50, [CAR])
            for i in range(3)
        ]
        source = write_yolo(records, tmp_path / "y", ["Car"], split=split)
    dm = DetectionDataModule("yolo", str(source), class_names=["Car"], num_workers=0, max_items=2)
    dm.setup("fit")
    assert {name: len(items) for name, items in dm.splits.items()} == {"train": 2, "val": 2}


@pytest.mark.parametrize("category_ids, expected", [([3], [3, None]), ([3, 7], [None, None])])
def test_coco_result_ids_name_a_class_only_by_its_one_category(tmp_path, category_ids, expected):
    """Two categories named Car: which one a detection belongs to cannot be told, so Car gets no id."""
    categories = [{"id": i, "name": "Car"} for i in category_ids]
    (tmp_path / "c.json").write_text(json.dumps({"images": [], "annotations": [], "categories": categories}))
    assert coco_result_ids(tmp_path / "c.json", ["Car", "Pedestrian"])[1] == expected


def test_tensor_to_rgb_resizes_to_height_by_width():
    image = torch.zeros(3, 10, 20)
    image[0, :, 10:] = 1.0  # right half red
    rgb = tensor_to_rgb(image, (30, 40))
    assert rgb.shape == (30, 40, 3)
    assert rgb[:, :19, 0].max() == 0 and rgb[:, 21:, 0].min() == 255
