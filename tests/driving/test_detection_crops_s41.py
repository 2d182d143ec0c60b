"""Boxes the training crops remove are counted (``train/cropped_out_boxes``, each item carrying its own count
through the loader's workers), and detection ``predict`` says when it predicted the test split."""

from __future__ import annotations

from types import SimpleNamespace

import albumentations as A
import pytest
from torch.utils.data import DataLoader

from domains.driving.detection.data import DetectionDataModule, DetectionDataset, detection_collate
from domains.driving.detection.predict import KittiPredictionWriter
from domains.driving.formats import read_kitti_dir
from domains.driving.instances.predict import InstancePredictionWriter
from shared.data import detection_bbox_params
from tests.driving.layouts import write_kitti
from tests.helpers import detection_task, quiet_trainer

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"backbone": "tiny_cnn", "backbone_kwargs": {"width": 8}, "input_size": (64, 128), "head_convs": 1}
CLASSES = ["Car", "Pedestrian", "Cyclist"]


def _dataset(root, x_max: int, n: int = 4) -> DetectionDataset:
    """write_kitti's frames (64x48: a Car at x 10-40, a Van (a Car here) at x 2-9, a DontCare at x 45-60)
    cropped to x 0-``x_max`` with the detection pipelines' box settings (min_visibility 0.3)."""
    crop = A.Compose([A.Crop(x_min=0, y_min=0, x_max=x_max, y_max=48)], bbox_params=detection_bbox_params())
    records = read_kitti_dir(write_kitti(root, n=n, semantic=False))
    return DetectionDataset(records, CLASSES, crop, class_map={"Van": "Car"})


@pytest.mark.parametrize(
    ("x_max", "removed", "objects_left"),
    [(30, 1, 2), (12, 2, 1)],  # 20 / 30 of the Car left: kept; 2 / 30: dropped. The DontCare is cut away
)
def test_each_item_counts_the_boxes_its_crop_removed(tmp_path, x_max, removed, objects_left):
    dataset = _dataset(tmp_path / "kitti", x_max)
    for i in range(len(dataset)):
        _, target = dataset[i]
        assert len(target["labels"]) == objects_left and len(target["ignore_boxes"]) == 0
        assert target["cropped_out"] == removed


def test_an_item_without_a_transform_counts_nothing(tmp_path):
    records = read_kitti_dir(write_kitti(tmp_path / "kitti", n=2, semantic=False))
    _, target = DetectionDataset(records, CLASSES, class_map={"Van": "Car"})[0]
    assert (len(target["labels"]), len(target["ignore_boxes"]), target["cropped_out"]) == (2, 1, 0)


def test_a_fit_logs_the_epochs_cropped_out_boxes_from_loader_workers(tmp_path):
    """8 frames, 1 box cut away from each, read by a worker process in batches of 4: the epoch's sum is 8 (the
    count travels in the items: a counter on the dataset would stay in the worker)."""
    dataset = _dataset(tmp_path / "kitti", 30, n=8)
    loader = DataLoader(dataset, batch_size=4, num_workers=1, collate_fn=detection_collate)
    task = detection_task(**TINY, kitti_difficulties=[])
    trainer = quiet_trainer(max_epochs=1, default_root_dir=tmp_path)
    trainer.fit(task, train_dataloaders=loader)
    assert trainer.callback_metrics["train/cropped_out_boxes"].item() == 8


def test_the_count_is_an_epoch_sum_over_ranks(monkeypatch):
    """Summed over the epoch and all-reduced as a sum; logged at every step, 0 too (a rank that never logged it
    would miss the epoch's all-reduce)."""
    task = detection_task(**TINY)
    logged = []
    monkeypatch.setattr(task, "log", lambda name, value, **kwargs: logged.append((name, value, kwargs)))
    task.log_cropped_out([{"cropped_out": 2}, {"cropped_out": 3}, {}], 3)
    task.log_cropped_out([{"cropped_out": 0}], 1)
    assert [(name, value) for name, value, _ in logged] == [
        ("train/cropped_out_boxes", 5.0),
        ("train/cropped_out_boxes", 0.0),
    ]
    kwargs = logged[0][2]
    assert (kwargs["on_step"], kwargs["on_epoch"], kwargs["reduce_fx"], kwargs["sync_dist"]) == (
        False, True, "sum", True,
    )  # fmt: skip


@pytest.mark.parametrize("writer_class", [KittiPredictionWriter, InstancePredictionWriter])
@pytest.mark.parametrize("own", [False, True])
def test_predict_says_it_predicted_the_test_split(tmp_path, writer_class, own):
    dm = DetectionDataModule(data_path=str(tmp_path / "data"), predict_path=str(tmp_path) if own else None)
    dm.trainer = SimpleNamespace(state=SimpleNamespace(fn="predict"))
    said = []
    module = SimpleNamespace(predict_score_thresh=0.5, print=said.append)
    writer = writer_class(str(tmp_path / "out"), CLASSES)
    writer.on_predict_epoch_end(SimpleNamespace(datamodule=dm, is_global_zero=True), module)
    note = " (the test split's; --data.predict_path for your own images)"
    assert said == [f"wrote 0 {writer_class.WROTE}{'' if own else note} to {tmp_path / 'out'}"]
