"""Medical segmenters as plain nn.Modules: shapes, sampling cost, KL, GECO, top-k CE, short training runs."""

from __future__ import annotations

import copy
import itertools
import math
from pathlib import Path

import pytest
import torch
import yaml

from domains.medical.models import (
    GECO,
    MODELS,
    HierarchicalProbUNet,
    ProbabilisticUNet,
    UNetSegmenter,
)
from domains.medical.models.common import instance_norm_as_group_norm, select_top_k
from domains.medical.predict import uncertainty_map

TINY = {
    "unet": {"channels": (8, 16)},
    "prob_unet": {"channels": (8, 16), "latent_dim": 3},
    "hpu_net": {"channels": (8, 8, 8, 8, 8), "blocks_per_level": 1},
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def squares(n: int = 8, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Bright squares on noise with the square as the mask: a task any of the models can learn in 30 steps."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, size, size, generator=g) * 0.3
    masks = torch.zeros(n, 1, size, size)
    for i in range(n):
        y, x = torch.randint(2, size - 12, (2,), generator=g).tolist()
        images[i, 0, y : y + 10, x : x + 10] += 0.6
        masks[i, 0, y : y + 10, x : x + 10] = 1
    return images, masks


@pytest.mark.parametrize("name", list(TINY))
def test_shapes_and_interface(name):
    net = MODELS[name](**TINY[name])
    images, masks = squares(3)
    loss, terms = net.loss(images, masks)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert all(v.ndim == 0 and torch.isfinite(v) for v in terms.values())
    assert net.sample_logits(images, 5).shape == (3, 5, 32, 32)
    assert net(images).shape == (3, 1, 32, 32)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)|one mask per image"):
        net.loss(images, masks[:, 0])


def test_unet_samples_are_copies_and_probabilistic_samples_differ():
    images, _ = squares(2)
    u = UNetSegmenter(channels=(8, 16)).sample_logits(images, 4)
    assert torch.equal(u[:, 0], u[:, 3])
    p = ProbabilisticUNet(channels=(8, 16), latent_dim=3)
    torch.nn.init.normal_(p.prior.head.weight, std=1.0)  # a non-degenerate prior (the head starts at zero)
    s = p.sample_logits(images, 4)
    assert not torch.allclose(s[:, 0], s[:, 1])


def _count_calls(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_prob_unet_draws_n_samples_from_one_unet_pass():
    net = ProbabilisticUNet(channels=(8, 16), latent_dim=3)
    torch.nn.init.normal_(net.prior.head.weight, std=1.0)
    unet_calls, prior_calls, fcomb_calls = (_count_calls(m) for m in (net.unet, net.prior, net.fcomb))
    images, _ = squares(2)
    samples = net.sample_logits(images, 16)
    assert samples.shape == (2, 16, 32, 32)
    assert unet_calls[0] == 1 and prior_calls[0] == 1 and fcomb_calls[0] == 1
    assert len({tuple(samples[0, k, :2, :2].flatten().tolist()) for k in range(16)}) == 16


def test_fcomb_equals_concatenation_followed_by_1x1_convs():
    """The cheap f_comb is exactly conv1x1(concat(features, broadcast z)) -> ReLU ... -> logits."""
    net = ProbabilisticUNet(channels=(8, 16), latent_dim=3)
    f = net.fcomb
    c = f.feature_proj.in_channels
    feats, z = torch.randn(2, c, 6, 5), torch.randn(2, 4, 3)
    out = f(feats, z)
    for b in range(2):
        for n in range(4):
            x = torch.cat([feats[b : b + 1], z[b, n].view(1, 3, 1, 1).expand(1, 3, 6, 5)], dim=1)
            weight = torch.cat([f.feature_proj.weight, f.latent_proj.weight[..., None, None]], dim=1)
            h = torch.relu(torch.nn.functional.conv2d(x, weight, f.feature_proj.bias))
            for conv in f.hidden:
                h = torch.relu(conv(h))
            torch.testing.assert_close(out[b, n], f.out(h)[0, 0], atol=1e-5, rtol=1e-5)


def test_hpu_net_encodes_once_per_sampling_call():
    net = HierarchicalProbUNet(**TINY["hpu_net"], max_batch=4)
    encoder_calls = _count_calls(net.prior.encoder[0])
    head_calls = _count_calls(net.prior.heads[0])
    out = net.sample_logits(squares(2)[0], 6)
    assert out.shape == (2, 6, 32, 32)
    assert encoder_calls[0] == 1
    assert head_calls[0] == 3  # decoder: 12 maps in chunks of max_batch // B = 2 samples


def _copy_prior_into_posterior(prior: torch.nn.Module, posterior: torch.nn.Module) -> None:
    """Posterior := prior, with zero weight on its extra mask input channel: both give the same Gaussians."""
    prior_state = prior.state_dict()
    with torch.no_grad():
        for name, p in posterior.state_dict().items():
            q = prior_state[name]
            p.zero_()
            p[tuple(slice(0, s) for s in q.shape)] = q


def test_prob_unet_kl_is_zero_when_posterior_equals_prior():
    net = ProbabilisticUNet(channels=(8, 16), latent_dim=3)
    torch.nn.init.normal_(net.prior.head.weight, std=0.5)
    torch.nn.init.normal_(net.prior.head.bias, std=0.5)
    images, masks = squares(3)
    _, terms = net.loss(images, masks)
    assert terms["kl"] > 1e-3  # different nets: positive KL
    _copy_prior_into_posterior(net.prior, net.posterior)
    _, terms = net.loss(images, masks)
    assert abs(float(terms["kl"])) < 1e-6


def test_hpu_net_kl_is_zero_when_posterior_equals_prior():
    net = HierarchicalProbUNet(**TINY["hpu_net"], geco=False)
    images, masks = squares(3)
    _, terms = net.loss(images, masks)
    assert terms["kl"] > 1e-6
    _copy_prior_into_posterior(net.prior, net.posterior)
    _, terms = net.loss(images, masks)
    for level in range(4):  # the prior re-run with the posterior's latents gives the same conditionals
        assert abs(float(terms[f"kl_scale{level}"])) < 1e-7


def test_clamped_log_sigma_keeps_the_loss_finite():
    net = ProbabilisticUNet(channels=(8, 16), latent_dim=3)
    with torch.no_grad():
        net.prior.head.bias[3:] = -1e4  # log-sigma of -10000: sigma underflows to 0 without the clamp
        net.posterior.head.bias[3:] = 1e4  # and overflows here
    loss, terms = net.loss(*squares(2))
    assert torch.isfinite(loss) and torch.isfinite(terms["kl"])
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_geco_lambda_rises_above_kappa_and_never_goes_negative():
    geco = GECO(kappa=0.05, decay=0.99, rate=0.1, init_lambda=1.0)
    # Hand-computed first two steps: C = 0.55 -> ma = 0.55, lambda = 1 + 0.1 * 0.55 = 1.055.
    assert float(geco(torch.tensor(0.6), bound=0.5)) == pytest.approx(0.1)  # an explicit bound; then reset
    geco = GECO(kappa=0.05, decay=0.99, rate=0.1, init_lambda=1.0)
    term = geco(torch.tensor(0.6))
    assert float(term) == pytest.approx(1.0 * 0.55)
    assert float(geco.lagmul) == pytest.approx(1.055)
    geco(torch.tensor(0.3))  # ma = 0.99 * 0.55 + 0.01 * 0.25 = 0.547
    assert float(geco.ma) == pytest.approx(0.547)
    assert float(geco.lagmul) == pytest.approx(1.055 + 0.0547)
    lambdas = [float(geco.lagmul)]
    for _ in range(20):  # reconstruction above the bound: lambda keeps rising
        geco(torch.tensor(0.5))
        lambdas.append(float(geco.lagmul))
    assert all(b > a for a, b in itertools.pairwise(lambdas))
    for _ in range(3000):  # far below the bound: lambda falls to 0 and stays there
        geco(torch.tensor(0.0))
        assert float(geco.lagmul) >= 0.0
    assert float(geco.lagmul) == 0.0
    # The gradient of the GECO term is lambda times the current batch's reconstruction gradient.
    geco = GECO(rate=0.0, init_lambda=2.0)
    rec = torch.tensor(0.4, requires_grad=True)
    geco(rec).backward()
    assert float(rec.grad) == pytest.approx(2.0)
    # Evaluation mode leaves the state alone.
    geco.eval()
    before = (float(geco.lagmul), float(geco.ma))
    geco(torch.tensor(5.0))
    assert (float(geco.lagmul), float(geco.ma)) == before


def test_shipped_hpu_net_latents_carry_a_signal_at_initialisation():
    """Regression for the collapse on real LIDC (issue 20): hpu_net.yaml's network, untrained, at 128 px.

    With the paper's norm-free units the posterior's latent means differ across images by 0.0002-0.03 against
    a sigma of 1, so the decoder learns to ignore them and the KL collapses; batch norm gives 0.1-0.35.
    """
    config = Path(__file__).parents[2] / "domains" / "medical" / "configs" / "hpu_net.yaml"
    kwargs = yaml.safe_load(config.read_text())["model"]["network"]["init_args"]
    net = HierarchicalProbUNet(**kwargs).train()
    images, masks = squares(4, 128)
    with torch.no_grad():
        _, posteriors, _ = net.posterior.decode_latents(
            net.posterior.encode(torch.cat([images, masks - 0.5], 1))
        )
    spread = [float(q.mean.std()) for q in posteriors]
    assert min(spread) > 0.05, f"posterior latent means spread {spread} across images: latents will collapse"


@pytest.mark.parametrize("affine", [False, True])
def test_instance_norm_as_group_norm_changes_nothing_but_speed(affine):
    from monai.networks.blocks.dynunet_block import UnetBasicBlock

    block = UnetBasicBlock(2, 3, 6, kernel_size=3, stride=1, norm_name=("instance", {"affine": affine}))
    block = block.double()  # float64: the two kernels sum in different orders
    if affine:
        with torch.no_grad():
            for norm in (block.norm1, block.norm2):
                norm.weight.uniform_(0.5, 1.5)
                norm.bias.uniform_(-0.5, 0.5)
    swapped = instance_norm_as_group_norm(copy.deepcopy(block))
    assert not any(isinstance(m, torch.nn.InstanceNorm2d) for m in swapped.modules())
    assert block.state_dict().keys() == swapped.state_dict().keys()
    x = torch.randn(4, 3, 10, 10, dtype=torch.float64)
    out, out_swapped = block(x), swapped(x)
    torch.testing.assert_close(out_swapped, out)
    out.square().sum().backward()
    out_swapped.square().sum().backward()
    for a, b in zip(block.parameters(), swapped.parameters()):
        torch.testing.assert_close(b.grad, a.grad)
    net = ProbabilisticUNet(**TINY["prob_unet"])  # swaps its own norms; checkpoints keep their keys
    assert not any(isinstance(m, torch.nn.InstanceNorm2d) for m in net.modules())
    assert any(isinstance(m, torch.nn.GroupNorm) for m in net.modules())


def test_prob_unet_channels_last_option_changes_nothing_but_the_layout():
    """The CPU layout option (benchmarks/prob_unet_speed.py) keeps the state dict, the loss and the gradients."""
    nets = {}
    for channels_last in (False, True):
        torch.manual_seed(0)
        # float32: float64 convolutions do not run on oneDNN and ignore the layout
        nets[channels_last] = ProbabilisticUNet(**TINY["prob_unet"], channels_last=channels_last)
    assert nets[False].state_dict().keys() == nets[True].state_dict().keys()
    images = torch.randn(3, 1, 16, 16)
    masks = (torch.rand(3, 1, 16, 16) < 0.3).float()
    losses = {}
    for channels_last, net in nets.items():
        torch.manual_seed(1)  # the same posterior sample
        losses[channels_last], _ = net.loss(images, masks)
        losses[channels_last].backward()
    assert nets[True].features(images).is_contiguous(memory_format=torch.channels_last)
    assert not nets[False].features(images).is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(losses[True], losses[False], rtol=1e-5, atol=1e-4)
    for a, b in zip(nets[False].parameters(), nets[True].parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-4)


def test_select_top_k_picks_the_k_largest_or_draws_by_loss():
    """The HPU-Net's top-k pixels (Kohl et al. 2019): the k = floor(fraction * pixels) largest losses, or k
    distinct pixels drawn in proportion to the loss."""
    ce = torch.nn.functional.softplus(torch.tensor([4.0, -1.0, 0.0, 2.0, -3.0, 1.0, 0.5, -0.5]))
    assert sorted(select_top_k(ce, 0.25).tolist()) == [0, 3]  # k = floor(8 * 0.25) = 2: logits 4 and 2
    # Stochastic: k distinct pixels, chosen in proportion to the loss: the one huge-loss pixel is always in.
    big = torch.full((100,), -8.0)
    big[37] = 9.0
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        index = select_top_k(torch.nn.functional.softplus(big), 0.05, stochastic=True, generator=g)
        assert len(set(index.tolist())) == 5 and 37 in index.tolist()


def test_hpu_net_top_k_reconstruction_and_its_geco_bound():
    """With top-k the constraint is the chosen pixels' BCE summed per image pixel - kappa x their share."""
    net = HierarchicalProbUNet(**TINY["hpu_net"], top_k_fraction=0.1, stochastic_top_k=False, kappa=0.05)
    _, terms = net.loss(*squares(3))  # 3 x 32 x 32 = 3072 pixels, k = 307
    share = 307 / 3072
    assert float(net.geco.ma) == pytest.approx(share * (float(terms["rec_top_k"]) - 0.05), rel=1e-5)
    assert float(terms["rec_top_k"]) > float(terms["rec_per_pixel"])  # the hardest pixels
    state = (float(net.geco.ma), float(net.geco.lagmul))
    net.eval()  # evaluation: every pixel, GECO state untouched
    _, terms = net.loss(*squares(3))
    assert "rec_top_k" not in terms and (float(net.geco.ma), float(net.geco.lagmul)) == state


def _train(net, images: torch.Tensor, masks: torch.Tensor, steps: int) -> tuple[list[float], list[float]]:
    """Plain PyTorch Adam steps alternating two halves of the batch; returns (rec per pixel, loss) per step."""
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    recs, losses = [], []
    half = len(images) // 2
    for step in range(steps):
        idx = torch.arange(half) + half * (step % 2)
        loss, terms = net.loss(images[idx], masks[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        assert torch.isfinite(loss), f"non-finite loss at step {step}"
        losses.append(float(loss))
        recs.append(float(terms["rec_per_pixel"]))
    return recs, losses


@pytest.mark.parametrize("name", list(TINY))
def test_short_training_lowers_the_loss_and_stays_finite(name):
    """Plain PyTorch (no Lightning): 40 Adam steps on 4 tiny images (batches of 2; 8 images took 25 % longer
    for the same loss ratios)."""
    net = MODELS[name](**TINY[name], **({"top_k_fraction": None} if name == "hpu_net" else {}))
    recs, losses = _train(net, *squares(4), steps=40)
    assert sum(recs[-4:]) < 0.5 * sum(recs[:4]), (name, recs)
    # GECO's value is lambda times a slowly moving average of the constraint: it falls, but more slowly.
    factor = 0.9 if name == "hpu_net" else 0.5
    assert sum(losses[-4:]) < factor * sum(losses[:4]), (name, losses)


def test_hpu_net_batch_norm_option_trains_and_samples():
    """``norm="batch"`` puts a norm in every residual unit; it learns and samples in eval mode (running stats)."""
    net = MODELS["hpu_net"](**TINY["hpu_net"], norm="batch", top_k_fraction=None)
    plain = MODELS["hpu_net"](**TINY["hpu_net"])
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) > len(TINY["hpu_net"]["channels"])
    images, masks = squares(4)  # batches of 2: batch norm's training statistics still over a batch
    recs, _ = _train(net, images, masks, steps=30)
    assert sum(recs[-4:]) < 0.5 * sum(recs[:4]), recs
    net.eval()
    with torch.no_grad():
        first, second = net(images[:1]), net(images[:2])[:1]  # eval mode: no dependence on the batch
        samples = net.sample_logits(images[:2], 4)
    assert torch.allclose(first, second, atol=1e-5)
    assert samples.shape == (2, 4, 32, 32) and torch.isfinite(samples).all()
    with pytest.raises(ValueError, match="instance.*1x1"):
        MODELS["hpu_net"](**TINY["hpu_net"], norm="instance")
    with pytest.raises(ValueError, match="instance.*1x1"):
        MODELS["hpu_net"](**TINY["hpu_net"], norm=("INSTANCE", {"affine": True}))


def test_hpu_net_sample_modes_fix_scales_at_the_prior_mean():
    net = HierarchicalProbUNet(**TINY["hpu_net"])
    images = squares(2)[0]
    mean_only = net.sample_logits(images, 3, sample_mode=[True] * 4)
    torch.testing.assert_close(mean_only[:, 0], mean_only[:, 2])
    torch.testing.assert_close(mean_only[:, :1], net(images))
    for mode in ("all", "global", "local"):
        s = net.sample_logits(images, 3, sample_mode=mode)
        assert not torch.allclose(s[:, 0], s[:, 1]), mode
    with pytest.raises(ValueError, match="sample_mode"):
        net.sample_logits(images, 2, sample_mode="coarse")


def test_hpu_net_rejects_images_smaller_than_its_pyramid():
    net = HierarchicalProbUNet(**TINY["hpu_net"])
    with pytest.raises(ValueError, match="too small for 5 levels"):
        net.sample_logits(torch.zeros(1, 1, 8, 8), 2)


def test_uncertainty_maps_by_hand():
    probs = torch.tensor([0.0, 1.0, 0.5, 0.5]).view(1, 4, 1, 1).expand(1, 4, 1, 2).contiguous()
    probs[0, :, 0, 1] = 0.0  # second pixel: every sample certain of background
    entropy = uncertainty_map(probs, "entropy")  # mean probability 0.5 -> 1 bit; 0 -> 0 bits
    torch.testing.assert_close(entropy, torch.tensor([[[1.0, 0.0]]]), atol=1e-5, rtol=0)
    variance = uncertainty_map(probs, "variance")  # values {0, 1, .5, .5}: mean .5, variance (.25 + .25) / 4
    torch.testing.assert_close(variance, torch.tensor([[[0.125, 0.0]]]))
    assert math.isclose(float(uncertainty_map(torch.full((1, 1, 1, 1), 0.5), "variance")), 0.0)


def _gaussian(loc: list[float], requires_grad: bool = False):
    """A per-image latent map of one 1x1 pixel with sigma 1: KL to N(m, 1) is (loc - m)^2 / 2 nats."""
    from torch.distributions import Independent, Normal

    mu = torch.tensor(loc).view(-1, 1, 1, 1).requires_grad_(requires_grad)
    return mu, Independent(Normal(mu, torch.ones_like(mu)), 3)


def test_free_bits_floor_each_scale_and_keep_training_the_prior():
    from domains.medical.models.hpu_net import free_bits_kl

    # Scale 0: posterior means (1, 0) against a prior at 0 -> KL (0.5, 0), batch mean 0.25 nats < floor 1.
    # Scale 1: posterior means (2, 2) -> KL 2 nats each, above the floor.
    mq0, q0 = _gaussian([1.0, 0.0], True)
    mp0, p0 = _gaussian([0.0, 0.0], True)
    mq1, q1 = _gaussian([2.0, 2.0], True)
    mp1, p1 = _gaussian([0.0, 0.0], True)
    value = free_bits_kl([q0, q1], [p0, p1], floor=1.0, scale=4.0)
    assert float(value) == pytest.approx((max(0.25, 1.0) + max(2.0, 1.0)) / 4)  # 0.75
    value.backward()
    # Below the floor the posterior is left alone, but the prior still follows it: d/dm mean((q-m)^2/2) / 4.
    assert mq0.grad.flatten().tolist() == [0.0, 0.0]
    assert mp0.grad.flatten().tolist() == pytest.approx([-1 / 8, 0.0])
    # Above the floor both sides get the plain KL's gradient: +-(2 - 0) / 2 / 4.
    assert mq1.grad.flatten().tolist() == pytest.approx([0.25, 0.25])
    assert mp1.grad.flatten().tolist() == pytest.approx([-0.25, -0.25])


def test_free_bits_are_off_by_default_and_only_floor_the_training_loss():
    images, masks = squares(2)
    assert HierarchicalProbUNet(**TINY["hpu_net"]).free_bits == 0.0
    torch.manual_seed(1)
    plain = HierarchicalProbUNet(**TINY["hpu_net"], geco=False, top_k_fraction=None)
    floored = copy.deepcopy(plain)
    floored.free_bits = 1e6  # far above any KL here: every scale sits at the floor
    torch.manual_seed(2)
    loss, terms = plain.loss(images, masks)
    torch.manual_seed(2)
    loss_fb, terms_fb = floored.loss(images, masks)
    assert "kl_loss" not in terms
    assert float(terms_fb["kl"]) == pytest.approx(float(terms["kl"]))  # the logged KL stays the true one
    pixels = masks[0].numel()
    assert float(loss) == pytest.approx(float(terms["rec_per_pixel"] + terms["kl"]))
    assert float(loss_fb) == pytest.approx(float(terms["rec_per_pixel"]) + 4 * 1e6 / pixels)
    floored.eval()  # evaluation reports the plain objective
    torch.manual_seed(2)
    loss_eval, _ = floored.loss(images, masks)
    plain.eval()
    torch.manual_seed(2)
    assert float(loss_eval) == pytest.approx(float(plain.loss(images, masks)[0]))
    with pytest.raises(ValueError, match="free_bits"):
        HierarchicalProbUNet(**TINY["hpu_net"], free_bits=-1.0)


def test_the_unet_takes_any_registered_encoder_and_a_subclass_keeps_its_model_name():
    """The README says the shared U-Net decoder sits on any registered backbone; the medical U-Net hard-coded
    its own encoder, and a subclass of it (a network of one's own) stopped the task with a bare StopIteration."""
    from domains.medical.predict import size_multiple
    from domains.medical.task import MedicalSegmentationTask

    own = UNetSegmenter(encoder_kwargs={"channels": [8, 16, 32]})  # the default encoder, one's own channels
    assert own.net.backbone.encoder.feature_channels == [8, 16, 32]
    net = UNetSegmenter(encoder="tiny_cnn", encoder_kwargs={"width": 8})
    assert type(net.net.backbone.encoder).__name__ == "TinyCNN"
    assert net(torch.zeros(2, 1, 32, 32)).shape == (2, 1, 32, 32)
    assert size_multiple(net) == max(net.net.backbone.encoder.feature_strides)

    class MyUNet(UNetSegmenter):
        pass

    task = MedicalSegmentationTask(network=MyUNet(channels=(8, 16)))
    assert task.model_name == "unet"
