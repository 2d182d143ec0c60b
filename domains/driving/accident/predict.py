"""Prediction outputs per clip: ``risk.csv`` (per frame), ``objects.csv`` (per frame and object) and a GIF.
``frame`` counts the frames the model read; an own clip resampled to its rate (``--data.predict_path``) adds
``source_frame``, each one's number in the video or folder.

``objects.csv`` boxes (``x1, y1, x2, y2``) are in the clip's own frame pixels (the source frames, as annotated),
not the network input's ``data.image_size``. The GIF shows the frames the network saw (its input size) with the
objects' boxes in those same pixels, coloured by their risk (green to red), under it the risk curve so far with
the alarm threshold (dashed), the alarm moment and, when known, the contact frame. Files are
written to unique temporary names and renamed together at the end, so an interrupted run leaves no
half-written clip (and a failing one no temporary file).
"""

from __future__ import annotations

import contextlib
import csv
import math
from contextlib import ExitStack
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from pytorch_lightning.callbacks import BasePredictionWriter
from pytorch_lightning.utilities import rank_zero_info

from shared.cli_help import predicted_split_note
from shared.files import score_text, written_whole
from shared.task import gather_lists

__all__ = ["AccidentPredictionWriter", "alarm_frame", "draw_clip", "draw_frame", "write_clip"]

CURVE_HEIGHT = 64


def alarm_frame(risk: np.ndarray, threshold: float) -> int | None:
    """First frame whose risk reaches ``threshold`` (None: no alarm)."""
    hits = np.flatnonzero(np.asarray(risk) >= threshold)
    return int(hits[0]) if len(hits) else None


def _risk_color(risk: float) -> tuple[int, int, int]:
    r = float(np.clip(risk, 0, 1))
    return int(255 * min(1, 2 * r)), int(255 * min(1, 2 * (1 - r))), 0


def _curve(
    risk: np.ndarray, upto: int, width: int, threshold: float, alarm: int | None, toa: int
) -> np.ndarray:
    panel = np.full((CURVE_HEIGHT, width, 3), 24, np.uint8)
    t = len(risk)

    def xy(i, v):
        return round(i * (width - 1) / max(1, t - 1)), round((1 - v) * (CURVE_HEIGHT - 9)) + 4

    y_thr = xy(0, threshold)[1]
    for x in range(0, width, 8):
        cv2.line(panel, (x, y_thr), (min(width - 1, x + 3), y_thr), (200, 200, 200), 1)
    if toa >= 0:  # white: red is the alarm, here and in the demo's chart
        x = xy(toa, 0)[0]
        cv2.line(panel, (x, 0), (x, CURVE_HEIGHT - 1), (235, 235, 235), 1)
    points = np.array([xy(i, float(risk[i])) for i in range(upto + 1)], np.int32)
    if len(points) > 1:
        cv2.polylines(panel, [points], False, (255, 210, 0), 1, cv2.LINE_AA)
    if alarm is not None and alarm <= upto:
        cv2.circle(panel, xy(alarm, float(risk[alarm])), 3, (255, 60, 60), -1)
    cv2.line(panel, (xy(upto, 0)[0], 0), (xy(upto, 0)[0], CURVE_HEIGHT - 1), (120, 120, 255), 1)
    return panel


def draw_clip(prediction: dict) -> list[np.ndarray]:
    """RGB uint8 frames of the annotated clip (:func:`draw_frame` of every frame)."""
    return [draw_frame(prediction, t) for t in range(len(prediction["risk"]))]


def frame_time(frame: int, fps: float) -> str:
    """A frame's time in seconds as text, fine enough to tell frames apart: 0.1 s up to 10 fps, 0.01 s above
    (at 30 fps frames 17 and 18 were both "t=0.6s", the one before the alarm showing the alarm's time)."""
    return f"{frame / fps:.{1 if fps <= 10 else 2}f}"


