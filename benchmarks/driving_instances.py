"""Fixed-budget Mask R-CNN training on the synthetic KITTI-layout set, then mask / box AP and speed on its test split.

    .venv/bin/python benchmarks/driving_instances.py [--budget-minutes 15] [--threads 2]
        [--config domains/driving/instances/configs/full.yaml] [--out benchmarks/results/driving_instances.md]

Model and data settings come from the CLI config (``model:`` / ``data:``), so the benchmark measures what
``python -m domains.driving.instances fit -c <config>`` trains. The run length follows the budget: a few
calibration steps give a first step count, and :class:`shared.budget.FitScheduleToBudget` re-fits it (and the
cosine schedule) to the measured step time while training; ``max_time`` is a hard stop as well. No validation
runs during training; the test split (by sequence, never seen in training) is scored once at the end: COCO mask
AP50 per class and mean, the same model's box AP50 beside it, and inference milliseconds per image (batch 1,
resize + network + NMS + mask pasting, data loading excluded).

Targets (issue #22): Car mask AP50 >= 0.6, and every class's mask AP50 within 0.1 of its box AP50.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from domains.driving.instances.data import InstanceDataModule
from domains.driving.instances.task import InstanceTask
from shared.budget import FitScheduleToBudget
from shared.cli import flat_model_config, instantiate_from_config
from shared.device import ACCELERATORS, device_name, resolve_accelerator, stopwatch
from shared.optim import warmup_cosine

TARGET_CAR_MASK_AP50 = 0.6
TARGET_MASK_BOX_GAP = 0.1


def _on(device, images, targets):
    moved = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
    return [image.to(device) for image in images], moved


def calibrate_seconds_per_step(task: InstanceTask, dm: InstanceDataModule, steps: int, device) -> float:
    """Median seconds of a training step (forward, backward, AdamW) on real batches, first step excluded; the
    weights are restored afterwards, so calibration is not training."""
    model = task.model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    times, loader = [], iter(dm.train_dataloader())
    for _ in range(steps + 1):
        images, targets = _on(device, *next(loader))
        with stopwatch(device) as elapsed:
            losses = model(images, targets)
            opt.zero_grad()
            sum(losses.values()).backward()
            opt.step()
        times.append(elapsed())
    model.load_state_dict(state)
    return statistics.median(times[1:])


@torch.inference_mode()
def inference_ms(task: InstanceTask, dm: InstanceDataModule, n: int, device) -> tuple[float, tuple[int, int]]:
    """Mean milliseconds per image at batch 1 on the test images (2 warm-up images not counted)."""
    model = task.model.to(device).eval()
    dataset = dm.datasets["test"]
    times, size = [], None
    for i in range(min(n + 2, len(dataset))):
        image, _ = dataset[i]
        size = tuple(image.shape[-2:])
        image = image.to(device)
        with stopwatch(device) as elapsed:
            model([image])
        if i >= 2:
            times.append(elapsed())
    return (1000 * statistics.mean(times) if times else float("nan")), size


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    accelerator, device = resolve_accelerator(args.accelerator)
    pl.seed_everything(args.seed, workers=True)
    config = yaml.safe_load(Path(args.config).read_text())
    model_kw = dict(config.get("model") or {})
    data_kw = dict(config.get("data") or {})
    if args.data_path:
        data_kw["data_path"] = args.data_path
    data_kw["num_workers"] = args.num_workers
    if args.batch_size:
        data_kw["batch_size"] = args.batch_size
    if args.max_items:
        data_kw["max_items"] = args.max_items
    model_kw.pop("predict_dir", None)
    if args.pretrained_backbone:
        model_kw["pretrained_backbone"] = args.pretrained_backbone
        model_kw["pretrained_prefix"] = args.pretrained_prefix
    dm = InstanceDataModule(**data_kw)
    dm.prepare_data()
    dm.setup("fit")
    # what the CLI links from the data module: the class list and its length
    model_kw["class_names"] = list(dm.class_names)
    model_kw["network"]["init_args"]["num_classes"] = len(dm.class_names)
    task = instantiate_from_config(InstanceTask, model_kw)

    load_before = os.getloadavg()[0]
    budget_s = 60 * args.budget_minutes
    sec_per_step = calibrate_seconds_per_step(task, dm, args.calibration_steps, device)
    max_steps = max(1, int(args.budget_fraction * budget_s / sec_per_step))
    print(f"calibration: {sec_per_step:.2f} s/step (batch {dm.batch_size}) -> first plan {max_steps} steps")
    warmup = getattr(task.make_lr_scheduler, "keywords", {}).get("warmup_steps", 0)
    if warmup >= max_steps:  # a short budget: warm up for a tenth of it
        task.make_lr_scheduler = warmup_cosine(max(0, max_steps // 10))
    trainer = pl.Trainer(
        max_steps=max_steps,
        max_epochs=-1,
        max_time={"seconds": budget_s},
        accelerator=accelerator,
        devices=1,
        precision=args.precision,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        gradient_clip_val=1.0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=args.progress,
        callbacks=[FitScheduleToBudget(args.budget_fraction * budget_s, every=5, window=20)],
        log_every_n_steps=10,
    )
    start = time.perf_counter()
    trainer.fit(task, datamodule=dm)
    train_wall = time.perf_counter() - start
    if args.save_checkpoint:
        args.save_checkpoint.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(args.save_checkpoint)
        print(f"saved the trained model to {args.save_checkpoint}")
    ms, size = inference_ms(task, dm, args.inference_images, device)
    test = pl.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=args.precision,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        limit_test_batches=args.test_batches or 1.0,
    )
    (metrics,) = test.test(task, datamodule=dm, verbose=False)
    return {
        "metrics": {k: float(v) for k, v in metrics.items()},
        "steps": trainer.global_step,
        "train_seconds": train_wall,
        "inference_ms": ms,
        "inference_size": size,
        "config": model_kw,
        "data": data_kw,
        "n_train": len(dm.datasets["train"]),
        "n_test": len(dm.datasets["test"]),
        "load_average": (load_before, os.getloadavg()[0]),
        "device": device_name(device),
    }


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def markdown(result: dict, args) -> str:
    m, cfg = result["metrics"], flat_model_config(result["config"])
    classes = result["data"].get("class_names", ["Car", "Pedestrian", "Cyclist"])
    batch = result["data"].get("batch_size")
    lines = [
        "# Driving instance segmentation benchmark (Mask R-CNN, synthetic KITTI layout)",
        "",
        (
            f"Budget {args.budget_minutes:g} min on {result['device']} (precision {args.precision}), trained "
            f"{'with the backbone of ' + str(cfg['pretrained_backbone']) if cfg.get('pretrained_backbone') else 'from scratch'}: "
            f"{result['steps']} steps of {batch} images ({result['steps'] * batch / max(result['n_train'], 1):.1f} "
            f"epochs of {result['n_train']}), {result['train_seconds'] / 60:.1f} min."
        ),
        (
            f"Model: backbone {cfg.get('backbone')}, input {cfg.get('input_size')}, FPN {cfg.get('fpn_levels')} levels "
            f"x {cfg.get('fpn_channels')} ch, {cfg.get('rois_per_image')} RoIs / image, mask head "
            f"{cfg.get('mask_head_convs')} x {cfg.get('mask_head_channels')} ch, lr {cfg.get('lr')}."
        ),
        f"Test split: {result['n_test']} images (by sequence)"
        + (
            f"; scored: the first {args.test_batches} batches (--test-batches)." if args.test_batches else "."
        ),
        "",
        "| class | mask AP50 | box AP50 | mask - box | mask AP (0.5:0.95) |",
        "|---|---:|---:|---:|---:|",
    ]
    for c in classes:
        mask, box = m.get(f"test/mask_ap50/{c}"), m.get(f"test/box_ap50/{c}")
        gap = None if mask is None or box is None else mask - box
        lines.append(
            f"| {c} | {_fmt(mask)} | {_fmt(box)} | {_fmt(gap)} | {_fmt(m.get(f'test/mask_ap/{c}'))} |"
        )
    mean_gap = m.get("test/mask_map50", math.nan) - m.get("test/box_map50", math.nan)
    mean_row = (
        f"| **mean** | {_fmt(m.get('test/mask_map50'))} | {_fmt(m.get('test/box_map50'))} | {_fmt(mean_gap)} | "
        f"{_fmt(m.get('test/mask_map'))} |"
    )
    speed = (
        f"Inference: {result['inference_ms']:.1f} ms / image (batch 1, {result['inference_size'][1]}x"
        f"{result['inference_size'][0]} input). Detections mostly inside DontCare regions dropped: "
        f"{int(m.get('test/ignored_detections', 0))}."
    )
    targets = (
        f"Targets: Car mask AP50 >= {TARGET_CAR_MASK_AP50}; every class's mask AP50 within "
        f"{TARGET_MASK_BOX_GAP} of its box AP50."
    )
    load = (
        f"Load average {result['load_average'][0]:.1f} at the start, {result['load_average'][1]:.1f} at the end "
        f"({os.cpu_count()} CPUs visible)."
    )
    lines += [mean_row, "", speed, "", targets, "", load]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget-minutes", "--minutes", type=float, default=15.0)
    parser.add_argument("--config", default=str(ROOT / "domains/driving/instances/configs/full.yaml"))
    parser.add_argument(
        "--data-path", default=None, help="KITTI root with instance/ maps (default: synthetic)"
    )
    parser.add_argument(
        "--pretrained-backbone",
        default=None,
        help="start from this checkpoint's backbone (e.g. a trained road detector's .ckpt)",
    )
    parser.add_argument("--pretrained-prefix", default="model.detector.backbone.body.")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--accelerator", default="auto", choices=ACCELERATORS)
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--max-items", type=int, default=None, help="read only this many images (dry runs)")
    parser.add_argument("--test-batches", type=int, default=None, help="score only this many test batches")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calibration-steps", type=int, default=3)
    parser.add_argument("--budget-fraction", type=float, default=0.9)
    parser.add_argument("--inference-images", type=int, default=20)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--save-checkpoint", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/driving_instances.md")
    args = parser.parse_args(argv)
    result = run(args)
    table = markdown(result, args)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)
        print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
