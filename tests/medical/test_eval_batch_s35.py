"""Validation / test scores of an image do not depend on its batch: its latents come from noise seeded by its
pixels and the run's seed (``image_noise``), not from the global stream in batch order. Before, the shipped
Prob. U-Net's test GED was 0.2632 / 0.2622 / 0.2681 at ``--data.batch_size`` 4 / 8 / 16."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from domains.medical.models import MODELS
from domains.medical.models.common import diagonal_gaussian, image_noise, sample_latent
from domains.medical.task import MedicalSegmentationTask
from tests.helpers import quiet_trainer
from tests.medical.test_models import TINY, squares
from tests.medical.test_task_metrics import LOGGED

pytestmark = pytest.mark.usefixtures("one_thread")

# foreground_prior: initial logits about 0, so the samples cross the threshold; max_batch 8: the HPU-Net
# decodes 6 images x 4 samples in 4 chunks, 1 image in one
NETWORKS = {
    "prob_unet": {**TINY["prob_unet"], "foreground_prior": 0.4},
    "hpu_net": {**TINY["hpu_net"], "foreground_prior": 0.5, "max_batch": 8},
}


def _network(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    net = MODELS[name](**NETWORKS[name])
    if name == "prob_unet":  # its latents move the initial logits by about 0.03: 10x that, the samples differ
        net.fcomb.latent_proj.weight.data.mul_(10)
    return net


def _items(n: int = 6, size: int = 32) -> list[dict]:
    """``n`` images with 4 readers' masks each: the square of :func:`~tests.medical.test_models.squares`,
    marked by 0 to 3 of the readers."""
    images, masks = squares(n, size)
    readers = masks.repeat(1, 4, 1, 1)
    for i in range(n):
        readers[i, i % 4 :] = 0
    return [{"image": images[i], "mask": readers[i, :1], "masks": readers[i]} for i in range(n)]


def _validate(task: MedicalSegmentationTask, items: list[dict], batch_size: int) -> dict:
    torch.manual_seed(0)  # the run's seed; the global stream then elsewhere in each run: it does not matter
    torch.rand(batch_size)
    trainer = quiet_trainer(limit_val_batches=1.0)
    (logged,) = trainer.validate(task, dataloaders=DataLoader(items, batch_size=batch_size), verbose=False)
    return {name: logged[f"val/{name}"] for name in LOGGED.values()}


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_validation_scores_are_the_same_in_any_batch_size_and_order(name):
    task = MedicalSegmentationTask(network=_network(name), num_samples=4, predict_dir=None)
    items = _items()
    reference = _validate(task, items, 6)
    assert reference["diversity"] > 0.05 and reference["num_empty_images"] == 2  # samples that do differ
    runs = {
        "batch 1": _validate(task, items, 1),
        "batch 3": _validate(task, items, 3),
        "batch 4 (a short last one of 2)": _validate(task, items, 4),
        "reversed, batch 6": _validate(task, items[::-1], 6),
        "shuffled, batch 3": _validate(task, [items[i] for i in (4, 1, 5, 0, 3, 2)], 3),
    }
    for run, values in runs.items():
        assert values == pytest.approx(reference, abs=1e-6), run
    torch.manual_seed(1)  # another run seed: other samples
    trainer = quiet_trainer(limit_val_batches=1.0)
    (other,) = trainer.validate(task, dataloaders=DataLoader(items, batch_size=6), verbose=False)
    assert other["val/ged"] != pytest.approx(reference["ged"], abs=1e-6)


def test_image_noise_draws_each_entry_from_its_image_and_sample_leaving_the_global_stream():
    """The Prob. U-Net's layout (``shape`` (N,) over a batch of images) and the HPU-Net's (a batch of images
    repeated sample-minor, ``rows`` naming each entry's image and sample) draw the same noise; an image alone
    draws what it draws in the batch; the global generator is not touched."""
    mu, log_sigma = torch.randn(3, 2, 5), torch.randn(3, 2, 5)
    dist = diagonal_gaussian(mu, log_sigma, event_dims=2)
    seeds = [11, 22, 33]
    state = torch.get_rng_state()
    with image_noise(seeds):
        z = sample_latent(dist, (4,))  # (N, B, 2, 5): dist.sample's layout
    assert torch.equal(torch.get_rng_state(), state)
    assert z.shape == dist.sample((4,)).shape == (4, 3, 2, 5)
    for i in range(3):  # image i alone, with its own seed
        with image_noise([seeds[i]]):
            alone = sample_latent(diagonal_gaussian(mu[i : i + 1], log_sigma[i : i + 1], 2), (4,))
        torch.testing.assert_close(alone[:, 0], z[:, i], rtol=0, atol=0)
    # mu + sigma * eps: the standardised draws are normal, not mu itself
    eps = (z - mu) / log_sigma.exp()
    assert abs(float(eps.mean())) < 0.3 and 0.7 < float(eps.std()) < 1.3
    # the HPU-Net's layout, its 4 samples of each image in two chunks of 2 (a level decoded per chunk)
    rep = diagonal_gaussian(mu.repeat_interleave(2, 0), log_sigma.repeat_interleave(2, 0), 2)
    with image_noise(seeds):
        chunks = [sample_latent(rep, rows=[(i, s + j) for i in range(3) for j in range(2)]) for s in (0, 2)]
    hpu = torch.cat([c.view(3, 2, 2, 5) for c in chunks], dim=1)  # (B, N, 2, 5)
    torch.testing.assert_close(hpu, z.transpose(0, 1), rtol=0, atol=0)
    with image_noise(seeds), pytest.raises(ValueError, match=r"one seed per image\), got batch shape \(6,\)"):
        sample_latent(rep)  # 6 entries, 3 images: which image is which must be said
    nan = diagonal_gaussian(mu, torch.full_like(mu, float("nan")), 2)
    with image_noise(seeds), pytest.raises(FloatingPointError, match="sigma holds NaN"):
        sample_latent(nan, (4,))


# Training losses of the tiny networks on squares(4) after seed_everything(0), computed with the code before
# evaluation drew noise per image: training's draws (posterior rsample, HPU-Net top-k) are unchanged.
TRAINING_LOSS_BEFORE = {"prob_unet": 341.4674987792969, "hpu_net": 0.10948547720909119}


@pytest.mark.parametrize("name", sorted(TRAINING_LOSS_BEFORE))
def test_training_draws_are_unchanged(name):
    pl.seed_everything(0, verbose=False)
    task = MedicalSegmentationTask(network=MODELS[name](**TINY[name]), predict_dir=None).train()
    loss, _ = task.training_loss(*squares(4))
    assert float(loss.detach()) == pytest.approx(TRAINING_LOSS_BEFORE[name], rel=1e-6)
