"""Road-anomaly benchmark on the synthetic SegmentMeIfYouCan-layout split: every score, one fixed budget.

    python benchmarks/driving_anomaly.py --budget-minutes 15 --out benchmarks/results/driving_anomaly.md

Protocol (the usual one for post-hoc scores vs. outlier exposure: Meta-OoD and PEBAL fine-tune a trained
segmenter):
1. *Plain* segmenter: cross-entropy on the synthetic KITTI semantic maps for ``(1 - oe_fraction)`` of the
   budget, then a calibration pass (SML and Mahalanobis statistics) on training batches and every post-hoc
   score (msp, max_logit, sml, energy, entropy, mahalanobis) on the anomaly split.
2. *OE* segmenter: the same weights fine-tuned with outlier exposure (random objects pasted on the road,
   outlier head + energy losses with hard-negative mining) for the rest of the budget; scored with
   ``outlier_prob`` and, for reference, the simple scores on it.
Training length is first set in optimiser steps from a timed probe, then re-fitted to the measured step time
while training (``shared.budget.FitScheduleToBudget``), so the cosine schedule ends with the budget;
``--steps N`` fixes it instead (split between the phases as the budget is: repeatable, the budget a hard
stop).
Frames are resized to ``--image-size`` (96x320 by default: the anomaly split's 192x640 halved). Pixel
metrics pool every non-void pixel (AP, FPR95, AUROC); component metrics (sIoU, PPV, mean F1) are given for
the best score; the image-level score is the 99.9th percentile of the pixel score in the predicted road
region. Writes the markdown table to ``--out`` and the raw numbers next to it (``.json``).
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

from benchmarks.report import (
    ACCELERATORS,
    BACKBONES,
    ISSUE_BUDGET_MINUTES,
    STEPS_HELP,
    HelpFormatter,
    json_object,
)


def options(encoders: list[str] | None = None) -> argparse.ArgumentParser:
    """The benchmark's options; built before torch is imported, so that ``--help`` answers at once.
    ``encoders``: the choices of ``--encoder``, the registered backbones, which :func:`parse_args` gives (the
    registry imports torch: a program's first parse leaves that check to main(), in argparse's words); its
    help lists them from :data:`benchmarks.report.BACKBONES`, without torch."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument(
        "--budget-minutes",
        type=float,
        default=ISSUE_BUDGET_MINUTES,
        help="total training time of both phases (with --steps: a hard stop)",
    )
    p.add_argument("--steps", type=int, default=None, help=f"both phases together: {STEPS_HELP}")
    p.add_argument(
        "--out",
        default=None,
        help="write the table (and its .json) here, e.g. benchmarks/results/driving_anomaly.md "
        "(default: printed only)",
    )
    p.add_argument(
        "--at-label-size",
        action="store_true",
        help="score test pixels at each label mask's own size (the CLI's test default); without it, at the "
        "network's input size, as the committed tables were",
    )
    p.add_argument(
        "--encoder",
        default="unet_encoder",
        choices=encoders,
        metavar="NAME",
        help=f"the segmenter's backbone, a registered one: {', '.join(BACKBONES)}",
    )
    p.add_argument(
        "--encoder-kwargs",
        type=json_object,
        default='{"channels": [16, 32, 64, 128]}',
        help="the encoder's arguments as a JSON object",
    )
    p.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        default=(96, 320),
        metavar=("H", "W"),
        help="frames are resized to this for training and evaluation (crop size with --native-crops)",
    )
    p.add_argument(
        "--native-crops",
        action="store_true",
        help="train on native-scale crops of --image-size and evaluate whole frames at native "
        "resolution (objects keep their size; lost to resizing on 2 CPU cores: less context)",
    )
    p.add_argument("--batch-size", type=int, default=8, help="training batch size")
    p.add_argument("--lr", type=float, default=3e-3, help="learning rate of the plain phase")
    p.add_argument(
        "--oe-fraction",
        type=float,
        default=0.7,
        help="share of the budget for OE fine-tuning (0.7 beat 0.5: AP 0.485 vs 0.421 on 2026-12-01)",
    )
    p.add_argument(
        "--class-weighting",
        default="enet",
        choices=("enet", "none"),
        help="cross-entropy class weights for both phases (enet beat none: AP 0.497 vs 0.461, "
        "mIoU 0.587 vs 0.523 on 2026-12-01; without them person / cyclist / pole were never predicted)",
    )
    p.add_argument(
        "--score-smoothing",
        type=float,
        default=1.0,
        help="Gaussian sigma (px) on every score map (1 beat 0: AP 0.510 vs 0.497 on the same model)",
    )
    p.add_argument("--oe-weight", type=float, default=0.5, help="weight of the outlier-exposure loss")
    p.add_argument(
        "--oe-prob", type=float, default=0.5, help="share of OE training images with pasted objects"
    )
    p.add_argument(
        "--oe-hard-fraction",
        type=float,
        default=0.5,
        help="weight of hard-negative mining in the OE loss's inlier half",
    )
    p.add_argument(
        "--repeat-threshold",
        type=float,
        default=None,
        help="repeat-factor sampling of training scenes by the classes they hold (e.g. 0.3; default off)",
    )
    p.add_argument(
        "--outlier-head-channels",
        type=int,
        default=32,
        help="width of the outlier head's full-resolution conv (16: a third of the head's cost)",
    )
    p.add_argument(
        "--oe-objective",
        default="both",
        choices=("extra_logit", "energy", "both"),
        help="the OE losses: the outlier head's extra logit, the energy margin, or both",
    )
    p.add_argument("--oe-lr", type=float, default=None, help="fine-tuning LR (default: lr / 2)")
    p.add_argument(
        "--calibration-batches",
        type=int,
        default=20,
        help="training batches of the calibration pass (SML and Mahalanobis statistics)",
    )
    p.add_argument(
        "--max-test-images", type=int, default=None, help="cap the anomaly split (smoke runs; default: all)"
    )
    p.add_argument(
        "--max-val-images", type=int, default=None, help="cap the validation split (smoke runs; default: all)"
    )
    p.add_argument("--num-workers", type=int, default=1, help="data loader worker processes")
    p.add_argument("--data-path", default=None, help="KITTI-layout root with semantic/ (default: synthetic)")
    p.add_argument("--anomaly-path", default=None, help="SegmentMeIfYouCan-layout root (default: synthetic)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, initialisation and batches")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument(
        "--accelerator", default="auto", choices=ACCELERATORS, help="auto: a GPU when there is one"
    )
    p.add_argument("--precision", default="32-true", help="Lightning precision, e.g. bf16-mixed")
    p.add_argument(
        "--save-weights",
        default=None,
        metavar="DIR",
        help="also write both models' state dicts (plain.pt, oe.pt) here for later analysis (default: none)",
    )
    return p


