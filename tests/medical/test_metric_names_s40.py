"""Metric names that runs are compared by: test logs the same loss family as validation, the KL in nats per
image (``kl_nats``, and per HPU-Net latent scale ``kl_scale<i>_nats``) included; only validation's KL decides
the posterior-collapse warning."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
from pytorch_lightning.trainer.states import TrainerFn

from domains.medical.models import HierarchicalProbUNet, ProbabilisticUNet
from domains.medical.task import MedicalSegmentationTask
from tests.medical.test_model_mutations_s37 import _logged
from tests.medical.test_models import TINY, squares

pytestmark = pytest.mark.usefixtures("one_thread")


def _evaluated(task: MedicalSegmentationTask, stage: str, monkeypatch) -> dict[str, float]:
    """What one evaluation batch of 2 images logs at ``stage`` (its metrics' epoch values left out)."""
    logged = _logged(task, monkeypatch)
    images, masks = squares(2, 16)
    metrics = task.val_metrics if stage == "val" else task.test_metrics
    task._evaluate({"image": images, "mask": masks, "masks": masks.repeat(1, 3, 1, 1)}, stage, metrics)
    return logged


@pytest.mark.parametrize("name, network", [("prob_unet", ProbabilisticUNet), ("hpu_net", HierarchicalProbUNet)])
def test_test_logs_the_kl_in_nats_as_validation_does(name, network, monkeypatch):
    task = MedicalSegmentationTask(network=network(**TINY[name]), num_samples=2, predict_dir=None).eval()
    task._run_seed = 0
    val = _evaluated(task, "val", monkeypatch)
    test = _evaluated(task, "test", monkeypatch)
    assert {"val/loss", "val/kl", "val/kl_nats"} <= set(val)
    assert ("val/kl_scale0_nats" in val) is (name == "hpu_net")
    # the same names under test/, with the same values on the same images
    assert test == pytest.approx({key.replace("val/", "test/", 1): value for key, value in val.items()})


def test_only_validation_kl_decides_the_collapse_warning(monkeypatch):
    """A test split's KL below ``collapse_kl`` says nothing of training: no warning reads ``test/kl*``."""
    task = MedicalSegmentationTask(
        network=ProbabilisticUNet(**TINY["prob_unet"]),
        num_samples=2,
        predict_dir=None,
        collapse_kl=1e9,
        collapse_grace_steps=0,  # its fake trainer is at step 0
    ).eval()
    task._run_seed = 0
    fitting = SimpleNamespace(state=SimpleNamespace(fn=TrainerFn.FITTING))
    monkeypatch.setattr(MedicalSegmentationTask, "trainer", property(lambda self: fitting))
    _evaluated(task, "test", monkeypatch)
    assert "test/kl_nats" in task.logged_means
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        task._warn_collapse()  # only test KL logged: nothing to warn of
    _evaluated(task, "val", monkeypatch)
    with pytest.warns(UserWarning, match=r"posterior collapse: the latent \(kl\)"):
        task._warn_collapse()

