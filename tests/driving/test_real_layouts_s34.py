"""The public releases as downloaded: COCO's annotations/ beside val2017/, Cityscapes' leftImg8bit/ + gtFine/
instance maps, KITTI's ImageSets/ (3DOP) split lists."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from domains.driving.detection.data import DetectionDataModule
from domains.driving.formats import LabelFormatError, LabelWarning
from domains.driving.instances.convert import main as convert_main
from domains.driving.instances.data import InstanceDataModule, read_cityscapes_instances
from tests.driving.layouts import write_kitti
from tests.helpers import write_image

NO_SEQUENCE_MAP = "ignore:.*no sequence map:UserWarning"

# ------------------------------------------------------------------------------------------------ COCO


def write_coco_release(root, n=4):
    """COCO as downloaded: ``annotations/instances_val2017.json`` beside ``val2017/`` (in sequence folders, as
    the audit's replica), one car a box and polygon per image."""
    images, anns = [], []
    for i in range(n):
        name = f"seq{i % 2}/{i:012d}.jpg"
        write_image(root / "val2017" / name, width=64, height=48, seed=i)
        images.append({"id": 100 + i, "file_name": name, "width": 64, "height": 48})
        poly = [10, 10, 40, 10, 40, 30, 10, 30]
        anns.append({"id": i + 1, "image_id": 100 + i, "category_id": 3, "bbox": [10, 10, 30, 20],
                     "segmentation": [poly], "area": 600, "iscrowd": 0})  # fmt: skip
    (root / "annotations").mkdir(parents=True)
    path = root / "annotations" / "instances_val2017.json"
    path.write_text(
        json.dumps({"images": images, "annotations": anns, "categories": [{"id": 3, "name": "car"}]})
    )
    return path


@pytest.mark.filterwarnings(NO_SEQUENCE_MAP)
@pytest.mark.parametrize("module", [DetectionDataModule, InstanceDataModule])
def test_coco_as_downloaded_reads_the_images_beside_annotations_and_says_so(tmp_path, caplog, module):
    """``--data.data_path coco/annotations/instances_val2017.json`` failed with 'image ... not found under
    coco/annotations', and no option named the image folder."""
    path = write_coco_release(tmp_path / "coco")
    dm = module("coco", str(path), ["car"], num_workers=0)
    with caplog.at_level("INFO"):
        dm.setup("fit")
    records = [r for split in dm.splits.values() for r in split]
    assert len(records) == 4
    assert all(str(r.image_path).startswith(str(tmp_path / "coco" / "val2017")) for r in records)
    assert sum(len(r.objects) for r in records) == 4
    assert f"its images are not beside it but in {tmp_path / 'coco' / 'val2017'}" in caplog.text

    # another folder by the option: read from there, and no word of the layout
    shutil.copytree(tmp_path / "coco" / "val2017", tmp_path / "pictures")
    caplog.clear()
    dm = module("coco", str(path), ["car"], num_workers=0, images_root=str(tmp_path / "pictures"))
    with caplog.at_level("INFO"):
        dm.setup("fit")
    records = [r for split in dm.splits.values() for r in split]
    assert len(records) == 4 and all(
        str(r.image_path).startswith(str(tmp_path / "pictures")) for r in records
    )
    assert "not beside it" not in caplog.text


def test_a_coco_image_not_found_names_the_option_and_the_folder_that_holds_it(tmp_path):
    path = write_coco_release(tmp_path / "coco")
    wrong = tmp_path / "elsewhere"
    wrong.mkdir()
    dm = DetectionDataModule("coco", str(path), ["car"], num_workers=0, images_root=str(wrong))
    with pytest.raises(
        LabelFormatError, match=r"images\[0\]: image 'seq0/000000000000.jpg' not found under"
    ) as err:
        dm.setup("fit")
    assert "--data.images_root" in str(err.value)
    assert f"It is in {tmp_path / 'coco' / 'val2017'}: name that folder" in str(err.value)
    moved = tmp_path / "coco" / "labels.json"  # not COCO's layout: the images are not looked for elsewhere
    shutil.move(path, moved)
    with pytest.raises(
        LabelFormatError, match=r"not found under .*coco \(file names are relative .*images_root"
    ):
        DetectionDataModule("coco", str(moved), ["car"], num_workers=0).setup("fit")
    with pytest.raises(
        ValueError, match=r"--data.images_root is read for --data.data_format coco only, not kitti"
    ):
        DetectionDataModule("kitti", str(tmp_path), images_root=str(wrong))


# ------------------------------------------------------------------------------------------ Cityscapes


def write_cityscapes(root, frames=(("train", "aachen", 2), ("train", "bochum", 1), ("val", "frankfurt", 1))):
    """A Cityscapes download: leftImg8bit/<split>/<city>/<frame>_leftImg8bit.png with gtFine's instanceIds,
    labelIds and color maps. Each frame: road (7), car 26000 and 26001, person 24000 and a crowd of persons
    (bare 24); a test frame without maps (Cityscapes' test labels are void)."""
    names = []
    for split, city, n in frames:
        for k in range(n):
            frame = f"{city}_000000_{k:06d}"
            write_image(root / "leftImg8bit" / split / city / f"{frame}_leftImg8bit.png", width=64, height=32)
            ids = np.full((32, 64), 7, np.uint16)
            ids[2:12, 2:20], ids[2:12, 30:50], ids[15:30, 2:8], ids[20:30, 40:60] = 26000, 26001, 24000, 24
            maps = root / "gtFine" / split / city
            maps.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(maps / f"{frame}_gtFine_instanceIds.png"), ids)
            cv2.imwrite(str(maps / f"{frame}_gtFine_labelIds.png"), np.minimum(ids, 26).astype(np.uint8))
            cv2.imwrite(str(maps / f"{frame}_gtFine_color.png"), np.zeros((32, 64, 3), np.uint8))
            names.append(frame)
    write_image(root / "leftImg8bit" / "test" / "berlin" / "berlin_000000_000000_leftImg8bit.png", 64, 32)
    return names