if __name__ == "__main__":  # options parsed before the imports below (torch: seconds), then main() runs
    from benchmarks.report import run_as_program

    run_as_program(options(), "benchmarks.driving_anomaly")

import copy
import json
import math
import platform
import statistics
import time
import warnings

import albumentations as A
import pytorch_lightning as pl
import torch

from benchmarks.report import (
    check_numbers,
    command_line,
    fmt,
    memory_note,
    named_as_options,
    run_length,
    smoke_run,
    step_schedule,
    verdict,
)
from domains.driving.anomaly.data import SegmentationDataModule
from domains.driving.anomaly.model import AnomalySegmenter
from domains.driving.anomaly.scores import SIMPLE_SCORES
from domains.driving.anomaly.task import AnomalySegmentationTask
from shared.backbones import list_backbones
from shared.cli import quiet_trainer
from shared.device import device_name, resolve_accelerator, synchronize
from shared.optim import adamw, warmup_cosine

TARGET_AP, TARGET_FPR95 = 0.8, 0.1


def parse_args(argv=None) -> argparse.Namespace:
    p = options(list_backbones())
    return check_numbers(p, p.parse_args(argv))


def native_crops(size: tuple[int, int], frame: tuple[int, int], seed: int) -> A.Compose:
    """Training crops of ``size`` (H, W) at the frames' own scale (x0.85-1.2), so objects have the pixel size
    they have at test time, where whole frames (``frame`` H, W) are scored at native resolution."""
    area = size[0] * size[1] / (frame[0] * frame[1])
    if area >= 1:
        raise ValueError(f"crop {size} is not smaller than the {frame} frames: drop --native-crops")
    ratio = size[1] / size[0]
    return A.Compose(
        [
            A.HorizontalFlip(p=0.5),
            A.RandomResizedCrop(
                size=size, scale=(area * 0.85**2, min(1.0, area * 1.2**2)), ratio=(ratio * 0.8, ratio * 1.25)
            ),
        ],
        seed=seed,
    )


