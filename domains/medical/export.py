"""ONNX export of a trained medical segmenter: ``python -m domains.medical.export --ckpt PATH --out DIR``.

What is written to ``DIR`` (inputs and outputs float32; batch, height, width and sample axes are dynamic):

* ``unet``: ``unet.onnx``: ``image`` (B, C, H, W) in [0, 1] -> ``logits`` (B, 1, H, W). A deterministic model:
  its "samples" are copies of this one map.
* ``prob_unet``: two graphs, so N samples cost one U-Net pass and N cheap f_comb passes, as in PyTorch:

  - ``prob_unet_features.onnx``: ``image`` -> ``features`` (B, F, H, W) (the last U-Net map),
    ``prior_mu`` (B, L) and ``prior_log_sigma`` (B, L) (already clamped to the training range);
  - ``prob_unet_fcomb.onnx``: ``features``, ``z`` (B, N, L) -> ``logits`` (B, N, H, W).

  Sampling stays outside the graphs (ONNX random ops are not reproducible across runtimes):
  ``z = prior_mu[:, None] + exp(prior_log_sigma)[:, None] * eps`` with ``eps ~ N(0, I)`` of shape (B, N, L);
  ``eps = 0`` gives the model's single best guess (its ``forward``).
* ``hpu_net``: two graphs on the same principle (encoder once, decoder per sample):

  - ``hpu_net_encoder.onnx``: ``image`` -> ``enc0`` ... ``enc{K-1}`` (the prior encoder's maps, finest first);
  - ``hpu_net_decoder.onnx``: ``enc0`` ... ``enc{K-1}`` (repeat them N times along the batch for N samples),
    ``eps0`` ... ``eps{S-1}`` -> ``logits`` (B, 1, H, W). ``eps{s}`` is standard normal noise of latent
    scale ``s`` (coarsest first), shaped (B, latent_channels[s], h, w) with (h, w) the size of
    ``enc{K-1-s}``; each scale's latent is ``mu + sigma * eps`` from that scale's prior head, so ``eps = 0``
    puts every scale at its prior mean (the model's ``forward``) and zeros at chosen scales reproduce
    ``sample_mode`` "global" / "local".

Foreground probability = ``sigmoid(logits)``; a sample's mask is probability >= ``threshold``. The JSON
sidecar ``<model>.json`` records the input size the network was trained on and its channels, how the
training data scaled and sized its images (``preprocessing``, from the checkpoint's data module settings: feed
images prepared the same way), classes, the score, the graphs' inputs and outputs, and the largest difference
between onnxruntime and PyTorch measured on random inputs at export time (export fails, leaving nothing behind,
beyond ``--atol`` + ``--rtol`` times the value).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from domains.medical.data import DecathlonSliceDataset, MedicalDataModule, dataset_defaults
from domains.medical.models import MODELS, HierarchicalProbUNet, ProbabilisticUNet, UNetSegmenter
from domains.medical.models.common import LOG_SIGMA_RANGE
from domains.medical.predict import size_multiple
from domains.medical.task import MedicalSegmentationTask
from shared.backbones import upsample_nearest
from shared.export import (
    DEFAULT_CHECK,
    CheckedExport,
    ExportCheck,
    export_main,
    run_export,
)


class ProbUNetFeatures(nn.Module):
    """image -> (U-Net features, prior mu, prior log-sigma): everything f_comb's samples share."""

    def __init__(self, net: ProbabilisticUNet):
        super().__init__()
        self.unet, self.prior = net.unet, net.prior

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.unet(image)[0]
        # AxisAlignedConvGaussian.forward without the torch.distributions object (not traceable to ONNX)
        pooled = self.prior.encoder(image)[-1].mean(dim=(2, 3), keepdim=True)
        mu, log_sigma = self.prior.head(pooled).flatten(1).chunk(2, dim=1)
        return features, mu, log_sigma.clamp(*LOG_SIGMA_RANGE)


