"""Instance data module setup on a KITTI-layout set: the maps are read for their ids only, of the items the split
and ``max_items`` keep, and the masks are taken from the map when an image loads (setup decoded and RLE-encoded
all 1,500 maps of the synthetic set, 20-35 s, to train on 10 images with max_items 20)."""

from __future__ import annotations

from collections import Counter

import albumentations as A
import cv2
import numpy as np
import pytest
import torch

from domains.driving.formats import LabelFormatError
from domains.driving.instances import data as instance_data
from domains.driving.instances.data import InstanceDataModule, InstanceDataset, read_kitti_instances
from tests.driving.layouts import KITTI_LINE, write_instance_kitti

H, W = 64, 128
CLASSES = ["Car", "Pedestrian"]


def _count_calls(monkeypatch, calls: Counter, *names: str) -> None:
    for name in names:
        real = getattr(instance_data, name)
        monkeypatch.setattr(
            instance_data, name, lambda *a, _n=name, _f=real, **k: calls.update([_n]) or _f(*a, **k)
        )


def test_setup_reads_the_maps_of_the_kept_items_only_and_encodes_no_mask(tmp_path, monkeypatch):
    root = write_instance_kitti(tmp_path / "kitti", n=8, sequences=True)
    cv2.imwrite(str(root / "training/instance/000007.png"), np.zeros((H // 2, W), np.uint16))  # a bad map
    calls: Counter = Counter()
    _count_calls(monkeypatch, calls, "read_label_map", "encode_masks")
    dm = InstanceDataModule(
        "kitti",
        str(root),
        CLASSES,
        num_workers=0,
        max_items=4,
        split_fractions=(0.5, 0.5, 0.0),
        augment=False,
    )
    dm.setup("fit")  # 000007 is past max_items: its map is not read
    assert {name: len(items) for name, items in dm.splits.items()} == {"train": 2, "val": 2, "test": 0}
    assert calls == {"read_label_map": 4}  # one read per kept image, for its ids; no RLE
    _, target = dm.datasets["train"][0]
    assert calls == {"read_label_map": 5} and len(target["masks"]) == len(target["labels"]) > 0

    with pytest.raises(LabelFormatError, match=r"instance/000007\.png: instance map is 128x32 but its image"):
        InstanceDataModule("kitti", str(root), CLASSES, num_workers=0).setup("test")


@pytest.mark.filterwarnings("ignore::UserWarning")  # the labels and maps disagree on purpose (LabelWarning)
def test_items_whose_masks_load_from_the_map_equal_those_read_as_rles(tmp_path):
    """Every target (masks, boxes, labels, ignore mask, crowds) and the setup counts are what the masks read
    as RLEs at setup gave, for objects on top of others, a visible line without pixels, an id without a line,
    a hidden line and DontCare regions."""
    root = write_instance_kitti(tmp_path / "kitti", n=10, seed=3, sequences=True)
    labels = root / "training/label_2"
    with (labels / "000000.txt").open("a") as f:  # a visible Car and a hidden one, neither painted
        f.write(
            KITTI_LINE.format("Car", 1, 1, 5, 5)
            + "\n"
            + KITTI_LINE.format("Car", 1, 1, 5, 5).replace(" 0 ", " 3 ", 1)
        )
    ids = cv2.imread(str(root / "training/instance/000001.png"), cv2.IMREAD_UNCHANGED)
    ids[50:60, 100:120] = 9  # no line 9
    cv2.imwrite(str(root / "training/instance/000001.png"), ids)
    with (labels / "000002.txt").open("a") as f:
        f.write(KITTI_LINE.format("Van", 1, 1, 5, 5) + "\n")  # renamed to Car by the class map
    ids = cv2.imread(str(root / "training/instance/000002.png"), cv2.IMREAD_UNCHANGED)
    ids[40:64, 0:30] = ids.max() + 1
    cv2.imwrite(str(root / "training/instance/000002.png"), ids)

    dm = InstanceDataModule(
        "kitti", str(root), CLASSES, {"Van": "Car"}, image_size=(32, 64), num_workers=0, augment=False
    )
    dm.setup("test")
    eager = {ann.image_id: ann for ann in read_kitti_instances(root)}
    assert all(ann.objects and ann.objects[0].rle is not None for ann in eager.values())
    flip = A.Compose([A.HorizontalFlip(p=1.0), A.Resize(48, 96)], seed=0)
    checked, ignored = 0, 0
    for name, items in dm.splits.items():
        assert all(ann.instance_map and obj.rle is None for ann in items for obj in ann.objects)
        read = [eager[ann.image_id] for ann in items]
        assert [[(o.type, o.source) for o in a.objects] for a in items] == [
            [(o.type, o.source) for o in a.objects] for a in read
        ]
        pairs = [(dm.datasets[name], dm.make_dataset(name, read))]
        pairs += [
            (
                InstanceDataset(items, CLASSES, t, class_map=dm.class_map),
                InstanceDataset(read, CLASSES, t, class_map=dm.class_map),
            )
            for t in (None, flip)
        ]
        for lazy, rles in pairs:
            assert (lazy.objects, lazy.dropped) == (rles.objects, rles.dropped)
            for i in range(len(items)):
                (image, target), (image_rle, target_rle) = lazy[i], rles[i]
                assert torch.equal(image, image_rle)
                assert target.keys() == target_rle.keys()
                for key, value in target.items():
                    same = (
                        torch.equal(value, target_rle[key])
                        if torch.is_tensor(value)
                        else value == target_rle[key]
                    )
                    assert same, (name, i, key)
                    if torch.is_tensor(value):
                        assert value.dtype == target_rle[key].dtype, key
                checked += 1
                ignored += int(target["ignore_mask"].any())
    assert checked == ignored == 3 * 10  # every image has its DontCare corner
    assert dm.datasets["train"].objects > 0
