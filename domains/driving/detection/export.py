"""ONNX export of the FCOS detector: ``python -m domains.driving.detection.export --ckpt PATH --out DIR``.

What is exported, and what runs outside. The graph ``detector.onnx`` is the network only: backbone, FPN and
FCOS head, plus the point ("anchor") grid. Pre-processing, box decoding and NMS stay outside, because the
data-dependent parts (score threshold, per-level top-k, class-wise NMS, a variable number of boxes per
image) trace to fragile ONNX and are cheap in any runtime; they are torchvision's own code here
(:func:`detect_with_onnx`).

* input ``image`` (B, 3, H, W): RGB in [0, 1] resized with its aspect ratio kept so that it fits in the
  model's ``input_size`` box (torchvision ``GeneralizedRCNNTransform``: short side to ``min_size`` unless the
  long side would pass ``max_size``; for a photo lying the other way than the box, the two swapped: the
  model's own :class:`~domains.driving.detection.model.FitIntoBox`), normalised ``(x - image_mean) /
  image_std`` and zero-padded bottom / right to a multiple of 32 (``size_divisible``). H and W are dynamic;
  the batch too (same padded size in a batch). A backbone whose graph holds only at its export size (a ViT or
  Swin: token counts and windows traced as constants) gets H and W fixed there, said in a warning and the
  sidecar's ``fixed_input_size``.
* outputs, A = the number of points over all pyramid levels, finest level first:

  - ``cls_logits`` (B, A, num_classes), ``bbox_regression`` (B, A, 4), ``bbox_ctrness`` (B, A, 1): the head;
  - ``anchors`` (A, 4) xyxy: each point's box of its level's stride (centre = the point);
  - ``anchors_per_level`` (L,) int64: how A splits into levels (for the per-level top-k).

Post-processing (torchvision ``FCOS.postprocess_detections``, reproduced exactly by :func:`postprocess`):
per level, ``score = sqrt(sigmoid(cls_logits) * sigmoid(bbox_ctrness))``, keep ``score > score_thresh``, the
``topk_candidates`` best, decode ``BoxLinearCoder(normalize_by_size=True)`` (box = centre -/+ regression *
anchor size), clip to the resized image; then class-wise NMS at ``nms_thresh`` over all levels, keep
``detections_per_img``, and scale the boxes back to the original image (``GeneralizedRCNNTransform.
postprocess``). The JSON sidecar ``detector.json`` holds every number this needs, the classes, and the
largest onnxruntime vs PyTorch difference measured at export time (beyond ``--atol`` + ``--rtol`` times
the value the export fails and leaves nothing behind). It also says in short fields what only this code did:
``inputs`` with its dynamic axes named, ``resize`` (the scale rule either way a photo lies, bilinear,
``align_corners`` false, no antialiasing), ``orientation`` (apply a JPEG's EXIF orientation first, as
``predict`` reads photos) and ``operating_point``: the best-F1 score threshold validation fitted
(``score_thresh`` is the post-processing floor, low for AP; draw or count boxes from the operating point),
null for a checkpoint that never validated.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn
from torchvision.models.detection import FCOS
from torchvision.models.detection._utils import BoxLinearCoder
from torchvision.models.detection.image_list import ImageList

from domains.driving.detection.model import FitIntoBox, run_by_size
from domains.driving.detection.task import DetectionTask
from shared.export import (
    DEFAULT_CHECK,
    CheckedExport,
    ExportCheck,
    export_main,
    onnx_session,
    run_export,
    run_onnx,
)

OUTPUTS = ["cls_logits", "bbox_regression", "bbox_ctrness", "anchors", "anchors_per_level"]
SIZE_DIVISIBLE = 32


class FCOSRaw(nn.Module):
    """Normalised, padded batch -> FCOS head outputs + the point grid (torchvision's FCOS.forward, eval part
    before post-processing)."""

    def __init__(self, task: DetectionTask):
        super().__init__()
        self.detector = task.model.detector

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = list(self.detector.backbone(image).values())
        head = self.detector.head(features)
        # one image's grid: every image of a padded batch shares it (only the batch's shape is read)
        anchors = self.detector.anchor_generator(ImageList(image, [tuple(image.shape[-2:])]), features)[0]
        per_level = torch.stack(
            [torch._shape_as_tensor(f)[2:].prod() for f in features]
        )  # traced, not constant
        return head["cls_logits"], head["bbox_regression"], head["bbox_ctrness"], anchors, per_level


def _transform(meta: dict) -> FitIntoBox:
    return FitIntoBox(
        meta["input_size"], min_size=meta["min_size"], max_size=meta["max_size"],
        image_mean=meta["image_mean"], image_std=meta["image_std"], size_divisible=meta["size_divisible"],
    ).eval()  # fmt: skip


def preprocess(images: list[torch.Tensor], meta: dict) -> tuple[torch.Tensor, list, list]:
    """RGB [0, 1] images (3, H, W) of any size -> (graph input, resized sizes, original sizes)."""
    original = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
    with torch.no_grad():
        batch, _ = _transform(meta)(list(images))
    return batch.tensors, [tuple(s) for s in batch.image_sizes], original


def postprocess(
    outputs, image_sizes: list, original_sizes: list, meta: dict
) -> list[dict[str, torch.Tensor]]:
    """Graph outputs -> per image ``boxes`` (original pixels, xyxy), ``scores``, ``labels`` (0-based)."""
    cls, reg, ctr, anchors, per_level = (torch.as_tensor(np.asarray(o)) for o in outputs)
    split = [int(n) for n in per_level]
    head = {
        "cls_logits": list(cls.split(split, dim=1)),
        "bbox_regression": list(reg.split(split, dim=1)),
        "bbox_ctrness": list(ctr.split(split, dim=1)),
    }
    anchors = [list(anchors.split(split))] * cls.shape[0]
    settings = SimpleNamespace(
        box_coder=BoxLinearCoder(normalize_by_size=True),
        **{k: meta[k] for k in ("score_thresh", "nms_thresh", "detections_per_img", "topk_candidates")},
    )
    detections = FCOS.postprocess_detections(settings, head, anchors, image_sizes)  # torchvision's own code
    return _transform(meta).postprocess(detections, image_sizes, original_sizes)


def detect_with_onnx(
    onnx_path: str | Path, images: list[torch.Tensor], meta: dict
) -> list[dict[str, torch.Tensor]]:
    """The whole detector with the network in onnxruntime: preprocess, run the graph, postprocess; one run per
    image size, as the PyTorch detector does (:func:`~domains.driving.detection.model.run_by_size`: padding to
    a batch's largest image moves the scores)."""

    session = onnx_session(onnx_path)

    def detect(group: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        batch, sizes, original = preprocess(group, meta)
        return postprocess(run_onnx(session, {"image": batch.numpy()}), sizes, original, meta)

    return run_by_size(images, detect)


#: how the graph's input is resized (:class:`FitIntoBox` = torchvision's ``_resize_image_and_masks``)
RESIZE = {
    "scale": "min(input_size[0] / h, input_size[1] / w) for an (h, w) image lying either way (the model's "
    "FitIntoBox: min_size and max_size swapped for a photo lying the other way than the box); enlarges too",
    "size": "floor(h * scale) x floor(w * scale)",
    "interpolation": "bilinear, align_corners false, no antialias (torch.nn.functional.interpolate)",
}
ORIENTATION = (
    "apply a JPEG's EXIF orientation before (predict reads photos upright: domains.driving.common.read_rgb)"
)


def operating_point(task: DetectionTask) -> dict | None:
    """The sidecar's ``operating_point``: the score threshold validation fitted (best pooled F1), or None."""
    threshold = float(task.operating_threshold)
    if not math.isfinite(threshold):
        return None
    return {
        "score_thresh": round(threshold, 4),
        "rule": "best pooled F1 on the validation split, boxes matched at IoU 0.5 within a class, "
        "detections mostly inside DontCare left out (domains.driving.detection.operating_point); "
        "draw / count boxes from it",
    }


def export_detection(
    task: DetectionTask,
    out_dir: str | Path,
    check: ExportCheck = DEFAULT_CHECK,
    checkpoint: str | Path | None = None,
) -> dict:
    """Export ``task``'s detector to ``out_dir/detector.onnx`` + ``detector.json``; returns the sidecar."""
    out_dir = Path(out_dir)
    task = task.eval()
    detector = task.model.detector
    height, width = task.model.input_size
    meta = {
        "input_size": [int(height), int(width)],
        "min_size": int(min(height, width)),  # the evaluation sizes (training may draw others)
        "max_size": int(max(height, width)),
        "image_mean": [float(v) for v in detector.transform.image_mean],
        "image_std": [float(v) for v in detector.transform.image_std],
        "size_divisible": SIZE_DIVISIBLE,
        "score_thresh": float(detector.score_thresh),
        "nms_thresh": float(detector.nms_thresh),
        "detections_per_img": int(detector.detections_per_img),
        "topk_candidates": int(detector.topk_candidates),
    }
    # example: two images shaped like the input box, so the graph is traced at the size it will mostly see
    g = torch.Generator().manual_seed(0)
    example, _, _ = preprocess([torch.rand(3, height, width, generator=g) for _ in range(2)], meta)
    module = FCOSRaw(task).eval()
    axes = {"image": {0: "batch", 2: "height", 3: "width"}, "cls_logits": {0: "batch", 1: "points"},
            "bbox_regression": {0: "batch", 1: "points"}, "bbox_ctrness": {0: "batch", 1: "points"},
            "anchors": {0: "points"}}  # fmt: skip
    model = f"fcos/{task.model.init_args['backbone']}"
    with CheckedExport(out_dir, check, "driving_detection", model, checkpoint) as export:
        measured = export.graph("detector.onnx", module, {"image": example}, OUTPUTS, axes)
        # [batch, 3, height, width], named where dynamic (a ViT's graph fixes height and width there)
        fixed = export.fixed_sizes.get("detector.onnx")
        shape = ["batch", int(example.shape[1]), *(fixed or ["height", "width"])]
        sidecar = {
            "graph": "detector.onnx",
            "inputs": {"image": shape},
            "outputs": OUTPUTS,
            "input": "RGB in [0, 1], resized into input_size (aspect kept), normalised, zero-padded bottom / "
            "right to a multiple of size_divisible (see domains/driving/detection/export.py)",
            "orientation": ORIENTATION,
            "resize": RESIZE,
            "operating_point": operating_point(task),
            "classes": list(task.class_names),
            "labels": "0-based index into classes",
            "score": "sqrt(sigmoid(cls_logits) * sigmoid(bbox_ctrness)) per class, then NMS",
            "postprocess": "outside the graph: torchvision FCOS.postprocess_detections + "
            "GeneralizedRCNNTransform.postprocess (domains.driving.detection.export.postprocess)",
            **meta,
        }
        return export.finish("detector.json", sidecar, measured, "random images at input_size")


def main(argv: list[str] | None = None) -> dict:
    files = ("detector.onnx", "detector.json")
    return export_main(argv, "domains.driving.detection", __doc__, DetectionTask, export_detection, files)


if __name__ == "__main__":
    run_export(main)
