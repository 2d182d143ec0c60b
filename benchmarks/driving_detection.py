"""Fixed-budget FCOS training on the synthetic KITTI-layout set, then quality and speed on its test split.

    .venv/bin/python benchmarks/driving_detection.py [--budget-minutes 15] [--threads 2]
        [--config domains/driving/detection/configs/full.yaml] [--out benchmarks/results/driving_detection.md]

Model and data settings come from the CLI config (``model:`` / ``data:``), so the benchmark measures what
``python -m domains.driving.detection fit -c <config>`` trains. The training length is set from the budget: a
few calibration steps measure seconds per step, and ``max_steps`` is chosen so the cosine schedule ends
inside the budget (``max_time`` is a hard stop as well); ``--steps N`` fixes the length instead (repeatable).
No validation runs during training; the test split
(by sequence, never seen in training) is scored once at the end:
COCO mAP50 / mAP / per-class AP (torchmetrics, DontCare boxes as COCO crowd regions), KITTI AP|R40 (Moderate,
also Easy and Hard), training images per second and inference milliseconds per image (batch 1, the model's
default input size, resize + network + NMS, data loading excluded).

Targets: mAP50 >= 0.8 over Car, Pedestrian and Cyclist; inference <= 250 ms per image on 2 CPU cores.
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

from benchmarks.report import HelpFormatter, add_budget_arguments, add_budget_minutes


def options() -> argparse.ArgumentParser:
    """The benchmark's options; built before torch is imported, so that ``--help`` answers at once."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_budget_minutes(parser)
    parser.add_argument(
        "--config",
        default=str(ROOT / "domains/driving/detection/configs/full.yaml"),
        help="CLI config whose model: and data: sections are trained (its pretrained_backbone included)",
    )
    parser.add_argument("--data-path", default=None, help="KITTI root (default: the synthetic set)")
    parser.add_argument(
        "--kitti-min-height-scale",
        type=float,
        default=None,
        help="KITTI difficulty min-height multiplier (default: the config's null: 192 / 375 = 0.512 on the "
        "192-px synthetic frames, 1 on --data-path)",
    )
    parser.add_argument(
        "--repeat-threshold",
        type=float,
        default=None,
        help="repeat-factor sampling threshold for the training images (default: the config's; 0: off)",
    )
    parser.add_argument(
        "--test-batches", type=int, default=None, help="score only this many test batches (default: all)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="write the table here (default: printed only)"
    )
    add_budget_arguments(parser, calibration_steps=4, inference_images=30)
    return parser


if __name__ == "__main__":  # options parsed before the imports below (torch: seconds), then main() runs
    from benchmarks.report import run_as_program

    run_as_program(options(), "benchmarks.driving_detection")

import math
import os

import torch

from benchmarks.detector_budget import read_config, run_and_report, train_and_test, trained_from
from benchmarks.report import (
    ISSUE_BUDGET_MINUTES,
    command_line,
    fmt,
    memory_note,
    parse_keeping_argv,
    run_length,
    smoke_run,
    verdict,
)
from domains.driving.detection.data import DetectionDataModule
from domains.driving.detection.metrics import KITTI_DIFFICULTY, KITTI_IMAGE_HEIGHT, recall_by_height
from domains.driving.detection.task import DetectionTask, kitti_height_scale
from shared.cli import flat_model_config
from shared.device import resolve_accelerator

TARGET_MAP50 = 0.8
TARGET_MS = 250.0


@torch.inference_mode()
def height_recall(task: DetectionTask, dm: DetectionDataModule, device, max_items: int | None = None) -> list[list[dict]]:
    """Recall at IoU 0.5 (score >= 0.05) per class and box height on the test split (its first ``max_items``
    images where given, as ``--test-batches`` scores them), in model-input pixels."""
    model = task.model.to(device).eval()
    dets, gts = [], []
    test = dm.datasets["test"]
    for index in range(len(test) if max_items is None else min(max_items, len(test))):
        image, target = test[index]
        pred = model([image.to(device)])[0]
        dets.append({k: pred[k].cpu() for k in ("boxes", "labels", "scores")})
        gts.append({"boxes": target["boxes"], "labels": target["labels"]})
    return recall_by_height(dets, gts, num_classes=len(task.class_names), iou_threshold=0.5, min_score=0.05)


def run(args) -> dict:
    model_kw, data_kw = read_config(args)
    if args.kitti_min_height_scale is not None:
        model_kw["kitti_min_height_scale"] = args.kitti_min_height_scale
    if args.repeat_threshold is not None:
        data_kw["repeat_threshold"] = args.repeat_threshold or None
    limit = args.test_batches or 1.0
    result, task, dm = train_and_test(
        args, DetectionTask, DetectionDataModule, model_kw, data_kw, limit_test_batches=limit
    )
    _, device = resolve_accelerator(args.accelerator)
    scored = args.test_batches * dm.batch_size if args.test_batches else None
    return {**result, "height_recall": height_recall(task, dm, device, scored), "model_input": task.model.input_size}


def _bin_name(b: dict) -> str:
    return f">= {b['low']:g} px" if math.isinf(b["high"]) else f"{b['low']:g}-{b['high']:g} px"


