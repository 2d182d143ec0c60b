"""Medical predict and evaluation draw their latents from generators of their own, never torch's global one.

``predict_step`` seeded the global generator per image (``fork_rng`` + ``manual_seed``): another thread's seeding
or draws in the meantime changed an image's samples (23 of 100 predicts of one scan differed while a second
thread reseeded). The loss's posterior draw came from the global stream in batch order: ``val/loss`` of one
validation set moved by up to 10 % (Prob. U-Net) and 1 % (HPU-Net) between batch sizes and run seeds."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from domains.medical import data as D
from domains.medical.models.common import diagonal_gaussian, image_noise, posterior_latent, sample_latent
from domains.medical.task import MedicalSegmentationTask
from tests.helpers import quiet_trainer
from tests.medical.test_eval_batch_s35 import _items, _network

pytestmark = pytest.mark.usefixtures("one_thread")


def _reseed_elsewhere(*_) -> None:
    """What another thread may do while a predict runs: seed torch's global generator."""
    torch.manual_seed(12345)


def _module_before_sampling(task: MedicalSegmentationTask) -> torch.nn.Module:
    """A module the network runs after predict starts and before it draws its latents."""
    if task.model_name == "prob_unet":
        return task.model.prior
    return task.model.prior.encoder[0]  # HPU-Net: the prior core's first encoder level


@pytest.mark.parametrize("name", ["prob_unet", "hpu_net"])
def test_predict_samples_do_not_move_with_the_global_generator_and_are_validation_s(name):
    task = MedicalSegmentationTask(network=_network(name), num_samples=4, predict_dir=None).eval()
    scan = torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(3))
    batch = D.pad_collate([{"image": scan, "id": "0"}])
    torch.manual_seed(7)  # the run's seed, read when predict starts
    task.on_predict_start()
    reference = task.predict_step(batch, 0)
    assert 0 < float(reference["uncertainty"].mean())  # samples that do differ

    state = torch.get_rng_state()
    hook = _module_before_sampling(task).register_forward_hook(_reseed_elsewhere)
    try:
        reseeded = task.predict_step(batch, 0)
    finally:
        hook.remove()
    torch.rand(5)  # and the global stream elsewhere: the predict neither reads nor seeds it
    again = task.predict_step(batch, 0)
    for key in ("samples", "mean", "uncertainty"):
        torch.testing.assert_close(reseeded[key], reference[key], rtol=0, atol=0, msg=key)
        torch.testing.assert_close(again[key], reference[key], rtol=0, atol=0, msg=key)

    torch.set_rng_state(state)
    task.predict_step(batch, 0)
    assert torch.equal(torch.get_rng_state(), state)  # left as it was
    # the route validation and the demo draw by: the same image gets the same samples
    with image_noise([task._image_seed(scan[None])]):
        probs = task.sample(scan[None])
    torch.testing.assert_close(reference["mean"], probs.mean(dim=1), rtol=0, atol=0)


def _validation_losses(task: MedicalSegmentationTask, items: list[dict], batch_size: int, seed: int) -> dict:
    torch.manual_seed(seed)  # the run's seed: the images' noise mixes it in, so keep it ...
    torch.rand(seed + batch_size)  # ... and move the global stream, which must not matter
    trainer = quiet_trainer(limit_val_batches=1.0)
    (logged,) = trainer.validate(task, dataloaders=DataLoader(items, batch_size=batch_size), verbose=False)
    return {key: logged[key] for key in ("val/loss", "val/rec_per_pixel", "val/kl", "val/kl_nats")}


@pytest.mark.parametrize("name", ["prob_unet", "hpu_net"])
def test_validation_loss_is_the_mean_over_images_in_any_batch_size_and_global_state(name):
    task = MedicalSegmentationTask(network=_network(name), num_samples=2, predict_dir=None)
    items = _items(6)
    reference = _validation_losses(task, items, 6, seed=0)
    runs = {
        "batch 1": _validation_losses(task, items, 1, seed=0),
        "batch 4 (a short last one of 2)": _validation_losses(task, items, 4, seed=0),
        "reversed, batch 3": _validation_losses(task, items[::-1], 3, seed=0),
    }
    for run, values in runs.items():
        assert values == pytest.approx(reference, rel=1e-5, abs=1e-6), run
    # the per-image draw still follows the run's seed: another seed, another posterior draw
    assert _validation_losses(task, items, 6, seed=1)["val/loss"] != pytest.approx(reference["val/loss"])


def test_posterior_draw_is_rsample_in_training_and_per_image_under_image_noise():
    loc = torch.randn(2, 3, requires_grad=True)
    dist = diagonal_gaussian(loc, torch.zeros(2, 3), event_dims=1)
    torch.manual_seed(0)
    drawn = posterior_latent(dist)
    torch.manual_seed(0)
    torch.testing.assert_close(drawn, dist.rsample(), rtol=0, atol=0)  # training's draws unchanged
    assert drawn.requires_grad  # reparameterised: the loss trains the posterior net through it

    state = torch.get_rng_state()
    with image_noise([11, 12]):
        pair = posterior_latent(dist)
        prior_sample_0 = sample_latent(dist)
    with image_noise([12]):
        second_alone = posterior_latent(diagonal_gaussian(loc[1:], torch.zeros(1, 3), event_dims=1))
    assert torch.equal(torch.get_rng_state(), state)
    torch.testing.assert_close(pair[1:], second_alone, rtol=0, atol=0)  # its batch mate does not matter
    assert not torch.allclose(pair, prior_sample_0)  # a stream apart from the prior samples'
    nan_sigma = diagonal_gaussian(torch.zeros(1, 3), torch.tensor([[0.0, float("nan"), 0.0]]), 1)
    with image_noise([1]):
        assert torch.isnan(posterior_latent(nan_sigma)[0, 1])  # NaN, as rsample gives: the loss shows it
