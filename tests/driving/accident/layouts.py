"""Tiny accident-anticipation data sets written by hand in tmp_path, in exactly the layouts the readers take:
the synthetic / CCD layout (spec section 1), UString / DSTA feature npz files and DoTA per-clip JSON."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

W, H = 48, 24  # source frame size of the hand-written clips (width, height)


def clip_tracks(n_frames: int) -> dict[int, dict]:
    """Three tracks: 1 (near, every frame, growing), 5 (far, every frame), 2 (second half only)."""
    tracks = {}
    for tid, z, first in ((1, 8.0, 0), (5, 30.0, 0), (2, 15.0, n_frames // 2)):
        boxes, locations = [], []
        for t in range(n_frames):
            if t < first:
                boxes.append(None)
                locations.append(None)
                continue
            grow = 4 + t if tid == 1 else 3
            x0 = 2 + 8 * [1, 5, 2].index(tid)
            boxes.append([float(x0), 8.0, float(min(x0 + grow, W)), float(min(8 + grow, H))])
            locations.append([0.0, 1.65, z])
        tracks[tid] = {"type": "Car", "dims": [1.5, 1.6, 4.0], "box": boxes, "location": locations}
    return tracks


def write_clip_frames(
    folder: Path, n_frames: int, size: tuple[int, int] = (W, H), seed: int = 0
) -> list[Path]:
    """``folder/image_2/000000.jpg ...`` seeded noise frames of ``size`` (width, height)."""
    rng = np.random.default_rng(seed)
    (folder / "image_2").mkdir(parents=True, exist_ok=True)
    paths = []
    for t in range(n_frames):
        path = folder / "image_2" / f"{t:06d}.jpg"
        image = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        assert cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        paths.append(path)
    return paths


def write_label_2(folder: Path, tracks: dict[int, dict], n_frames: int) -> None:
    """KITTI label files per frame (one line per visible track) and the per-frame track ids of those lines."""
    (folder / "label_2").mkdir(parents=True, exist_ok=True)
    label_tracks = []
    for t in range(n_frames):
        lines, ids = [], []
        for tid, track in sorted(tracks.items()):
            box = track["box"][t]
            if box is None:
                continue
            loc = track["location"][t]
            lines.append(
                f"Car 0.00 0 0.00 {box[0]:.2f} {box[1]:.2f} {box[2]:.2f} {box[3]:.2f} 1.50 1.60 4.00 "
                f"{loc[0]:.2f} {loc[1]:.2f} {loc[2]:.2f} 0.00"
            )
            ids.append(tid)
        (folder / "label_2" / f"{t:06d}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
        label_tracks.append(ids)
    return label_tracks


def write_mp4(path: Path, n_frames: int, fps: float, size: tuple[int, int] = (W, H)) -> bool:
    """A seeded-noise mp4 (OpenCV's mp4v); False where this OpenCV cannot write one (the test then skips)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        return False
    rng = np.random.default_rng(1)
    for _ in range(n_frames):
        writer.write(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    writer.release()
    return path.is_file() and path.stat().st_size > 0


def ccd_line(vid: str, n_frames: int, toa: int, ego: str = "Yes") -> str:
    labels = ", ".join("1" if t >= toa else "0" for t in range(n_frames))
    return f"{vid},[{labels}],0,synthetic,Day,Normal,{ego}"


def write_accident_clips(
    root: Path,
    kinds: dict[str, int] | None = None,
    n_frames: int = 12,
    fps: float = 10.0,
    toa: int = 7,
    size: tuple[int, int] = (W, H),
) -> Path:
    """A synthetic-layout set: ``kinds`` maps kind -> clip count (default 4 crash, 3 near_miss, 3 normal); crash
    clips have their contact at frame ``toa`` and track 1 involved. Returns ``root``."""
    kinds = kinds or {"crash": 4, "near_miss": 3, "normal": 3}
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    lines, index = [], 0
    for kind, count in kinds.items():
        for _ in range(count):
            vid = f"{index:06d}"
            parent = root / ("videos/Crash-1500" if kind == "crash" else "videos/Normal") / vid
            write_clip_frames(parent, n_frames, size, seed=index)
            tracks = clip_tracks(n_frames)
            label_tracks = write_label_2(parent, tracks, n_frames)
            crash = kind == "crash"
            meta = {
                "vid": vid, "fps": fps, "n_frames": n_frames, "size": list(size), "kind": kind,
                "scenario": "lead_braking" if kind != "normal" else "ordinary",
                "contact_time": toa / fps if crash else None, "contact_frame": toa if crash else None,
                "involved": [1] if crash else [],
                "ttc": [(toa - t) / fps if crash and t < toa else None for t in range(n_frames)],
                "ego": {"speed": [10.0] * n_frames, "z": [t / fps * 10 for t in range(n_frames)]},
                "tracks": {str(k): v for k, v in tracks.items()}, "label_tracks": label_tracks,
                "seed": index, "lighting": "day", "weather": "clear",
            }  # fmt: skip
            (root / "annotations" / f"{vid}.json").write_text(json.dumps(meta))
            if crash:
                lines.append(ccd_line(vid, n_frames, toa))
            index += 1
    (root / "Crash-1500.txt").write_text("\n".join(lines) + "\n")
    (root / "README.txt").write_text(f"hand-written test clips: {kinds}\n")
    return root


def write_npz_clip(
    path: Path, n_frames: int = 10, n_objects: int = 19, dim: int = 8, positive: bool = True, **extra
) -> Path:
    """One UString / DSTA feature file: ``data`` (T, 1 + N, D), ``det`` (T, N, 6) with objects 0 and 3 visible
    (object 3 only in the first half), ``labels`` one-hot, ``ID``; ``extra`` adds or overrides keys."""
    rng = np.random.default_rng(0)
    det = np.zeros((n_frames, n_objects, 6), dtype=np.float32)
    det[:, 0] = [100, 200, 300, 400, 0.9, 1]
    det[: n_frames // 2, 3] = [640, 360, 1280, 720, 0.8, 2]
    arrays = {
        "data": rng.standard_normal((n_frames, 1 + n_objects, dim)).astype(np.float32),
        "det": det,
        "labels": np.array([0, 1] if positive else [1, 0], dtype=np.float32),
        "ID": np.array(path.stem),
        **extra,
    }
    arrays = {k: v for k, v in arrays.items() if v is not None}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def write_dota_clip(
    root: Path, vid: str, n_frames: int = 8, anomaly_start: int = 5, subset: str = "train"
) -> Path:
    """One DoTA clip: ``annotations/<vid>.json`` (the real per-clip keys) and ``frames/<vid>/images/*.jpg``
    at 1280x720 scaled down to 64x36; track 239 in every frame, track 7 in the last two."""
    frames = root / "frames" / vid / "images"
    frames.mkdir(parents=True, exist_ok=True)
    labels = []
    for t in range(n_frames):
        cv2.imwrite(str(frames / f"{t:06d}.jpg"), np.full((36, 64, 3), 90 + t, np.uint8))
        objects = [{"obj_track_id": 239, "bbox": [10.0, 10.0, 30.0, 20.0], "category": "car", "category ID": 3,
                    "trunc": False}]  # fmt: skip
        if t >= n_frames - 2:
            objects.append({"obj_track_id": 7, "bbox": [40.0, 5.0, 60.0, 30.0], "category": "person",
                            "category ID": 1, "trunc": False})  # fmt: skip
        labels.append({"frame_id": t, "image_path": f"frames/{vid}/images/{t:06d}.jpg",
                       "accident_id": 8 if t >= anomaly_start else 0,
                       "accident_name": "leave_to_right" if t >= anomaly_start else "normal", "objects": objects})  # fmt: skip
    meta = {
        "video_name": vid, "num_frames": n_frames, "video_start": 100, "video_end": 100 + n_frames - 1,
        "anomaly_start": anomaly_start, "anomaly_end": n_frames - 1, "anomaly_class": "ego: leave_to_right",
        "ego_involve": True, "subset": subset, "labels": labels,
    }  # fmt: skip
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    path = root / "annotations" / f"{vid}.json"
    path.write_text(json.dumps(meta))
    return path
