"""Prediction outputs: KITTI result files (16 fields, with score) and images with the boxes drawn.

``KittiPredictionWriter`` is a Lightning ``BasePredictionWriter``; the plain functions
(:func:`detections_to_kitti`, :func:`draw_detections`, :func:`detect`) serve scripts and the Streamlit demo.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from pytorch_lightning.callbacks import BasePredictionWriter

from domains.driving.common import read_rgb
from domains.driving.formats import LabelFormatError, ObjectLabel, kitti_type_name, write_kitti_label
from shared.images import write_image
from shared.task import gather_lists

# RGB per class name; other names get a colour from the fallback cycle.
CLASS_COLORS = {
    "Car": (0, 160, 255),
    "Van": (0, 220, 220),
    "Truck": (120, 80, 255),
    "Pedestrian": (255, 40, 80),
    "Cyclist": (255, 200, 0),
}
_FALLBACK = ((0, 255, 0), (255, 0, 255), (255, 128, 0), (128, 255, 128))


def class_color(name: str, index: int = 0) -> tuple[int, int, int]:
    return CLASS_COLORS.get(name, _FALLBACK[index % len(_FALLBACK)])


def detections_to_kitti(pred: dict, class_names: Sequence[str]) -> list[ObjectLabel]:
    """One :class:`ObjectLabel` per detection, with KITTI's 'unknown' values for the 3D fields.

    Truncation and occlusion are -1 as in KITTI result files (the evaluation does not read them). A class name
    with spaces (COCO's ``traffic light``) is typed with underscores (:func:`kitti_type_name`).
    """
    objects = []
    for box, score, label in zip(pred["boxes"].tolist(), pred["scores"].tolist(), pred["labels"].tolist()):
        if not 0 <= int(label) < len(class_names):
            raise ValueError(
                f"detection label {label} outside 0..{len(class_names) - 1} ({list(class_names)})"
            )
        objects.append(
            ObjectLabel(
                type=kitti_type_name(class_names[int(label)]),
                bbox=tuple(box),
                truncated=-1.0,
                occluded=-1,
                score=float(score),
            )
        )
    return objects


def draw_detections(
    image: np.ndarray,
    pred: dict,
    class_names: Sequence[str],
    score_thresh: float = 0.5,
    thickness: int = 2,
) -> np.ndarray:
    """Copy of an RGB uint8 image with the detections at or above ``score_thresh`` drawn (cv2)."""
    canvas = np.ascontiguousarray(image.copy())
    # labels grow with the image's width but stay small beside the boxes (0.35 at 640 px, at most 0.7)
    scale = min(0.7, max(0.3, canvas.shape[1] / 1800))
    thickness = max(1, min(thickness, round(canvas.shape[1] / 640)))
    for box, score, label in zip(pred["boxes"].tolist(), pred["scores"].tolist(), pred["labels"].tolist()):
        if score < score_thresh:
            continue
        name = class_names[int(label)]
        color = class_color(name, int(label))
        x1, y1, x2, y2 = (round(v) for v in box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness)
        text = f"{name} {score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = max(y1, th + base)
        cv2.rectangle(canvas, (x1, ty - th - base), (x1 + tw, ty), color, -1)
        cv2.putText(canvas, text, (x1, ty - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def tensor_to_rgb(image: torch.Tensor, size: tuple[int, int] | None = None) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> RGB uint8, resized to ``size`` = (H, W) if given."""
    array = (image.detach().cpu().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    if size is not None and tuple(array.shape[:2]) != tuple(size):
        array = cv2.resize(array, (int(size[1]), int(size[0])), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(array)


#: the long side a road photo is brought to before detection (the detector rescales again internally: this
#: only bounds memory for very large photos)
DETECTION_MAX_SIDE = 1280


def resize_long_side(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """``image`` with its long side shrunk to ``max_side`` (area interpolation; never enlarged) and the scale."""
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale >= 1.0:
        return image, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


@torch.no_grad()
def detect_objects(model: torch.nn.Module, image: np.ndarray, max_side: int = DETECTION_MAX_SIDE) -> dict:
    """Detections of an RGB uint8 photo or frame of any size (numpy ``boxes`` xyxy in its own pixels, clipped
    to it, ``scores``, ``labels``): what the demo pages and the accident task's own clips detect with."""
    small, scale = resize_long_side(image, max_side)
    pred = detect(model, small)  # the detector letterboxes internally and maps boxes back to `small`
    boxes = pred["boxes"].numpy().astype(np.float64) / scale
    h, w = image.shape[:2]
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    return {"boxes": boxes, "scores": pred["scores"].numpy(), "labels": pred["labels"].numpy().astype(np.int64)}


@torch.no_grad()
def detect(model: torch.nn.Module, image: np.ndarray) -> dict:
    """Run a :class:`RoadDetector` on one RGB uint8 image; boxes come back in its pixel coordinates."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
    was_training = model.training
    model.eval()
    tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)
    device = next(model.parameters()).device
    out = model([tensor.to(device)])[0]
    model.train(was_training)
    return {k: v.cpu() for k, v in out.items()}


class RoadPredictionWriter(BasePredictionWriter):
    """Base of the driving prediction writers: per predicted image, :meth:`write_image` writes its files; the
    epoch ends with one line saying how many images went where. ``score_thresh``: only predictions at or above it
    are drawn."""

    #: what one written image amounts to, for the closing line
    WROTE = "predictions"

    def __init__(self, output_dir: str, class_names: Sequence[str], score_thresh: float = 0.5):
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.class_names = list(class_names)
        self.score_thresh = score_thresh
        self.written = 0

    def write_image(self, image: torch.Tensor, pred: dict) -> None:
        raise NotImplementedError

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0
    ) -> None:
        images = batch[0] if isinstance(batch, (tuple, list)) and len(batch) == 2 else batch
        for image, pred in zip(images, prediction):
            self.write_image(image, pred)
            self.written += 1

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        written = sum(gather_lists([self.written]))  # every rank's, said once
        # through the progress bar (rank 0): printed after it, the line was glued to the bar's last one
        pl_module.print(f"wrote {written} {self.WROTE} to {self.output_dir}")


def original_rgb(image: torch.Tensor, pred: dict, size: tuple[int, int] | None) -> np.ndarray:
    """The RGB picture a prediction is drawn on: the original file when its path is known (and it has ``size``),
    read as the network read it (:func:`~domains.driving.common.read_rgb`: a 16-bit photo stretched, not cut to
    its nearly black high byte; as stored when ``pred["as_stored"]``, as an image with an instance map is), else
    the batch tensor resized back to ``size``."""
    if pred.get("image_path"):
        try:
            rgb = read_rgb(pred["image_path"], ignore_orientation=bool(pred.get("as_stored")))
        except (LabelFormatError, FileNotFoundError):  # gone or changed since it was read: draw what the network saw
            rgb = None
        if rgb is not None and (size is None or rgb.shape[:2] == tuple(size)):
            return rgb
    return tensor_to_rgb(image, size)


def write_rgb(path: Path, rgb: np.ndarray, what: str = "image") -> None:
    """Write an RGB uint8 picture (creating its folder); OSError naming ``path`` when OpenCV cannot."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, rgb, rgb=True, what=what)


class KittiPredictionWriter(RoadPredictionWriter):
    """Writes ``<output_dir>/data/<image_id>.txt`` (KITTI result format) and ``images/<image_id>.png``.

    Every detection goes into the txt file (the evaluation sweeps the score); only those at or above
    ``score_thresh`` are drawn. Images are drawn on the original file when its path is known,
    else on the batch tensor resized back to the original size.
    """

    WROTE = "KITTI result files and images"

    def write_image(self, image: torch.Tensor, pred: dict) -> None:
        image_id = str(pred["image_id"])
        write_kitti_label(
            self.output_dir / "data" / f"{image_id}.txt",
            detections_to_kitti(pred, self.class_names),
            with_score=True,
        )
        rgb = original_rgb(image, pred, pred.get("orig_size"))
        drawn = draw_detections(rgb, pred, self.class_names, self.score_thresh)
        write_rgb(self.output_dir / "images" / f"{image_id}.png", drawn)


__all__ = [
    "KittiPredictionWriter",
    "RoadPredictionWriter",
    "class_color",
    "detect",
    "detections_to_kitti",
    "draw_detections",
    "tensor_to_rgb",
]
