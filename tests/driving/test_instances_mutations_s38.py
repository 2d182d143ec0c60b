"""Instance model, task, metric and data lines that no test pinned (a mutation audit changed each and every test
still passed): the Mask R-CNN's argument checks, anchor sizes and target mask check; the task's argument
checks, its mask threshold in evaluation and predict and its test-only height levels; an empty mask's DontCare
share; the KITTI map / label-line checks, the png divisor and colour-map rules, the COCO polygon tolerance, crowds
a crop removes and the Cityscapes ``max_items`` order."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest
import torch

from domains.driving.formats import DropLog, LabelWarning
from domains.driving.instances.data import (
    InstanceAnnotation,
    InstanceDataModule,
    InstanceDataset,
    InstanceObject,
    encode_masks,
    mask_boxes,
    read_coco_instances,
    read_kitti_instances,
    read_png_instances,
)
from domains.driving.instances.metrics import masks_in_ignore_fraction
from domains.driving.instances.model import RoadInstanceSegmenter
from domains.driving.instances.task import InstanceTask
from tests.driving.layouts import TINY_MASK_RCNN
from tests.driving.test_real_layouts_s34 import write_cityscapes
from tests.helpers import FixedOutputs, write_image

TINY = TINY_MASK_RCNN


# ------------------------------------------------------------------------------------------------ model
@pytest.mark.parametrize(
    "name", ["fpn_channels", "proposals_train", "proposals_test", "rois_per_image", "box_head_dim",
             "mask_head_channels", "mask_head_convs"],
)  # fmt: skip
def test_a_size_of_zero_is_refused_naming_the_argument(name):
    with pytest.raises(ValueError, match=f"{name} must be >= 1, got 0"):
        RoadInstanceSegmenter(3, **{**TINY, name: 0})


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan")])
def test_an_anchor_scale_that_is_not_positive_is_refused(scale):
    with pytest.raises(ValueError, match="anchor_scale must be > 0"):
        RoadInstanceSegmenter(3, **{**TINY, "anchor_scale": scale})


def test_anchor_sides_are_the_level_strides_times_anchor_scale():
    """One anchor side per FPN level, ``stride * anchor_scale``, in three aspect ratios."""
    model = RoadInstanceSegmenter(3, **{**TINY, "anchor_scale": 3.0})
    strides = model.segmenter.backbone.strides
    generator = model.segmenter.rpn.anchor_generator
    assert generator.sizes == tuple((3.0 * s,) for s in strides)
    assert generator.aspect_ratios == ((0.5, 1.0, 2.0),) * len(strides)


def test_training_masks_of_another_size_than_their_image_are_refused():
    """Masks one row short of the image: an error naming the target and both sizes, not a loss on
    misaligned pixels."""
    model = RoadInstanceSegmenter(3, **TINY).train()
    target = {"boxes": torch.tensor([[4.0, 4.0, 20.0, 20.0]]), "labels": torch.tensor([0]),
              "masks": torch.zeros(1, 47, 64, dtype=torch.uint8)}  # fmt: skip
    with pytest.raises(ValueError, match=r"target 0: masks must be \(K, H, W\).*\(48, 64\) image, got \(1, 47, 64\)"):
        model([torch.rand(3, 48, 64)], [target])
    target["masks"] = torch.zeros(48, 64, dtype=torch.uint8)  # no object axis
    with pytest.raises(ValueError, match="target 0: masks must be"):
        model([torch.rand(3, 48, 64)], [target])


# ------------------------------------------------------------------------------------------------- task
@pytest.mark.parametrize("thresh", [0.0, 1.0])
def test_a_mask_threshold_at_either_end_is_refused(thresh):
    """0 makes every pixel of every detection its mask, 1 none: the open interval only."""
    with pytest.raises(ValueError, match="mask_thresh must be in"):
        InstanceTask(network=RoadInstanceSegmenter(2, **TINY), class_names=["Car", "Pedestrian"], mask_thresh=thresh)


def test_a_minimum_height_of_zero_is_refused():
    """0 px would score the same as the plain metrics under another key."""
    with pytest.raises(ValueError, match="min_heights must be > 0"):
        InstanceTask(network=RoadInstanceSegmenter(2, **TINY), class_names=["Car", "Pedestrian"], min_heights=[0])


def _box(y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
    mask = torch.zeros(40, 40, dtype=torch.bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _scored_task(monkeypatch, probability: float, **task_args) -> InstanceTask:
    """An instance task whose network finds the one car of a 40x40 image exactly, its mask probabilities
    ``probability`` inside the car and 0 elsewhere."""
    task = InstanceTask(network=RoadInstanceSegmenter(2, **TINY), class_names=["Car", "Pedestrian"], **task_args)
    monkeypatch.setattr(task, "log_dict", lambda values, **kw: None)
    monkeypatch.setattr(task, "log", lambda name, value, **kw: None)
    car = _box(5, 25, 5, 25)[None]
    pred = {"boxes": mask_boxes(car.byte()), "scores": torch.tensor([0.9]), "labels": torch.tensor([0]),
            "masks": car.float() * probability}  # fmt: skip
    task.model = FixedOutputs([pred])
    return task


def _target() -> dict:
    car = _box(5, 25, 5, 25)[None]
    return {"boxes": mask_boxes(car.byte()), "labels": torch.tensor([0]), "masks": car.byte(),
            "ignore_mask": torch.zeros(40, 40, dtype=torch.bool)}  # fmt: skip


def test_evaluation_thresholds_masks_at_mask_thresh(monkeypatch):
    """Mask probabilities of 0.6: a hit at ``mask_thresh`` 0.5, an empty mask (mask AP 0) at 0.7, where the box
    AP, which reads no mask, stays 1."""
    for thresh, want in ((0.5, 1.0), (0.7, 0.0)):
        task = _scored_task(monkeypatch, 0.6, mask_thresh=thresh)
        task._evaluation_step(([torch.zeros(3, 40, 40)], [_target()]), "val")
        values = task._log_epoch_metrics("val")
        assert values["val/mask_map50"] == pytest.approx(want), thresh
        assert values["val/box_map50"] == pytest.approx(1.0)


def test_minimum_heights_are_scored_at_test_only(monkeypatch):
    """Validation during fit stays cheap: the ``_h<height>`` keys come from ``test`` only."""
    task = _scored_task(monkeypatch, 0.9, min_heights=[12.8])
    for stage in ("val", "test"):
        task._evaluation_step(([torch.zeros(3, 40, 40)], [_target()]), stage)
    assert not any("_h12.8" in key for key in task._log_epoch_metrics("val"))
    assert task._log_epoch_metrics("test")["test/mask_h12.8_map50"] == pytest.approx(1.0)


def test_predict_thresholds_masks_at_mask_thresh(monkeypatch):
    """Mask probabilities of 0.6 under ``mask_thresh`` 0.7: empty masks, at the photo's size and resized to
    another."""
    task = _scored_task(monkeypatch, 0.6, mask_thresh=0.7, predict_score_thresh=0.5)
    for size in ((40, 40), (80, 60)):
        (out,) = task.predict_step(([torch.zeros(3, 40, 40)], [{"orig_size": size, "image_id": "x"}]), 0)
        assert out["masks"].shape == (1, *size) and not out["masks"].any(), size
    task.mask_thresh = 0.5
    (out,) = task.predict_step(([torch.zeros(3, 40, 40)], [{"orig_size": (80, 60), "image_id": "x"}]), 0)
    assert out["masks"].any()  # the same probabilities under 0.5: the car


# ----------------------------------------------------------------------------------------------- metrics
def test_an_empty_detection_mask_lies_nowhere_in_dontcare():
    """A detection whose mask holds no pixel covers 0 of DontCare (not 0 / 0)."""
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[1, :2] = True
    ignore = torch.ones(4, 4, dtype=torch.bool)
    assert masks_in_ignore_fraction(masks, ignore).tolist() == [0.0, 1.0]


# -------------------------------------------------------------------------------------------------- data
def _kitti_instances(root: Path, lines: list[str], instance: np.ndarray) -> Path:
    for folder in ("image_2", "label_2", "instance"):
        (root / "training" / folder).mkdir(parents=True)
    cv2.imwrite(str(root / "training" / "image_2" / "000000.png"), np.zeros((*instance.shape, 3), np.uint8))
    (root / "training" / "label_2" / "000000.txt").write_text("".join(f"{line}\n" for line in lines))
    cv2.imwrite(str(root / "training" / "instance" / "000000.png"), instance)
    return root


LINE = "{} 0.00 {} 0 10 10 40 40 1 1 1 1 1 1 0"


def test_an_instance_id_one_past_the_last_label_line_is_counted(tmp_path):
    """Two label lines, map ids 1, 2 and 3: id 3 has no line, so it is dropped and counted naming the map."""
    instance = np.zeros((50, 60), np.uint16)
    instance[0:10, 0:10], instance[20:30, 0:10], instance[40:50, 0:10] = 1, 2, 3
    root = _kitti_instances(tmp_path / "k", [LINE.format("Car", 0), LINE.format("Pedestrian", 0)], instance)
    log = DropLog()
    (ann,) = read_kitti_instances(root, log=log)
    assert [o.map_id for o in ann.objects] == [1, 2]
    assert dict(log.counts) == {"instance_without_label": 1}
    assert "instance id 3 has no label line" in log.examples["instance_without_label"][0]


def test_a_dontcare_line_without_pixels_is_not_counted(tmp_path):
    """KITTI's DontCare lines say occlusion -1 (read as visible) and often have no pixel in the map: fine."""
    instance = np.zeros((50, 60), np.uint16)
    instance[0:10, 0:10] = 1
    root = _kitti_instances(tmp_path / "k", [LINE.format("Car", 0), LINE.format("DontCare", -1)], instance)
    log = DropLog()
    (ann,) = read_kitti_instances(root, log=log)
    assert [o.type for o in ann.objects] == ["Car"] and dict(log.counts) == {}


