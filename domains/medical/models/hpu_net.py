"""Hierarchical Probabilistic U-Net (Kohl et al. 2019, arXiv:1905.13077), after DeepMind's reference code.

Structure:

- A core: residual-block encoder (average pooling down), then a decoder whose coarsest
  ``len(latent_channels)`` levels each predict a diagonal Gaussian per pixel (1x1 conv to mu, log-sigma), draw
  a latent map, concatenate it, upsample (nearest) and merge the next skip.
- The prior core sees the image; the posterior core sees ``concat(image, mask - 0.5)``.
- The likelihood is the prior core's decoder continued to full resolution (the "stitching" decoder) and a 1x1
  logits layer. In training the prior core is re-run with the *posterior's* latents, so each level's KL is
  between the posterior and the prior conditioned on the posterior's coarser samples.
- Loss: GECO (Rezende & Viola 2018): ``lambda * (rec - kappa) + KL`` with the constraint smoothed by a moving
  average and lambda raised by gradient ascent while the reconstruction is above the bound, never below 0
  (a plain step of ``rate * constraint``, not the reference's optimiser-driven one: see :class:`GECO`).
  The reconstruction is a per-pixel BCE, optionally over a stochastic top-k (2 %) of the batch's pixels.

The residual units are MONAI ``ResidualUnit`` blocks of ``convs_per_block`` (2) full-width 3x3 convs, not the
reference's pre-activated bottleneck blocks (``unet_utils.res_block``: ReLU, 3 convs at half the level's
channels, a 1x1 conv back up); see ``HierarchicalProbUNet``'s ``convs_per_block``.

Scale: everything is per image pixel, averaged over the batch. The reconstruction is the BCE summed over the
pixels it uses (all, or the top-k) divided by the image's pixel count, and the bound is ``kappa`` times the
share of pixels used; the KL is summed over latent pixels, channels and scales and divided by the same pixel
count. This is DeepMind's objective (per-image sums with the bound ``kappa * pixels used``) divided by the
pixel count: kappa = 0.05 bounds the mean BCE of the pixels used, and lambda = 1 without top-k is the
per-pixel ELBO.

Sampling runs the prior encoder once and the decoder N times; chosen latent scales can be fixed at the prior
mean: ``sample_mode="global"`` samples only the coarsest scale, ``"local"`` all but the coarsest.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Independent, Normal, kl_divergence

from shared.backbones import upsample_nearest

from .base import MedicalSegmenter
from .common import (
    check_images,
    check_masks,
    diagonal_gaussian,
    init_foreground_bias,
    posterior_latent,
    sample_latent,
    select_top_k,
)


def _res_stack(
    in_channels: int, out_channels: int, blocks: int, convs_per_block: int, norm: str | None = None
) -> nn.Sequential:
    """``blocks`` MONAI residual units (3x3 conv, [norm], ReLU, ..., 3x3 conv, plus identity or 1x1 skip).

    No normalisation by default, as in the reference. ``norm="batch"`` (or any MONAI norm name) trains
    faster on short budgets; instance norm is undefined on the coarsest levels' 1x1 maps.
    """
    from monai.networks.blocks import ResidualUnit  # imported here: MONAI takes seconds to import (--help)

    units = []
    for i in range(blocks):
        units.append(
            ResidualUnit(
                spatial_dims=2,
                in_channels=in_channels if i == 0 else out_channels,
                out_channels=out_channels,
                subunits=convs_per_block,
                act="RELU",
                norm=norm,
                last_conv_only=True,
            )
        )
    return nn.Sequential(*units)


class HierarchicalCore(nn.Module):
    """Encoder + latent levels of the decoder (DeepMind's ``_HierarchicalCore``)."""

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        latent_channels: Sequence[int],
        blocks_per_level: int,
        convs_per_block: int,
        norm: str | None = None,
    ):
        super().__init__()
        channels, latent_channels = list(channels), list(latent_channels)
        if len(latent_channels) >= len(channels):
            raise ValueError(
                f"{len(latent_channels)} latent scales need at least {len(latent_channels) + 1} levels, "
                f"got channels={channels}"
            )
        self.encoder = nn.ModuleList()
        prev = in_channels
        for c in channels:
            self.encoder.append(_res_stack(prev, c, blocks_per_level, convs_per_block, norm))
            prev = c
        rev = channels[::-1]
        self.heads = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for level, latent in enumerate(latent_channels):
            self.heads.append(nn.Conv2d(rev[level], 2 * latent, kernel_size=1))
            self.decoder.append(
                _res_stack(
                    rev[level] + latent + rev[level + 1],
                    rev[level + 1],
                    blocks_per_level,
                    convs_per_block,
                    norm,
                )
            )
        self.channels = channels
        self.latent_channels = latent_channels

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder maps, finest first; each level halves the size with 2x2 average pooling."""
        levels = len(self.channels)
        if min(x.shape[-2:]) < 2 ** (levels - 1):
            raise ValueError(self._too_small(tuple(x.shape[-2:])))
        feats = []
        for i, stack in enumerate(self.encoder):
            if i > 0:
                x = F.avg_pool2d(x, kernel_size=2, ceil_mode=True)
            x = stack(x)
            feats.append(x)
        return feats

    def _too_small(self, size: tuple[int, ...]) -> str:
        """Why an image of ``size`` does not fit the levels, with both fixes, as a Python caller gives them (an
        image size, the ``channels`` / ``latent_channels`` arguments) and then by their command-line options: a
        larger image, or fewer levels (each halves the image; the coarsest must keep at least one pixel)."""
        levels, need, side = len(self.channels), 2 ** (len(self.channels) - 1), max(1, min(size))
        fits = side.bit_length()  # the most levels an image of this side takes: 2 ** (fits - 1) <= side
        message = (
            f"an image of {size} is too small for {levels} levels (needs at least {need} pixels per side): "
            f"give images of at least {need}x{need} pixels (on the command line --data.crop_size {need} or larger)"
        )
        if fits < 2:
            return message
        arguments = f"channels={self.channels[:fits]}"
        options = f"--model.network.init_args.channels '{self.channels[:fits]}'"
        if len(self.latent_channels) >= fits:  # each latent scale needs a level below it
            arguments += f", latent_channels={self.latent_channels[: fits - 1]}"
            options += f" --model.network.init_args.latent_channels '{self.latent_channels[: fits - 1]}'"
        return f"{message}, or fewer levels (at most {fits} for {side} pixels), e.g. {arguments}; on the command line {options}"

    def decode_latents(
        self,
        encoded: Sequence[torch.Tensor],
        z_given: Sequence[torch.Tensor] | None = None,
        use_mean: Sequence[bool] | None = None,
        reparameterize: bool = False,
        rows: Sequence[tuple[int, int]] | None = None,
    ) -> tuple[torch.Tensor, list[Independent], list[torch.Tensor]]:
        """Run the latent levels, coarsest first. Returns (decoder features, distributions, latents used).

        ``z_given`` (one map per level) replaces the core's own draws (the prior re-run on posterior latents).
        ``use_mean[level]`` puts that level's latent at its mean. ``reparameterize`` draws with ``rsample``
        (:func:`posterior_latent`: per image under ``image_noise``).
        ``rows``: the (image, sample) of each map of the batch, for :func:`sample_latent`'s noise per image.
        """
        rev = list(encoded)[::-1]
        x = rev[0]
        dists, used = [], []
        for level, (head, block) in enumerate(zip(self.heads, self.decoder)):
            mu, log_sigma = head(x).chunk(2, dim=1)
            dist = diagonal_gaussian(mu, log_sigma, event_dims=3)
            if z_given is not None:
                z = z_given[level]
            elif use_mean is not None and use_mean[level]:
                z = dist.mean
            else:
                z = posterior_latent(dist) if reparameterize else sample_latent(dist, rows=rows)
            dists.append(dist)
            used.append(z)
            skip = rev[level + 1]
            x = upsample_nearest(torch.cat([x, z], dim=1), skip.shape[-2:])
            x = block(torch.cat([x, skip], dim=1))
        return x, dists, used


class GECO(nn.Module):
    """GECO Lagrange multiplier for a reconstruction constraint ``rec <= kappa`` (state kept in buffers).

    ``forward(rec)`` returns ``lambda * C_hat`` with ``C = rec - kappa`` and ``C_hat = C + stopgrad(ma - C)``:
    the value is the moving average (decay ``decay``) while the gradient is the current batch's. In training
    mode each call then moves lambda by gradient ascent, ``lambda <- clamp(lambda + rate*ma, 0, lambda_max)``:
    it rises while the smoothed reconstruction is above the bound and falls (to no less than 0) below it.
    A hand-written update: no maintained PyTorch library offers GECO. Buffers go into checkpoints.

    Not DeepMind's update (``geco_utils.LagrangeMultiplier``, Sonnet's ``get_lagrange_multiplier``): there
    ``lambda = softplus(x) ** 2`` (>= 0 by construction, no clamp; x starts where lambda = 1) and x is a
    trainable variable stepped by the optimiser that trains the network (Adam), on the loss's gradient
    ``d loss / d lambda = ma`` scaled by ``-rate`` (ascent), times ``d lambda / dx = 2 softplus(x) sigmoid(x)``.
    Adam divides each step by the gradient's running RMS, so a constant factor on the gradient cancels: its
    step on x is about the learning rate whatever the constraint's size (and ``rate``) while the constraint
    keeps its sign. Here the step is ``rate * ma`` itself, proportional to the constraint (on this module's
    per-pixel scale and a top-2 % bound, about 5e-5 a step; see configs/hpu_net.yaml), and independent of the
    optimiser and its learning rate. The moving average's straight-through gradient is the reference's.

    Under DDP the update takes the mean of the ranks' constraints (one all-reduce of a scalar a training
    step), so lambda follows every rank's batches as one process would follow them all.
    """

    def __init__(
        self,
        kappa: float = 0.05,
        decay: float = 0.99,
        rate: float = 0.01,
        init_lambda: float = 1.0,
        lambda_max: float = 1e4,
    ):
        super().__init__()
        if not 0 <= decay < 1:
            raise ValueError(f"GECO decay must be in [0, 1), got {decay}")
        if init_lambda < 0 or rate < 0:
            raise ValueError(f"GECO init_lambda and rate must be >= 0, got {init_lambda}, {rate}")
        self.kappa, self.decay, self.rate, self.lambda_max = kappa, decay, rate, lambda_max
        self.register_buffer("lagmul", torch.tensor(float(init_lambda)))
        self.register_buffer("ma", torch.tensor(0.0))
        self.register_buffer("initialised", torch.tensor(False))

    @staticmethod
    def _mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
        """The mean of the ranks' finite scalar ``value`` under DDP (NaN where no rank's is finite), ``value``
        itself in one process. Each rank's own average, DDP's buffer broadcast keeping rank 0's, followed half
        the data. Every rank joins the all-reduce, one with a non-finite batch adding nothing."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return value
        if torch.distributed.get_world_size() == 1:
            return value
        finite = torch.isfinite(value)
        total = torch.stack([torch.where(finite, value, torch.zeros_like(value)), finite.float()])
        torch.distributed.all_reduce(total)
        return total[0] / total[1]

    def forward(self, rec: torch.Tensor, bound: float | None = None) -> torch.Tensor:
        """``lambda * C_hat`` for ``C = rec - bound`` (``bound`` defaults to ``kappa``)."""
        constraint = rec - (self.kappa if bound is None else bound)
        value = self._mean_over_ranks(constraint.detach().float()) if self.training else None
        # evaluation, or a non-finite batch (on every rank; the loss guard skips it), which must not poison the
        # state: the current batch's constraint, state untouched
        if value is None or not bool(torch.isfinite(value).all()):
            return self.lagmul.detach().clone() * constraint
        with torch.no_grad():
            if bool(self.initialised):
                self.ma.mul_(self.decay).add_((1 - self.decay) * value)
            else:
                self.ma.copy_(value)
                self.initialised.fill_(True)
        term = self.lagmul.detach().clone() * (constraint + (self.ma - constraint).detach())
        with torch.no_grad():
            self.lagmul.add_(self.rate * self.ma).clamp_(0.0, self.lambda_max)
        return term


