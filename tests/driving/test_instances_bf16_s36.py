"""Mask R-CNN under bf16 autocast (the gpu.yaml recipe's ``bf16-mixed``): anchors, proposals and boxes stay
float32. bfloat16 keeps 8 significant bits: beyond x = 512 it rounds to 4 px, so a thin proposal (or ground-truth
box cast to the proposals' dtype) collapsed to zero width and its log-width regression target was infinite."""

from __future__ import annotations

import torch

from domains.driving.instances.model import RoadInstanceSegmenter
from tests.driving.layouts import TINY_MASK_RCNN


def _thin_box_target(x: float) -> dict:
    """One 1.5-px-wide object at ``x`` (beyond 512: bfloat16 steps of 4 px) in a 96x768 image."""
    masks = torch.zeros(1, 96, 768, dtype=torch.uint8)
    masks[0, 20:60, int(x) : int(x) + 2] = 1
    return {"boxes": torch.tensor([[x, 20.0, x + 1.5, 60.0]]), "labels": torch.tensor([1]), "masks": masks}


def test_training_under_bf16_autocast_has_finite_losses_and_float32_boxes(one_thread):
    torch.manual_seed(0)
    model = RoadInstanceSegmenter(3, **{**TINY_MASK_RCNN, "input_size": (96, 768)})
    captured = {}
    hooks = [
        model.segmenter.rpn.register_forward_hook(lambda m, i, out: captured.update(proposals=out[0])),
        model.segmenter.rpn.anchor_generator.register_forward_hook(
            lambda m, i, out: captured.update(anchors=out)
        ),
    ]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    images = [torch.rand(3, 96, 768), torch.rand(3, 96, 768)]
    targets = [_thin_box_target(600.5), _thin_box_target(700.25)]
    for _ in range(2):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            losses = model(images, targets)
        assert all(torch.isfinite(value) for value in losses.values()), losses
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    for hook in hooks:
        hook.remove()
    assert {a.dtype for a in captured["anchors"]} == {torch.float32}
    assert {p.dtype for p in captured["proposals"]} == {torch.float32}
    # the convolutions still run in bf16 (the point of bf16-mixed)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        features = model.segmenter.backbone(torch.rand(1, 3, 96, 768))
        assert next(iter(features.values())).dtype == torch.bfloat16
        model.eval()
        (pred,) = model([torch.rand(3, 96, 768)])
    assert pred["boxes"].dtype == torch.float32 and pred["scores"].dtype == torch.float32
    assert len(pred["boxes"]) > 0
    # decoded in float32: not all on bfloat16's 4-px grid beyond x = 512
    wide = pred["boxes"][pred["boxes"][:, 2] > 520, 2]
    assert len(wide) > 0 and (wide % 4 != 0).any()
