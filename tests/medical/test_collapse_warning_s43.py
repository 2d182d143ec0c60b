"""The posterior-collapse warning says nothing before ``collapse_grace_steps``: at initialisation the posterior
and prior nets agree, so every KL starts near 0 (a 2-step run warned "posterior collapse" of every model).
Also the exported sidecar's Decathlon slicing, which says what the reader does."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch
from pytorch_lightning.trainer.states import TrainerFn

from domains.medical.models import HierarchicalProbUNet
from domains.medical.task import MedicalSegmentationTask
from shared.task import EpochMean
from tests.medical.test_models import TINY

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def network() -> HierarchicalProbUNet:
    return HierarchicalProbUNet(**TINY["hpu_net"])


def _task(network, **kwargs) -> MedicalSegmentationTask:
    return MedicalSegmentationTask(network=network, num_samples=2, predict_dir=None, **kwargs)


def _validate(task, monkeypatch, step: int, kl: dict[str, float], fn=TrainerFn.FITTING) -> list[str]:
    """One validation's end at ``step`` whose per-scale KL means (nats per image) are ``kl``: the warnings."""
    trainer = SimpleNamespace(state=SimpleNamespace(fn=fn))
    monkeypatch.setattr(MedicalSegmentationTask, "trainer", property(lambda self: trainer))
    monkeypatch.setattr(MedicalSegmentationTask, "global_step", property(lambda self: step))
    task.logged_means.clear()
    for name, value in kl.items():
        task.logged_means[f"val/{name}_nats"] = EpochMean()
        task.logged_means[f"val/{name}_nats"].update(torch.tensor(value), 1)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        task._warn_collapse()
    return [str(w.message) for w in seen]


def test_a_kl_near_0_at_the_first_steps_is_not_a_collapse(network, monkeypatch):
    """A 2-step run warned "posterior collapse ... at global step 1 ... no longer differ" of every model."""
    task = _task(network, collapse_grace_steps=100)
    assert _validate(task, monkeypatch, 1, {"kl_scale0": 5e-3, "kl_scale1": 0.0}) == []
    assert _validate(task, monkeypatch, 99, {"kl_scale0": 5e-3, "kl_scale1": 0.0}) == []
    # a healthy run's KL rises above the bound and stays: nothing, ever
    assert _validate(task, monkeypatch, 100, {"kl_scale0": 0.5, "kl_scale1": 2.0}) == []


def test_a_scale_below_the_bound_after_the_grace_is_warned_of_once(network, monkeypatch):
    task = _task(network, collapse_grace_steps=100)
    assert _validate(task, monkeypatch, 50, {"kl_scale0": 0.8, "kl_scale1": 0.3}) == []
    (said,) = _validate(task, monkeypatch, 1300, {"kl_scale0": 0.8, "kl_scale1": 2e-4})
    assert said.startswith("posterior collapse: latent scale 1 (kl_scale1) has KL 2.00e-04 nats per image at "
                           "global step 1300, below collapse_kl 0.01"), said  # fmt: skip
    assert _validate(task, monkeypatch, 1400, {"kl_scale0": 0.8, "kl_scale1": 1e-4}) == []  # once per scale


def test_validate_of_a_checkpoint_judges_the_grace_by_its_step(network, monkeypatch):
    """validate --ckpt_path: the checkpoint's step decides the grace (validate itself is at step 0)."""
    late = _task(network, collapse_grace_steps=100)
    late.on_load_checkpoint({"state_dict": {}, "global_step": 600})
    (said,) = _validate(late, monkeypatch, 0, {"kl_scale1": 1e-3}, TrainerFn.VALIDATING)
    assert "in the checkpoint of global step 600" in said, said
    early = _task(network, collapse_grace_steps=100)
    early.on_load_checkpoint({"state_dict": {}, "global_step": 20})
    assert _validate(early, monkeypatch, 0, {"kl_scale1": 1e-3}, TrainerFn.VALIDATING) == []


def test_a_negative_grace_is_refused(network):
    with pytest.raises(ValueError, match="collapse_grace_steps must be >= 0, got -1"):
        _task(network, collapse_grace_steps=-1)


# ------------------------------------------------------------------ the exported sidecar's Decathlon geometry


def test_the_sidecar_says_decathlon_slices_follow_the_head_foot_axis():
    """The reader cuts along each volume's head-foot axis (``volumes.axial_axes``), reordering a volume stored
    with permuted axes; the sidecar said "along the third voxel axis", which a deployer would take literally."""
    from domains.medical.export import _preprocessing

    geometry = _preprocessing({"data_format": "decathlon", "crop_size": 64}, 4)["geometry"]
    assert geometry.startswith("slices along the volume's head-foot voxel axis: the third as stored when it runs "
                               "head-foot"), geometry  # fmt: skip
    assert "(left-right X, front-back Y, head-foot Z)" in geometry and "no flips" in geometry