def _detached(dist: Independent) -> Independent:
    base = dist.base_dist
    return Independent(
        Normal(base.loc.detach(), base.scale.detach(), validate_args=False),
        dist.reinterpreted_batch_ndims,
        validate_args=False,
    )


def free_bits_kl(
    q_dists: Sequence[Independent], p_dists: Sequence[Independent], floor: float, scale: float = 1.0
) -> torch.Tensor:
    """Sum over scales of ``max(KL_l, floor) / scale``, with KL_l the batch mean of ``KL(q_l || p_l)`` (nats per
    image when ``floor`` is; ``scale`` puts the result on the loss's scale, e.g. the pixel count).

    Value: the floored KL. Gradient: the posterior gets that of ``max(KL(q || stopgrad p), floor)`` (nothing
    while its scale carries less than ``floor``: free bits, Kingma et al. 2016), the prior always that of
    ``KL(stopgrad q || p)``, so the prior keeps following the posterior below the floor (that term also reaches
    the posterior through its coarser latents, on which the prior core is re-run). Written here: no
    maintained library offers free bits for ``torch.distributions``.
    """
    total = 0.0
    for q, p in zip(q_dists, p_dists):
        to_posterior = kl_divergence(q, _detached(p)).mean()
        to_prior = kl_divergence(_detached(q), p).mean()
        total = total + to_posterior.clamp_min(floor) + (to_prior - to_prior.detach())
    return total / scale


