"""Detection ``test`` and ``predict`` read the test split's labels only, as ``SETUP_SPLITS`` says: the task's
image index (``DetectionTask._annotations``) went through every split of the lazy ``SplitRecords``, so a test
run read the val and train labels too and printed the val split's class note after ``Testing:`` started."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from domains.driving import formats
from domains.driving.detection import data as detection_data
from domains.driving.detection.data import DetectionDataModule
from tests.driving.layouts import write_kitti
from tests.helpers import detection_task, quiet_trainer

FRACTIONS = (0.5, 0.25, 0.25)  # 6 sequences of two frames


@pytest.fixture
def counted(tmp_path, monkeypatch):
    """A 12-image KITTI set, its data module, a tiny detector, and the KITTI label files read (by stem)."""
    root = write_kitti(tmp_path / "kitti", n=12, semantic=False)
    read: Counter = Counter()
    real = formats.read_kitti_label

    def counting(path, *args, **kwargs):
        read.update([Path(path).stem])
        return real(path, *args, **kwargs)

    monkeypatch.setattr(formats, "read_kitti_label", counting)
    monkeypatch.setattr(detection_data, "read_kitti_label", counting, raising=False)
    dm = DetectionDataModule(
        "kitti", str(root), ["Car"], num_workers=0, split_fractions=FRACTIONS, augment=False, batch_size=2
    )
    torch.manual_seed(0)
    task = detection_task(
        class_names=("Car",), backbone="tiny_cnn", backbone_kwargs={"width": 8}, fpn_channels=32,
        head_convs=1, input_size=(48, 64), train_scales=[1.0], fpn_levels=3, kitti_difficulties=["moderate"],
    )  # fmt: skip
    return dm, task, read


def _stems(dm, name: str) -> set[str]:
    return {record.image_id for record in dm.splits.planned[name]}


def test_a_test_run_reads_and_indexes_the_test_split_only(counted):
    dm, task, read = counted
    trainer = quiet_trainer(limit_test_batches=1)
    trainer.test(task, datamodule=dm, verbose=False)
    test_ids = _stems(dm, "test")
    assert sorted(dm.splits.read_splits) == ["test"]
    assert set(read) == test_ids and all(n == 1 for n in read.values())  # no val or train label read
    assert all(task.image_record(image_id) is not None for image_id in test_ids)  # the KITTI truth found
    val_id = min(_stems(dm, "val"))
    assert task.image_record(val_id) is None  # not indexed: it would have read the val split
    assert sorted(dm.splits.read_splits) == ["test"]
    # a split read later (here by hand) joins the index: the cached one is rebuilt, not kept stale
    dm.splits["val"]
    assert task.image_record(val_id).image_id == val_id


def test_a_predict_run_reads_the_test_split_only_and_still_names_each_image_s_file(counted):
    dm, task, read = counted
    trainer = quiet_trainer(limit_predict_batches=1)
    preds = [p for batch in trainer.predict(task, datamodule=dm) for p in batch]
    assert sorted(dm.splits.read_splits) == ["test"]
    assert set(read) == _stems(dm, "test")
    assert preds and all(p["image_path"] and p["image_path"].endswith(f"{p['image_id']}.png") for p in preds)
