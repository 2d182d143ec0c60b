"""Checkpoints written before the optimiser moved to ``model.optimizer`` / ``model.lr_scheduler`` (commit 7746d26)
also predate ``model.network`` (51e4e55): each chose its network with ``model`` / ``backbone`` / ``encoder``.
Such a file, its ``lr`` / ``weight_decay`` / ``scheduler`` / ``warmup_steps`` with it, is refused naming
``model.network``, through ``load_checked`` and through the CLI's ``--ckpt_path``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from domains.medical.__main__ import main as medical_main
from domains.medical.task import MedicalSegmentationTask
from shared.task import CheckpointMismatchError
from tests.helpers import medical_task

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[2]
#: the hyper-parameters a U-Net's checkpoint held before the optimiser moved (the task's own, as saved then)
OLD_HPARAMS = {
    "model": "unet",
    "model_kwargs": {"channels": [8, 16]},
    "in_channels": 1,
    "beta": 1.0,
    "geco": True,
    "kappa": 0.05,
    "collapse_kl": 0.01,
    "lr": 2e-3,
    "weight_decay": 1e-4,
    "scheduler": "cosine",
    "warmup_steps": 5,
    "nonfinite_loss": "raise",
}
REFUSED = re.escape(
    "was written before the network moved to model.network (class_path + init_args; its model, model_kwargs "
    "now go there, see the README's configs): retrain it with the current configs"
)


@pytest.fixture
def old_checkpoint(tmp_path) -> Path:
    """A medical checkpoint in the layout of before the optimiser move (no ``network``; ``lr`` and the rest)."""
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.strategy.connect(medical_task("unet", {"channels": [8, 16]}))
    path = tmp_path / "old.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["hyper_parameters"] = dict(OLD_HPARAMS)
    torch.save(checkpoint, path)
    return path


def test_a_checkpoint_from_before_the_optimiser_move_is_refused_naming_model_network(
    old_checkpoint, tmp_path, monkeypatch
):
    refused = re.escape(str(old_checkpoint)) + " " + REFUSED
    with pytest.raises(CheckpointMismatchError, match=refused):
        MedicalSegmentationTask.load_checked(old_checkpoint)
    monkeypatch.chdir(tmp_path)
    config = str(ROOT / "domains/medical/configs/unet.yaml")
    for command in ("validate", "fit"):
        with pytest.raises(CheckpointMismatchError, match=refused):
            medical_main([command, "-c", config, "--ckpt_path", str(old_checkpoint)])
    assert not (tmp_path / "lightning_logs").exists()  # refused before anything was written