_SAMPLE_MODES = ("all", "global", "local")


class HierarchicalProbUNet(MedicalSegmenter):
    """HPU-Net with one foreground logit.

    Args:
        in_channels: image channels.
        channels: channels per level, finest first (DeepMind: 24, 48, 96, 192, 192, 192, 192, 192 at 128 px).
            The image side must be at least ``2 ** (len(channels) - 1)``.
        latent_channels: latent channels per latent scale, coarsest first; its length is the number of scales
            (paper: 4 scales of 1 channel).
        blocks_per_level: residual units per level (paper: 3).
        convs_per_block: 3x3 convs per residual unit, each at the level's full width (MONAI ``ResidualUnit``:
            conv, [norm], ReLU, ..., conv, plus an identity or 1x1 skip). Not the reference's: DeepMind's
            ``model.py`` (defaults "as for the LIDC-IDRI experiments") has 3 convs per block in pre-activated
            bottleneck blocks (``unet_utils.res_block``: ReLU first, the 3x3 convs at
            ``down_channels_per_block`` = half the level's channels with ReLUs between, a 1x1 conv back to the
            full width, plus the skip). Here 2 by default, full width, no bottleneck.
        norm: normalisation in the residual units (None, the paper's; "batch" keeps the latents alive: without
            a norm the posterior's latent means hardly differ between images at initialisation, the decoder
            learns to ignore them and the KL collapses to 0 on short budgets; see configs/hpu_net.yaml).
        geco: GECO objective (True) or a plain ELBO ``rec + beta * KL`` on the same per-pixel scale (False).
        kappa: GECO reconstruction bound per pixel (paper: 0.05): a Lagrange multiplier keeps the
            reconstruction error at it.
        geco_decay: moving-average decay of GECO's constraint (paper: 0.99).
        geco_rate: step size of GECO's Lagrange multiplier.
        geco_init_lambda: GECO's starting Lagrange multiplier.
        beta: KL weight of the plain ELBO (unused with GECO, where lambda sets the balance).
        free_bits: KL floor per latent scale, in nats per image, batch-averaged ("free bits", Kingma et al.
            2016): the loss takes ``max(KL_l, free_bits)`` for the posterior, so a scale carrying less than
            ``free_bits`` nats is not pulled onto the prior while the decoder learns to read it; the prior is
            still fitted to the posterior by the full ``KL(stopgrad(q) || p)`` (without that, a scale below the
            floor would train neither side and the prior's samples would stay at their initial noise).
            0 (default): the plain KL. The logged ``kl_scale<i>`` stay the true KLs.
        top_k_fraction: fraction of the batch's pixels the reconstruction averages (None: all pixels).
        stochastic_top_k: draw the top-k pixels in proportion to their loss (True) or take the k largest.
        max_batch: largest number of decoder maps run at once when sampling.
        foreground_prior: initial foreground probability of the logits layer.
    """

    #: why some parameters get no gradient: the posterior's decoder features after its last latent feed
    #: nothing (only its distributions do), so DDP needs find_unused_parameters (shared.cli)
    IDLE_PARAMETERS = "its posterior's last decoder level is never used"

    #: its KL terms are divided by the image's pixel count (see the module docstring)
    kl_per_pixel = True

    def __init__(
        self,
        in_channels: int = 1,
        channels: Sequence[int] = (24, 48, 96, 192, 192, 192, 192, 192),
        latent_channels: Sequence[int] = (1, 1, 1, 1),
        blocks_per_level: int = 3,
        convs_per_block: int = 2,
        norm: str | None = None,
        geco: bool = True,
        kappa: float = 0.05,
        geco_decay: float = 0.99,
        geco_rate: float = 0.01,
        geco_init_lambda: float = 1.0,
        beta: float = 1.0,
        free_bits: float = 0.0,
        top_k_fraction: float | None = 0.02,
        stochastic_top_k: bool = True,
        max_batch: int = 64,
        foreground_prior: float = 0.05,
    ):
        super().__init__()
        channels = list(channels)
        if free_bits < 0:
            raise ValueError(f"free_bits must be >= 0 (nats per image per latent scale), got {free_bits}")
        if top_k_fraction is not None and not 0 < top_k_fraction <= 1:
            raise ValueError(f"top_k_fraction must be in (0, 1] or None, got {top_k_fraction}")
        norm_name = norm[0] if isinstance(norm, tuple) else norm  # MONAI also takes ("name", {args})
        if isinstance(norm_name, str) and norm_name.lower() == "instance":
            raise ValueError(
                "norm='instance' is undefined on the HPU-Net's 1x1 coarsest maps; use 'batch' or None"
            )
        self.prior = HierarchicalCore(
            in_channels, channels, latent_channels, blocks_per_level, convs_per_block, norm
        )
        self.posterior = HierarchicalCore(
            in_channels + 1, channels, latent_channels, blocks_per_level, convs_per_block, norm
        )
        rev = channels[::-1]
        n_latent = len(latent_channels)
        # The stitching decoder: the prior core's decoder continued from the last latent level to full size.
        self.stitch = nn.ModuleList(
            _res_stack(rev[j - 1] + rev[j], rev[j], blocks_per_level, convs_per_block, norm)
            for j in range(n_latent + 1, len(channels))
        )
        self.logits = nn.Conv2d(channels[0], 1, kernel_size=1)
        init_foreground_bias(self.logits, foreground_prior)
        self.geco = GECO(kappa, geco_decay, geco_rate, geco_init_lambda) if geco else None
        self.in_channels = in_channels
        self.num_latent_scales = n_latent
        self.beta = beta
        self.free_bits = float(free_bits)
        self.top_k_fraction = top_k_fraction
        self.stochastic_top_k = stochastic_top_k
        self.max_batch = max_batch

    def _likelihood(self, decoded: torch.Tensor, encoded: Sequence[torch.Tensor]) -> torch.Tensor:
        rev = list(encoded)[::-1]
        x = decoded
        for j, block in zip(range(self.num_latent_scales + 1, len(rev)), self.stitch):
            skip = rev[j]
            x = block(torch.cat([upsample_nearest(x, skip.shape[-2:]), skip], dim=1))
        return self.logits(x)

    def loss(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, terms, _ = self._loss(images, masks)
        return loss, terms

    def _loss(
        self, images: torch.Tensor, masks: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[torch.Tensor]]:
        """``loss`` plus the prior encoder's maps (``loss_and_sample_logits`` samples from them)."""
        check_images(images, self.in_channels)
        check_masks(masks, images)
        post_in = torch.cat([images, masks.to(images.dtype) - 0.5], dim=1)
        _, q_dists, z_q = self.posterior.decode_latents(self.posterior.encode(post_in), reparameterize=True)
        encoded = self.prior.encode(images)
        decoded, p_dists, _ = self.prior.decode_latents(encoded, z_given=z_q)
        logits = self._likelihood(decoded, encoded)
        ce = F.binary_cross_entropy_with_logits(logits, masks.to(logits.dtype), reduction="none").flatten()
        fraction = self.top_k_fraction if self.training else None
        terms = {"rec_per_pixel": ce.mean()}
        if fraction is None or fraction >= 1:
            rec, share = ce.mean(), 1.0
        else:  # the chosen pixels' BCE summed, per image pixel; the bound scales with the share chosen
            index = select_top_k(ce, fraction, self.stochastic_top_k)
            rec, share = ce[index].sum() / ce.numel(), index.numel() / ce.numel()
            terms["rec_top_k"] = ce[index].mean()
        pixels = masks[0].numel()
        kls = [kl_divergence(q, p).mean() / pixels for q, p in zip(q_dists, p_dists)]
        kl = torch.stack(kls).sum()
        terms["kl"] = kl
        terms.update({f"kl_scale{i}": v for i, v in enumerate(kls)})
        kl_loss = kl
        if self.free_bits > 0 and self.training:
            kl_loss = free_bits_kl(q_dists, p_dists, self.free_bits, scale=pixels)
            terms["kl_loss"] = kl_loss
        if self.geco is not None:
            loss = self.geco(rec, bound=self.geco.kappa * share) + kl_loss
            terms["geco_lambda"] = self.geco.lagmul.detach().clone()
            terms["geco_constraint_ma"] = self.geco.ma.detach().clone()
        else:
            loss = rec + self.beta * kl_loss
        return loss, {k: v.detach() for k, v in terms.items()}, encoded

    def _use_mean(self, sample_mode: str | Sequence[bool]) -> list[bool]:
        n = self.num_latent_scales
        if isinstance(sample_mode, str):
            if sample_mode not in _SAMPLE_MODES:
                raise ValueError(
                    f"sample_mode must be one of {_SAMPLE_MODES} or a list of {n} booleans, "
                    f"got {sample_mode!r}"
                )
            if sample_mode == "all":
                return [False] * n
            if sample_mode == "global":
                return [False] + [True] * (n - 1)
            return [True] + [False] * (n - 1)
        flags = [bool(f) for f in sample_mode]
        if len(flags) != n:
            raise ValueError(f"use-mean flags need one entry per latent scale ({n}), got {len(flags)}")
        return flags

    def sample_logits(
        self, images: torch.Tensor, num_samples: int, sample_mode: str | Sequence[bool] = "all"
    ) -> torch.Tensor:
        """(B, N, H, W) logits from the prior; the encoder runs once, the decoder once per sample.

        ``sample_mode``: "all" samples every scale, "global" only the coarsest (finer ones at the prior mean),
        "local" all but the coarsest, or a list of booleans (True: that scale at its mean; coarsest first).
        """
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        check_images(images, self.in_channels)
        use_mean = self._use_mean(sample_mode)
        return self._sample_from(self.prior.encode(images), num_samples, use_mean, images.shape[-2:])

    def _sample_from(
        self, encoded: list[torch.Tensor], num_samples: int, use_mean: list[bool], size: torch.Size
    ) -> torch.Tensor:
        b = encoded[0].shape[0]
        chunk = max(1, self.max_batch // max(1, b))  # an empty batch: empty samples
        outs = []
        for start in range(0, num_samples, chunk):
            n = min(chunk, num_samples - start)
            rep = [e.repeat_interleave(n, dim=0) for e in encoded]  # (B*n, ...), sample-minor
            rows = [(i, start + j) for i in range(b) for j in range(n)]
            decoded, _, _ = self.prior.decode_latents(rep, use_mean=use_mean, rows=rows)
            outs.append(self._likelihood(decoded, rep).view(b, n, *size))
        return torch.cat(outs, dim=1)

    def loss_and_sample_logits(
        self,
        images: torch.Tensor,
        masks: torch.Tensor,
        num_samples: int,
        sample_mode: str | Sequence[bool] = "all",
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """``loss(images, masks)`` and ``sample_logits(images, num_samples, sample_mode)`` with the prior
        encoder run once for both (evaluation; the loss's prior decoder runs on the posterior's latents, so only
        the encoder is shared). The same random draws, in the same order, as the two calls."""
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        use_mean = self._use_mean(sample_mode)
        loss, terms, encoded = self._loss(images, masks)
        return loss, terms, self._sample_from(encoded, num_samples, use_mean, images.shape[-2:])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (B, 1, H, W) with every scale at the prior mean."""
        return self.sample_logits(images, 1, sample_mode=[True] * self.num_latent_scales)
