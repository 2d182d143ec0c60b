"""Anomaly checkpoints of the task-level layout (before the plain ``AnomalySegmenter``, commit 4fbc7aa: the
segmenter as ``model.*``, the outlier head, OE calibration and statistics on the task) also predate
``model.network``: their task took ``encoder`` / ``encoder_kwargs``. Every way of loading one refuses it before
its weights are read: ``load_checked``, the CLI's ``--ckpt_path`` and the export naming the network's move, a
Trainer's ``ckpt_path`` naming the model the file records, and the shipping script's ``build_task``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from apps.demo_models import WeightFileError, build_task
from domains.driving.anomaly.__main__ import main as anomaly_main
from domains.driving.anomaly.export import main as anomaly_export
from domains.driving.anomaly.task import AnomalySegmentationTask
from shared.task import CheckpointMismatchError
from tests.helpers import anomaly_task

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[2]
#: the hyper-parameters a 1-epoch CLI fit of the code at 4fbc7aa^ saved (read from the file it wrote)
OLD_HPARAMS = {
    "encoder": "unet_encoder",
    "encoder_kwargs": {"channels": [4, 8, 16]},
    "decoder_channels": None,
    "num_classes": 12,
    "in_channels": 3,
    "class_weighting": "enet",
    "class_weight_batches": 20,
    "oe_weight": 0.5,
    "oe_objective": "both",
    "oe_start_epoch": 0,
    "oe_prob": 0.5,
    "oe_num_objects": [1, 3],
    "oe_size_range": [0.04, 0.18],
    "oe_road_prob": 0.8,
    "oe_hard_fraction": 0.5,
    "outlier_head_channels": 32,
    "calibration_batches": 2,
    "lr": 0.001,
    "weight_decay": 0.0001,
    "scheduler": "cosine",
    "warmup_steps": 0,
    "nonfinite_loss": "raise",
    "_instantiator": "pytorch_lightning.cli.instantiate_module",
}
REFUSED = re.escape(
    "was written before the network moved to model.network (class_path + init_args; its encoder, "
    "encoder_kwargs now go there, see the README's configs): retrain it with the current configs"
)


@pytest.fixture
def old_checkpoint(tmp_path) -> Path:
    """A Lightning checkpoint as the task wrote them before 4fbc7aa: its hyper-parameters, its record of the
    model (``SegmentationNet``) and its state-dict layout."""
    task = anomaly_task(encoder_kwargs={"channels": [4, 8, 16]}, outlier_head_channels=32)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.strategy.connect(task)
    path = tmp_path / "old.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    old_state = {}
    for key, value in checkpoint["state_dict"].items():
        if key.startswith("model.segmenter."):  # the segmenter was the task's model
            old_state["model." + key[len("model.segmenter.") :]] = value
        elif key.startswith("model."):  # the head, the OE parameters and the statistics were the task's
            old_state[key[len("model.") :]] = value
        else:
            old_state[key] = value
    assert "sml_mean" in old_state and "outlier_head.net.0.weight" in old_state and "model.head.weight" in old_state
    checkpoint.update(
        state_dict=old_state,
        hyper_parameters=dict(OLD_HPARAMS),
        suite_task={"task": "domains.driving.anomaly.task.AnomalySegmentationTask", "model": "SegmentationNet"},
    )
    torch.save(checkpoint, path)
    return path


def test_a_checkpoint_of_the_task_level_layout_is_refused_before_its_weights_are_read(
    old_checkpoint, tmp_path, monkeypatch
):
    refused = re.escape(str(old_checkpoint)) + " " + REFUSED
    with pytest.raises(CheckpointMismatchError, match=refused):
        AnomalySegmentationTask.load_checked(old_checkpoint)
    monkeypatch.chdir(tmp_path)
    config = str(ROOT / "domains/driving/anomaly/configs/quick.yaml")
    for command in ("test", "fit"):
        with pytest.raises(CheckpointMismatchError, match=refused):
            anomaly_main([command, "-c", config, "--ckpt_path", str(old_checkpoint)])
    with pytest.raises(CheckpointMismatchError, match=refused):
        anomaly_export(["--ckpt", str(old_checkpoint), "--out", str(tmp_path / "export")])
    assert not (tmp_path / "lightning_logs").exists() and not (tmp_path / "export").exists()
    # a Trainer given the file: the base class's hook refuses it before any key is read
    task = anomaly_task(encoder_kwargs={"channels": [4, 8, 16]}, outlier_head_channels=32)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    batch = [{"image": torch.rand(3, 32, 64), "mask": torch.zeros(32, 64, dtype=torch.long)}]
    with pytest.raises(CheckpointMismatchError, match="holds model 'SegmentationNet' but .* 'AnomalySegmenter'"):
        trainer.validate(task, torch.utils.data.DataLoader(batch), ckpt_path=old_checkpoint)
    # apps/ship_weights.py: ship() builds the task from the run's hyper-parameters before reading weights
    hparams = {k: v for k, v in OLD_HPARAMS.items() if not k.startswith("_")}
    with pytest.raises(WeightFileError, match="driving_anomaly: the model card describes a network"):
        build_task("driving_anomaly", hparams)
