"""Train every task's GPU recipe side by side on one GPU under one wall-clock deadline, test each, and write a
markdown table (and each run's weights, for the demo) to ``--out-dir``.

    python -m benchmarks.gpu_recipes --out-dir gpu_runs --fit-seconds 420        # on a GPU machine
    python -m benchmarks.gpu_recipes --out-dir /tmp/smoke --smoke                # CPU dry run, tiny budgets

Each run is the suite's own CLI (``python -m domains.<...> fit -c <config>`` with the task's GPU config) in its
own process, with :class:`shared.budget.FitScheduleToBudget` so that the cosine schedule ends when the budget
does; then ``test`` on the written ``last.ckpt``. Runs start as soon as their data set exists (the synthetic sets
are generated first, one process per domain) and all fits' schedules end at the same deadline (validation and
calibration come on top; ``--trainer.max_time`` stops a fit at 1.3x its budget). Several small runs share a
large GPU well: none of them fills it alone.
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

DRIVING = "domains/driving"
MEDICAL = "domains/medical/configs"
HPU_DEMO_KWARGS = (
    "{channels: [16, 32, 64, 64, 64, 64, 64, 64], latent_channels: [1, 1, 1, 1], blocks_per_level: 1, "
    "convs_per_block: 2, norm: batch}"
)

#: name -> (CLI module, configs, extra arguments, data set it needs)
RUNS: dict[str, tuple[str, list[str], list[str], str]] = {
    "detection": ("domains.driving.detection", [f"{DRIVING}/detection/configs/gpu.yaml"], [], "driving"),
    "detection_2x": (
        "domains.driving.detection",
        [f"{DRIVING}/detection/configs/gpu.yaml"],
        ["--model.network.init_args.input_size", "[384, 1280]", "--data.batch_size", "16"],
        "driving",
    ),
    "anomaly": ("domains.driving.anomaly", [f"{DRIVING}/anomaly/configs/gpu.yaml"], [], "driving"),
    "instances": ("domains.driving.instances", [f"{DRIVING}/instances/configs/gpu.yaml"], [], "driving"),
    "accident": ("domains.driving.accident", [f"{DRIVING}/accident/configs/gpu.yaml"], [], "accident"),
    "unet": ("domains.medical", [f"{MEDICAL}/unet.yaml", f"{MEDICAL}/gpu.yaml"], [], "medical"),
    "prob_unet": ("domains.medical", [f"{MEDICAL}/prob_unet.yaml", f"{MEDICAL}/gpu.yaml"], [], "medical"),
    # the paper's 8 levels at 128 px, 64 channels from level 3 (15 MB as fp16 instead of 80), batch norm
    "hpu_net": (
        "domains.medical",
        [f"{MEDICAL}/hpu_net.yaml", f"{MEDICAL}/gpu.yaml"],
        ["--model.network.init_args", HPU_DEMO_KWARGS],
        "medical",
    ),
}

def options() -> argparse.ArgumentParser:
    """The benchmark's options; built before torch is imported, so that ``--help`` answers at once."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument(
        "--out-dir", type=Path, required=True, help="where the table, each run's JSON, log and weights go"
    )
    ap.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS), help="the recipes to train")
    ap.add_argument(
        "--fit-seconds", type=float, default=420.0, help="every fit ends this long after the start"
    )
    ap.add_argument("--smoke", action="store_true", help="CPU, fp32, 3 steps per run: checks the plumbing")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=None, help=argparse.SUPPRESS)
    return ap


if __name__ == "__main__":  # options parsed before the imports below (torch: seconds), then main() runs
    from benchmarks.report import run_as_program

    run_as_program(options(), "benchmarks.gpu_recipes")

import json
import os
import shlex
import subprocess
import time

import pytorch_lightning as pl

from benchmarks.report import check_numbers, command_line, memory_note

SMOKE_ARGS = [
    "--trainer.accelerator", "cpu", "--trainer.precision", "32-true", "--trainer.max_epochs", "1",
    "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "2",
    "--trainer.check_val_every_n_epoch", "1", "--data.num_workers", "0", "--data.batch_size", "2",
]  # fmt: skip
KEY_METRICS = {
    "detection": ["test/map50", "test/map", "test/ap50/Car", "test/ap50/Pedestrian", "test/ap50/Cyclist"],
    "anomaly": ["test/ap", "test/fpr95", "test/auroc", "test/mean_F1"],
    "instances": ["test/mask_map50", "test/box_map50", "test/mask_ap50/Car", "test/mask_map"],
    "accident": ["test/video_ap", "test/frame_ap", "test/mtta", "test/tta_r80", "test/ece"],
    "medical": [
        "test/ged", "test/hungarian_iou", "test/diversity", "test/dice", "test/ece", "test/ece_majority",
    ],
}
#: how a metric is named in the table where its key alone would mislead: the medical ``ece`` is measured
#: against the readers' mean (the share of readers marking each pixel) since the metric changed;
#: ``ece_majority`` is the earlier one, against the majority mask
METRIC_LABELS = {
    "medical": {"test/ece": "ece (vs readers' mean)", "test/ece_majority": "ece_majority (vs majority mask)"}
}


