"""Test-only helpers shared by the domain tests: tiny inputs (LIDC PNGs, a data module of Decathlon volumes,
striped classification images and the task and data on them), a tiny notified fit, a hard kill mid-epoch and a
kill-then-resume driver, fault injection and the checks that follow it, DDP records."""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import signal
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytorch_lightning as pl
import torch
import yaml

from shared.cli import quiet_trainer as shared_quiet_trainer

REPO = Path(__file__).resolve().parents[1]


def quiet_trainer(**overrides) -> pl.Trainer:
    """A CPU trainer for tests: :func:`shared.cli.quiet_trainer` (no logger, checkpoints, progress bar, model
    summary or validation)."""
    return shared_quiet_trainer(**{"accelerator": "cpu", **overrides})


# --model.model_kwargs of tiny medical networks (CLI syntax), per model
TINY_MEDICAL_KWARGS = {
    "unet": "{channels: [8, 16]}",
    "prob_unet": "{channels: [8, 16], latent_dim: 3}",
    "hpu_net": "{channels: [8, 8, 8, 8, 8], latent_channels: [1, 1, 1, 1], blocks_per_level: 1}",
}


def tiny_medical_args(data: Path, config: Path, model: str, num_samples: int, *settings: str) -> list[str]:
    """``python -m domains.medical`` arguments: ``config`` with a tiny ``model`` on 32 px crops of ``data`` in
    batches of 2 loaded in-process, then ``settings``; no progress bar or model summary."""
    return [
        "-c", str(config),
        "--model.network.init_args", TINY_MEDICAL_KWARGS[model],
        "--model.num_samples", str(num_samples),
        "--data.data_path", str(data), "--data.crop_size", "32", "--data.batch_size", "2",
        "--data.num_workers", "0",
        *settings,
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
    ]  # fmt: skip


def tiny_classification_args(config: Path, data: Path, crops: Path, *settings: str) -> list[str]:
    """``python -m domains.<domain>.classification`` arguments: ``config`` with a ``tiny_cnn`` on 32x32 crops of
    ``data`` (cut to ``crops``) in batches of 4 loaded in-process, then ``settings``; no progress bar or
    model summary."""
    return [
        "-c", str(config), "--data.data_path", str(data), "--data.crops_dir", str(crops),
        "--data.num_workers", "0", "--data.batch_size", "4", "--data.image_size", "[32, 32]",
        "--model.network.init_args.backbone", "tiny_cnn",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", *settings,
    ]  # fmt: skip


