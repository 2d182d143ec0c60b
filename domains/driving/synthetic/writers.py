"""Writing the data sets: the synthetic KITTI object set and the SegmentMeIfYouCan-style anomaly set.

:func:`generate_kitti` writes sequences of frames (one street per sequence) with images, 15-field label
lines, calibration files and semantic / instance maps; :func:`generate_anomaly` writes single frames with
anomalies on the road, their ``labels_masks`` and semantic maps, from a seed stream disjoint from the KITTI
set's. A folder is stamped as ours before writing and gets its ``.complete`` marker (holding the settings)
last, so :func:`ensure_synthetic_kitti` / :func:`ensure_synthetic_anomaly` reuse only a finished set made with
the same settings and never overwrite foreign data. :func:`_preview` writes a few annotated frames for a
visual check.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
from pytorch_lightning.utilities import rank_zero_info

from domains.driving.classes import DONTCARE
from domains.driving.synthetic.labels import DONTCARE_MIN_HEIGHT
from domains.driving.synthetic.layout import sample_layout
from domains.driving.synthetic.render import colorize_semantic, render_frame, render_scene
from domains.driving.synthetic.scene import DEFAULT_SIZE
from shared.files import check_generation_finished, ensure_generated, listing_shortfall
from shared.images import write_image

DEFAULT_KITTI_ROOT = "data/driving/synthetic_kitti"
DEFAULT_ANOMALY_ROOT = "data/driving/synthetic_anomaly"
MARKER = ".complete"  # written last: a folder without it is an interrupted generation
STAMP = ".synthetic_generator"  # written first: marks a folder as ours so it may be cleaned and regenerated
_KITTI_STREAM, _ANOMALY_STREAM = 0x4B495454, 0x414E4F4D  # separate seed streams: no scene is in both sets
#: the folders of a set and the kind of file each holds, one per image (what the check of a reused set counts)
_KITTI_FILES = {"image_2": ".png", "label_2": ".txt", "calib": ".txt", "semantic": ".png", "instance": ".png"}
_ANOMALY_FILES = {"images": ".png", "labels_masks": ".png", "semantic": ".png"}


def _write_kitti_frame(
    dirs: dict[str, Path], name: str, frame, image_ext: str = ".png", image_params: tuple[int, ...] = ()
) -> list[str]:
    """One frame in the KITTI training layout: image, semantic and instance maps, label lines (and the
    calibration when ``dirs`` has a ``calib`` folder); returns the label lines. The still-image set and the
    scenario clips (:mod:`.clips`, JPEG frames) both write through here, so their labels agree."""
    write_image(dirs["image_2"] / f"{name}{image_ext}", frame.image, rgb=True, params=image_params)
    write_image(dirs["semantic"] / f"{name}.png", frame.semantic)
    write_image(dirs["instance"] / f"{name}.png", frame.instance)
    lines = frame.kitti_lines()
    (dirs["label_2"] / f"{name}.txt").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    if "calib" in dirs:
        _write_calib(dirs["calib"] / f"{name}.txt", frame.calib)
    return lines


def _layout_seed(seed: int, stream: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, stream, index]).generate_state(1)[0])


def _prepare_root(root: Path, names: tuple[str, ...], settings: dict) -> None:
    """Make ``root`` ours: refuse a folder with foreign content, clear our own previous output."""
    if root.exists() and any(root.iterdir()):
        present = {p.name for p in root.iterdir()}
        ours = STAMP in present or MARKER in present
        foreign = sorted(present - set(names) - {STAMP, MARKER, "meta.json", "README.txt"})
        if not ours or foreign:
            raise FileExistsError(
                f"{root}: folder exists and was not (only) written by domains.driving.synthetic "
                f"(contains {sorted(present)[:6]}); refusing to overwrite it, choose another root"
            )
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).unlink(missing_ok=True)
    (root / STAMP).write_text(json.dumps(settings, sort_keys=True) + "\n", encoding="utf-8")
    for name in names:
        p = root / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def _make_dirs(base: Path, names: tuple[str, ...]) -> dict[str, Path]:
    dirs = {k: base / k for k in names}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    return dirs


def _finish(root: Path, meta: dict, settings: dict) -> None:
    """``meta.json``, then the marker: written last, so only a finished set is ever reused."""
    (root / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    (root / MARKER).write_text(json.dumps(settings, sort_keys=True) + "\n", encoding="utf-8")


class UnknownSettingError(TypeError, ValueError):
    """A generator called with a setting it does not have: a TypeError as for any unexpected keyword argument,
    and a ValueError, which the command line reports as an input error in one line (a ``--data.synthetic``
    typo); a TypeError from inside the generation stays a bug, with its traceback."""


def _ensure(
    caller: str, root: str | Path, kw: dict, allowed: set[str], settings, generate, force: bool = False
) -> Path:
    """Reuse the finished set at ``root`` when its marker holds these settings and its files are all there
    (:func:`_torn`), else ``generate`` it (``force``: always), holding its generation lock
    (:func:`~shared.files.ensure_generated`): a second run started meanwhile waits, then reuses the set."""
    root = Path(root)
    if set(kw) - allowed - {"verbose"}:
        raise UnknownSettingError(
            f"{caller}: unexpected arguments {sorted(set(kw) - allowed - {'verbose'})} "
            f"(the settings are {', '.join(sorted(allowed))})"
        )
    wanted = settings(**{k: v for k, v in kw.items() if k in allowed})
    return ensure_generated(
        root,
        lambda folder: _is_complete(folder, wanted),
        _torn,
        lambda folder: generate(folder, **kw),
        force,
        rank_zero_info,
    )


def _torn(root: Path) -> list[str]:
    """What the set at ``root`` lacks against the counts its marker's settings give (a folder listing per kind
    of file, :func:`~shared.files.listing_shortfall`); [] when all is there, or the marker is none of ours. A
    set torn by two runs before the generation lock kept its marker and failed later (1,325 images against
    1,500 label files)."""
    settings = _marker_settings(root)
    kind, n_images = settings.get("kind"), settings.get("n_images")
    if kind == "accident_clips":
        from domains.driving.synthetic.clips import clip_shortfalls  # lazy: clips imports this module

        return clip_shortfalls(root, settings)
    kitti_files = {f"training/{name}": suffix for name, suffix in _KITTI_FILES.items()}
    files = {"kitti": kitti_files, "anomaly": _ANOMALY_FILES}.get(kind)
    if files is None or not isinstance(n_images, int):
        return []
    found = [listing_shortfall(root, folder, suffix, n_images) for folder, suffix in files.items()]
    return [problem for problem in found if problem]


def _marker_settings(root: Path) -> dict:
    """The settings in ``root``'s marker ({} when there is none, or it is no JSON object)."""
    try:
        settings = json.loads((root / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return settings if isinstance(settings, dict) else {}


#: per kind of set (its settings' ``kind``): the command-line subcommand, where its finished items lie, the
#: setting that counts them and what they are
_LAYOUTS = {
    "kitti": ("kitti", "training/label_2/*.txt", "n_images", "images"),
    "anomaly": ("anomaly", "semantic/*.png", "n_images", "images"),
    "accident_clips": ("clips", "annotations/*.json", "n_clips", "clips"),
}
#: the command-line flag of each setting (``size`` is ``--width --height``)
_FLAGS = {
    "n_images": "--n-images",
    "n_clips": "--n-clips",
    "seed": "--seed",
    "frames_per_sequence": "--frames-per-sequence",
    "anomaly_free_fraction": "--anomaly-free-fraction",
    "fps": "--fps",
    "seconds": "--seconds",
    "shares": "--shares",
}


def check_finished(path: str | Path, option: str = "--data.data_path") -> None:
    """Refuse a ``path`` (given as ``option``) that is, or lies in (a KITTI root's ``training/``), a set this
    generator stamped but never marked finished (a generation stopped part-way left a few frames that were
    trained on without a word); warn of one marked finished that lacks files (:func:`_torn`: torn, or edited).
    Real data (no stamp) and whole finished sets pass."""
    check_generation_finished(path, option, _stamped, _unfinished_note, MARKER, 1, _torn, _regenerate_note)


def _stamped(folder: Path) -> bool:
    """Whether ``folder`` is one this generator wrote into (its stamp, written first)."""
    return (folder / STAMP).is_file()


def _regenerate_note(root: Path) -> str:
    """The command that generates the finished set at ``root`` again (from its marker's settings)."""
    return f"generate it again with `{_command(root, _marker_settings(root))} --force`"


def _command(root: Path, settings: dict) -> str:
    """The command that generates the set of ``settings`` at ``root``."""
    command = _LAYOUTS[settings["kind"]][0]
    flags = [f"--root {root}"]
    if "size" in settings:
        flags.append(f"--width {settings['size'][0]} --height {settings['size'][1]}")
    flags += [
        f"{flag} {' '.join(map(str, np.ravel(settings[k])))}" for k, flag in _FLAGS.items() if k in settings
    ]
    return f"python -m domains.driving.synthetic {command} {' '.join(flags)}"


def _unfinished_note(root: Path) -> str:
    """What the interrupted set at ``root`` holds and the command that finishes it (from its stamp's settings)."""
    try:
        settings = json.loads((root / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        settings = {}
    if not isinstance(settings, dict) or settings.get("kind") not in _LAYOUTS:
        return f"rerun python -m domains.driving.synthetic with --root {root} to finish it"
    _, items, count, what = _LAYOUTS[settings["kind"]]
    held = sum(1 for _ in root.glob(items))
    return (
        f"it holds {held} of the {settings.get(count)} {what} it was started with (settings in {root / STAMP}); "
        f"finish it with `{_command(root, settings)}`"
    )


def _kitti_settings(n_images=1500, size=DEFAULT_SIZE, seed=0, frames_per_sequence=10, density=1.0) -> dict:
    return {
        "kind": "kitti",
        "n_images": int(n_images),
        "size": [int(size[0]), int(size[1])],
        "seed": int(seed),
        "frames_per_sequence": int(frames_per_sequence),
        "density": float(density),
    }


def generate_kitti(
    root: str | Path,
    n_images: int = 1500,
    size: tuple[int, int] = DEFAULT_SIZE,
    seed: int = 0,
    frames_per_sequence: int = 10,
    density: float = 1.0,
    verbose: bool = True,
) -> Path:
    """Write a synthetic KITTI object set; returns ``root`` (the split lives in ``root/training``).

    Layout: ``training/image_2/<id:06d>.png`` (RGB), ``training/label_2/<id>.txt`` (15 fields),
    ``training/calib/<id>.txt`` (KITTI P0..P3, R0_rect, Tr_*), ``training/semantic/<id>.png`` (uint8 ids,
    see ``SEMANTIC_CLASSES``), ``training/instance/<id>.png`` (uint16, 0 = none; instance ``k`` is the
    object of label line ``k`` counted from 1, DontCare lines included), ``sequences.txt`` (``<id> seqNNNN`` per line: the frames of a sequence share one street and
    move through it), ``meta.json`` (settings, counts, what was not labelled) and the ``.complete`` marker,
    written last.
    """
    if n_images < 1 or frames_per_sequence < 1:
        raise ValueError(
            f"generate_kitti: need n_images >= 1 and frames_per_sequence >= 1, got {n_images}, {frames_per_sequence}"
        )
    root = Path(root)
    settings = _kitti_settings(n_images, size, seed, frames_per_sequence, density)
    _prepare_root(root, ("training", "sequences.txt", "meta.json"), settings)
    dirs = _make_dirs(root / "training", tuple(_KITTI_FILES))
    if verbose:  # said before the silence (1,500 images took 51 s on a shared core)
        rank_zero_info(f"synthetic KITTI: rendering {n_images} images at {root}, once: about {n_images * 0.035:.0f} s")
    start = time.perf_counter()
    seq_lines, per_seq = [], []
    totals = {"objects": 0, "dontcare": 0, "hidden": 0, "behind_camera": 0, "outside_image": 0}
    per_class: dict[str, int] = {}
    layout = None
    for i in range(n_images):
        s, t = divmod(i, frames_per_sequence)
        if t == 0:
            n_frames = min(frames_per_sequence, n_images - i)
            layout = sample_layout(
                _layout_seed(seed, _KITTI_STREAM, s), size, n_frames=n_frames, density=density
            )
            per_seq.append(
                {
                    "sequence": f"seq{s:04d}",
                    "lighting": layout.lighting,
                    "weather": layout.weather,
                    "frames": n_frames,
                }
            )
        frame = render_frame(layout, t)
        name = f"{i:06d}"
        lines = _write_kitti_frame(dirs, name, frame)
        seq_lines.append(f"{name} seq{s:04d}")
        for line in lines:
            k = line.split(" ", 1)[0]
            per_class[k] = per_class.get(k, 0) + 1
        totals["objects"] += len(lines)
        totals["dontcare"] += sum(line.startswith(DONTCARE) for line in lines)
        for k in ("hidden", "behind_camera", "outside_image"):
            totals[k] += frame.stats[k]
    (root / "sequences.txt").write_text(
        "# image_id sequence_id (frames of a sequence share one street)\n" + "\n".join(seq_lines) + "\n",
        encoding="utf-8",
    )
    elapsed = time.perf_counter() - start
    meta = {
        "generator": "domains.driving.synthetic.generate_kitti",
        "settings": settings,
        "seconds": round(elapsed, 1),
        "label_counts": per_class,
        "not_labelled": {
            "hidden": "objects drawn but fully covered by nearer ones",
            "counts": {k: totals[k] for k in ("hidden", "behind_camera", "outside_image")},
        },
        "dontcare_min_height_px": DONTCARE_MIN_HEIGHT,
        "occlusion_levels": "visible fraction of the in-image silhouette: >=0.9 -> 0, >=0.5 -> 1, >0 -> 2",
        "instance_ids": "instance/<id>.png value k (1-based) is the object of label line k (DontCare included)",
        "sequences": per_seq,
    }
    _finish(root, meta, settings)
    if verbose:
        rank_zero_info(
            f"synthetic KITTI: {n_images} images in {len(per_seq)} sequences at {root} ({elapsed:.1f} s); "
            f"labels {per_class}; not labelled: {meta['not_labelled']['counts']}"
        )
    return root


def _write_calib(path: Path, P2: np.ndarray) -> None:
    def row(m):
        return " ".join(f"{v:.12e}" for v in np.asarray(m, np.float64).ravel())

    eye = np.eye(3)
    velo = np.array(
        [[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0]], np.float64
    )  # x fwd, y left, z up (no offset)
    lines = [f"P{k}: {row(P2)}" for k in range(4)]
    lines += [f"R0_rect: {row(eye)}", f"Tr_velo_to_cam: {row(velo)}", f"Tr_imu_to_velo: {row(np.eye(3, 4))}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _is_complete(root: Path, settings: dict) -> bool:
    marker = root / MARKER
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text(encoding="utf-8")) == json.loads(json.dumps(settings, sort_keys=True))
    except (OSError, json.JSONDecodeError):
        return False


def ensure_synthetic_kitti(root: str | Path = DEFAULT_KITTI_ROOT, force: bool = False, **kw) -> Path:
    """Generate the synthetic KITTI set on first use only (same settings as the marker, files all there:
    reuse; ``force``: generate it again, under the same lock); returns root."""
    allowed = {"n_images", "size", "seed", "frames_per_sequence", "density"}
    return _ensure("ensure_synthetic_kitti", root, kw, allowed, _kitti_settings, generate_kitti, force)


def _anomaly_settings(
    n_images=200, size=DEFAULT_SIZE, seed=0, anomaly_free_fraction=0.2, void_width=0, density=0.8
) -> dict:
    return {
        "kind": "anomaly",
        "n_images": int(n_images),
        "size": [int(size[0]), int(size[1])],
        "seed": int(seed),
        "anomaly_free_fraction": float(anomaly_free_fraction),
        "void_width": int(void_width),
        "density": float(density),
    }


MIN_ANOMALY_PIXELS = 25  # an anomaly frame is redrawn until this many anomaly pixels are visible


def generate_anomaly(
    root: str | Path,
    n_images: int = 200,
    size: tuple[int, int] = DEFAULT_SIZE,
    seed: int = 0,
    anomaly_free_fraction: float = 0.2,
    void_width: int = 0,
    density: float = 0.8,
    verbose: bool = True,
) -> Path:
    """Write a synthetic road-anomaly set in the SegmentMeIfYouCan layout; returns ``root``.

    ``images/<name>.png`` (RGB), ``labels_masks/<name>_labels_semantic.png`` (0 normal, 1 anomaly; 255 void on a
    ``void_width``-px band outside each anomaly, none by default: a band all round an anomaly cuts every predicted
    component at its edge, and a constant score map got the component metrics' sIoU 1.0 and mean F1 0.70 (0.0
    without the band), ``semantic/<name>.png`` (in-distribution ids, anomalies
    255), ``meta.json`` (per image: anomaly kinds, lighting, weather) and the ``.complete`` marker, written
    last. Exactly ``round(n_images * anomaly_free_fraction)`` images have no anomaly. Scenes come from a
    seed stream disjoint from :func:`generate_kitti`'s.
    """
    if n_images < 1 or not 0.0 <= anomaly_free_fraction <= 1.0:
        raise ValueError(
            f"generate_anomaly: need n_images >= 1 and 0 <= anomaly_free_fraction <= 1, got "
            f"{n_images}, {anomaly_free_fraction}"
        )
    root = Path(root)
    settings = _anomaly_settings(n_images, size, seed, anomaly_free_fraction, void_width, density)
    _prepare_root(root, ("images", "labels_masks", "semantic", "meta.json"), settings)
    dirs = _make_dirs(root, tuple(_ANOMALY_FILES))
    n_free = round(n_images * anomaly_free_fraction)
    free = set(np.random.default_rng([seed, _ANOMALY_STREAM]).permutation(n_images)[:n_free].tolist())
    if verbose:
        rank_zero_info(f"synthetic road anomalies: rendering {n_images} images at {root}, once")
    start = time.perf_counter()
    per_image, kinds_total, redraws = [], {}, 0
    for i in range(n_images):
        with_anomaly = i not in free
        for attempt in range(20):
            layout = sample_layout(
                _layout_seed(seed, _ANOMALY_STREAM, i * 1000 + attempt),
                size,
                anomalies=with_anomaly,
                density=density,
            )
            frame = render_frame(layout, 0)
            if not with_anomaly or int(frame.anomaly.sum()) >= MIN_ANOMALY_PIXELS:
                break
            redraws += 1
        else:
            raise RuntimeError(
                f"generate_anomaly: image {i}: no visible anomaly after 20 layouts (size {size} too small?)"
            )
        name = f"synthetic_{i:05d}"
        write_image(dirs["images"] / f"{name}.png", frame.image, rgb=True)
        # SegmentMeIfYouCan's own name, which its benchmark code reads (the suite's reader takes <name>.png too)
        write_image(dirs["labels_masks"] / f"{name}_labels_semantic.png", frame.anomaly_mask(void_width))
        write_image(dirs["semantic"] / f"{name}.png", frame.semantic)
        kinds = [o.kind for o in frame.objects if o.is_anomaly and not o.hidden]
        for k in kinds:
            kinds_total[k] = kinds_total.get(k, 0) + 1
        per_image.append(
            {"name": name, "anomalies": kinds, "lighting": frame.lighting, "weather": frame.weather}
        )
    elapsed = time.perf_counter() - start
    meta = {
        "generator": "domains.driving.synthetic.generate_anomaly",
        "settings": settings,
        "seconds": round(elapsed, 1),
        "anomaly_free_images": n_free,
        "anomaly_counts": kinds_total,
        "redrawn_layouts": redraws,
        "labels": "0 normal, 1 anomaly, 255 void: a band of void_width px outside each anomaly's visible pixels (0: none)",
        "images": per_image,
    }
    _finish(root, meta, settings)
    if verbose:
        rank_zero_info(
            f"synthetic road anomalies: {n_images} images ({n_free} anomaly-free) at {root} ({elapsed:.1f} s); "
            f"anomalies {kinds_total}"
        )
    return root


def ensure_synthetic_anomaly(root: str | Path = DEFAULT_ANOMALY_ROOT, force: bool = False, **kw) -> Path:
    """Generate the synthetic anomaly set on first use only (as :func:`ensure_synthetic_kitti`); returns
    root."""
    allowed = {"n_images", "size", "seed", "anomaly_free_fraction", "void_width", "density"}
    return _ensure("ensure_synthetic_anomaly", root, kw, allowed, _anomaly_settings, generate_anomaly, force)


def _preview(out: Path, seed: int, size: tuple[int, int]) -> list[Path]:
    """Write a few sample frames (image, boxes, semantic colours, anomaly mask) for a visual check."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    cases = [
        ("day", "clear", 0),
        ("dusk", "rain", 0),
        ("night", "clear", 0),
        ("day", "fog", 0),
        ("day", "clear", 2),
        ("night", "clear", 1),
    ]
    for k, (lighting, weather, anomalies) in enumerate(cases):
        frame = render_scene(seed + k, size, anomalies=anomalies, lighting=lighting, weather=weather)
        boxes = frame.image.copy()
        for o in frame.objects:
            if o.hidden:
                continue
            col = (255, 140, 0) if o.is_anomaly else (0, 255, 0) if not o.dontcare else (128, 128, 128)
            x0, y0, x1, y1 = (round(v) for v in o.box)
            cv2.rectangle(boxes, (x0, y0), (x1 - 1, y1 - 1), col, 1)
        rows = [frame.image, boxes, colorize_semantic(frame.semantic)]
        if anomalies:
            m = frame.anomaly_mask()
            vis = np.stack([m == 1, m == 255, np.zeros_like(m, bool)], -1).astype(np.uint8) * 255
            rows.append(vis)
        path = out / f"{k}_{lighting}_{weather}{'_anomaly' if anomalies else ''}.png"
        write_image(path, np.concatenate(rows, 0), rgb=True)
        written.append(path)
    return written
