"""ONNX export of the Mask R-CNN instance segmenter, whole after the resize: ``instances.onnx`` + its JSON.

``python -m domains.driving.instances.export --ckpt PATH --out DIR`` writes ``instances.onnx`` and
``instances.json``.

What is in the graph, and why. ``instances.onnx`` is Mask R-CNN's whole evaluation path after the resize:
backbone and FPN, the RPN (anchors, proposal decoding, per-level top-k, NMS), RoIAlign, the box head with its
score threshold, class-wise NMS and ``detections_per_img`` cut, the mask head, and the pasting of each
detection's 28x28 mask into its box at the original image's size. torchvision writes these parts for ONNX (its
own ``test_onnx.py`` exports Mask R-CNN whole, opset >= 11), and here they export and match onnxruntime, so
unlike the FCOS export (:mod:`domains.driving.detection.export`) no post-processing is left for a consumer to
reproduce. Only the pre-processing stays outside, as the detection export has it
(:func:`~domains.driving.detection.export.preprocess`: the model's own ``FitIntoBox``): its resize rule
depends on which way a photo lies, a Python branch a trace would freeze at the example's orientation. The
trace unrolls torchvision's per-image loops, so the graph takes one image; :func:`segment_with_onnx` runs it
per image.

* inputs: ``image`` (1, 3, H, W) float32: RGB in [0, 1] resized with its aspect ratio kept to fit the model's
  ``input_size`` box (the sidecar's ``resize``), normalised ``(x - image_mean) / image_std`` and zero-padded
  bottom / right to a multiple of ``size_divisible`` (H, W dynamic); ``image_size`` (2,) int64: the resized
  image's height and width inside that padding; ``original_size`` (2,) int64: the height and width the boxes
  and masks come out in. :func:`segment_with_onnx` runs a list of images of any sizes as the PyTorch model's
  ``forward`` does: one pass per image, each padded on its own.
* outputs, N = the detections (0 to ``detections_per_img``, by descending score): ``boxes`` (N, 4) float32
  xyxy in the pixels of ``original_size``, ``scores`` (N,), ``labels`` (N,) int64 0-based into the classes,
  ``masks`` (N, original height, original width) float32 probabilities; a pixel belongs to the instance where
  its probability is at least the task's ``mask_thresh`` (0.5 by default).

The check (beyond ``--atol`` + ``--rtol`` times the value the export fails and leaves nothing behind) runs the
whole pipeline both ways, :func:`segment_with_onnx` against the model's ``forward``, on two synthetic road
scenes of two sizes, neither the export's example (a graph with its export size traced in goes wrong there). The number of detections depends on the data, so they are matched by label and
box (:func:`compare_detections`): one found by one runtime only is accepted where its score or overlap
sits within the tolerance of a decision (the score threshold, the ``detections_per_img`` cut, the NMS
overlap), which float32 rounding may take either way, and the sidecar counts them; any other is a failure. The
JSON sidecar ``instances.json`` holds every number a consumer needs, the classes, the mask format and the
largest difference measured.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import box_iou

from domains.driving.detection.export import ORIENTATION, RESIZE, preprocess
from domains.driving.instances.task import InstanceTask
from shared.export import (
    DEFAULT_CHECK,
    CheckedExport,
    ExportCheck,
    export_main,
    onnx_session,
    run_export,
    run_onnx,
)

GRAPH, SIDECAR = "instances.onnx", "instances.json"
OUTPUTS = ["boxes", "scores", "labels", "masks"]
AXES = {
    "image": {2: "height", 3: "width"},
    "boxes": {0: "detections"},
    "scores": {0: "detections"},
    "labels": {0: "detections"},
    "masks": {0: "detections", 1: "original_height", 2: "original_width"},
}


class MaskRCNNGraph(nn.Module):
    """One normalised, padded image + its resized and original sizes -> the detections of the model's
    ``forward`` (torchvision's ``GeneralizedRCNN.forward`` after its transform's resize, eval mode)."""

    def __init__(self, task: InstanceTask):
        super().__init__()
        self.segmenter = task.model.segmenter

    def forward(self, image: torch.Tensor, image_size: torch.Tensor, original_size: torch.Tensor):
        images = ImageList(image, [(image_size[0], image_size[1])])
        features = self.segmenter.backbone(image)
        proposals, _ = self.segmenter.rpn(images, features)
        detections, _ = self.segmenter.roi_heads(features, proposals, images.image_sizes)
        original = [(original_size[0], original_size[1])]
        found = self.segmenter.transform.postprocess(detections, images.image_sizes, original)[0]
        # as RoadInstanceSegmenter.forward: 0-based labels, one mask channel
        return found["boxes"], found["scores"], found["labels"] - 1, found["masks"][:, 0]


def graph_inputs(batch: torch.Tensor, sizes: list, original: list) -> list[dict[str, np.ndarray]]:
    """The graph's inputs for each image of a preprocessed batch (:func:`preprocess`'s outputs)."""
    return [
        {
            "image": batch[i : i + 1].numpy(),
            "image_size": np.asarray(sizes[i], dtype=np.int64),
            "original_size": np.asarray(original[i], dtype=np.int64),
        }
        for i in range(len(sizes))
    ]


def segment_with_onnx(onnx_path: str | Path, images: list[torch.Tensor], meta: dict) -> list[dict]:
    """The model's ``forward`` with the graph in onnxruntime: RGB [0, 1] (3, H, W) images of any sizes -> per
    image ``boxes``, ``scores``, 0-based ``labels`` and ``masks`` (N, H, W) probabilities, one run per image."""
    found, session = [], onnx_session(onnx_path)
    for image in images:
        batch, sizes, original = preprocess([image], meta)
        outputs = run_onnx(session, graph_inputs(batch, sizes, original)[0])
        found.append({k: torch.from_numpy(v) for k, v in zip(OUTPUTS, outputs, strict=True)})
    return found


def compare_detections(
    got: list[dict], expected: list[dict], check: ExportCheck, meta: dict, shown: Path
) -> tuple[dict[str, float], int, int]:
    """Match each image's onnxruntime detections to PyTorch's (same label, box and score within the tolerance,
    ``atol + rtol * |PyTorch|``) and compare the matched masks. Returns the largest difference per output, the
    detections matched and those found by one runtime only, each at a tie (:func:`_at_a_tie`). Raises naming
    ``shown`` (the graph's final name) for any other difference."""
    measured, matched, ties = dict.fromkeys(("boxes", "scores", "masks"), 0.0), 0, 0
    for image, (g, e) in enumerate(zip(got, expected, strict=True)):
        pairs, lone = _match(g, e, check)
        for i, j in pairs:
            for name in measured:
                a, b = g[name][i].double().numpy(), e[name][j].double().numpy()
                if a.shape != b.shape:
                    raise ValueError(
                        f"{shown}: onnxruntime's {name} has shape {a.shape}, PyTorch's {b.shape}"
                    )
                measured[name] = max(measured[name], float(np.abs(a - b).max(initial=0.0)))
                if not np.isclose(a, b, rtol=check.rtol, atol=check.atol).all():
                    raise ValueError(
                        f"{shown}: onnxruntime differs from PyTorch in {name} of detection {j} of check "
                        f"image {image} by up to {np.abs(a - b).max():.3g} (allowed: atol {check.atol:g} + "
                        f"rtol {check.rtol:g} * |value|)"
                    )
        for runtime, dets, other, k in lone:
            if not _at_a_tie(dets, k, other, check, meta):
                near = _nearest(dets, k, other)
                raise ValueError(
                    f"{shown}: {runtime}'s detection {k} of check image {image} (label "
                    f"{int(dets['labels'][k])}, score {float(dets['scores'][k]):.6f}) has no counterpart in "
                    f"the other runtime within atol {check.atol:g} + rtol {check.rtol:g} * |value| ({near}) "
                    "and is at no score or overlap tie"
                )
        matched, ties = matched + len(pairs), ties + len(lone)
    return measured, matched, ties


def _within(got: torch.Tensor, expected: torch.Tensor, check: ExportCheck) -> torch.Tensor:
    """Per row of ``got``: every element within ``atol + rtol * |expected|`` (``expected`` broadcast)."""
    got, expected = got.double(), expected.double()
    inside = (got - expected).abs() <= check.atol + check.rtol * expected.abs()
    return inside.reshape(len(got), -1).all(dim=1)


def _match(got: dict, expected: dict, check: ExportCheck) -> tuple[list[tuple[int, int]], list[tuple]]:
    """Pairs (onnxruntime index, PyTorch index), PyTorch's detections taken by descending score, each with the
    unused onnxruntime detection of its label nearest in box whose box and score are within the tolerance; and
    the detections left alone as (runtime, its detections, the other's, index). Order is not compared: two
    detections of equal score may leave NMS either way round."""
    free = torch.ones(len(got["scores"]), dtype=torch.bool)
    pairs = []
    for j in range(len(expected["scores"])):
        box = expected["boxes"][j]
        ok = free & (got["labels"] == expected["labels"][j]) & _within(got["boxes"], box, check)
        ok &= _within(got["scores"], expected["scores"][j], check)
        if ok.any():
            distance = (got["boxes"].double() - box.double()).abs().amax(dim=1).masked_fill(~ok, float("inf"))
            i = int(distance.argmin())
            free[i] = False
            pairs.append((i, j))
    paired = {j for _, j in pairs}
    lone = [("onnxruntime", got, expected, i) for i in range(len(got["scores"])) if free[i]]
    lone += [("PyTorch", expected, got, j) for j in range(len(expected["scores"])) if j not in paired]
    return pairs, lone


def _at_a_tie(dets: dict, k: int, other: dict, check: ExportCheck, meta: dict) -> bool:
    """Whether detection ``k``, found by one runtime only, sits within the tolerance of a decision rounding
    may take either way: the score threshold, the other runtime's ``detections_per_img`` cut, or the NMS
    overlap with a detection of its class the other runtime kept at a score as high."""
    score = float(dets["scores"][k])

    def near(value: float, threshold: float) -> bool:
        return abs(value - threshold) <= check.atol + check.rtol * abs(threshold)

    if near(score, meta["score_thresh"]):
        return True
    full = len(other["scores"]) >= meta["detections_per_img"]
    if full and score <= float(other["scores"].min()) + check.atol + check.rtol * score:
        return True
    rivals = (other["labels"] == dets["labels"][k]) & (
        other["scores"] >= score - check.atol - check.rtol * score
    )
    if not rivals.any():
        return False
    overlaps = box_iou(dets["boxes"][k : k + 1].double(), other["boxes"][rivals].double())[0]
    return any(near(float(v), meta["nms_thresh"]) for v in overlaps)


def _nearest(dets: dict, k: int, other: dict) -> str:
    """How far the other runtime's nearest detection of the same label lies, for the error message."""
    same = other["labels"] == dets["labels"][k]
    if not same.any():
        return "the other has none of its label"
    box_diff = (other["boxes"][same] - dets["boxes"][k]).abs().amax(dim=1)
    i = int(box_diff.argmin())
    score_diff = abs(float(other["scores"][same][i]) - float(dets["scores"][k]))
    return (
        f"the nearest of its label differs by {float(box_diff[i]):.3g} px in box, {score_diff:.3g} in score"
    )


def check_images(height: int, width: int) -> list[torch.Tensor]:
    """Two of the suite's synthetic road scenes (:func:`~domains.driving.synthetic.render.render_scene`) as
    RGB [0, 1] tensors: one at the input box, one of another size and shape (for a wide box, lying the other
    way: the other branch of the resize rule, into a part of the padded batch)."""
    from domains.driving.synthetic.render import render_scene

    sizes = [(width, height), (max(64, width // 2), height + height // 2)]  # (width, height) as it takes them
    frames = [render_scene(seed, size).image for seed, size in enumerate(sizes)]
    return [torch.from_numpy(frame).permute(2, 0, 1).float() / 255 for frame in frames]


def _sizes(images: list[torch.Tensor]) -> str:
    return " and ".join(f"{int(im.shape[-2])}x{int(im.shape[-1])}" for im in images)


def export_instances(
    task: InstanceTask,
    out_dir: str | Path,
    check: ExportCheck = DEFAULT_CHECK,
    checkpoint: str | Path | None = None,
) -> dict:
    """Export ``task``'s Mask R-CNN to ``out_dir/instances.onnx`` + ``instances.json`` (see the module
    docstring); returns the sidecar."""
    out_dir = Path(out_dir)
    task = task.eval()
    segmenter = task.model.segmenter
    height, width = task.model.input_size
    heads = segmenter.roi_heads
    meta = {
        "input_size": [int(height), int(width)],
        "min_size": int(min(height, width)),
        "max_size": int(max(height, width)),
        "image_mean": [float(v) for v in segmenter.transform.image_mean],
        "image_std": [float(v) for v in segmenter.transform.image_std],
        "size_divisible": int(segmenter.transform.size_divisible),
        "score_thresh": float(heads.score_thresh),
        "nms_thresh": float(heads.nms_thresh),
        "detections_per_img": int(heads.detections_per_img),
    }
    # traced on one random image at the input box; checked on others (check_images)
    batch, sizes, original = preprocess(
        [torch.rand(3, height, width, generator=torch.Generator().manual_seed(0))], meta
    )
    example = {k: torch.from_numpy(v) for k, v in graph_inputs(batch, sizes, original)[0].items()}
    module = MaskRCNNGraph(task).eval()
    images = check_images(height, width)
    model = f"maskrcnn/{task.model.init_args['backbone']}"
    with CheckedExport(out_dir, check, "driving_instances", model, checkpoint) as export:
        path = export.stage(GRAPH, module, example, OUTPUTS, AXES)
        with torch.no_grad():
            expected = task.model(images)
        try:
            got = segment_with_onnx(path, images, meta)
        except Exception as exc:  # noqa: BLE001 - onnxruntime refusing a shape the trace fixed
            raise ValueError(
                f"{out_dir / GRAPH}: onnxruntime fails on the check scenes of {_sizes(images)} "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]}): the backbone's graph "
                "fixes shapes at the export size (a ViT's token count, Swin's windows), and Mask R-CNN's "
                "graph must take every padded size; export a convolutional backbone"
            ) from None
        measured, matched, ties = compare_detections(got, expected, check, meta, out_dir / GRAPH)
        if not matched:  # a confident model may find nothing above its floor in these scenes
            warnings.warn(
                f"{out_dir / GRAPH}: the check scenes gave no detection above score_thresh "
                f"{meta['score_thresh']:g}, so only that was compared; check the graph on your own images "
                "(segment_with_onnx against the model)",
                stacklevel=2,
            )
        sidecar = {
            "graph": GRAPH,
            "inputs": {
                "image": {"shape": [1, 3, "height", "width"], "dtype": "float32"},
                "image_size": {"shape": [2], "dtype": "int64"},
                "original_size": {"shape": [2], "dtype": "int64"},
            },
            "outputs": {
                "boxes": {"shape": ["detections", 4], "dtype": "float32"},
                "scores": {"shape": ["detections"], "dtype": "float32"},
                "labels": {"shape": ["detections"], "dtype": "int64"},
                "masks": {"shape": ["detections", "original_height", "original_width"], "dtype": "float32"},
            },
            "input": "one image a run: RGB in [0, 1], resized into input_size (aspect kept), normalised, "
            "zero-padded bottom / right to a multiple of size_divisible; image_size = its resized (height, "
            "width), original_size = the (height, width) boxes and masks come out in (see "
            "domains/driving/instances/export.py)",
            "orientation": ORIENTATION,
            "resize": RESIZE,
            "classes": list(task.class_names),
            "labels": "0-based index into classes",
            "boxes": "x1, y1, x2, y2 in the pixels of original_size, by descending score",
            "masks": {
                "format": "per detection, float32 probabilities at original_size: the resolution x "
                "resolution mask of its class pasted into its box (torchvision paste_masks_in_image, inside "
                "the graph)",
                "resolution": 2 * int(heads.mask_roi_pool.output_size[0]),  # the predictor doubles the RoI
                "threshold": float(task.mask_thresh),
                "rule": "a pixel belongs to the instance where its probability >= threshold",
                "large_photos": "original_size = image_size gives the masks at the resized frame, as predict "
                "does; scale the boxes by original / resized and resize each kept mask bilinearly "
                "(align_corners false) before the threshold (domains.driving.instances.task)",
            },
            "inside_graph": "backbone, FPN, RPN, RoIAlign, box head, score threshold, class-wise NMS, "
            "detections_per_img, mask head, mask pasting",
            "operating_point": None,  # the instance task fits none (the detection task does)
            "predict_score_thresh": float(task.predict_score_thresh),
            "score": "score_thresh is the graph's floor, low for AP; predict draws and writes the instances "
            "at or above predict_score_thresh (its --model.predict_score_thresh; the instance task fits no "
            "operating point)",
            **meta,
        }
        measured_on = (
            f"synthetic scenes of {_sizes(images)}: {matched} detections matched by label and box, {ties} found by one "
            "runtime only, each at a score or NMS tie"
        )
        return export.finish(SIDECAR, sidecar, measured, measured_on)


def main(argv: list[str] | None = None) -> dict:
    return export_main(
        argv, "domains.driving.instances", __doc__, InstanceTask, export_instances, (GRAPH, SIDECAR)
    )


if __name__ == "__main__":
    run_export(main)
