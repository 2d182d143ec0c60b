"""Photos of another shape than the training frames: squashed to ``data.image_size`` or fitted into it.

    .venv/bin/python benchmarks/other_shapes.py [--images 40] [--out benchmarks/results/other_shapes.md]

The shipped demo detector and road-anomaly segmenter (``apps/weights``), on the first ``--images`` test frames of
their synthetic sets (640x192, the shape they learnt), each cut to other shapes a camera gives: a 4:3 window
(the middle 256x192: a narrower view) and a 16:9 frame (640x360, grey above and below: a taller view). Each
variant goes to the network

* squashed to ``image_size`` (``A.Resize``: how the data modules resized until this benchmark's session), or
* fitted into it keeping its aspect ratio (the data modules' own evaluation transform now:
  ``LongestMaxSize(max_size_hw=image_size)``),

and is scored against its own boxes / masks at its own size: COCO mAP (torchmetrics) for the detector, pixel AP
(``domains.driving.anomaly.metrics``, void excluded) for the segmenter's shipped score. Needs the synthetic
sets (generated on first use by the tasks, or by ``make demo-train``).
"""

from __future__ import annotations

import sys
from pathlib import Path

# run as `python benchmarks/<script>.py`: import this checkout's benchmarks, domains and shared, not the ones
# the venv's editable install points at (which may be another checkout)
ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] != str(ROOT):
    sys.path.insert(0, str(ROOT))

import argparse

from benchmarks.report import HelpFormatter


