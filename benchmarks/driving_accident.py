"""Fixed-budget accident anticipation on the synthetic scenario clips, scored on held-out clips beside the physics
baselines.

    .venv/bin/python benchmarks/driving_accident.py [--budget-minutes 15] [--threads 2]
        [--config domains/driving/accident/configs/quick.yaml] [--out benchmarks/results/driving_accident.md]

Model and data settings come from the CLI config (``model:`` / ``data:``), so the benchmark measures what
``python -m domains.driving.accident fit -c <config>`` trains. Training runs for the budget
(:class:`shared.budget.FitScheduleToBudget` fits the cosine schedule to it; ``--steps N`` fixes the length
instead, repeatable, the budget a hard stop), validating each epoch and keeping
the weights of the best validation frame AP (as the CLI's checkpoint does); then one validation pass fits the
temperature and the alarm threshold (false alarms on negative validation clips within
``max_false_alarm``), and the test split (clips never seen in training, near misses included) is scored once.

Beside the model, on the same test clips: the box-scale TTC baseline on the ground-truth tracks (what a
monocular tracker could do) and the exact constant-velocity oracle on the ground-truth 3D positions, compared
at the same false-alarm rate (recall and lead time where at most ``--max-false-alarm`` of the negative clips
raise an alarm). Streaming inference: milliseconds per frame of ``AccidentAnticipator.step`` at batch 1.

Targets (issue #18): video AP >= 0.95, frame AP >= 0.85, TTA at 80 % recall >= 1.5 s, near-miss false alarms
<= 10 %, ECE <= 0.05, better than the track TTC baseline at the same false-alarm rate, <= 50 ms per frame.
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

from benchmarks.report import STEPS_HELP, HelpFormatter, add_budget_minutes, json_object


def options() -> argparse.ArgumentParser:
    """The benchmark's options; built before torch is imported, so that ``--help`` answers at once."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_budget_minutes(parser)
    parser.add_argument("--steps", type=int, default=None, help=STEPS_HELP)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument(
        "--config",
        default=str(ROOT / "domains/driving/accident/configs/quick.yaml"),
        help="CLI config whose model: and data: sections are trained",
    )
    parser.add_argument(
        "--synthetic",
        type=json_object,
        default=None,
        help="JSON of generator settings, e.g. '{\"n_clips\": 120}' (default: the config's)",
    )
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config setting, e.g. data.hflip=0.5 or model.network.init_args.motion_lags=[1,5] "
        "(repeatable; the value is read as YAML; default: none)",
    )
    parser.add_argument(
        "--pretrained-backbone",
        default=None,
        help="start from this weight file's backbone (default: the config's)",
    )
    parser.add_argument(
        "--pretrained-prefix", default="", help="key prefix of the backbone in --pretrained-backbone's file"
    )
    parser.add_argument(
        "--freeze-backbone",
        action="store_true",
        help="train with the backbone frozen (default: the config's)",
    )
    parser.add_argument(
        "--max-false-alarm",
        type=float,
        default=0.1,
        help="share of negative test clips allowed to alarm in the same-false-alarm-rate comparison",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation and batches")
    parser.add_argument(
        "--out",
        default=None,
        help="write the markdown table here as well, and its .json (default: printed only)",
    )
    parser.add_argument(
        "--save-checkpoint",
        default=None,
        help="also save the trained, calibrated model as a Lightning checkpoint (default: none)",
    )
    parser.add_argument(
        "--baselines-only",
        action="store_true",
        help="no training: score the physics baselines on every clip of the set, per scenario (how early the "
        "clips' outcome can be told at all)",
    )
    return parser


if __name__ == "__main__":  # options parsed before the imports below (torch: seconds), then main() runs
    from benchmarks.report import run_as_program

    run_as_program(options(), "benchmarks.driving_accident")

import json
import math
import os
import statistics
import time

import numpy as np
import pytorch_lightning as pl
import torch
import yaml

from benchmarks.report import (
    ISSUE_BUDGET_MINUTES,
    command_line,
    fmt,
    memory_note,
    parse_keeping_argv,
    print_and_write,
    run_length,
    smoke_run,
    step_schedule,
    verdict,
)
from domains.driving.accident.__main__ import MONITOR as ACCIDENT_MONITOR
from domains.driving.accident.baselines import (
    constant_acceleration_oracle,
    constant_velocity_oracle,
    frame_ttc,
    track_baseline,
    tracks_to_arrays,
    ttc_risk,
)
from domains.driving.accident.data import AccidentDataModule
from domains.driving.accident.metrics import (
    ClipScores,
    lead_time_at_false_alarm_rate,
    summarize,
    threshold_at_recall,
)
from domains.driving.accident.task import AccidentTask
from domains.driving.synthetic.clips import EGO_FRONT, EGO_LENGTH, EGO_WIDTH
from shared.cli import flat_model_config, instantiate_from_config, quiet_trainer

TARGETS = {
    "video_ap": (">=", 0.95),
    "frame_ap": (">=", 0.85),
    "tta_r80": (">=", 1.5),
    "near_miss_false_alarms": ("<=", 0.10),
    "ece": ("<=", 0.05),
}
TARGET_MS_PER_FRAME = 50.0
METRIC_COLUMNS = (
    ("video_ap", "video AP"),
    ("frame_ap", "frame AP"),
    ("frame_ap_before_contact", "frame AP before contact"),
    ("mtta", "mTTA (s)"),
    ("tta_r80", "TTA@R80 (s)"),
    ("legacy_mtta", "legacy mTTA (s)"),
    ("ap_0.5s", "AP 0.5 s ahead"),
    ("ap_1.0s", "AP 1 s ahead"),
    ("ap_1.5s", "AP 1.5 s ahead"),
    ("near_miss_false_alarms", "near-miss false alarms"),
    ("ece", "ECE"),
    ("brier", "Brier"),
    ("ttc_mae", "TTC error (s, TTC < 2 s)"),
    ("object_hit_rate", "right object"),
)


class KeepBest(pl.Callback):
    """Keeps the weights (and calibration buffers) of the epoch with the best validation ``monitor``: on a few
    hundred clips later epochs overfit, and the CLI's checkpoint picks the best epoch the same way."""

    def __init__(self, monitor: str):
        self.monitor, self.best, self.state, self.epoch = monitor, -math.inf, None, None

    def on_validation_end(self, trainer, pl_module) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None and not trainer.sanity_checking and float(value) > self.best:
            self.best, self.epoch = float(value), trainer.current_epoch
            self.state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


def read_config(path: str) -> tuple[dict, dict]:
    config = yaml.safe_load(Path(path).read_text())
    return dict(config.get("model") or {}), dict(config.get("data") or {})


def apply_overrides(model_kw: dict, data_kw: dict, overrides: list[str]) -> None:
    """``--set`` items ``model.a.b=value`` / ``data.a=value`` (the value read as YAML) into the settings, as the
    CLI's ``--model.a.b value`` would set them."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.split(".")
        if not sep or len(parts) < 2 or parts[0] not in ("model", "data") or not all(parts):
            raise ValueError(f"--set {item!r}: expected model.<key>...=<value> or data.<key>=<value>")
        node = model_kw if parts[0] == "model" else data_kw
        for part in parts[1:-1]:
            if not isinstance(node.setdefault(part, {}), dict):
                raise TypeError(f"--set {item!r}: {part!r} is not a mapping in the config")
            node = node[part]
        node[parts[-1]] = yaml.safe_load(raw)


def read_settings(args) -> tuple[dict, dict]:
    """The config's model and data settings, with ``--set`` overrides and ``--synthetic`` merged into the
    generator's."""
    model_kw, data_kw = read_config(args.config)
    apply_overrides(model_kw, data_kw, args.set or [])
    if args.synthetic:
        data_kw["synthetic"] = {**(data_kw.get("synthetic") or {}), **args.synthetic}
    return model_kw, data_kw


def baseline_records(dm: AccidentDataModule, horizon: float, oracle_kw: dict) -> dict[str, list[ClipScores]]:
    """Per test clip the track-TTC baseline's and the two oracles' frame scores, from the clip's annotation
    JSON (ground-truth tracks and 3D positions)."""
    root = Path(dm.root())
    oracles = {
        "constant-velocity oracle (GT 3D)": constant_velocity_oracle,
        "constant-acceleration oracle (GT 3D)": constant_acceleration_oracle,
    }
    records: dict[str, list[ClipScores]] = {"track TTC (GT boxes)": [], **{name: [] for name in oracles}}
    for clip in dm.splits["test"]:
        meta = json.loads((root / "annotations" / f"{clip.clip_id}.json").read_text())
        arrays = tracks_to_arrays(meta["tracks"], clip.n_frames)
        width = float(meta["size"][0])
        track = track_baseline(arrays["boxes"], arrays["box_valid"], clip.fps, width, horizon=horizon)
        common = {"toa": clip.toa, "fps": clip.fps, "kind": clip.kind, "clip_id": clip.clip_id}
        ttc_true = clip.ttc if clip.ttc is not None else np.full(clip.n_frames, np.nan)
        records["track TTC (GT boxes)"].append(
            ClipScores(scores=track.scores, ttc_pred=track.frame_ttc, ttc_true=ttc_true, **common)
        )
        for name, oracle in oracles.items():
            ttc = oracle(
                arrays["locations"], arrays["dims"], clip.fps, headings=arrays["headings"], **oracle_kw
            )
            ttc = frame_ttc(ttc)
            scores = ttc_risk(np.nan_to_num(ttc, nan=np.inf), horizon)
            records[name].append(ClipScores(scores=scores, ttc_pred=ttc, ttc_true=ttc_true, **common))
    return records


def tta_r80_reading(records: list[ClipScores]) -> dict:
    """Where TTA@R80 is read: the threshold of its recall level and the crash clips' highest risk before
    contact (a model sure of every crash at the end puts that threshold near 1, crossed only late)."""
    peaks = [float(r.scores[: r.toa].max()) for r in records if r.is_crash and r.toa > 0]
    return {
        "threshold": threshold_at_recall(records, 0.8),
        "crash_peak_min": min(peaks) if peaks else math.nan,
        "crash_peak_median": statistics.median(peaks) if peaks else math.nan,
    }


def streaming_ms(task: AccidentTask, dm: AccidentDataModule, frames: int = 50) -> float:
    """Milliseconds per frame of ``step`` at batch 1 (frames already decoded: the network and its state)."""
    model = task.model.eval()
    batch = next(iter(dm.test_dataloader()))
    clip = {k: v[:1] for k, v in batch.items() if torch.is_tensor(v)}
    n = min(frames, clip["boxes"].shape[1])
    state, times = None, []
    for t in range(n):
        start = time.perf_counter()
        _, state = model.step(
            None if "frames" not in clip else clip["frames"][:, t],
            clip["boxes"][:, t],
            clip["box_valid"][:, t],
            state,
            features=None if "features" not in clip else clip["features"][:, t],
            object_features=None if "object_features" not in clip else clip["object_features"][:, t],
        )
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times[1:]) if len(times) > 1 else float("nan")


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    model_kw, data_kw = read_settings(args)
    network = model_kw.setdefault("network", {})
    network.setdefault("init_args", {})["input_size"] = list(data_kw.get("image_size") or (96, 320))
    if args.pretrained_backbone:
        model_kw["pretrained_backbone"] = args.pretrained_backbone
        model_kw["pretrained_prefix"] = args.pretrained_prefix
    if args.freeze_backbone:
        model_kw["freeze_backbone"] = True
    pl.seed_everything(args.seed, verbose=False)  # the training order follows it (shared SplitLoaders)
    dm = AccidentDataModule(**data_kw)
    dm.prepare_data()
    dm.setup("fit")
    task = instantiate_from_config(AccidentTask, model_kw)
    max_steps, fitting = step_schedule(args.steps, 10**6, 60 * args.budget_minutes, every=5, window=20)
    best = KeepBest(ACCIDENT_MONITOR)  # the CLI checkpoint's metric (domains.driving.accident.__main__)
    trainer = quiet_trainer(
        accelerator="cpu",
        max_steps=max_steps,
        max_epochs=-1,
        max_time={"seconds": int(60 * args.budget_minutes * 1.05)},
        callbacks=[*fitting, best],
        gradient_clip_val=1.0,
        limit_val_batches=1.0,  # each epoch: validation clips, for the best epoch (as the CLI's checkpoint)
    )
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    trainer.fit(task, dm)
    train_seconds = time.perf_counter() - start
    if best.state is not None:
        task.load_state_dict(best.state)
    evaluator = quiet_trainer(accelerator="cpu", limit_val_batches=1.0)
    evaluator.validate(task, dm, verbose=False)
    evaluator.test(task, dm, verbose=False)
    if args.save_checkpoint:
        evaluator.save_checkpoint(args.save_checkpoint)  # calibrated: temperature and threshold are buffers
    horizon = task.model.alarm_horizon
    model_records = task.clip_scores_of("test")
    methods = {"model": model_records, **baseline_records(dm, horizon, args.oracle)}
    rows = {}
    for name, records in methods.items():
        summary = summarize(
            records, horizon=horizon, threshold=float(task.model.alarm_threshold) if name == "model" else 0.5
        )
        at_rate = lead_time_at_false_alarm_rate(records, args.max_false_alarm)
        rows[name] = {"summary": summary, "at_rate": at_rate}
    return {
        "rows": rows,
        "steps": trainer.global_step,
        "train_seconds": train_seconds,
        "n_train": len(dm.splits["train"]),
        "n_test": len(dm.splits["test"]),
        "test_kinds": {
            k: sum(c.kind == k for c in dm.splits["test"]) for k in ("crash", "near_miss", "normal")
        },
        "ms_per_frame": streaming_ms(task, dm),
        "tta_r80_reading": tta_r80_reading(model_records),
        "best_epoch": best.epoch,
        "epochs": trainer.current_epoch,
        "temperature": float(task.model.temperature),
        "threshold": float(task.model.alarm_threshold),
        "config": model_kw,
        "data": data_kw,
        "load": (load_before, os.getloadavg()[0]),
    }


