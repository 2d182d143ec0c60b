"""ONNX export of the anomaly segmenter: ``python -m domains.driving.anomaly.export --ckpt PATH --out DIR``.

``segmenter.onnx``: ``image`` (B, 3, H, W) RGB in [0, 1] (normalisation is inside the graph) ->

* ``logits`` (B, C, H, W) over the known classes (``domains.driving.classes.SEMANTIC_CLASSES``);
* ``score`` (B, H, W): the per-pixel anomaly score the checkpoint's task selects (``--score``: another),
  higher = more anomalous, computed in the graph from the logits, the decoder features, the outlier head and
  the training-set statistics the checkpoint carries (SML / Mahalanobis), exactly as ``task.anomaly_map``.

Batch, H and W are dynamic, but H and W must be multiples of the model's ``size_multiple`` (32 unless the
network was configured otherwise; the sidecar's ``size_multiple``): PyTorch pads other sizes (replicate)
and crops back, a shape-dependent step the export fixes at the traced size, so pad outside the graph. An encoder
whose graph holds only at its export size (a ViT or Swin: token counts and windows traced as constants) gets H
and W fixed there, said in a warning and the sidecar's ``fixed_input_size``.
The image-level score (a quantile of the pixel score inside the predicted road region) stays outside: see
``domains.driving.anomaly.predict.image_anomaly_score``. The JSON sidecar ``segmenter.json`` lists the
classes, the score, its smoothing and its range, the input size the network was trained at (``input_size``; ``--size``
only sizes the check's random inputs, ``checked_size``) and how a photo is fitted into it (``resize``), and the
largest onnxruntime vs PyTorch difference measured at export time (beyond ``--atol`` + ``--rtol`` times the value the export fails and leaves nothing behind).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from domains.driving.anomaly.model import FIXED_RANGES, AnomalySegmenter
from domains.driving.anomaly.scores import FEATURE_SCORES, SCORES, STAT_SCORES, smooth_score_map
from domains.driving.anomaly.task import AnomalySegmentationTask, score_smoothing_note
from domains.driving.classes import semantic_class_names
from shared.export import (
    DEFAULT_CHECK,
    CheckedExport,
    ExportCheck,
    export_main,
    run_export,
)


class SegmenterWithScore(nn.Module):
    """image -> (logits, anomaly score map): the plain model's features and one score function, without the
    data-dependent input checks of ``compute_score`` (run in PyTorch on the example before exporting)."""

    def __init__(self, model: AnomalySegmenter, score: str, smoothing: float = 0.0):
        super().__init__()
        self.model, self.score, self.smoothing = model, score, smoothing

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, features, extra = self.model.features(
            image, with_outlier=self.model.needs_outlier_head([self.score])
        )
        # outlier_prob reads the OE objective's logit: the head, the calibrated energy or ("both") their mean
        oe_logit = self.model.outlier_logit(logits.float(), extra) if self.score == "outlier_prob" else None
        score = SCORES[self.score](
            logits.float(),
            stats=self.model.stats,
            features=features if self.score in FEATURE_SCORES else None,
            outlier_logit=oe_logit,
        )
        return logits, smooth_score_map(score, self.smoothing)


def _round_up(value: int, multiple: int) -> int:
    return -(-int(value) // multiple) * multiple


#: how ``predict`` and ``test`` fit a photo into ``input_size`` (:func:`~domains.driving.anomaly.data.segmentation_transforms`)
RESIZE = {
    "rule": "fit into input_size keeping the aspect ratio, larger or smaller (albumentations "
    "LongestMaxSize(max_size_hw=input_size)), then pad bottom / right to a multiple of size_multiple",
    "interpolation": "bilinear (cv2.INTER_LINEAR, albumentations' default); the score map is resized back "
    "bilinearly (domains.driving.anomaly.predict)",
}


def _input_size(checkpoint: dict) -> tuple[int, int]:
    """The frame size the network was trained on: kept with the model (``input_size``); checkpoints from
    before that read the data module's ``image_size``; native synthetic frames when neither says."""
    size = (checkpoint.get("hyper_parameters") or {}).get("input_size")
    size = size or (checkpoint.get("datamodule_hyper_parameters") or {}).get("image_size")
    if not size:
        from domains.driving.synthetic import DEFAULT_SIZE  # (width, height) of the synthetic scenes

        size = (DEFAULT_SIZE[1], DEFAULT_SIZE[0])
    return int(size[0]), int(size[1])


