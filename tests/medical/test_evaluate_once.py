"""Validation / test compute the loss and the samples in one pass (``loss_and_sample_logits``): the same
loss and the same samples as ``loss`` then ``sample_logits``, with the shared networks run once."""

from __future__ import annotations

import math

import pytest
import torch

from domains.medical.metrics import SegmentationUncertaintyMetrics
from domains.medical.models import MODELS
from domains.medical.models.common import image_noise
from domains.medical.task import MedicalSegmentationTask
from tests.medical.test_models import TINY

pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(n: int = 3, size: int = 16) -> dict:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(n, 1, size, size, generator=g)
    masks = (torch.rand(n, 3, size, size, generator=g) < 0.3).float()
    return {"image": images, "mask": masks[:, :1], "masks": masks}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_one_pass_gives_the_loss_and_samples_of_the_two_calls(name):
    """Same random draws in the same order (posterior sample, then prior samples): equal to the last bit."""
    torch.manual_seed(0)
    net = MODELS[name](**TINY[name]).eval()
    batch = _batch()
    images, masks = batch["image"], batch["mask"]
    with torch.no_grad():
        torch.manual_seed(1)
        loss, terms = net.loss(images, masks)
        logits = net.sample_logits(images, 5)
        torch.manual_seed(1)
        loss1, terms1, logits1 = net.loss_and_sample_logits(images, masks, 5)
    torch.testing.assert_close(loss1, loss, rtol=0, atol=0)
    assert terms1.keys() == terms.keys()
    for key in terms:
        torch.testing.assert_close(terms1[key], terms[key], rtol=0, atol=0)
    assert logits1.shape == logits.shape == (3, 5, 16, 16)
    torch.testing.assert_close(logits1, logits, rtol=0, atol=0)
    if name != "unet":  # the samples do differ between draws: a real sample distribution, not copies
        assert not torch.equal(logits1[:, 0], logits1[:, 1])
    with pytest.raises(ValueError, match="num_samples"):
        net.loss_and_sample_logits(images, masks, 0)


def _shared_part(net: torch.nn.Module) -> torch.nn.Module:
    """A module of the network part both the loss and the samples need (the U-Net's decoder: its encoder runs
    through ``forward_features``, which module hooks do not see)."""
    if hasattr(net, "net"):  # U-Net
        return net.net.backbone.decoder
    if hasattr(net, "unet"):  # Prob. U-Net
        return net.unet.decoder
    return net.prior.encoder[0]  # HPU-Net: the prior core's first encoder level


@pytest.mark.parametrize("name", sorted(MODELS))
def test_evaluate_runs_the_shared_network_once_and_updates_the_metrics(name, monkeypatch):
    torch.manual_seed(0)
    task = MedicalSegmentationTask(network=MODELS[name](**TINY[name]), num_samples=4, predict_dir=None).eval()
    calls = []
    _shared_part(task.model).register_forward_hook(lambda *_: calls.append(1))
    prior_calls = []
    if name == "prob_unet":
        task.model.prior.register_forward_hook(lambda *_: prior_calls.append(1))
    logged = {}
    monkeypatch.setattr(task, "log", lambda key, value, **_: logged.setdefault(key, value))
    batch = _batch()
    torch.manual_seed(5)
    with torch.no_grad():
        task._evaluate(batch, "test", task.test_metrics)
    assert len(calls) == 1  # the two calls ran it twice
    if name == "prob_unet":
        assert len(prior_calls) == 1
    # what is logged and scored is the network's own loss and samples on the batch (same draws)
    with torch.no_grad(), image_noise([task._image_seed(image) for image in batch["image"]]):  # as _evaluate
        loss, _ = task.model.loss(batch["image"], batch["mask"])
        probs = task.model.sample_logits(batch["image"], 4).sigmoid()
    torch.testing.assert_close(logged["test/loss"].compute(), loss)  # the epoch's mean so far: one batch
    reference = SegmentationUncertaintyMetrics()
    reference.update(probs >= task.threshold, probs.mean(dim=1, keepdim=True), batch["masks"])
    values, expected = task.test_metrics.compute(), reference.compute()
    assert int(values["num_samples"]) == 4 and math.isfinite(float(values["ged"]))
    for key in expected:
        torch.testing.assert_close(values[key], expected[key], rtol=0, atol=0, msg=key)
