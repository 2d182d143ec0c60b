"""The shipped weights (``apps/weights/<key>.safetensors`` + model card) load from Python through their task
class's ``load_checked``, as the README shows for checkpoints, into the task the demo loads; a card of another
task, a changed file and a card-less ``.safetensors`` are refused; the CLI's ``--ckpt_path`` keeps refusing them."""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from apps import demo_models as dm
from shared.shipped import WeightFileError
from shared.task import CheckpointMismatchError

ROOT = Path(__file__).resolve().parents[2]
KEYS = list(dm.DEMO_MODELS)


def _task_class(key: str) -> type:
    module, name = dm.DEMO_MODELS[key].task.split(":")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("key", KEYS)
def test_load_checked_gives_the_task_the_demo_loads(key):
    """The file's own tensors (as fp32) in ``task.model`` and the card's network and settings: read from the
    files here, not through the loader both paths share."""
    from safetensors.torch import load_file

    path = dm.SHIPPED_DIR / f"{key}.safetensors"
    card = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    cls = _task_class(key)
    task = cls.load_checked(path)
    assert type(task) is cls and not task.training and not any(m.training for m in task.modules())
    network, given = task.hparams["network"], card["hyper_parameters"]["network"]
    assert network["class_path"] == given["class_path"]
    assert {k: network["init_args"][k] for k in given.get("init_args", {})} == given.get("init_args", {})
    for name, value in (card.get("settings") or {}).items():
        assert getattr(task, name) == value, name  # the anomaly score and its smoothing
    stored = load_file(str(path))
    ours = task.model.state_dict()
    assert ours.keys() == stored.keys()
    for name, value in stored.items():
        expected = value.float() if value.is_floating_point() else value
        assert ours[name].dtype == expected.dtype, name  # fp32 (the file is fp16)
        torch.testing.assert_close(ours[name], expected, rtol=0, atol=0, equal_nan=True, msg=name)
    demo = dm.load_task(key, path)  # the demo's loader gives the same task
    assert type(demo) is cls and demo.hparams["network"] == task.hparams["network"]


def test_a_card_of_another_task_is_refused_as_a_checkpoint_of_another_task_is():
    from domains.driving.detection.task import DetectionTask
    from domains.medical.task import MedicalSegmentationTask

    with pytest.raises(
        CheckpointMismatchError,
        match=r"medical_unet\.safetensors holds a domains\.medical\.task\.MedicalSegmentationTask checkpoint "
        r"\(model 'UNetSegmenter'\), not a domains\.driving\.detection\.task\.DetectionTask one: pass a checkpoint "
        "of this domain and task",
    ):
        DetectionTask.load_checked(dm.SHIPPED_DIR / "medical_unet.safetensors")
    with pytest.raises(CheckpointMismatchError, match="holds a domains.driving.detection.task.DetectionTask checkpoint"):
        MedicalSegmentationTask.load_checked(dm.SHIPPED_DIR / "driving_detection.safetensors")


def test_a_safetensors_without_a_card_is_refused_as_before(tmp_path):
    from domains.medical.task import MedicalSegmentationTask

    bare = tmp_path / "medical_unet.safetensors"  # a backbone's weights: nothing names a task
    shutil.copy(dm.SHIPPED_DIR / bare.name, bare)
    with pytest.raises(
        CheckpointMismatchError,
        match=r"medical_unet\.safetensors: a \.safetensors file holds weights only, not a Lightning checkpoint \(no "
        r"task, network or data settings\); give a checkpoint that fit wrote, .* \(a \.safetensors backbone loads "
        r"with --model\.pretrained_backbone\)$",
    ):
        MedicalSegmentationTask.load_checked(bare)


def test_a_changed_file_or_a_card_naming_no_task_is_refused(tmp_path):
    from domains.medical.task import MedicalSegmentationTask

    for suffix in (".safetensors", ".json"):
        shutil.copy(dm.SHIPPED_DIR / f"medical_unet{suffix}", tmp_path)
    path = tmp_path / "medical_unet.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightFileError, match=r"medical_unet\.safetensors: sha256 .* does not match its model card"):
        MedicalSegmentationTask.load_checked(path)
    card = tmp_path / "medical_unet.json"
    card.write_text(card.read_text().replace('"task":', '"task_was":', 1))
    with pytest.raises(CheckpointMismatchError, match=r"its model card names no task"):
        MedicalSegmentationTask.load_checked(path)


@pytest.mark.parametrize("command", ["fit", "test", "predict"])
def test_the_cli_keeps_refusing_shipped_weights_as_ckpt_path(command, tmp_path, monkeypatch):
    """``--ckpt_path`` takes Lightning state that fit saved (a resume restores loops and optimiser): shipped
    weights are refused before anything is built, pointing at ``load_checked``."""
    from domains.medical.__main__ import main

    monkeypatch.chdir(tmp_path)
    shipped = dm.SHIPPED_DIR / "medical_unet.safetensors"
    config = str(ROOT / "domains/medical/configs/quick.yaml")
    with pytest.raises(CheckpointMismatchError, match=r"--ckpt_path takes the Lightning state fit saved.*"
                       r"MedicalSegmentationTask\.load_checked\("):  # fmt: skip
        main([command, "-c", config, "--ckpt_path", str(shipped)])
    assert not (tmp_path / "lightning_logs").exists()