def write_image(path: Path, width: int = 64, height: int = 48, seed: int = 0) -> Path:
    """A seeded random RGB image file at ``path`` (its folders made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    assert cv2.imwrite(str(path), rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    return path


def write_lidc(
    root: Path,
    size: int = 32,
    n: int = 2,
    image=None,
    masks=None,
    split: str = "train",
    names: list[str] | None = None,
) -> Path:
    """A hand-made LIDC PNG layout under ``root``: patient P1's images in ``split``, four readers each.
    The images are ``names`` (default ``s0`` .. ``s<n-1>``), each ``image`` (default a flat grey of 40 x its
    index) with the reader masks ``masks`` (default four empty ones), all ``size`` px square unless given."""
    img_dir, gt_dir = root / split / "images" / "P1", root / split / "gt" / "P1"
    img_dir.mkdir(parents=True, exist_ok=True)
    gt_dir.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names if names is not None else [f"s{i}" for i in range(n)]):
        img = image if image is not None else np.full((size, size), 40 * i, np.uint8)
        assert cv2.imwrite(str(img_dir / f"{name}.png"), img)
        for r in range(4):
            m = masks[r] if masks is not None else np.zeros((size, size), np.uint8)
            assert cv2.imwrite(str(gt_dir / f"{name}_l{r}.png"), m)
    return root


def decathlon_fit_data(root: Path, n_cases: int, fractions: list[float]):
    """A ``MedicalDataModule`` set up for ``fit`` on ``n_cases`` hand-made Decathlon volumes under ``root``
    (``tests.medical.test_data_splits_predict._decathlon``), split into train / val / test volumes by
    ``fractions``: each volume's 5 lesion slices (1-5) and no empty one (``min_empty`` 0, ``empty_ratio`` 0),
    16 px crops in batches of 2 loaded in-process, no augmentation."""
    from domains.medical.data import MedicalDataModule
    from tests.medical.test_data_splits_predict import _decathlon

    _decathlon(root, n_cases=n_cases, lesion_slices=(1, 2, 3, 4, 5))
    dm = MedicalDataModule(
        "decathlon", str(root), crop_size=16, num_workers=0, batch_size=2, augment=False,
        dataset_kwargs={"fractions": list(fractions), "min_empty": 0, "empty_ratio": 0.0},
    )  # fmt: skip
    dm.setup("fit")
    return dm


# ---------------------------------------------------------------------------- classification on stripes

STRIPE_CLASSES = ["h", "v"]


def stripes(path: Path, vertical: bool, seed: int, size: int = 16) -> Path:
    """A grey image of horizontal or vertical stripes with noise: two classes a tiny CNN separates quickly."""
    rng = np.random.default_rng(seed)
    line = (np.arange(size) // 2 % 2) * 160 + 40
    image = np.tile(line[None, :] if vertical else line[:, None], (size, 1) if vertical else (1, size))
    image = np.clip(image + rng.normal(0, 20, (size, size)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


def stripes_folder(root: Path, per_class: dict[str, int] | None = None) -> Path:
    """An image folder of :func:`stripes`, ``per_class`` images of each class per split (default 12/4/4)."""
    per_class = per_class or {"train": 12, "val": 4, "test": 4}
    for split, n in per_class.items():
        for c, name in enumerate(STRIPE_CLASSES):
            for i in range(n):
                # a seed of its own per image, the same in every process (hash() of a str is salted per process)
                seed = zlib.crc32(f"{split}/{c}/{i}".encode()) % 1000
                stripes(root / split / name / f"{i}.png", vertical=bool(c), seed=seed)
    return root


def stripes_task(lr_scheduler=None, **kw):
    """A ``ClassificationTask`` on a grey ``tiny_cnn`` for :data:`STRIPE_CLASSES`, AdamW at 0.01."""
    from shared.classification.model import ImageClassifier
    from shared.classification.task import ClassificationTask
    from shared.optim import adamw

    network = ImageClassifier(len(STRIPE_CLASSES), "tiny_cnn", in_channels=1)
    if kw.get("freeze_backbone_epochs") and "pretrained_backbone" not in kw:
        # a frozen start needs weights from a file (FrozenBackboneCheck): the network's own, read at once
        with tempfile.TemporaryDirectory() as folder:
            torch.save(network.backbone.state_dict(), Path(folder) / "backbone.pt")
            return ClassificationTask(
                network, STRIPE_CLASSES, optimizer=adamw(lr=0.01), lr_scheduler=lr_scheduler,
                pretrained_backbone=str(Path(folder) / "backbone.pt"), **kw,
            )  # fmt: skip
    return ClassificationTask(
        network, STRIPE_CLASSES, optimizer=adamw(lr=0.01), lr_scheduler=lr_scheduler, **kw
    )


def stripes_data(root: Path, **kw):
    """A grey 16x16 ``imagefolder`` ``ClassificationDataModule`` of ``root`` for :data:`STRIPE_CLASSES`,
    batches of 8 loaded in-process, no augmentation; ``kw`` overrides any of these."""
    from shared.classification.data import ClassificationDataModule

    settings = {"in_channels": 1, "image_size": (16, 16), "batch_size": 8, "num_workers": 0, "augment": False}
    return ClassificationDataModule("imagefolder", str(root), STRIPE_CLASSES, **{**settings, **kw})


def notify_fit(tmp_path: Path, notify: pl.Callback, **trainer) -> pl.Trainer:
    """Fit the tiny segmentation task 2 steps with the ``NotifyWhenDone`` callback ``notify``; ``trainer``
    overrides the trainer's settings."""
    from tests.shared.tiny_task import SquaresDataModule, TinySegTask

    settings = {
        "max_steps": 2,
        "limit_val_batches": 1,
        "default_root_dir": str(tmp_path),
        "callbacks": [notify],
    }
    trainer = quiet_trainer(**{**settings, **trainer})
    trainer.fit(TinySegTask(), SquaresDataModule(n_train=8, n_val=4))
    return trainer


def configs_missing(configs: Path, section: str, key: str) -> list[str]:
    """Names of the YAML configs in ``configs`` whose ``section`` does not state ``key``."""
    return [
        config.name
        for config in sorted(configs.glob("*.yaml"))
        if key not in (yaml.safe_load(config.read_text()).get(section) or {})
    ]


