"""The detectors' data modules split a KITTI-layout set on its file names and read the labels (and instance maps)
of the splits a stage uses only: ``validate`` read and checked every map and label file of all three splits to
score val (instances 4 s of setup on the synthetic set, detection 1.1 s). The split itself is unchanged."""

from __future__ import annotations

import warnings
from collections import Counter

import cv2
import numpy as np
import pytest

from domains.driving import formats
from domains.driving.common import split_by_sequence
from domains.driving.detection import data as detection_data
from domains.driving.detection.data import DetectionDataModule, DetectorDataModule
from domains.driving.formats import LabelFormatError, read_kitti_dir, resolve_kitti_split
from domains.driving.instances import data as instance_data
from domains.driving.instances.data import InstanceDataModule, read_kitti_instances
from tests.driving.layouts import write_instance_kitti, write_kitti

FRACTIONS = (0.5, 0.25, 0.25)  # 6 sequences of two frames: 3 / 1.5 / 1.5 of them
CLASSES = ["Car", "Pedestrian"]


def _counting(monkeypatch, calls: Counter, module, name: str) -> None:
    """Count the calls of ``module.name`` (one the module does not import yet: ``formats.name``'s through it)."""
    real = getattr(module, name, None) or getattr(formats, name)
    monkeypatch.setattr(module, name, lambda *a, **k: calls.update([name]) or real(*a, **k), raising=False)


def _ids(splits) -> dict[str, list[str]]:
    return {name: [record.image_id for record in splits[name]] for name in ("train", "val", "test")}


def _whole_read_split(root, reader, seed: int = 0, cap: int | None = None) -> dict[str, list[str]]:
    """The image ids of each split as the modules split the whole read before (every file of every split)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the same frames' warnings, said by the modules
        records = reader(root)
    return _ids(split_by_sequence(records, resolve_kitti_split(root), FRACTIONS, seed, cap))


@pytest.fixture
def instance_root(tmp_path):
    return write_instance_kitti(tmp_path / "instances", n=12, sequences=True)


@pytest.fixture
def detection_root(tmp_path):
    return write_kitti(tmp_path / "boxes", n=12, semantic=False)


def _instances(root, **kwargs) -> InstanceDataModule:
    return InstanceDataModule(
        "kitti", str(root), CLASSES, num_workers=0, split_fractions=FRACTIONS, augment=False, **kwargs
    )


def _detection(root, **kwargs) -> DetectionDataModule:
    return DetectionDataModule(
        "kitti", str(root), ["Car"], num_workers=0, split_fractions=FRACTIONS, augment=False, **kwargs
    )


@pytest.mark.parametrize("seed", [0, 5])
def test_the_split_is_the_one_the_whole_read_gave(instance_root, detection_root, seed):
    """Pinned before and after the change: the same images per split for a seed (and max_items)."""
    for module, records, root in (
        (_instances, read_kitti_instances, instance_root),
        (_detection, read_kitti_dir, detection_root),
    ):
        for cap in (None, 9):
            expected = _whole_read_split(root, records, seed, cap)
            dm = module(root, seed=seed, max_items=cap)
            dm.setup()
            assert _ids(dm.splits) == expected
            assert all(expected.values())  # three splits with images: the case the pin is for


@pytest.mark.parametrize(
    "stage, read", [("fit", ("train", "val")), ("validate", ("val",)), ("test", ("test",)), (None, None)]
)
def test_instance_setup_reads_the_maps_of_the_stage_splits_only(instance_root, monkeypatch, stage, read):
    calls: Counter = Counter()
    _counting(monkeypatch, calls, instance_data, "read_label_map")
    ids = _whole_read_split(instance_root, read_kitti_instances)
    sizes = {name: len(split) for name, split in ids.items()}
    calls.clear()
    dm = _instances(instance_root)
    dm.setup(stage)
    read = read or tuple(sizes)
    assert calls["read_label_map"] == sum(sizes[name] for name in read)  # one read per image, for its ids
    assert sorted(dm.datasets) == sorted(read)
    assert dm.split_groups("train") == set(ids["train"])  # the ids alone: nothing read for them
    assert calls["read_label_map"] == sum(sizes[name] for name in read)
    # another split is read when first asked for (a caller wanting the test loader after validate)
    loader = dm.test_dataloader()
    assert len(loader.dataset) == sizes["test"] and "test" in dm.datasets
    assert calls["read_label_map"] == sum(sizes[name] for name in {*read, "test"})
    assert all(ann.width > 0 and ann.instance_map for ann in dm.splits["test"])


def test_detection_setup_reads_the_labels_of_the_stage_splits_only(detection_root, monkeypatch):
    calls: Counter = Counter()
    _counting(monkeypatch, calls, formats, "read_kitti_label")  # read_kitti_dir's
    _counting(monkeypatch, calls, detection_data, "read_kitti_label")
    sizes = {name: len(split) for name, split in _whole_read_split(detection_root, read_kitti_dir).items()}
    calls.clear()
    dm = _detection(detection_root)
    dm.setup("validate")
    assert calls["read_kitti_label"] == sizes["val"] < sum(sizes.values())
    assert sorted(dm.datasets) == ["val"] and dm.datasets["val"].objects == 2 * sizes["val"]  # Car, Van as Car
    assert [(a.width, a.height) for a in dm.splits["val"]] == [(64, 48)] * sizes["val"]
    assert len(dm.train_dataloader().dataset) == sizes["train"]  # read on first use
    assert calls["read_kitti_label"] == sizes["val"] + sizes["train"]


def test_a_bad_frame_outside_the_stage_splits_is_not_read_and_named_when_it_is(instance_root, detection_root):
    """Per-frame errors still name the file, for the frames that are read."""
    test_stem = _whole_read_split(instance_root, read_kitti_instances)["test"][0]
    bad_map = instance_root / "training" / "instance" / f"{test_stem}.png"
    cv2.imwrite(str(bad_map), np.zeros((8, 8), np.uint16))
    fresh = _instances(instance_root)
    fresh.setup("validate")  # the test split's map is not read
    with pytest.raises(LabelFormatError, match=rf"instance/{test_stem}\.png: instance map is 8x8 but its image"):
        fresh.setup("test")

    test_stem = _whole_read_split(detection_root, read_kitti_dir)["test"][0]
    label = detection_root / "training" / "label_2" / f"{test_stem}.txt"
    label.write_text(label.read_text() + "Car 0 0\n")
    fresh = _detection(detection_root, strict=True)
    fresh.setup("fit")
    with pytest.raises(LabelFormatError, match=rf"label_2/{test_stem}\.txt:4: .*15 fields"):
        fresh.test_dataloader()


def test_a_split_s_dropped_lines_are_counted_in_one_warning_naming_it(detection_root):
    val_stem = _whole_read_split(detection_root, read_kitti_dir)["val"][0]
    label = detection_root / "training" / "label_2" / f"{val_stem}.txt"
    label.write_text(label.read_text() + "Blimp 0.00 0 -1 1 1 5 5 1.5 1.6 3.9 1.0 1.7 20.0 -1.5\n")
    with pytest.warns(formats.LabelWarning, match=r"read_kitti_dir\(.*\), val split: .*unknown_class: 1"):
        _detection(detection_root).setup("validate")


def test_the_base_data_module_is_refused_with_a_message_naming_the_ones_to_use():
    """It raised IndexError inside its own message: its data_formats is empty."""
    with pytest.raises(TypeError, match=r"DetectorDataModule reads no data_format .*use one of them"):
        DetectorDataModule(data_format="kitti")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert DetectionDataModule("kitti", num_workers=0).data_formats  # its subclasses are unchanged