def time_per_step(task: AnomalySegmentationTask, loader, steps: int = 6, device="cpu") -> float:
    """Seconds per optimiser step (data loading included) measured on a throwaway copy of the task."""
    probe = copy.deepcopy(task).to(device)
    probe.train()
    opt = torch.optim.AdamW(probe.parameters(), lr=1e-4)
    times, it = [], iter(loader)
    for i in range(steps + 1):
        start = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        loss = probe.training_step(batch, i)
        opt.zero_grad()
        loss.backward()
        opt.step()
        synchronize(device)
        if i:  # the first step pays one-off costs
            times.append(time.perf_counter() - start)
    return statistics.median_high(times)


def phase_steps(steps: int | None, oe_fraction: float) -> tuple[int | None, int | None]:
    """``--steps`` split between the plain and the OE phase as the budget is (at least 1 each); None, None
    for a time-budget run."""
    if not steps:
        return None, None
    plain = max(1, round(steps * (1 - oe_fraction)))
    return plain, max(1, steps - plain)


def step_time(phase: str, task: AnomalySegmentationTask, dm, args, steps: int | None, minutes: float) -> float | None:
    """Seconds per training step of ``phase``, probed, which plans a time-budget run's length; None for a
    fixed-steps one (``steps``), which needs no probe. Either is said."""
    if steps:
        print(f"{phase}: {steps} steps (--steps), at most {minutes:.1f} min", flush=True)
        return None
    sps = time_per_step(task, dm.train_dataloader(), device=resolve_accelerator(args.accelerator)[1])
    print(f"{phase}: {sps:.2f} s/step -> {minutes:.1f} min", flush=True)
    return sps


def fit(
    task: AnomalySegmentationTask,
    dm,
    minutes: float,
    seconds_per_step: float | None,
    args,
    steps: int | None = None,
) -> dict:
    """Train ``task`` for ``steps`` (fixed: repeatable) or, without them, for ``minutes`` from a first plan of
    ``seconds_per_step``; either way ``minutes`` (+ 15 %) is a hard stop."""
    planned = steps or max(1, int(minutes * 60 / seconds_per_step))
    # the probe's guess is only the start: the schedule is re-fitted to the measured step time
    max_steps, fitting = step_schedule(steps, planned, minutes * 60)
    trainer = quiet_trainer(
        devices=1,
        max_steps=max_steps,
        max_time={"seconds": int(minutes * 60 * 1.15) + 30},  # safety net
        callbacks=fitting,
        accelerator=resolve_accelerator(args.accelerator)[0],
        precision=args.precision,
        gradient_clip_val=1.0,
    )
    start = time.perf_counter()
    trainer.fit(task, datamodule=dm)  # ends with the calibration pass (on_fit_end)
    calibration = task.last_calibration["seconds"]
    return {
        "steps": trainer.global_step,
        "planned_steps": planned,
        "minutes": (time.perf_counter() - start - calibration) / 60,
        "calibration_seconds": calibration,
    }


