"""Metrics for multi-reader segmentation with sampled predictions (LIDC-style, handbook section 5).

A probabilistic segmenter draws N plausible masks per image; M readers outlined the same image (some
outlined nothing). The set-to-set metrics below compare those two distributions:

- ``generalized_energy_distance``: squared GED, ``D2 = 2 E[d(S,Y)] - E[d(S,S')] - E[d(Y,Y')]`` with
  ``d = 1 - IoU`` of the foreground, IoU = 1 when both masks are empty and 0 when exactly one is.
  Expectations run over *all* pairs including self-pairs (the convention of Kohl et al. and the HPU-Net
  paper), so identical sets give exactly 0.
- ``hungarian_matched_iou``: readers replicated to the N samples, optimal one-to-one matching on 1 - IoU
  (the published protocol: N = 16 samples for M = 4 readers, each reader matched 4 times).
- ``sample_diversity``: ``E[d(S,S')]``, the GED's diversity term on its own.

These set metrics are written by hand: no maintained library implements GED / Hungarian IoU with the
empty-mask convention. Dice and calibration come from MONAI. ``SegmentationUncertaintyMetrics`` is a
``torchmetrics.Metric`` holding only sums, so it resets per epoch and reduces across DDP ranks by summing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torchmetrics
from scipy.optimize import linear_sum_assignment
from torchmetrics.utilities import rank_zero_warn

__all__ = [
    "SegmentationUncertaintyMetrics",
    "generalized_energy_distance",
    "hungarian_matched_iou",
    "majority_vote",
    "pairwise_iou",
    "sample_diversity",
]

ArrayLike = np.ndarray | torch.Tensor


def _tensor(x, name: str, strict: bool = True) -> torch.Tensor:
    """``x`` (a numpy array or a tensor; with ``strict`` False also what ``torch.as_tensor`` reads, e.g. a
    list) as a detached tensor. A numpy view with negative strides (a flip, ``a[:, ::-1]``) is copied first:
    torch refuses those."""
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    if isinstance(x, torch.Tensor):
        return x.detach()
    if not strict:
        return torch.as_tensor(x)
    raise TypeError(f"{name}: expected a numpy array or torch tensor, got {type(x).__name__}")


def _as_mask_stack(x: ArrayLike, name: str) -> torch.Tensor:
    """Validate a (K, H, W) binary stack and return it as a float64 tensor (exact counts up to 2**53)."""
    t = _tensor(x, name)
    if t.ndim != 3:
        raise ValueError(
            f"{name}: expected a stack of binary masks with shape (K, H, W), got shape {tuple(t.shape)}"
            " (for a single mask use mask[None])"
        )
    if t.shape[0] == 0:
        raise ValueError(f"{name}: expected at least one mask, got an empty stack of shape {tuple(t.shape)}")
    if t.dtype != torch.bool and not bool(((t == 0) | (t == 1)).all()):
        bad = t[(t != 0) & (t != 1)].flatten()[:5].tolist()
        raise ValueError(f"{name}: expected binary masks with values in {{0, 1}}, found e.g. {bad}")
    return t.to(torch.float64)


def _pairwise_iou_tensor(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU matrix of float masks (..., K, H, W) x (..., L, H, W) -> (..., K, L) via one (batched) matrix
    product; both-empty pairs -> 1."""
    a = a.flatten(-2)
    b = b.flatten(-2).to(a.device)
    inter = a @ b.transpose(-1, -2)
    union = a.sum(-1)[..., :, None] + b.sum(-1)[..., None, :] - inter
    # union == 0 only when both masks are empty: perfect agreement (handbook convention).
    # One-empty pairs have inter == 0 and union > 0, hence IoU 0 with no special case.
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(inter))


