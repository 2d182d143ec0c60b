"""Driving data in the layouts people bring: repeated file names across folders, palette and colour label maps,
deep images, KITTI instance labels checked like detection's, ``class_map`` in KITTI AP, empty splits."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from domains.driving.common import predict_images, read_label_map, read_rgb
from domains.driving.detection.data import DetectionDataModule
from domains.driving.detection.metrics import FEW_OBJECTS_WARNING, kitti_average_precision
from domains.driving.detection.task import _kitti_ground_truth
from domains.driving.formats import (
    ImageAnnotation,
    LabelFormatError,
    LabelWarning,
    ObjectLabel,
    read_coco,
    read_yolo,
)
from domains.driving.instances.data import (
    KITTI_STEP_DIVISOR,
    decode_masks,
    read_coco_instances,
    read_kitti_instances,
    read_png_instances,
)
from shared import images
from tests.driving.layouts import KITTI_LINE
from tests.helpers import write_image


def _two_drives(root: Path) -> list[str]:
    """``drive_a/000000.png``, ``drive_a/000001.png`` and ``drive_b/000000.png``: file names that repeat."""
    names = ["drive_a/000000.png", "drive_a/000001.png", "drive_b/000000.png"]
    for name in names:
        write_image(root / name, width=30, height=20)
    return names


def test_coco_images_whose_names_repeat_across_folders_keep_apart(tmp_path):
    """Both 000000.png were one id: predict wrote one over the other and KITTI AP scored the wrong image."""
    names = _two_drives(tmp_path)
    images_ = [{"id": i, "file_name": n, "width": 30, "height": 20} for i, n in enumerate(names)]
    annotations = [{"id": 1, "image_id": 2, "bbox": [1, 2, 10, 8], "category_id": 1}]
    data = {"images": images_, "annotations": annotations, "categories": [{"id": 1, "name": "Car"}]}
    (tmp_path / "ann.json").write_text(json.dumps(data))
    for reader in (read_coco, read_coco_instances):
        if reader is read_coco_instances:
            annotations[0]["segmentation"] = [[1, 2, 11, 2, 11, 10, 1, 10]]
            (tmp_path / "ann.json").write_text(json.dumps(data))
        read = reader(tmp_path / "ann.json")
        assert [a.image_id for a in read] == ["drive_a__000000", "000001", "drive_b__000000"]
        assert [len(a.objects) for a in read] == [0, 0, 1]  # the box stays with drive_b's image

    images_.append({"id": 9, "file_name": names[0], "width": 30, "height": 20})  # one file listed twice
    (tmp_path / "ann.json").write_text(json.dumps(data))
    with pytest.raises(LabelFormatError, match=r"ann\.json: two images share the id 'drive_a__000000'"):
        read_coco(tmp_path / "ann.json")


def test_yolo_images_whose_names_repeat_across_folders_keep_apart(tmp_path):
    _two_drives(tmp_path / "images" / "train")
    (tmp_path / "labels" / "train" / "drive_b").mkdir(parents=True)
    (tmp_path / "labels" / "train" / "drive_b" / "000000.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"path": str(tmp_path), "train": "images/train",
                                                        "names": {0: "Car"}}))  # fmt: skip
    read = read_yolo(tmp_path / "data.yaml", "train")
    assert [a.image_id for a in read] == ["drive_a__000000", "000001", "drive_b__000000"]
    assert [len(a.objects) for a in read] == [0, 0, 1]
    # a list that names one image twice (oversampling it) keeps both entries under the image's one id
    (tmp_path / "twice.txt").write_text("images/train/drive_a/000001.png\nimages/train/drive_a/000001.png\n")
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"path": str(tmp_path), "train": "twice.txt",
                                                        "names": {0: "Car"}}))  # fmt: skip
    assert [a.image_id for a in read_yolo(tmp_path / "data.yaml", "train")] == ["000001", "000001"]
    # your own photos are named the same way below the folder given
    assert [n for *_, n in predict_images(tmp_path / "images")] == [
        "train__drive_a__000000", "000001", "train__drive_b__000000",
    ]  # fmt: skip


def test_kitti_ground_truth_takes_class_map_for_other_types_but_keeps_kitti_neighbours():
    """A renamed type (Automobile -> Car) had no KITTI ground truth, so every kitti_* figure vanished; a KITTI
    Van must stay a Van (the devkit's neighbour class: neither a Car nor a false positive)."""
    ann = ImageAnnotation("x.png", 100, 50, [ObjectLabel("Automobile", (0, 0, 10, 10)),
                                             ObjectLabel("Van", (20, 0, 40, 10))])  # fmt: skip
    class_map = {"Automobile": "Car", "Van": "Car"}
    gt = _kitti_ground_truth(ann, {}, torch.zeros(0, 4), ["Car"], class_map)
    assert [g["type"] for g in gt] == ["Car", "Van"]
    assert [g["type"] for g in _kitti_ground_truth(ann, {}, torch.zeros(0, 4), ["Car"])] == ["Automobile", "Van"]


def test_kitti_ap_says_when_too_few_objects_cap_it():
    """AP|R40 of a perfect detector on 2 cars is 1/40 (the devkit's rule), which looked like a broken model."""
    gts = [[{"type": "Car", "bbox": [0, 0, 50, 40], "truncated": 0, "occluded": 0},
            {"type": "Car", "bbox": [60, 0, 110, 40], "truncated": 0, "occluded": 0}]]  # fmt: skip
    dets = [[{"type": "Car", "bbox": g["bbox"], "score": 0.9} for g in gts[0]]]
    with pytest.warns(UserWarning, match=r"only 2 valid Car ground-truth objects at moderate.*at most 0\.025 here"):
        ap = kitti_average_precision(dets, gts, classes=("Car",))
    assert ap["Car"] == pytest.approx(1 / 40)


def test_palette_label_maps_give_their_indices(tmp_path):
    """OpenCV expands a palette PNG (Pascal VOC style) to colours: index 1 read as (128, 0, 0) was refused as
    'not single-channel'. A grey palette gives the greys it shows (an optimiser's grey mask: its indices are
    storage, in any order), so a grey palette drawn to be seen (60, 120, 180) reads as those greys."""
    indices = np.array([[0, 1, 2], [3, 1, 0]], np.uint8)
    greys = [v for k in range(4) for v in (60 * k,) * 3]
    for palette, expected in (([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0], indices), (greys, indices * 60)):
        image = Image.fromarray(indices, mode="P")
        image.putpalette(palette + [0] * (768 - len(palette)))
        image.save(tmp_path / "map.png")
        assert read_label_map(tmp_path / "map.png").tolist() == expected.tolist()


def test_deep_road_images_are_stretched_not_cut_to_their_high_byte(tmp_path, monkeypatch):
    """cv2.IMREAD_COLOR keeps a 16-bit PNG's high byte: 12-bit camera data (0..4095) came out 0..15."""
    monkeypatch.setattr(images, "_said", set())
    deep = np.zeros((16, 8, 3), np.uint16)
    deep[0, 0] = (4095, 0, 2048)  # blue, green, red as OpenCV writes them
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    with pytest.warns(LabelWarning, match=r"deep\.png: a uint16 image.*contrast-stretched"):
        rgb = read_rgb(tmp_path / "deep.png")
    assert rgb.dtype == np.uint8 and (rgb.min(), rgb.max()) == (0, 255)
    assert rgb[0, 0].tolist() == [128, 0, 255]  # red 2048 * 255 / 4095 = 127.5 -> 128; blue last in RGB
    write_image(tmp_path / "plain.png", width=8, height=6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(read_rgb(tmp_path / "plain.png"), cv2.imread(str(tmp_path / "plain.png"))[..., ::-1])


def _kitti_instance_pair(root: Path, label_text: str | bytes) -> None:
    write_image(root / "training/image_2/000000.png", width=40, height=30)
    (root / "training/label_2").mkdir(parents=True)
    (root / "training/instance").mkdir(parents=True)
    ids = np.zeros((30, 40), np.uint16)
    ids[2:10, 2:12] = 1
    cv2.imwrite(str(root / "training/instance/000000.png"), ids)
    path = root / "training/label_2/000000.txt"
    path.write_bytes(label_text) if isinstance(label_text, bytes) else path.write_text(label_text)


def test_kitti_instance_labels_are_checked_as_detection_checks_them(tmp_path):
    """The instance reader split lines blindly: 'Car 0 0' was a Car, a Latin-1 file a bare UnicodeDecodeError."""
    _kitti_instance_pair(tmp_path / "short", "Car 0 0\n")
    with pytest.raises(LabelFormatError, match=r"000000\.txt:1: expected 15 fields .*got 3: 'Car 0 0'"):
        read_kitti_instances(tmp_path / "short")
    _kitti_instance_pair(tmp_path / "latin", b"\xff\xfeCar\n")
    with pytest.raises(LabelFormatError, match=r"000000\.txt: not a UTF-8 text file"):
        read_kitti_instances(tmp_path / "latin")
    good = KITTI_LINE.format("Car", 2, 2, 12, 10) + "\n"
    for orphan in ("label_2/000001.txt", "instance/000001.png"):
        root = tmp_path / orphan.split("/")[0]
        _kitti_instance_pair(root, good)
        (root / "training" / orphan).write_bytes((root / "training/label_2/000000.txt").read_bytes())
        with pytest.raises(LabelFormatError, match=rf"{orphan}: (label file|instance map) has no image 000001\.\*"):
            read_kitti_instances(root)
    (tmp_path / "label_2/training/label_2/000001.txt").unlink()
    (ann,) = read_kitti_instances(tmp_path / "label_2")  # the pair itself reads
    assert [o.type for o in ann.objects] == ["Car"]


def test_kitti_step_colour_maps_read_class_from_red_and_instance_from_green_blue(tmp_path):
    """KITTI-STEP's panoptic PNGs are RGB (R the class, G * 256 + B the instance): they were refused as 'not
    single-channel' while the README said they were read."""
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[0:5, 0:10] = (13, 0, 1)  # car instance 1
    rgb[10:20, 0:10] = (13, 1, 2)  # car instance 258
    rgb[0:5, 20:30] = (13, 0, 0)  # car pixels without an instance: a crowd, ignored
    rgb[10:20, 20:30] = (0, 0, 0)  # road: stuff
    write_image(tmp_path / "images/000000.png", width=30, height=20)
    (tmp_path / "instances").mkdir()
    cv2.imwrite(str(tmp_path / "instances/000000.png"), rgb[..., ::-1])  # OpenCV writes BGR
    (ann,) = read_png_instances(tmp_path, class_ids={11: "Pedestrian", 13: "Car"})
    sizes = {o.source.rsplit(" ", 1)[1]: int(decode_masks([o.rle], 20, 30).sum()) for o in ann.objects}
    assert sizes == {"13": 50, str(13 * KITTI_STEP_DIVISOR + 1): 50, str(13 * KITTI_STEP_DIVISOR + 258): 100}
    assert sorted(o.type for o in ann.objects) == ["Car", "Car", "DontCare"]


def test_a_split_the_command_reads_cannot_be_empty(tmp_path):
    """`test` on a set too small for a test split ran zero batches, printed no metric and exited 0."""
    for i in range(2):
        write_image(tmp_path / "training/image_2" / f"{i:06d}.png", width=40, height=30)
        (tmp_path / "training/label_2").mkdir(parents=True, exist_ok=True)
        (tmp_path / "training/label_2" / f"{i:06d}.txt").write_text(KITTI_LINE.format("Car", 2, 2, 12, 10) + "\n")
    dm = DetectionDataModule("kitti", str(tmp_path), split_fractions=(0.5, 0.5, 0.0), num_workers=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no sequence map
        with pytest.raises(ValueError, match=r"`test` needs the test split, which is empty \(train 1, val 1, test 0 "
                           r"items\): .*--data.split_fractions \(now \[0.5, 0.5, 0.0\]\)"):  # fmt: skip
            dm.setup("test")
    with pytest.warns(UserWarning, match=r"split\(s\) \['test'\] are empty"):
        dm.setup("fit")  # fit does not read the test split
    assert len(dm.datasets["train"]) == 1


def test_colour_label_maps_saved_as_palettes_opaque_alpha_and_broken_files(tmp_path):
    """A KITTI-STEP colour map quantised to a palette (image optimisers do) gave palette indices, read as class
    ids; an opaque RGBA map was refused; a truncated palette PNG was a bare OSError naming no file."""
    from domains.driving.instances.data import read_panoptic_map

    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[:2] = (13, 0, 1)  # car instance 1
    rgb[2:] = (13, 0, 2)  # car instance 2
    Image.fromarray(rgb).quantize(colors=2).save(tmp_path / "p.png")
    values, divisor = read_panoptic_map(tmp_path / "p.png", 1000)
    assert divisor == KITTI_STEP_DIVISOR and sorted(np.unique(values)) == [13 * divisor + 1, 13 * divisor + 2]
    ids = Image.fromarray(np.array([[0, 2], [23, 23]], np.uint8), mode="P")  # grey palette: index k is (k, k, k)
    ids.putpalette([v for k in range(256) for v in (k, k, k)])
    ids.save(tmp_path / "grey.png")
    values, divisor = read_panoptic_map(tmp_path / "grey.png", 10)  # a single-channel map, not a colour one
    assert divisor == 10 and values.tolist() == [[0, 2], [23, 23]]
    grey = np.array([[0, 1], [2, 3]], np.uint8)
    cv2.imwrite(str(tmp_path / "rgba.png"), np.dstack([grey, grey, grey, np.full_like(grey, 255)]))
    assert read_label_map(tmp_path / "rgba.png").tolist() == grey.tolist()
    (tmp_path / "cut.png").write_bytes((tmp_path / "p.png").read_bytes()[:60])
    with pytest.raises(LabelFormatError, match=r"cut\.png: cannot decode label mask"):
        read_label_map(tmp_path / "cut.png")


def test_a_split_the_command_reads_that_was_never_built_is_empty():
    """A YOLO yaml with train and val but no test split left no 'test' key, so the check passed and `test` ended in
    the data module's 'no test split; call setup()'."""
    from shared.data import check_stage_splits

    with pytest.raises(ValueError, match=r"`test` needs the test split, which is empty \(train 3, val 1, test 0"):
        check_stage_splits({"train": 3, "val": 1}, "test", "DetectionDataModule", "add a test list")
    check_stage_splits({"train": 3, "val": 1}, "fit", "DetectionDataModule", "add a test list")


@pytest.mark.parametrize("orientation", [3, 6])  # turned 180 degrees; 90 degrees (a phone held upright)
def test_an_instance_image_with_an_exif_orientation_is_read_as_stored_as_its_map_is(tmp_path, orientation):
    """The orientation was applied to the image alone: turned 180 degrees its object fell outside its mask
    (silently), turned 90 degrees a map that matches the stored pixels was refused for its size."""
    from domains.driving.instances.data import InstanceDataset, read_kitti_instances

    base = tmp_path / "training"
    for folder in ("image_2", "label_2", "instance"):
        (base / folder).mkdir(parents=True)
    image = np.zeros((60, 100, 3), np.uint8)
    image[5:20, 5:30] = 255  # the object, top left in the stored pixels
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(image).save(base / "image_2" / "000000.jpg", exif=exif, quality=100)
    instance = np.zeros((60, 100), np.uint16)
    instance[5:20, 5:30] = 1
    cv2.imwrite(str(base / "instance" / "000000.png"), instance)
    (base / "label_2" / "000000.txt").write_text("Car 0 0 -10 5 5 30 20 -1 -1 -1 -1000 -1000 -1000 -10\n")
    picture, target = InstanceDataset(read_kitti_instances(tmp_path), ["Car"])[0]
    assert picture[:, target["masks"][0].bool()].float().mean() > 0.9  # the mask lies on the object
    # the panoptic PNG layout (images/ + instances/) reads its images as stored too
    png = tmp_path / "png"
    (png / "images").mkdir(parents=True)
    (png / "instances").mkdir()
    (base / "image_2" / "000000.jpg").rename(png / "images" / "000000.jpg")
    cv2.imwrite(str(png / "instances" / "000000.png"), (instance * (26 * 1000 + 1)).astype(np.uint16))
    picture, target = InstanceDataset(read_png_instances(png), ["Car"])[0]
    assert picture[:, target["masks"][0].bool()].float().mean() > 0.9
    (png / "images" / "000000.jpg").rename(base / "image_2" / "000000.jpg")
    # and so through the README's converter to COCO: its JSON says the image is read as stored
    from domains.driving.instances.convert import main as convert

    convert(["--from", "kitti", "--src", str(tmp_path), "--dst", str(tmp_path / "c.json"), "--classes", "Car"])
    picture, target = InstanceDataset(read_coco_instances(tmp_path / "c.json"), ["Car"])[0]
    assert picture[:, target["masks"][0].bool()].float().mean() > 0.9


def test_a_cut_short_training_jpeg_is_an_error_naming_it_not_grey_fill(tmp_path, monkeypatch):
    """OpenCV decodes a truncated JPEG with its missing rows grey and says so on stderr only, naming no file: a
    training set copied short trained on grey."""
    image = np.random.default_rng(0).integers(0, 255, (64, 96, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "whole.jpg"), image)
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "trailer.jpg").write_bytes(data + b"SEFT" + bytes(200))  # a phone's data after the end marker
    assert read_rgb(tmp_path / "whole.jpg").shape == read_rgb(tmp_path / "trailer.jpg").shape == (64, 96, 3)
    with pytest.raises(LabelFormatError, match=r"cut\.jpg.*cannot decode image"):
        read_rgb(tmp_path / "cut.jpg")
    (tmp_path / "CUT.JPG").write_bytes(data[: len(data) // 2])  # a camera's upper-case name
    with pytest.raises(LabelFormatError, match=r"CUT\.JPG.*cannot decode image"):
        read_rgb(tmp_path / "CUT.JPG")
    # a file with a trailer is decoded a second time once per version, not at every epoch's read
    from shared import images

    decodes = []
    real = images.check_decodes
    monkeypatch.setattr(images, "check_decodes", lambda path: decodes.append(path) or real(path))
    (tmp_path / "trailer2.jpg").write_bytes(data + b"SEFT" + bytes(100))
    for _ in range(3):
        read_rgb(tmp_path / "trailer2.jpg")
    assert decodes == [tmp_path / "trailer2.jpg"]


def test_instance_predictions_are_drawn_on_the_pixels_their_masks_are_on(tmp_path):
    """An image read as stored (its instance map's pixels) was drawn on with its EXIF orientation applied: a
    180-degree turn put every predicted mask on the wrong part of the overlay."""
    from domains.driving.detection.predict import original_rgb

    image = np.zeros((60, 100, 3), np.uint8)
    image[5:20, 5:30] = 255
    exif = Image.Exif()
    exif[0x0112] = 3
    Image.fromarray(image).save(tmp_path / "x.jpg", exif=exif, quality=100)
    batch_image = torch.zeros(3, 60, 100)
    stored = original_rgb(batch_image, {"image_path": str(tmp_path / "x.jpg"), "as_stored": True}, (60, 100))
    turned = original_rgb(batch_image, {"image_path": str(tmp_path / "x.jpg")}, (60, 100))
    assert stored[5:20, 5:30].mean() > 200 and turned[5:20, 5:30].mean() < 50


def test_kitti_ap_says_it_once_for_every_class_it_caps():
    """Three classes under 41 objects each printed a long line of their own at every validation: one now."""
    boxes = {"Car": 3, "Pedestrian": 2, "Cyclist": 41}
    gts = [[{"type": name, "bbox": [60 * i, 0, 60 * i + 50, 40], "truncated": 0, "occluded": 0}
            for name, n in boxes.items() for i in range(n)]]  # fmt: skip
    dets = [[{"type": g["type"], "bbox": g["bbox"], "score": 0.9} for g in gts[0]]]
    with pytest.warns(UserWarning) as caught:
        ap = kitti_average_precision(dets, gts, classes=("Car", "Pedestrian", "Cyclist"))
    assert [str(w.message).split(";")[0] for w in caught] == [
        "KITTI AP: only 3 valid Car, 2 valid Pedestrian ground-truth objects at moderate"
    ]
    assert "AP|R40 is at most 0.050 / 0.025 here" in str(caught[0].message)
    with warnings.catch_warnings():  # the filter the detection task's sanity check applies
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=FEW_OBJECTS_WARNING)
        kitti_average_precision(dets, gts, classes=("Car", "Pedestrian", "Cyclist"))
    assert ap == pytest.approx({"Car": 2 / 40, "Pedestrian": 1 / 40, "Cyclist": 1.0})
