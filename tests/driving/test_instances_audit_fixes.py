"""Audit fixes of the instance-segmentation task: a png map without class-encoded values is counted, not
read as background; a COCO JSON given as a kitti / png set says which setting reads it; the unknown-class
note names its split; the ``fit --help`` group titles are whole sentences."""

from __future__ import annotations

import logging
import warnings

import cv2
import numpy as np
import pytest

from domains.driving.formats import LabelFormatError, LabelWarning
from domains.driving.instances.__main__ import main as instances_main
from domains.driving.instances.data import (
    InstanceAnnotation,
    InstanceDataModule,
    InstanceDataset,
    InstanceObject,
    encode_masks,
    read_png_instances,
)
from domains.driving.instances.task import InstanceTask
from tests.helpers import write_image

W, H = 64, 32


def _png_set(root, label: np.ndarray):
    write_image(root / "images" / "f.png", width=W, height=H)
    (root / "instances").mkdir(parents=True)
    cv2.imwrite(str(root / "instances" / "f.png"), label)
    return root


# ----------------------------------------------------------------------- 1: maps without class-encoded values


def test_a_png_map_of_plain_instance_ids_is_counted_naming_the_map_not_read_as_background(tmp_path):
    """Values 1 and 2 (plain instance ids) are below the divisor and no listed class id: the image became
    background without a word."""
    label = np.zeros((H, W), np.uint16)
    label[0:10, 0:20] = 1  # 200 px
    label[20:30, 0:30] = 2  # 300 px
    root = _png_set(tmp_path / "plain", label)
    with pytest.warns(LabelWarning) as caught:
        (ann,) = read_png_instances(root)
    assert ann.objects == []
    (message,) = [str(w.message) for w in caught if issubclass(w.category, LabelWarning)]
    assert "no_instance_values: 1 (" in message
    assert (
        f"{root / 'instances' / 'f.png'}: no value >= 1000, and its values 1, 2 (500 pixels) name no listed "
        "class id [24, 25, 26, 27, 28, 31, 32, 33]: they were skipped, leaving the image without objects"
        in message
    )
    assert (
        "An 8-bit map or plain instance ids? Values must be class_id * 1000 + instance (e.g. 24001" in message
    )
    with pytest.raises(
        LabelFormatError, match=r"f\.png: no value >= 1000, and its values 1, 2 .*no_instance_values; strict"
    ):
        read_png_instances(root, strict=True)


def test_an_8_bit_map_is_counted_and_cityscapes_stuff_beside_instances_or_an_empty_map_is_not(tmp_path):
    label = np.zeros((H, W), np.uint8)
    label[0:4, 0:5] = (26 * 1000 + 1) % 256  # car 1 cut to 8 bits: 26001 - 101 * 256 = 145, 20 px
    eight = _png_set(tmp_path / "eight", label)
    with pytest.warns(
        LabelWarning, match=r"no_instance_values: 1 \(.*no value >= 1000, and its values 145 \(20 pixels\)"
    ):
        assert read_png_instances(eight)[0].objects == []

    good = np.full((H, W), 7, np.uint16)  # Cityscapes road: a class without instances
    good[0:4, 0:5] = 26 * 1000 + 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to say: the car is read, the road is no object
        (ann,) = read_png_instances(_png_set(tmp_path / "good", good))
        assert [o.type for o in ann.objects] == ["Car"]
        assert read_png_instances(_png_set(tmp_path / "empty", np.zeros((H, W), np.uint16)))[0].objects == []


def test_a_frame_without_objects_beside_frames_with_instances_is_no_8_bit_map(tmp_path):
    """A real Cityscapes frame can show no car nor person: its map holds only stuff ids (road 7). Beside a map
    with instance values it is such a frame, and says nothing, under strict too; alone it still is counted."""
    root = tmp_path / "city"
    with_car = np.full((H, W), 7, np.uint16)
    with_car[0:4, 0:5] = 26 * 1000 + 1
    write_image(root / "images" / "a.png", width=W, height=H)
    write_image(root / "images" / "b.png", width=W, height=H)
    (root / "instances").mkdir(parents=True)
    cv2.imwrite(str(root / "instances" / "a.png"), with_car)
    cv2.imwrite(str(root / "instances" / "b.png"), np.full((H, W), 7, np.uint16))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a, b = read_png_instances(root, strict=True)
    assert ([o.type for o in a.objects], b.objects) == (["Car"], [])

    (root / "instances" / "a.png").unlink()
    (root / "images" / "a.png").unlink()
    with pytest.warns(LabelWarning, match=r"no_instance_values: 1 \(.*b\.png: no value >= 1000, and its values 7"):
        read_png_instances(root)


