"""ONNX export of an image classifier: ``python -m shared.classification.export --ckpt PATH --out DIR``.

For checkpoints of :class:`~shared.classification.task.ClassificationTask`, which both domains' classification
trains (``domains.medical.classification``: grey CT patches; ``domains.driving.classification``: RGB object
crops).

``classifier.onnx``: ``image`` (B, C, H, W) float32 in [0, 1] (C = ``in_channels``: 1 grey, 3 RGB;
normalisation is inside the graph, as the anomaly export's) -> ``logits`` (B, K) and ``probabilities``
(B, K) = softmax(logits), K classes in ``classes`` order (the ``p_<class>`` columns of ``predict``'s
``probabilities.csv``). Batch, H and W are dynamic (the network pools globally), but the network learnt at
``input_size``: resize to it, as below. A backbone whose graph holds only at its export size (a ViT: token
counts traced as constants) gets H and W fixed there, said in a warning and the sidecar's
``fixed_input_size``.

Outside the graph, as the data module (:mod:`shared.classification.data`: ``read_image`` and
``classification_transforms``) does for ``test`` and ``predict``, written in the sidecar's ``read`` and
``resize``: read the file with OpenCV (grey: ``cv2.IMREAD_GRAYSCALE``, whose luma makes a colour photo grey;
RGB: ``cv2.IMREAD_COLOR`` then BGR -> RGB; 16-bit images stretched per image to 0..255), resize the 8-bit
image to ``input_size`` with ``cv2.resize(image, (W, H), interpolation=cv2.INTER_LINEAR)`` (aspect ratio not
kept), then divide by 255. The decision (``decision``): two classes with a threshold the checkpoint fitted
(``--model.decision_threshold youden``) call the second class where its probability is at least it; otherwise
the argmax. The JSON sidecar ``classifier.json`` also holds the normalisation's mean and std, the data the
network was trained on, and the largest onnxruntime vs PyTorch difference measured at export time (beyond
``--atol`` + ``--rtol`` times the value the export fails and leaves nothing behind).
"""

from __future__ import annotations

import inspect
from pathlib import Path

import albumentations as A
import cv2
import torch
from torch import nn

from shared.classification.data import ClassificationDataModule, classification_transforms
from shared.classification.task import ClassificationTask
from shared.export import (
    DEFAULT_CHECK,
    CheckedExport,
    ExportCheck,
    export_main,
    run_export,
)

#: how a file becomes the (H, W, C) uint8 image, per ``in_channels``
#: (:func:`shared.classification.data.read_image`)
READ = {
    1: "grey: cv2.imread(path, cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH); a colour file becomes grey by "
    "the decoder's luma (ITU-R BT.601: 0.299 R + 0.587 G + 0.114 B, within one grey level of "
    "cv2.cvtColor(..., COLOR_BGR2GRAY))",
    3: "RGB: cv2.imread(path, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH) then cv2.cvtColor(..., COLOR_BGR2RGB); "
    "a grey file gives three equal channels",
}
#: what every read does, grey or RGB
READ_COMMON = (
    "alpha dropped (not composited); a JPEG's EXIF orientation applied (OpenCV's imread does); 16-bit or "
    "float images: each image's own min..max stretched to 0..255 (shared.images.stretch_to_uint8)"
)


class NormalisedClassifier(nn.Module):
    """[0, 1] image -> (logits, probabilities): the data module's normalisation, the network and a softmax,
    so a deployer feeds pixels / 255 and reads the probabilities ``predict`` writes."""

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model((image - self.mean) / self.std)
        return logits, logits.softmax(1)


def data_steps(size: tuple[int, int], in_channels: int) -> tuple[A.Resize, A.Normalize]:
    """The Resize and Normalize of the data module's evaluation transform, read from it (never restated), so
    the graph's normalisation and the sidecar's resize are the ones ``test`` and ``predict`` apply. Any other
    step there is an error: the sidecar would not describe it."""
    steps = list(classification_transforms(False, size, in_channels).transforms)
    kinds = [type(step).__name__ for step in steps]
    if kinds != ["Resize", "Normalize"] or steps[0].area_for_downscale is not None:
        raise NotImplementedError(
            f"shared.classification.data.classification_transforms (evaluation) now applies {steps}; "
            "shared/classification/export.py describes only Resize (no area_for_downscale) then Normalize: "
            "update it"
        )
    return steps[0], steps[1]


#: the interpolation flags albumentations' Resize takes, by OpenCV name (other ``cv2.INTER_*`` names share
#: their values: ``INTER_BITS`` is 5, as ``INTER_LINEAR_EXACT``)
INTERPOLATIONS = ("NEAREST", "NEAREST_EXACT", "LINEAR", "CUBIC", "AREA", "LANCZOS4", "LINEAR_EXACT")


def _interpolation(flag: int) -> str:
    """OpenCV's name of a Resize interpolation flag (``cv2.INTER_LINEAR``)."""
    names = [f"cv2.INTER_{name}" for name in INTERPOLATIONS if getattr(cv2, f"INTER_{name}") == flag]
    return names[0] if names else f"OpenCV interpolation flag {flag}"


def decision(task: ClassificationTask) -> dict:
    """The sidecar's ``decision``: how ``predict`` turns the probabilities into a class with this task."""
    names, threshold = list(task.class_names), task.decision_threshold
    if threshold is None:
        return {"rule": "argmax", "threshold": None, "text": "classes[argmax(probabilities)]"}
    given = task.decision_rule not in (None, "youden")
    return {
        "rule": "threshold",
        # unrounded: the float32 value predict compares with, so a probability at it is decided the same
        "threshold": float(threshold),
        "positive_class": names[1],
        "source": "given (--model.decision_threshold)" if given else "fitted at validation (Youden's J)",
        "text": f"{names[1]!r} where probabilities[:, 1] >= threshold, else {names[0]!r}",
    }