class ProbUNetFComb(nn.Module):
    """(features, z) -> logits (B, N, H, W): the model's f_comb in one chunk, so any N runs in one graph."""

    def __init__(self, net: ProbabilisticUNet):
        super().__init__()
        self.fcomb = copy.deepcopy(net.fcomb)
        self.fcomb.chunk_elements = 2**62  # chunking is a CPU cache trick; traced it would fix N

    def forward(self, features: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.fcomb(features, z)


class HPUNetEncoder(nn.Module):
    """image -> the prior core's encoder maps (finest first)."""

    def __init__(self, net: HierarchicalProbUNet):
        super().__init__()
        self.prior = net.prior

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.prior.encode(image))


class HPUNetDecoder(nn.Module):
    """(encoder maps, per-scale noise) -> logits: the prior decoder with ``z = mu + sigma * eps`` per scale.

    Mirrors ``HierarchicalCore.decode_latents`` + ``HierarchicalProbUNet._likelihood`` with the noise as an
    input (the only change: ``dist.sample()`` becomes ``mu + sigma * eps``); the tests compare the two.
    """

    def __init__(self, net: HierarchicalProbUNet):
        super().__init__()
        self.net = net
        self.num_maps = len(net.prior.channels)

    def forward(self, *maps_and_noise: torch.Tensor) -> torch.Tensor:
        encoded, eps = maps_and_noise[: self.num_maps], maps_and_noise[self.num_maps :]
        core = self.net.prior
        rev = list(encoded)[::-1]
        x = rev[0]
        for level, (head, block) in enumerate(zip(core.heads, core.decoder)):
            mu, log_sigma = head(x).chunk(2, dim=1)
            z = mu + log_sigma.clamp(*LOG_SIGMA_RANGE).exp() * eps[level]
            skip = rev[level + 1]
            x = upsample_nearest(torch.cat([x, z], dim=1), skip.shape[-2:])  # as decode_latents
            x = block(torch.cat([x, skip], dim=1))
        return self.net._likelihood(x, list(encoded))


def _graphs(
    task: MedicalSegmentationTask, size: tuple[int, int], batch: int = 2, samples: int = 3
) -> list[dict]:
    """(file, module, example inputs, input names, output names, dynamic axes) per graph of the model."""
    net = task.model.eval()
    if task.model_name is None:  # the graphs below take the suite's models apart: another one has no recipe here
        raise TypeError(
            f"no ONNX export for {type(net).__module__}.{type(net).__qualname__}: export writes the graphs of "
            f"{', '.join(cls.__name__ for cls in MODELS.values())} and of their subclasses (exported as the model "
            "they extend); export a model of one's own with torch.onnx.export"
        )
    g = torch.Generator().manual_seed(0)
    image = torch.rand(batch, task.model.init_args["in_channels"], *size, generator=g)
    if isinstance(net, UNetSegmenter):
        return [
            {
                "file": "unet.onnx",
                "module": net,
                "inputs": {"image": image},
                "outputs": ["logits"],
                "dynamic_axes": {
                    "image": {0: "batch", 2: "height", 3: "width"},
                    "logits": {0: "batch", 2: "height", 3: "width"},
                },
            }
        ]
    if isinstance(net, ProbabilisticUNet):
        feat_net, fcomb = ProbUNetFeatures(net).eval(), ProbUNetFComb(net).eval()
        with torch.no_grad():
            features, mu, log_sigma = feat_net(image)
        z = mu[:, None] + log_sigma.exp()[:, None] * torch.randn(batch, samples, mu.shape[1], generator=g)
        hw = {0: "batch", 2: "height", 3: "width"}
        return [
            {
                "file": "prob_unet_features.onnx",
                "module": feat_net,
                "inputs": {"image": image},
                "outputs": ["features", "prior_mu", "prior_log_sigma"],
                "dynamic_axes": {
                    "image": hw,
                    "features": hw,
                    "prior_mu": {0: "batch"},
                    "prior_log_sigma": {0: "batch"},
                },
            },
            {
                "file": "prob_unet_fcomb.onnx",
                "module": fcomb,
                "inputs": {"features": features, "z": z},
                "outputs": ["logits"],
                "dynamic_axes": {
                    "features": hw,
                    "z": {0: "batch", 1: "samples"},
                    "logits": {0: "batch", 1: "samples", 2: "height", 3: "width"},
                },
            },
        ]
    if isinstance(net, HierarchicalProbUNet):
        encoder, decoder = HPUNetEncoder(net).eval(), HPUNetDecoder(net).eval()
        with torch.no_grad():
            encoded = encoder(image)
        k = len(encoded)
        enc_names = [f"enc{i}" for i in range(k)]
        eps = {
            f"eps{s}": torch.randn(batch, c, *encoded[k - 1 - s].shape[-2:], generator=g)
            for s, c in enumerate(net.prior.latent_channels)
        }
        axes = {name: {0: "batch", 2: f"{name}_height", 3: f"{name}_width"} for name in [*enc_names, *eps]}
        return [
            {
                "file": "hpu_net_encoder.onnx",
                "module": encoder,
                "inputs": {"image": image},
                "outputs": enc_names,
                "dynamic_axes": {
                    "image": {0: "batch", 2: "height", 3: "width"},
                    **{n: axes[n] for n in enc_names},
                },
            },
            {
                "file": "hpu_net_decoder.onnx",
                "module": decoder,
                "inputs": {**dict(zip(enc_names, encoded)), **eps},
                "outputs": ["logits"],
                "dynamic_axes": {**axes, "logits": {0: "batch", 2: "height", 3: "width"}},
            },
        ]
    raise AssertionError(f"{task.model_name} has no graphs in _graphs")  # MODELS grew: add its graphs here