def _check_same_size(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(
            f"{name_a} and {name_b} must share (H, W): got {tuple(a.shape[1:])} and {tuple(b.shape[1:])}"
        )


def pairwise_iou(a: ArrayLike, b: ArrayLike) -> ArrayLike:
    """Foreground IoU between every mask of ``a`` (N, H, W) and every mask of ``b`` (M, H, W) -> (N, M).

    IoU is 1 for two empty masks and 0 when exactly one is empty. Returns a numpy array when ``a`` is a
    numpy array, else a float64 tensor on ``a``'s device.
    """
    ta, tb = _as_mask_stack(a, "a"), _as_mask_stack(b, "b")
    _check_same_size(ta, tb, "a", "b")
    iou = _pairwise_iou_tensor(ta, tb)
    return iou.cpu().numpy() if isinstance(a, np.ndarray) else iou


def generalized_energy_distance(samples: ArrayLike, annotations: ArrayLike) -> float:
    """Squared GED of one image between N samples (N, H, W) and M reader masks (M, H, W).

    ``2 E[d(S,Y)] - E[d(S,S')] - E[d(Y,Y')]``, d = 1 - IoU, all pairs including self-pairs.
    """
    s, y = _as_mask_stack(samples, "samples"), _as_mask_stack(annotations, "annotations")
    _check_same_size(s, y, "samples", "annotations")
    return float(_ged(_pairwise_iou_tensor(s, y), _pairwise_iou_tensor(s, s), _pairwise_iou_tensor(y, y)))


def _ged(iou_sy: torch.Tensor, iou_ss: torch.Tensor, iou_yy: torch.Tensor) -> torch.Tensor:
    """Squared GED from the three IoU matrices (..., N, M), (..., N, N), (..., M, M) -> (...)."""
    dims = (-2, -1)
    return 2.0 * (1.0 - iou_sy).mean(dims) - (1.0 - iou_ss).mean(dims) - (1.0 - iou_yy).mean(dims)


def sample_diversity(samples: ArrayLike) -> float:
    """Mean pairwise distance ``E[d(S,S')]`` of N samples (self-pairs included, as in the GED)."""
    s = _as_mask_stack(samples, "samples")
    return float((1.0 - _pairwise_iou_tensor(s, s)).mean())


def hungarian_matched_iou(samples: ArrayLike, annotations: ArrayLike) -> float:
    """Mean IoU of the optimal one-to-one matching between N samples and the M readers replicated to N.

    The M annotations are tiled ``ceil(N / M)`` times, giving K >= N targets, and
    ``scipy.optimize.linear_sum_assignment`` matches each sample to a distinct target on cost 1 - IoU.
    When N is a multiple of M (16 samples, 4 readers) every reader is used exactly N / M times, the
    usual protocol. Otherwise the assignment itself chooses which K - N surplus copies stay unused
    (rather than truncating the tile, which would favour the first readers by their order); when
    N < M this means the best N distinct readers are matched (N = 1: the best single reader's IoU), so the
    number no longer scores the whole panel. ``SegmentationUncertaintyMetrics`` warns of that once.
    """
    s, y = _as_mask_stack(samples, "samples"), _as_mask_stack(annotations, "annotations")
    _check_same_size(s, y, "samples", "annotations")
    return _hungarian_iou(_pairwise_iou_tensor(s, y).cpu().numpy())


def _hungarian_iou(iou: np.ndarray) -> float:
    """:func:`hungarian_matched_iou` from the (N, M) IoU matrix of samples against readers."""
    n, m = iou.shape
    iou_tiled = np.tile(iou, (1, -(-n // m)))  # (N, M * ceil(N / M)): columns are replicated readers
    rows, cols = linear_sum_assignment(1.0 - iou_tiled)
    return float(iou_tiled[rows, cols].mean())


def majority_vote(reader_masks: ArrayLike) -> ArrayLike:
    """Consensus of M readers along dim 1: foreground where at least half of them marked it.

    Ties (2 of 4 readers) count as foreground, so a lesion half the panel saw is not dropped.
    Input (B, M, H, W) binary, output (B, 1, H, W) float32: a numpy array for a numpy input, as
    :func:`pairwise_iou` gives, else a tensor.
    """
    masks = _tensor(reader_masks, "reader_masks")
    if masks.ndim != 4 or masks.shape[1] == 0:
        raise ValueError(f"reader_masks: expected shape (B, M, H, W) with M >= 1, got {tuple(masks.shape)}")
    votes = masks.to(torch.float64).sum(dim=1, keepdim=True)
    vote = (2.0 * votes >= masks.shape[1]).to(torch.float32)
    return vote.numpy() if isinstance(reader_masks, np.ndarray) else vote


def _check_batch(sample_masks: torch.Tensor, mean_prob: torch.Tensor, reader_masks: torch.Tensor) -> None:
    for name, t in (("sample_masks", sample_masks), ("mean_prob", mean_prob), ("reader_masks", reader_masks)):
        if t.ndim != 4:
            raise ValueError(f"{name}: expected shape (B, C, H, W), got {tuple(t.shape)}")
    b, _, h, w = sample_masks.shape
    if mean_prob.shape != (b, 1, h, w):
        raise ValueError(f"mean_prob: expected shape {(b, 1, h, w)}, got {tuple(mean_prob.shape)}")
    if reader_masks.shape[0] != b or reader_masks.shape[2:] != (h, w):
        raise ValueError(
            f"reader_masks: expected shape ({b}, M, {h}, {w}) to match sample_masks, "
            f"got {tuple(reader_masks.shape)}"
        )
    if sample_masks.shape[1] == 0 or reader_masks.shape[1] == 0:
        raise ValueError("sample_masks and reader_masks need at least one mask per image (N >= 1, M >= 1)")
    # Checked for the whole batch up front so that a bad image cannot leave half-updated sums behind.
    for name, t in (("sample_masks", sample_masks), ("reader_masks", reader_masks)):
        if t.dtype != torch.bool and not bool(((t == 0) | (t == 1)).all()):
            raise ValueError(f"{name}: expected binary masks with values in {{0, 1}}")
    if (
        not bool(torch.isfinite(mean_prob).all())
        or bool((mean_prob < 0).any())
        or bool((mean_prob > 1).any())
    ):
        raise ValueError("mean_prob: expected finite probabilities in [0, 1] (apply sigmoid to logits first)")


class SegmentationUncertaintyMetrics(torchmetrics.Metric):
    """Per-image GED, Hungarian IoU, diversity, Dice and ECE, averaged over images.

    ``update(sample_masks (B,N,H,W), mean_prob (B,1,H,W) or None, reader_masks (B,M,H,W))``; ``mean_prob``
    defaults to the pixel-wise mean of the samples. ``compute()`` returns floats:

    - ``ged``, ``hungarian_iou``, ``diversity``: the functions of this module, per image.
    - ``dice_readers``: Dice of ``mean_prob >= threshold`` against each reader, averaged over readers.
    - ``dice_majority``: the same against ``majority_vote`` (foreground if >= half of the readers).
    - ``ece``: MONAI ``CalibrationErrorMetric`` (expected, ``ece_bins`` equal bins) of ``mean_prob`` against
      the readers' mean, the share of readers marking each pixel (0, 1/M, ..., 1): what a model trained on
      one random reader per step learns to predict. MONAI averages the target per bin, so a soft target
      gives ``sum_b n_b / N |mean p_b - mean share_b|``, and a model whose probability is the readers' share
      scores 0.
    - ``ece_majority``: the same against the majority mask (the earlier ``ece``): a model that outputs the
      majority mask with probabilities 0 / 1 scores 0 here.
    - ``num_samples``: mean N per image (the handbook asks to report it).
    - ``num_images``; ``num_empty_images``: images where every reader mask is empty. Each such image adds
      GED 0, Hungarian IoU 1 and Dice 1 for an empty prediction, so the means above (PHiSeg's convention:
      all images) reward predicting nothing by that share.
    - ``ged_lesion``, ``hungarian_iou_lesion``, ``dice_readers_lesion``: the same means over the images
      where at least one reader marks a lesion (NaN when there is none).

    Both ECEs are computed per image over all its H x W pixels (background included: one foreground
    probability per pixel, ``include_background=True`` on that single channel), then averaged over images.

    Dice uses MONAI ``compute_dice(include_background=True, ignore_empty=False)`` on the single
    foreground channel: an empty prediction on an empty reader mask scores 1, a non-empty one 0, which
    matters on LIDC where some readers mark nothing.

    Hungarian IoU with fewer samples than readers, or N not a multiple of M, is warned of once per metric
    object: see :func:`hungarian_matched_iou`.

    All states are float64 sums (``dist_reduce_fx="sum"``): ``reset()`` between epochs and DDP
    reduction need nothing else.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    #: per-image values averaged over all images
    _IMAGE_MEANS = (
        "ged",
        "hungarian_iou",
        "diversity",
        "dice_readers",
        "dice_majority",
        "ece",
        "ece_majority",
        "num_samples",
    )
    #: per-image values also averaged over the images with a lesion (``<name>_lesion``)
    _LESION_MEANS = ("ged", "hungarian_iou", "dice_readers")

    def __init__(self, threshold: float = 0.5, ece_bins: int = 20, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
        self.threshold = float(threshold)
        self.ece_bins = int(ece_bins)
        self._warned_sample_count = False
        states = (
            *(f"{name}_sum" for name in self._IMAGE_MEANS),
            *(f"{name}_lesion_sum" for name in self._LESION_MEANS),
            "num_images_sum",
            "num_empty_images_sum",
        )
        for state in states:
            self.add_state(state, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def _warn_sample_count(self, n: int, m: int) -> None:
        """Once per metric object: with N < M or N not a multiple of M the Hungarian IoU is another number."""
        if self._warned_sample_count or (n >= m and n % m == 0):
            return
        self._warned_sample_count = True
        what = (
            f"only the best-matching {n} of the {m} readers are scored"
            + (" (1 sample: the best single reader's IoU)" if n == 1 else "")
            if n < m
            else f"the readers are tiled {-(-n // m)} times and the matching chooses which {-(-n // m) * m - n} "
            "copies stay unused, so the readers are not weighted equally"
        )
        rank_zero_warn(
            f"hungarian_iou: {n} samples per image against {m} readers: {what}. The published protocol (Kohl et "
            f"al. 2018, 2019) matches 16 samples to 4 readers, each reader 4 times; give a multiple of {m} "
            "samples (the medical task's --model.num_samples, 16 by default)."
        )

    def update(  # type: ignore[override]
        self,
        sample_masks: torch.Tensor,
        mean_prob: torch.Tensor | None,
        reader_masks: torch.Tensor,
    ) -> None:
        sample_masks = _tensor(sample_masks, "sample_masks", strict=False)
        reader_masks = _tensor(reader_masks, "reader_masks", strict=False).to(sample_masks.device)
        if mean_prob is None:
            if sample_masks.ndim != 4:
                raise ValueError(
                    f"sample_masks: expected shape (B, N, H, W), got {tuple(sample_masks.shape)}"
                )
            mean_prob = sample_masks.float().mean(dim=1, keepdim=True)
        mean_prob = _tensor(mean_prob, "mean_prob", strict=False).to(sample_masks.device).float()
        _check_batch(sample_masks, mean_prob, reader_masks)

        b, n = sample_masks.shape[:2]
        m = reader_masks.shape[1]
        self._warn_sample_count(n, m)
        per_image: dict[str, torch.Tensor] = {}  # name -> (B,) values
        # the three IoU matrices once per image, a few images per batched product (float64 copies bounded);
        # the per-image functions above would check the masks again and build two of them twice
        ged, diversity, hungarian = [], [], []
        for start in range(0, b, 4):
            s = sample_masks[start : start + 4].to(torch.float64)
            y = reader_masks[start : start + 4].to(torch.float64)
            iou_sy, iou_ss = _pairwise_iou_tensor(s, y), _pairwise_iou_tensor(s, s)
            ged.append(_ged(iou_sy, iou_ss, _pairwise_iou_tensor(y, y)))
            diversity.append((1.0 - iou_ss).mean((-2, -1)))
            hungarian += [_hungarian_iou(one) for one in iou_sy.cpu().numpy()]
        per_image["ged"], per_image["diversity"] = torch.cat(ged), torch.cat(diversity)
        per_image["hungarian_iou"] = torch.tensor(hungarian, dtype=torch.float64, device=sample_masks.device)

        pred = (mean_prob >= self.threshold).float()  # (B,1,H,W)
        readers = reader_masks.float()
        # One (prediction, reader) pair per row, foreground channel only.
        # imported here: MONAI takes seconds to import, and `--help` should not pay for it
        from monai.metrics import CalibrationErrorMetric, compute_dice

        dice_pairs = compute_dice(
            y_pred=pred.expand(b, m, *pred.shape[2:]).reshape(b * m, 1, *pred.shape[2:]),
            y=readers.reshape(b * m, 1, *readers.shape[2:]),
            include_background=True,
            ignore_empty=False,
        ).reshape(b, m)
        per_image["dice_readers"] = dice_pairs.mean(dim=1)

        majority = majority_vote(reader_masks)
        dice_major = compute_dice(y_pred=pred, y=majority, include_background=True, ignore_empty=False)
        per_image["dice_majority"] = dice_major[:, 0]

        # every pixel of the one foreground channel; (B, 1) -> one value per image
        calibration = CalibrationErrorMetric(
            num_bins=self.ece_bins,
            include_background=True,
            calibration_reduction="expected",
            metric_reduction="none",
        )
        per_image["ece"] = calibration(y_pred=mean_prob, y=readers.mean(dim=1, keepdim=True))[:, 0]
        per_image["ece_majority"] = calibration(y_pred=mean_prob, y=majority)[:, 0]
        per_image["num_samples"] = torch.full((b,), float(n), device=sample_masks.device)

        lesion = reader_masks.flatten(1).ne(0).any(dim=1)  # (B,): at least one reader marked a pixel
        for name, values in per_image.items():
            values = values.to(torch.float64)
            getattr(self, f"{name}_sum").add_(values.sum())
            if name in self._LESION_MEANS:
                getattr(self, f"{name}_lesion_sum").add_(values[lesion].sum())
        self.num_images_sum += float(b)
        self.num_empty_images_sum += float(b - int(lesion.sum()))

    def compute(self) -> dict[str, float]:
        n_img = float(self.num_images_sum)
        n_empty = float(self.num_empty_images_sum)
        out: dict[str, float] = {"num_images": int(n_img), "num_empty_images": int(n_empty)}
        for name in self._IMAGE_MEANS:
            total = float(getattr(self, f"{name}_sum"))
            out[name] = total / n_img if n_img > 0 else float("nan")
        n_lesion = n_img - n_empty
        for name in self._LESION_MEANS:
            total = float(getattr(self, f"{name}_lesion_sum"))
            out[f"{name}_lesion"] = total / n_lesion if n_lesion > 0 else float("nan")
        return out