def test_a_png_divisor_under_two_is_refused(tmp_path):
    """Divisor 1 would make every value its own class with no instance: refused before anything is read."""
    with pytest.raises(ValueError, match="divisor must be >= 2, got 1"):
        read_png_instances(tmp_path, divisor=1)


def _png_set(root: Path, maps: dict[str, np.ndarray]) -> Path:
    """``images/<stem>.png`` and ``instances/<stem>.png`` per map (single-channel uint16 or BGR colour)."""
    for stem, label in maps.items():
        write_image(root / "images" / f"{stem}.png", width=label.shape[1], height=label.shape[0])
        (root / "instances").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "instances" / f"{stem}.png"), label)
    return root


def _png_warnings(root: Path) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_png_instances(root)
    return [str(w.message) for w in caught if issubclass(w.category, LabelWarning)]


def test_a_kitti_step_colour_map_of_stuff_only_is_not_a_suspect_map(tmp_path):
    """KITTI-STEP's colour maps hold the class in red and 0 for stuff: road alone (R 7, no instance) is a frame
    without objects, not a map read with the wrong divisor."""
    bgr = np.zeros((20, 30, 3), np.uint8)
    bgr[..., 2] = 7
    assert _png_warnings(_png_set(tmp_path / "p", {"a": bgr})) == []