def export_medical(
    task: MedicalSegmentationTask,
    out_dir: str | Path,
    size: tuple[int, int] = (128, 128),
    check: ExportCheck = DEFAULT_CHECK,
    checkpoint: str | Path | None = None,
    data: dict | None = None,
) -> dict:
    """Export ``task``'s model as the module docstring describes; returns the sidecar (also written as JSON).

    ``data``: the data module settings the model was trained with (a checkpoint's
    ``datamodule_hyper_parameters``), for the sidecar's ``preprocessing``; None: not recorded.

    Every graph is checked with onnxruntime against PyTorch on its example inputs; beyond
    ``atol + rtol * |value|`` the files of this export are removed and a ``ValueError`` names the graph and
    output.
    """
    out_dir = Path(out_dir)
    task = task.eval()
    name = task.model_name
    measured: dict[str, dict[str, float]] = {}
    graphs = {}
    with CheckedExport(out_dir, check, "medical", name, checkpoint) as export:
        for graph in _graphs(task, tuple(size)):
            measured[graph["file"]] = export.graph(
                graph["file"], graph["module"], graph["inputs"], graph["outputs"], graph["dynamic_axes"]
            )
            graphs[graph["file"]] = {
                "inputs": {k: list(v.shape) for k, v in graph["inputs"].items()},
                "outputs": graph["outputs"],
                "dynamic_axes": graph["dynamic_axes"],
            }
        # the graphs take any size (a multiple of preprocessing's); input_size is what the network was trained
        # on, not --size, which only sizes the check's random inputs (checked_size)
        trained = getattr(task.model, "input_size", None)
        sidecar = {
            "graphs": graphs,
            "input_size": list(trained) if trained else list(size),
            "checked_size": list(size),
            "in_channels": int(task.model.init_args["in_channels"]),
            "input_range": [0.0, 1.0],
            "preprocessing": _preprocessing(data, size_multiple(task.model)),
            "classes": ["background", "lesion"],
            "score": "sigmoid(logits): foreground (lesion) probability per pixel",
            "threshold": float(task.threshold),
            "num_samples": int(task.num_samples),
            "sampling": _SAMPLING[name],
        }
        return export.finish(f"{name}.json", sidecar, measured, "random inputs at checked_size")