def markdown(result: dict, args) -> str:
    m = result["metrics"]
    classes = result["config"].get("class_names", ["Car", "Pedestrian", "Cyclist"])
    cfg = flat_model_config(result["config"])
    height_scale = kitti_height_scale(cfg.get("kitti_min_height_scale"), result["data"].get("data_path"))
    moderate_h, easy_h = KITTI_DIFFICULTY["moderate"][0], KITTI_DIFFICULTY["easy"][0]
    smoke = smoke_run(args.budget_minutes, ISSUE_BUDGET_MINUTES)
    map50 = m.get("test/map50")
    map_verdict = verdict(map50 is not None and map50 >= TARGET_MAP50, bool(smoke))
    lines = [
        "# Driving detection benchmark (FCOS, synthetic KITTI layout)",
        "",
        *([smoke, ""] if smoke else []),
        (
            f"Budget {args.budget_minutes:g} min on {result['device']} (precision {args.precision}; "
            f"{memory_note()}), "
            f"trained {trained_from(cfg)}: {result['steps']} steps, {result['train_images']} images "
            f"({result['train_images'] / max(result['n_train'], 1):.1f} epochs of {result['n_train']}), "
            f"{result['train_seconds'] / 60:.1f} min."
        ),
        run_length(getattr(args, "steps", None), [result["steps"]]),
        (
            f"Model: backbone {cfg.get('backbone', 'resnet18')}, input {result['model_input'][0]}x{result['model_input'][1]} "
            f"(HxW box), FPN levels {cfg.get('fpn_levels', 3)} x {cfg.get('fpn_channels', 128)} ch, "
            f"head convs {cfg.get('head_convs', 2)}, lr {cfg.get('lr', 1e-3)}, batch {result['data'].get('batch_size')}, "
            f"repeat-factor sampling {result['data'].get('repeat_threshold') or 'off'}, "
            f"auxiliary semantic loss {cfg.get('semantic_loss_weight') or 'off'}."
        ),
        f"Test split: {result['n_test']} images (by sequence)"
        + (f"; scored: the first {args.test_batches} batches (--test-batches)." if args.test_batches else "."),
        "",
        "| metric | value | target |",
        "|---|---:|---:|",
        f"| mAP50 (COCO, IoU 0.5) | {fmt(m.get('test/map50'))} | >= {TARGET_MAP50}: {map_verdict} |",
        f"| mAP (COCO, IoU 0.5:0.95) | {fmt(m.get('test/map'))} | |",
    ]
    for c in classes:
        lines.append(f"| AP50 {c} | {fmt(m.get(f'test/ap50/{c}'))} | |")
    for c in classes:
        lines.append(f"| AP {c} (0.5:0.95) | {fmt(m.get(f'test/ap/{c}'))} | |")
    for level in ("easy", "moderate", "hard"):
        for c in classes:
            key = f"test/kitti_{level}/{c}"
            if key in m:
                lines.append(f"| KITTI AP\\|R40 {level.capitalize()} {c} | {fmt(m[key])} | |")
    lines += [
        f"| training images / s | {result['images_per_s']:.2f} | |",
        (
            f"| inference ms / image (batch 1, {result['inference_size'][1]}x{result['inference_size'][0]} input) "
            f"| {result['inference_ms']:.1f} | <= {TARGET_MS:.0f}: "
            f"{verdict(result['inference_ms'] <= TARGET_MS, bool(smoke))} |"
        ),
        "",
        f"Load average {result['load_average'][0]:.1f} at the start, {result['load_average'][1]:.1f} at the end "
        f"({os.cpu_count()} CPUs visible)"
        + (
            ": other processes shared the cores, so OpenMP threads stalled and the speeds (and the number of "
            "training steps the budget allowed) are worse than on free cores."
            if max(result["load_average"]) > 1.2 * args.threads
            else "."
        ),
        "",
        "Where AP50 goes missing: recall at IoU 0.5 (any detection of the class with score >= 0.05) by box height",
        (
            "in input pixels, ground-truth count in brackets (the KITTI Moderate / Easy filters keep boxes from "
            f"{moderate_h * height_scale:.1f} / {easy_h * height_scale:.1f} px: KITTI's {moderate_h} / {easy_h} px "
            f"of a {KITTI_IMAGE_HEIGHT}-px frame, scaled to these frames)."
        ),
        "",
        "| class | " + " | ".join(_bin_name(b) for b in result["height_recall"][0]) + " |",
        "|---|" + "---:|" * len(result["height_recall"][0]),
        *(
            f"| {c} | " + " | ".join(f"{fmt(b['recall'])} ({b['n']})" for b in bins) + " |"
            for c, bins in zip(classes, result["height_recall"])
        ),
        "",
        (
            "COCO metrics treat DontCare boxes as crowd regions: a detection that matches no object and "
            "lies in one is ignored (neither hit nor false alarm), one on a real object still counts; KITTI "
            "AP uses the devkit rules (IoU 0.7 Car, 0.5 Pedestrian / Cyclist, vans as Car neighbours, "
            "41-point recall)."
        ),
        "",
        f"Command: `{command_line('benchmarks/driving_detection.py', getattr(args, 'argv', None))}`",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    return run_and_report(parse_keeping_argv(options(), argv), run, markdown)
