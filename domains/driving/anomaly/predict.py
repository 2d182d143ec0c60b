"""Heatmaps and image-level scores for road anomalies: what ``predict`` writes and the demo app shows."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from domains.driving.anomaly.outliers import ROAD_IDS
from domains.driving.common import read_rgb
from domains.driving.formats import LabelFormatError, LabelWarning
from shared.device import to_numpy
from shared.files import written_whole
from shared.images import write_image

#: the synthetic set's road and lane marking (one constant with the outlier pasting's): the default of the task's
#: ``road_ids`` (checkpoints keep theirs)
ROAD_CLASS_IDS = ROAD_IDS

__all__ = ["image_anomaly_score", "overlay_heatmap", "road_region", "score_to_original", "write_predictions"]


def overlay_heatmap(
    image: np.ndarray | torch.Tensor,
    score: np.ndarray | torch.Tensor,
    alpha: float = 0.5,
    vmin: float | None = None,
    vmax: float | None = None,
    colormap: int = cv2.COLORMAP_JET,
) -> np.ndarray:
    """Blend a score map, coloured with an OpenCV colormap, over an image. Returns RGB uint8 (H, W, 3).

    ``image``: RGB (H, W, 3) uint8 or float in [0, 1], or a (3, H, W) tensor in [0, 1]. ``score``: (H, W).
    The score is scaled to [0, 1] by ``vmin`` / ``vmax`` (default: the map's own min / max, so per-image
    contrast; pass fixed values to compare images). ``alpha`` = weight of the heatmap.
    """
    img = to_numpy(image)
    if img.ndim == 3 and img.shape[0] == 3 and img.shape[-1] != 3:
        img = img.transpose(1, 2, 0)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"overlay_heatmap: image must be RGB (H, W, 3) or (3, H, W), got shape {img.shape}")
    if img.dtype != np.uint8:
        img = (np.clip(img.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    s = to_numpy(score).astype(np.float32)
    if s.shape != img.shape[:2]:
        raise ValueError(f"overlay_heatmap: score map {s.shape} does not match image {img.shape[:2]}")
    if not np.isfinite(s).all():
        raise ValueError(f"overlay_heatmap: score map holds {int((~np.isfinite(s)).sum())} NaN/inf values")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"overlay_heatmap: alpha must be in [0, 1], got {alpha}")
    lo = float(s.min()) if vmin is None else float(vmin)
    hi = float(s.max()) if vmax is None else float(vmax)
    scaled = np.clip((s - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(s)
    heat_bgr = cv2.applyColorMap((scaled * 255.0 + 0.5).astype(np.uint8), colormap)
    heat = cv2.cvtColor(heat_bgr, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(heat, alpha, img, 1.0 - alpha, 0.0)


def road_region(pred: np.ndarray | torch.Tensor, road_ids: Sequence[int] = ROAD_CLASS_IDS) -> np.ndarray:
    """Bool (H, W): pixels predicted as ``road_ids`` (road, lane marking) plus everything the road surrounds.

    Objects lying on the road are not predicted "road" themselves, but they are holes in the road mask, so
    filling holes brings them back. The bottom image edge counts as road (objects close to the car touch
    it). Empty when no road is predicted.
    """
    p = to_numpy(pred)
    road = np.isin(p, road_ids)
    if not road.any():
        return road
    padded = np.pad(road, ((0, 1), (0, 0)), constant_values=True)
    return ndimage.binary_fill_holes(padded)[:-1]


def image_anomaly_score(
    score: np.ndarray | torch.Tensor,
    region: np.ndarray | torch.Tensor | None = None,
    method: str = "quantile",
    q: float = 0.999,
    k: int = 50,
) -> float:
    """One number per frame: does it hold an anomaly? High pixel scores inside ``region`` (default: all).

    ``method="quantile"``: the ``q`` quantile of the region's scores; ``"topk"``: mean of the ``k`` largest.
    Both ignore a few stray pixels yet react to a small object. An empty region falls back to the whole map.
    """
    s = to_numpy(score).astype(np.float64)
    if region is not None:
        r = to_numpy(region).astype(bool)
        if r.shape != s.shape:
            raise ValueError(f"image_anomaly_score: region {r.shape} and score {s.shape} differ")
        if r.any():
            s = s[r]
    s = s.ravel()
    if s.size == 0:
        raise ValueError("image_anomaly_score: empty score map")
    if method == "quantile":
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"image_anomaly_score: q must be in [0, 1], got {q}")
        return float(np.quantile(s, q))
    if method == "topk":
        k = max(1, min(int(k), s.size))
        return float(np.partition(s, s.size - k)[-k:].mean())
    raise ValueError(f"image_anomaly_score: method must be 'quantile' or 'topk', got {method!r}")


def score_to_original(
    score: np.ndarray | torch.Tensor, size: Sequence[int], unpadded: Sequence[int] | None = None
) -> np.ndarray:
    """A (H, W) network-resolution score map on the source image's pixels: float32 (``size``).

    The loader may pad a batch bottom / right and resize each image, so the padding (beyond ``unpadded``) is cut
    off first, then the float scores are resized bilinearly (antialiased when shrinking). Each output value is a
    convex mix of input values, so the map keeps its range.
    """
    s = torch.as_tensor(score).detach().float()
    if s.ndim != 2:
        raise ValueError(f"score_to_original: score must be (H, W), got shape {tuple(s.shape)}")
    h, w = (int(v) for v in (unpadded if unpadded is not None else s.shape))
    if not (0 < h <= s.shape[0] and 0 < w <= s.shape[1]):
        raise ValueError(
            f"score_to_original: unpadded size {(h, w)} does not fit the score map {tuple(s.shape)}"
        )
    size = (int(size[0]), int(size[1]))
    if min(size) < 1:
        raise ValueError(f"score_to_original: target size must be positive, got {size}")
    s = s[:h, :w]
    if (h, w) != size:
        s = F.interpolate(s[None, None], size=size, mode="bilinear", align_corners=False, antialias=True)
        s = s[0, 0]
    return to_numpy(s).astype(np.float32, copy=False)


def _original_rgb(
    image: torch.Tensor,
    size: tuple[int, int],
    unpadded: Sequence[int],
    path: str | None,
    as_stored: bool = False,
) -> np.ndarray:
    """The picture an overlay is drawn on: the source file when its path is known and it has ``size``, else
    the batch tensor (padding cut off) resized back to ``size``. RGB uint8 (H, W, 3). ``as_stored``: the file
    was read without its EXIF orientation (a labelled set), so the overlay is too. The batch's read said what
    it had to (a 16-bit image stretched): said again here, in the main process after a loader worker, it came
    twice."""
    if path:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", LabelWarning)
                rgb = read_rgb(path, ignore_orientation=as_stored)
        except (LabelFormatError, OSError):  # gone or changed since the batch read it: the batch's copy below
            rgb = None
        if rgb is not None and rgb.shape[:2] == size:
            return rgb
    x = image.detach().float()[:, : int(unpadded[0]), : int(unpadded[1])]
    if tuple(x.shape[-2:]) != size:
        x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    rgb = to_numpy(x.clamp(0.0, 1.0)).transpose(1, 2, 0)
    return (rgb * 255.0 + 0.5).astype(np.uint8)


def write_predictions(
    out_dir: str | Path,
    names: Sequence[str],
    images: torch.Tensor,
    scores: torch.Tensor,
    alpha: float = 0.5,
    vmin: float | None = None,
    vmax: float | None = None,
    sizes: Sequence[Sequence[int]] | None = None,
    unpadded_sizes: Sequence[Sequence[int]] | None = None,
    image_paths: Sequence[str | None] | None = None,
    as_stored: Sequence[bool] | None = None,
) -> list[dict]:
    """Write ``<name>_score.npy`` (float32 raw score) and ``<name>_overlay.png`` per image, at the source
    image's size so that they line up with the user's own pixels.

    ``images`` (B, 3, H, W) in [0, 1], ``scores`` (B, H, W) as the network saw them. ``sizes``: each source
    image's (H, W) (default: the batch's H, W); ``unpadded_sizes``: each image's (H, W) inside the padded batch
    (default: all of it); ``image_paths``: source files the overlays are drawn on (default: the batch tensor
    resized back); ``as_stored``: per image, whether it was read without its EXIF orientation (default: no).
    Returns one dict of paths per image.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = len(names)
    full = tuple(int(v) for v in scores.shape[-2:])
    sizes = list(sizes) if sizes is not None else [full] * n
    unpadded_sizes = list(unpadded_sizes) if unpadded_sizes is not None else [full] * n
    image_paths = list(image_paths) if image_paths is not None else [None] * n
    as_stored = list(as_stored) if as_stored is not None else [False] * n
    written = []
    for name, image, score, size, unpadded, path, stored in zip(
        names, images, scores, sizes, unpadded_sizes, image_paths, as_stored, strict=True
    ):
        safe = Path(str(name)).name
        size = (int(size[0]), int(size[1]))
        score_np = score_to_original(score, size, unpadded)
        npy = out / f"{safe}_score.npy"
        with written_whole(npy) as tmp:
            np.save(tmp, score_np)
        rgb = _original_rgb(image, size, unpadded, path, bool(stored))
        overlay = overlay_heatmap(rgb, score_np, alpha=alpha, vmin=vmin, vmax=vmax)
        png = out / f"{safe}_overlay.png"
        write_image(png, overlay, rgb=True, what="overlay image")
        written.append({"name": str(name), "score": str(npy), "overlay": str(png)})
    return written