_SAMPLING = {
    "unet": "deterministic: every sample is the one mask of unet.onnx",
    "prob_unet": "z = prior_mu[:, None] + exp(prior_log_sigma)[:, None] * eps, eps ~ N(0, I) (B, N, L); "
    "prob_unet_fcomb(features, z); eps = 0: the best guess",
    "hpu_net": "run hpu_net_encoder once, repeat enc* N times along the batch, draw eps{s} ~ N(0, I) shaped "
    "(B*N, latent_channels[s], *enc{K-1-s}.shape[2:]) and run hpu_net_decoder; eps{s} = 0: scale s at its "
    "mean",
}


def _preprocessing(data: dict | None, multiple: int) -> dict:
    """How the training data module (:mod:`domains.medical.data`) made its files into network inputs, from its
    settings (``data``): a deployer must scale and size images the same way, which ``input_range`` alone
    does not say. ``multiple``: the side multiple ``predict`` pads whole images to."""
    if not data:
        return {"data_format": None, "note": "not recorded: the checkpoint holds no data module settings"}
    data = {**dataset_defaults(MedicalDataModule), **data}
    kw = {
        **dataset_defaults(DecathlonSliceDataset),
        "crop_size": data["crop_size"],
        **(data["dataset_kwargs"] or {}),
    }
    fmt, crop = data["data_format"], int(kw["crop_size"])
    if fmt == "decathlon":
        low, high = kw["percentiles"]
        return {
            "data_format": fmt,
            "intensity": f"NIfTI channel {kw['modality_index']}; per volume, its {low:g} .. {high:g} "
            "percentile range mapped linearly to 0..1, clipped",
            # what domains.medical.volumes.axial_axes does: a deployer slicing along the stored third axis would
            # feed a permuted volume's sagittal or coronal slices to a model trained on axial ones
            "geometry": "slices along the volume's head-foot voxel axis: the third as stored when it runs "
            "head-foot (as in the Decathlon's own files) or the affine gives no orientation; else the stored axes "
            "are reordered from the affine (nibabel io_orientation) to (left-right X, front-back Y, head-foot Z), "
            "each in its stored direction (no flips); each slice as (rows Y, cols X), resized keeping its physical "
            f"aspect ratio (the header's voxel sizes) to longest side {crop} px (area when shrinking, trilinear "
            "when enlarging), then "
            f"zero-padded symmetrically to {crop}x{crop}",
        }
    intensity = {
        "lidc_png": "grey PNG: 8-bit / 255; 16-bit: each image's own min..max stretched to 0..1",
        "lidc_pickle": "the pickle's float images, in 0..1 as stored",
    }[fmt]
    return {
        "data_format": fmt,
        "intensity": intensity,
        "geometry": f"training: centre crop to {crop}x{crop} px, no resize; predict: the whole image, padded "
        f"at the bottom and right (edge replicated) to a multiple of {multiple} px, outputs cut back",
    }


def _input_size(checkpoint: dict, fallback: int = 128) -> tuple[int, int]:
    """The square the network was trained on: kept with the model (``input_size``); checkpoints from before
    that read the data module's ``crop_size``."""
    crop = (checkpoint.get("hyper_parameters") or {}).get("input_size")
    crop = crop or (checkpoint.get("datamodule_hyper_parameters") or {}).get("crop_size") or fallback
    return int(crop), int(crop)


def main(argv: list[str] | None = None) -> dict:
    return export_main(
        argv,
        "domains.medical",
        __doc__,
        MedicalSegmentationTask,
        export_medical,
        ("the .onnx files", "the JSON sidecar"),
        ckpt_note=" (any model)",
        size_help="size of the random inputs the graphs are checked on (the graphs take any size; default: the "
        "training crop, kept in the checkpoint)",
        input_size=_input_size,
        data=True,
        written=lambda sidecar: (", ".join(sidecar["graphs"]), f"{sidecar['model']}.json"),
    )


if __name__ == "__main__":
    run_export(main)
