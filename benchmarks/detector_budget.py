"""What the fixed-budget benchmarks of the torchvision-detector tasks share (``driving_detection.py``,
``driving_instances.py``): reading the CLI config, a few calibration steps that give a first step count,
training under :class:`shared.budget.FitScheduleToBudget` with ``max_time`` as a hard stop, one test pass,
inference milliseconds per image and writing the markdown report (their common options:
``benchmarks.report.add_budget_arguments``, which imports no torch).

Not a benchmark itself: ``python benchmarks/driving_detection.py`` / ``driving_instances.py`` run it.
"""

from __future__ import annotations

if __name__ == "__main__":  # a library: its --help printed nothing and exited 0 (before its imports: at once)
    raise SystemExit(
        "benchmarks/detector_budget.py holds the detection benchmarks' shared budget loop: run "
        "benchmarks/driving_detection.py or benchmarks/driving_instances.py (--help for their options)"
    )

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
import torch
import yaml

from benchmarks.report import print_and_write, step_schedule
from shared.cli import instantiate_from_config, quiet_trainer
from shared.device import device_name, resolve_accelerator, stopwatch
from shared.optim import warmup_cosine


class Throughput(pl.Callback):
    """Counts training images and the wall time spent in training batches (data loading included)."""

    def __init__(self):
        self.images = 0
        self.start = None
        self.seconds = 0.0

    def on_train_epoch_start(self, trainer, pl_module):
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.images += len(batch[0])

    def on_train_epoch_end(self, trainer, pl_module):
        if self.start is not None:
            self.seconds += time.perf_counter() - self.start
            self.start = None


def to_device(device, images, targets):
    """A detection batch (lists of images and target dicts) on ``device``."""
    moved = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
    return [image.to(device) for image in images], moved


def calibrate_seconds_per_step(task, dm, steps: int, device) -> float:
    """Median seconds of a training step (forward, backward, AdamW) on real batches, first step excluded; the
    weights are restored afterwards, so calibration is not training."""
    model = task.model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    times, loader = [], iter(dm.train_dataloader())
    for _ in range(steps + 1):
        images, targets = to_device(device, *next(loader))
        with stopwatch(device) as elapsed:
            losses = model(images, task.training_targets(targets))
            opt.zero_grad()
            sum(losses.values()).backward()
            opt.step()
        times.append(elapsed())
    model.load_state_dict(state)
    return statistics.median(times[1:])


@torch.inference_mode()
def inference_ms(task, dm, n: int, device) -> tuple[float, tuple[int, int]]:
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


def read_config(args) -> tuple[dict, dict]:
    """The ``model:`` and ``data:`` sections of ``args.config`` with the benchmark's options applied (threads,
    seed, data path, loader workers, batch size; no prediction files)."""
    torch.set_num_threads(args.threads)
    pl.seed_everything(args.seed, workers=True)
    config = yaml.safe_load(Path(args.config).read_text())
    model_kw = dict(config.get("model") or {})
    data_kw = dict(config.get("data") or {})
    if args.data_path:
        data_kw["data_path"] = args.data_path
    data_kw["num_workers"] = args.num_workers
    if args.batch_size:
        data_kw["batch_size"] = args.batch_size
    model_kw.pop("predict_dir", None)
    return model_kw, data_kw


def train_and_test(
    args,
    task_class: type,
    datamodule_class: type,
    model_kw: dict,
    data_kw: dict,
    schedule: dict | None = None,
    limit_test_batches: float = 1.0,
) -> tuple[dict, pl.LightningModule, pl.LightningDataModule]:
    """Build the data module and task (with the CLI's links: class names and their count), train within
    ``args.budget_minutes`` (or for ``args.steps`` steps, the budget a hard stop) and test once. Returns the
    common result fields, the task and the data module. ``schedule``: extra :class:`FitScheduleToBudget`
    arguments."""
    accelerator, device = resolve_accelerator(args.accelerator)
    dm = datamodule_class(**data_kw)
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")  # an empty test split (--max-items too small) stops here, not after the whole budget
    # what the CLI links from the data module: the class list and its length
    model_kw["class_names"] = list(dm.class_names)
    model_kw["network"]["init_args"]["num_classes"] = len(dm.class_names)
    task = instantiate_from_config(task_class, model_kw)

    load_before = os.getloadavg()[0]
    budget_s = 60 * args.budget_minutes
    planned = args.steps
    if not args.steps:  # a time-budget run: the calibration gives the first plan
        sec_per_step = calibrate_seconds_per_step(task, dm, args.calibration_steps, device)
        # keep a margin for the epoch-end overheads and the slower steps of a shared machine
        planned = max(1, int(args.budget_fraction * budget_s / sec_per_step))
        print(
            f"calibration: {sec_per_step:.2f} s/step (batch {dm.batch_size}) -> first plan {planned} steps "
            f"for a {args.budget_minutes:g}-minute budget"
        )
    # the calibration's guess is only the start: the schedule is re-fitted to the measured step time
    max_steps, fitting = step_schedule(
        args.steps, planned, args.budget_fraction * budget_s, **(schedule or {})
    )
    warmup = getattr(task.make_lr_scheduler, "keywords", {}).get("warmup_steps", 0)
    if warmup >= max_steps:  # a short budget: warm up for a tenth of it
        task.make_lr_scheduler = warmup_cosine(max(0, max_steps // 10))
    meter = Throughput()
    trainer = quiet_trainer(
        devices=1,
        max_steps=max_steps,
        max_epochs=-1,
        max_time={"seconds": budget_s},
        accelerator=accelerator,
        precision=args.precision,
        gradient_clip_val=1.0,
        enable_progress_bar=args.progress,
        enable_model_summary=True,
        callbacks=[meter, *fitting],
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
        limit_test_batches=limit_test_batches,
    )
    (metrics,) = test.test(task, datamodule=dm, verbose=False)
    result = {
        "metrics": {k: float(v) for k, v in metrics.items()},
        "steps": trainer.global_step,
        "epochs": trainer.current_epoch,
        "train_images": meter.images,
        "train_seconds": train_wall,
        "images_per_s": meter.images / max(meter.seconds, 1e-9),
        "inference_ms": ms,
        "inference_size": size,
        "config": model_kw,
        "data": data_kw,
        "n_train": len(dm.datasets["train"]),
        "n_test": len(dm.datasets["test"]),
        "load_average": (load_before, os.getloadavg()[0]),
        "device": device_name(device),
    }
    return result, task, dm


def trained_from(config: dict) -> str:
    """How the table says where training started: the weights a config's (or an option's)
    ``pretrained_backbone`` loaded, else "from scratch"."""
    pretrained = config.get("pretrained_backbone")
    return f"with the backbone of {pretrained}" if pretrained else "from scratch"


def run_and_report(args, run: Callable[..., dict], markdown: Callable[..., str]) -> dict:
    """Run the benchmark, print its markdown table and write it to ``args.out`` (when set)."""
    result = run(args)
    print_and_write(markdown(result, args), args.out)
    return result
