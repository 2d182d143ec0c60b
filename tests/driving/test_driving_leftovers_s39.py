"""Driving leftovers (s39): ``--data.predict_path`` inside a data set's label-map folder, and the DDP
"It is recommended to use `sync_dist=True`" lines for detection and instance AP, already the same on every
rank."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.distributed as dist
from pytorch_lightning.trainer.connectors.logger_connector import result
from pytorch_lightning.utilities.rank_zero import WarningCache
from torch.utils.data import DataLoader

from domains.driving.anomaly.data import SegmentationDataModule
from domains.driving.common import predict_images
from domains.driving.detection.data import DetectionDataModule
from tests.helpers import FixedOutputs, detection_task, quiet_trainer, write_image

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------- 1: predict inside a label-map folder


def _cityscapes(root: Path) -> Path:
    """Two Frankfurt val frames (``leftImg8bit/val/frankfurt/*_leftImg8bit.png``) and their gtFine maps."""
    for i in range(2):
        stem = f"frankfurt_{i:06d}_000294"
        write_image(root / "leftImg8bit" / "val" / "frankfurt" / f"{stem}_leftImg8bit.png", 32, 16, seed=i)
        maps = root / "gtFine" / "val" / "frankfurt"
        maps.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(maps / f"{stem}_gtFine_labelIds.png"), np.full((16, 32), 7, np.uint8))
    return root


@pytest.mark.parametrize("below", ["gtFine/val", "gtFine/val/frankfurt"])
@pytest.mark.parametrize("module", [SegmentationDataModule, DetectionDataModule])
def test_predict_inside_a_cityscapes_label_folder_is_refused_naming_its_images(tmp_path, module, below):
    """``<cityscapes>/gtFine/val/frankfurt`` was predicted as 2 photos (its label maps): the walk from each
    image stopped at the predict folder, below ``gtFine/``."""
    root = _cityscapes(tmp_path / "cs")
    instead = root / below.replace("gtFine", "leftImg8bit")
    data = module(predict_path=str(root / below), num_workers=0)
    expected = (
        rf"^--data.predict_path {root / below}: 2 of its images are Cityscapes label maps \(gtFine/ beside "
        rf"leftImg8bit/, e\.g\. .*_gtFine_labelIds\.png\), not photos: give --data.predict_path {instead}$"
    )
    with pytest.raises(ValueError, match=expected):
        data.setup("predict")
    assert len(predict_images(instead)) == 2  # what the error names is the photos


def test_a_relative_path_and_a_missing_image_subfolder_name_the_image_folder(tmp_path, monkeypatch):
    """Relative to the working directory (``val`` inside ``gtFine/``) it is found too; with no
    ``leftImg8bit/test`` for ``gtFine/test`` the error names ``leftImg8bit``."""
    root = _cityscapes(tmp_path / "cs")
    monkeypatch.chdir(root / "gtFine")
    with pytest.raises(ValueError, match=rf"give --data.predict_path {root / 'leftImg8bit' / 'val'}$"):
        predict_images("val")
    write_image(root / "gtFine" / "test" / "berlin" / "berlin_000000_000019_gtFine_color.png")
    with pytest.raises(ValueError, match=rf"1 of its images .*--data.predict_path {root / 'leftImg8bit'}$"):
        predict_images(root / "gtFine" / "test")


def test_own_photos_inside_a_folder_named_like_a_label_folder_are_predicted(tmp_path):
    """No image folder beside ``semantic/`` (nor ``gtFine/``): one's own photos, predicted."""
    write_image(tmp_path / "semantic" / "drive" / "street.jpg")
    write_image(tmp_path / "gtFine" / "val" / "road.jpg")
    assert [name for *_, name in predict_images(tmp_path / "semantic" / "drive")] == ["street"]
    assert [name for *_, name in predict_images(tmp_path / "gtFine" / "val")] == ["road"]


def test_predict_inside_kitti_semantic_is_refused(tmp_path):
    split = tmp_path / "training"
    write_image(split / "image_2" / "000000.png")
    write_image(split / "semantic" / "drive_a" / "000000.png")
    with pytest.raises(ValueError, match=rf"KITTI label maps .*--data.predict_path {split / 'image_2'}$"):
        predict_images(split / "semantic" / "drive_a")


# ---------------------------------------------------------------- 2: AP logged as settled, without advice


@pytest.fixture
def ddp_trainer(tmp_path, monkeypatch):
    """A DDP trainer of one gloo process, started as torchrun would start it: Lightning then logs and advises
    as under DDP (a fresh warning cache, so an earlier test's line does not hide this one's)."""
    for name, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "0", "LOCAL_RANK": "0", "NODE_RANK": "0",
                        "RANK": "0", "WORLD_SIZE": "1"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(result, "warning_cache", WarningCache())
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        yield quiet_trainer(strategy="ddp", devices=1)
    finally:
        dist.destroy_process_group()


def _detection():
    """A tiny detector answering each of 2 images with a hit on its car and a false alarm."""
    task = detection_task(
        backbone="tiny_cnn", backbone_kwargs={"width": 8}, class_names=["Car", "Pedestrian"],
        input_size=(32, 64), fpn_channels=32, head_convs=1, kitti_difficulties=["moderate"],
    )  # fmt: skip
    car = torch.tensor([[4.0, 4, 20, 20]])
    pred = {"boxes": torch.cat([car, torch.tensor([[30.0, 4, 40, 20]])]), "scores": torch.tensor([0.9, 0.6]),
            "labels": torch.tensor([0, 0])}  # fmt: skip
    task.model = FixedOutputs([pred, pred])
    return task, [(torch.zeros(3, 32, 64), {"boxes": car, "labels": torch.tensor([0]), "image_id": str(i)})
                  for i in range(2)]  # fmt: skip


def _instances():
    """A tiny Mask R-CNN answering each of 2 images with its car's mask."""
    from domains.driving.instances.data import mask_boxes
    from domains.driving.instances.model import RoadInstanceSegmenter
    from domains.driving.instances.task import InstanceTask
    from tests.driving.layouts import TINY_MASK_RCNN

    task = InstanceTask(network=RoadInstanceSegmenter(2, **TINY_MASK_RCNN), class_names=["Car", "Pedestrian"])
    car = torch.zeros(1, 40, 40, dtype=torch.uint8)
    car[0, 5:20, 5:25] = 1
    pred = {"boxes": mask_boxes(car).float(), "scores": torch.tensor([0.9]), "labels": torch.tensor([0]),
            "masks": car.float() * 0.8}  # fmt: skip
    task.model = FixedOutputs([pred, pred])
    target = {"boxes": mask_boxes(car), "labels": torch.tensor([0]), "masks": car,
              "ignore_mask": torch.zeros(40, 40, dtype=torch.bool)}  # fmt: skip
    return task, [(torch.zeros(3, 40, 40), target)] * 2


@pytest.mark.parametrize("make, headline", [(_detection, "test/map50"), (_instances, "test/mask_map50")])
def test_ap_is_logged_without_the_sync_dist_advice(ddp_trainer, make, headline):
    """Every AP value is computed from every rank's images, yet each printed "It is recommended to use
    `self.log('test/map50', ..., sync_dist=True)`" under DDP (11 lines for each task here)."""
    task, items = make()
    loader = DataLoader(items, batch_size=2, collate_fn=lambda batch: tuple(map(list, zip(*batch))))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (logged,) = ddp_trainer.test(task, loader, verbose=False)
    assert logged[headline] == pytest.approx(1.0)  # the values still reach the trainer
    advice = [str(w.message) for w in caught if "It is recommended to use `self.log(" in str(w.message)]
    assert advice == []
