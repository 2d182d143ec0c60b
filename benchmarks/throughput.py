"""Does the data loader keep up? Images per second of each task's network alone, of its loader alone (per worker
count) and of a real ``fit``, on whatever device is present; prints a markdown table with fit / network.

    .venv/bin/python benchmarks/throughput.py --out benchmarks/results/throughput.md     # quick configs on a CPU
    python benchmarks/throughput.py --gpu-configs                                        # each task's configs/gpu.yaml

"Network alone" repeats one real training batch already on the device through the task's own
``training_step`` + backward + optimiser step (what a step costs with no loading); "loader alone" iterates the
training loader with 0, 1, 2 ... workers; "fit" is ``Trainer.fit`` with the config's own loader, timed from the
end of the warm-up steps. Target: fit >= 90 % of network alone at the config's batch size and default workers.
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

from benchmarks.report import ACCELERATORS, HelpFormatter

TASKS = {
    # name: (task class, data-module class, quick config, GPU config(s))
    "medical": ("domains.medical.task:MedicalSegmentationTask", "domains.medical.data:MedicalDataModule",
                ["domains/medical/configs/quick.yaml"],
                ["domains/medical/configs/prob_unet.yaml", "domains/medical/configs/gpu.yaml"]),
    "detection": ("domains.driving.detection.task:DetectionTask", "domains.driving.detection.data:DetectionDataModule",
                  ["domains/driving/detection/configs/quick.yaml"], ["domains/driving/detection/configs/gpu.yaml"]),
    "anomaly": ("domains.driving.anomaly.task:AnomalySegmentationTask",
                "domains.driving.anomaly.data:SegmentationDataModule",
                ["domains/driving/anomaly/configs/quick.yaml"], ["domains/driving/anomaly/configs/gpu.yaml"]),
    "instances": ("domains.driving.instances.task:InstanceTask", "domains.driving.instances.data:InstanceDataModule",
                  ["domains/driving/instances/configs/quick.yaml"], ["domains/driving/instances/configs/gpu.yaml"]),
    "accident": ("domains.driving.accident.task:AccidentTask", "domains.driving.accident.data:AccidentDataModule",
                 ["domains/driving/accident/configs/quick.yaml"], ["domains/driving/accident/configs/gpu.yaml"]),
}  # fmt: skip


def options() -> argparse.ArgumentParser:
    """The benchmark's options; built before torch is imported, so that ``--help`` answers at once."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS), help="the tasks measured")
    ap.add_argument("--gpu-configs", action="store_true", help="the GPU recipes instead of the quick configs")
    ap.add_argument(
        "--accelerator", default="auto", choices=ACCELERATORS, help="auto: a GPU when there is one"
    )
    ap.add_argument("--precision", default=None, help="default: the configs' trainer.precision, else 32-true")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps before each measurement")
    ap.add_argument(
        "--workers", type=int, nargs="+", default=None, help="loader worker counts (default 0..config)"
    )
    ap.add_argument("--out", type=Path, default=None, help="write the table here (default: printed only)")
    return ap


if __name__ == "__main__":  # options parsed before the imports below (torch: seconds), then main() runs
    from benchmarks.report import run_as_program

    run_as_program(options(), "benchmarks.throughput")

import contextlib
import time

import pytorch_lightning as pl
import torch

from benchmarks.report import check_numbers, command_line, memory_note, print_and_write
from shared.cli import quiet_trainer
from shared.device import device_name, resolve_accelerator, synchronize


def _load(path: str):
    import importlib

    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def _build(name: str, configs: list[str], accelerator: str):
    """The task and data module exactly as ``python -m <module> fit -c <configs>`` would build them."""
    from shared.cli import SuiteCLI

    args = [a for c in configs for a in ("-c", str(ROOT / c))] + ["--trainer.accelerator", accelerator]
    task_cls, data_cls = _load(TASKS[name][0]), _load(TASKS[name][1])
    cli = SuiteCLI(task_cls, data_cls, domain=f"throughput_{name}", args=args, run=False)
    return cli.model, cli.datamodule


def config_precision(configs: list[str]) -> str:
    """The ``trainer.precision`` the configs ask for (the GPU recipes: bf16 / fp16), else ``32-true``."""
    import yaml

    precision = "32-true"
    for config in configs:
        trainer = (yaml.safe_load((ROOT / config).read_text()) or {}).get("trainer") or {}
        precision = str(trainer.get("precision", precision))
    return precision


def _autocast(device, precision: str):
    """The autocast a Lightning ``precision`` means for a bare training step (none for 32-bit)."""
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _to(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to(v, device) for v in batch)
    return batch


