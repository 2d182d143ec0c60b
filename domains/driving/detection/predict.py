"""Prediction outputs: KITTI result files (16 fields, with score), images with the boxes drawn and, for data
read from a COCO JSON, a COCO results file (``detections.json``, what pycocotools' ``COCO.loadRes`` reads).

``KittiPredictionWriter`` is a Lightning ``BasePredictionWriter``; the plain functions
(:func:`detections_to_kitti`, :func:`draw_detections`, :func:`detect`) serve scripts and the Streamlit demo.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from pytorch_lightning.utilities import rank_zero_warn

from domains.driving.common import data_source, read_rgb
from domains.driving.formats import (
    LabelFormatError,
    ObjectLabel,
    coco_images_root,
    kitti_type_name,
    write_kitti_label,
)
from shared.cli_help import predicted_split_note
from shared.files import written_whole
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
    checked_rgb(image)  # before resizing: cv2 would resize a float or uint16 image without a word
    small, scale = resize_long_side(image, max_side)
    pred = detect(model, small)  # the detector letterboxes internally and maps boxes back to `small`
    boxes = pred["boxes"].numpy().astype(np.float64) / scale
    h, w = image.shape[:2]
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    return {"boxes": boxes, "scores": pred["scores"].numpy(), "labels": pred["labels"].numpy().astype(np.int64)}


def checked_rgb(image: np.ndarray) -> np.ndarray:
    """``image`` if it is an RGB uint8 (H, W, 3) array; else a ValueError naming its shape or dtype.

    Only uint8 is taken: dividing by 255 turned a float image in [0, 1] nearly black and a uint16 one up to 257,
    and both still gave (wrong) detections. Other depths are the caller's to map to 0..255: a float in [0, 1]
    with ``(image * 255).round().astype(np.uint8)``, a 16-bit one with :func:`shared.images.stretch_to_uint8`
    (what :func:`~domains.driving.common.read_rgb` does when it reads one)."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", type(image).__name__)
        raise ValueError(f"expected an RGB image as a numpy (H, W, 3) array, got {shape}")
    if image.dtype != np.uint8:
        raise ValueError(
            f"expected an RGB uint8 image (0..255), got dtype {image.dtype}: bring a float image in [0, 1] to "
            "uint8 with (image * 255).round().astype(np.uint8), a 16-bit one with "
            "shared.images.stretch_to_uint8(image)"
        )
    return image


@torch.no_grad()
def detect(model: torch.nn.Module, image: np.ndarray) -> dict:
    """Run a :class:`RoadDetector` on one RGB uint8 image (:func:`checked_rgb`); boxes come back in its pixel
    coordinates. The model's train / eval mode is as it was afterwards, also when the forward pass fails."""
    checked_rgb(image)
    tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = model([tensor.to(device)])[0]
    finally:
        model.train(was_training)
    return {k: v.cpu() for k, v in out.items()}


class RoadPredictionWriter(BasePredictionWriter):
    """Base of the driving prediction writers: per predicted image, :meth:`write_image` writes its files; the
    epoch ends with one line saying how many images went where (and, without ``--data.predict_path``, that they
    were the test split's: :func:`shared.cli_help.predicted_split_note`). Only predictions at or above
    ``score_thresh`` are drawn: the module's ``predict_score_thresh``, read when predicting starts (a detector's
    fitted operating point is loaded with its checkpoint, after the task built its callbacks)."""

    #: what one written image amounts to, for the closing line
    WROTE = "predictions"
    #: what is drawn from until predicting starts (a writer used on its own)
    score_thresh = 0.5

    def __init__(self, output_dir: str, class_names: Sequence[str]):
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.class_names = list(class_names)
        self.written = 0

    def on_predict_start(self, trainer, pl_module) -> None:
        super().on_predict_start(trainer, pl_module)
        self.score_thresh = float(pl_module.predict_score_thresh)

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
        which = predicted_split_note(getattr(trainer, "datamodule", None), "images")
        pl_module.print(f"wrote {written} {self.WROTE}{which} to {self.output_dir}")


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


#: the COCO results file ``predict`` writes beside ``data/`` and ``images/`` for data read from a COCO JSON
COCO_RESULTS = "detections.json"


def coco_result_ids(
    json_path: str | Path, class_names: Sequence[str], images_root: str | Path | None = None
) -> tuple[dict[str, int], list[int | None]]:
    """The source ids a COCO results file of ``json_path``'s images needs: image file -> image id (the file as
    :func:`~domains.driving.formats.read_coco` names its records' ``image_path``: the images root it resolves
    from ``images_root``, the JSON's folder or COCO's ``val2017/`` beside ``annotations/``, / ``file_name``;
    its records keep no ids) and, per class, the id of the one category of its name (None when no category, or
    several, has it). The JSON is read as the data module read it at setup (checked there)."""
    path = Path(json_path)
    data = json.loads(path.read_text(encoding="utf-8"))
    root = coco_images_root(path, data["images"], None if images_root is None else Path(images_root))
    images = {str(root / str(image["file_name"])): int(image["id"]) for image in data["images"]}
    by_name: dict[str, list[int]] = {}
    for category in data["categories"]:
        by_name.setdefault(str(category["name"]), []).append(int(category["id"]))
    return images, [ids[0] if len(ids := by_name.get(name, [])) == 1 else None for name in class_names]


