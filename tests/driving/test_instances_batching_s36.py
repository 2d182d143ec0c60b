"""An image's instances do not hang on what it is batched with (the model runs one pass per image size)."""

from __future__ import annotations

import torch

from domains.driving.instances.model import RoadInstanceSegmenter
from tests.driving.layouts import TINY_MASK_RCNN


def test_an_images_instances_are_the_same_alone_and_batched_with_a_larger_frame(one_thread):
    torch.manual_seed(0)
    # MobileNetV3 (the shipped configs' backbone): its squeeze-excitation averages over the padding; a plain
    # CNN's zero padding is inert
    model = RoadInstanceSegmenter(
        3, **{**TINY_MASK_RCNN, "backbone": "mobilenet_v3_small", "backbone_kwargs": {}, "input_size": (64, 96)}
    ).eval()
    g = torch.Generator().manual_seed(3)
    # a portrait photo is fitted into the box lying the other way (96x64): a batch with a landscape frame pads
    # both to 96x96
    small, large = torch.rand(3, 90, 50, generator=g), torch.rand(3, 64, 96, generator=g)
    with torch.no_grad():
        (alone,) = model([small])
        batched = model([large, small, large])
    assert len(alone["scores"]) > 10  # random weights: many detections to compare
    for key in ("boxes", "scores", "labels", "masks"):
        torch.testing.assert_close(batched[1][key], alone[key])
    torch.testing.assert_close(batched[0]["scores"], batched[2]["scores"])
