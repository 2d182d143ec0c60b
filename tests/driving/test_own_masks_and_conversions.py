"""Audit fixes (driving converters and anomaly readers): grey palette masks read as their grey values, the drop
log in the converter's "no classes" error, COCO category names that cannot be KITTI types refused up front, one
DontCare category, clearer anomaly-set errors, YOLO ``nc`` checked, the configs' class_map as the detection
default, the exported segmenter's own size multiple, the KITTI-STEP download layout."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from domains.driving import convert
from domains.driving.anomaly.data import AnomalyDataset
from domains.driving.anomaly.export import export_anomaly
from domains.driving.classes import DETECTION_CLASS_MAP
from domains.driving.common import read_label_map
from domains.driving.detection.data import DetectionDataModule
from domains.driving.formats import LabelFormatError, read_yolo
from domains.driving.instances import convert as instances_convert
from domains.driving.instances.convert import write_coco_instances
from domains.driving.instances.data import InstanceAnnotation, InstanceObject, encode_masks
from tests.helpers import anomaly_task

# ------------------------------------------------------------------------------ grey palette label masks


def _palette_png(path, values: np.ndarray, order: list[int], grey: bool = True):
    """``values`` stored as a palette PNG whose entry i holds ``order[i]`` (grey, or a colour per entry)."""
    indices = np.vectorize({v: i for i, v in enumerate(order)}.get)(values).astype(np.uint8)
    image = Image.fromarray(indices, mode="P")
    entries = [[v, v, v] if grey else [v, (37 * i) % 256, 200] for i, v in enumerate(order)]
    palette = [c for e in entries for c in e]
    image.putpalette(palette + [0] * (768 - len(palette)))
    image.save(path)


@pytest.mark.parametrize("order", [[0, 255], [0, 1, 255], [0, 255, 1], [255, 1, 0]])
def test_a_grey_palette_mask_reads_as_the_greys_it_shows(tmp_path, order):
    """A 0 / 255 (normal + void) mask saved by an optimiser as a 2-entry grey palette read as indices 0 / 1: void
    became anomaly; a [0, 1, 255] palette gave 0 / 1 / 2 (refused)."""
    mask = np.zeros((8, 8), np.uint8)
    mask[:2] = 255
    if 1 in order:
        mask[4:6, 4:6] = 1
    _palette_png(tmp_path / "m.png", mask, order)
    assert np.array_equal(read_label_map(tmp_path / "m.png"), mask)


def test_palette_greys_that_equal_their_indices_and_coloured_palettes_give_the_ids(tmp_path):
    ids = np.array([[0, 1, 2], [3, 1, 0]], np.uint8)
    _palette_png(tmp_path / "identity.png", ids, [0, 1, 2, 3])  # grey values = indices: the same either way
    assert read_label_map(tmp_path / "identity.png").tolist() == ids.tolist()
    _palette_png(tmp_path / "voc.png", ids, [0, 1, 2, 3], grey=False)  # VOC style: the indices
    assert read_label_map(tmp_path / "voc.png").tolist() == ids.tolist()
    # a coloured palette whose used entries happen to be grey (VOC: background black, cat 7 (128, 128, 128)) gives
    # its indices too: the whole palette decides, so one data set is not read two ways image by image
    palette = [[0, 0, 0], *([[128, 0, 0]] * 6), [128, 128, 128], [64, 0, 0]]
    cat = Image.fromarray(np.array([[0, 7], [7, 0]], np.uint8), mode="P")
    cat.putpalette([c for entry in palette for c in entry] + [0] * (768 - 3 * len(palette)))
    cat.save(tmp_path / "cat.png")
    assert read_label_map(tmp_path / "cat.png").tolist() == [[0, 7], [7, 0]]


def test_anomaly_dataset_reads_void_of_a_grey_palette_mask_as_void(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels_masks").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    mask = np.zeros((8, 8), np.uint8)
    mask[:2] = 255
    _palette_png(tmp_path / "labels_masks" / "a.png", mask, [0, 255])
    label = AnomalyDataset(tmp_path)[0]["label"]
    assert int((label == 255).sum()) == 16 and int((label == 1).sum()) == 0


def test_a_mask_with_a_non_opaque_alpha_channel_says_so(tmp_path):
    grey = np.zeros((4, 4), np.uint8)
    alpha = np.full_like(grey, 255)
    alpha[0, 0] = 0
    Image.fromarray(np.dstack([grey, grey, grey, alpha]), "RGBA").save(tmp_path / "m.png")
    with pytest.raises(LabelFormatError, match="alpha channel is not opaque: 1 px"):
        read_label_map(tmp_path / "m.png")


# ------------------------------------------------------------------------------------ anomaly set errors


def _smiyc(root, image_name="a.png", mask_name="a.png"):
    (root / "images").mkdir(parents=True)
    (root / "labels_masks").mkdir()
    cv2.imwrite(str(root / "images" / image_name), np.zeros((8, 16, 3), np.uint8))
    if mask_name.endswith(".png"):
        cv2.imwrite(str(root / "labels_masks" / mask_name), np.zeros((8, 16), np.uint8))
    else:
        Image.fromarray(np.zeros((8, 16), np.uint8)).save(root / "labels_masks" / mask_name)
    return root


def test_images_of_an_unread_type_only_are_named_in_the_error(tmp_path):
    root = _smiyc(tmp_path / "s", image_name="a.bmp")
    with pytest.raises(FileNotFoundError, match=r"no images .*not_read: 1 .*a\.bmp"):
        AnomalyDataset(root)


@pytest.mark.parametrize("mask_name", ["a.gif", "a.bmp", "a_labels_semantic.tif"])
def test_a_mask_of_another_format_is_named_in_the_missing_mask_error(tmp_path, mask_name):
    root = _smiyc(tmp_path / "s", mask_name=mask_name)
    with pytest.raises(LabelFormatError, match=rf"{mask_name} is there, but masks must be PNG;"):
        AnomalyDataset(root)


# --------------------------------------------------------------------------------- detection converter


def _kitti(root, lines: list[str], size=(100, 200)):
    (root / "training" / "image_2").mkdir(parents=True)
    (root / "training" / "label_2").mkdir()
    cv2.imwrite(str(root / "training" / "image_2" / "000000.png"), np.zeros((*size, 3), np.uint8))
    (root / "training" / "label_2" / "000000.txt").write_text("".join(f"{line}\n" for line in lines))
    return root


def test_no_classes_left_after_dropping_every_box_prints_the_drop_log(tmp_path, capsys):
    src = _kitti(tmp_path / "k", ["Car 0.00 0 -10 10 10 250 50 1 1 1 1 1 1 0"])  # right edge past 200 px
    assert convert.main(["--from", "kitti", "--to", "coco", "--src", str(src), "--dst", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no classes found" in err and "outside_image: 1" in err and "000000.txt:1" in err


def _coco(tmp_path, name="traffic light"):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((100, 200, 3), np.uint8))
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": 200, "height": 100}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [10, 10, 5, 20]}],
        "categories": [{"id": 1, "name": "Car"}, {"id": 5, "name": name}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(data))
    return tmp_path / "ann.json"


def test_a_coco_category_with_a_space_to_kitti_names_the_category_not_a_temp_file(tmp_path, capsys):
    src = _coco(tmp_path)
    dst = tmp_path / "out"
    assert convert.main(["--from", "coco", "--to", "kitti", "--src", str(src), "--dst", str(dst)]) == 2
    err = capsys.readouterr().err
    assert f"{src}:categories[1]: class 'traffic light'" in err and "'traffic_light'" in err
    assert ".tmp-" not in err and not dst.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_the_summary_counts_images_without_written_objects(tmp_path, capsys):
    src = _kitti(tmp_path / "k", ["DontCare -1 -1 -10 10 10 50 50 -1 -1 -1 -1000 -1000 -1000 -10"])
    _kitti(tmp_path / "k2", [])  # placeholder: only the first is converted
    args = ["--from", "kitti", "--to", "yolo", "--src", str(src), "--dst", str(tmp_path / "o"), "--classes", "Car"]
    assert convert.main(args) == 0
    assert "images without objects written: 1" in capsys.readouterr().out


def _yolo(root, yaml_text: str, splits=("train",)):
    for split in splits:
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        cv2.imwrite(str(root / "images" / split / "a.png"), np.zeros((100, 200, 3), np.uint8))
        (root / "labels" / split / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "data.yaml").write_text(yaml_text)
    return root / "data.yaml"


def test_a_yolo_yaml_whose_nc_disagrees_with_its_names_is_refused(tmp_path):
    src = _yolo(tmp_path, "train: images/train\nnc: 3\nnames: [Car]\n")
    with pytest.raises(LabelFormatError, match=rf"{src}: 'nc: 3' disagrees with the 1 'names'"):
        read_yolo(src)


def test_a_yolo_stem_in_two_splits_to_kitti_suggests_split(tmp_path, capsys):
    src = _yolo(tmp_path, "train: images/train\nval: images/val\nnames: [Car]\n", splits=("train", "val"))
    assert convert.main(["--from", "yolo", "--to", "kitti", "--src", str(src), "--dst", str(tmp_path / "o")]) == 2
    assert "--split" in capsys.readouterr().err


def test_the_detection_data_module_defaults_to_the_configs_class_map():
    assert DetectionDataModule().class_map == DETECTION_CLASS_MAP == {"Van": "Car", "Person_sitting": "Pedestrian"}


# ------------------------------------------------------------------------------------ instance converter


def test_classes_naming_dontcare_write_one_crowd_category(tmp_path):
    (tmp_path / "a.png").touch()
    masks = np.zeros((2, 4, 4), bool)
    masks[0, :2], masks[1, 2:] = True, True
    car, crowd = encode_masks(masks)
    ann = InstanceAnnotation(str(tmp_path / "a.png"), 4, 4, [InstanceObject("Car", car), InstanceObject("DontCare", crowd)])
    write_coco_instances([ann], tmp_path / "o.json", ["Car", "DontCare"])
    data = json.loads((tmp_path / "o.json").read_text())
    assert [c["name"] for c in data["categories"]] == ["Car", "DontCare"]
    # the DontCare region as a crowd of each class category (Car alone here), not of the DontCare category
    assert [a["category_id"] for a in data["annotations"]] == [1, 1] and data["annotations"][1]["iscrowd"] == 1


def _step(root, sequences=("0000", "0001"), deeplab=False, map_size=(30, 50)):
    """A KITTI-STEP download: panoptic_maps/train/<seq>/ and its images (KITTI tracking or DeepLab2 layout)."""
    for seq in sequences:
        images = root / ("images/train" if deeplab else "training/image_02") / seq
        maps = root / "panoptic_maps" / "train" / seq
        images.mkdir(parents=True)
        maps.mkdir(parents=True)
        cv2.imwrite(str(images / "000000.png"), np.zeros((30, 50, 3), np.uint8))
        m = np.zeros((*map_size, 3), np.uint8)
        m[0:5, 0:5] = (1, 0, 13)  # BGR: R = 13 (car), instance 1
        cv2.imwrite(str(maps / "000000.png"), m)
    return root


@pytest.mark.parametrize("deeplab", [False, True])
def test_the_kitti_step_download_layout_converts_with_its_sequences(tmp_path, deeplab):
    src = _step(tmp_path / "step", deeplab=deeplab)
    dst = tmp_path / "o.json"
    instances_convert.main(["--from", "png", "--src", str(src), "--dst", str(dst), "--class-ids", "13=Car"])
    data = json.loads(dst.read_text())
    assert len(data["images"]) == 2 and len(data["annotations"]) == 2
    files = sorted(i["file_name"] for i in data["images"])
    folder = "images/train" if deeplab else "training/image_02"
    assert files == [f"step/{folder}/0000/000000.png", f"step/{folder}/0001/000000.png"]
    assert dst.with_suffix(".sequences.txt").read_text() == "0000__000000 0000\n0001__000000 0001\n"


def test_a_bad_kitti_step_map_is_named_by_its_real_path(tmp_path, capsys):
    src = _step(tmp_path / "step", sequences=("0000",), map_size=(10, 50))
    with pytest.raises(SystemExit):
        instances_convert.main(["--from", "png", "--src", str(src), "--dst", str(tmp_path / "o.json")])
    err = capsys.readouterr().err
    assert str(src / "panoptic_maps/train/0000/000000.png") in err and "/kitti_step_" not in err and "(or a KITTI-STEP" not in err


# ----------------------------------------------------------------------------------------------- export


def test_the_segmenter_export_pads_to_the_models_own_size_multiple(tmp_path):
    task = anomaly_task(encoder_kwargs={"channels": [4, 8, 16]}, oe_weight=0.0, size_multiple=64).eval()
    meta = export_anomaly(task, tmp_path, size=(32, 64), score="msp")
    assert meta["size_multiple"] == 64 and meta["input_size"] == [64, 64]


def test_a_png_source_of_neither_layout_names_both(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    with pytest.raises(SystemExit):
        instances_convert.main(["--from", "png", "--src", str(tmp_path / "src"), "--dst", str(tmp_path / "o.json")])
    err = capsys.readouterr().err
    assert "images/ + instances/" in err and "or a KITTI-STEP download: panoptic_maps/<split>/<seq>/" in err


def test_the_default_class_map_keeps_only_renames_into_the_classes():
    """With class_names [Car] the default's Person_sitting -> Pedestrian would be refused as a bad target."""
    assert DetectionDataModule(class_names=["Car"]).class_map == {"Van": "Car"}