class KillAtStep(pl.Callback):
    """SIGKILL the training process right after optimizer step ``step`` (no clean-up, like a lost node)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def run_cli(
    module: str, args: list[str], cwd: Path, timeout: int = 240, traceback: bool = True
) -> subprocess.CompletedProcess:
    """``python -m module args`` in ``cwd``. ``traceback``: errors keep their traceback (SUITE_TRACEBACK=1), so a
    failing test shows where; the tests of the one-line error report pass False."""
    # One intra-op thread: tiny tensors gain nothing from more, and on a shared machine the threads of two
    # processes (DDP ranks, or other tests) spin against each other.
    env = {"OMP_NUM_THREADS": "1", **os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    env["SUITE_TRACEBACK"] = "1" if traceback else "0"
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _in_folder(main: Callable[[list[str]], object], argv: list[str], cwd: Path) -> None:
    torch.set_num_threads(1)
    os.chdir(cwd)
    main(argv)


def run_forked(main: Callable[[list[str]], object], argv: list[str], cwd: Path, timeout: float = 240) -> int:
    """``main(argv)`` in ``cwd`` in a forked child of this process (one intra-op thread), a real process without a
    fresh interpreter's imports; its exit status as ``subprocess`` gives it (multiprocessing's ``exitcode``: 0
    when ``main`` returned, a ``SystemExit``'s code, 1 when it raised, -N when signal N ended it). A child still
    running after ``timeout`` s is killed and the call fails."""
    import multiprocessing

    child = multiprocessing.get_context("fork").Process(target=_in_folder, args=(main, argv, cwd))
    child.start()
    try:
        child.join(timeout)
    finally:
        if child.exitcode is None:  # past the timeout, or this process interrupted
            child.kill()
            child.join()
            raise AssertionError(f"the forked run of {argv[:1]} did not end within {timeout} s")
    return child.exitcode


def kill_and_resume(
    module: str | None,
    base_args: list[str],
    ckpt_dir: Path,
    cwd: Path,
    kill_step: int,
    resume: Callable[[list[str]], object] | None = None,
    forked: bool = False,
) -> tuple[dict, dict]:
    """Run ``fit`` until a SIGKILL at ``kill_step``, then ``fit --ckpt_path last``; return both last checkpoints.

    Only the kill needs a real process; ``resume`` (the command's main, taking its argv) runs the resume in this
    one, in ``cwd``, which spares a second torch and Lightning import (3-5 s). Without it the resume is a
    ``python -m module`` too. ``forked`` (with ``resume``; ``module`` unused then): the killed run is ``resume``
    in a forked child of this process (:func:`run_forked`), a real process that the SIGKILL ends as it ends
    ``python -m module``, without a fresh interpreter's imports (its output goes to this process's captured
    output)."""
    kill = json.dumps({"class_path": "tests.helpers.KillAtStep", "init_args": {"step": kill_step}})
    common = [*base_args, "--checkpoint.dirpath", str(ckpt_dir), "--checkpoint.every_n_train_steps", "1"]
    if forked:
        assert resume is not None, "forked needs resume, the command's main, to run in the child"
        status = run_forked(resume, ["fit", *common, f"--trainer.callbacks+={kill}"], cwd)
        assert status == -signal.SIGKILL, (
            f"the forked run was not killed: exit status {status} (output above)"
        )
    else:
        first = run_cli(module, ["fit", *common, f"--trainer.callbacks+={kill}"], cwd)
        assert first.returncode == -signal.SIGKILL, (
            f"the run was not killed:\n{first.stdout[-2000:]}\n{first.stderr[-4000:]}"
        )
    killed = torch.load(ckpt_dir / "last.ckpt", map_location="cpu", weights_only=True)
    if resume is not None:
        with contextlib.chdir(cwd):
            resume(["fit", *common, "--ckpt_path", "last"])
    else:
        second = run_cli(module, ["fit", *common, "--ckpt_path", "last"], cwd)
        assert second.returncode == 0, f"resume failed:\n{second.stdout[-2000:]}\n{second.stderr[-4000:]}"
    resumed = torch.load(ckpt_dir / "last.ckpt", map_location="cpu", weights_only=True)
    return killed, resumed


# ------------------------------------------------------------------------------------------- fault injection


def batch_images(batch):
    """The image tensor(s) of any suite batch: dict ``image`` (medical, anomaly) or ``(images, targets)``."""
    if isinstance(batch, dict):
        return batch["image"]
    return batch[0]


def batch_ids(batch) -> list[str]:
    """Item ids of a suite batch: ``id`` (medical), ``name`` (anomaly), targets' ``image_id`` (detection)."""
    if isinstance(batch, dict):
        return [str(v) for v in batch.get("id", batch.get("name"))]
    return [str(t["image_id"]) for t in batch[1]]


