"""KITTI start-up at scale (s41): a valid label line is parsed with one ``float`` a field (the per-field parse,
kept for the error naming a bad field, was the largest part of reading a label), and the data module reads its
records with Python's cyclic garbage collector held off (its collections walked the whole heap every few
thousand records: about 30 % of a 10k-image setup's CPU time)."""

from __future__ import annotations

import gc

import pytest

from domains.driving import formats
from domains.driving.common import collector_paused
from domains.driving.detection import data as detection_data
from domains.driving.detection.data import DetectionDataModule
from domains.driving.formats import LabelFormatError, read_kitti_label
from tests.driving.layouts import write_kitti

CAR = "Car 0.30 1 -1.57 10.00 5.00 40.00 30.00 1.50 1.60 3.90 1.00 1.70 20.00 -1.50"


def _label(tmp_path, *lines: str):
    path = tmp_path / "000000.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_valid_line_is_parsed_without_the_per_field_parse(tmp_path, monkeypatch):
    """The fields of a valid line come out as they did, each checked number, with no per-field call."""
    calls = []
    parse = formats._parse_float
    monkeypatch.setattr(formats, "_parse_float", lambda *a: calls.append(a) or parse(*a))
    objects = read_kitti_label(_label(tmp_path, CAR, CAR.replace("Car", "Van") + " 0.75"), (48, 64))
    assert calls == []
    car, van = objects
    assert (car.type, car.truncated, car.occluded, car.alpha) == ("Car", 0.3, 1, -1.57)
    assert car.bbox == (10.0, 5.0, 40.0, 30.0) and isinstance(car.occluded, int)
    assert car.dimensions == (1.5, 1.6, 3.9) and car.location == (1.0, 1.7, 20.0) and car.rotation_y == -1.5
    assert car.score is None and van.score == 0.75


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (4, "left", "non-numeric value 'left' for bbox left"),
        (8, "nan", "non-finite value 'nan' for height"),
        (14, "-inf", "non-finite value '-inf' for rotation_y"),
        (2, "1.5", "expected an integer for occluded, got '1.5'"),
    ],
)
def test_a_bad_field_is_still_named_with_its_file_and_line(tmp_path, field, value, message):
    fields = CAR.split()
    fields[field] = value
    with pytest.raises(LabelFormatError, match=message) as raised:
        read_kitti_label(_label(tmp_path, CAR, " ".join(fields)))
    assert "000000.txt:2:" in str(raised.value), raised.value


def test_finite_values_whose_sum_overflows_are_read(tmp_path):
    """The fast path's one finiteness check is of the line's sum: finite values it overflows are read field by
    field, not refused."""
    fields = CAR.split()
    fields[11:14] = ["1e308", "1e308", "1e308"]
    (car,) = read_kitti_label(_label(tmp_path, " ".join(fields)))
    assert car.location == (1e308, 1e308, 1e308)


def test_setup_reads_the_records_with_the_collector_off_and_turns_it_back_on(tmp_path, monkeypatch):
    root = write_kitti(tmp_path / "kitti", n=8, semantic=False)
    seen = []
    read = detection_data.read_kitti_frame
    monkeypatch.setattr(
        detection_data, "read_kitti_frame", lambda *a: seen.append(gc.isenabled()) or read(*a)
    )
    assert gc.isenabled()
    dm = DetectionDataModule("kitti", str(root), split_fractions=(0.5, 0.5, 0.0), num_workers=0)
    dm.setup("fit")
    assert len(seen) == 8 and not any(seen), seen
    assert gc.isenabled()
    assert {name: len(records) for name, records in dm.splits.read_splits.items()} == {"train": 4, "val": 4}


def test_setup_that_fails_turns_the_collector_back_on(tmp_path):
    root = write_kitti(tmp_path / "kitti", n=4, semantic=False)
    (root / "training" / "label_2" / "000002.txt").write_text(CAR.replace("10.00", "ten") + "\n")
    dm = DetectionDataModule("kitti", str(root), split_fractions=(1.0, 0.0, 0.0), num_workers=0)
    with pytest.raises(LabelFormatError, match="non-numeric value 'ten' for bbox left"):
        dm.setup("fit")
    assert gc.isenabled()


def test_collector_paused_leaves_a_callers_disabled_collector_off():
    gc.disable()
    try:
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("a reader failed")
    assert gc.isenabled()
