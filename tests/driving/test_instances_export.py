"""ONNX export of the Mask R-CNN instance segmenter: the whole evaluation path after the resize in one graph,
matching the model's ``forward`` through onnxruntime (atol 1e-4 + rtol 1e-5), detections matched by label and
box; a failed check writes nothing."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from domains.driving.instances import export as instances_export
from domains.driving.instances.export import (
    compare_detections,
    export_instances,
    segment_with_onnx,
)
from domains.driving.instances.model import RoadInstanceSegmenter
from domains.driving.instances.task import InstanceTask
from shared.export import ExportCheck
from tests.driving.layouts import TINY_MASK_RCNN
from tests.driving.test_accident_export import _checkpoint

ATOL, RTOL = 1e-4, 1e-5
CLASSES = ["Car", "Pedestrian", "Cyclist"]

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_task(**task_args) -> InstanceTask:
    """A random-weight Mask R-CNN on a 64x96 box (random weights: many detections, matching exercised)."""
    torch.manual_seed(0)
    network = RoadInstanceSegmenter(3, **{**TINY_MASK_RCNN, "input_size": (64, 96)})
    return InstanceTask(network=network, class_names=CLASSES, **task_args).eval()


def close(got: torch.Tensor, expected: torch.Tensor) -> None:
    assert got.shape == expected.shape
    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=ATOL, rtol=RTOL)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[InstanceTask, dict, Path, str, str]:
    """:func:`tiny_task` saved as a checkpoint and exported once by the CLI: the task, the sidecar, the output
    folder, the checkpoint and what the CLI printed (read only; a test that writes over it copies it first)."""
    root = tmp_path_factory.mktemp("instances_export")
    task = tiny_task()
    ckpt = _checkpoint(task, root / "instances.ckpt", {})
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        meta = instances_export.main(["--ckpt", ckpt, "--out", str(root / "onnx")])
    return task, meta, root / "onnx", ckpt, printed.getvalue()


def test_the_graph_reproduces_the_models_forward_on_images_of_two_sizes(exported):
    task, meta, tmp_path, _, _ = exported  # the checkpoint holds the task's own weights
    assert sorted(p.name for p in tmp_path.iterdir()) == ["instances.json", "instances.onnx"]
    assert meta["classes"] == CLASSES and meta["input_size"] == [64, 96] and meta["size_divisible"] == 32
    assert meta["masks"]["threshold"] == 0.5 and meta["masks"]["resolution"] == 28
    assert (meta["score_thresh"], meta["nms_thresh"], meta["detections_per_img"]) == (0.05, 0.5, 100)
    assert meta["operating_point"] is None and meta["predict_score_thresh"] == 0.5
    assert max(meta["tolerance"]["max_abs_diff"].values()) <= ATOL
    g = torch.Generator().manual_seed(3)
    # one at the box, one portrait of another size (the other resize branch, another padded size)
    images = [torch.rand(3, 64, 96, generator=g), torch.rand(3, 90, 50, generator=g)]
    for group in (images, images[1:]):  # together and alone: one run per image either way
        with torch.no_grad():
            expected = task.model(group)
        for got, want, image in zip(
            segment_with_onnx(tmp_path / "instances.onnx", group, meta), expected, group, strict=True
        ):
            assert len(want["scores"]) > 10 and torch.equal(got["labels"], want["labels"])
            assert int(want["labels"].min()) >= 0  # 0-based, as the model's
            for key in ("boxes", "scores", "masks"):
                close(got[key], want[key])
            height, width = image.shape[-2:]
            assert got["masks"].shape[1:] == (height, width)
            assert float(got["boxes"][:, 2].max()) <= width and float(got["boxes"][:, 3].max()) <= height


def test_a_check_beyond_tolerance_writes_nothing_and_keeps_an_earlier_export(exported, tmp_path, monkeypatch):
    task, _, first, _, _ = exported
    shutil.copytree(first, tmp_path / "done")  # an earlier export of the same task
    before = {p.name: p.read_bytes() for p in (tmp_path / "done").iterdir()}
    real = instances_export.run_onnx

    def perturbed(path, inputs):  # a graph whose scores are off by 1e-3
        boxes, scores, labels, masks = real(path, inputs)
        return [boxes, scores + 1e-3, labels, masks]

    monkeypatch.setattr(instances_export, "run_onnx", perturbed)
    for out in (tmp_path / "new" / "deeper", tmp_path / "done"):
        with pytest.raises(
            ValueError, match=r"instances\.onnx: onnxruntime's detection 0 of check image 0 .* no "
        ):
            export_instances(task, out)
    assert not (tmp_path / "new").exists()
    assert {p.name: p.read_bytes() for p in (tmp_path / "done").iterdir()} == before


def _detections(scores, labels, boxes) -> dict:
    n = len(scores)
    return {
        "scores": torch.tensor(scores),
        "labels": torch.tensor(labels),
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(n, 4),
        "masks": torch.full((n, 4, 6), 0.25),
    }


def test_detections_only_one_runtime_found_pass_only_at_a_tie(tmp_path):
    """Counts may differ where rounding decides: a score at the threshold, the NMS overlap; order may swap at
    equal scores. Anything else found by one runtime only fails the export."""
    check = ExportCheck(ATOL, RTOL)
    meta = {"score_thresh": 0.05, "nms_thresh": 0.5, "detections_per_img": 100}
    shown = tmp_path / "instances.onnx"
    a, b, c = [0, 0, 4, 4], [10, 10, 14, 14], [0, 0, 4, 2]  # IoU(a, c) = 0.5: the NMS threshold
    pytorch = [_detections([0.9, 0.9, 0.6, 0.05 + 1e-6], [0, 1, 0, 2], [a, b, c, b])]
    # equal scores in the other order, and the box at the NMS overlap and the one at the score floor not found
    onnx = [_detections([0.9, 0.9], [1, 0], [b, a])]
    measured, matched, ties = compare_detections(onnx, pytorch, check, meta, shown)
    assert (matched, ties) == (2, 2) and measured == {"boxes": 0.0, "scores": 0.0, "masks": 0.0}
    # a confident detection found by PyTorch only, at no tie
    pytorch = [_detections([0.9, 0.7], [0, 1], [a, b])]
    with pytest.raises(ValueError, match=r"instances\.onnx: PyTorch's detection 1 of check image 0 \(label"):
        compare_detections([_detections([0.9], [0], [a])], pytorch, check, meta, shown)
    # a box off by more than the tolerance: no counterpart, named with how far the nearest lies
    moved = [_detections([0.9, 0.7], [0, 1], [a, [10, 10, 14, 14.01]])]
    with pytest.raises(ValueError, match=r"differs by 0\.01 px in box"):
        compare_detections(moved, pytorch, check, meta, shown)


def test_a_model_finding_nothing_in_the_check_scenes_is_warned_of_and_gives_empty_outputs(tmp_path):
    task = tiny_task(score_thresh=0.99)
    with pytest.warns(UserWarning, match="no detection above score_thresh 0.99"):
        meta = export_instances(task, tmp_path)
    (got,) = segment_with_onnx(tmp_path / "instances.onnx", [torch.rand(3, 50, 70)], meta)
    assert got["boxes"].shape == (0, 4) and got["masks"].shape == (0, 50, 70)


def test_a_backbone_whose_graph_fixes_its_input_size_is_refused_by_name(tmp_path):
    torch.manual_seed(0)
    vit = {"image_size": 64, "patch_size": 16, "num_layers": 1, "num_heads": 2, "hidden_dim": 32,
           "mlp_dim": 64, "pyramid_channels": 32}  # fmt: skip
    network = RoadInstanceSegmenter(
        3, **{**TINY_MASK_RCNN, "backbone": "vit", "backbone_kwargs": vit, "input_size": (64, 96)}
    )
    task = InstanceTask(network=network, class_names=CLASSES).eval()
    with pytest.raises(
        ValueError, match=r"instances\.onnx: onnxruntime fails on the check scenes of 64x96 and 96x64 .*ViT"
    ):
        export_instances(task, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_writes_graph_and_sidecar_and_a_zero_tolerance_writes_nothing(exported, tmp_path):
    _, _, out, ckpt, printed = exported  # the CLI's export of a checkpoint
    assert "wrote instances.onnx and instances.json" in printed
    meta = json.loads((out / "instances.json").read_text())
    assert meta["model"] == "maskrcnn/tiny_cnn" and meta["checkpoint"] == ckpt and meta["opset"] == 17
    assert meta["inputs"]["image"]["shape"] == [1, 3, "height", "width"]
    assert meta["labels"] == "0-based index into classes"
    strict = ["--ckpt", ckpt, "--out", str(tmp_path / "strict"), "--atol", "0", "--rtol", "0"]
    with pytest.raises(ValueError, match=r"onnxruntime differs from PyTorch|no counterpart"):
        instances_export.main(strict)
    assert not (tmp_path / "strict").exists()
