"""Pieces the three segmenters share: input checks, the BCE scales, clamped diagonal Gaussians, top-k CE."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch.distributions import Independent, Normal

# Log-sigma range of every latent Gaussian. Unclamped log-sigmas are the NaN source of public Prob U-Net ports
# (exp overflows, or sigma underflows to 0 and the KL divides by it); sigma in [e^-6, e^3] covers any useful
# value.
LOG_SIGMA_RANGE = (-6.0, 3.0)


def init_foreground_bias(conv: torch.nn.Conv2d, prior: float) -> None:
    """Start the logits layer at ``P(foreground) = prior`` (RetinaNet's prior init).

    Lesions cover a few percent of the pixels; from a zero bias, Adam at lr 1e-3 needs thousands of steps just
    to move the bias to about -3, which is most of a short CPU run.
    """
    if not 0 < prior < 1:
        raise ValueError(f"foreground_prior must be in (0, 1), got {prior}")
    torch.nn.init.constant_(conv.bias, math.log(prior / (1 - prior)))


def check_images(images: torch.Tensor, in_channels: int) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != in_channels:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"expected images of shape (B, {in_channels}, H, W), got {shape}")


def check_masks(masks: torch.Tensor, images: torch.Tensor) -> None:
    """One reader mask (B, 1, H, W) per image, of at least one image, with values in {0, 1}
    (:func:`check_mask_values`; left to the caller while ``torch.compile`` traces: the task checks first)."""
    if (
        not isinstance(masks, torch.Tensor)
        or masks.ndim != 4
        or masks.shape[1] != 1
        or masks.shape[0] != images.shape[0]
        or masks.shape[2:] != images.shape[2:]
    ):
        shape = tuple(masks.shape) if isinstance(masks, torch.Tensor) else type(masks).__name__
        raise ValueError(
            f"expected one mask per image of shape "
            f"({images.shape[0]}, 1, {images.shape[2]}, {images.shape[3]}) "
            f"with values in {{0, 1}}, got {shape}"
        )
    if masks.shape[0] == 0:
        raise ValueError(f"a loss needs at least one image: got an empty batch, masks of shape {tuple(masks.shape)}")
    if not torch.compiler.is_compiling():  # a data-dependent branch would break the compiled graph
        check_mask_values(masks)


def check_mask_values(masks: torch.Tensor) -> None:
    """Refuse mask values other than 0 and 1 (bool masks pass unread). A 0/255 mask, a PNG's usual coding,
    trained silently on BCE targets of 255: a fresh U-Net's loss 1.7e6 where its 0/1 mask gives 6.7e3. Two
    comparisons and one reduction, read back once (a device sync): 0.8 ms for 16 masks of 128 x 128 on one
    CPU core, against 1.0 s for a training step of a U-Net of channels (8, 16, 32) on them."""
    if masks.dtype == torch.bool:
        return
    bad = (masks != 0) & (masks != 1)
    if bool(bad.any()):
        values = masks[bad]
        nan = values.isnan() if values.is_floating_point() else torch.zeros_like(values, dtype=torch.bool)
        found = [f"{v:g}" for v in torch.unique(values[~nan]).tolist()] + ["nan"] * bool(nan.any())
        shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
        hint = " (a 0/255 mask: divide it by 255, or pass masks > 0)" if "255" in found else ""
        raise ValueError(
            f"expected masks with values in {{0, 1}} (or bool), found {len(found)} other value(s): {shown}{hint}"
        )


def bce_sum_per_image(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """BCE-with-logits summed over the pixels of each image, averaged over the batch (the ELBO's scale)."""
    return (
        F.binary_cross_entropy_with_logits(logits, masks.to(logits.dtype), reduction="none")
        .flatten(1)
        .sum(1)
        .mean()
    )


def diagonal_gaussian(mu: torch.Tensor, log_sigma: torch.Tensor, event_dims: int) -> Independent:
    """``Independent(Normal)`` over the last ``event_dims`` dims, log-sigma clamped to ``LOG_SIGMA_RANGE``.

    Clamping keeps every KL and sample finite; the analytic KL comes from ``torch.distributions``.
    """
    log_sigma = log_sigma.clamp(*LOG_SIGMA_RANGE)
    # validate_args=False: a NaN must reach the loss guard, which names the term, not fail inside Normal first.
    return Independent(Normal(mu, log_sigma.exp(), validate_args=False), event_dims, validate_args=False)


class _ImageNoise:
    """Standard-normal streams of one batch's images: one generator per (image, sample), seeded by the
    image's seed and the sample's index, so sample ``j`` of an image draws the same noise whatever its batch,
    its place in it and however the model splits its samples (the HPU-Net decodes them in chunks sized by
    the batch)."""

    def __init__(self, seeds: Sequence[int]):
        self.seeds = [int(s) for s in seeds]
        self._streams: dict[tuple[int, int], torch.Generator] = {}

    def normal(self, image: int, sample: int, shape: torch.Size) -> torch.Tensor:
        stream = self._streams.get((image, sample))
        if stream is None:  # CPU generators: the same draws on any device
            seed = (self.seeds[image] * 1_000_003 + sample) % 2**63
            stream = self._streams[image, sample] = torch.Generator().manual_seed(seed)
        return torch.randn(shape, generator=stream)


_IMAGE_NOISE: ContextVar[_ImageNoise | None] = ContextVar("medical_image_noise", default=None)


@contextmanager
def image_noise(seeds: Sequence[int]) -> Iterator[None]:
    """Within it, :func:`sample_latent` draws image ``i``'s latents from streams seeded by ``seeds[i]`` (one
    per image of the batch) instead of torch's global generator, which it leaves untouched. Evaluation
    samples so: from the global stream in batch order, an image's samples (and its GED, Hungarian IoU,
    diversity) depended on its batch mates, so on ``--data.batch_size``."""
    token = _IMAGE_NOISE.set(_ImageNoise(seeds))
    try:
        yield
    finally:
        _IMAGE_NOISE.reset(token)


def _diverged() -> FloatingPointError:
    return FloatingPointError(
        "a latent Gaussian's sigma holds NaN / inf: the network's outputs diverged (weights blown up by a "
        "learning rate far too high?)"
    )


def sample_latent(
    dist: Independent, shape: tuple[int, ...] = (), rows: Sequence[tuple[int, int]] | None = None
) -> torch.Tensor:
    """``dist.sample(shape)`` (the same random draws), with a clear FloatingPointError where its sigma is NaN /
    inf: ``torch.normal``'s own ("normal expects all elements of std >= 0.0") says nothing of why. A NaN sigma
    means diverged weights (a learning rate far too high); in training the loss guard sees it first.

    Under :func:`image_noise`: ``mu + sigma * eps`` in the same shape and layout, each entry's ``eps`` from
    the stream of its image and sample. ``rows`` gives the (image, first sample) of each entry of ``dist``'s
    batch (default: entry ``i`` is image ``i``, sample 0); an entry's ``shape`` draws are its samples from
    there on (flattened in order). A model samples through here, with ``rows`` where its batch repeats
    images, for its evaluation scores not to depend on the batch."""
    noise = _IMAGE_NOISE.get()
    if noise is not None:
        return _sample_per_image(dist, shape, rows, noise)
    try:  # torch.normal checks sigma itself: no second pass over it (a device sync) on the normal path
        return dist.sample(shape)
    except RuntimeError:
        if torch.isfinite(dist.base_dist.scale).all():
            raise
        raise _diverged() from None


# The stream index of an image's reparameterised posterior draw (:func:`posterior_latent`): apart from its
# prior samples' 0 .. N-1, so the loss's draw does not repeat (nor shift) the noise of sample 0.
_POSTERIOR_STREAM = -1


def posterior_latent(dist: Independent) -> torch.Tensor:
    """The loss's reparameterised posterior draw, ``dist.rsample()`` (one entry per image; training's draws
    are unchanged). Under :func:`image_noise`, each image's ``eps`` comes from a stream of its own, so
    evaluation's loss, like its samples, depends neither on the batch (its size, order, mates) nor on the
    global generator: drawn from the global stream in batch order, ``val/loss`` of 8 images moved by up to
    10 % (tiny Prob. U-Net) and 1 % (tiny HPU-Net) between batch sizes 1 / 3 / 4 / 8 and run seeds. A NaN
    sigma gives NaN latents, as ``rsample`` does (the loss shows it), not an error."""
    noise = _IMAGE_NOISE.get()
    if noise is None:
        return dist.rsample()
    rows = [(i, _POSTERIOR_STREAM) for i in range(dist.batch_shape[0])] if dist.batch_shape else None
    return _sample_per_image(dist, (), rows, noise, check_finite=False)


def _sample_per_image(
    dist: Independent,
    shape: tuple[int, ...],
    rows: Sequence[tuple[int, int]] | None,
    noise: _ImageNoise,
    check_finite: bool = True,
) -> torch.Tensor:
    batch, event = dist.batch_shape, dist.event_shape
    given = rows
    rows = [(i, 0) for i in range(batch[0])] if rows is None and len(batch) == 1 else rows
    if len(batch) != 1 or len(rows) != batch[0] or any(not 0 <= i < len(noise.seeds) for i, _ in rows):
        images = sorted({i for i, _ in rows or ()})
        raise ValueError(
            "sample_latent under image_noise: expected a batch of one dimension with an (image, first "
            f"sample) row each, images in [0, {len(noise.seeds)}) (one seed per image), got batch shape "
            f"{tuple(batch)} with {'no rows (entry i: image i)' if given is None else f'{len(rows)} rows'} "
            f"of images {images[0] if images else None}..{images[-1] if images else None}"
        )
    loc, scale = dist.base_dist.loc, dist.base_dist.scale
    if check_finite and not torch.isfinite(scale).all():
        raise _diverged()
    count = math.prod(shape)
    eps = torch.stack(
        [torch.stack([noise.normal(i, first + s, event) for i, first in rows]) for s in range(count)]
    )  # (count, batch, *event): dist.sample's layout
    return loc + scale * eps.view(*shape, *batch, *event).to(loc.device, loc.dtype)


def select_top_k(
    ce: torch.Tensor, fraction: float, stochastic: bool = False, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Indices of ``floor(fraction * ce.numel())`` (at least 1) pixels of a flat per-pixel loss.

    Deterministic: the k largest. Stochastic: k pixels drawn without replacement with probability proportional
    to their loss (Gumbel top-k, as the DeepMind HPU-Net code does), so easy pixels are still visited now and
    then.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"top-k fraction must be in (0, 1], got {fraction}")
    k = max(1, math.floor(ce.numel() * fraction))
    score = ce.detach()
    if stochastic:
        u = torch.rand(score.shape, generator=generator, device=score.device).clamp_(1e-12, 1 - 1e-7)
        score = torch.log(score / score.sum().clamp_min(1e-12) + 1e-30) - torch.log(-torch.log(u))
    return torch.topk(score, k, sorted=False).indices


def instance_norm_as_group_norm(module: torch.nn.Module) -> torch.nn.Module:
    """Swap every ``InstanceNorm2d`` without running statistics for the equal ``GroupNorm(C, C)``, in place.

    Same output, same parameters (``weight`` / ``bias`` when affine), so state dicts and checkpoints are
    unchanged. Why: PyTorch runs instance norm as batch norm on a (1, B*C, H, W) view, and the in-place
    LeakyReLU of MONAI's blocks on that view makes autograd copy each activation map again in backward; the
    native group-norm kernel does neither. Prob. U-Net training step on CPU (batch 16, 128 px, 32-64-128-192):
    about 10 % more images per CPU-second (2.11 -> 2.38, 7 interleaved steps; issue 20).
    """
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.InstanceNorm2d) and not child.track_running_stats:
                norm = torch.nn.GroupNorm(child.num_features, child.num_features, child.eps, child.affine)
                if child.affine:
                    norm.weight, norm.bias = child.weight, child.bias
                setattr(parent, name, norm)
    return module