def test_a_coco_polygon_within_a_pixel_of_the_right_edge_is_read(tmp_path):
    """``BOX_TOLERANCE_PX`` (1 px) outside the image is tolerated on the right and bottom as on the left and top;
    further is dropped and counted."""
    write_image(tmp_path / "a.png", width=40, height=30)
    segmentations = [[[10, 10, 40.5, 10, 40.5, 20, 10, 20]], [[10, 10, 41.5, 10, 41.5, 20, 10, 20]],
                     [[10, 10, 30, 10, 30, 30.5, 10, 30.5]]]  # fmt: skip
    annotations = [
        {"id": i, "image_id": 1, "category_id": 1, "segmentation": s, "iscrowd": 0}
        for i, s in enumerate(segmentations)
    ]
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}],
        "categories": [{"id": 1, "name": "Car"}],
        "annotations": annotations,
    }
    (tmp_path / "a.json").write_text(json.dumps(data))
    log = DropLog()
    (ann,) = read_coco_instances(tmp_path / "a.json", log=log)
    assert len(ann.objects) == 2 and dict(log.counts) == {"outside_image": 1}
    assert "(id 1)" in log.examples["outside_image"][0]


def test_a_crowd_a_crop_removes_is_left_out_of_the_target(tmp_path):
    """A crop that keeps the car but not the crowd region of cars: no empty crowd mask (and label) stays."""
    image = write_image(tmp_path / "a.png", width=40, height=20)
    car, crowd = np.zeros((1, 20, 40), np.uint8), np.zeros((1, 20, 40), np.uint8)
    car[0, 2:10, 2:10], crowd[0, 5:15, 30:38] = 1, 1
    objects = [InstanceObject("Car", encode_masks(car)[0]),
               InstanceObject("DontCare", encode_masks(crowd)[0], crowd_class="Car")]  # fmt: skip
    ann = InstanceAnnotation(str(image), 40, 20, objects)
    whole = InstanceDataset([ann], ["Car"])[0][1]
    assert whole["crowd_labels"].tolist() == [0] and whole["crowd_masks"].shape == (1, 20, 40)
    cropped = InstanceDataset([ann], ["Car"], transform=A.Compose([A.Crop(0, 0, 20, 20)]))[0][1]
    assert cropped["labels"].tolist() == [0]
    assert cropped["crowd_labels"].tolist() == [] and cropped["crowd_masks"].shape == (0, 20, 20)


def test_cityscapes_frames_are_cut_to_max_items_in_id_order(tmp_path):
    """A val city named before a train city: ``max_items`` keeps the first frames by id (aachen), whatever
    split Cityscapes put them in, as every other layout does."""
    write_cityscapes(tmp_path / "cs", frames=(("train", "zurich", 1), ("val", "aachen", 1)))
    dm = InstanceDataModule("png", str(tmp_path / "cs"), ["Car"], num_workers=0, max_items=1,
                            split_fractions=(1.0, 0.0, 0.0))  # fmt: skip
    splits = dm._read_splits()
    assert [a.image_id for items in splits.values() for a in items] == ["aachen_000000_000000"]
