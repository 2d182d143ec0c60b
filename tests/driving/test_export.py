"""ONNX export of the driving models: the FCOS network with torchvision's post-processing outside, and the
anomaly segmenter with its score as a second output; onnxruntime matches PyTorch (atol 1e-4 + rtol 1e-5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from domains.driving.anomaly.export import export_anomaly
from domains.driving.anomaly.scores import AnomalyScoreError
from domains.driving.anomaly.task import AnomalySegmentationTask
from domains.driving.detection.export import (
    FCOSRaw,
    detect_with_onnx,
    export_detection,
    postprocess,
    preprocess,
)
from domains.driving.detection.task import DetectionTask
from shared.export import run_onnx
from tests.helpers import anomaly_task, detection_task

ATOL, RTOL = 1e-4, 1e-5


pytestmark = pytest.mark.usefixtures("one_thread")


def close(got, expected) -> None:
    expected = expected.detach().numpy() if isinstance(expected, torch.Tensor) else expected
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=RTOL)


# ------------------------------------------------------------------------------------------------ detection


def tiny_detector() -> DetectionTask:
    torch.manual_seed(0)
    return detection_task(
        backbone="tiny_cnn", backbone_kwargs={"width": 8}, fpn_levels=3, fpn_channels=32, head_convs=1,
        input_size=(64, 128),
    ).eval()  # fmt: skip


def test_detector_graph_plus_torchvision_postprocessing_reproduces_the_detector(tmp_path):
    task = tiny_detector()
    meta = export_detection(task, tmp_path)
    onnx = tmp_path / "detector.onnx"
    assert meta["classes"] == ["Car", "Pedestrian", "Cyclist"] and meta["input_size"] == [64, 128]
    assert meta["operating_point"] is None  # never validated (the fitted one: test_detection_outputs_s32.py)
    # a batch at the traced size, and a square image: another padded size (a batch of two sizes runs each
    # size on its own, below)
    for images in ([torch.rand(3, 64, 128), torch.rand(3, 64, 128)], [torch.rand(3, 96, 96)]):
        batch, sizes, original = preprocess(images, meta)
        raw = run_onnx(onnx, {"image": batch.numpy()})
        with torch.no_grad():
            expected_raw = FCOSRaw(task)(batch)
            expected = task.model(images)
        for got, want in zip(raw, expected_raw, strict=True):
            close(got, want)
        # the documented post-processing on PyTorch's raw outputs is the detector itself, bit for bit
        for mine, model in zip(postprocess(expected_raw, sizes, original, meta), expected, strict=True):
            assert all(torch.equal(mine[k], model[k]) for k in ("boxes", "scores", "labels"))
        # and on onnxruntime's: the same detections (random weights: many, so ordering is exercised too)
        for got, want, (height, width) in zip(
            detect_with_onnx(onnx, images, meta), expected, original, strict=True
        ):
            assert len(want["boxes"]) > 10 and torch.equal(got["labels"], want["labels"])
            close(got["boxes"].numpy(), want["boxes"])
            close(got["scores"].numpy(), want["scores"])
            assert float(got["boxes"][:, 2].max()) <= width and float(got["boxes"][:, 3].max()) <= height
    # images of two sizes (one twice as large): each as if alone, in PyTorch and through onnxruntime alike
    mixed = [torch.rand(3, 64, 128), torch.rand(3, 128, 256)]
    with torch.no_grad():
        alone = [task.model([image])[0] for image in mixed]
        batched = task.model(mixed)
    for got, via_onnx, want in zip(batched, detect_with_onnx(onnx, mixed, meta), alone, strict=True):
        assert all(torch.equal(got[k], want[k]) for k in ("boxes", "scores", "labels"))
        assert torch.equal(via_onnx["labels"], want["labels"])
        close(via_onnx["boxes"].numpy(), want["boxes"])


# the CLIs' exports of fitted checkpoints: tests/driving/test_faults.py (test_detection_cli_writes_graph_and_sidecar,
# test_anomaly_cli_writes_graph_and_sidecar), on the one-step checkpoints its module already fits


# -------------------------------------------------------------------------------------------------- anomaly


def tiny_segmenter(objective: str = "extra_logit", smoothing: float = 0.0) -> AnomalySegmentationTask:
    torch.manual_seed(0)
    task = anomaly_task(
        encoder_kwargs={"channels": [4, 8, 16]}, oe_objective=objective, score_smoothing=smoothing
    ).eval()
    c = task.num_classes
    loader = [{"image": torch.rand(2, 3, 32, 64), "mask": torch.randint(0, c, (2, 32, 64))} for _ in range(2)]
    task.calibrate(loader)  # SML and Mahalanobis statistics
    task.model.oe_trained.fill_(True)
    with torch.no_grad():
        task.model.oe_scale_raw.fill_(0.3)
        task.model.oe_bias.fill_(-1.0)
    return task


@pytest.mark.parametrize(
    "objective, score, smoothing",
    [("extra_logit", "outlier_prob", 0.0), ("energy", "outlier_prob", 0.0), ("both", "outlier_prob", 0.0),
     ("both", "outlier_prob", 1.0), ("extra_logit", "mahalanobis", 0.0), ("extra_logit", "sml", 0.0),
     ("extra_logit", "msp", 1.5)],
)  # fmt: skip
def test_segmenter_graph_gives_logits_and_the_anomaly_score(objective, score, smoothing, tmp_path):
    task = tiny_segmenter(objective, smoothing)
    meta = export_anomaly(task, tmp_path, size=(32, 64), score=score)
    assert meta["outputs"] == ["logits", "score"] and meta["score"] == score
    image = torch.rand(3, 3, 64, 96)  # another batch and size (multiples of 32)
    logits, scores = run_onnx(tmp_path / "segmenter.onnx", {"image": image.numpy()})
    with torch.no_grad():
        close(logits, task(image))
        close(scores, task.anomaly_map(image, score))
    assert scores.shape == (3, 64, 96)


def test_segmenter_export_refuses_a_score_the_model_cannot_give(tmp_path):
    task = anomaly_task(encoder_kwargs={"channels": [4, 8, 16]}, oe_weight=0.0).eval()
    with pytest.raises(AnomalyScoreError, match="never calibrated"):
        export_anomaly(task, tmp_path / "out", size=(32, 64), score="sml")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "num_classes, named",
    [(19, {0: "road", 11: "person", 18: "bicycle"}), (34, {0: "unlabeled", 7: "road", 26: "car"}),
     (7, {0: "class_0", 6: "class_6"})],
    ids=["cityscapes-train-ids", "cityscapes-label-ids", "own-ids"],
)  # fmt: skip
def test_a_segmenter_of_other_classes_exports_their_class_names(tmp_path, num_classes, named):
    """A 19-class model's sidecar listed the synthetic scenes' 12 names, for 19 logit channels; then
    ``class_0`` ... for Cityscapes' own ids, whose names are known."""
    task = anomaly_task(encoder_kwargs={"channels": [4, 8, 16]}, oe_weight=0.0, num_classes=num_classes).eval()
    names = export_anomaly(task, tmp_path, size=(32, 64), score="msp")["classes"]
    assert len(names) == num_classes and {i: names[i] for i in named} == named
