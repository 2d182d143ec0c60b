"""KITTI's ``data_semantics`` ``semantic/`` maps hold Cityscapes label ids, and its benchmark scores the 19 train
ids as Cityscapes does: ``--data.cityscapes_ids labelIds`` reads a KITTI layout's maps so. Read raw (the only way
before), a 34-class model trained on the void classes and counted them in val/miou, unsaid."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from domains.driving.anomaly.data import SegmentationDataModule
from domains.driving.formats import LabelFormatError
from tests.driving.test_cityscapes_ids_s34 import SCORED, TINY, VOID_IDS, _perfect_but_void_is_road, scene
from tests.helpers import anomaly_task, quiet_trainer


def write_kitti_semantics(root: Path, frames: int = 4) -> Path:
    """KITTI ``data_semantics/training`` in miniature: ``image_2/`` and ``semantic/`` (label ids), one drive per
    frame in ``sequences.txt``; each image's red channel is its label id (as the Cityscapes stand-in's)."""
    label = scene()
    (root / "image_2").mkdir(parents=True)
    (root / "semantic").mkdir()
    for i in range(frames):
        bgr = np.stack([np.full_like(label, 90), np.full_like(label, 40 * i), label], axis=-1)
        assert cv2.imwrite(str(root / "image_2" / f"{i:06d}_10.png"), bgr)
        assert cv2.imwrite(str(root / "semantic" / f"{i:06d}_10.png"), label)
    (root / "sequences.txt").write_text("".join(f"{i:06d}_10 drive{i}\n" for i in range(frames)))
    return root


def datamodule(root: Path, **kwargs) -> SegmentationDataModule:
    return SegmentationDataModule(data_path=str(root), num_workers=0, image_size=None, augment=False, batch_size=2,
                                  split_fractions=(0.5, 0.5), **kwargs)  # fmt: skip


def test_labelids_semantic_maps_of_a_kitti_layout_are_read_as_train_ids(tmp_path):
    dm = datamodule(write_kitti_semantics(tmp_path / "kitti"), cityscapes_ids="labelIds")
    dm.setup("fit")
    mask, label = dm.datasets["val"][0]["mask"].numpy(), scene()
    assert (mask[np.isin(label, VOID_IDS)] == 255).all()
    for label_id, train_id in SCORED.items():
        assert (mask[label == label_id] == train_id).all()
    # unset: read as they are (the synthetic set's ids)
    raw = datamodule(tmp_path / "kitti")
    raw.setup("fit")
    assert np.array_equal(raw.datasets["val"][0]["mask"].numpy(), label)


def test_the_void_classes_of_kitti_labelids_are_not_scored(tmp_path):
    task = anomaly_task(**TINY, oe_weight=0.0, num_classes=19, road_ids=[0])
    task.model.features = _perfect_but_void_is_road
    dm = datamodule(write_kitti_semantics(tmp_path / "kitti"), cityscapes_ids="labelIds")
    (metrics,) = quiet_trainer(limit_val_batches=1.0).validate(task, datamodule=dm, verbose=False)
    assert metrics["val/miou"] == pytest.approx(1.0)


def test_a_34_class_model_on_kitti_maps_is_warned_of_and_refused_when_they_are_read_as_train_ids(tmp_path):
    root = write_kitti_semantics(tmp_path / "kitti")
    task = anomaly_task(**TINY, oe_weight=0.0, num_classes=34, road_ids=[7])
    with pytest.warns(UserWarning, match=r"semantic: a 34-class model reads the maps' label ids as they are.*"
                      r"--data.cityscapes_ids labelIds"):  # fmt: skip
        quiet_trainer(limit_val_batches=1.0).validate(task, datamodule=datamodule(root), verbose=False)
    with pytest.raises(ValueError, match=r"--data.cityscapes_ids labelIds: .*semantic are trained on and scored as "
                       r"Cityscapes' 19 train ids .*the model has 34 classes: give "
                       r"--model.network.init_args.num_classes 19 --model.road_ids \[0\]$"):  # fmt: skip
        quiet_trainer(limit_val_batches=1.0).validate(
            task, datamodule=datamodule(root, cityscapes_ids="labelIds"), verbose=False
        )


def test_ids_past_the_label_ids_in_a_kitti_map_name_the_file_and_the_option(tmp_path):
    root = write_kitti_semantics(tmp_path / "kitti")
    bad = scene()
    bad[0, 0] = 40
    cv2.imwrite(str(root / "semantic" / "000000_10.png"), bad)
    dm = datamodule(root, cityscapes_ids="labelIds")
    dm.setup("fit")
    dataset = next(d for d in dm.datasets.values() if any(name == "000000_10" for *_, name in d.items))
    index = next(i for i, (*_, name) in enumerate(dataset.items) if name == "000000_10")
    with pytest.raises(LabelFormatError, match=r"000000_10\.png.*ids \[40\] are not Cityscapes label ids "
                       r"\(0\.\.33, 255\): give KITTI's semantic/ maps as downloaded"):  # fmt: skip
        dataset[index]