def options() -> argparse.ArgumentParser:
    """The benchmark's options; built before torch is imported, so that ``--help`` answers at once."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--images", type=int, default=40, help="test frames per task")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--out", default=None, help="also write the table here (default: printed only)")
    return parser


if __name__ == "__main__":  # options parsed before the imports below (torch: seconds), then main() runs
    from benchmarks.report import run_as_program

    run_as_program(options(), "benchmarks.other_shapes")

import time
from datetime import UTC, datetime

import albumentations as A
import cv2
import numpy as np
import torch

from benchmarks.report import command_line, memory_note, parse_keeping_argv, print_and_write
from domains.driving.common import to_image_tensor
from domains.driving.detection.predict import tensor_to_rgb

#: the shapes tried (:func:`cut`)
VARIANTS = ("native 640x192", "4:3 window 256x192", "16:9 frame 640x360")


def cut(kind: str, image: np.ndarray, label: np.ndarray | None, fill_label: int) -> tuple[np.ndarray, np.ndarray | None, int, int]:
    """The frame cut to ``kind``, its label map cut alike (padding: ``fill_label``), and the (dx, dy) its pixels
    moved by."""
    h, w = image.shape[:2]
    if kind.startswith("4:3"):
        width = round(h * 4 / 3)
        x0 = (w - width) // 2
        return image[:, x0 : x0 + width], None if label is None else label[:, x0 : x0 + width], -x0, 0
    if kind.startswith("16:9"):
        height = round(w * 9 / 16)
        top = (height - h) // 2
        out = np.full((height, w, *image.shape[2:]), 128, image.dtype)
        out[top : top + h] = image
        if label is not None:
            padded = np.full((height, w), fill_label, label.dtype)
            padded[top : top + h] = label
            label = padded
        return out, label, 0, top
    return image, label, 0, 0


def resizers(image_size: tuple[int, int]) -> dict:
    """The two ways of sizing a frame for the network: squashed to ``image_size`` or fitted into it."""
    return {"squashed": A.Resize(*image_size), "fitted": A.LongestMaxSize(max_size_hw=image_size)}


@torch.no_grad()
def detection_rows(n_images: int) -> list[tuple[str, str, float]]:
    """(shape, mode, COCO mAP) of the shipped detector."""
    from torchmetrics.detection import MeanAveragePrecision

    from apps.demo_models import load_task, read_card, shipped_path
    from domains.driving.detection.data import DetectionDataModule, DetectionDataset

    card = read_card(shipped_path("driving_detection"))
    task = load_task("driving_detection", shipped_path("driving_detection"))
    data_hp = card["data_hyper_parameters"]
    data = DetectionDataModule(**{**data_hp, "image_size": None, "num_workers": 0})
    data.setup("test")
    frames = DetectionDataset(data.splits["test"][:n_images], data.class_names, class_map=data.class_map)
    sizing = resizers(tuple(data_hp["image_size"]))
    metrics = {(k, m): MeanAveragePrecision(iou_type="bbox", backend="faster_coco_eval") for k in VARIANTS for m in sizing}
    for i in range(len(frames)):
        frame, target = frames[i]
        for kind in VARIANTS:
            image, _, dx, dy = cut(kind, tensor_to_rgb(frame), None, 0)
            h, w = image.shape[:2]
            boxes = target["boxes"].numpy() + np.array([dx, dy, dx, dy], np.float32)
            boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
            boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
            seen = (boxes[:, 2] - boxes[:, 0]) > 0.5 * (target["boxes"][:, 2] - target["boxes"][:, 0]).numpy()
            truth = [{"boxes": torch.from_numpy(boxes[seen]), "labels": target["labels"][torch.from_numpy(seen)]}]
            for mode, step in sizing.items():
                out = step(image=image)["image"]
                pred = task.model([to_image_tensor(out)])[0]
                scale = torch.tensor([w / out.shape[1], h / out.shape[0]] * 2)
                found = {"boxes": pred["boxes"] * scale, "scores": pred["scores"], "labels": pred["labels"]}
                metrics[kind, mode].update([found], truth)
    rows = [(kind, mode, float(metric.compute()["map"])) for (kind, mode), metric in metrics.items()]
    for kind, mode, value in rows:
        print(f"detection {kind} {mode}: mAP {value:.3f}", flush=True)
    return rows


@torch.no_grad()
def anomaly_rows(n_images: int) -> list[tuple[str, str, float]]:
    """(shape, mode, pixel AP) of the shipped road-anomaly segmenter's score."""
    from apps.demo_models import anomaly_data_root, load_task, shipped_path
    from domains.driving.anomaly.data import AnomalyDataset
    from domains.driving.anomaly.metrics import PixelAnomalyAccumulator

    task = load_task("driving_anomaly", shipped_path("driving_anomaly"))
    frames = AnomalyDataset(anomaly_data_root())
    sizing = resizers((192, 640))  # the synthetic frames the segmenter learnt (its config reads them natively)
    pixels = {(k, m): PixelAnomalyAccumulator() for k in VARIANTS for m in sizing}
    for i in range(min(n_images, len(frames))):
        item = frames[i]
        for kind in VARIANTS:
            image, label, _, _ = cut(kind, tensor_to_rgb(item["image"]), item["label"].numpy().astype(np.uint8), 255)
            for mode, step in sizing.items():
                out = step(image=image)["image"]
                score_map = task.model.scores(to_image_tensor(out)[None], [task.score], task.score_smoothing)[task.score]
                score = cv2.resize(score_map[0].numpy(), label.shape[::-1], interpolation=cv2.INTER_LINEAR)
                pixels[kind, mode].update(score[None], label[None].astype(np.int64), name=item["name"])
    rows = [(kind, mode, float(acc.compute()["ap"])) for (kind, mode), acc in pixels.items()]
    for kind, mode, value in rows:
        print(f"anomaly {kind} {mode}: pixel AP {value:.3f}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> str:
    args = parse_keeping_argv(options(), argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    detection, anomaly = detection_rows(args.images), anomaly_rows(args.images)
    lines = [
        f"# Photos of another shape: squashed or fitted ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        (
            f"The shipped demo weights on the first {args.images} synthetic test frames of each task, cut to each "
            f"shape. Command: `{command_line('benchmarks/other_shapes.py', args.argv)}` ({memory_note()}; "
            f"{time.perf_counter() - start:.0f} s)."
        ),
        "",
        "| shape | detector mAP, squashed | detector mAP, fitted | anomaly pixel AP, squashed | anomaly pixel AP, fitted |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind in VARIANTS:
        det = {mode: v for k, mode, v in detection if k == kind}
        ano = {mode: v for k, mode, v in anomaly if k == kind}
        lines.append(
            f"| {kind} | {det['squashed']:.3f} | {det['fitted']:.3f} | {ano['squashed']:.3f} | {ano['fitted']:.3f} |"
        )
    return print_and_write("\n".join(lines) + "\n", args.out)
