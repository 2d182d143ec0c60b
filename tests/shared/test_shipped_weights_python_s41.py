"""The shipped weights (``apps/weights/<key>.safetensors`` + model card) load from Python through their task
class's ``load_checked``, as the README shows for checkpoints, into the task the demo loads; a card of another
task, a changed file and a card-less ``.safetensors`` are refused; the CLI's ``--ckpt_path`` keeps refusing them."""

from __future__ import annotations

import importlib
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


@torch.no_grad()
def _outputs(key: str, task) -> dict[str, torch.Tensor]:
    """One fixed input through the loaded task, as the tests and pages use each kind."""
    torch.manual_seed(0)
    if key in dm.MEDICAL_KEYS:
        image = torch.rand(1, 1, 128, 128)  # the cards' crop size
        torch.manual_seed(1)  # the probabilistic networks draw latents
        return {"samples": task.sample(image, 2)}
    if key in ("driving_detection", "driving_instances"):
        (pred,) = task.model([torch.rand(3, 96, 320)])
        return {name: value.float() for name, value in pred.items()}
    if key == "driving_accident":
        h, w = task.model.input_size
        boxes = torch.tensor([[[[2.0, 2.0, 20.0, 16.0]]] * 3])
        out = task.model(frames=torch.rand(1, 3, 3, h, w), boxes=boxes, box_valid=torch.ones(1, 3, 1, dtype=torch.bool))
        return {"horizon_logits": out["horizon_logits"]}
    return task.model.scores(torch.rand(1, 3, 64, 160), [task.score], smoothing=task.score_smoothing)


@pytest.mark.parametrize("key", KEYS)
def test_load_checked_gives_the_task_the_demo_loads(key):
    path = dm.SHIPPED_DIR / f"{key}.safetensors"
    cls = _task_class(key)
    task = cls.load_checked(path)
    demo = dm.load_task(key, path)
    assert type(task) is cls and not task.training and not any(m.training for m in task.modules())
    # the card's network and settings (the anomaly score and its smoothing) as the demo builds them
    assert task.hparams["network"] == demo.hparams["network"]
    for name in ("score", "score_smoothing"):
        assert getattr(task, name, None) == getattr(demo, name, None)
    ours, theirs = task.state_dict(), demo.state_dict()
    assert ours.keys() == theirs.keys()
    for name, value in ours.items():
        assert value.dtype == theirs[name].dtype, name  # fp32 (the file is fp16) as the demo has them
        torch.testing.assert_close(value, theirs[name], rtol=0, atol=0, equal_nan=True, msg=name)
    got, expected = _outputs(key, task), _outputs(key, demo)
    assert got.keys() == expected.keys() and got
    for name in got:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0, msg=name)


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