def markdown(result: dict, args) -> str:
    cfg = flat_model_config(result["config"])
    model = result["rows"]["model"]["summary"]
    smoke = smoke_run(args.budget_minutes, ISSUE_BUDGET_MINUTES)
    lines = [
        "# Driving accident anticipation benchmark (synthetic scenario clips)",
        "",
        *([smoke, ""] if smoke else []),
        (
            f"Budget {args.budget_minutes:g} min on {args.threads} CPU threads ({memory_note()}): "
            f"{result['steps']} steps of "
            f"{result['data'].get('batch_size')} clip windows of {result['data'].get('clip_length')} frames "
            f"({result['train_seconds'] / 60:.1f} min, {result['epochs']} epochs of {result['n_train']} training "
            f"clips; weights of the best validation epoch, {result['best_epoch']}); load average "
            f"{result['load'][0]:.1f} -> {result['load'][1]:.1f}."
        ),
        run_length(getattr(args, "steps", None), [result["steps"]]),
        (
            f"Model: backbone {cfg.get('backbone')}, temporal {cfg.get('temporal')}, hidden {cfg.get('hidden')}, "
            f"input {result['data'].get('image_size')}, horizons {cfg.get('horizons')}, motion lags "
            f"{cfg.get('motion_lags') or [1]} frames, training clips mirrored with p = "
            f"{result['data'].get('hflip') or 0:g}; calibrated on validation: "
            f"temperature {result['temperature']:.2f}, alarm threshold {result['threshold']:.3f}."
        ),
        (
            f"Test split: {result['n_test']} clips ({result['test_kinds']['crash']} crashes, "
            f"{result['test_kinds']['near_miss']} near misses, {result['test_kinds']['normal']} ordinary), never "
            "seen in training. TTA is the physical lead time (contact - first alarm); the legacy column is the "
            "widely copied formula that scales by the clip length."
        ),
        "",
        "| method | " + " | ".join(label for _, label in METRIC_COLUMNS) + " |",
        "|---|" + "---:|" * len(METRIC_COLUMNS),
    ]
    for name, row in result["rows"].items():
        s = row["summary"]
        lines.append(f"| {name} | " + " | ".join(fmt(s.get(key)) for key, _ in METRIC_COLUMNS) + " |")
    lines += [
        "",
        (
            f"At the same false-alarm rate (at most {args.max_false_alarm:.0%} of negative test clips alarmed, "
            "threshold chosen per method on the test clips):"
        ),
        "",
        "| method | threshold | false alarms | recall | mean lead time (s) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in result["rows"].items():
        a = row["at_rate"]
        lines.append(
            f"| {name} | {a['threshold']:.3f} | {a['false_alarm_rate']:.3f} | {a['recall']:.3f} "
            f"| {fmt(a['lead_time'])} |"
        )
    lines += [
        "",
        f"Streaming inference: {result['ms_per_frame']:.1f} ms per frame (batch 1, `step`).",
    ]
    reading = result.get("tta_r80_reading")
    if reading:
        lines += [
            "",
            (
                f"The model's TTA@R80 is read at threshold {reading['threshold']:.4f}; its highest risk before "
                f"contact per crash clip: lowest {reading['crash_peak_min']:.4f}, median "
                f"{reading['crash_peak_median']:.4f}."
            ),
        ]
    lines += [
        "",
        "Targets:",
        "",
    ]
    recall = model.get("recall_at_threshold")
    for key, (op, target) in TARGETS.items():
        value = model.get(key)
        met = (
            value is not None
            and not math.isnan(value)
            and (value >= target if op == ">=" else value <= target)
        )
        judged = verdict(met, bool(smoke))
        if key == "near_miss_false_alarms" and not smoke and not (recall is not None and recall >= 0.8):
            # no false alarms from a threshold that finds few crashes says nothing: judged where it finds 80 %,
            # the recall TTA@R80 is read at
            judged = f"not judged: the threshold finds {fmt(recall)} of the crash clips, under 0.8"
        lines.append(f"- {key} {op} {target}: {fmt(value)} ({judged})")
    track = result["rows"]["track TTC (GT boxes)"]["at_rate"]
    ours = result["rows"]["model"]["at_rate"]
    better = (ours["recall"], ours["lead_time"] or 0) > (track["recall"], track["lead_time"] or 0)
    lines.append(
        f"- better than the track TTC baseline at the same false-alarm rate: {verdict(better, bool(smoke))}"
    )
    ms = result["ms_per_frame"]
    lines.append(
        f"- streaming <= {TARGET_MS_PER_FRAME:g} ms per frame: {ms:.1f} "
        f"({verdict(ms <= TARGET_MS_PER_FRAME, bool(smoke))})"
    )
    lines += [
        "",
        f"Command: `{command_line('benchmarks/driving_accident.py', getattr(args, 'argv', None))}`",
        "",
    ]
    return "\n".join(lines)


def baselines_markdown(args) -> str:
    """The physics baselines on every clip of the set (all splits: nothing is trained), overall and per
    scenario (that scenario's crashes and near misses with all ordinary clips), at the same false-alarm rate."""
    _, data_kw = read_settings(args)
    dm = AccidentDataModule(**data_kw)
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    dm.splits["test"] = [c for split in ("train", "val", "test") for c in dm.splits[split]]
    root = Path(dm.root())
    scenario = {
        c.clip_id: json.loads((root / "annotations" / f"{c.clip_id}.json").read_text()).get("scenario")
        for c in dm.splits["test"]
    }
    lines = [
        "# Accident clips: how early the outcome can be told (physics baselines, no training)",
        "",
        (
            f"All {len(dm.splits['test'])} clips of {root}; per method, the threshold with at most "
            f"{args.max_false_alarm:.0%} of the negative clips (near misses and ordinary driving) alarmed, chosen "
            "on these clips; per scenario, that scenario's crashes and near misses with every ordinary clip (so "
            "each row has its own threshold, and the overall row is not their mean)."
        ),
        "",
        "| method | clips | threshold | false alarms | recall | mean lead time (s) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, records in baseline_records(dm, 2.0, args.oracle).items():
        groups = {"all": records}
        groups.update(
            {
                sc: [r for r in records if scenario[r.clip_id] == sc or r.kind == "normal"]
                for sc in sorted({scenario[r.clip_id] for r in records if r.kind != "normal"})
            }
        )
        for group, subset in groups.items():
            a = lead_time_at_false_alarm_rate(subset, args.max_false_alarm)
            lines.append(
                f"| {name} | {group} | {a['threshold']:.3f} | {a['false_alarm_rate']:.3f} | {a['recall']:.3f} "
                f"| {fmt(a['lead_time'])} |"
            )
    lines += [
        "",
        f"Command: `{command_line('benchmarks/driving_accident.py', getattr(args, 'argv', None))}`",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_keeping_argv(options(), argv)
    # the oracle's ego footprint is the generator's (contact is defined on it)
    args.oracle = {"ego_half_width": EGO_WIDTH / 2, "ego_front": EGO_FRONT, "ego_length": EGO_LENGTH}
    if args.baselines_only:
        print_and_write(baselines_markdown(args), args.out)
        return 0
    result = run(args)
    print_and_write(markdown(result, args), args.out)
    if args.out:  # the figures behind the table, for other scripts
        Path(args.out).with_suffix(".json").write_text(json.dumps(result, indent=1, default=str))
    return 0