def test_a_cityscapes_download_is_read_as_png_instances_split_by_city(tmp_path, capsys):
    """``--data.data_format png --data.data_path cityscapes`` failed with 'cityscapes/images: folder not
    found'; the converter too."""
    names = write_cityscapes(tmp_path / "cs")
    items, cities = read_cityscapes_instances(tmp_path / "cs")
    assert [a.image_id for a in items] == names  # train and val, not test; no _labelIds / _color map read
    assert cities == ["aachen", "aachen", "bochum", "frankfurt"]
    objects = items[0].objects
    assert [(o.type, o.crowd_class) for o in objects] == [
        ("DontCare", "Pedestrian"),
        ("Pedestrian", None),
        ("Car", None),
        ("Car", None),
    ]

    dm = InstanceDataModule(
        "png", str(tmp_path / "cs"), ["Car", "Pedestrian"], num_workers=0, split_fractions=(0.34, 0.33, 0.33)
    )
    dm.setup("fit")
    split_cities = [{a.image_id.split("_")[0] for a in split} for split in dm.splits.values()]
    assert sorted(c for s in split_cities for c in s) == ["aachen", "bochum", "frankfurt"]  # each city once
    assert sum(len(s) for s in dm.splits.values()) == 4
    _, target = dm.datasets["train"][0]
    assert sorted(target["labels"].tolist()) == [0, 0, 1]  # two cars, one person
    assert target["crowd_labels"].tolist() == [1] and int(target["crowd_masks"].sum()) == 10 * 20

    out = tmp_path / "out" / "cs.json"
    convert_main(["--from", "png", "--src", str(tmp_path / "cs"), "--dst", str(out)])
    assert out.with_suffix(".sequences.txt").read_text().split("\n")[:2] == [
        "aachen_000000_000000 aachen",
        "aachen_000000_000001 aachen",
    ]
    assert "sequence map: 3 sequences (Cityscapes' cities)" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ KITTI 3DOP


