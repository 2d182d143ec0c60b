"""The road-anomaly segmenter as a plain ``nn.Module``: usable without Lightning (apps, export, your own code).

It holds everything a score reads: input normalisation, the closed-set segmenter
(:class:`shared.segmentation.SegmentationNet`), the outlier head and the logistic calibration of the energy that
outlier exposure learns, and the training-set statistics of SML and the Mahalanobis score as buffers (so saved
weights carry them). :class:`domains.driving.anomaly.task.AnomalySegmentationTask` trains it;
:meth:`AnomalySegmenter.calibrate` and :meth:`AnomalySegmenter.scores` are its public API.

    model = AnomalySegmenter(encoder="unet_encoder", encoder_kwargs={"channels": [16, 32, 64, 128]})
    model.calibrate(train_batches)                       # dicts with "image" (B,3,H,W) in [0,1], "mask" (B,H,W)
    model.eval()                                         # as any nn.Module: BatchNorm encoders use their statistics
    maps = model.scores(images, ["sml", "energy"], smoothing=1.0)   # {name: (B, H, W)}, higher = more anomalous
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from domains.driving.anomaly.outliers import OUTLIER_LABEL, OutlierHead
from domains.driving.anomaly.scores import (
    FEATURE_SCORES,
    SCORES,
    SIMPLE_SCORES,
    STAT_SCORES,
    AnomalyScoreError,
    check_finite,
    check_logits,
    energy,
    score_of_checked,
    smooth_score_map,
)
from domains.driving.classes import SEMANTIC_CLASSES
from shared.backbones import IMAGENET_MEAN, IMAGENET_STD
from shared.networks import RemembersInitArgs
from shared.segmentation import SegmentationNet, pad_to_multiple

IGNORE_INDEX = 255
OE_OBJECTIVES = ("extra_logit", "energy", "both")
#: buffers filled by :meth:`AnomalySegmenter.calibrate`
STAT_BUFFERS = ("sml_mean", "sml_std", "feat_mean", "feat_precision", "feat_valid", "calibrated")
#: score maps whose range is fixed, so heatmaps of different images share one colour scale
FIXED_RANGES = {"msp": (0.0, 1.0), "outlier_prob": (0.0, 1.0)}

__all__ = [
    "FIXED_RANGES",
    "OE_OBJECTIVES",
    "STAT_BUFFERS",
    "AnomalySegmenter",
    "batch_images",
    "batch_masks",
    "score_names",
]


def batch_images(batch) -> torch.Tensor:
    """Images of a loader batch: a dict's ``image`` or a tuple's first item."""
    return batch["image"] if isinstance(batch, dict) else batch[0]


def batch_masks(batch, key: str = "mask") -> torch.Tensor:
    """Class (or anomaly) masks of a loader batch: a dict's ``key`` or a tuple's second item."""
    return batch[key] if isinstance(batch, dict) else batch[1]


def score_names(names: str | Iterable[str]) -> list[str]:
    """``names`` as a list: one name alone (``"energy"``) is that one score, not its letters."""
    return [names] if isinstance(names, str) else list(names)


def check_float_images(images: torch.Tensor, in_channels: int) -> None:
    """Refuse what is not a floating (B, ``in_channels``, H, W) tensor: a uint8 image (0..255) was normalised
    as if in [0, 1] (about 255 / 0.225 standard deviations off) and gave score maps without an error."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != in_channels:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"AnomalySegmenter: expected images of shape (B, {in_channels}, H, W), got {shape}")
    if not images.is_floating_point():
        raise ValueError(
            f"AnomalySegmenter: expected floating images in [0, 1], got dtype {images.dtype}: bring uint8 "
            "images (0..255) to [0, 1] with images.float() / 255"
        )


