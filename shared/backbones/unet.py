"""U-Net encoder and a decoder that sits on any registered backbone, built from MONAI's dynunet blocks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import Backbone, create_backbone, register_backbone


def upsample_nearest(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``F.interpolate(x, size, mode="nearest")``, written as a broadcast when compiled for the CPU and the
    factor is whole.

    Same values either way (gradients equal up to float rounding). Compiled for the CPU, inductor turns the
    gradient of an interpolation into a scatter-add that took about 100 ms per batch-16 step at the 128x128
    decoder level alone; the gradient of a broadcast is a sum that it fuses, and the whole Prob. U-Net step is
    1.09x faster (``benchmarks/prob_unet_speed.py``, rows ``compile_interp`` and ``compile``). Eager mode keeps
    ``F.interpolate``, whose own kernels are the faster ones there; so do tracing and export (their graphs
    keep a resize that follows the input's size) and GPUs (not measured there). The broadcast's output is
    contiguous NCHW whatever ``x``'s layout; inductor picks its own layouts.
    """
    if not torch.compiler.is_compiling() or torch.compiler.is_exporting() or x.device.type != "cpu":
        return F.interpolate(x, size=size, mode="nearest")  # ``size`` untouched: traced graphs stay dynamic
    (h, w), (out_h, out_w) = x.shape[-2:], size
    if out_h % h or out_w % w:
        return F.interpolate(x, size=size, mode="nearest")
    n, c = x.shape[:2]
    return x[:, :, :, None, :, None].expand(n, c, h, out_h // h, w, out_w // w).reshape(n, c, out_h, out_w)


def _has_instance_norm(module: nn.Module) -> bool:
    """Whether ``module`` normalises per image and channel: a map of one pixel fails there ("Expected more than 1
    spatial element when training", in eval mode too). A ``GroupNorm`` of one channel a group is the same norm
    (the Prob. U-Net runs its instance norms as one: ``instance_norm_as_group_norm``)."""
    return any(
        isinstance(m, nn.modules.instancenorm._InstanceNorm)
        or (isinstance(m, nn.GroupNorm) and m.num_groups == m.num_channels)
        for m in module.modules()
    )


def _block(in_ch: int, out_ch: int, stride: int, residual: bool, norm: str) -> nn.Module:
    # imported here: MONAI takes ~2 s to import, and `--help` should not pay for it
    from monai.networks.blocks.dynunet_block import UnetBasicBlock, UnetResBlock

    cls = UnetResBlock if residual else UnetBasicBlock
    return cls(
        spatial_dims=2, in_channels=in_ch, out_channels=out_ch, kernel_size=3, stride=stride, norm_name=norm
    )


class UNetEncoder(Backbone):
    """The plain U-Net contracting path: one MONAI conv block per level, strided conv down (strides 1..16)."""

    def __init__(
        self,
        in_channels: int = 1,
        channels: Sequence[int] = (32, 64, 128, 256, 512),
        residual: bool = False,
        norm: str = "instance",
    ):
        super().__init__()
        blocks, prev = [], in_channels
        for i, c in enumerate(channels):
            blocks.append(_block(prev, c, stride=1 if i == 0 else 2, residual=residual, norm=norm))
            prev = c
        self.blocks = nn.ModuleList(blocks)
        self.in_channels = in_channels
        self.feature_channels = list(channels)
        self.feature_strides = [2**i for i in range(len(channels))]

    def input_size_problem(self, height: int, width: int) -> str | None:
        """Instance norms need two pixels in the coarsest map, ``ceil(side / stride)`` a side (its
        convolutions pad by 1)."""
        stride = self.feature_strides[-1]
        if _has_instance_norm(self) and max(height, width) <= stride:
            return (
                f"an input over {stride} pixels high or wide (its instance norms need more than one pixel at "
                f"stride {stride})"
            )
        return super().input_size_problem(height, width)

    def _forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.run_stages(self.blocks, x)


class UNetDecoder(nn.Module):
    """Expanding path for any encoder that declares ``feature_channels`` and ``feature_strides``.

    From the coarsest map up: nearest-neighbour upsampling to the next finer map's size, concatenation with it
    (the skip connection) and a MONAI conv block. When the encoder's finest map is coarser than the input
    (ResNet: stride 2, ViT pyramid: stride 4), extra blocks without skips upsample to full resolution.
    ``forward(features, output_size)`` returns the decoder maps finest first (full resolution first).
    """

    def __init__(
        self,
        feature_channels: Sequence[int],
        feature_strides: Sequence[int],
        decoder_channels: Sequence[int] | None = None,
        residual: bool = False,
        norm: str = "instance",
    ):
        super().__init__()
        n = len(feature_channels)
        if len(feature_strides) != n:
            raise ValueError(f"{n} feature channels but {len(feature_strides)} strides")
        if decoder_channels is None:
            decoder_channels = [max(16, min(c, 256)) for c in feature_channels[:-1]]
        if len(decoder_channels) != n - 1:
            raise ValueError(
                f"decoder_channels needs {n - 1} entries (one per skip level), got {len(decoder_channels)}"
            )
        self.up_blocks = nn.ModuleList()
        prev = feature_channels[-1]
        for i in range(n - 2, -1, -1):
            out = decoder_channels[i]
            self.up_blocks.append(_block(prev + feature_channels[i], out, 1, residual, norm))
            prev = out
        self.extra_blocks = nn.ModuleList()
        extra_out_channels = []
        stride = feature_strides[0]
        while stride > 1:
            out = max(16, prev // 2)
            self.extra_blocks.append(_block(prev, out, 1, residual, norm))
            extra_out_channels.append(out)
            prev, stride = out, stride // 2
        # Declared outputs, finest first: the extra full-resolution blocks, the skip levels, the bottleneck.
        extra_channels = extra_out_channels[::-1]
        extra_strides = [feature_strides[0] // 2 ** (k + 1) for k in range(len(self.extra_blocks))][::-1]
        self.output_channels = extra_channels + list(decoder_channels) + [feature_channels[-1]]
        self.output_strides = extra_strides + list(feature_strides)

    def forward(
        self, features: Sequence[torch.Tensor], output_size: tuple[int, int] | None = None
    ) -> list[torch.Tensor]:
        x = features[-1]
        outs = [x]
        for block, skip in zip(self.up_blocks, reversed(features[:-1])):
            x = upsample_nearest(x, skip.shape[-2:])
            x = block(torch.cat([x, skip], dim=1))
            outs.append(x)
        for k, block in enumerate(self.extra_blocks):
            last = k == len(self.extra_blocks) - 1
            size = output_size if (last and output_size is not None) else (x.shape[-2] * 2, x.shape[-1] * 2)
            x = block(upsample_nearest(x, size))
            outs.append(x)
        return outs[::-1]


class UNet(Backbone):
    """Encoder + U-Net decoder. ``forward_features`` returns the decoder's maps, finest (full resolution) first.

    ``encoder`` is any registered backbone name (a plain U-Net encoder by default) or a ``Backbone`` instance.
    A torchvision encoder's state dict loads into the whole U-Net as into the encoder (``torchvision_prefix``
    ``encoder.net.``): the decoder, in no such file, is left as it is.
    """

    def __init__(
        self,
        in_channels: int = 1,
        encoder: str | Backbone = "unet_encoder",
        encoder_kwargs: dict | None = None,
        decoder_channels: Sequence[int] | None = None,
        residual: bool = False,
        norm: str = "instance",
    ):
        super().__init__()
        if isinstance(encoder, str):
            encoder = create_backbone(encoder, in_channels=in_channels, **(encoder_kwargs or {}))
        elif encoder.in_channels != in_channels:
            raise ValueError(
                f"encoder takes {encoder.in_channels} input channels but the U-Net was asked for {in_channels}"
            )
        self.encoder = encoder
        if encoder.torchvision_prefix:
            self.torchvision_prefix = "encoder." + encoder.torchvision_prefix
        self.decoder = UNetDecoder(
            encoder.feature_channels, encoder.feature_strides, decoder_channels, residual, norm
        )
        self._decoder_instance_norm = _has_instance_norm(self.decoder)
        self.in_channels = in_channels
        self.feature_channels = self.decoder.output_channels
        self.feature_strides = self.decoder.output_strides

    def adapt_loaded(self, name: str, value: torch.Tensor) -> torch.Tensor | None:
        """The encoder's (a ViT's position grid under ``encoder.``)."""
        if not name.startswith("encoder."):
            return None
        return self.encoder.adapt_loaded(name.removeprefix("encoder."), value)

    def torchvision_weights_loaded(self) -> str | None:
        return self.encoder.torchvision_weights_loaded()

    def _forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.encoder.forward_features(x)  # which checks its own input size
        checking = not (torch.compiler.is_compiling() or torch.jit.is_tracing())
        if checking and self._decoder_instance_norm and len(feats) > 1:
            # the decoder's first block works at the second-coarsest map, whose size only the encoder knows
            # (GoogLeNet's ceil-mode pools make it smaller than side / stride)
            h, w = feats[-2].shape[-2:]
            if h * w == 1:
                raise ValueError(
                    f"UNet with encoder {type(self.encoder).__name__} takes a larger input than "
                    f"{x.shape[-2]}x{x.shape[-1]}: its decoder's instance norms need more than one pixel in "
                    f"the encoder's map at stride {self.encoder.feature_strides[-2]}, which is 1x1 (shape "
                    f"{tuple(x.shape)}): resize or pad the input"
                )
        return self.decoder(feats, output_size=tuple(x.shape[-2:]))


register_backbone("unet_encoder", "unet")(UNetEncoder)
register_backbone("unet", "unet")(UNet)
