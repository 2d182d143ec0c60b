"""ONNX export of the driving models: the FCOS network with torchvision's post-processing outside, and the
anomaly segmenter with its score as a second output; onnxruntime matches PyTorch (atol 1e-4 + rtol 1e-5)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from domains.driving.anomaly.export import export_anomaly
from domains.driving.anomaly.export import main as anomaly_export
from domains.driving.anomaly.scores import AnomalyScoreError
from domains.driving.anomaly.task import AnomalySegmentationTask
from domains.driving.classes import SEMANTIC_CLASSES
from domains.driving.detection.export import (
    FCOSRaw,
    detect_with_onnx,
    export_detection,
    postprocess,
    preprocess,
)
from domains.driving.detection.export import main as detection_export
from domains.driving.detection.task import DetectionTask
from shared.export import run_onnx
from tests.driving.test_faults import ANOMALY, ARGS, DETECTION, MAINS
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


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    from domains.driving.synthetic import generate_anomaly, generate_kitti

    root = tmp_path_factory.mktemp("export")
    scenes = {
        "kitti": generate_kitti(root / "kitti", 14, size=(128, 64), frames_per_sequence=1, verbose=False),
        "anomaly": generate_anomaly(
            root / "anom", 4, size=(96, 32), anomaly_free_fraction=0.25, verbose=False
        ),
    }
    out = {}
    with contextlib.chdir(root):  # logs land there, not in the repository
        for module in (DETECTION, ANOMALY):
            folder = root / module.rsplit(".", 1)[-1]
            once = ["--trainer.max_steps", "1", "--checkpoint.dirpath", str(folder)]
            MAINS[module](["fit", *ARGS[module](scenes, *once)])
            out[module] = folder / "last.ckpt"
    return out


def test_detection_cli_writes_graph_and_sidecar(checkpoints, tmp_path):
    out = tmp_path / "onnx"
    detection_export(["--ckpt", str(checkpoints[DETECTION]), "--out", str(out)])
    assert sorted(p.name for p in out.iterdir()) == ["detector.json", "detector.onnx"]
    meta = json.loads((out / "detector.json").read_text())
    assert meta["model"] == "fcos/tiny_cnn" and meta["classes"] == ["Car", "Pedestrian", "Cyclist"]
    assert (meta["min_size"], meta["max_size"], meta["size_divisible"]) == (64, 128, 32)
    assert meta["outputs"] == [
        "cls_logits",
        "bbox_regression",
        "bbox_ctrness",
        "anchors",
        "anchors_per_level",
    ]
    assert "postprocess_detections" in meta["postprocess"]
    assert max(meta["tolerance"]["max_abs_diff"].values()) <= ATOL
    task = DetectionTask.load_checked(checkpoints[DETECTION]).eval()
    image = torch.rand(3, 64, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = _by_label_and_box(task.model([image])[0])
    got = _by_label_and_box(detect_with_onnx(out / "detector.onnx", [image], meta)[0])
    assert torch.equal(got["labels"], expected["labels"])
    close(got["boxes"].numpy(), expected["boxes"])


def _by_label_and_box(det: dict) -> dict:
    """Detections in a fixed order (label, then box corners): boxes with tied scores may leave NMS in either
    order, so comparing two runs row by row flaked when two such boxes swapped."""
    keys = torch.cat(
        [det["labels"][:, None].double(), det["boxes"].double().round(decimals=2)], dim=1
    ).numpy()
    order = torch.as_tensor(np.lexsort(keys.T[::-1].copy()))
    return {k: det[k][order] for k in ("boxes", "labels")}


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


def test_anomaly_cli_writes_graph_and_sidecar(checkpoints, tmp_path):
    out = tmp_path / "onnx"
    anomaly_export(["--ckpt", str(checkpoints[ANOMALY]), "--out", str(out)])
    meta = json.loads((out / "segmenter.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == ["segmenter.json", "segmenter.onnx"]
    assert meta["score"] == "outlier_prob" and meta["score_range"] == [0.0, 1.0]  # the config's score
    assert meta["classes"] == list(SEMANTIC_CLASSES) and meta["input_size"] == [32, 64]  # data.image_size
    assert max(meta["tolerance"]["max_abs_diff"].values()) <= ATOL
    assert meta["score_smoothing"] == 1.0  # the shipped configs' (the fit config the checkpoint records)
    task = AnomalySegmentationTask.load_checked(checkpoints[ANOMALY]).eval()
    assert task.model.input_size == (32, 64)  # linked from data.image_size, kept with the network
    image = torch.rand(1, 3, 32, 64)
    for smoothing in ("0", "2.5"):
        anomaly_export(
            ["--ckpt", str(checkpoints[ANOMALY]), "--out", str(out), "--score", "mahalanobis",
             "--score-smoothing", smoothing]
        )  # fmt: skip
        assert json.loads((out / "segmenter.json").read_text())["score_smoothing"] == float(smoothing)
        _, score = run_onnx(out / "segmenter.onnx", {"image": image.numpy()})
        task.score_smoothing = float(smoothing)
        close(score, task.anomaly_map(image, "mahalanobis"))
    with pytest.raises(ValueError, match="--score-smoothing must be a finite sigma >= 0"):
        anomaly_export(
            ["--ckpt", str(checkpoints[ANOMALY]), "--out", str(tmp_path / "y"), "--score-smoothing", "-1"]
        )
    # --size sizes the check's random inputs only: the sidecar keeps the trained size (it had said 64x96)
    anomaly_export(["--ckpt", str(checkpoints[ANOMALY]), "--out", str(out), "--size", "50", "70"])
    meta = json.loads((out / "segmenter.json").read_text())
    assert meta["input_size"] == [32, 64] and meta["checked_size"] == [64, 96]
    assert meta["inputs"]["image"] == ["batch", 3, "height", "width"] and "LongestMaxSize" in meta["resize"]["rule"]
    assert not (tmp_path / "y").exists()
    with pytest.raises(Exception, match="DetectionTask"):  # a detection checkpoint is refused
        anomaly_export(["--ckpt", str(checkpoints[DETECTION]), "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()


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