def _batch_images(batch) -> int:
    """Images in a batch; for clips (the accident task), their frames."""
    if isinstance(batch, dict):
        return int(batch["frame_valid"].sum()) if "frame_valid" in batch else len(batch["image"])
    return len(batch[0])


def network_alone(task, batch, device, steps: int, warmup: int, precision: str = "32-true") -> float:
    """Images/s of training_step (under the run's autocast) + backward + AdamW on one batch already on the
    device."""
    task = task.to(device).train()
    optimizer = torch.optim.AdamW([p for p in task.parameters() if p.requires_grad], lr=1e-4)
    batch = _to(batch, device)
    n = _batch_images(batch)
    task.log = lambda *a, **k: None  # no trainer attached: logging is not part of the cost
    task.log_dict = lambda *a, **k: None
    for i in range(warmup + steps):
        if i == warmup:
            synchronize(device)
            start = time.perf_counter()
        with _autocast(device, precision):
            loss = task.training_step(batch, i)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    synchronize(device)
    return steps * n / (time.perf_counter() - start)


def loader_alone(data, workers: int, batches: int) -> float:
    data.num_workers = workers
    loader = data.train_dataloader()
    it = iter(loader)
    first = next(it)  # worker start-up is not throughput
    n, start = 0, time.perf_counter()
    for i, batch in enumerate(it):
        n += _batch_images(batch)
        if i + 1 >= batches:
            break
    del first
    return n / (time.perf_counter() - start)


class _StepClock(pl.Callback):
    """Times the optimiser steps after ``warmup`` by the trainer's global step (batch indices restart each
    epoch): from the end of step ``warmup`` to the end of the last, counting the images of exactly those steps
    (loading the next batch included, as in a real fit)."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.images = warmup, None, 0

    def on_train_start(self, trainer, pl_module):
        if self.warmup == 0:  # no warm-up: the clock runs from the first step (global_step is 1 after it)
            synchronize(pl_module.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.warmup:
            synchronize(pl_module.device)
            self.start = time.perf_counter()
        elif trainer.global_step > self.warmup:
            self.images += _batch_images(batch)

    def on_train_end(self, trainer, pl_module):
        synchronize(pl_module.device)
        self.seconds = time.perf_counter() - self.start


def fit_rate(task, data, accelerator: str, steps: int, warmup: int, precision: str) -> float:
    clock = _StepClock(warmup)
    trainer = quiet_trainer(
        devices=1,
        accelerator=accelerator,
        max_steps=warmup + steps,
        precision=precision,
        callbacks=[clock],
    )
    trainer.fit(task, datamodule=data)
    return clock.images / clock.seconds


def main(argv: list[str] | None = None) -> int:
    ap = options()
    args = check_numbers(ap, ap.parse_args(argv))
    accelerator, device = resolve_accelerator(args.accelerator)
    where = device_name(device)
    rows = []
    for name in args.tasks:
        configs = TASKS[name][3] if args.gpu_configs else TASKS[name][2]
        precision = args.precision or config_precision(configs)
        task, data = _build(name, configs, accelerator)
        data.prepare_data()
        data.setup("fit")
        default_workers = int(data.num_workers)
        batch = next(iter(data.train_dataloader()))
        net = network_alone(task, batch, device, args.steps, args.warmup, precision)
        loaders = {w: loader_alone(data, w, args.steps) for w in (args.workers or range(default_workers + 1))}
        data.num_workers = default_workers
        task, data = _build(name, configs, accelerator)  # a fresh task: fit starts from the config's state
        fit = fit_rate(task, data, accelerator, args.steps, args.warmup, precision)
        rows.append((name, configs, precision, int(data.batch_size), default_workers, net, loaders, fit))
        print(f"{name}: network {net:.1f} img/s, loader {loaders}, fit {fit:.1f} img/s", flush=True)
    lines = [
        f"# Throughput: does the loader keep up? ({time.strftime('%Y-%m-%d')}, {where})",
        "",
        (
            f"Command: `{command_line('benchmarks/throughput.py', argv)}` ({memory_note()}); "
            f"{args.steps} timed steps after {args.warmup} warm-up steps per measurement."
        ),
        "",
        (
            "| task | config | precision | batch | workers | network alone img/s | loader alone img/s (by workers) "
            "| fit img/s | fit / network |"
        ),
        "|---|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for name, configs, precision, bs, workers, net, loaders, fit in rows:
        by_workers = ", ".join(f"{w}: {v:.0f}" for w, v in loaders.items())
        lines.append(
            f"| {name} | {' + '.join(Path(c).name for c in configs)} | {precision} | {bs} | {workers} | {net:.1f} | "
            f"{by_workers} | {fit:.1f} | {fit / net:.0%} |"
        )
    print_and_write("\n".join(lines) + "\n", args.out)
    return 0