def write_image_sets(root, train, val):
    (root / "ImageSets").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "train.txt").write_text("".join(f"{i:06d}\n" for i in train))
    (root / "ImageSets" / "val.txt").write_text("".join(f"{i:06d}\n" for i in val))
    # KITTI's test.txt lists testing/'s images, whose ids are also training/'s: never read
    (root / "ImageSets" / "test.txt").write_text("000000\n000001\n")


def test_kitti_image_sets_give_the_3dop_split_when_asked_and_are_named_when_not(tmp_path, caplog):
    """KITTI's ImageSets/train.txt / val.txt were ignored without a word; no option took them."""
    root = write_kitti(tmp_path / "kitti", n=8, semantic=False)
    write_image_sets(root, train=[0, 2, 4, 6, 7], val=[1, 3, 5])
    with caplog.at_level("INFO"):
        by_drive = DetectionDataModule("kitti", str(root), num_workers=0)
        by_drive.setup("fit")
    assert (
        f"{root / 'ImageSets'}: test.txt, train.txt, val.txt found but not used: the split is by drive"
        in caplog.text
    )
    for split in by_drive.splits.values():  # by drive: both frames of a drive together
        drives = [int(a.image_id) // 2 for a in split]
        assert all(drives.count(d) == 2 for d in drives)

    caplog.clear()
    with caplog.at_level("INFO"):
        dm = DetectionDataModule("kitti", str(root), num_workers=0, split_files=str(root / "ImageSets"))
        dm.setup("fit")
    assert {k: [a.image_id for a in v] for k, v in dm.splits.items()} == {
        "train": ["000000", "000002", "000004", "000006", "000007"],
        "val": ["000001", "000003", "000005"],
    }
    assert "split_files (by image, not by drive: frames of one drive may be in train and val" in caplog.text
    assert "0 images in no list, not used): train 5 images, val 3 images" in caplog.text
    assert "found but not used" not in caplog.text
    assert dm.split_settings(dict(dm.hparams), "test") == {"split_files": str(root / "ImageSets")}
    with pytest.raises(ValueError, match=r"`test` needs the test split.*name val.txt as test too"):
        dm.setup("test")

    files = {"train": str(root / "ImageSets" / "train.txt"), "test": str(root / "ImageSets" / "val.txt")}
    dm = DetectionDataModule("kitti", str(root), num_workers=0, split_files=files)
    dm.setup("test")
    assert [a.image_id for a in dm.splits["test"]] == ["000001", "000003", "000005"]


def test_a_split_list_id_not_read_or_listed_twice_is_an_error_naming_file_and_line(tmp_path):
    root = write_kitti(tmp_path / "kitti", n=4, semantic=False)
    write_image_sets(root, train=[0, 1], val=[2, 99])
    dm = DetectionDataModule("kitti", str(root), num_workers=0, split_files=str(root / "ImageSets"))
    with pytest.raises(
        LabelFormatError, match=r"val\.txt:2: image id '000099' is none of the 4 images read from"
    ):
        dm.setup("fit")
    write_image_sets(root, train=[0, 1, 0], val=[2])
    dm = DetectionDataModule("kitti", str(root), num_workers=0, split_files=str(root / "ImageSets"))
    with pytest.raises(LabelFormatError, match=r"train\.txt:3: image id '000000' is listed twice \(line 1\)"):
        dm.setup("fit")
    write_image_sets(root, train=[0, 1, 2], val=[2, 3])  # an image in train and val: the leak is warned
    dm = DetectionDataModule("kitti", str(root), num_workers=0, split_files=str(root / "ImageSets"))
    with pytest.warns(
        LabelWarning, match=r"1 of the val split's 2 images are also in train .*give the val list its own"
    ):
        dm.setup("fit")
    with pytest.raises(FileNotFoundError, match=r"split_files: .*nope.txt \(val list\) not found"):
        DetectionDataModule(
            "kitti",
            str(root),
            split_files={"train": str(root / "ImageSets" / "train.txt"), "val": str(tmp_path / "nope.txt")},
        ).setup("fit")