def evaluate(task: AnomalySegmentationTask, dm, args) -> tuple[dict, float]:
    trainer = pl.Trainer(
        accelerator=resolve_accelerator(args.accelerator)[0],
        precision=args.precision,
        devices=1,
        logger=False,
        enable_progress_bar=False,
    )
    miou = trainer.validate(task, datamodule=dm, verbose=False)[0]["val/miou"]
    trainer.test(task, datamodule=dm, verbose=False)
    return task.test_results, float(miou)


@torch.no_grad()
def inference_ms(task: AnomalySegmentationTask, dm, score: str, n: int = 20) -> float:
    """Milliseconds per image (batch 1) for segmentation + the pixel score + the image-level score."""
    dataset = dm.datasets["test"]
    images = [dataset[i]["image"] for i in range(min(n + 2, len(dataset)))]
    device = next(task.parameters()).device
    for image in images[:2]:
        task.analyze(image.to(device), [score])
    start = time.perf_counter()
    for image in images[2:]:
        task.analyze(image.to(device), [score])
    if device.type == "cuda":
        torch.cuda.synchronize()
    if len(images) <= 2:  # all of them were warm-up: nothing was timed (n/a, not "0.0 ms")
        return float("nan")
    return (time.perf_counter() - start) * 1000 / (len(images) - 2)