def export_anomaly(
    task: AnomalySegmentationTask,
    out_dir: str | Path,
    size: tuple[int, int] = (192, 640),
    score: str | None = None,
    check: ExportCheck = DEFAULT_CHECK,
    checkpoint: str | Path | None = None,
    smoothing: float | None = None,
) -> dict:
    """Export ``task`` with ``score`` and its ``smoothing`` (default: the task's) as ``out_dir/segmenter.onnx``
    + its JSON."""
    out_dir = Path(out_dir)
    task = task.eval()
    score = score or task.score
    smoothing = task.score_smoothing if smoothing is None else float(smoothing)
    if not (smoothing >= 0 and math.isfinite(smoothing)):
        raise ValueError(f"--score-smoothing must be a finite sigma >= 0 (pixels), got {smoothing}")
    multiple = int(task.model.size_multiple)  # the model pads to it: the graph holds only at its multiples
    height, width = _round_up(size[0], multiple), _round_up(size[1], multiple)
    g = torch.Generator().manual_seed(0)
    example = torch.rand(2, int(task.model.in_channels), height, width, generator=g)
    task.model.scores(example, [score])  # a clear AnomalyScoreError now if the model cannot give this score
    module = SegmenterWithScore(task.model, score, smoothing).eval()
    hw = {0: "batch", 2: "height", 3: "width"}
    axes = {"image": hw, "logits": hw, "score": {0: "batch", 1: "height", 2: "width"}}
    model = f"segmentation_net/{task.model.init_args['encoder']}"
    with CheckedExport(out_dir, check, "driving_anomaly", model, checkpoint) as export:
        measured = export.graph("segmenter.onnx", module, {"image": example}, ["logits", "score"], axes)
        # [batch, 3, height, width], named where dynamic (a ViT encoder's graph fixes height and width)
        fixed = export.fixed_sizes.get("segmenter.onnx")
        trained = getattr(task.model, "input_size", None)
        sidecar = {
            "graph": "segmenter.onnx",
            "inputs": {"image": ["batch", int(example.shape[1]), *(fixed or ["height", "width"])]},
            "outputs": ["logits", "score"],
            # the size the network learnt from, not --size, which only sizes the check's random inputs (it
            # had replaced it: a 96x320 model's sidecar said 64x96)
            "input_size": list(trained) if trained else [height, width],
            "checked_size": [height, width],
            "size_multiple": multiple,
            "input": "RGB in [0, 1]; H and W multiples of size_multiple (pad outside, replicate)",
            "resize": RESIZE,
            "classes": semantic_class_names(task.num_classes),
            "score": score,
            "score_direction": "higher = more anomalous",
            "score_smoothing": smoothing,  # sigma (px) of the Gaussian blur inside the graph; 0: none
            "score_range": list(FIXED_RANGES[score]) if score in FIXED_RANGES else None,
            "uses_training_statistics": score in STAT_SCORES,
            "image_score": {
                "method": task.image_score_method, "q": task.image_score_q, "k": task.image_score_k,
                "road_ids": list(task.road_ids),  # the region it reads: predict.road_region(pred, road_ids)
                "where": "outside the graph: domains.driving.anomaly.predict.image_anomaly_score",
            },
        }  # fmt: skip
        return export.finish("segmenter.json", sidecar, measured, "random images at checked_size")


def _score_options(parser) -> None:
    """The export's own options: which score the graph outputs and how it is smoothed."""
    parser.add_argument("--score", choices=list(SCORES), help="anomaly score output (default: the task's)")
    parser.add_argument(
        "--score-smoothing",
        type=float,
        metavar="SIGMA",
        help="sigma (px) of the Gaussian blur on the score map, inside the graph; 0: none (default: the "
        "model.score_smoothing of the config the checkpoint's fit ran with, which fit checkpoints record; 1.0, the "
        "shipped configs', for a file that does not)",
    )


def _score_choice(args, task: AnomalySegmentationTask) -> dict:
    """``export_anomaly``'s ``score`` and ``smoothing``; an unset ``--score-smoothing`` is the fit's (a line
    says so where the checkpoint does not record it)."""
    smoothing = args.score_smoothing
    if smoothing is None:  # not given: the fit's, which the task's default (1.0) stands in for where unrecorded
        fit = task.fit_score_smoothing
        smoothing = task.score_smoothing if fit is None else fit
        if note := score_smoothing_note(smoothing, fit, "--score-smoothing"):
            print(note)
    return {"score": args.score, "smoothing": smoothing}


def main(argv: list[str] | None = None) -> dict:
    return export_main(
        argv,
        "domains.driving.anomaly",
        __doc__,
        AnomalySegmentationTask,
        export_anomaly,
        ("segmenter.onnx", "segmenter.json"),
        size_help="example input size, rounded up to multiples of the model's size_multiple (32 unless configured; "
        "default: the data module's)",
        input_size=_input_size,
        add_options=_score_options,
        export_options=_score_choice,
        detail=lambda sidecar: f"score {sidecar['score']}, smoothing sigma {sidecar['score_smoothing']} px",
    )


if __name__ == "__main__":
    run_export(main)