def calibration_masks(masks: torch.Tensor, images: torch.Tensor, batch: int) -> torch.Tensor:
    """Class masks (B, H, W) int64 of one calibration batch: a (B, 1, H, W) mask loses its channel, uint8 /
    int32 / whole-valued float class ids become int64 (``index_add_`` and ``bincount`` index with them)."""
    if not isinstance(masks, torch.Tensor):
        raise TypeError(f"calibrate: batch {batch}'s mask is a {type(masks).__name__}, expected a tensor")
    if masks.ndim == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    expected = (images.shape[0], *images.shape[-2:])
    if tuple(masks.shape) != expected:
        raise ValueError(
            f"calibrate: batch {batch}'s mask has shape {tuple(masks.shape)}, expected (B, H, W) = {expected} "
            f"or (B, 1, H, W) for images of shape {tuple(images.shape)}"
        )
    if masks.is_floating_point() and bool((masks != masks.round()).any()):
        raise ValueError(f"calibrate: batch {batch}'s mask holds non-integer values: expected class ids")
    return masks.long()


class AnomalySegmenter(RemembersInitArgs, nn.Module):
    """Closed-set road-scene segmenter plus per-pixel anomaly scores by name (see ``scores.SCORES``).

    Args:
        encoder: registered backbone under the shared U-Net decoder (``shared.backbones.list_backbones()``).
        encoder_kwargs: keyword arguments of that backbone (e.g. ``{channels: [16, 32, 64, 128]}``).
        decoder_channels: U-Net decoder widths (one per skip level; None: the shared default).
        num_classes: known semantic classes (``domains.driving.classes.SEMANTIC_CLASSES``).
        in_channels: image channels (3: ImageNet normalisation; else mean 0.5, std 0.25).
        oe_objective: how ``outlier_prob`` reads outlier exposure: the head's logit (``extra_logit``), the
            calibrated energy ``a * E + b`` (``energy``) or their mean (``both``).
        outlier_head_channels: width of the outlier head's full-resolution 3x3 conv.
        size_multiple: inputs are padded (replicate) to multiples of this and the outputs cropped back, so any
            encoder (ViT patches, ResNet strides) takes any image size.
    """

    #: why some parameters get no gradient in some steps: DDP then needs find_unused_parameters (shared.cli)
    IDLE_PARAMETERS = "its outlier head is idle on plain cross-entropy steps"

    def __init__(
        self,
        encoder: str = "unet_encoder",
        encoder_kwargs: dict | None = None,
        decoder_channels: list[int] | None = None,
        num_classes: int = len(SEMANTIC_CLASSES),
        in_channels: int = 3,
        oe_objective: str = "both",
        outlier_head_channels: int = 32,
        size_multiple: int = 32,
    ):
        super().__init__()
        if oe_objective not in OE_OBJECTIVES:
            raise ValueError(f"oe_objective must be one of {OE_OBJECTIVES}, got {oe_objective!r}")
        if outlier_head_channels < 1:
            raise ValueError(f"outlier_head_channels must be >= 1, got {outlier_head_channels}")
        self.num_classes, self.in_channels = num_classes, in_channels
        self.oe_objective, self.size_multiple = oe_objective, size_multiple
        self.segmenter = SegmentationNet(
            num_classes=num_classes,
            in_channels=in_channels,
            encoder=encoder,
            encoder_kwargs=encoder_kwargs,
            decoder_channels=decoder_channels,
        )
        mean, std = (
            (IMAGENET_MEAN, IMAGENET_STD)
            if in_channels == 3
            else ((0.5,) * in_channels, (0.25,) * in_channels)
        )
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        dim = self.segmenter.backbone.feature_channels[0]
        # Training-set statistics (filled by calibrate()).
        self.register_buffer("sml_mean", torch.zeros(num_classes))
        self.register_buffer("sml_std", torch.ones(num_classes))
        self.register_buffer("feat_mean", torch.zeros(num_classes, dim))
        self.register_buffer("feat_precision", torch.eye(dim))
        self.register_buffer("feat_valid", torch.zeros(num_classes, dtype=torch.bool))
        self.register_buffer("calibrated", torch.tensor(False))
        # Outlier head: built always, so plain and OE weights share one layout.
        self.outlier_head = OutlierHead(
            self.segmenter.backbone.feature_channels[:3], hidden=outlier_head_channels
        )
        # Logistic calibration of the energy learnt by energy OE: p(outlier) = sigmoid(a * E + b), a = softplus(raw)
        self.oe_scale_raw = nn.Parameter(torch.tensor(0.0))
        self.oe_bias = nn.Parameter(torch.tensor(0.0))
        self.register_buffer("oe_trained", torch.tensor(False))

    @property
    def backbone(self) -> nn.Module:
        """The registry encoder under the U-Net decoder (for transfer learning: ``model.backbone``, as the
        detector's and the classifier's)."""
        return self.segmenter.backbone.encoder

    # ------------------------------------------------------------------------------------------ forward
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits (B, C, H, W) of images (B, C_in, H, W) in [0, 1]."""
        return self.features(images)[0]

    def features(
        self, images: torch.Tensor, with_outlier: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Logits (B, C, H, W), full-resolution decoder features (B, D, H, W) and, with ``with_outlier``, the
        outlier head's logit (B, 1, H, W), for floating images in [0, 1] (others: :func:`check_float_images`)."""
        check_float_images(images, self.in_channels)
        x = (images - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        logits, feats = self.segmenter.forward_with_features(pad_to_multiple(x, self.size_multiple))
        extra = self.outlier_head(feats)[..., :h, :w] if with_outlier else None
        return logits[..., :h, :w], feats[0][..., :h, :w], extra

    def needs_outlier_head(self, names: Iterable[str]) -> bool:
        """Whether the scores ``names`` (or one name) read the outlier head's logit."""
        return self.oe_objective in ("extra_logit", "both") and "outlier_prob" in score_names(names)

    def outlier_logit(self, logits: torch.Tensor, head_logit: torch.Tensor | None) -> torch.Tensor:
        """The OE objective's outlier logit (B, H, W): head, calibrated energy, or their mean."""
        parts = []
        if self.oe_objective in ("extra_logit", "both"):
            if head_logit is None:
                raise AnomalyScoreError("score 'outlier_prob' needs the outlier head's logit")
            parts.append(head_logit[:, 0])
        if self.oe_objective in ("energy", "both"):
            parts.append(self.energy_logit(logits))
        return parts[0] if len(parts) == 1 else 0.5 * (parts[0] + parts[1])

    def energy_logit(self, logits: torch.Tensor) -> torch.Tensor:
        """``a * energy + b``: the free energy through the logistic calibration energy OE learns."""
        return F.softplus(self.oe_scale_raw) * energy(logits) + self.oe_bias

    @property
    def stats(self) -> dict[str, torch.Tensor]:
        """Everything the scores read besides logits / features."""
        return {
            "sml_mean": self.sml_mean,
            "sml_std": self.sml_std,
            "feat_mean": self.feat_mean,
            "feat_precision": self.feat_precision,
            "feat_valid": self.feat_valid,
            "oe_scale": F.softplus(self.oe_scale_raw),
            "oe_bias": self.oe_bias,
        }

    # ------------------------------------------------------------------------------------------- scores
    def usable_scores(self) -> list[str]:
        """Scores these weights can give now: statistics-based ones once calibrated, OE once trained with it."""
        names = [s for s in [*SIMPLE_SCORES, "mahalanobis"] if s not in STAT_SCORES or bool(self.calibrated)]
        return names + (["outlier_prob"] if bool(self.oe_trained) else [])

    def score_maps(
        self,
        logits: torch.Tensor,
        features: torch.Tensor | None,
        names: str | Iterable[str],
        outlier_logit: torch.Tensor | None = None,
        smoothing: float = 0.0,
    ) -> dict[str, torch.Tensor]:
        """Float32 score maps (B, H, W) by name from this model's outputs (see :meth:`features`).

        Computed outside autocast: under bf16 / fp16 mixed precision the logsumexp, softmax and Mahalanobis
        products would otherwise run in half precision, and numpy has no bfloat16.
        """
        with torch.autocast(logits.device.type, enabled=False):
            logits = logits.float()
            features = None if features is None else features.float()
            outlier_logit = None if outlier_logit is None else outlier_logit.float()
            names = score_names(names)
            # read the flags once per call (each bool() of a GPU buffer is a device sync)
            calibrated = bool(self.calibrated) if any(n in STAT_SCORES for n in names) else True
            oe_trained = bool(self.oe_trained) if "outlier_prob" in names else True
            for name in names:  # what is asked for first, then whether the inputs are sound
                if name not in SCORES:
                    raise AnomalyScoreError(f"unknown anomaly score {name!r}; available: {', '.join(SCORES)}")
                if name in STAT_SCORES and not calibrated:
                    raise AnomalyScoreError(
                        f"score {name!r} needs training-set statistics, but this model was never calibrated: "
                        "train it with fit (which calibrates) or call calibrate(train_loader)"
                    )
                if name == "outlier_prob" and not oe_trained:
                    raise AnomalyScoreError(
                        "score 'outlier_prob' needs a model trained with outlier exposure (oe_weight > 0); "
                        "this one has not had an OE step yet; choose a score that needs none, e.g. 'energy' (the "
                        "export's --score, the task's --model.score)"
                    )
            # the inputs checked once for all the scores (compute_score would check them per score)
            logits = check_logits(logits, ", ".join(names))
            feature_scores = [n for n in names if n in FEATURE_SCORES]
            if feature_scores:
                check_finite(features, f"score {', '.join(feature_scores)!r}: the decoder features contain NaN or inf")
            stats = self.stats  # built once (a dict and a softplus)
            out = {}
            for name in names:
                feats = features if name in FEATURE_SCORES else None
                extra = None
                if name == "outlier_prob":
                    extra = self.outlier_logit(logits, outlier_logit)
                    check_finite(extra, f"score {name!r}: the outlier logit contains NaN or inf")
                out[name] = smooth_score_map(score_of_checked(name, logits, stats, feats, extra), smoothing)
        return out

    def maps_by_size(
        self,
        images: torch.Tensor,
        names: str | Sequence[str],
        sizes: Sequence[Sequence[int]] | None = None,
        smoothing: float = 0.0,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits (B, C, H, W) and score maps {name: (B, H, W)} of a batch padded to one size, ``sizes`` giving
        each image's own (H, W) (default: all the batch's). Each size runs alone on its images cut to that
        size, so an image's maps do not depend on its batch mates: the zero padding, and the smoothing after
        it, reached its edge (logits up to 3.3 apart). The padding reads 0."""
        full = tuple(images.shape[-2:])
        names = score_names(names)
        sizes = [tuple(int(v) for v in s) for s in sizes] if sizes is not None else [full] * len(images)
        with_outlier = self.needs_outlier_head(names)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, size in enumerate(sizes):
            groups.setdefault(size, []).append(i)
        if list(groups) == [full]:  # one size, no padding: the batch as it is
            logits, feats, extra = self.features(images, with_outlier)
            return logits, self.score_maps(logits, feats, names, extra, smoothing)
        logits_out = images.new_zeros(len(images), self.num_classes, *full)
        maps_out = {name: images.new_zeros(len(images), *full) for name in names}
        for (h, w), same in groups.items():
            logits, feats, extra = self.features(images[same, :, :h, :w], with_outlier)
            logits_out[same, :, :h, :w] = logits.to(logits_out.dtype)
            for name, value in self.score_maps(logits, feats, names, extra, smoothing).items():
                maps_out[name][same, :h, :w] = value
        return logits_out, maps_out

    @torch.no_grad()
    def scores(
        self, images: torch.Tensor, names: str | Sequence[str], smoothing: float = 0.0
    ) -> dict[str, torch.Tensor]:
        """Anomaly maps {name: (B, H, W)} (higher = more anomalous) for floating images (B, C, H, W) in [0, 1],
        plus ``"logits"`` (B, C, H, W). ``names``: score names, or one as a str. ``smoothing``: sigma (px) of a
        Gaussian blur of every map (0: none)."""
        names = score_names(names)
        logits, feats, extra = self.features(images, with_outlier=self.needs_outlier_head(names))
        return {**self.score_maps(logits, feats, names, extra, smoothing), "logits": logits.float()}

    # ------------------------------------------------------------------------------------------ calibration
    @torch.no_grad()
    def calibrate(
        self, loader: Iterable, max_batches: int | None = None, max_feature_pixels: int = 20000
    ) -> dict[str, float]:
        """Fill the SML and Mahalanobis statistics from training batches (dicts with ``image`` and ``mask``;
        masks (B, H, W) or (B, 1, H, W) of class ids, any integer dtype: :func:`calibration_masks`).

        SML (Jung et al. 2021): mean / std of the max logit over pixels *predicted* as each class. Mahalanobis
        (Lee et al. 2018): class means of the decoder feature by *ground-truth* class and one shared
        covariance; at most ``max_feature_pixels`` random pixels per batch feed it. Void (255) and pasted
        outlier pixels are left out. Returns pixel counts and seconds.
        """
        started = time.perf_counter()
        was_training = self.training
        self.eval()
        c, d = self.num_classes, self.feat_mean.shape[1]
        dev = self.sml_mean.device
        f64 = {"dtype": torch.float64, "device": dev}
        cnt, s1, s2 = torch.zeros(c, **f64), torch.zeros(c, **f64), torch.zeros(c, **f64)
        fcnt, fsum, fouter = torch.zeros(c, **f64), torch.zeros(c, d, **f64), torch.zeros(d, d, **f64)
        gen = torch.Generator(device="cpu").manual_seed(0)
        batches = 0
        try:
            for i, batch in enumerate(loader):
                if max_batches is not None and i >= max_batches:
                    break
                images = batch_images(batch).to(dev)
                masks = calibration_masks(batch_masks(batch), images, i).to(dev)
                bad = (masks != IGNORE_INDEX) & (masks != OUTLIER_LABEL) & ((masks < 0) | (masks >= c))
                if bool(bad.any()):
                    raise ValueError(
                        f"calibrate: batch {i} has mask values {torch.unique(masks[bad]).tolist()[:10]} outside "
                        f"0..{c - 1} (and {IGNORE_INDEX} = void)"
                    )
                logits, feats, _ = self.features(images)
                logits, feats = logits.float(), feats.float()
                valid = (masks != IGNORE_INDEX) & (masks != OUTLIER_LABEL)
                top, pred = logits.max(dim=1)
                p, v = pred[valid], top[valid].double()
                cnt += torch.bincount(p, minlength=c).double()
                s1 += torch.bincount(p, weights=v, minlength=c)
                s2 += torch.bincount(p, weights=v * v, minlength=c)
                f = feats.permute(0, 2, 3, 1)[valid]
                y = masks[valid]
                if f.shape[0] > max_feature_pixels:
                    keep = torch.randperm(f.shape[0], generator=gen)[:max_feature_pixels].to(dev)
                    f, y = f[keep], y[keep]
                f = f.double()
                fcnt += torch.bincount(y, minlength=c).double()
                fsum.index_add_(0, y, f)
                fouter += f.T @ f
                batches += 1
        finally:
            self.train(was_training)
        total = float(cnt.sum())
        if total == 0:
            raise ValueError(f"calibrate: no labelled (non-void) pixels in {batches} batch(es)")
        # SML: classes never predicted on the training data fall back to the statistics of all pixels.
        g_mean = float(s1.sum()) / total
        g_std = max(float(s2.sum()) / total - g_mean**2, 1e-12) ** 0.5
        seen = cnt > 1
        mean = torch.where(seen, s1 / cnt.clamp_min(1), torch.full_like(s1, g_mean))
        var = s2 / cnt.clamp_min(1) - mean**2
        std = torch.where(seen, var.clamp_min(1e-12).sqrt(), torch.full_like(s1, g_std))
        self.sml_mean.copy_(mean.float())
        self.sml_std.copy_(std.float())
        # Mahalanobis: shared covariance around the class means, ridge-regularised before inversion.
        fvalid = fcnt > 0
        mu = fsum / fcnt.clamp_min(1).unsqueeze(1)
        n = float(fcnt.sum())
        cov = (fouter - (mu * fcnt.unsqueeze(1)).T @ mu) / n
        ridge = 1e-4 * float(torch.diagonal(cov).mean().clamp_min(1e-12)) + 1e-8
        precision = torch.linalg.inv(cov + ridge * torch.eye(d, **f64))
        self.feat_mean.copy_(mu.float())
        self.feat_precision.copy_(((precision + precision.T) / 2).float())
        self.feat_valid.copy_(fvalid)
        self.calibrated.fill_(True)
        return {
            "batches": batches,
            "pixels": int(total),
            "feature_pixels": int(n),
            "seconds": time.perf_counter() - started,
        }