def main(argv=None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)
    pl.seed_everything(args.seed, workers=True)
    encoder_kwargs = args.encoder_kwargs
    if args.threads:
        torch.set_num_threads(args.threads)
    dm = SegmentationDataModule(
        data_path=args.data_path,
        anomaly_path=args.anomaly_path,
        image_size=None if args.native_crops else tuple(args.image_size),
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        seed=args.seed,
        repeat_threshold=args.repeat_threshold,
    )
    with named_as_options({"--data.anomaly_path": "--anomaly-path", "--data.data_path": "--data-path"}):
        dm.prepare_data()
        dm.setup("fit")
        dm.setup("test")
    if args.native_crops:
        frame = tuple(dm.datasets["train"][0]["image"].shape[-2:])
        dm.datasets["train"].transform = native_crops(tuple(args.image_size), frame, args.seed)
    eval_h, eval_w = dm.datasets["test"][0]["image"].shape[-2:]
    for split, cap in (("test", args.max_test_images), ("val", args.max_val_images)):
        if cap is not None:
            dm.datasets[split].items = dm.datasets[split].items[:cap]
    n_train, n_val, n_test = (len(dm.datasets[k]) for k in ("train", "val", "test"))
    network = {
        "encoder": args.encoder,
        "encoder_kwargs": encoder_kwargs,
        "outlier_head_channels": args.outlier_head_channels,
    }
    common = {
        "calibration_batches": args.calibration_batches,
        "score_smoothing": args.score_smoothing,
        "class_weighting": None if args.class_weighting == "none" else args.class_weighting,
        # the committed tables score at the network's input size (their header says so); --at-label-size scores
        # every pixel of each mask at its own size, as the CLI's test does
        "score_at_label_size": args.at_label_size,
    }

    # ---- phase 1: plain segmenter, post-hoc scores
    plain = AnomalySegmentationTask(
        network=AnomalySegmenter(**network),
        **common,
        oe_weight=0.0,
        score="msp",
        optimizer=adamw(args.lr),
        lr_scheduler=warmup_cosine(20),
    )
    budget_plain = args.budget_minutes * (1 - args.oe_fraction)
    budget_oe = args.budget_minutes * args.oe_fraction
    steps_plain, steps_oe = phase_steps(args.steps, args.oe_fraction)
    sps = step_time("plain", plain, dm, args, steps_plain, budget_plain)
    fit_plain = fit(plain, dm, budget_plain, sps, args, steps_plain)
    res_plain, miou_plain = evaluate(plain, dm, args)

    # ---- phase 2: fine-tune the same weights with outlier exposure
    if plain.class_weighting == "enet":  # the same training data: keep the weights phase 1 counted
        common["class_weighting"] = plain.ce_weight.tolist()
    oe = AnomalySegmentationTask(
        network=AnomalySegmenter(**network, oe_objective=args.oe_objective),
        **common,
        oe_weight=args.oe_weight,
        oe_prob=args.oe_prob,
        oe_hard_fraction=args.oe_hard_fraction,
        score="outlier_prob",
        optimizer=adamw(args.oe_lr or args.lr / 2),
        lr_scheduler=warmup_cosine(10),
    )
    oe.load_state_dict(plain.state_dict())
    sps_oe = step_time("oe", oe, dm, args, steps_oe, budget_oe)
    fit_oe = fit(oe, dm, budget_oe, sps_oe, args, steps_oe)
    res_oe, miou_oe = evaluate(oe, dm, args)
    if args.save_weights:
        weights_dir = Path(args.save_weights)
        weights_dir.mkdir(parents=True, exist_ok=True)
        torch.save(plain.state_dict(), weights_dir / "plain.pt")
        torch.save(oe.state_dict(), weights_dir / "oe.pt")

    rows = []
    for model_name, res, task in (("plain", res_plain, plain), ("plain + OE fine-tune", res_oe, oe)):
        for score, m in res["pixel"].items():
            rows.append((model_name, score, m, res["image_auroc"][score], task))
    best = max(rows, key=lambda r: (r[2]["ap"], -r[2]["fpr95"]))
    best_model, best_score, best_task = best[0], best[1], best[4]
    best_res = res_plain if best_task is plain else res_oe
    if best_res.get("score") != best_score or "component" not in best_res:
        best_task.score = best_score
        _, _ = evaluate(best_task, dm, args)
        best_res = best_task.test_results
    comp = best_res["component"]
    best_task.to(resolve_accelerator(args.accelerator)[1])  # a Trainer hands the model back on the CPU
    ms = inference_ms(best_task, dm, best_score)
    simple_best = max(
        (r for r in rows if r[0] == "plain" and r[1] in SIMPLE_SCORES), key=lambda r: r[2]["ap"]
    )

    device = device_name(resolve_accelerator(args.accelerator)[1])
    if not args.native_crops:
        geometry = f"frames resized to {eval_h}x{eval_w} for training and evaluation"
    else:
        geometry = (
            f"trained on {args.image_size[0]}x{args.image_size[1]} crops at native scale, "
            f"evaluated on whole {eval_h}x{eval_w} frames"
        )
    if args.at_label_size:
        geometry += "; test pixels scored at each label mask's own size"
    met = best[2]["ap"] >= TARGET_AP and best[2]["fpr95"] <= TARGET_FPR95
    smoke = smoke_run(args.budget_minutes, ISSUE_BUDGET_MINUTES)
    lines = [
        "# Road anomaly benchmark (synthetic SegmentMeIfYouCan-layout split)",
        "",
        *([smoke, ""] if smoke else []),
        (
            f"`{command_line('benchmarks/driving_anomaly.py', argv)}` on "
            f"{device}, torch {torch.__version__} ({torch.get_num_threads()} threads), Python "
            f"{platform.python_version()}; {memory_note()}."
        ),
        (
            f"Encoder `{args.encoder}` {encoder_kwargs}; {geometry}; batch {args.batch_size}. Data: {n_train} train "
            f"/ {n_val} val synthetic KITTI scenes (split by sequence), {n_test} anomaly-split images "
            f"({sum(best_res['image_scores']['targets'])} with anomalies)."
        ),
        (
            f"Training: plain {fit_plain['steps']} steps in {fit_plain['minutes']:.1f} min, then OE fine-tuning "
            f"({args.oe_objective}, weight {args.oe_weight}, outlier head {args.outlier_head_channels} channels) "
            f"{fit_oe['steps']} steps in {fit_oe['minutes']:.1f} min; repeat-factor sampling "
            f"{args.repeat_threshold or 'off'}."
        ),
        run_length(
            args.steps,
            [fit_plain["steps"], fit_oe["steps"]],
            [fit_plain["planned_steps"], fit_oe["planned_steps"]],
        ),
        "",
        (
            f"Target: AP >= {TARGET_AP}, FPR95 <= {TARGET_FPR95}. Pixel metrics pool every non-void pixel of the "
            "split; image AUROC ranks frames by the 99.9th percentile of the pixel score in the predicted road."
        ),
        "",
        "## Pixel-level anomaly metrics",
        "",
        "| model | score | AP | FPR95 | AUROC | AP to target | image AUROC |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for model_name, score, m, img_auroc, _ in rows:
        gap = TARGET_AP - m["ap"]
        mark = " **(best)**" if (model_name, score) == (best_model, best_score) else ""
        lines.append(
            f"| {model_name} | `{score}`{mark} | {fmt(m['ap'])} | {fmt(m['fpr95'])} | {fmt(m['auroc'])} | "
            f"{'met' if gap <= 0 else f'-{gap:.3f}'} | {fmt(img_auroc)} |"
        )
    thr = comp["best_f1_threshold"]
    lines += [
        "",
        (
            f"Best simple post-hoc score: `{simple_best[1]}` (AP {fmt(simple_best[2]['ap'])}, "
            f"FPR95 {fmt(simple_best[2]['fpr95'])}); best overall: `{best_score}` on the {best_model} model "
            f"(AP {fmt(best[2]['ap'])}, FPR95 {fmt(best[2]['fpr95'])}): target {verdict(met, bool(smoke))}."
        ),
        "",
        f"## Component metrics (`{best_score}`, {best_model})",
        "",
        "| sIoU (gt) | PPV | mean F1 | pixel threshold (best F1) | pixel F1 | GT / predicted components |",
        "|---:|---:|---:|---:|---:|---:|",
        (
            f"| {fmt(comp['sIoU_gt'])} | {fmt(comp['PPV'])} | {fmt(comp['mean_F1'])} | {thr['threshold']:.4g} | "
            f"{fmt(thr['f1'])} | {comp['num_gt_components']} / {comp['num_pred_components']} |"
        ),
        "",
        "## Segmenter and speed",
        "",
        "| model | val mIoU (12 classes) | train steps | train min | calibration s |",
        "|---|---:|---:|---:|---:|",
        (
            f"| plain | {fmt(miou_plain)} | {fit_plain['steps']} | {fit_plain['minutes']:.1f} | "
            f"{fit_plain['calibration_seconds']:.0f} |"
        ),
        (
            f"| plain + OE fine-tune | {fmt(miou_oe)} | {fit_plain['steps']} + {fit_oe['steps']} | "
            f"{fit_plain['minutes'] + fit_oe['minutes']:.1f} | {fit_oe['calibration_seconds']:.0f} |"
        ),
        "",
        (
            f"Inference (`{best_score}`, batch 1, segmentation + pixel score + image score): **{fmt(ms, 1)} ms per "
            f"{eval_h}x{eval_w} image** on {device}."
        ),
        "",
    ]
    print("\n".join(lines))
    if not args.out:  # a committed table is replaced only when asked for by name
        return 0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    raw = {
        "args": vars(args),
        "rows": [
            {
                "model": r[0],
                "score": r[1],
                "image_auroc": r[3],
                **{k: r[2][k] for k in ("ap", "auroc", "fpr95", "num_positive", "num_negative")},
            }
            for r in rows
        ],
        "best": {"model": best_model, "score": best_score},
        "component": {k: v for k, v in comp.items() if not isinstance(v, list)},
        "miou": {"plain": miou_plain, "oe": miou_oe},
        "fit": {"plain": fit_plain, "oe": fit_oe},
        "inference_ms": None if math.isnan(ms) else ms,
    }
    out.with_suffix(".json").write_text(json.dumps(raw, indent=1, default=str))
    print(f"written to {out}")
    return 0


