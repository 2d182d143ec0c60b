"""Prediction outputs: an instance-id PNG, an overlay PNG and a text list per image.

``<dir>/instances/<id>.png``: uint16, 0 = no object, ``k`` = the k-th line of ``<dir>/instances/<id>.txt``
(``k class score left top right bottom``; a class name's spaces become underscores, as in KITTI files, so
every line splits into 7 fields), instances numbered by descending score, a higher-scored instance winning the
pixels two share. ``<dir>/overlays/<id>.png``: the image with each instance tinted in its class
colour, outlined, boxed and labelled.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from scipy.ndimage import find_objects

from domains.driving.detection.predict import (
    RoadPredictionWriter,
    class_color,
    draw_detections,
    original_rgb,
    write_rgb,
)
from domains.driving.formats import kitti_type_name
from shared.files import written_whole
from shared.images import write_image


def instance_id_map(
    pred: dict, size: tuple[int, int], score_thresh: float = 0.5
) -> tuple[np.ndarray, list[int]]:
    """(H, W) uint16 map of the instances at or above ``score_thresh`` and the prediction index of each id.

    ``pred["masks"]`` is (N, H, W) bool; painted from the lowest score up, so the highest score wins overlaps.
    """
    scores = pred["scores"].detach().cpu()
    masks = pred["masks"].detach().cpu().bool()
    order = [int(i) for i in torch.argsort(scores, descending=True) if float(scores[i]) >= score_thresh]
    if len(order) > np.iinfo(np.uint16).max:
        raise ValueError(f"{len(order)} instances do not fit a uint16 id map")
    ids = np.zeros(size, np.uint16)
    for k in range(len(order), 0, -1):
        ids[masks[order[k - 1]].numpy()] = k
    return ids, order


def draw_instances(
    image: np.ndarray,
    pred: dict,
    class_names: Sequence[str],
    score_thresh: float = 0.5,
    alpha: float = 0.5,
    id_map: tuple[np.ndarray, list[int]] | None = None,
) -> np.ndarray:
    """Copy of an RGB uint8 image with the instances at or above ``score_thresh`` tinted, outlined and boxed.
    ``id_map``: :func:`instance_id_map`'s result when the caller has it already."""
    ids, order = id_map if id_map is not None else instance_id_map(pred, image.shape[:2], score_thresh)
    labels = pred["labels"].tolist()
    colors = [class_color(class_names[int(labels[i])], int(labels[i])) for i in order]
    # one pass over the frame for the tint (a colour per id), and each outline traced inside its own box only:
    # a 40-MP photo with 100 instances stays fast
    palette = np.asarray([(0, 0, 0), *colors], np.float32).reshape(-1, 3)
    canvas = image.astype(np.float32)
    tinted = ids > 0
    canvas[tinted] = (1 - alpha) * canvas[tinted] + alpha * palette[ids[tinted]]
    canvas = canvas.round().astype(np.uint8)
    for k, box in enumerate(find_objects(ids, max_label=len(order)), start=1):
        if box is None:  # an instance whose pixels all went to higher-scored ones
            continue
        inside = (ids[box] == k).astype(np.uint8)
        offset = (box[1].start, box[0].start)
        contours, _ = cv2.findContours(inside, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=offset)
        cv2.drawContours(canvas, contours, -1, colors[k - 1], 1)  # after all tints: no outline is tinted over
    return draw_detections(canvas, pred, class_names, score_thresh, thickness=1)


def instance_list(pred: dict, order: Sequence[int], class_names: Sequence[str]) -> str:
    """The text list of an id map: line ``k`` is ``k class score left top right bottom`` for instance
    ``order[k - 1]`` (a class name's spaces as underscores, :func:`~domains.driving.formats.kitti_type_name`, so
    every line splits into 7 fields). The writer's file and the demo's download."""
    lines = []
    for k, i in enumerate(order, start=1):
        box = " ".join(f"{float(v):.1f}" for v in pred["boxes"][i])
        name = kitti_type_name(class_names[int(pred["labels"][i])])
        lines.append(f"{k} {name} {float(pred['scores'][i]):.4f} {box}")
    return "".join(line + "\n" for line in lines)


class InstancePredictionWriter(RoadPredictionWriter):
    """Writes the id map, its text list and the overlay of every predicted image (see the module docstring)."""

    WROTE = "instance maps and overlays"

    def write_image(self, image: torch.Tensor, pred: dict) -> None:
        image_id = str(pred["image_id"])
        size = tuple(pred["masks"].shape[-2:])
        ids, order = instance_id_map(pred, size, self.score_thresh)
        folder = self.output_dir / "instances"
        folder.mkdir(parents=True, exist_ok=True)
        write_image(folder / f"{image_id}.png", ids, what="instance map")
        with written_whole(folder / f"{image_id}.txt") as tmp:
            tmp.write_text(instance_list(pred, order, self.class_names), encoding="utf-8")
        rgb = original_rgb(image, pred, size)
        overlay = draw_instances(rgb, pred, self.class_names, self.score_thresh, id_map=(ids, order))
        write_rgb(self.output_dir / "overlays" / f"{image_id}.png", overlay, "overlay")


__all__ = ["InstancePredictionWriter", "draw_instances", "instance_id_map"]