def draw_frame(prediction: dict, t: int) -> np.ndarray:
    """Frame ``t`` of the annotated clip, RGB uint8: the frame with risk-coloured boxes above the risk curve up
    to it (yellow; threshold dashed, alarm a red dot, contact a white line, this frame a blue line), drawn at
    the size of ``prediction["frames"]`` (T, 3, H, W): ``prediction["boxes"]`` must be in those frames' pixels.
    One frame alone, so a viewer showing one frame at a time draws only that one."""
    frames = prediction["frames"]
    if frames is None:
        raise ValueError(f"clip {prediction['clip_id']}: no frames to draw (a features-only input)")
    frame = np.asarray(frames[t]).transpose(1, 2, 0)
    risk = np.asarray(prediction["risk"], dtype=np.float32)
    boxes, valid = np.asarray(prediction["boxes"][t]), np.asarray(prediction["box_valid"][t])
    object_risk = np.asarray(prediction["object_risk"][t], dtype=np.float32)
    threshold, toa = float(prediction["threshold"]), int(prediction["toa"])
    alarm = alarm_frame(risk, threshold)
    reach = 4 * max(frame.shape[:2])  # OpenCV takes int32 points: a wild box is drawn off the frame, not an error
    canvas = np.ascontiguousarray(frame.copy())
    for n in np.flatnonzero(valid):
        x1, y1, x2, y2 = (round(v) for v in np.clip(boxes[n], -reach, reach))
        cv2.rectangle(canvas, (x1, y1), (x2, y2), _risk_color(object_risk[n]), 1)
    text = f"t={frame_time(t, prediction['fps'])}s risk {risk[t]:.2f}" + (
        "  ALARM" if alarm is not None and t >= alarm else ""
    )
    cv2.putText(canvas, text, (3, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([canvas, _curve(risk, t, canvas.shape[1], threshold, alarm, toa)], 0)


def write_clip(prediction: dict, out_dir: str | Path, gif: bool = True) -> list[Path]:
    """Write one clip's ``<clip>/risk.csv``, ``<clip>/objects.csv`` and ``<clip>.gif`` under ``out_dir``.

    ``objects.csv`` boxes are the clip's own pixels: ``prediction["source_boxes"]`` when given (the task's
    ``predict_step``, whose ``boxes`` are the resized network input's, as its GIF frames), else
    ``prediction["boxes"]`` (a caller that passes the source frames with their boxes, as the demo does)."""
    out_dir = Path(out_dir)
    clip = str(prediction["clip_id"])
    if not clip or clip in (".", "..") or any(sep in clip for sep in ("/", "\\")):
        raise ValueError(f"clip_id {clip!r} cannot name output files (a path or '..'): rename the clip")
    folder = out_dir / clip
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return _write_clip_files(prediction, out_dir, folder, clip, gif)
    except BaseException:
        if created:  # a failed clip leaves no empty folder behind
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def _write_clip_files(prediction: dict, out_dir: Path, folder: Path, clip: str, gif: bool) -> list[Path]:
    probs = np.asarray(prediction["probabilities"], dtype=np.float32)
    risk = np.asarray(prediction["risk"], dtype=np.float32)
    ttc = np.asarray(prediction["ttc"], dtype=np.float32)
    spread = prediction.get("uncertainty")
    object_risk = np.asarray(prediction["object_risk"], dtype=np.float32)
    valid = np.asarray(prediction["box_valid"])
    track_ids = np.asarray(prediction["track_ids"])
    threshold, fps = float(prediction["threshold"]), float(prediction["fps"])
    alarm = alarm_frame(risk, threshold)
    # a clip resampled to the model's rate: each row's frame number in the video or folder, beside the step
    source_frames = prediction.get("source_frames")
    source = [] if source_frames is None else ["source_frame"]

    def numbered(t: int) -> list:
        return [t] if source_frames is None else [t, int(source_frames[t])]

    written = [folder / "risk.csv", folder / "objects.csv"]
    if gif and prediction.get("frames") is not None:
        written.append(out_dir / f"{clip}.gif")
    with ExitStack() as staged:  # each file under a temporary name, renamed once every one is written
        risk_tmp, objects_tmp, *gif_tmp = [staged.enter_context(written_whole(path)) for path in written]
        with open(risk_tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            horizons = [f"p_contact_{h:g}s" for h in prediction["horizons"]]
            writer.writerow(
                [
                    "frame",
                    *source,
                    "time_s",
                    *horizons,
                    "risk",
                    "uncertainty",
                    "ttc_s",
                    "alarm",
                    "top_track_id",
                    "top_object_risk",
                ]
            )
            for t in range(len(risk)):
                slots = np.flatnonzero(valid[t])
                top = slots[np.argmax(object_risk[t, slots])] if len(slots) else None
                writer.writerow(
                    [
                        *numbered(t),
                        f"{t / fps:.3f}",
                        *(score_text(p) for p in probs[t]),
                        score_text(risk[t]),
                        "" if spread is None else score_text(spread[t]),
                        _seconds(float(ttc[t])),
                        int(alarm is not None and t >= alarm),
                        "" if top is None else int(track_ids[top]),
                        "" if top is None else score_text(object_risk[t, top]),
                    ]
                )

        with open(objects_tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["frame", *source, "track_id", "x1", "y1", "x2", "y2", "risk"])
            boxes = prediction.get("source_boxes")
            boxes = np.asarray(prediction["boxes"] if boxes is None else boxes, dtype=np.float32)
            for t in range(len(risk)):
                for n in np.flatnonzero(valid[t]):
                    box = [f"{v:.1f}" for v in boxes[t, n]]
                    writer.writerow([*numbered(t), int(track_ids[n]), *box, score_text(object_risk[t, n])])

        if gif_tmp:
            drawn = draw_clip(prediction)
            kept, durations = gif_timing(len(drawn), fps)
            # each frame's own 256-colour palette by fast octree: Pillow's default for RGB (median cut) took 95 % of
            # a predict run, ~30 ms a frame (this: 35x faster on a drawn clip, the file a quarter smaller)
            images = [
                Image.fromarray(drawn[i]).quantize(256, Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
                for i in kept
            ]
            images[0].save(
                gif_tmp[0], format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0
            )
    return written


def _seconds(ttc: float) -> str:
    """A time to contact for the CSV: ``inf`` where no contact is expected within the longest horizon, empty
    where it is unknown (NaN)."""
    if math.isnan(ttc):
        return ""
    return "inf" if math.isinf(ttc) else f"{ttc:.3f}"


def gif_timing(num_frames: int, fps: float) -> tuple[list[int], list[int]]:
    """Which frames a GIF of a clip at ``fps`` keeps, and each one's delay in ms, so that it plays in real time.
    GIF delays are whole centiseconds, and browsers play a delay under 2 cs as 10 cs (a 60 fps clip ran 6x slow):
    every k-th frame is kept so that each shows at least 20 ms, and the delays carry their rounding (a 30 fps
    clip: 30, 40, 30 ms ...) instead of all being cut to 30 ms (10 % fast)."""
    step = max(1, math.ceil(fps / 50))
    kept = list(range(0, num_frames, step))
    ends = [round((i + step) * 100 / fps) for i in kept]  # each kept frame's end on the clip's clock, in cs
    starts = [round(i * 100 / fps) for i in kept]
    return kept, [10 * max(2, end - start) for start, end in zip(starts, ends)]


class AccidentPredictionWriter(BasePredictionWriter):
    """Writes :func:`write_clip` outputs for every predicted clip, then prints where."""

    def __init__(self, out_dir: str | Path, gif: bool = True):
        super().__init__(write_interval="batch")
        self.out_dir, self.gif, self.count = Path(out_dir), gif, 0

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx
    ):
        for clip in prediction:
            write_clip(clip, self.out_dir, gif=self.gif)
            clip["frames"] = None  # the predict loop keeps every returned prediction: not their frames
            self.count += 1

    def on_predict_end(self, trainer, pl_module) -> None:
        count = sum(gather_lists([self.count]))  # every rank's, said once
        datamodule = getattr(trainer, "datamodule", None)
        which = predicted_split_note(datamodule, "videos or frame folders")
        rank_zero_info(f"accident predictions: {count} clip{'s' * (count != 1)}{which} written to {self.out_dir}")