class PoisonParameter(pl.Callback):
    """Fill the parameter called ``name`` with ``value`` (default NaN) just before optimizer step ``step``."""

    def __init__(self, name: str, value: float = float("nan"), step: int = 0):
        self.name, self.value, self.step = name, float(value), step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            params = dict(pl_module.named_parameters())
            if self.name not in params:
                raise KeyError(f"no parameter {self.name!r}; have e.g. {sorted(params)[:8]}")
            with torch.no_grad():
                params[self.name].fill_(self.value)


def poisoned_fit_args(callback: dict, ckpt_dir: Path) -> list[str]:
    """CLI arguments adding ``callback`` (a fault injector) to a fit without sanity check, checkpoints in
    ``ckpt_dir``."""
    return [
        "--trainer.num_sanity_val_steps",
        "0",
        "--checkpoint.dirpath",
        str(ckpt_dir),
        f"--trainer.callbacks+={json.dumps(callback)}",
    ]


def assert_one_batch_skipped(cli, batches: int) -> None:
    """A ``nonfinite_loss: skip`` fit of ``batches`` batches, the last one poisoned: it finished, counted the
    bad one, trained on the others, and the skipped batch's NaN never reached the logged ``train/loss``."""
    assert cli.trainer.state.finished
    assert cli.trainer.fit_loop.epoch_loop.batch_progress.total.completed == batches
    assert cli.model.skipped_batches == 1
    assert float(cli.trainer.callback_metrics["train/skipped_batches"]) == 1
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])  # still the last good batch's value
    # no gradient came from the poisoned batch (Lightning still counts its optimizer call as a step)
    assert all(torch.isfinite(p).all() for p in cli.model.parameters())


class PoisonBatch(pl.Callback):
    """Overwrite the images of training batch ``batch_idx`` (every epoch) with ``value`` (default NaN)."""

    def __init__(self, batch_idx: int, value: float = float("nan")):
        self.batch_idx, self.value = batch_idx, float(value)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.batch_idx:
            images = batch_images(batch)
            for image in images if isinstance(images, (list, tuple)) else [images]:
                image.fill_(self.value)


# ---------------------------------------------------------------------------------------------- DDP checks


def _state_size(value) -> float:
    """A metric state as one number: the sum of a tensor state, the item count of a list ("cat") state."""
    if isinstance(value, list):
        return float(sum(v.numel() if v.ndim else 1 for v in value))
    return float(value.detach().double().sum())


class RecordTestMetrics(pl.Callback):
    """Writes ``<out_dir>/test_rank<r>.json``: the ``test/*`` values this process ended ``test`` with."""

    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)

    def on_test_end(self, trainer, pl_module):
        self.out_dir.mkdir(parents=True, exist_ok=True)
        values = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        record = {"rank": trainer.global_rank, "world_size": trainer.world_size, "test": values}
        (self.out_dir / f"test_rank{trainer.global_rank}.json").write_text(json.dumps(record))


def run_test(
    module: str, base_args: list[str], ckpt: Path, out_dir: Path, cwd: Path, devices: int
) -> list[dict]:
    """``test --ckpt_path ckpt`` on ``devices`` CPU processes (gloo DDP when 2) with :class:`RecordTestMetrics`."""
    record = {"class_path": "tests.helpers.RecordTestMetrics", "init_args": {"out_dir": str(out_dir)}}
    ddp = (
        ["--trainer.strategy", "ddp", "--trainer.devices", "2"]
        if devices == 2
        else ["--trainer.devices", "1"]
    )
    args = ["test", *base_args, "--trainer.accelerator", "cpu", *ddp, "--ckpt_path", str(ckpt)]
    proc = run_cli(module, [*args, f"--trainer.callbacks+={json.dumps(record)}"], cwd)
    assert proc.returncode == 0, f"test failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-6000:]}"
    return [json.loads((out_dir / f"test_rank{r}.json").read_text()) for r in range(devices)]


