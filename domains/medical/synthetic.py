"""Synthetic multi-reader lung-lesion patches written in the LIDC HPU-Net PNG layout.

Why: real LIDC-IDRI needs a registration and a 10+ GB download; tests, demos and a first training run need
data that behaves like it (four readers who disagree, some see nothing, many images with no lesion) and
that takes the same code path as the real release. Everything is drawn from a seeded numpy Generator, so
the same settings give byte-identical files.

Layout written (the DeepMind HPU-Net release):

    <root>/<split>/images/<patient>/<name>.png          uint8 grayscale CT patch
    <root>/<split>/gt/<patient>/<name>_l0.png .. _l3.png uint8 0/255, one per reader (empty = marked nothing)
    <root>/README.txt                                     generator settings and counts
    <root>/.complete                                      settings as JSON, written last

The lesion model is hand-written (no library simulates multi-reader annotation): a soft lesion
probability p(x) = sigmoid(signed_distance / softness) is thresholded at reader-specific levels after a
smooth per-reader perturbation, so generous readers draw larger outlines, and fuzzy (large softness)
lesions give more disagreement than sharp ones, which is what a model of the reader distribution must learn.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage

from shared.data import group_split

GENERATOR_VERSION = 1
NUM_READERS = 4
MARKER = ".complete"
SPLIT_NAMES = ("train", "val", "test")
DEFAULT_ROOT = "data/medical/synthetic_lidc"

# Fractions of the data set with a particular behaviour (exact counts, assigned by a seeded permutation).
EMPTY_FRACTION = 0.17  # no lesion: every reader empty
FAINT_FRACTION = 0.15  # of lesion images: low contrast, some readers miss it
AMBIGUOUS_FRACTION = 0.12  # of lesion images: satellite blob / attached vessel, readers split

# Reader personas at 128 px: probability threshold (low = generous outline) and detection sensitivity
# (lesion visibility below it is missed). Shuffled per patient, so reader l0 is not always the same kind.
_READER_THRESHOLDS = (0.25, 0.40, 0.55, 0.70)
_READER_SENSITIVITY = (0.045, 0.06, 0.075, 0.095)


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian-filtered white noise (a cheap stand-in for tissue texture)."""
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), sigma, mode="wrap")
    return field / (field.std() + 1e-6)


def _soft_from_binary(mask: np.ndarray, softness: float) -> np.ndarray:
    """Soft probability from a binary shape: sigmoid of the signed Euclidean distance to its boundary."""
    inside = ndimage.distance_transform_edt(mask)
    outside = ndimage.distance_transform_edt(~mask)
    signed = np.where(mask, inside - 0.5, -(outside - 0.5))
    return (1.0 / (1.0 + np.exp(np.clip(-signed / softness, -50, 50)))).astype(np.float32)


def _bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, n: int = 40) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    return ((1 - t) ** 2) * p0 + 2 * (1 - t) * t * p1 + (t**2) * p2


def _background(rng: np.random.Generator, size: int, patient: dict) -> np.ndarray:
    """Lung parenchyma: dark smooth texture, bright tubular vessels and vessel cross-sections."""
    s = size / 128.0
    img = patient["base"] + 0.025 * _smooth_noise(rng, size, 6 * s) + 0.015 * _smooth_noise(rng, size, 2 * s)
    vessels = np.zeros((size, size), np.float32)
    for _ in range(int(rng.integers(1, 5))):  # in-plane vessels: curved, tapering towards the periphery
        p0 = rng.uniform(-0.1, 1.1, 2) * size
        p2 = p0 + rng.normal(0, 0.4 * size, 2)
        p1 = (p0 + p2) / 2 + rng.normal(0, 0.12 * size, 2)
        pts = _bezier(p0, p1, p2, n=24)
        thick0 = rng.uniform(1.5, 4.0) * s
        value = float(rng.uniform(0.5, 1.0))
        for j in range(len(pts) - 1):
            thickness = max(1, round(thick0 * (1 - 0.6 * j / len(pts))))
            a, b = (tuple(np.round(q * 16).astype(int)) for q in (pts[j], pts[j + 1]))
            cv2.line(vessels, a, b, value, thickness, cv2.LINE_AA, shift=4)
    for _ in range(int(rng.integers(2, 8))):  # vessels cut across: small bright dots, lesion look-alikes
        c = (int(rng.integers(0, size)), int(rng.integers(0, size)))
        cv2.circle(vessels, c, max(1, round(rng.uniform(1.0, 2.5) * s)), float(rng.uniform(0.5, 1.0)), -1)
    vessels = cv2.GaussianBlur(vessels, (0, 0), 0.7 * s)
    return img + patient["vessel_contrast"] * vessels


