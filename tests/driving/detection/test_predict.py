"""detect_objects: a large photo is shrunk for the detector and its boxes come back in the photo's own pixels."""

from __future__ import annotations

import numpy as np
import torch

from domains.driving.detection import predict


def test_boxes_come_back_in_the_photo_s_pixels_clipped_to_it(monkeypatch):
    sizes = []

    def detect(model, image):  # a box in the pixels of the image the detector was given
        sizes.append(image.shape[:2])
        return {
            "boxes": torch.tensor([[600.0, 10.0, 630.0, 40.0], [500.0, 100.0, 700.0, 400.0]]),
            "scores": torch.tensor([0.9, 0.8]),
            "labels": torch.tensor([1, 2]),
        }

    monkeypatch.setattr(predict, "detect", detect)
    out = predict.detect_objects(None, np.zeros((720, 2560, 3), np.uint8), max_side=1280)  # shrunk by 1/2
    assert sizes == [(360, 1280)]
    np.testing.assert_allclose(out["boxes"][0], [1200, 20, 1260, 80])
    out = predict.detect_objects(None, np.zeros((360, 1280, 3), np.uint8), max_side=1280)  # as it is
    np.testing.assert_allclose(out["boxes"], [[600, 10, 630, 40], [500, 100, 700, 360]])  # y clipped to 360
    assert out["labels"].tolist() == [1, 2] and out["labels"].dtype == np.int64
