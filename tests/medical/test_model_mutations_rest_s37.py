"""More medical model and task lines no test pinned (a mutation audit changed each and every test still passed):
the HPU-Net's samples per image in a batch and per chunk, its heads' (mu, log-sigma) order and sample modes, the
Prob. U-Net's deterministic forward at the prior mean, its foreground prior and beta, the HPU-Net's GECO and
top-k defaults (DESIGN.md section 6: kappa 0.05, top-k 2 %), a NaN sigma on both sampling paths, and the task's
thresholds and outputs in validation and predict. Each value is derived by hand or from an identity."""

from __future__ import annotations

import math

import pytest
import torch

import domains.medical.data as D
from domains.medical.models import HierarchicalProbUNet, ProbabilisticUNet, UNetSegmenter
from domains.medical.models.common import diagonal_gaussian, image_noise, sample_latent
from domains.medical.task import MedicalSegmentationTask
from tests.medical.test_model_mutations_s37 import _logged
from tests.medical.test_models import TINY, squares
from tests.medical.test_task_metrics import _Oracle

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _hpu() -> HierarchicalProbUNet:
    return HierarchicalProbUNet(**TINY["hpu_net"]).eval()


# ----------------------------------------------------------------------------------------------- HPU-Net
def test_hpu_net_samples_of_an_image_in_a_batch_are_its_samples_alone():
    """Every scale at the prior mean (no noise): an image's 2 samples are its own decoding, equal to those of the
    image sampled alone (the decoder's batch is image-major, sample-minor; read the other way, sample 1 of image 0
    would be image 1's)."""
    net = _hpu()
    x = torch.rand(2, 1, 32, 32)
    at_mean = [True] * net.num_latent_scales
    with torch.no_grad():
        both = net.sample_logits(x, 2, sample_mode=at_mean)
        for i in range(2):
            alone = net.sample_logits(x[i : i + 1], 2, sample_mode=at_mean)
            torch.testing.assert_close(both[i], alone[0], rtol=1e-5, atol=1e-5)
    assert (both[0] - both[1]).abs().max() > 1e-3  # the two images do decode differently


def test_hpu_net_samples_do_not_depend_on_how_many_maps_the_decoder_runs_at_once():
    """Under the same ``image_noise`` seed, sample k draws the noise of (image, sample k) whether the decoder
    runs 2 maps at a time (``max_batch`` 2: chunks of samples 0-1 and 2-3) or all 4 at once; sample 2 is not
    sample 0 again."""
    net = _hpu()
    x = torch.rand(1, 1, 32, 32)
    out = {}
    for max_batch in (2, 64):
        net.max_batch = max_batch
        with torch.no_grad(), image_noise([7]):
            out[max_batch] = net.sample_logits(x, 4)
    torch.testing.assert_close(out[2], out[64], rtol=1e-5, atol=1e-5)
    assert (out[64][0, 2] - out[64][0, 0]).abs().max() > 1e-3


def test_hpu_net_heads_give_mu_first_and_log_sigma_second():
    """With every head's weights 0 and bias (0.7, -1.0) each latent is N(0.7, e^-1): the head's first channel
    is mu, its second log-sigma; at the mean the latent used is 0.7."""
    net = _hpu()
    with torch.no_grad():
        for head in net.prior.heads:
            head.weight.zero_()
            head.bias.copy_(torch.tensor([0.7, -1.0]))
        encoded = net.prior.encode(torch.rand(1, 1, 32, 32))
        _, dists, used = net.prior.decode_latents(encoded, use_mean=[True] * net.num_latent_scales)
    assert len(dists) == net.num_latent_scales == 4
    for dist, z in zip(dists, used):
        torch.testing.assert_close(dist.mean, torch.full_like(dist.mean, 0.7))
        torch.testing.assert_close(dist.base_dist.scale, torch.full_like(dist.mean, math.exp(-1.0)))
        torch.testing.assert_close(z, torch.full_like(z, 0.7))


def test_hpu_net_sample_modes_name_the_scales_left_at_the_mean():
    """Coarsest first, True = at the mean: "global" samples only the coarsest scale, "local" all but it."""
    net = _hpu()
    assert net._use_mean("global") == [False, True, True, True]
    assert net._use_mean("local") == [True, False, False, False]
    assert net._use_mean("all") == [False] * 4


def test_hpu_net_defaults_are_design_s_kappa_and_top_k():
    """DESIGN.md section 6: GECO with kappa 0.05 per pixel and a stochastic top-k of 2 % of the pixels."""
    net = HierarchicalProbUNet(**TINY["hpu_net"])
    assert net.geco is not None and net.geco.kappa == 0.05
    assert net.top_k_fraction == 0.02 and net.stochastic_top_k


