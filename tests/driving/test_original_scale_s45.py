"""``DetectionTask.scored_original`` on given detections (validation's one pass) takes each image's scale to its
original pixels once, for its detections, its ground truth and its DontCare boxes alike (the detections' scale
was computed a second time, in ``to_original``)."""

from __future__ import annotations

import torch

from domains.driving.detection import task as T
from tests.helpers import detection_task


def test_one_scale_per_image_moves_detections_truth_and_dontcare_to_original_pixels(monkeypatch):
    seen, real = [], T._scale_to_original

    def counted(image, target):
        seen.append(target["image_id"])
        return real(image, target)

    monkeypatch.setattr(T, "_scale_to_original", counted)
    images = [torch.zeros(3, 64, 128), torch.zeros(3, 50, 100)]
    targets = [
        {  # a tensor half the original size: x2 both ways
            "boxes": torch.tensor([[10.0, 10, 40, 40]]),
            "labels": torch.tensor([0]),
            "ignore_boxes": torch.tensor([[100.0, 40, 128, 64]]),
            "image_id": "a",
            "orig_size": (128, 256),
        },
        {  # 300 / 100 = 3 in x, 75 / 50 = 1.5 in y; no DontCare
            "boxes": torch.tensor([[5.0, 6, 20, 10]]),
            "labels": torch.tensor([1]),
            "image_id": "b",
            "orig_size": (75, 300),
        },
    ]
    preds = [  # the network's, in the tensors' pixels: a's second detection lies in its DontCare box
        {"boxes": torch.tensor([[10.0, 10, 40, 40], [104, 44, 120, 60]]), "scores": torch.tensor([0.9, 0.8]),
         "labels": torch.tensor([0, 0])},
        {"boxes": torch.tensor([[4.0, 6, 20, 12]]), "scores": torch.tensor([0.7]), "labels": torch.tensor([1])},
    ]  # fmt: skip
    task = detection_task(
        backbone="tiny_cnn", backbone_kwargs={"width": 8}, head_convs=1, kitti_difficulties=[]
    )
    assert task.ignore_overlap == 0.5  # the default: a detection over half in DontCare is left out
    # the detections are given: the network does not run
    (pred_a, kept_a, gt_a, ignore_a), (pred_b, kept_b, gt_b, ignore_b) = task.scored_original(
        images, targets, preds
    )
    assert seen == ["a", "b"]  # once per image
    assert pred_a["boxes"].tolist() == [[20, 20, 80, 80], [208, 88, 240, 120]]
    assert ignore_a.tolist() == [[200, 80, 256, 128]]
    assert kept_a["boxes"].tolist() == [[20, 20, 80, 80]] and torch.equal(
        kept_a["scores"], torch.tensor([0.9])
    )
    assert gt_a["boxes"].tolist() == [[20, 20, 80, 80]] and gt_a["labels"].tolist() == [0]
    assert pred_b["boxes"].tolist() == kept_b["boxes"].tolist() == [[12, 9, 60, 18]]
    assert gt_b["boxes"].tolist() == [[15, 9, 60, 15]] and ignore_b.shape == (0, 4)
    assert preds[0]["boxes"][1].tolist() == [104, 44, 120, 60]  # the given detections are left as they were