def _generate(domain: str) -> None:
    if domain == "accident":
        from domains.driving.synthetic import ensure_synthetic_clips

        ensure_synthetic_clips(workers=max(1, min(8, (os.cpu_count() or 2) - 2)))
    elif domain == "driving":
        from domains.driving.synthetic import ensure_synthetic_anomaly, ensure_synthetic_kitti

        ensure_synthetic_kitti()
        ensure_synthetic_anomaly()
    else:
        from domains.medical.synthetic import ensure_synthetic_lidc

        ensure_synthetic_lidc()


def _child(name: str, out_dir: Path, seconds: float, smoke: bool) -> int:
    """One run: fit under the budget, test ``last.ckpt``, write ``<name>.json`` and ``<name>.safetensors``."""
    import importlib

    import torch
    from safetensors.torch import save_file

    module, configs, extra, _ = RUNS[name]
    main = importlib.import_module(f"{module}.__main__").main
    run_dir = out_dir / name
    common = [arg for cfg in configs for arg in ("-c", cfg)] + extra
    if smoke:  # one short epoch: outlier exposure must start in it for outlier_prob to be testable
        common += SMOKE_ARGS + (["--model.oe_start_epoch", "0"] if name == "anomaly" else [])
    # the run's config.yaml goes beside its checkpoint, not into the repository's lightning_logs/
    common += ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
    common += ["--trainer.default_root_dir", str(run_dir)]
    start = time.perf_counter()
    fit_args = [
        "fit", *common,
        "--checkpoint.dirpath", str(run_dir),
        "--trainer.callbacks+=shared.budget.FitScheduleToBudget", f"--trainer.callbacks.seconds={seconds}",
        "--trainer.callbacks+=benchmarks.gpu_recipes.TrainingThroughput",
        # the schedule ends at the deadline; validation and calibration come on top: a safety net, as transfer.py's
        "--trainer.max_time", _max_time(seconds * 1.3 + 20),
    ]  # fmt: skip
    fit = main(fit_args)
    fit_seconds = time.perf_counter() - start
    (throughput,) = [c for c in fit.trainer.callbacks if isinstance(c, TrainingThroughput)]
    steps = int(fit.trainer.global_step)
    epochs = int(fit.trainer.current_epoch)
    ckpt = run_dir / "last.ckpt"
    test = main(["test", *common, "--ckpt_path", str(ckpt)])
    metrics = {k: float(v) for k, v in test.trainer.callback_metrics.items() if k.startswith("test/")}
    device = torch.cuda.get_device_name() if torch.cuda.is_available() and not smoke else "CPU"
    record = {
        "name": name,
        "command": f".venv/bin/python -m {module} {shlex.join(fit_args)}",  # the budgeted run, pasted back
        "device": device,
        "fit_seconds": round(fit_seconds, 1),
        "steps": steps,
        "epochs": epochs,
        "images_per_second": round(throughput.batches * _batch_size(fit) / max(throughput.seconds, 1e-9), 1),
        "metrics": metrics,
        "hyper_parameters": {k: _plain(v) for k, v in dict(fit.model.hparams).items()},
        "data_hyper_parameters": {k: _plain(v) for k, v in dict(fit.datamodule.hparams).items()},
        "memory": memory_note(),  # this process's: run as a program (run_as_program), as main() starts it
    }
    (out_dir / f"{name}.json").write_text(json.dumps(record, indent=1))
    # Every weight of the task (fp16 floats): the demo weights are cut from these files.
    state = {
        k: (v.half() if v.is_floating_point() else v).contiguous()
        for k, v in test.model.state_dict().items()
        if "metric" not in k and "miou" not in k
    }
    save_file(state, str(out_dir / f"{name}.safetensors"))
    ckpt.unlink(missing_ok=True)
    return 0


class TrainingThroughput(pl.Callback):
    """The time of the training batches alone, their data loading included: the table's "train img/s" is
    batches x batch size over it. Divided by the whole fit (start-up, validation, checkpoints), a CPU smoke run
    read 0.5 img/s where its training batches ran at 0.8."""

    def __init__(self):
        self.batches, self.seconds, self._last = 0, 0.0, None

    def on_train_epoch_start(self, trainer, pl_module):
        self._last = time.perf_counter()

    def on_validation_start(self, trainer, pl_module):
        self._last = None  # a validation inside an epoch: not training time

    def on_validation_end(self, trainer, pl_module):
        self._last = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        now = time.perf_counter()
        if self._last is not None:
            self.seconds += now - self._last
            self.batches += 1
        self._last = now