def _chest_wall(rng: np.random.Generator, img: np.ndarray, max_width: float) -> np.ndarray:
    """Bright soft-tissue band with a wavy pleural boundary along one edge of the patch."""
    size = img.shape[0]
    width = min(rng.uniform(0.06, 0.18) * size, max_width)
    if width < 3:
        return img
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    along, across = [(yy, xx), (yy, size - 1 - xx), (xx, yy), (xx, size - 1 - yy)][int(rng.integers(4))]
    amp, period, phase = rng.uniform(0.5, 3.0), rng.uniform(0.4, 1.5) * size, rng.uniform(0, 2 * np.pi)
    boundary = width + amp * np.sin(2 * np.pi * along / period + phase)
    band = 1.0 / (1.0 + np.exp(np.clip((across - boundary) / 0.8, -50, 50)))
    tissue = rng.uniform(0.55, 0.7) + 0.03 * _smooth_noise(rng, size, 3.0)
    return img * (1 - band) + tissue * band


def _lesion_shape(rng: np.random.Generator, size: int, center: np.ndarray, radius: float, kind: str):
    """Binary core shape and an optional low-probability spike map (spiculated lesions)."""
    core = np.zeros((size, size), np.uint8)
    spikes = np.zeros((size, size), np.float32)
    if kind == "ellipse":
        axes = (radius, radius * rng.uniform(0.6, 1.0))
        cv2.ellipse(core, (center, axes, float(rng.uniform(0, 180))), 1, -1)
    else:
        theta = np.linspace(0, 2 * np.pi, 180, endpoint=False)
        amp_scale = 0.16 if kind == "lobulated" else 0.07
        r = np.ones_like(theta)
        for k in range(2, 6):
            r += rng.uniform(0, amp_scale) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
        r *= radius
        pts = np.stack([center[0] + r * np.cos(theta), center[1] + r * np.sin(theta)], 1)
        cv2.fillPoly(core, [np.round(pts * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
        if kind == "spiculated":  # tapered wedges leaving the surface, outlined by generous readers only
            for a in rng.uniform(0, 2 * np.pi, int(rng.integers(4, 10))):
                d, n = np.array([np.cos(a), np.sin(a)]), np.array([-np.sin(a), np.cos(a)])
                half = max(1.0, radius * rng.uniform(0.08, 0.18))
                base = center + d * radius * 0.85
                tip = center + d * radius * rng.uniform(1.4, 2.0)
                tri = np.stack([base + n * half, base - n * half, tip])
                cv2.fillPoly(spikes, [np.round(tri * 16).astype(np.int32)], 1.0, cv2.LINE_AA, shift=4)
            spikes = 0.55 * cv2.GaussianBlur(spikes, (0, 0), 0.7)
    return core.astype(bool), spikes


def _attachment(rng: np.random.Generator, size: int, center: np.ndarray, radius: float, softness: float):
    """Ambiguous extra structure touching the lesion: (soft map shown in the image, soft map an including
    reader outlines). A satellite blob is outlined whole; an attached vessel only near the lesion."""
    s = size / 128.0
    a = rng.uniform(0, 2 * np.pi)
    d = np.array([np.cos(a), np.sin(a)])
    shown = np.zeros((size, size), np.uint8)
    if rng.random() < 0.5:  # satellite blob joined by a thin bridge
        r_sat = max(2.0 * s, radius * rng.uniform(0.35, 0.6))
        c_sat = center + d * (radius + r_sat * rng.uniform(0.8, 1.4))
        cv2.circle(shown, tuple(np.round(c_sat * 16).astype(int)), round(r_sat * 16), 1, -1, shift=4)
        cv2.line(
            shown,
            tuple(np.round(center * 16).astype(int)),
            tuple(np.round(c_sat * 16).astype(int)),
            1,
            max(1, round(1.5 * s)),
            cv2.LINE_8,
            shift=4,
        )
        soft = _soft_from_binary(shown.astype(bool), softness)
        return soft, soft
    thick = max(2, round(rng.uniform(2.0, 3.5) * s))
    far = center + d * max(radius * 3.0, 20 * s)
    cv2.line(shown, tuple(np.round(center).astype(int)), tuple(np.round(far).astype(int)), 1, thick)
    soft = _soft_from_binary(shown.astype(bool), min(softness, 1.0))
    yy, xx = np.mgrid[0:size, 0:size]
    near = np.hypot(xx - center[0], yy - center[1]) <= radius * 1.7
    return soft, soft * near


def _reader_mask(rng: np.random.Generator, prob: np.ndarray, threshold: float, s: float) -> np.ndarray:
    """One reader's outline: smooth per-reader wobble, reader threshold, ±1 px habit, no holes."""
    wobble = 0.07 * _smooth_noise(rng, prob.shape[0], 4.0 * s)
    t = float(np.clip(threshold + rng.normal(0, 0.05), 0.12, 0.88))
    mask = (prob + wobble * (prob > 0.05)) > t
    habit = rng.random()
    if habit < 0.2:
        mask = ndimage.binary_dilation(mask)
    elif habit < 0.35:
        eroded = ndimage.binary_erosion(mask)
        mask = eroded if eroded.sum() >= 4 else mask
    return ndimage.binary_fill_holes(mask)


def _patient_params(seed: int, p: int) -> dict:
    rng = np.random.default_rng([seed, p, 0])
    return {
        "base": float(rng.uniform(0.10, 0.22)),
        "noise": float(rng.uniform(0.015, 0.035)),
        "vessel_contrast": float(rng.uniform(0.3, 0.5)),
        "thresholds": rng.permutation(_READER_THRESHOLDS) + rng.normal(0, 0.03, NUM_READERS),
        "sensitivity": rng.permutation(_READER_SENSITIVITY),
    }


def synth_lidc_sample(rng: np.random.Generator, size: int, patient: dict, kind: str) -> dict:
    """One CT patch and its four reader masks. ``kind`` is "empty", "normal", "faint" or "ambiguous".

    Returns ``{"image": uint8 HxW, "masks": uint8 (4,H,W) 0/1, "info": dict}``.
    """
    s = size / 128.0
    img = _background(rng, size, patient)
    masks = np.zeros((NUM_READERS, size, size), bool)
    info: dict = {"kind": kind}
    if kind == "empty":
        img = _chest_wall(rng, img, max_width=0.18 * size) if rng.random() < 0.5 else img
    else:
        radius = float(np.exp(rng.uniform(np.log(3.0), np.log(25.0)))) * s
        offset = np.clip(rng.normal(0, 0.07 * size, 2), -0.2 * size, 0.2 * size)
        center = size / 2 + offset
        shape = str(rng.choice(["ellipse", "lobulated", "spiculated"], p=[0.4, 0.35, 0.25]))
        softness = float(rng.uniform(0.7, 2.5)) * s
        contrast = float(rng.uniform(0.05, 0.10) if kind == "faint" else rng.uniform(0.15, 0.55))
        core, spikes = _lesion_shape(rng, size, center, radius, shape)
        prob = np.maximum(_soft_from_binary(core, softness), spikes)
        shown, outlined = np.zeros_like(prob), np.zeros_like(prob)
        if kind == "ambiguous":
            shown, outlined = _attachment(rng, size, center, radius, softness)
        texture = 1.0 + 0.12 * _smooth_noise(rng, size, 1.5 * s)
        img = img + contrast * np.maximum(prob, shown) * texture
        if rng.random() < 0.5:  # keep the chest wall clear of the lesion centre
            edge_dist = float(min(center.min(), size - 1 - center.max()))
            img = _chest_wall(rng, img, max_width=edge_dist - 0.5 * radius)
        # Readers miss small or faint lesions; visibility falls for lesions under 5 px radius.
        visibility = contrast * min(1.0, radius / (5.0 * s))
        seen = visibility > patient["sensitivity"] + rng.normal(0, 0.01, NUM_READERS)
        if not seen.any():  # LIDC crops exist only where at least one reader marked a nodule
            seen[int(np.argmin(patient["sensitivity"]))] = True
        include = np.zeros(NUM_READERS, bool)
        if kind == "ambiguous":  # a genuine split: between 1 and 3 of the readers who saw it include it
            seen_idx = np.flatnonzero(seen)
            if len(seen_idx) < 2:
                seen[rng.permutation(NUM_READERS)[:2]] = True
                seen_idx = np.flatnonzero(seen)
            k = int(rng.integers(1, len(seen_idx)))
            include[rng.permutation(seen_idx)[:k]] = True
        for r in range(NUM_READERS):
            if seen[r]:
                p = np.maximum(prob, outlined) if include[r] else prob
                masks[r] = _reader_mask(rng, p, float(patient["thresholds"][r]), s)
        info.update(
            radius=round(radius, 2),
            shape=shape,
            contrast=round(contrast, 3),
            softness=round(softness, 2),
            readers_marking=int(masks.any(axis=(1, 2)).sum()),
        )
    img = img + patient["noise"] * rng.standard_normal((size, size)).astype(np.float32)
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 0.5)
    image = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
    return {"image": image, "masks": masks.astype(np.uint8), "info": info}


def _settings(n_patients: int, images_per_patient: int, size: int, seed: int, splits) -> dict:
    return {
        "generator": "domains.medical.synthetic",
        "version": GENERATOR_VERSION,
        "n_patients": int(n_patients),
        "images_per_patient": int(images_per_patient),
        "size": int(size),
        "seed": int(seed),
        "splits": [float(f) for f in splits],
        "num_readers": NUM_READERS,
        "empty_fraction": EMPTY_FRACTION,
        "faint_fraction": FAINT_FRACTION,
        "ambiguous_fraction": AMBIGUOUS_FRACTION,
    }


def _kinds(n_images: int, seed: int) -> list[str]:
    """Exact counts of each image kind, placed by a seeded permutation."""
    rng = np.random.default_rng([seed, 2**31 - 1])
    n_empty = round(EMPTY_FRACTION * n_images)
    n_lesion = n_images - n_empty
    n_faint = round(FAINT_FRACTION * n_lesion)
    n_amb = round(AMBIGUOUS_FRACTION * n_lesion)
    kinds = ["empty"] * n_empty + ["faint"] * n_faint + ["ambiguous"] * n_amb
    kinds += ["normal"] * (n_images - len(kinds))
    return [kinds[i] for i in rng.permutation(n_images)]


def generate_lidc_png(
    root: str | Path,
    n_patients: int = 120,
    images_per_patient: int = 10,
    size: int = 128,
    seed: int = 0,
    splits: tuple[float, float, float] = (0.7, 0.15, 0.15),
) -> Path:
    """Write a synthetic multi-reader data set in the LIDC HPU-Net PNG layout; returns ``root``.

    Patients are split (never images) with ``shared.data.group_split``. The marker file is written last,
    so an interrupted run leaves no marker and :func:`ensure_synthetic_lidc` redoes it.
    """
    if n_patients < 1 or images_per_patient < 1 or size < 32:
        raise ValueError(
            f"generate_lidc_png: need n_patients>=1, images_per_patient>=1, size>=32, got "
            f"{n_patients}, {images_per_patient}, {size}"
        )
    root = Path(root)
    settings = _settings(n_patients, images_per_patient, size, seed, splits)
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).unlink(missing_ok=True)
    # README first: it marks the folder as ours, so a crashed run can be cleaned up and redone.
    (root / "README.txt").write_text(
        "Synthetic LIDC by domains.medical.synthetic: generation in progress or interrupted.\n"
        + json.dumps(settings, indent=2)
        + "\n"
    )
    for split in SPLIT_NAMES:
        shutil.rmtree(root / split, ignore_errors=True)
    patients = [f"LIDC-SYN-{p:04d}" for p in range(n_patients)]
    split_idx = group_split(patients, fractions=splits, seed=seed, names=SPLIT_NAMES, verbose=False)
    split_of = {patients[i]: name for name, idx in split_idx.items() for i in idx}
    kinds = _kinds(n_patients * images_per_patient, seed)
    counts = {
        name: {"patients": len(idx), "images": 0, "empty_images": 0, "images_with_disagreement": 0}
        for name, idx in split_idx.items()
    }
    start = time.perf_counter()
    for p, patient in enumerate(patients):
        params = _patient_params(seed, p)
        split = split_of[patient]
        img_dir = root / split / "images" / patient
        gt_dir = root / split / "gt" / patient
        img_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        z0 = float(np.random.default_rng([seed, p, 1]).integers(-300, -50))
        for i in range(images_per_patient):
            rng = np.random.default_rng([seed, p, i + 2])
            kind = kinds[p * images_per_patient + i]
            sample = synth_lidc_sample(rng, size, params, kind)
            name = f"z{z0 + 2.5 * i:.1f}_c{i // 4}"  # LIDC style, e.g. z-105.0_c0
            _imwrite(img_dir / f"{name}.png", sample["image"])
            for r in range(NUM_READERS):
                _imwrite(gt_dir / f"{name}_l{r}.png", sample["masks"][r] * 255)
            m = sample["masks"].reshape(NUM_READERS, -1)
            counts[split]["images"] += 1
            counts[split]["empty_images"] += int(not m.any())
            counts[split]["images_with_disagreement"] += int(not (m == m[0]).all())
    elapsed = time.perf_counter() - start
    readme = [
        "Synthetic multi-reader lung-lesion patches in the LIDC HPU-Net PNG layout.",
        "Written by domains.medical.synthetic.generate_lidc_png; regenerate rather than edit.",
        "Layout: <split>/images/<patient>/<name>.png, <split>/gt/<patient>/<name>_l0..l3.png (0/255).",
        f"Generated in {elapsed:.1f} s.",
        "",
        "Settings:",
        json.dumps(settings, indent=2),
        "",
        "Counts per split:",
        json.dumps(counts, indent=2),
        "",
    ]
    (root / "README.txt").write_text("\n".join(readme))
    (root / MARKER).write_text(json.dumps(settings, sort_keys=True))
    return root


def _imwrite(path: Path, array: np.ndarray) -> None:
    if not cv2.imwrite(str(path), np.ascontiguousarray(array, dtype=np.uint8)):
        raise OSError(f"{path}: cv2.imwrite failed (disk full or unwritable folder?)")


def is_complete(root: str | Path, **kw) -> bool:
    """True when ``root`` holds a finished generation made with exactly these settings."""
    marker = Path(root) / MARKER
    if not marker.is_file():
        return False
    try:
        found = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return found == json.loads(json.dumps(_settings_from_kw(**kw), sort_keys=True))


def _settings_from_kw(
    n_patients: int = 120,
    images_per_patient: int = 10,
    size: int = 128,
    seed: int = 0,
    splits=(0.7, 0.15, 0.15),
) -> dict:
    return _settings(n_patients, images_per_patient, size, seed, splits)


def ensure_synthetic_lidc(root: str | Path = DEFAULT_ROOT, **kw) -> Path:
    """Generate the synthetic set under ``root`` on first use only; returns ``root``.

    Skips when the marker holds the same settings. A folder with other content (no marker, no README of
    ours) is refused rather than overwritten, so real data is never deleted by a wrong path.
    """
    root = Path(root)
    if is_complete(root, **kw):
        return root
    if root.exists() and any(root.iterdir()):
        names = {p.name for p in root.iterdir()}
        readme = root / "README.txt"
        ours = MARKER in names or (readme.is_file() and "domains.medical.synthetic" in readme.read_text())
        foreign = sorted(names - {*SPLIT_NAMES, "README.txt", MARKER})
        if not ours or foreign:
            raise FileExistsError(
                f"{root}: folder exists and was not (only) written by the synthetic generator "
                f"(contains {sorted(names)[:6]}); refusing to overwrite it, choose another root"
            )
    return generate_lidc_png(root, **kw)


def main(argv: list[str] | None = None) -> None:
    """``python -m domains.medical.synthetic --root data/medical/synthetic_lidc --n-patients 120``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=DEFAULT_ROOT)
    ap.add_argument("--n-patients", type=int, default=120)
    ap.add_argument("--images-per-patient", type=int, default=10)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--splits", type=float, nargs=3, default=(0.7, 0.15, 0.15))
    ap.add_argument("--force", action="store_true", help="regenerate even if a complete copy exists")
    args = ap.parse_args(argv)
    kw = {
        "n_patients": args.n_patients,
        "images_per_patient": args.images_per_patient,
        "size": args.size,
        "seed": args.seed,
        "splits": tuple(args.splits),
    }
    start = time.perf_counter()
    if args.force:
        root = Path(args.root)
        (root / MARKER).unlink(missing_ok=True)
    root = ensure_synthetic_lidc(args.root, **kw)
    print(f"synthetic LIDC ready at {root} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
