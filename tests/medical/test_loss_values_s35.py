"""Values of the medical losses on tiny inputs, against formulas written out here (not the code under test).

The learning tests only check that a loss falls: a reconstruction averaged instead of summed, a KL taken the
wrong way round or off its per-pixel scale, a posterior fed the raw mask, an ELBO without its beta, GECO's
value taken from the batch instead of its moving average and a Gumbel draw of the wrong sign all still
train. Each test below pins one of those conventions (see the models' docstrings).
"""

from __future__ import annotations

import math

import pytest
import torch

from domains.medical.models import GECO, HierarchicalProbUNet, ProbabilisticUNet
from domains.medical.models.common import bce_sum_per_image, select_top_k

pytestmark = pytest.mark.usefixtures("one_thread")


def _bce(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per-pixel BCE from its definition, -[y log s(x) + (1 - y) log(1 - s(x))]."""
    p = torch.sigmoid(logits.double())
    y = masks.double()
    return -(y * p.log() + (1 - y) * (1 - p).log())


def _kl_diagonal(q, p, event_dims: int) -> torch.Tensor:
    """KL(q || p) of two diagonal Gaussians, written out: per dim log(s_p / s_q) + (s_q^2 + (m_q - m_p)^2) /
    (2 s_p^2) - 1/2, summed over the ``event_dims`` last dims; one value per batch entry."""
    mq, sq = q.base_dist.loc.double(), q.base_dist.scale.double()
    mp, sp = p.base_dist.loc.double(), p.base_dist.scale.double()
    per_dim = (sp / sq).log() + (sq**2 + (mq - mp) ** 2) / (2 * sp**2) - 0.5
    return per_dim.flatten(-event_dims).sum(-1)


def _masks(b: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(b, 1, size, size, generator=g)
    masks = (torch.rand(b, 1, size, size, generator=g) > 0.6).float()
    return images, masks


def test_bce_sum_per_image_sums_pixels_and_averages_images():
    """The ELBO's reconstruction is summed over an image's pixels (a mean there shrinks it by H*W against the
    per-image KL: the known 'reconstruction summed while KL is averaged' mix-up)."""
    logits = torch.tensor([[[[0.0, 0.0], [0.0, 0.0]]], [[[2.0, -1.0], [0.0, 3.0]]]])
    masks = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]], [[[1.0, 1.0], [0.0, 0.0]]]])
    # Image 0: 4 pixels at logit 0, each log 2. Image 1: log(1 + e^-2), log(1 + e^1), log 2, log(1 + e^3).
    image0 = 4 * math.log(2)
    image1 = math.log1p(math.exp(-2)) + math.log1p(math.exp(1)) + math.log(2) + math.log1p(math.exp(3))
    assert float(bce_sum_per_image(logits, masks)) == pytest.approx((image0 + image1) / 2, rel=1e-6)


def test_prob_unet_loss_terms_by_hand():
    """rec = BCE summed over pixels (batch mean), kl = KL(posterior || prior) (batch mean), loss = rec + beta
    kl, with the posterior fed concat(image, mask - 0.5) (Kohl et al. 2018's reference)."""
    torch.manual_seed(0)
    net = ProbabilisticUNet(channels=(8, 16), latent_dim=3, beta=0.5)
    for head in (net.prior.head, net.posterior.head):  # heads start at zero: both N(0, I), a KL of 0
        torch.nn.init.normal_(head.weight, std=0.5)
        torch.nn.init.normal_(head.bias, std=0.5)
    seen: dict[str, object] = {}
    net.posterior.register_forward_pre_hook(lambda m, args: seen.__setitem__("posterior_in", args[0]))
    net.posterior.register_forward_hook(lambda m, args, out: seen.__setitem__("q", out))
    net.prior.register_forward_hook(lambda m, args, out: seen.__setitem__("p", out))
    net.fcomb.register_forward_hook(lambda m, args, out: seen.__setitem__("logits", out[:, :1]))
    images, masks = _masks(2, 16, seed=1)
    loss, terms = net.loss(images, masks)

    torch.testing.assert_close(seen["posterior_in"][:, 1:], masks - 0.5)  # values -0.5 / +0.5
    torch.testing.assert_close(seen["posterior_in"][:, :1], images)
    rec = _bce(seen["logits"], masks).flatten(1).sum(1).mean()
    kl = _kl_diagonal(seen["q"], seen["p"], event_dims=1).mean()
    reverse = _kl_diagonal(seen["p"], seen["q"], event_dims=1).mean()
    assert abs(float(kl - reverse)) > 0.05 * float(kl)  # the direction shows in the value
    assert float(terms["rec"]) == pytest.approx(float(rec), rel=1e-5)
    assert float(terms["rec_per_pixel"]) == pytest.approx(float(rec) / 256, rel=1e-5)
    assert float(terms["kl"]) == pytest.approx(float(kl), rel=1e-5)
    assert float(loss) == pytest.approx(float(rec + 0.5 * kl), rel=1e-5)


def test_hpu_net_kl_per_pixel_and_beta_weighted_elbo_by_hand(monkeypatch):
    """configs/hpu_net.yaml's objective (geco: false, beta: 2, all pixels): mean per-pixel BCE + 2 * the KL
    summed over latent pixels, channels and scales and divided by the image's pixel count; the posterior core
    sees concat(image, mask - 0.5)."""
    torch.manual_seed(0)
    tiny = {"channels": (8, 8, 8), "latent_channels": (1, 1), "blocks_per_level": 1}
    net = HierarchicalProbUNet(**tiny, geco=False, beta=2.0, top_k_fraction=None)
    for head in net.posterior.heads:  # a posterior well away from the prior: a KL that weighs in the loss
        torch.nn.init.normal_(head.weight, std=0.5)
        torch.nn.init.normal_(head.bias, std=0.5)
    seen: dict[str, object] = {}

    def record(core, method: str, name: str, take) -> None:
        """Keep ``take(args, output)`` of each ``core.method`` call under ``seen[name]``."""
        original = getattr(core, method)

        def wrapped(*args, **kwargs):
            out = original(*args, **kwargs)
            seen[name] = take(args, out)
            return out

        monkeypatch.setattr(core, method, wrapped)

    record(net.posterior, "encode", "posterior_in", lambda args, out: args[0])
    record(net.posterior, "decode_latents", "q", lambda args, out: out[1])
    record(net.prior, "decode_latents", "p", lambda args, out: out[1])
    net.logits.register_forward_hook(lambda m, args, out: seen.__setitem__("logits", out))
    images, masks = _masks(2, 8, seed=2)
    loss, terms = net.loss(images, masks)

    torch.testing.assert_close(seen["posterior_in"][:, 1:], masks - 0.5)
    pixels = 8 * 8
    kls = [_kl_diagonal(q, p, event_dims=3).mean() / pixels for q, p in zip(seen["q"], seen["p"])]
    for i, kl in enumerate(kls):
        assert float(terms[f"kl_scale{i}"]) == pytest.approx(float(kl), rel=1e-5)
    kl = float(sum(kls))
    rec = float(_bce(seen["logits"], masks).mean())
    assert kl > 0.05 * rec  # the beta term weighs in the checks below
    assert float(terms["kl"]) == pytest.approx(kl, rel=1e-5)
    assert float(terms["rec_per_pixel"]) == pytest.approx(rec, rel=1e-5)
    assert float(loss) == pytest.approx(rec + 2.0 * kl, rel=1e-5)


def test_geco_value_is_the_moving_average_and_its_gradient_the_batch():
    """GECO's straight-through term: value lambda * ma (the smoothed constraint), gradient lambda * dC/drec."""
    geco = GECO(kappa=0.05, decay=0.9, rate=0.1, init_lambda=1.0)
    geco(torch.tensor(0.6))  # C = 0.55: ma = 0.55, lambda = 1 + 0.1 * 0.55 = 1.055
    rec = torch.tensor(0.3, requires_grad=True)  # C = 0.25: ma = 0.9 * 0.55 + 0.1 * 0.25 = 0.52
    term = geco(rec)
    assert float(term) == pytest.approx(1.055 * 0.52)  # the batch's would be 1.055 * 0.25
    term.backward()
    assert float(rec.grad) == pytest.approx(1.055)
    assert float(geco.lagmul) == pytest.approx(1.055 + 0.1 * 0.52)


def test_stochastic_top_k_draws_in_proportion_to_the_loss():
    """Gumbel top-k with k = 1 is a draw with P(i) = loss_i / sum(loss): over 4000 draws the frequencies match
    (binomial sd <= 0.008). Noise of the wrong sign still favours large losses but draws the smallest of
    losses 1, 2, 3, 4 about half as often (0.05 instead of 0.1)."""
    ce = torch.tensor([1.0, 2.0, 3.0, 4.0])
    g = torch.Generator().manual_seed(0)
    draws = torch.cat([select_top_k(ce, 0.25, stochastic=True, generator=g) for _ in range(4000)])
    frequency = torch.bincount(draws, minlength=4).double() / len(draws)
    torch.testing.assert_close(frequency, (ce / ce.sum()).double(), atol=0.025, rtol=0)
