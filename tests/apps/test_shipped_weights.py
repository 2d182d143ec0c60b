"""The shipped demo weights: each loads safely into its network, matches its card, and (slow) reproduces the
card's test figures on the card's fixed subset; a changed file or a card naming an unknown network is refused."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from apps import demo_models as dm
from shared.task import CheckpointMismatchError

KEYS = list(dm.DEMO_MODELS)
#: the card's subset figures, reproduced on another CPU / torch build: sampling and float order differ slightly
TOLERANCE = {"medical": 0.03, "driving_detection": 0.03, "driving_anomaly": 0.03}
HEADLINE = {
    "medical": ("test/ged", "test/hungarian_iou", "test/dice"),
    "driving_detection": ("test/map50", "test/map"),
    "driving_anomaly": ("test/ap", "test/auroc", "test/fpr95"),
}


def _card(key: str) -> dict:
    return json.loads((dm.SHIPPED_DIR / f"{key}.json").read_text())


def test_every_demo_model_ships_weights_within_the_size_limits():
    sizes = {key: (dm.SHIPPED_DIR / f"{key}.safetensors").stat().st_size for key in KEYS}
    assert all(size <= 15 * 2**20 for size in sizes.values()), sizes
    assert sum(sizes.values()) <= 40 * 2**20
    for key in KEYS:
        card = _card(key)
        assert card["key"] == key and card["weights"] == f"{key}.safetensors"
        assert {"command", "data", "seed", "date", "test", "subset", "sha256"} <= set(card)


@pytest.mark.parametrize("key", KEYS)
def test_shipped_weights_match_their_card_and_load_into_their_network(key):
    path = dm.SHIPPED_DIR / f"{key}.safetensors"
    card = _card(key)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == card["sha256"]
    tensors = load_file(str(path))  # safetensors: plain tensors, nothing unpickled
    assert {t.dtype for t in tensors.values() if t.is_floating_point()} == {torch.float16}
    task = dm.load_task(key, path)  # sha256 check + strict state-dict load
    assert not task.training
    with torch.no_grad():
        if key in dm.MEDICAL_KEYS:
            probs = task.sample(torch.rand(1, 1, 128, 128), 2)
            assert probs.shape == (1, 2, 128, 128) and 0 <= float(probs.min()) <= float(probs.max()) <= 1
        elif key == "driving_detection":
            (pred,) = task.model([torch.rand(3, 96, 320)])
            assert set(pred) >= {"boxes", "scores", "labels"} and pred["boxes"].shape[-1] == 4
        else:
            out = task.model.scores(torch.rand(1, 3, 64, 160), [task.score], smoothing=task.score_smoothing)
            assert out[task.score].shape == (1, 64, 160) and task.score == card["settings"]["score"]


def test_a_changed_weight_file_is_refused_naming_it(tmp_path):
    folder = tmp_path / "weights"
    shutil.copytree(dm.SHIPPED_DIR, folder)
    path = folder / "medical_unet.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte in the last tensor
    path.write_bytes(bytes(data))
    with pytest.raises(dm.WeightFileError, match=r"medical_unet\.safetensors: sha256 .* does not match"):
        dm.load_task("medical_unet", path)


def test_a_card_naming_a_network_the_registry_lacks_is_refused(tmp_path):
    folder = tmp_path / "weights"
    shutil.copytree(dm.SHIPPED_DIR, folder)
    card_path = folder / "driving_detection.json"
    card = json.loads(card_path.read_text())
    card["hyper_parameters"]["network"]["init_args"]["backbone"] = "no_such_backbone"
    card_path.write_text(json.dumps(card))
    with pytest.raises(dm.WeightFileError, match="no_such_backbone"):
        dm.load_task("driving_detection", folder / "driving_detection.safetensors")


def test_a_checkpoint_of_another_task_is_refused_naming_what_it_holds(demo_env):
    medical = demo_env["checkpoints"] / "medical_unet.ckpt"
    with pytest.raises(CheckpointMismatchError, match="MedicalSegmentationTask"):
        dm.load_task("driving_detection", medical)


@pytest.mark.slow
@pytest.mark.parametrize("key", KEYS)
def test_shipped_weights_reproduce_their_card_figures(key):
    """The card's subset figures again, from the fp16 file, within TOLERANCE (about 1 minute per model)."""
    from apps.ship_weights import subset_figures

    card = _card(key)
    task = dm.load_task(key, dm.SHIPPED_DIR / f"{key}.safetensors")
    figures = subset_figures(key, task, card["data_hyper_parameters"])
    group = "medical" if key in dm.MEDICAL_KEYS else key
    for name in HEADLINE[group]:
        assert figures[name] == pytest.approx(card["subset"]["metrics"][name], abs=TOLERANCE[group]), name