def _batch_size(cli) -> int:
    return int(getattr(cli.datamodule, "batch_size", 1) or 1)


def _max_time(seconds: float) -> str:
    """``--trainer.max_time`` as Lightning reads it (DD:HH:MM:SS)."""
    seconds = int(seconds)
    return f"{seconds // 86400:02d}:{seconds % 86400 // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _plain(value):
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)


def _table(out_dir: Path, names: list[str]) -> str:
    rows = [
        "| run | device | fit min | steps | epochs | train img/s | test metrics |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for name in names:
        path = out_dir / f"{name}.json"
        if not path.is_file():
            rows.append(f"| {name} | | | | | | failed: see {name}.log |")
            continue
        r = json.loads(path.read_text())
        domain = "detection" if name.startswith("detection") else name if name in KEY_METRICS else "medical"
        labels = METRIC_LABELS.get(domain, {})
        shown = ", ".join(
            f"{labels.get(k, k[5:])} {r['metrics'][k]:.3f}" for k in KEY_METRICS[domain] if k in r["metrics"]
        )
        rows.append(
            f"| {name} | {r['device']} | {r['fit_seconds'] / 60:.1f} | {r['steps']} | {r['epochs']} | "
            f"{r['images_per_second']} | {shown} |"
        )
    return "\n".join(rows) + "\n"


def _memory_note(out_dir: Path, names: list[str]) -> str:
    """What the runs did with freed memory, as their records say: each runs as a program of its own
    (run_as_program keeps it), so this process's setting, glibc's defaults where main() is called from
    Python, is not theirs (the table said "not kept" of runs that had kept it)."""
    notes = []
    for name in names:
        path = out_dir / f"{name}.json"
        note = json.loads(path.read_text()).get("memory") if path.is_file() else None
        if note and note not in notes:
            notes.append(note)
    return f"each run: {'; '.join(notes)}" if notes else "the runs' records do not say how they kept freed memory"


def main(argv: list[str] | None = None) -> int:
    ap = options()
    args = check_numbers(ap, ap.parse_args(argv))
    args.out_dir = args.out_dir.resolve()  # the children run in the repository: a relative path would move
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.child:
        return _child(args.child, args.out_dir, args.seconds, args.smoke)
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    domains = sorted({RUNS[n][3] for n in args.runs})
    generators = {
        d: subprocess.Popen(
            [sys.executable, "-c", f"import benchmarks.gpu_recipes as g; g._generate({d!r})"],
            cwd=ROOT,
            env=env,
        )
        for d in domains
    }
    children: dict[str, subprocess.Popen] = {}
    pending = list(args.runs)
    while pending or any(p.poll() is None for p in children.values()):
        for name in list(pending):
            gen = generators[RUNS[name][3]]
            if gen.poll() is None:
                continue
            if gen.returncode != 0:
                print(f"{name}: data generation failed (exit {gen.returncode})", flush=True)
                pending.remove(name)
                continue
            seconds = max(10.0, args.fit_seconds - (time.perf_counter() - start))
            log = (args.out_dir / f"{name}.log").open("w")
            cmd = [
                sys.executable,
                __file__,
                "--out-dir",
                str(args.out_dir),
                "--child",
                name,
                "--seconds",
                str(seconds),
            ]
            children[name] = subprocess.Popen(
                cmd + (["--smoke"] if args.smoke else []),
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            print(
                f"{time.perf_counter() - start:6.0f} s: started {name} (fit budget {seconds:.0f} s)",
                flush=True,
            )
            pending.remove(name)
        time.sleep(1.0)
    for name, proc in children.items():
        print(f"{name}: exit {proc.returncode}", flush=True)
    smoke = "# GPU recipes: SMOKE run (CPU, 3 steps a run: the plumbing, not results)"
    title = smoke if args.smoke else "# GPU recipes"
    table = (
        f"{title}\n\nCommand: `{command_line('benchmarks/gpu_recipes.py', argv)}` ("
        f"{_memory_note(args.out_dir, args.runs)}; each child's own command line, with its budget callback, "
        "is in its JSON)\n\n"
        f"{_table(args.out_dir, args.runs)}"
    )
    (args.out_dir / "gpu_recipes.md").write_text(table)
    print(table)
    return 0 if all(p.returncode == 0 for p in children.values()) else 1

