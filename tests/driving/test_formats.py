"""KITTI / COCO / YOLO readers and writers, their error messages and the converter CLI."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
import yaml

from domains.driving import convert
from domains.driving.formats import (
    ImageAnnotation,
    LabelFormatError,
    LabelWarning,
    ObjectLabel,
    read_coco,
    read_kitti_dir,
    read_kitti_label,
    read_yolo,
    write_coco,
    write_kitti_dir,
    write_kitti_label,
    write_yolo,
    yolo_label_path,
)
from tests.helpers import write_image

W, H = 64, 48


def _kitti_line(kind, box, trunc=0.0, occ=0, extra=""):
    left, top, right, bottom = box
    rest = "1.50 1.60 3.90 1.00 1.70 20.00 -1.50"
    return f"{kind} {trunc} {occ} -1.57 {left} {top} {right} {bottom} {rest}{extra}"


def _kitti_dataset(root, labels: dict[str, list[str]]):
    for i, (stem, lines) in enumerate(labels.items()):
        write_image(root / "training" / "image_2" / f"{stem}.png", seed=i)
        label = root / "training" / "label_2" / f"{stem}.txt"
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("\n".join(lines) + "\n")
    return root


def _one_label(tmp_path, *lines):
    path = tmp_path / "000000.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------------------------------------------ KITTI


def test_kitti_label_roundtrip_keeps_all_fields_and_score(tmp_path):
    objects = [
        ObjectLabel(
            "Car", (10.25, 5.5, 40.125, 30.0), 0.33, 1, -1.57, (1.5, 1.6, 3.9), (1.0, 1.7, 20.0), -1.5
        ),
        ObjectLabel("DontCare", (0.0, 0.0, 12.0, 8.0)),
    ]
    path = tmp_path / "label.txt"
    write_kitti_label(path, objects)
    assert len(path.read_text().splitlines()[0].split()) == 15
    assert read_kitti_label(path, image_size=(H, W)) == objects

    scored = [ObjectLabel("Car", (1.0, 2.0, 30.0, 20.0), score=0.875)]
    write_kitti_label(path, scored, with_score=True)
    assert len(path.read_text().split()) == 16
    assert read_kitti_label(path)[0].score == pytest.approx(0.875)
    with pytest.raises(ValueError, match="no score"):
        write_kitti_label(path, [ObjectLabel("Car", (1, 2, 3, 4))], with_score=True)


def test_kitti_fields_in_the_devkit_order(tmp_path):
    # devkit readme: type truncated occluded alpha bbox(left top right bottom) dimensions(height width length)
    # location(x y z) rotation_y [score]; every value distinct, so a swapped pair shows
    line = "Car 0.33 1 -1.57 10.25 5.50 40.12 30.00 1.50 1.60 3.90 1.00 1.70 20.00 -1.50 0.88"
    path = _one_label(tmp_path, line)
    (obj,) = read_kitti_label(path)
    assert obj.type == "Car" and obj.truncated == pytest.approx(0.33) and obj.occluded == 1
    assert obj.alpha == pytest.approx(-1.57)
    assert obj.bbox == pytest.approx((10.25, 5.5, 40.12, 30.0))
    assert obj.dimensions == pytest.approx((1.5, 1.6, 3.9))  # h, w, l
    assert obj.location == pytest.approx((1.0, 1.7, 20.0))  # x, y, z
    assert obj.rotation_y == pytest.approx(-1.5) and obj.score == pytest.approx(0.88)
    # and the writer puts them back in the same places
    write_kitti_label(path, [obj], with_score=True)
    assert path.read_text() == line + "\n"


@pytest.mark.parametrize(
    "line, message",
    [
        ("Car 0 0 -1.57 10 5 40", "expected 15 fields"),
        (_kitti_line("Car", (10, 5, 40, 30)) + " 0.9 7", "expected 15 fields"),
        (_kitti_line("Car", (10, "five", 40, 30)), "non-numeric value 'five' for bbox top"),
        (_kitti_line("Car", (10, 5, 40, 30), occ="x"), "non-numeric value 'x' for occluded"),
        (_kitti_line("Car", (10, 5, 40, 30), occ="1.5"), "expected an integer for occluded"),
        (_kitti_line("Car", (10, 5, "nan", 30)), "non-finite"),
    ],
)
def test_kitti_structural_errors_name_file_and_line(tmp_path, line, message):
    path = _one_label(tmp_path, _kitti_line("Car", (1, 1, 9, 9)), line)
    with pytest.raises(LabelFormatError, match=message) as err:
        read_kitti_label(path, image_size=(H, W))
    assert str(err.value).startswith(f"{path}:2:")
    assert err.value.line == 2


def test_kitti_droppable_problems_warn_once_with_counts(tmp_path):
    path = _one_label(
        tmp_path,
        _kitti_line("Car", (10, 5, 40, 30)),
        _kitti_line("Car", (40, 5, 10, 30)),  # inverted
        _kitti_line("Car", (10, 5, 10, 30)),  # zero width
        _kitti_line("Car", (10, 5, W + 5, 30)),  # 5 px outside
        _kitti_line("Car", (-3, 5, 20, 30)),  # 3 px outside on the left
        _kitti_line("Bus", (10, 5, 40, 30)),  # unknown type
        _kitti_line("Pedestrian", (-0.5, 0, W + 1.0, H + 0.75)),  # within 1 px: clipped silently
    )
    with pytest.warns(LabelWarning) as record:
        objects = read_kitti_label(path, image_size=(H, W))
    assert len(record) == 1
    text = str(record[0].message)
    assert "bad_box: 2" in text and "outside_image: 2" in text and "unknown_class: 1" in text
    assert f"{path}:2:" in text and f"{path}:6:" in text  # first locations are named
    assert [o.type for o in objects] == ["Car", "Pedestrian"]
    assert objects[1].bbox == (0.0, 0.0, float(W), float(H))


@pytest.mark.parametrize(
    "line, kind",
    [
        (_kitti_line("Car", (40, 5, 10, 30)), "bad_box"),
        (_kitti_line("Car", (10, 5, W + 1.5, 30)), "outside_image"),
        (_kitti_line("Bus", (10, 5, 40, 30)), "unknown_class"),
    ],
)
def test_kitti_strict_turns_drops_into_errors(tmp_path, line, kind):
    path = _one_label(tmp_path, _kitti_line("Car", (1, 1, 9, 9)), line)
    with pytest.raises(LabelFormatError, match=kind) as err:
        read_kitti_label(path, image_size=(H, W), strict=True)
    assert str(err.value).startswith(f"{path}:2:")


def test_kitti_within_one_pixel_is_clipped_without_warning(tmp_path):
    path = _one_label(tmp_path, _kitti_line("Car", (-1.0, 2, W + 0.5, H + 1.0)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (obj,) = read_kitti_label(path, image_size=(H, W), strict=True)
    assert obj.bbox == (0.0, 2.0, float(W), float(H))


def test_kitti_dir_errors_for_label_without_image_and_undecodable_image(tmp_path):
    root = _kitti_dataset(tmp_path / "k", {"000000": [_kitti_line("Car", (1, 1, 9, 9))]})
    orphan = root / "training" / "label_2" / "000007.txt"
    orphan.write_text(_kitti_line("Car", (1, 1, 9, 9)) + "\n")
    with pytest.raises(LabelFormatError, match="no image") as err:
        read_kitti_dir(root)
    assert str(err.value).startswith(f"{orphan}:")
    orphan.unlink()

    broken = root / "training" / "image_2" / "000001.png"
    broken.write_bytes(b"this is not a png")
    (root / "training" / "label_2" / "000001.txt").write_text("")
    with pytest.raises(LabelFormatError, match="cannot decode image") as err:
        read_kitti_dir(root)
    assert str(err.value).startswith(f"{broken}:")


def test_kitti_dir_image_without_label_is_counted(tmp_path):
    root = _kitti_dataset(tmp_path / "k", {"000000": [_kitti_line("Car", (1, 1, 9, 9))]})
    write_image(root / "training" / "image_2" / "000001.png")
    with pytest.warns(LabelWarning, match="image_without_label: 1"):
        items = read_kitti_dir(root)
    assert [a.image_id for a in items] == ["000000"]
    assert (items[0].height, items[0].width) == (H, W)
    with pytest.raises(LabelFormatError, match="000001.txt"):
        read_kitti_dir(root, strict=True)
    with pytest.raises(FileNotFoundError, match="image folder"):
        read_kitti_dir(tmp_path / "nowhere")


# ------------------------------------------------------------------------------------------- round trips


def _objects_by_image(items):
    return {a.image_id: sorted((o.type, o.bbox) for o in a.objects) for a in items}


def _assert_same(a, b):
    a, b = _objects_by_image(a), _objects_by_image(b)
    assert a.keys() == b.keys()
    for key in a:
        assert [t for t, _ in a[key]] == [t for t, _ in b[key]]
        np.testing.assert_allclose([box for _, box in a[key]], [box for _, box in b[key]], atol=1e-3)


def _sample_kitti(root):
    return _kitti_dataset(
        root,
        {
            "000000": [
                _kitti_line("Car", (10.37, 5.21, 40.93, 30.07), 0.2, 1),
                _kitti_line("Pedestrian", (41.5, 3.33, 47.25, 25.9)),
                _kitti_line("DontCare", (0.0, 30.0, 12.45, 47.0)),
            ],
            "000001": [_kitti_line("Cyclist", (20.01, 10.99, 33.33, 44.44))],
            "000002": [],
        },
    )


def test_roundtrip_kitti_coco_yolo_kitti_preserves_boxes_and_classes(tmp_path):
    classes = ["Car", "Pedestrian", "Cyclist", "DontCare"]
    original = read_kitti_dir(_sample_kitti(tmp_path / "kitti"))
    write_coco(original, tmp_path / "coco" / "annotations.json", classes)
    from_coco = read_coco(tmp_path / "coco" / "annotations.json")
    _assert_same(original, from_coco)
    # KITTI's fields ride along in COCO: the Car of _sample_kitti is the line
    # "Car 0.2 1 -1.57 <box> 1.50 1.60 3.90 1.00 1.70 20.00 -1.50" (see _kitti_line)
    car = from_coco[0].objects[0]
    assert car.type == "Car"
    assert car.truncated == pytest.approx(0.2)
    assert car.occluded == 1
    assert car.alpha == pytest.approx(-1.57)
    assert car.dimensions == pytest.approx((1.5, 1.6, 3.9))
    assert car.location == pytest.approx((1.0, 1.7, 20.0))
    assert car.rotation_y == pytest.approx(-1.5)

    yaml_path = write_yolo(from_coco, tmp_path / "yolo", classes, split="train")
    assert yaml.safe_load(yaml_path.read_text())["names"] == dict(enumerate(classes))
    from_yolo = read_yolo(yaml_path, "train")
    _assert_same(original, from_yolo)

    write_kitti_dir(from_yolo, tmp_path / "kitti2")
    _assert_same(original, read_kitti_dir(tmp_path / "kitti2"))


# ------------------------------------------------------------------------------------------------- COCO


def _coco(tmp_path, annotations, images=None, categories=None):
    write_image(tmp_path / "img" / "a.png")
    data = {
        "images": images
        if images is not None
        else [{"id": 1, "file_name": "img/a.png", "width": W, "height": H}],
        "annotations": annotations,
        "categories": categories if categories is not None else [{"id": 1, "name": "Car"}],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data, indent=1))
    return path


def test_coco_errors_name_file_and_element(tmp_path):
    path = _coco(tmp_path, [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, "x", 3, 4]}])
    with pytest.raises(LabelFormatError, match="non-numeric") as err:
        read_coco(path)
    assert str(err.value).startswith(f"{path}:annotations[0]:")

    path = _coco(tmp_path, [{"id": 1, "image_id": 9, "category_id": 1, "bbox": [1, 2, 3, 4]}])
    with pytest.raises(LabelFormatError, match="image_id 9"):
        read_coco(path)

    path = _coco(tmp_path, [], images=[{"id": 1, "file_name": "img/missing.png", "width": W, "height": H}])
    with pytest.raises(LabelFormatError, match="not found") as err:
        read_coco(path)
    assert str(err.value).startswith(f"{path}:images[0]:")

    path = _coco(tmp_path, [], images=[{"id": 1, "file_name": "img/a.png", "width": W + 1, "height": H}])
    with pytest.raises(LabelFormatError, match="width 65 in the JSON"):
        read_coco(path)

    path.write_text('{"images": [],\n "annotations": [,]}')
    with pytest.raises(LabelFormatError, match="invalid JSON") as err:
        read_coco(path)
    assert str(err.value).startswith(f"{path}:2:")


def test_a_coco_json_with_a_byte_order_mark_reads(tmp_path):
    """Refused as 'invalid JSON' at line 1, while label text files with one read."""
    path = _coco(tmp_path, [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]}])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert len(read_coco(path)[0].objects) == 1


def test_coco_unknown_category_and_outside_box_are_counted(tmp_path):
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 10]},
        {"id": 2, "image_id": 1, "category_id": 5, "bbox": [1, 2, 10, 10]},
        {"id": 3, "image_id": 1, "category_id": 1, "bbox": [60, 2, 10, 10]},
        {"id": 4, "image_id": 1, "category_id": 1, "bbox": [1, 2, 5, 5], "iscrowd": 1},
    ]
    path = _coco(tmp_path, anns)
    with pytest.warns(LabelWarning) as record:
        (item,) = read_coco(path)
    assert len(record) == 1 and "unknown_class: 1" in str(record[0].message)
    assert "outside_image: 1" in str(record[0].message)
    assert [(o.type, o.bbox) for o in item.objects] == [("Car", (1, 2, 11, 12)), ("DontCare", (1, 2, 6, 7))]
    with pytest.raises(LabelFormatError, match="category_id 5") as err:
        read_coco(path, strict=True)
    assert str(err.value).startswith(f"{path}:annotations[1]:")


# ------------------------------------------------------------------------------------------------- YOLO


def _yolo(tmp_path, label_lines, names=("Car", "Pedestrian")):
    root = tmp_path / "yolo"
    write_image(root / "images" / "train" / "a.png")
    write_image(root / "images" / "train" / "background.png")
    (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
    (root / "labels" / "train" / "a.txt").write_text("\n".join(label_lines) + "\n")
    spec = {"path": ".", "train": "images/train", "names": {i: n for i, n in enumerate(names)}}
    (root / "data.yaml").write_text(yaml.safe_dump(spec))
    return root


def test_yolo_reads_normalised_boxes_and_background_images(tmp_path):
    root = _yolo(tmp_path, ["1 0.5 0.5 0.25 0.5", "0 0.25 0.25 0.125 0.25 0.9"])
    items = {a.image_id: a for a in read_yolo(root / "data.yaml", "train")}
    assert items["background"].objects == []
    ped, car = items["a"].objects
    assert (ped.type, ped.bbox) == ("Pedestrian", (24.0, 12.0, 40.0, 36.0))
    assert (car.type, car.score) == ("Car", pytest.approx(0.9))
    assert yolo_label_path(root / "images" / "train" / "a.png") == root / "labels" / "train" / "a.txt"


def test_yolo_errors_and_counted_drops(tmp_path):
    root = _yolo(tmp_path, ["0 0.5 0.5 0.25", "0 0.5 0.5 0.25 0.5"])
    label = root / "labels" / "train" / "a.txt"
    with pytest.raises(LabelFormatError, match="expected 5 fields") as err:
        read_yolo(root / "data.yaml")
    assert str(err.value).startswith(f"{label}:1:")

    label.write_text("0 0.5 0.5 0.25 0.5\n7 0.5 0.5 0.25 0.5\n0 0.9 0.5 0.5 0.5\n0 0.5 0.5 -0.1 0.5\n")
    with pytest.warns(LabelWarning) as record:
        items = read_yolo(root / "data.yaml")
    message = str(record[0].message)
    assert len(record) == 1 and "unknown_class: 1" in message and "outside_image: 1" in message
    assert "bad_box: 1" in message and f"{label}:2:" in message
    assert sum(len(a.objects) for a in items) == 1
    with pytest.raises(LabelFormatError, match="class index 7") as err:
        read_yolo(root / "data.yaml", strict=True)
    assert str(err.value).startswith(f"{label}:2:")

    label.write_text("zero 0.5 0.5 0.25 0.5\n")
    with pytest.raises(LabelFormatError, match="non-numeric"):
        read_yolo(root / "data.yaml")

    label.write_text("")
    orphan = root / "labels" / "train" / "gone.txt"
    orphan.write_text("0 0.5 0.5 0.2 0.2\n")
    with pytest.raises(LabelFormatError, match="no image") as err:
        read_yolo(root / "data.yaml")
    assert str(err.value).startswith(f"{orphan}:")
    with pytest.raises(LabelFormatError, match="no 'val' entry"):
        read_yolo(root / "data.yaml", "val")


def test_yolo_names_as_list_and_txt_split(tmp_path):
    root = _yolo(tmp_path, ["1 0.5 0.5 0.25 0.5"])
    (root / "train.txt").write_text("./images/train/a.png\n")
    (root / "data.yaml").write_text(yaml.safe_dump({"train": "train.txt", "names": ["Car", "Pedestrian"]}))
    (item,) = read_yolo(root / "data.yaml")
    assert item.objects[0].type == "Pedestrian"
    (root / "train.txt").write_text("./images/train/missing.png\n")
    with pytest.raises(LabelFormatError, match="not found") as err:
        read_yolo(root / "data.yaml")
    assert str(err.value).startswith(f"{root / 'train.txt'}:1:")


# ---------------------------------------------------------------------------------------------- converter


def test_converter_chain_kitti_coco_yolo_kitti(tmp_path, capsys):
    src = _sample_kitti(tmp_path / "kitti")
    args = ["--classes", "Car", "Pedestrian", "Cyclist", "DontCare"]
    assert (
        convert.main(
            ["--from", "kitti", "--to", "coco", "--src", str(src), "--dst", str(tmp_path / "c")] + args
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "3 images" in out and "| Car | 1 |" in out and "dropped while reading: none" in out
    coco_json = tmp_path / "c" / "annotations.json"
    # by default YOLO gets no DontCare class (it has no ignore regions): counted as not written
    coco_to_yolo = ["--from", "coco", "--to", "yolo", "--src", str(coco_json)]
    assert convert.main([*coco_to_yolo, "--dst", str(tmp_path / "y0")]) == 0
    assert "not written (type not in --classes): {'DontCare': 1}" in capsys.readouterr().out
    assert "DontCare" not in yaml.safe_load((tmp_path / "y0" / "data.yaml").read_text())["names"].values()
    assert convert.main([*coco_to_yolo, "--dst", str(tmp_path / "y"), *args]) == 0  # asked for: kept
    yolo_yaml = tmp_path / "y" / "data.yaml"
    assert (
        convert.main(
            ["--from", "yolo", "--to", "kitti", "--src", str(yolo_yaml), "--dst", str(tmp_path / "k2")]
        )
        == 0
    )
    _assert_same(read_kitti_dir(src), read_kitti_dir(tmp_path / "k2"))
    # class order follows the source (COCO categories, then YOLO names)
    assert yaml.safe_load(yolo_yaml.read_text())["names"] == {
        0: "Car",
        1: "Pedestrian",
        2: "Cyclist",
        3: "DontCare",
    }


def test_converters_carry_the_sequence_map_so_splits_stay_by_drive(tmp_path, capsys):
    from domains.driving.common import find_sequence_groups, read_sequence_groups

    src = _sample_kitti(tmp_path / "kitti")
    (src / "sequences.txt").write_text("000000 drive_a\n000001 drive_a\n000002 drive_b\n")
    ids = ["000000", "000001", "000002"]
    expected = ["drive_a", "drive_a", "drive_b"]
    chain = [
        ("kitti", src, "coco", "c"),
        ("coco", "c/annotations.json", "yolo", "y"),
        ("yolo", "y/data.yaml", "kitti", "k"),
    ]
    for src_fmt, source, dst_fmt, dst in chain:
        source = tmp_path / source if isinstance(source, str) else source
        assert (
            convert.main(
                ["--from", src_fmt, "--to", dst_fmt, "--src", str(source), "--dst", str(tmp_path / dst)]
            )
            == 0
        )
        assert "sequence map: 2 sequences" in capsys.readouterr().out
        assert find_sequence_groups(tmp_path / dst, ids) == expected  # where the destination's reader looks
    (src / "sequences.txt").unlink()
    assert (
        convert.main(["--from", "kitti", "--to", "coco", "--src", str(src), "--dst", str(tmp_path / "c2")])
        == 0
    )
    assert "sequence map: none in the source" in capsys.readouterr().out
    assert not (tmp_path / "c2" / "sequences.txt").exists()
    with pytest.warns(UserWarning, match=r"no sequence map .* each of the 3 images is its own group"):
        assert read_sequence_groups(tmp_path / "c2", ids) == ids


def test_converter_counts_dropped_types(tmp_path, capsys):
    src = _sample_kitti(tmp_path / "kitti")
    assert (
        convert.main(
            [
                "--from",
                "kitti",
                "--to",
                "yolo",
                "--src",
                str(src),
                "--dst",
                str(tmp_path / "y"),
                "--classes",
                "Car",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "not written (type not in --classes): {'Pedestrian': 1, 'DontCare': 1, 'Cyclist': 1}" in out
    assert yaml.safe_load((tmp_path / "y" / "data.yaml").read_text())["names"] == {0: "Car"}


def test_converter_coco_to_coco_writes_a_crowd_of_a_written_class_and_does_not_count_it_dropped(tmp_path, capsys):
    """The crowd was written (iscrowd 1, its category) but the summary said ``not written: {'DontCare': 1}``."""
    crowd = {"id": 2, "image_id": 1, "category_id": 1, "bbox": [20, 5, 8, 8], "iscrowd": 1}
    src = _coco(tmp_path, [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 10]}, crowd])
    assert convert.main(["--from", "coco", "--to", "coco", "--src", str(src), "--dst", str(tmp_path / "c")]) == 0
    assert "not written (type not in --classes): none" in capsys.readouterr().out
    written = json.loads((tmp_path / "c" / "annotations.json").read_text())["annotations"]
    assert [(a["category_id"], a["iscrowd"]) for a in written] == [(1, 0), (1, 1)]


def test_converter_refuses_overwrite_and_leaves_nothing_half_written(tmp_path, capsys):
    src = _sample_kitti(tmp_path / "kitti")
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "keep.txt").write_text("precious")
    base = ["--from", "kitti", "--to", "coco", "--src", str(src), "--dst", str(dst)]
    assert convert.main(base) == 2  # the README's status for bad input
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in dst.iterdir()] == ["keep.txt"]

    # a bad box under --strict fails mid-way: destination untouched, no temp folder left behind
    (src / "training" / "label_2" / "000001.txt").write_text(_kitti_line("Car", (10, 5, W + 9, 30)) + "\n")
    assert convert.main(base + ["--overwrite", "--strict"]) == 2
    err = capsys.readouterr().err
    assert f"{src / 'training' / 'label_2' / '000001.txt'}:1:" in err and "nothing was written" in err
    assert [p.name for p in dst.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kitti", "out"]

    # without --strict the bad box is dropped, counted, and --overwrite replaces the folder
    assert convert.main(base + ["--overwrite"]) == 0
    assert "outside_image" in capsys.readouterr().out
    assert sorted(p.name for p in dst.iterdir()) == ["annotations.json", "images"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kitti", "out"]


def test_write_refuses_duplicate_ids(tmp_path):
    a = write_image(tmp_path / "x" / "same.png")
    b = write_image(tmp_path / "y" / "same.png")
    anns = [ImageAnnotation(str(a), W, H, []), ImageAnnotation(str(b), W, H, [])]
    with pytest.raises(ValueError, match="share the id 'same'"):
        write_yolo(anns, tmp_path / "yolo", ["Car"])


def test_sequence_map_text_refuses_ids_the_reader_would_split_or_skip():
    from domains.driving.common import sequence_map_text

    assert (
        sequence_map_text(["000001", "000002"], ["drive_a", "drive_b"]) == "000001 drive_a\n000002 drive_b\n"
    )
    for ids, groups in (
        (["a b"], ["s"]),
        (["a"], ["s,t"]),
        (["a\r"], ["s"]),
        (["image"], ["s"]),
        (["a#1"], ["s"]),
    ):
        with pytest.raises(ValueError, match="must hold no spaces, commas or '#'"):
            sequence_map_text(ids, groups)


class _BadFrames(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int):
        raise LabelFormatError("/data/image_2/000001.png", None, "cannot decode the image")


def test_a_label_error_raised_in_a_loader_worker_stays_one_line(capsys, monkeypatch):
    """torch rebuilds a worker's error from its message alone; LabelFormatError used to need three arguments,
    so it came back as a RuntimeError and the command printed a traceback instead of its one line."""
    import pickle

    from shared.cli_help import report_input_errors

    err = LabelFormatError("a.txt", 3, "expected 15 fields")
    again = pickle.loads(pickle.dumps(err))
    assert isinstance(again, LabelFormatError) and str(again) == "a.txt:3: expected 15 fields"
    monkeypatch.delenv("SUITE_TRACEBACK", raising=False)
    loader = torch.utils.data.DataLoader(_BadFrames(), num_workers=1)
    with pytest.raises(SystemExit) as stop, report_input_errors():
        next(iter(loader))
    assert stop.value.code == 1
    first = capsys.readouterr().err.splitlines()[0]
    assert first == "error: LabelFormatError: /data/image_2/000001.png: cannot decode the image"


def test_image_size_turns_with_the_exif_orientation_as_the_decoder_does(tmp_path):
    """A phone photo held upright is stored wide with orientation 6; OpenCV decodes it turned, so the header
    size must turn too (predict on such a photo stopped with 'image is 30x50 but its annotation says 50x30')."""
    from PIL import Image

    from domains.driving.common import read_rgb
    from domains.driving.formats import image_size

    for orientation, expected in ((1, (30, 50)), (6, (50, 30)), (8, (50, 30)), (3, (30, 50))):
        path = tmp_path / f"o{orientation}.jpg"
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.new("RGB", (50, 30), (90, 20, 200)).save(path, exif=exif)
        assert image_size(path) == expected == read_rgb(path).shape[:2], orientation
