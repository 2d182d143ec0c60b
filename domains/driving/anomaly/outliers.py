"""Outlier exposure: paste made-up objects into training scenes and label them as outliers.

The pasted objects are *generic* on purpose: star-shaped random polygons, ellipses and thresholded smooth
noise blobs, filled with smooth noise, flat colours with grain, stripes, or a patch cut from another training
scene. None of the road-anomaly generator's object drawings are used (the test anomalies stay unseen), so
what the segmenter learns is "this region belongs to no known class", not "this is a tyre".

Objects stand mostly on the road (where road anomalies are), grow towards the bottom of the frame like
things seen in perspective, take on the brightness of the scene around them and may cast a shadow. Objects
pasted into one image never overlap each other, and the outlier label covers exactly the object pixels.

Written by hand: no maintained library pastes random outlier objects for segmentation OE (albumentations'
CopyPaste-style transforms paste dataset instances, which would be known classes).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from domains.driving.classes import SEMANTIC_ID, VOID

#: mask value of pasted outlier pixels (255 stays "void")
OUTLIER_LABEL = 254
#: the synthetic set's road classes: the default of ``road_ids`` (other label sets: the task's ``road_ids``)
ROAD_IDS = (SEMANTIC_ID["road"], SEMANTIC_ID["lane_marking"])
SHAPES = ("polygon", "ellipse", "blob")
TEXTURES = ("noise", "flat", "stripes", "scene")

__all__ = [
    "OUTLIER_LABEL",
    "OutlierHead",
    "outlier_bce",
    "paste_outliers",
    "paste_outliers_batch",
    "random_shape",
    "random_texture",
]


def random_shape(rng: np.random.Generator, height: int, width: int, kind: str | None = None) -> np.ndarray:
    """A bool (height, width) mask of one random shape that touches the box's middle."""
    kind = kind or rng.choice(SHAPES)
    canvas = np.zeros((height, width), np.uint8)
    cy, cx = (height - 1) / 2, (width - 1) / 2
    if kind == "polygon":  # star-convex polygon: sorted angles, random radii
        n = int(rng.integers(3, 10))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = rng.uniform(0.45, 1.0, n)
        pts = np.stack([cx + radii * cx * np.cos(angles), cy + radii * cy * np.sin(angles)], axis=1)
        cv2.fillPoly(canvas, [np.round(pts).astype(np.int32)], 1)
    elif kind == "ellipse":
        axes = (max(1, int(cx * rng.uniform(0.6, 1.0))), max(1, int(cy * rng.uniform(0.6, 1.0))))
        cv2.ellipse(canvas, (round(cx), round(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    elif kind == "blob":  # smooth noise times a radial falloff, thresholded
        field = _smooth_noise(rng, height, width, cells=int(rng.integers(2, 5)))
        yy, xx = np.mgrid[0:height, 0:width]
        falloff = 1 - np.sqrt(((yy - cy) / max(cy, 1)) ** 2 + ((xx - cx) / max(cx, 1)) ** 2)
        canvas = ((0.6 * falloff + 0.4 * field) > 0.35).astype(np.uint8)
    else:
        raise ValueError(f"unknown outlier shape {kind!r}; expected one of {SHAPES}")
    if not canvas.any():  # degenerate tiny shapes: keep at least the middle pixel
        canvas[int(cy), int(cx)] = 1
    return canvas.astype(bool)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int = 4) -> np.ndarray:
    """Value noise in [0, 1]: a coarse random grid upsampled bicubically."""
    grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
    field = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(field, 0.0, 1.0)


def random_texture(
    rng: np.random.Generator,
    height: int,
    width: int,
    kind: str | None = None,
    donor: np.ndarray | None = None,
) -> np.ndarray:
    """Float32 (height, width, 3) colours in [0, 1]; ``donor`` (H', W', 3) in [0, 1] for kind ``"scene"``."""
    kind = kind or rng.choice(TEXTURES if donor is not None else TEXTURES[:-1])
    if kind == "scene" and donor is None:
        kind = "noise"
    if kind == "noise":
        channels = [_smooth_noise(rng, height, width, int(rng.integers(2, 8))) for _ in range(3)]
        tex = np.stack(channels, axis=-1) * rng.uniform(0.3, 1.0) + rng.uniform(0, 0.4)
    elif kind == "flat":
        tex = np.broadcast_to(rng.random(3, dtype=np.float32), (height, width, 3)).copy()
        shade = _smooth_noise(rng, height, width, 3)[..., None]
        tex = tex * (0.7 + 0.5 * shade) + rng.normal(0, 0.04, (height, width, 3))
    elif kind == "stripes":
        period = rng.uniform(3, max(4.0, width / 2))
        angle = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:height, 0:width]
        phase = (xx * np.cos(angle) + yy * np.sin(angle)) / period
        a, b = rng.random(3), rng.random(3)
        stripe = (np.floor(phase) % 2)[..., None]
        tex = a * stripe + b * (1 - stripe)
    elif kind == "scene":
        dh, dw = donor.shape[:2]
        h, w = min(height, dh), min(width, dw)
        y0, x0 = int(rng.integers(0, dh - h + 1)), int(rng.integers(0, dw - w + 1))
        patch = np.ascontiguousarray(donor[y0 : y0 + h, x0 : x0 + w], dtype=np.float32)
        tex = cv2.resize(patch, (width, height), interpolation=cv2.INTER_LINEAR)
        if rng.random() < 0.5:  # recolour so a pasted patch of known stuff is not trivially "known"
            tex = tex[..., rng.permutation(3)]
    else:
        raise ValueError(f"unknown outlier texture {kind!r}; expected one of {TEXTURES}")
    return np.clip(tex, 0.0, 1.0).astype(np.float32)


def _harmonise(rng: np.random.Generator, texture: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Scale a texture's brightness towards the scene around it (night scenes get dark objects) plus grain."""
    gain = float(reference.mean()) / max(float(texture.mean()), 1e-3) * rng.uniform(0.5, 1.6)
    texture = texture * np.clip(gain, 0.15, 4.0)
    return np.clip(texture + rng.normal(0.0, rng.uniform(0.0, 0.03), texture.shape), 0.0, 1.0)


def paste_outliers(
    image: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    num_objects: tuple[int, int] = (1, 3),
    size_range: tuple[float, float] = (0.04, 0.18),
    road_prob: float = 0.8,
    donor: np.ndarray | None = None,
    max_tries: int = 20,
    harmonise_prob: float = 0.7,
    shadow_prob: float = 0.5,
    road_ids: Sequence[int] = ROAD_IDS,
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Paste ``num_objects`` (inclusive range) non-overlapping random objects into one scene.

    ``image`` float32 (H, W, 3) in [0, 1], ``mask`` int (H, W) semantic ids (255 void). ``size_range`` is the
    object height as a fraction of the image height at the bottom row (scaled down towards the horizon).
    With probability ``road_prob`` an object stands on a pixel of the classes ``road_ids`` (when the scene has
    any; the default: the synthetic set's road and lane marking).
    With ``harmonise_prob`` its brightness follows the scene around it; edges are feathered *inside* the
    object; with ``shadow_prob`` a darker ellipse is cast on the ground under it (left with its original
    label, like the anomaly set's unlabelled shadows, so shadows do not read as outliers).

    Returns new (image, mask) with the object pixels set to :data:`OUTLIER_LABEL` (only those and shadow
    pixels change) and one dict per object (``box`` y0, x0, y1, x1, ``shape``, ``texture``, ``pixels``,
    ``shadow`` pixel count). Placements that would overlap an earlier object are retried up to ``max_tries``
    times and then given up (the list is then shorter).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[:2] != mask.shape:
        raise ValueError(
            f"paste_outliers: image {image.shape} and mask {mask.shape} must be (H, W, 3), (H, W)"
        )
    height, width = mask.shape
    image, mask = image.copy(), mask.copy()
    taken = np.zeros((height, width), bool)
    road = np.flatnonzero(np.isin(mask, road_ids).ravel())
    objects: list[dict] = []
    for _ in range(int(rng.integers(num_objects[0], num_objects[1] + 1))):
        for _try in range(max_tries):
            if road.size and rng.random() < road_prob:
                foot = int(road[rng.integers(road.size)])
                by, cx = divmod(foot, width)  # the object stands here: bottom centre
            else:
                by, cx = int(rng.integers(height)), int(rng.integers(width))
            scale = 0.35 + 0.65 * by / max(1, height - 1)  # perspective: smaller near the horizon
            h = max(3, round(rng.uniform(*size_range) * height * scale))
            w = max(3, round(h * rng.uniform(0.6, 2.0)))
            y0, x0 = by - h + 1, cx - w // 2
            ys, xs = slice(max(0, y0), min(height, y0 + h)), slice(max(0, x0), min(width, x0 + w))
            if ys.stop - ys.start < 2 or xs.stop - xs.start < 2:
                continue
            kind = str(rng.choice(SHAPES))
            shape = random_shape(rng, h, w, kind)[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
            region = np.zeros((height, width), bool)
            region[ys, xs] = shape
            region &= mask != VOID  # keep void void: those pixels carry no label to learn from
            if not region.any() or (region & taken).any():
                continue
            shadow_pixels = 0
            if rng.random() < shadow_prob:
                shadow = np.zeros((height, width), np.uint8)
                axes = (max(1, int(w * rng.uniform(0.5, 0.8))), max(1, int(h * rng.uniform(0.1, 0.25))))
                cv2.ellipse(shadow, (cx, min(by, height - 1)), axes, 0.0, 0, 360, 1, -1)
                shade = shadow.astype(bool) & ~region & ~taken & (mask != VOID)
                image[shade] *= rng.uniform(0.35, 0.8)
                shadow_pixels = int(shade.sum())
            tex_kind = str(rng.choice(TEXTURES if donor is not None else TEXTURES[:-1]))
            texture = random_texture(rng, ys.stop - ys.start, xs.stop - xs.start, tex_kind, donor)
            patch = image[ys, xs]
            sel = region[ys, xs]
            if rng.random() < harmonise_prob:
                around = patch[~sel] if (~sel).any() else image
                texture = _harmonise(rng, texture, around)
            # Feather the rim inside the object only, so no pixel outside the label changes.
            alpha = cv2.GaussianBlur(sel.astype(np.float32), (0, 0), rng.uniform(0.3, 1.0))[..., None]
            alpha = np.where(sel[..., None], np.maximum(alpha, 0.5), 0.0)
            image[ys, xs] = alpha * texture + (1.0 - alpha) * patch
            mask[region] = OUTLIER_LABEL
            taken |= region
            objects.append(
                {
                    "box": (ys.start, xs.start, ys.stop, xs.stop),
                    "shape": kind,
                    "texture": tex_kind,
                    "pixels": int(region.sum()),
                    "shadow": shadow_pixels,
                }
            )
            break
    return image, mask, objects


def paste_outliers_batch(
    images: torch.Tensor,
    masks: torch.Tensor,
    rng: np.random.Generator,
    prob: float = 0.5,
    num_objects: Sequence[int] = (1, 3),
    size_range: Sequence[float] = (0.04, 0.18),
    road_prob: float = 0.8,
    scene_texture_prob: float = 0.25,
    road_ids: Sequence[int] = ROAD_IDS,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Outlier exposure on a training batch: each image gets :func:`paste_outliers` with probability ``prob``.

    ``images`` (B, 3, H, W) in [0, 1], ``masks`` (B, H, W) semantic ids. A ``"scene"`` texture is cut from
    another image of the same batch (with probability ``scene_texture_prob``); ``road_ids`` as there. Works on
    any device (the pasting runs in numpy on the CPU). Returns new tensors (the given ones when nothing was
    pasted; they are never modified) and the number of objects pasted.
    """
    if images.ndim != 4 or images.shape[1] != 3 or masks.shape != (images.shape[0], *images.shape[-2:]):
        raise ValueError(
            f"paste_outliers_batch: images {tuple(images.shape)} and masks {tuple(masks.shape)} must be "
            "(B, 3, H, W) and (B, H, W)"
        )
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"paste_outliers_batch: prob must be in [0, 1], got {prob}")
    if len(num_objects) != 2 or num_objects[0] < 0 or num_objects[1] < num_objects[0]:
        raise ValueError(f"paste_outliers_batch: num_objects must be (min, max), got {tuple(num_objects)}")
    # views on the CPU (no copy there); only the images pasted on are copied back, not the whole batch
    np_images = images.detach().permute(0, 2, 3, 1).float().cpu().numpy()
    np_masks = masks.detach().cpu().numpy()
    changed: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    pasted, batch = 0, len(np_images)
    for i in range(batch):
        if rng.random() >= prob:
            continue
        donor = None
        if batch > 1 and rng.random() < scene_texture_prob:
            other = int(rng.integers(batch - 1))
            donor = np_images[other + (other >= i)]
        image, mask, objects = paste_outliers(
            np_images[i],
            np_masks[i],
            rng,
            (int(num_objects[0]), int(num_objects[1])),
            (float(size_range[0]), float(size_range[1])),
            road_prob,
            donor,
            road_ids=road_ids,
        )
        changed[i] = (image, mask)
        pasted += len(objects)
    if not changed:
        return images, masks, 0
    new_images, new_masks = images.clone(), masks.clone()
    for i, (image, mask) in changed.items():
        new_images[i] = torch.from_numpy(image).permute(2, 0, 1).to(images.device, images.dtype)
        new_masks[i] = torch.from_numpy(mask).to(masks.device, masks.dtype)
    return new_images.contiguous(), new_masks, pasted


class OutlierHead(nn.Module):
    """Per-pixel outlier logit from the finest decoder maps (the "void classifier" of OE training).

    The finest map says what a pixel looks like; the coarser ones (upsampled) add context: whether the thing
    lies on the road among known stuff. A 1x1 fusion, one 3x3 conv and a 1x1 logit keep it cheap.
    """

    def __init__(self, in_channels: Sequence[int], hidden: int = 32):
        super().__init__()
        self.in_channels = [int(c) for c in in_channels]
        self.num_maps = len(in_channels)
        self.net = nn.Sequential(
            nn.Conv2d(sum(in_channels), hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, 1),
        )

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(features) < self.num_maps:
            raise ValueError(f"OutlierHead needs {self.num_maps} feature maps, got {len(features)}")
        # The 1x1 fusion is linear per pixel and bilinear resizing is linear per channel (and keeps constants),
        # so projecting each map at its own resolution and then upsampling equals projecting the upsampled
        # concatenation, at a fraction of the cost (the coarse maps hold most channels). Same parameters.
        size = features[0].shape[-2:]
        fuse = self.net[0]
        weights = fuse.weight.split(self.in_channels, dim=1)
        x = F.conv2d(features[0], weights[0], fuse.bias)
        for f, w in zip(features[1 : self.num_maps], weights[1:]):
            x = x + F.interpolate(F.conv2d(f, w), size=size, mode="bilinear", align_corners=False)
        return self.net[1:](x)


def outlier_bce(
    z: torch.Tensor,
    outlier: torch.Tensor,
    inlier: torch.Tensor,
    hard_fraction: float = 0.5,
    min_hard: int = 1000,
) -> torch.Tensor:
    """Balanced binary cross-entropy of outlier logits ``z`` with hard-negative mining.

    Pasted pixels are a few percent of a batch, so outlier and inlier pixels are averaged separately. The inlier
    half mixes the mean over all inlier pixels with (weight ``hard_fraction``) the mean over the hardest ones
    (the ``max(min_hard, 4 x outliers)`` highest losses): lane markings, wheels and kerbs are rare pixels that a
    plain mean barely sees, and they are where false alarms come from.
    """
    if not bool(outlier.any()):
        return z.sum() * 0.0
    loss_out = F.binary_cross_entropy_with_logits(z[outlier], torch.ones_like(z[outlier]))
    if not bool(inlier.any()):
        return loss_out
    per_pixel = F.binary_cross_entropy_with_logits(z[inlier], torch.zeros_like(z[inlier]), reduction="none")
    k = min(per_pixel.numel(), max(min_hard, 4 * int(outlier.sum())))
    hard = per_pixel.topk(k).values.mean()
    loss_in = (1 - hard_fraction) * per_pixel.mean() + hard_fraction * hard
    return 0.5 * (loss_in + loss_out)