# ------------------------------------------------------------------------------ 2: a COCO JSON as kitti / png


def test_a_coco_json_given_as_a_kitti_or_png_set_says_to_add_the_coco_format(tmp_path):
    coco = tmp_path / "coco"
    coco.mkdir()
    (coco / "ann.json").write_text('{"images": [], "annotations": [], "categories": []}')
    fix = "for a COCO instance JSON add --data.data_format coco"
    for data_format in ("kitti", "png"):
        dm = InstanceDataModule(data_format, str(coco / "ann.json"), ["Car"], num_workers=0)
        with pytest.raises(FileNotFoundError) as err:
            dm.setup("fit")
        assert str(err.value) == (
            f"{coco / 'ann.json'}: --data.data_format is {data_format}, which reads a folder, but this is a "
            f"JSON file: {fix}"
        )
    with pytest.raises(FileNotFoundError) as err:
        InstanceDataModule("kitti", str(coco), ["Car"], num_workers=0).setup("fit")
    assert str(err.value) == (
        f"{coco}: no KITTI image folder (tried {coco / 'training/image_2'}, {coco / 'image_2'}); it holds "
        f"ann.json: {fix}"
    )
    with pytest.raises(
        FileNotFoundError, match=r"images: folder not found .*it holds ann\.json: for a COCO instance"
    ):
        InstanceDataModule("png", str(coco), ["Car"], num_workers=0).setup("fit")

    empty = tmp_path / "empty"  # no JSON: the message stays the reader's
    empty.mkdir()
    with pytest.raises(FileNotFoundError) as err:
        InstanceDataModule("kitti", str(empty), ["Car"], num_workers=0).setup("fit")
    assert (
        str(err.value)
        == f"{empty}: no KITTI image folder (tried {empty / 'training/image_2'}, {empty / 'image_2'})"
    )


# -------------------------------------------------------------------------- 3: the unknown-class note's split


def _annotation(types: list[str]) -> InstanceAnnotation:
    mask = np.zeros((1, H, W), np.uint8)
    mask[0, 0:4, 0:4] = 1
    (rle,) = encode_masks(mask)
    return InstanceAnnotation("f.png", W, H, [InstanceObject(t, rle) for t in types])


def test_the_unknown_class_note_names_its_split(caplog):
    """Three identical 'InstanceDataset: ... Truck: 1' lines (train, val, test) could not be told apart."""
    dm = InstanceDataModule("kitti", None, ["Car"], num_workers=0)
    with caplog.at_level(logging.INFO):
        val = dm.make_dataset("val", [_annotation(["Car", "Truck", "Truck"])])
        InstanceDataset([_annotation(["Tram"])], ["Car"], split="test")
    assert val.dropped == {"Truck": 2} and val.objects == 1
    notes = [
        r.getMessage() for r in caplog.records if "objects whose type is not in class_names" in r.getMessage()
    ]
    assert len(notes) == 2
    assert notes[0].startswith(
        "InstanceDataset (val split): objects whose type is not in class_names ['Car']"
    )
    assert notes[0].endswith("are not trained on or scored: Truck: 2")
    assert notes[1].startswith("InstanceDataset (test split): ") and notes[1].endswith("Tram: 1")


# --------------------------------------------------------------------------------------- 4: fit --help titles


def test_fit_help_group_titles_are_whole_sentences(capsys, monkeypatch):
    """jsonargparse titles a group with its class docstring's first line: both were cut mid-sentence."""
    assert InstanceTask.__doc__.splitlines()[0] == (
        "Mask R-CNN road-user instance segmentation, scored by COCO mask and box AP."
    )
    assert InstanceDataModule.__doc__.splitlines()[0] == (
        "Instance masks from KITTI-layout instance maps, a COCO instance JSON or panoptic PNGs."
    )
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as stop:
        instances_main(["fit", "--help"])
    assert stop.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert "Mask R-CNN road-user instance segmentation, scored by COCO mask and box AP:" in lines
    assert "Instance masks from KITTI-layout instance maps, a COCO instance JSON or panoptic PNGs:" in lines
    assert not [line for line in lines if line.endswith((" and the:", " split by:"))]
