"""Medical model and task lines that no test pinned (a mutation audit changed each and every test still passed):
the training loss's log name, the test stage's KL log, the per-pixel KL scale and the latent scales the
collapse warning reads, the U-Net's ``rec_per_pixel`` and N samples, the foreground-bias and sigma-clamp
values, the mask-shape check, mean pooling in the latent encoders, the heads' zero start, f_comb's depth, the
HPU-Net's latents reaching its decoder with their gradient, its average pooling, GECO in eval, ``model_name``
of a checkpoint's class path and a checkpoint's ``init_args``. Each value is derived here by
hand or from an identity, not read off the code."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics import Metric

from domains.medical.models import (
    GECO,
    HierarchicalProbUNet,
    MedicalSegmenter,
    ProbabilisticUNet,
    UNetSegmenter,
    model_name,
)
from domains.medical.models.common import bce_sum_per_image, diagonal_gaussian, init_foreground_bias
from domains.medical.models.hpu_net import HierarchicalCore
from domains.medical.models.prob_unet import AxisAlignedConvGaussian
from domains.medical.task import MedicalSegmentationTask
from shared.networks import build_network
from tests.medical.test_models import TINY, squares
from tests.medical.test_task_metrics import _Oracle

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _logged(task: MedicalSegmentationTask, monkeypatch) -> dict[str, float]:
    """Record what the task logs (name -> value; a metric object, as the evaluation losses are logged: its
    value so far) instead of handing it to a trainer."""
    logged: dict[str, float] = {}

    def log(name, value, **_):
        logged[name] = float(value.compute() if isinstance(value, Metric) else value)

    monkeypatch.setattr(task, "log", log)
    return logged


# ----------------------------------------------------------------------------------------------- the task
def test_training_step_logs_the_loss_as_train_loss(monkeypatch):
    """The step's loss is logged as ``train/loss`` (the name the progress bar, the configs' monitors and the
    notifications read) beside ``train/<term>``: the U-Net's loss is deterministic, so it equals
    ``model.loss`` on the batch."""
    task = MedicalSegmentationTask(network=UNetSegmenter(**TINY["unet"]), predict_dir=None)
    logged = _logged(task, monkeypatch)
    images, masks = squares(2, 16)
    out = task.training_step({"image": images, "mask": masks}, 0)
    expected, terms = task.model.loss(images, masks)
    assert out is not None and out.requires_grad
    assert float(out) == pytest.approx(float(expected), rel=1e-6)
    assert logged == pytest.approx(
        {"train/loss": float(expected), **{f"train/{k}": float(v) for k, v in terms.items()}}, rel=1e-6
    )


class _WithTerms(_Oracle):
    """The oracle of ``test_task_metrics`` with loss terms: rec_per_pixel 0.5, kl 0.125."""

    def loss_and_sample_logits(self, images, masks, num_samples):
        loss, _, logits = super().loss_and_sample_logits(images, masks, num_samples)
        return loss, {"rec_per_pixel": images.new_tensor(0.5), "kl": images.new_tensor(0.125)}, logits


def _evaluate(samples: torch.Tensor, stage: str, monkeypatch) -> dict[str, float]:
    """One evaluation batch of 1 image whose network samples ``samples`` (1, N, 2, 2): what the task logs."""
    task = MedicalSegmentationTask(
        network=UNetSegmenter(**TINY["unet"]), num_samples=samples.shape[1], predict_dir=None
    ).eval()
    task.model = _WithTerms(samples)
    task._run_seed = 0
    logged = _logged(task, monkeypatch)
    metrics = task.val_metrics if stage == "val" else task.test_metrics
    readers = torch.zeros(1, 4, 2, 2)
    task._evaluate({"image": torch.zeros(1, 1, 2, 2), "mask": readers[:, :1], "masks": readers}, stage, metrics)
    return logged


def test_the_test_stage_logs_the_kl_and_the_reconstruction_per_pixel(monkeypatch):
    """The test stage logs the loss, ``rec_per_pixel`` and ``kl`` the network returns (the terms the loss
    curves compare), each under ``test/``, and the KL in nats per image as validation does (``kl_nats``)."""
    logged = _evaluate(torch.ones(1, 2, 2, 2), "test", monkeypatch)
    expected = {"test/loss": 0.25, "test/rec_per_pixel": 0.5, "test/kl": 0.125, "test/kl_nats": 0.125}
    assert logged == pytest.approx(expected)


@pytest.mark.parametrize("network, pixels", [("prob_unet", 1), ("hpu_net", 16 * 16)])
def test_validation_tracks_every_kl_scale_in_nats_per_image(network, pixels, monkeypatch):
    """The collapse warning compares nats per image: the Prob. U-Net's KL already is (``kl_per_pixel``
    False, the base class's default), the HPU-Net's is per pixel and is multiplied by the H * W = 256 pixels;
    ``kl`` and each ``kl_scale<i>`` are tracked, nothing else."""
    net = {"prob_unet": ProbabilisticUNet, "hpu_net": HierarchicalProbUNet}[network](**TINY[network])
    task = MedicalSegmentationTask(network=net, predict_dir=None)
    logged = _logged(task, monkeypatch)
    terms = {"kl": torch.tensor(0.005), "kl_scale0": torch.tensor(0.002), "rec_per_pixel": torch.tensor(0.7)}
    task._track_kl(terms, torch.rand(2, 1, 16, 16), 2)
    assert logged == pytest.approx({"val/kl_nats": 0.005 * pixels, "val/kl_scale0_nats": 0.002 * pixels})
    # each batch value weighs its images: the epoch's mean per image, which the collapse warning reads
    images = {name: float(mean.weight) for name, mean in task.logged_means.items()}
    assert images == {"val/kl_nats": 2, "val/kl_scale0_nats": 2}
    assert MedicalSegmenter.kl_per_pixel is False and net.kl_per_pixel is (network == "hpu_net")


# --------------------------------------------------------------------------------------------- the U-Net
def test_unet_rec_per_pixel_is_rec_over_one_images_pixels_and_its_samples_are_n_copies():
    """``rec`` is per image (summed over its 256 pixels, averaged over the 4 images), so ``rec_per_pixel`` is
    rec / 256 (not over the batch's 1024); ``loss_and_sample_logits(..., 5)`` returns 5 copies of the map."""
    net = UNetSegmenter(**TINY["unet"]).eval()
    images, masks = squares(4, 16)
    _, terms, logits = net.loss_and_sample_logits(images, masks, 5)
    with torch.no_grad():
        single = net(images)
    assert float(terms["rec"]) == pytest.approx(float(bce_sum_per_image(single, masks)), rel=1e-6)
    assert float(terms["rec_per_pixel"]) == pytest.approx(float(terms["rec"]) / 256, rel=1e-6)
    assert logits.shape == (4, 5, 16, 16)
    torch.testing.assert_close(logits, single.expand(-1, 5, -1, -1), rtol=0, atol=0)


def test_foreground_bias_starts_at_the_asked_probability():
    """RetinaNet's prior init: bias log(p / (1 - p)), so sigmoid(bias) = p (0.05: log(1/19) = -2.944)."""
    net = UNetSegmenter(**TINY["unet"], foreground_prior=0.05)
    assert float(net.net.head.bias[0]) == pytest.approx(math.log(1 / 19), rel=1e-6)
    assert float(torch.sigmoid(net.net.head.bias[0])) == pytest.approx(0.05, rel=1e-6)
    conv = torch.nn.Conv2d(2, 1, 1)
    init_foreground_bias(conv, 0.2)
    assert float(conv.bias[0]) == pytest.approx(math.log(0.25), rel=1e-6)


@pytest.mark.parametrize("shape", [(2, 2, 16, 16), (2, 1, 8, 16)])
def test_a_mask_of_the_wrong_shape_is_refused_naming_the_expected_one(shape):
    """Two readers' masks at once, or a mask of another height: the check names the expected (B, 1, H, W)
    (torch's own size-mismatch error says nothing of masks)."""
    net = UNetSegmenter(**TINY["unet"])
    with pytest.raises(ValueError, match=rf"one mask per image of shape \(2, 1, 16, 16\).*got \({shape[0]}, "):
        net.loss(torch.rand(2, 1, 16, 16), torch.zeros(shape))


def test_sigma_is_clamped_to_e_minus_6_and_e_3():
    """log-sigma 2 stays (sigma e^2), 5 and -7 are clamped to 3 and -6 (``LOG_SIGMA_RANGE``)."""
    d = diagonal_gaussian(torch.zeros(1, 3), torch.tensor([[2.0, 5.0, -7.0]]), event_dims=1)
    expected = torch.tensor([[math.exp(2), math.exp(3), math.exp(-6)]])
    torch.testing.assert_close(d.base_dist.scale, expected, rtol=1e-6, atol=0)


# ------------------------------------------------------------------------------------------ Prob. U-Net
def test_latent_encoder_reads_the_mean_pooled_map():
    """The latent head's input is the last encoder map averaged over H and W (global average pooling, not its
    maximum): with every head weight 0.1 and bias 0, mu = 0.1 * the sum over channels of each channel's mean."""
    enc = AxisAlignedConvGaussian(1, [4, 4], 2)
    x = torch.rand(1, 1, 8, 8)
    with torch.no_grad():
        enc.head.weight.fill_(0.1)
        enc.head.bias.zero_()
        last = enc.encoder(x)[-1]
        mu = 0.1 * last.sum(dim=(2, 3)).sum(1) / (last.shape[2] * last.shape[3])
        torch.testing.assert_close(enc(x).mean, mu[:, None].expand(1, 2), rtol=1e-5, atol=1e-7)


def test_prob_unet_starts_with_prior_and_posterior_at_n01_and_builds_fcomb_layers_1x1_convs():
    """The latent heads start at zero: prior and posterior are N(0, I) and the KL is exactly 0.
    ``fcomb_layers=3``: 3 ReLU'd 1x1 convs (the first split into its feature and latent parts) and the logits
    conv, so 4 convs in all."""
    net = ProbabilisticUNet(**TINY["prob_unet"], fcomb_layers=3)
    for head in (net.prior.head, net.posterior.head):
        assert not head.weight.any() and not head.bias.any()
    _, terms = net.loss(*squares(2, 16))
    assert float(terms["kl"]) == 0.0
    convs = [m for m in net.fcomb.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 4 and net.fcomb.out is convs[-1]


# ---------------------------------------------------------------------------------------------- HPU-Net
def test_hpu_net_reconstruction_gradient_on_the_posterior_is_the_derivative_along_its_sample():
    """beta 0, no GECO, all pixels: the loss is the reconstruction of the posterior's latents z = mu + sigma *
    eps. Reparameterised, the gradient on a posterior head's mu bias is the derivative of the loss as that bias
    moves z with the same eps (central difference, float64, same seed): not 0, as for a ``sample()`` or a
    latent detached before the decoder."""
    net = HierarchicalProbUNet(**TINY["hpu_net"], geco=False, beta=0.0, top_k_fraction=None).double()
    images, masks = (t.double() for t in squares(2, 16))

    def loss() -> torch.Tensor:
        torch.manual_seed(1)  # the same eps for each evaluation
        return net.loss(images, masks)[0]

    loss().backward()
    for head in net.posterior.heads:  # coarsest first; channel 0 is a mu
        step = 1e-5
        with torch.no_grad():
            head.bias[0] += step
            up = float(loss())
            head.bias[0] -= 2 * step
            down = float(loss())
            head.bias[0] += step
        derivative = (up - down) / (2 * step)
        assert abs(derivative) > 1e-6
        assert float(head.bias.grad[0]) == pytest.approx(derivative, rel=1e-4)


def test_hpu_encoder_halves_each_level_by_2x2_average_pooling():
    """The second level's input is the mean (not the max) of each 2x2 block of the first level's map."""
    core = HierarchicalCore(1, [4, 4], [1], 1, 1)
    seen = []
    core.encoder[1].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    with torch.no_grad():
        first = core.encode(torch.rand(1, 1, 4, 4))[0]
    blocks = first.reshape(1, 4, 2, 2, 2, 2).mean(dim=(3, 5))
    torch.testing.assert_close(seen[0], blocks, rtol=1e-6, atol=1e-7)


def test_geco_in_eval_returns_lambda_times_the_constraint_and_keeps_its_state():
    """Eval: lambda * (rec - kappa) = 2 * (0.25 - 0.05) = 0.4, and no update of lambda or the moving average."""
    geco = GECO(kappa=0.05, init_lambda=2.0).eval()
    assert float(geco(torch.tensor(0.25))) == pytest.approx(0.4, rel=1e-6)
    assert float(geco.lagmul) == 2.0 and float(geco.ma) == 0.0 and not bool(geco.initialised)


# ---------------------------------------------------------------------------------- names and checkpoints
def test_model_name_of_a_checkpoints_class_path():
    """A checkpoint's class path of the suite's model names it; one not imported is not imported (None)."""
    assert model_name("domains.medical.models.ProbabilisticUNet") == "prob_unet"
    assert model_name("domains.medical.models.hpu_net.HierarchicalProbUNet") == "hpu_net"
    assert model_name("some_lab_package_not_imported.models.Net") is None


def test_a_checkpoints_init_args_rebuild_its_settings_not_the_defaults():
    """``build_network`` builds the class with the checkpoint's ``init_args``: beta, kappa and top-k as saved."""
    init_args = {
        **TINY["hpu_net"],
        "channels": [8, 8, 8, 8, 8],
        "beta": 0.5,
        "kappa": 0.1,
        "top_k_fraction": 0.1,
    }
    net = build_network(
        {"class_path": "domains.medical.models.HierarchicalProbUNet", "init_args": init_args}, MedicalSegmenter
    )
    assert isinstance(net, HierarchicalProbUNet)
    assert (net.beta, net.geco.kappa, net.top_k_fraction) == (0.5, 0.1, 0.1)
    assert {name: net.init_args[name] for name in init_args} == init_args
