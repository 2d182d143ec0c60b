"""Probabilistic U-Net (Kohl et al., NeurIPS 2018) on the shared U-Net.

A U-Net sees the image once; a prior net maps the image, and a posterior net the image with one reader's mask,
to a diagonal Gaussian over a small global latent z (6 dims). ``f_comb`` broadcasts z over the last U-Net
feature map and maps (features, z) to logits with 1x1 convs. Training samples z from the posterior and
minimises reconstruction + beta * KL(posterior || prior); inference samples z from the prior, and N samples
cost one U-Net pass plus N cheap ``f_comb`` passes.

Loss scale (documented because public ports get it wrong): the BCE is *summed over the pixels of an image*
and the KL is *per image* (summed over latent dims), both then averaged over the batch, i.e. the per-image
negative ELBO. ``terms["rec_per_pixel"]`` is the same BCE divided by H*W, for reading curves.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Independent, kl_divergence

from shared.backbones import UNet, UNetEncoder

from .base import MedicalSegmenter
from .common import (
    bce_sum_per_image,
    check_images,
    check_masks,
    diagonal_gaussian,
    init_foreground_bias,
    instance_norm_as_group_norm,
    posterior_latent,
    sample_latent,
)


class AxisAlignedConvGaussian(nn.Module):
    """Image (+ mask) -> diagonal Gaussian over a global latent.

    The shared U-Net encoder (MONAI blocks, two 3x3 convs per level), global average pooling, then a 1x1 conv
    to (mu, log_sigma). The head starts at zero, so prior and posterior both begin as N(0, I): the KL starts
    at 0 and the first steps cannot blow up.
    """

    def __init__(self, in_channels: int, channels: Sequence[int], latent_dim: int, norm: str = "instance"):
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        self.encoder = UNetEncoder(in_channels=in_channels, channels=list(channels), norm=norm)
        self.head = nn.Conv2d(channels[-1], 2 * latent_dim, kernel_size=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.latent_dim = latent_dim

    def forward(self, x: torch.Tensor) -> Independent:
        pooled = self.encoder(x)[-1].mean(dim=(2, 3), keepdim=True)
        mu, log_sigma = self.head(pooled).flatten(1).chunk(2, dim=1)
        return diagonal_gaussian(mu, log_sigma, event_dims=1)


class FComb(nn.Module):
    """Combines U-Net features (B, C, H, W) with latents (B, N, L) into logits (B, N, H, W).

    Equivalent to the paper's ``concat(features, broadcast(z))`` followed by ``num_layers`` 1x1 conv + ReLU
    layers and a 1x1 logits layer, computed cheaper:

    - the first 1x1 conv is linear, so ``W [f; z] = W_f f + W_z z`` where ``W_z z`` is constant over the
      image: ``W_f f`` runs once per image, and each sample only adds its own per-channel offset;
    - the 1x1 convs run as matrix products on channels-last pixels (``F.linear`` with the conv weights), which
      on CPU is several times faster than a 1x1 ``conv2d`` on NCHW maps;
    - samples go through in chunks of about ``chunk_elements`` activations so the working set stays in cache.
    """

    def __init__(
        self,
        feature_channels: int,
        latent_dim: int,
        channels: int | None = None,
        num_layers: int = 3,
        out_channels: int = 1,
        chunk_elements: int = 2**19,
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"f_comb needs at least one 1x1 conv + ReLU layer, got num_layers={num_layers}")
        channels = channels or feature_channels
        self.feature_proj = nn.Conv2d(feature_channels, channels, kernel_size=1)  # W_f of the first layer
        self.latent_proj = nn.Linear(latent_dim, channels, bias=False)  # W_z of the first layer
        self.hidden = nn.ModuleList(
            nn.Conv2d(channels, channels, kernel_size=1) for _ in range(num_layers - 1)
        )
        self.out = nn.Conv2d(channels, out_channels, kernel_size=1)
        self.chunk_elements = chunk_elements

    @staticmethod
    def _pointwise(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, conv.weight.flatten(1), conv.bias)

    def forward(self, features: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 3 or z.shape[0] != features.shape[0]:
            raise ValueError(f"latents must be (B={features.shape[0]}, N, L), got {tuple(z.shape)}")
        b, n = z.shape[:2]
        _, c_in, height, width = features.shape
        pixels = features.permute(0, 2, 3, 1).reshape(b, height * width, c_in)
        base = self._pointwise(self.feature_proj, pixels)  # (B, HW, C), once for all samples
        offsets = self.latent_proj(z)  # (B, N, C)
        chunk = max(1, self.chunk_elements // max(1, base.numel()))  # an empty batch: empty logits
        outs = []
        for start in range(0, n, chunk):
            h = (base[:, None] + offsets[:, start : start + chunk, None, :]).relu_()  # (B, n, HW, C)
            for conv in self.hidden:
                h = self._pointwise(conv, h).relu_()
            outs.append(self._pointwise(self.out, h))  # (B, n, HW, out)
        logits = torch.cat(outs, dim=1).transpose(2, 3).reshape(b, n, self.out.out_channels, height, width)
        return logits[:, :, 0] if logits.shape[2] == 1 else logits


class ProbabilisticUNet(MedicalSegmenter):
    """Prob U-Net with one foreground logit (BCE-with-logits).

    Its U-Net and its prior / posterior encoders are the suite's shared U-Net (``shared/backbones/unet.py``,
    MONAI ``UnetBasicBlock``): per level 2 3x3 convs, each followed by ``norm`` (instance norm by default, run
    as a group norm of one channel per group) and a leaky ReLU, downsampling by a stride-2 first conv and
    nearest-neighbour upsampling. Kohl et al.'s reference (``model/probabilistic_unet.py``) differs: 3 convs
    per block with ReLU and no normalisation, 2x2 average pooling down, bilinear upsampling in the U-Net's
    decoder. The latent, f_comb and loss follow the reference.

    Args:
        in_channels: image channels.
        channels: U-Net encoder channels per level (the decoder mirrors them).
        latent_dim: size of the global latent (6 in the paper).
        latent_encoder_channels: prior/posterior encoder channels (default: ``channels``).
        fcomb_channels, fcomb_layers: width and number of 1x1 conv + ReLU layers of f_comb (paper: 3).
        beta: KL weight.
        norm: normalisation of the MONAI blocks.
        foreground_prior: initial foreground probability of the logits layer.
        channels_last: run the three conv nets on channels-last (NHWC) weights and activations (on a GPU cuDNN
            then picks NHWC kernels too; measured on the CPU only).
            Same state dict keys and maths. Off by default: see ``benchmarks/results/prob_unet_speed.md``
            for what it buys on 2 CPU cores (oneDNN's convolutions gain in that layout, its group norm
            loses).
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: Sequence[int] = (32, 64, 128, 192),
        latent_dim: int = 6,
        latent_encoder_channels: Sequence[int] | None = None,
        fcomb_channels: int | None = None,
        fcomb_layers: int = 3,
        beta: float = 1.0,
        norm: str = "instance",
        foreground_prior: float = 0.05,
        channels_last: bool = False,
    ):
        super().__init__()
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.unet = UNet(
            in_channels=in_channels, encoder_kwargs={"channels": list(channels), "norm": norm}, norm=norm
        )
        enc_channels = list(latent_encoder_channels or channels)
        self.prior = AxisAlignedConvGaussian(in_channels, enc_channels, latent_dim, norm)
        self.posterior = AxisAlignedConvGaussian(in_channels + 1, enc_channels, latent_dim, norm)
        self.fcomb = FComb(self.unet.feature_channels[0], latent_dim, fcomb_channels, fcomb_layers)
        init_foreground_bias(self.fcomb.out, foreground_prior)
        instance_norm_as_group_norm(self)  # same maths, a faster CPU training step (see its docstring)
        self.in_channels = in_channels
        self.latent_dim = latent_dim
        self.beta = beta
        self.channels_last = channels_last
        if channels_last:
            # the weights too: a 1-channel image has the same strides in both layouts, so the input alone
            # would not tell the first convolutions which layout to run in
            self.to(memory_format=torch.channels_last)

    @property
    def backbone(self) -> nn.Module:
        """The segmentation U-Net's encoder (the shared U-Net encoder): what ``--model.pretrained_backbone``
        loads. The prior and posterior nets are encoders of their own and start from scratch."""
        return self.unet.encoder

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in the layout the convolutions run fastest in (see ``channels_last``)."""
        if self.channels_last and x.device.type == "cpu":
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The last (full-resolution) U-Net feature map: the one f_comb reads."""
        check_images(images, self.in_channels)
        return self.unet(self._layout(images))[0]

    def posterior_input(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return self._layout(torch.cat([images, masks.to(images.dtype) - 0.5], dim=1))

    def loss(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Negative ELBO per image: BCE summed over pixels + beta * KL, both averaged over the batch."""
        loss, terms, _, _ = self._loss(images, masks)
        return loss, terms

    def _loss(
        self, images: torch.Tensor, masks: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor, Independent]:
        """``loss`` plus the U-Net features and the prior it computed (``loss_and_sample_logits`` reuses them)."""
        check_masks(masks, images)
        features = self.features(images)
        prior = self.prior(self._layout(images))
        posterior = self.posterior(self.posterior_input(images, masks))
        z = posterior_latent(posterior)  # (B, L); per image under image_noise (evaluation)
        logits = self.fcomb(features, z[:, None])[:, :1]  # (B, 1, H, W)
        rec = bce_sum_per_image(logits, masks)
        kl = kl_divergence(posterior, prior).mean()
        loss = rec + self.beta * kl
        terms = {"rec": rec, "kl": kl, "rec_per_pixel": rec / masks[0].numel()}
        return loss, {k: v.detach() for k, v in terms.items()}, features, prior

    def sample_logits(self, images: torch.Tensor, num_samples: int, use_mean: bool = False) -> torch.Tensor:
        """(B, N, H, W) logits from N prior samples; the U-Net and the prior net run once.

        ``use_mean=True`` puts every sample at the prior mean (the network's single "best guess").
        """
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        features = self.features(images)
        prior = self.prior(self._layout(images))
        return self._sample_from(features, prior, num_samples, use_mean)

    def _sample_from(
        self, features: torch.Tensor, prior: Independent, num_samples: int, use_mean: bool = False
    ) -> torch.Tensor:
        if use_mean:
            z = prior.mean[:, None].expand(-1, num_samples, -1)
        else:
            z = sample_latent(prior, (num_samples,)).transpose(0, 1)  # (B, N, L)
        return self.fcomb(features, z)

    def loss_and_sample_logits(
        self, images: torch.Tensor, masks: torch.Tensor, num_samples: int, use_mean: bool = False
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """``loss(images, masks)`` and ``sample_logits(images, num_samples, use_mean)`` with the U-Net and the
        prior net run once for both (evaluation). The loss draws its posterior sample first, then the prior
        samples are drawn: the same random draws, in the same order, as the two calls."""
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        loss, terms, features, prior = self._loss(images, masks)
        return loss, terms, self._sample_from(features, prior, num_samples, use_mean)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (B, 1, H, W) at the prior mean."""
        return self.sample_logits(images, 1, use_mean=True)
