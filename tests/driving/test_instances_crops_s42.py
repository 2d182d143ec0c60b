"""Instance segmentation counts the objects its training crops remove, as detection counts its boxes
(``train/cropped_out_boxes``): before, a mask the crop emptied was dropped without a count."""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import pytest
import torch

from domains.driving.instances.data import InstanceDataset, read_kitti_instances
from domains.driving.instances.model import RoadInstanceSegmenter
from domains.driving.instances.task import InstanceTask
from tests.driving.layouts import KITTI_LINE, TINY_MASK_RCNN
from tests.helpers import write_image

pytestmark = pytest.mark.usefixtures("one_thread")

H, W = 64, 128
CLASSES = ["Car", "Pedestrian"]


def _scene(root):
    """One 128x64 frame: a Car at x 0-30, a Pedestrian at x 100-110, a DontCare region at x 70-80 (in the ignore
    mask, a union of regions: not counted)."""
    ids = np.zeros((H, W), np.uint16)
    ids[10:20, 0:30] = 1
    ids[30:60, 100:110] = 2
    ids[40:50, 70:80] = 3
    write_image(root / "training/image_2/000000.png", width=W, height=H)
    for folder in ("label_2", "instance"):
        (root / "training" / folder).mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / "training/instance/000000.png"), ids)
    lines = [("Car", (0, 10, 30, 20)), ("Pedestrian", (100, 30, 110, 60)), ("DontCare", (70, 40, 80, 50))]
    (root / "training/label_2/000000.txt").write_text("\n".join(KITTI_LINE.format(n, *b) for n, b in lines) + "\n")
    (ann,) = read_kitti_instances(root)
    return ann


def test_a_crop_that_removes_an_object_is_counted(tmp_path):
    ann = _scene(tmp_path)
    crop = A.Compose([A.Crop(x_min=0, y_min=0, x_max=64, y_max=32)], seed=0)  # the Pedestrian cut away
    _, target = InstanceDataset([ann], CLASSES, crop)[0]
    assert target["labels"].tolist() == [0] and target["cropped_out"] == 1
    _, whole = InstanceDataset([ann], CLASSES)[0]  # no transform: nothing removed
    assert whole["labels"].tolist() == [0, 1] and whole["cropped_out"] == 0
    flip = A.Compose([A.HorizontalFlip(p=1.0)], seed=0)  # moves every mask, removes none
    assert InstanceDataset([ann], CLASSES, flip)[0][1]["cropped_out"] == 0


def test_the_training_step_logs_the_count_under_the_detection_name(tmp_path, monkeypatch):
    ann = _scene(tmp_path)
    crop = A.Compose([A.Crop(x_min=0, y_min=0, x_max=64, y_max=32)], seed=0)
    image, target = InstanceDataset([ann], CLASSES, crop)[0]
    torch.manual_seed(0)
    task = InstanceTask(network=RoadInstanceSegmenter(2, **TINY_MASK_RCNN), class_names=CLASSES).train()
    logged = []
    monkeypatch.setattr(task, "log", lambda name, value, **kwargs: logged.append((name, value, kwargs)))
    monkeypatch.setattr(task, "guard_loss", lambda loss, terms: loss)  # no trainer: its step count unread
    task.training_step(([image, image], [target, target]), 0)
    (count,) = [(value, kwargs) for name, value, kwargs in logged if name == "train/cropped_out_boxes"]
    assert count[0] == 2.0 and (count[1]["reduce_fx"], count[1]["sync_dist"]) == ("sum", True)
