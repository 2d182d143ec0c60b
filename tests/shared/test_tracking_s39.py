"""Comparing runs in TensorBoard / CSV (the tracking audit): each run logs the settings that tell it apart
(network, optimiser, schedule, seed; an evaluation its checkpoint's fit's), no constant ``hp_metric``;
``predict`` and a command that fails before its first logged value leave no ``version_N``; ``validate`` /
``test`` log at the checkpoint's step and say where."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch.nn.functional as F
import yaml
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import metadata
from torch import nn
from torch.utils.data import DataLoader

from shared.classification.model import ImageClassifier
from shared.cli import run_cli
from shared.task import BaseTask
from tests.shared.tiny_task import SquaresDataModule

pytestmark = pytest.mark.usefixtures("one_thread")

# the network's class as the package exports it (a checkpoint records the module defining it, ...model...)
NETWORK = "{class_path: shared.classification.ImageClassifier, init_args: {num_classes: 2, in_channels: 1}}"
COMMON = ["--model.network", NETWORK, "--model.network.init_args.backbone", "tiny_cnn",
          "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false",
          "--trainer.enable_model_summary", "false", "--trainer.limit_val_batches", "1"]  # fmt: skip


class Squares(SquaresDataModule):
    def test_dataloader(self):
        return self.val_dataloader()

    def predict_dataloader(self):
        return DataLoader([image for image, _ in self.val_set], batch_size=self.batch_size)


class NetworkTask(BaseTask):
    """Whether the tiny squares' images hold a square in their top half, by a network given as
    ``model.network`` (class_path + init_args), as the domains' tasks take it."""

    def __init__(self, network: nn.Module, **kwargs):
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.model = self.build_network(network, ImageClassifier)

    def loss(self, batch):
        images, masks = batch
        return F.cross_entropy(self.model(images), masks[:, :16].flatten(1).amax(1))

    def training_step(self, batch, batch_idx):
        loss = self.loss(batch)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.loss(batch))

    def test_step(self, batch, batch_idx):
        self.log("test/loss", self.loss(batch))

    def predict_step(self, batch, batch_idx):
        return self.model(batch).argmax(1)