def _data(data: dict | None) -> dict:
    """What the network was trained on (the checkpoint's data module settings), for the sidecar's ``data``."""
    if not data:
        return {
            "data_format": None,
            "note": "not recorded: the checkpoint holds no data module settings (input_size is the data "
            "module's default image_size)",
        }
    fmt = data.get("data_format")
    note = (
        "the image files as listed"
        if fmt in ("imagefolder", "csv")
        else f"crops the domain's data module cut from its {fmt} source (domains.*.classification.data): "
        "feed images cut the same way"
    )
    return {"data_format": fmt, "note": note}


def default_image_size() -> tuple[int, int]:
    """The data module's own ``image_size``: what a checkpoint without data module settings was trained at,
    unless its run set another."""
    size = inspect.signature(ClassificationDataModule).parameters["image_size"].default
    return int(size[0]), int(size[1])


def trained_size(data: dict | None) -> tuple[int, int]:
    """The size the network was trained at: the data module's ``image_size`` in its settings ``data`` (a
    checkpoint's ``datamodule_hyper_parameters``), else the data module's default."""
    size = (data or {}).get("image_size") or default_image_size()
    return int(size[0]), int(size[1])


def _input_size(checkpoint: dict) -> tuple[int, int]:
    return trained_size(checkpoint.get("datamodule_hyper_parameters"))


def export_classification(
    task: ClassificationTask,
    out_dir: str | Path,
    size: tuple[int, int] | None = None,
    check: ExportCheck = DEFAULT_CHECK,
    checkpoint: str | Path | None = None,
    data: dict | None = None,
) -> dict:
    """Export ``task`` as ``out_dir/classifier.onnx`` + ``classifier.json`` (see the module docstring);
    returns the sidecar.

    ``data``: the data module settings the model was trained with (a checkpoint's
    ``datamodule_hyper_parameters``): its ``image_size`` is the sidecar's ``input_size``; None: the data
    module's default, said in ``data``.
    ``size``: the random images' size the graph is checked at (``checked_size``); None: ``input_size``.
    """
    out_dir = Path(out_dir)
    task = task.eval()
    in_channels = int(task.model.in_channels)
    trained = trained_size(data)
    size = tuple(int(n) for n in size) if size else trained
    resize, normalize = data_steps(trained, in_channels)
    module = NormalisedClassifier(task.model, normalize.mean, normalize.std).eval()
    example = torch.rand(2, in_channels, *size, generator=torch.Generator().manual_seed(0))
    outputs = ["logits", "probabilities"]
    axes = {
        "image": {0: "batch", 2: "height", 3: "width"},
        "logits": {0: "batch"},
        "probabilities": {0: "batch"},
    }
    model = f"image_classifier/{task.model.init_args.get('backbone', type(task.model).__name__)}"
    interpolation = _interpolation(resize.interpolation)
    with CheckedExport(out_dir, check, "classification", model, checkpoint) as export:
        measured = export.graph("classifier.onnx", module, {"image": example}, outputs, axes)
        # [batch, C, height, width], named where dynamic (a ViT's graph fixes height and width)
        fixed = export.fixed_sizes.get("classifier.onnx")
        height, width = trained
        sidecar = {
            "graph": "classifier.onnx",
            "inputs": {"image": ["batch", in_channels, *(fixed or ["height", "width"])]},
            "outputs": outputs,
            "classes": list(task.class_names),
            "probabilities": "softmax(logits) over classes, in their order (predict's p_<class> columns)",
            # the size the network learnt from, not --size, which only sizes the check's random images
            "input_size": [height, width],
            "checked_size": list(size),
            "in_channels": in_channels,
            "input": f"{'grey' if in_channels == 1 else 'RGB'} in [0, 1]: the 8-bit image after read and "
            "resize, / 255, as (C, H, W); normalisation is inside the graph",
            "read": f"{READ[in_channels]}; {READ_COMMON}",
            "resize": {
                "size": "input_size [H, W], aspect ratio not kept (stretched); skipped at that size already",
                "interpolation": interpolation,
                "opencv": f"cv2.resize(image, ({width}, {height}), interpolation={interpolation})",
                "on": "the 8-bit image, before / 255 (albumentations Resize, as the data module)",
            },
            "normalisation": {
                "mean": [float(v) for v in normalize.mean],
                "std": [float(v) for v in normalize.std],
                "where": "inside the graph: (image - mean) / std per channel on [0, 1] pixels (the data "
                "module's albumentations Normalize(mean, std, max_pixel_value="
                f"{normalize.max_pixel_value:g}) on 0..255)",
            },
            "decision": decision(task),
            "data": _data(data),
        }
        return export.finish("classifier.json", sidecar, measured, "random images at checked_size")


def main(argv: list[str] | None = None) -> dict:
    return export_main(
        argv,
        "shared.classification",
        __doc__,
        ClassificationTask,
        export_classification,
        ("classifier.onnx", "classifier.json"),
        ckpt_note=" (domains.medical.classification or domains.driving.classification)",
        size_help="size of the random images the graph is checked on (the graph takes any size; default: the "
        "trained image_size, kept in the checkpoint)",
        input_size=_input_size,
        data=True,
        detail=lambda sidecar: f"decision: {sidecar['decision']['rule']}",
    )


if __name__ == "__main__":
    run_export(main)