# ------------------------------------------------------------------------------------------ Prob. U-Net
def test_prob_unet_forward_is_deterministic_at_the_prior_mean():
    """``forward`` is the best guess at the prior mean: the same logits on every call, equal to
    ``sample_logits(use_mean=True)`` (whose N samples are all the same) and to f_comb of the prior's mean.
    The fresh prior is N(0, I), so a sample instead of the mean would change every call."""
    net = ProbabilisticUNet(**TINY["prob_unet"]).eval()
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        a, b = net(x), net(x)
        mean = net.sample_logits(x, 2, use_mean=True)
        by_hand = net.fcomb(net.features(x), net.prior(x).mean[:, None])
    assert a.shape == (1, 1, 16, 16)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(mean[:, 0], mean[:, 1], rtol=0, atol=0)
    torch.testing.assert_close(a, mean[:, :1], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(a, by_hand, rtol=1e-6, atol=1e-6)


def test_prob_unet_logits_layer_starts_at_the_foreground_prior_0_05():
    """The logits conv's bias is log(0.05 / 0.95) by default: with its weights zeroed, every pixel's foreground
    probability is exactly 0.05."""
    net = ProbabilisticUNet(**TINY["prob_unet"]).eval()
    assert float(net.fcomb.out.bias[0]) == pytest.approx(math.log(1 / 19), rel=1e-6)
    with torch.no_grad():
        net.fcomb.out.weight.zero_()
        probs = net(torch.rand(1, 1, 16, 16)).sigmoid()
    torch.testing.assert_close(probs, torch.full_like(probs, 0.05))


def test_prob_unet_default_beta_is_1_so_the_loss_is_the_plain_elbo():
    """beta defaults to 1 (Kohl et al.'s ELBO): loss = rec + KL."""
    net = ProbabilisticUNet(**TINY["prob_unet"])
    with torch.no_grad():  # a posterior away from the prior, so the KL is not 0
        net.posterior.head.bias.normal_()
        loss, terms = net.loss(*squares(2, 16))
    assert net.beta == 1.0 and float(terms["kl"]) > 0.01
    assert float(loss) == pytest.approx(float(terms["rec"] + terms["kl"]), rel=1e-6)


# ------------------------------------------------------------------------------------------ a NaN sigma
@pytest.mark.parametrize("per_image", [False, True])
def test_a_nan_sigma_raises_floating_point_error_on_both_sampling_paths(per_image):
    """A NaN log-sigma (diverged weights) says so with a FloatingPointError, drawn from torch's global stream
    (training) or under ``image_noise`` (evaluation), not torch.normal's RuntimeError nor NaN latents."""
    dist = diagonal_gaussian(torch.zeros(1, 3), torch.tensor([[0.0, float("nan"), 0.0]]), 1)
    with pytest.raises(FloatingPointError, match="sigma holds NaN"):
        if per_image:
            with image_noise([1]):
                sample_latent(dist, (2,))
        else:
            sample_latent(dist, (2,))


# ---------------------------------------------------------------------------------------------- the task
@pytest.mark.parametrize("stage", ["val", "test"])
def test_validation_and_test_score_at_the_task_s_threshold(stage, monkeypatch):
    """threshold 0.3, every sample 0.4 on the reader's 2x2 lesion and 0 elsewhere: at 0.3 the samples are the
    lesion (Dice 1); at 0.5 they would be empty (Dice 0). Validation and test use the same threshold."""
    task = MedicalSegmentationTask(
        network=UNetSegmenter(**TINY["unet"]), num_samples=2, threshold=0.3, predict_dir=None
    ).eval()
    task.model = _Oracle(torch.zeros(1, 2, 4, 4))  # logits -100: probability 0
    task.model.logits[..., :2, :2] = math.log(0.4 / 0.6)
    task._run_seed = 0
    _logged(task, monkeypatch)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :2] = 1
    metrics = task.val_metrics if stage == "val" else task.test_metrics
    task._evaluate({"image": torch.zeros(1, 1, 4, 4), "mask": mask, "masks": mask}, stage, metrics)
    assert float(metrics.compute()["dice_readers"]) == pytest.approx(1.0)


class _Alternating(torch.nn.Module):
    """Samples alternate probability 0 and 1 everywhere, except pixel (0, 0): logit 0, p = 0.5 in every sample."""

    def sample_logits(self, images, num_samples, **_):
        z = torch.tensor([-30.0, 30.0]).repeat(num_samples)[:num_samples].view(1, num_samples, 1, 1)
        z = z.expand(images.shape[0], num_samples, *images.shape[-2:]).clone()
        z[..., 0, 0] = 0.0
        return z


def _predict(**task_args) -> dict:
    task = MedicalSegmentationTask(
        network=UNetSegmenter(**TINY["unet"]), num_samples=4, predict_dir=None, **task_args
    ).eval()
    task.model = _Alternating()
    task.on_predict_start()
    return task.predict_step(D.pad_collate([{"image": torch.rand(1, 8, 8), "id": "0"}]), 0)


def test_predict_writes_the_mean_the_threshold_at_ge_and_the_asked_uncertainty():
    """Samples 0, 1, 0, 1: mean probability 0.5 (their maximum would be 1); variance 0.25 (the entropy of the
    mean would be 1 bit). A probability of exactly the threshold 0.5 is foreground in all 4 samples, as
    validation counts it (``>=``)."""
    out = _predict(predict_uncertainty="variance")
    assert float(out["mean"][0, 3, 3]) == pytest.approx(0.5, abs=1e-6)
    assert float(out["uncertainty"][0, 3, 3]) == pytest.approx(0.25, abs=1e-6)
    assert out["samples"][0, :, 3, 3].tolist() == [False, True, False, True]
    assert out["samples"][0, :, 0, 0].tolist() == [True] * 4
    assert float(_predict()["uncertainty"][0, 3, 3]) == pytest.approx(1.0, abs=1e-6)  # the default: entropy