class FailAtStep(pl.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise RuntimeError(f"failed at step {self.step}")


def cli(command: str, *args: str):
    return run_cli(NetworkTask, Squares, domain="tiny", monitor="val/loss", args=[command, *COMMON, *args])


def logs(root: Path) -> dict[str, list[str]]:
    """The version folders under each logger's folder of ``root`` (``lightning_logs/tiny``)."""
    return {name: sorted(p.name for p in (root / name).iterdir()) for name in ("csv", "tensorboard")}


def summaries(folder: Path) -> list:
    """(step, tag, value proto) of every summary in the TensorBoard event files of ``folder``."""
    return [
        (event.step, value.tag, value)
        for path in sorted(folder.glob("events.out.tfevents.*"))
        for event in EventFileLoader(str(path)).Load()
        for value in event.summary.value
    ]


def session_settings(folder: Path) -> dict:
    """The settings of the run's HPARAMS record (its session start info) in TensorBoard."""
    (start,) = [v for _, tag, v in summaries(folder) if tag == metadata.SESSION_START_INFO_TAG]
    info = metadata.parse_session_start_info_plugin_data(start.metadata.plugin_data.content)
    return {key: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind")) for key, value in
            info.hparams.items()}  # fmt: skip


def test_fits_log_the_network_optimiser_schedule_and_seed_and_no_constant_hp_metric(tmp_path, monkeypatch):
    """Two fits of other networks, learning rates and seeds logged identical hparams.yaml files (the task's
    saved hyper-parameters leave those out), and TensorBoard's HPARAMS tab compared them by ``hp_metric``, a
    constant -1."""
    monkeypatch.chdir(tmp_path)
    runs = [(0.0, "0.03", "7"), (0.5, "0.01", "3")]
    for dropout, lr, seed in runs:
        cli("fit", "--model.network.init_args.dropout", str(dropout), "--model.optimizer.init_args.lr", lr,
            "--seed_everything", seed, "--trainer.max_steps", "1")  # fmt: skip
    root = tmp_path / "lightning_logs/tiny"
    assert logs(root) == {"csv": ["version_0", "version_1"], "tensorboard": ["version_0", "version_1"]}
    for version, (dropout, lr, seed) in enumerate(runs):
        saved = [yaml.safe_load((root / name / f"version_{version}/hparams.yaml").read_text())
                 for name in ("csv", "tensorboard")]  # fmt: skip
        assert saved[0] == saved[1]
        settings = saved[0]
        assert settings["model.network.class_path"] == "shared.classification.ImageClassifier"
        assert settings["model.network.init_args.dropout"] == dropout
        assert settings["model.network.init_args.backbone"] == "tiny_cnn"
        assert settings["model.optimizer.class_path"] == "torch.optim.AdamW"
        assert settings["model.optimizer.init_args.lr"] == float(lr)
        assert settings["model.lr_scheduler.class_path"] == "shared.optim.WarmupCosine"
        assert settings["model.lr_scheduler.init_args.warmup_steps"] == 0
        assert settings["seed_everything"] == int(seed)
        assert settings["data.batch_size"] == 4 and settings["trainer.max_steps"] == 1
        assert "network" not in settings and "ckpt_path" not in settings  # flat keys only; a fresh fit
        tensorboard = root / f"tensorboard/version_{version}"
        shown = session_settings(tensorboard)
        assert shown["model.optimizer.init_args.lr"] == float(lr) and shown["seed_everything"] == int(seed)
        assert shown["model.network.init_args.dropout"] == dropout
        tags = {tag for _, tag, _ in summaries(tensorboard)}
        assert "hp_metric" not in tags and metadata.EXPERIMENT_TAG not in tags  # metrics: every scalar logged
        assert "train/loss" in tags


def test_predict_takes_no_log_folder(tmp_path, monkeypatch):
    """Each predict run took a version_N of its own, CSV and TensorBoard, holding only hp_metric."""
    monkeypatch.chdir(tmp_path)
    cli("fit", "--trainer.max_steps", "1")
    root = tmp_path / "lightning_logs/tiny"
    cli("predict", "--ckpt_path", "last")
    assert logs(root) == {"csv": ["version_0"], "tensorboard": ["version_0"]}
    assert sorted(p.name for p in root.iterdir()) == ["checkpoints", "csv", "tensorboard"]  # no config.yaml


def test_a_command_failing_before_its_first_value_leaves_no_version_folder(tmp_path, monkeypatch):
    """A fit failing at its start (here the schedule's ValueError) left a version_N holding only hp_metric;
    another run's folder (version_0, just taken) stays as it is."""
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "lightning_logs/tiny"
    (root / "csv/version_0").mkdir(parents=True)  # another run's, taken and still empty
    with pytest.raises(ValueError, match="lr_scheduler_interval 'epoch'"):
        cli("fit", "--model.lr_scheduler_interval", "epoch", "--trainer.max_steps", "1")
    assert logs(root) == {"csv": ["version_0"], "tensorboard": []}


@pytest.mark.parametrize("loggers", ["csv+tensorboard", "tensorboard"])
def test_a_command_failing_after_logging_keeps_its_folder(tmp_path, monkeypatch, loggers):
    """A run that logged values before it failed is a run to look at: kept, whichever loggers it has (with
    TensorBoard's alone, as its event file says)."""
    monkeypatch.chdir(tmp_path)
    fail = ["--trainer.callbacks+=tests.shared.test_tracking_s39.FailAtStep", "--trainer.callbacks.step", "2"]
    tensorboard = "{save_dir: lightning_logs/tiny, default_hp_metric: false}"
    own = ["--trainer.logger", f"[{{class_path: TensorBoardLogger, init_args: {tensorboard}}}]"]
    own = own if loggers == "tensorboard" else []
    with pytest.raises(RuntimeError, match="failed at step 2"):
        cli("fit", "--trainer.max_steps", "5", *fail, *own)
    root = tmp_path / "lightning_logs/tiny"
    board = root / ("tensorboard" if loggers == "csv+tensorboard" else "lightning_logs") / "version_0"
    tags = {(step, tag) for step, tag, _ in summaries(board)}
    assert {(0, "train/loss"), (1, "train/loss")} <= tags
    assert (root / "csv/version_0/metrics.csv").is_file() == (loggers == "csv+tensorboard")


def test_test_logs_at_the_checkpoints_step_and_fits_settings_and_says_where(tmp_path, monkeypatch, caplog):
    """``test`` logged its figures at step 0 of a new version and named no folder; its settings were the
    command's (the default learning rate, not the one the checkpoint trained with)."""
    monkeypatch.chdir(tmp_path)
    cli("fit", "--model.optimizer.init_args.lr", "0.03", "--seed_everything", "7", "--trainer.max_steps", "3")
    with caplog.at_level(logging.INFO):
        tested = cli("test", "--ckpt_path", "last")
    root = Path("lightning_logs/tiny")
    said = [r.getMessage() for r in caplog.records if "results logged" in r.getMessage()]
    folders = f"{root / 'csv/version_1'}, {root / 'tensorboard/version_1'}"
    assert said == [f"test: results logged at step 3 to {folders}"]
    with open(root / "csv/version_1/metrics.csv") as file:
        (row,) = list(csv.DictReader(file))
    assert row["step"] == "3"
    assert float(row["test/loss"]) == pytest.approx(float(tested.trainer.callback_metrics["test/loss"]))
    assert (3, "test/loss") in {(step, tag) for step, tag, _ in summaries(root / "tensorboard/version_1")}
    settings = yaml.safe_load((root / "csv/version_1/hparams.yaml").read_text())
    assert settings["ckpt_path"] == str(root / "checkpoints/last.ckpt")  # the file --ckpt_path last took
    assert settings["model.optimizer.init_args.lr"] == 0.03 and settings["seed_everything"] == 7  # the fit's
    assert settings["trainer.max_steps"] == 3 and settings["data.batch_size"] == 4
    # the network as the fit's config names it: one HPARAMS value for the fit's row and the test's
    assert settings["model.network.class_path"] == "shared.classification.ImageClassifier"