def detections_to_coco(pred: dict, image_id: int, category_ids: Sequence[int | None]) -> list[dict]:
    """One COCO result (``image_id``, ``category_id``, ``bbox`` [x, y, width, height], ``score``) per
    detection (boxes xyxy in the image's own pixels); classes without a category id are left out."""
    results = []
    for box, score, label in zip(pred["boxes"].tolist(), pred["scores"].tolist(), pred["labels"].tolist()):
        category = category_ids[int(label)]
        if category is not None:
            x1, y1, x2, y2 = box
            bbox = [x1, y1, x2 - x1, y2 - y1]
            results.append({"image_id": image_id, "category_id": category, "bbox": bbox, "score": score})
    return results


class KittiPredictionWriter(RoadPredictionWriter):
    """Writes ``<output_dir>/data/<image_id>.txt`` (KITTI result format) and ``images/<image_id>.png``; on
    data read from a COCO JSON (``data.data_format coco``, its own split, not ``predict_path``) also
    ``detections.json``: every detection as a COCO result with the JSON's image and category ids (a class is
    matched to the category of its name), for ``COCO.loadRes`` and COCOeval against that JSON. Other formats
    get no results file: their images have no COCO ids to score against (convert the labels with
    ``domains.driving.convert --to coco`` and train on the JSON for one).

    Every detection goes into the txt and json files (the evaluation sweeps the score); only those at or above
    ``score_thresh`` are drawn. Images are drawn on the original file when its path is known,
    else on the batch tensor resized back to the original size.
    """

    WROTE = "KITTI result files and images"

    def __init__(self, output_dir: str, class_names: Sequence[str]):
        super().__init__(output_dir, class_names)
        self.coco_ids: tuple[dict[str, int], list[int | None]] | None = None  # set when predicting COCO data
        self.coco_source: Path | None = None  # the COCO JSON those ids are read from
        self.coco_results: dict[int, list[dict]] = {}

    def on_predict_start(self, trainer, pl_module) -> None:
        super().on_predict_start(trainer, pl_module)
        dm = trainer.datamodule
        no_ids = getattr(dm, "data_format", None) != "coco" or getattr(dm, "predict_path", None) is not None
        source = None if no_ids else data_source(dm.data_path, ("*.json",))  # own photos: not in the JSON
        images_root = getattr(dm, "images_root", None)  # where the data module read the images from
        self.coco_ids = None if no_ids else coco_result_ids(source, self.class_names, images_root)
        self.coco_source = source
        self.coco_results = {}
        categories = self.coco_ids[1] if self.coco_ids is not None else []
        missing = [name for name, category in zip(self.class_names, categories) if category is None]
        if missing:
            rank_zero_warn(
                f"{COCO_RESULTS}: classes {missing} are no single category of {source} (by name): their "
                "detections are left out of it (the KITTI files keep them)"
            )

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
        if self.coco_ids is not None:
            images, categories = self.coco_ids
            coco_id = images.get(str(pred["image_path"]))
            if coco_id is None:
                raise ValueError(
                    f"{COCO_RESULTS}: predicted image {pred['image_path']} is none of the images of the COCO "
                    f"JSON {self.coco_source} (its file names resolved against the images root the data "
                    "module read them from)"
                )
            self.coco_results[coco_id] = detections_to_coco(pred, coco_id, categories)

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        super().on_predict_epoch_end(trainer, pl_module)
        if self.coco_ids is None:
            return
        by_image = dict(gather_lists(list(self.coco_results.items())))  # every rank's (a padded rank repeats)
        if trainer.is_global_zero:
            results = [r for coco_id in sorted(by_image) for r in by_image[coco_id]]
            path = self.output_dir / COCO_RESULTS
            path.parent.mkdir(parents=True, exist_ok=True)
            with written_whole(path) as tmp:
                tmp.write_text(json.dumps(results), encoding="utf-8")
            pl_module.print(f"wrote {len(results)} COCO results of {len(by_image)} images to {path}")


__all__ = [
    "COCO_RESULTS",
    "KittiPredictionWriter",
    "RoadPredictionWriter",
    "checked_rgb",
    "class_color",
    "coco_result_ids",
    "detect",
    "detections_to_coco",
    "detections_to_kitti",
    "draw_detections",
    "tensor_to_rgb",
]