class RecordRankData(pl.Callback):
    """Writes ``<out_dir>/rank<r>.json`` per process: the training item ids it saw and, optionally, a metric
    state before and after the cross-rank reduction (``metric``: attribute path of a torchmetrics ``Metric``
    on the LightningModule, e.g. ``val_metrics``; ``state``: one of its states, e.g. ``num_images_sum``),
    plus the ``val/*`` values each rank logged.

    The state is read in ``on_validation_epoch_end``, which Lightning runs for callbacks before the module's
    own hook (where the tasks compute and reset their metrics); ``sync_context`` does what ``compute()`` does.
    """

    def __init__(self, out_dir: str, metric: str | None = None, state: str | None = None):
        self.out_dir, self.metric, self.state = Path(out_dir), metric, state
        self.train_ids: list[str] = []
        self.local: list[float] = []
        self.synced: list[float] = []
        self.logged: dict[str, float] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.train_ids.extend(batch_ids(batch))

    def on_validation_epoch_end(self, trainer, pl_module):
        if self.metric is None or trainer.sanity_checking:
            return
        metric = pl_module
        for part in self.metric.split("."):
            metric = metric[part] if isinstance(metric, dict) else getattr(metric, part)
        if isinstance(metric, (tuple, list)):
            metric = metric[0]
        self.local.append(_state_size(getattr(metric, self.state)))
        with metric.sync_context(should_sync=True, should_unsync=True):
            self.synced.append(_state_size(getattr(metric, self.state)))

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:  # what each rank logged (reduced values agree across ranks)
            self.logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}

    def on_fit_end(self, trainer, pl_module):
        self.out_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "strategy": type(trainer.strategy).__name__,
            "backend": getattr(trainer.strategy, "_process_group_backend", None),
            "train_ids": self.train_ids,
            "local": self.local,
            "synced": self.synced,
            "logged": self.logged,
        }
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def run_ddp_fit(
    module: str,
    base_args: list[str],
    out_dir: Path,
    cwd: Path,
    metric: str | None = None,
    state: str | None = None,
    strategy: str = "ddp",
    timeout: int = 300,
) -> list[dict]:
    """``fit`` on 2 CPU processes (gloo) with :class:`RecordRankData`; returns the two ranks' records."""
    record = {"class_path": "tests.helpers.RecordRankData", "init_args": {"out_dir": str(out_dir)}}
    if metric is not None:
        record["init_args"].update(metric=metric, state=state)
    ddp = ["--trainer.strategy", strategy, "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
    proc = run_cli(
        module, ["fit", *base_args, *ddp, f"--trainer.callbacks+={json.dumps(record)}"], cwd, timeout
    )
    assert proc.returncode == 0, f"DDP fit failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-6000:]}"
    records = [json.loads((out_dir / f"rank{r}.json").read_text()) for r in (0, 1)]
    return records


# Tasks built in Python the way a config builds them (model.network as a plain network); the keyword arguments
# of the network and of the task are told apart by the network's signature.
class FixedOutputs(torch.nn.Module):
    """A network that returns the outputs it was given (detections, instance masks), whatever the images: the
    tasks' evaluation plumbing is then tested against known predictions."""

    def __init__(self, outputs):
        super().__init__()
        self.outputs = outputs

    def forward(self, images, targets=None):
        return self.outputs


def _split(network_cls: type, kwargs: dict) -> tuple[dict, dict]:
    names = set(inspect.signature(network_cls.__init__).parameters) - {"self"}
    return {k: v for k, v in kwargs.items() if k in names}, {
        k: v for k, v in kwargs.items() if k not in names
    }


def anomaly_task(**kwargs):
    """An ``AnomalySegmentationTask`` on an ``AnomalySegmenter`` built from the network's keyword arguments; raw
    score maps (``score_smoothing`` 0) unless given, so hand-computed values stay readable."""
    from domains.driving.anomaly.model import AnomalySegmenter
    from domains.driving.anomaly.task import AnomalySegmentationTask

    kwargs.setdefault("score_smoothing", 0.0)
    network, task = _split(AnomalySegmenter, kwargs)
    return AnomalySegmentationTask(network=AnomalySegmenter(**network), **task)


def detection_task(class_names=("Car", "Pedestrian", "Cyclist"), **kwargs):
    """A ``DetectionTask`` on a ``RoadDetector`` built from the network's keyword arguments."""
    from domains.driving.detection.model import RoadDetector
    from domains.driving.detection.task import DetectionTask

    network, task = _split(RoadDetector, kwargs)
    network = RoadDetector(num_classes=len(class_names), **network)
    return DetectionTask(network=network, class_names=list(class_names), **task)


def medical_task(model: str = "prob_unet", model_kwargs: dict | None = None, **kwargs):
    """A ``MedicalSegmentationTask`` on ``domains.medical.models.MODELS[model]`` (``model_kwargs`` and the
    network's own keyword arguments build it, the rest go to the task)."""
    from domains.medical.models import MODELS
    from domains.medical.task import MedicalSegmentationTask

    network, task = _split(MODELS[model], kwargs)
    return MedicalSegmentationTask(network=MODELS[model](**(model_kwargs or {}), **network), **task)
