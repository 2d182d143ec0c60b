"""Readers of accident-anticipation clips: the synthetic / CCD layout, UString-DSTA feature ``npz`` files, DoTA.

Every reader returns :class:`AccidentClip` records (one per clip, nothing decoded yet) so the dataset in
:mod:`domains.driving.accident.data` has one shape to load. Frames are decoded, resized and windowed there.

Bad input policy (as :mod:`domains.driving.formats`): a problem that spoils one clip (a label line with the
wrong number of frame labels, a contact frame past the clip's end, a missing or inconsistent frame rate, an
unreadable video, an ``npz`` without the expected keys, a clip shorter than the minimum, frames of mixed sizes,
a video cut short) goes to a :class:`~domains.driving.formats.DropLog`: with ``strict`` it raises
:class:`LabelFormatError` naming the file (and line) and what was expected; otherwise the clip is left out,
counted, and one :class:`LabelWarning` summarises the counts. Frame sizes are read from the image headers and a
video's length from its packets (:func:`frames_in_file`), so no frame is decoded before training; what only
decoding shows (a frame damaged after its header, a video's last packet cut in two) raises then, naming the
file. A data set without any readable clip is an error.

The parsers are hand-written: no maintained library reads CCD's annotation lines, the UString feature files
or DoTA's metadata (their public loaders are scripts inside the papers' repositories).
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from domains.driving.formats import (
    IMAGE_EXTENSIONS,
    DropLog,
    LabelFormatError,
    LabelWarning,
    image_size,
    read_text_file,
)
from shared.files import count_hidden, counting_hidden_files, is_hidden, natural_key, visible_files

KINDS = ("crash", "near_miss", "normal")
CCD_FPS = 10.0  # CCD and DoTA clips are 10 fps
DOTA_FPS = 10.0
DAD_FPS = 20.0  # DAD: 100 frames at 20 fps, the accident at frame 90
DAD_TOA = 90
CCD_ANNOTATION = "Crash-1500.txt"
CCD_CRASH_DIR = "Crash-1500"  # beside the annotation in the released CarCrash/videos/, under videos/ otherwise
CCD_NORMAL_DIR = "Normal"
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")
NPZ_KEYS = ("data", "det", "labels")  # UString / DSTA feature files; ``ID`` and ``toa`` are optional
FPS_TOLERANCE = 0.01  # relative: a container saying 29.97 for a 30 fps annotation is the same rate
MIN_FRAMES = 2  # one frame holds no motion
MAX_FRAME_SIDE = 16384  # pixels: a box coordinate beyond this is a broken annotation, not a far-off object


def _too_short(n_frames: int, min_frames: int) -> str:
    """Why a clip is left out for its length (``min_frames``: at least :data:`MIN_FRAMES`; the data module leaves
    training clips shorter than ``--data.clip_length`` out on its own, validation and test keep them)."""
    return f"clip has {n_frames} frame{'s' * (n_frames != 1)}, the minimum is {min_frames}"


@dataclass
class AccidentClip:
    """One clip on disk, not decoded. Boxes are xyxy pixels of the *source* frames (``size``).

    ``tracks``: track id -> float32 (T, 4) boxes, NaN rows where the object is not visible; ``depth``: track id ->
    a nearness key (smaller = nearer: metres where the source has 3D positions, else minus the mean box
    height) used to break ties when choosing the object slots. ``ttc``: float32 (T,) seconds, NaN where
    undefined (None: unknown for the whole clip). ``subset``: a split the source fixes (``train`` / ``test``).
    """

    clip_id: str
    kind: str
    fps: float
    n_frames: int
    toa: int  # contact frame, -1 for negatives
    source: Path  # the file that names this clip in errors (video, frame folder, npz, JSON)
    frames: list[Path] | None = None
    video: Path | None = None
    npz: Path | None = None
    size: tuple[int, int] | None = None  # (width, height) of the source frames, if known
    tracks: dict[int, np.ndarray] = field(default_factory=dict)
    depth: dict[int, float] = field(default_factory=dict)
    involved: list[int] = field(default_factory=list)
    ttc: np.ndarray | None = None
    subset: str | None = None
    scenario: str | None = None
    # the source frame (of the video, or of the folder's frame list) each of the n_frames is (a clip resampled
    # to the model's rate: ``frames`` then lists those frames only); None: every frame, in order
    source_steps: np.ndarray | None = None
    feature_dim: int | None = None  # npz: D, the size of each feature vector (from the data array's header)

    @property
    def is_positive(self) -> bool:
        return self.toa >= 0


# ------------------------------------------------------------------------------------------------ frames


def frame_files(folder: Path) -> list[Path]:
    """Image files of a frame folder in frame order: numbers in names compare as numbers (``frame_2.jpg``
    before ``frame_10.jpg``), hidden files (a Mac's ``._000001.jpg``) left out."""
    return sorted(visible_files(folder, IMAGE_EXTENSIONS), key=lambda p: natural_key(p.name))


def videos_by_stem(parent: Path) -> dict[str, Path]:
    """``{vid: video}`` of the videos in ``parent`` (:data:`VIDEO_EXTENSIONS` in any case: a camera's CLIP.MP4
    too); listed once per folder, not once per clip (CCD's folders hold 1,500 and 3,000 clips)."""
    return {p.stem: p for p in visible_files(parent, VIDEO_EXTENSIONS)} if parent.is_dir() else {}


def locate_clip(
    parent: Path, vid: str, videos: dict[str, Path] | None = None
) -> tuple[Path | None, list[Path] | None]:
    """``(video, None)`` for ``<parent>/<vid>.mp4`` (any of :data:`VIDEO_EXTENSIONS`; ``videos``: the folder's
    :func:`videos_by_stem`, listed here when not given), else ``(None, frames)`` from ``<parent>/<vid>/image_2/*``
    or ``<parent>/<vid>/*.{jpg,png}``; ``(None, None)`` if none exists."""
    video = (videos if videos is not None else videos_by_stem(parent)).get(vid)
    if video is not None:
        return video, None
    folder = parent / vid
    for sub in (folder / "image_2", folder / "images", folder):
        if sub.is_dir():
            files = frame_files(sub)
            if files:
                return None, files
    return None, None


def video_info(path: Path) -> tuple[int, float, int, int]:
    """``(frame count, fps, width, height)`` from the container (OpenCV); unreadable -> LabelFormatError."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise LabelFormatError(
                path, None, "unreadable video (OpenCV cannot open it; expected an mp4 / avi)"
            )
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if n <= 0 or width <= 0 or height <= 0:
            ok, _ = cap.read()
            if not ok:
                raise LabelFormatError(path, None, "unreadable video (no frame decodes)")
    finally:
        cap.release()
    return n, fps, width, height


def frames_in_file(path: Path, expected: int) -> int:
    """How many frames the video file holds, counted up to ``expected`` (its header's count) by its packets,
    none decoded (OpenCV's raw stream mode): a copy cut short keeps its header but not its packets. Costs one
    read of the file (1.3 ms for a cached 720p mp4 of 50 frames, where :func:`decodable_frames` decodes 16 of
    them or more: 80 ms), so every video of a data set can be checked before training. A packet cut in two still
    counts (its decoding fails, naming the file); a backend without the raw mode falls back to
    :func:`decodable_frames`."""
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        if not (cap.isOpened() and cap.set(cv2.CAP_PROP_FORMAT, -1)):
            return decodable_frames(path, expected)
        count = 0
        while count < expected and cap.grab():
            count += 1
    finally:
        cap.release()
    return count


def decodable_frames(path: Path, expected: int) -> int:
    """How many of the ``expected`` frames a container's header counts decode: a cut-short copy keeps its
    header. A seek to the last one answers for a whole file; only where it fails are the frames counted (each
    grabbed, none converted), so a whole video is not decoded once more before predict decodes it."""
    cap = cv2.VideoCapture(str(path))
    try:
        if expected > 0 and cap.set(cv2.CAP_PROP_POS_FRAMES, expected - 1) and cap.grab():
            return expected
        cap.release()
        cap, count = cv2.VideoCapture(str(path)), 0
        while cap.isOpened() and cap.grab():
            count += 1
    finally:
        cap.release()
    return count


def read_video_frames(
    path: Path,
    expected: int | None = None,
    start: int = 0,
    stop: int | None = None,
    keep: set[int] | None = None,
) -> list[np.ndarray]:
    """Frames ``[start, stop)`` of a video (default: all) as RGB uint8 (H, W, 3); with ``keep``, only those
    frame indices (a clip resampled to the model's rate: a 30 fps video held every frame between its steps).
    Frames not returned are only grabbed and reading ends at ``stop``, so a training window costs its own
    frames, not the clip's. A video that decodes fewer than ``expected`` frames (or fewer than ``stop``) is an
    error naming it: the annotation would point past its end."""
    cap = cv2.VideoCapture(str(path))
    frames, decoded = [], 0
    try:
        if not cap.isOpened():
            raise LabelFormatError(path, None, "unreadable video (OpenCV cannot open it)")
        while stop is None or decoded < stop:
            if decoded < start or (keep is not None and decoded not in keep):
                ok = cap.grab()
            else:
                ok, frame = cap.read()
                if ok:
                    frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            if not ok:
                break
            decoded += 1
    finally:
        cap.release()
    if not decoded:
        raise LabelFormatError(path, None, "unreadable video (no frame decodes)")
    needed = stop if stop is not None else expected
    if needed is not None and decoded < needed:
        raise LabelFormatError(path, None, f"video decodes {decoded} frames, expected {expected or needed}")
    return frames


def model_steps(n_frames: int, fps: float, model_fps: float) -> np.ndarray:
    """Which source frame each model step reads: step k (at k / model_fps seconds) takes the nearest frame,
    ``round(k * fps / model_fps)``, over the clip's duration. A rate within 1 % of the model's (29.97 for 30)
    keeps every frame. A clip slower than the model is refused (ValueError): filling the gaps by repeating
    frames would show every object standing still on the repeated steps and under-state the risk."""
    for value, what in ((fps, "fps"), (model_fps, "model_fps")):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{what} must be a positive frame rate, got {value}")
    if abs(fps - model_fps) <= FPS_TOLERANCE * model_fps:
        return np.arange(n_frames)
    if fps < model_fps:
        raise ValueError(
            f"the clip's {fps:g} fps is slower than the {model_fps:g} fps the model learnt at: it compares each "
            f"object with its box {1 / model_fps:.2g} s earlier, and repeating frames to fill the gaps would show "
            f"the objects standing still on every repeated step (an under-stated risk). Give a clip of "
            f"{model_fps:g} fps or more"
        )
    ratio = fps / model_fps
    steps = math.floor((n_frames - 1) / ratio + 1e-9) + 1
    return np.minimum(np.floor(np.arange(steps) * ratio + 0.5).astype(np.int64), n_frames - 1)


def held_steps(steps: np.ndarray, n_frames: int) -> np.ndarray:
    """Which model step each of a clip's ``n_frames`` source frames shows: the latest one that read a frame at
    or before it (:func:`model_steps` starts at frame 0), what a live system would show between two steps.
    Maps a resampled clip's per-step results (risk, detected boxes) back to every source frame."""
    return np.searchsorted(np.asarray(steps), np.arange(n_frames), side="right") - 1


def _frames_share_a_size(paths: list[Path], log: DropLog) -> bool:
    """Whether every frame's header reads and gives the first one's size (about 30 us a frame: headers only);
    else the first problem goes to ``log`` (``unreadable_frame``, or ``frame_size`` naming both sizes) and False.
    A clip of mixed sizes stopped training and predict mid-way when its frames were decoded."""
    first = None
    for path in paths:
        try:
            size = image_size(path)
        except LabelFormatError as err:
            log.add("unreadable_frame", path, None, err.reason)
            return False
        first = first or size
        if size != first:
            log.add(
                "frame_size", path, None, f"frame is {size[1]}x{size[0]} but {paths[0].name} of the same clip is "
                f"{first[1]}x{first[0]} (frames of one clip must share a size)",
            )  # fmt: skip
            return False
    return True


def clips_of_one_frame_size(clips: list[AccidentClip], log: DropLog) -> list[AccidentClip]:
    """The clips whose frame files all read and share a size (:func:`_frames_share_a_size`; videos and feature
    files pass), the others logged: clips read with ``frame_sizes`` false that are to be decoded after all."""
    return [clip for clip in clips if clip.frames is None or _frames_share_a_size(clip.frames, log)]


def read_own_clips(
    path: str | Path,
    model_fps: float,
    frames_fps: float | None = None,
    min_frames: int = MIN_FRAMES,
    log: DropLog | None = None,
) -> list[AccidentClip]:
    """Unlabelled clips for ``predict`` (``--data.predict_path``): a video file, a folder of frames (one clip), or
    a folder of videos and frame folders (``<name>/``, ``<name>/image_2/`` or ``<name>/images/``), one clip each,
    named after the file or folder. Videos run at their container's rate, frame folders at ``frames_fps``
    (required for them: images carry no rate). Each clip is resampled to ``model_fps``, the rate the network
    learnt at (:func:`model_steps`: its motion cues are per-frame differences), so a 30 fps video is read at
    every third frame for a 10 fps model. No tracks: a network that reads frames is needed. Bad clips go to
    ``log`` (a video that does not open, a rate that is missing or slower than the model's, too few steps)."""
    root = Path(path)
    log, own = DropLog.owned(log, strict=False)
    if not root.exists():
        raise FileNotFoundError(f"--data.predict_path {root}: no such file or folder")
    entries: list[tuple[str, Path | None, list[Path] | None]] = []  # (clip id, video, frames)
    own_name = Path(os.path.abspath(root)).name  # "." names its folder
    if root.is_file():
        if root.suffix.lower() not in VIDEO_EXTENSIONS:
            raise LabelFormatError(root, None, f"not a video ({', '.join(VIDEO_EXTENSIONS)}): give one, or a folder")
        entries.append((root.stem, root, None))
    else:
        with counting_hidden_files(root):
            _, frames = locate_clip(root.parent, root.name, {})
            if frames:  # the folder is one clip's frames (directly, or in its image_2/ or images/)
                entries.append((own_name, None, frames))
            videos = visible_files(root, VIDEO_EXTENSIONS)
            stems = Counter(video.stem for video in videos)
            if repeated := sorted(stem for stem, count in stems.items() if count > 1):
                same = sorted(str(v) for v in videos if v.stem == repeated[0])
                raise ValueError(
                    f"--data.predict_path {root}: {' and '.join(same[:2])} make one clip name {repeated[0]!r}; "
                    "predict writes one set of files per name: rename one"
                )
            entries += [(video.stem, video, None) for video in sorted(videos, key=lambda v: v.stem)]
            skip = {"image_2", "images"} if frames else set()  # the folder's own frames, already one clip
            folders = sorted((p for p in root.iterdir() if p.is_dir() and not is_hidden(p)), key=lambda p: p.name)
            for folder in folders:
                _, frames = locate_clip(root, folder.name, {})
                if frames and folder.name not in skip:
                    entries.append((folder.name, None, frames))
    if not entries:
        raise FileNotFoundError(
            f"--data.predict_path {root}: no clips (expected videos {', '.join(VIDEO_EXTENSIONS)}, or folders "
            "of frames)"
        )
    ids = [clip_id for clip_id, *_ in entries]
    if repeated := sorted(i for i, count in Counter(ids).items() if count > 1):  # linear: 20k ids listed
        raise ValueError(
            f"--data.predict_path {root}: clip name {repeated[0]!r} is both a video and a frame folder; predict "
            "writes one set of files per name: rename one"
        )
    clips = []
    for clip_id, video, frames in entries:
        source = video or frames[0].parent
        if video is not None:
            try:
                n_frames, fps, width, height = video_info(video)
            except LabelFormatError as err:
                log.add("unreadable_video", video, None, err.reason)
                continue
            fps = _check_fps(fps, video, None, log)
            if fps is not None and (decoded := decodable_frames(video, n_frames)) < n_frames:  # a copy cut short
                warnings.warn(
                    f"{video}: its header says {n_frames} frames but {decoded} decode: those are read",
                    LabelWarning,
                    stacklevel=2,
                )
                n_frames = decoded
        elif frames_fps is None:
            log.add("frame_rate", source, None, "a frame folder has no frame rate: set --data.predict_fps")
            continue
        else:
            n_frames, fps = len(frames), float(frames_fps)
        if fps is None:
            continue
        try:
            steps = model_steps(n_frames, fps, model_fps)
        except ValueError as err:
            log.add("frame_rate", source, None, str(err))
            continue
        if len(steps) < min_frames:
            short = _too_short(len(steps), min_frames)
            log.add("too_short", source, None, f"{short} at the model's {model_fps:g} fps")
            continue
        if frames is not None and not _frames_share_a_size([frames[i] for i in steps], log):
            continue
        clips.append(
            AccidentClip(
                clip_id=clip_id,
                kind="unknown",
                fps=float(model_fps),
                n_frames=len(steps),
                toa=-1,
                source=source,
                frames=None if frames is None else [frames[i] for i in steps],
                video=video,
                source_steps=steps,
                size=None if video is None else (width, height),
            )
        )
    if own:
        log.report(f"--data.predict_path {root}")
    return clips


def _check_fps(
    fps, where: Path, line, log: DropLog, expected: float | None = None, expected_from: str = "the annotation's"
) -> float | None:
    """A positive finite frame rate (equal to ``expected`` within 1 %, which ``expected_from`` says the source
    of), else None after logging the problem."""
    if fps is None or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        log.add(
            "frame_rate",
            where,
            line,
            f"missing or invalid frame rate {fps!r} (expected frames per second > 0)",
        )
        return None
    if expected is not None and abs(fps - expected) > FPS_TOLERANCE * expected:
        log.add(
            "frame_rate",
            where,
            line,
            f"frame rate {fps:g} is inconsistent with {expected_from} {expected:g} fps",
        )
        return None
    return float(fps)


# ---------------------------------------------------------------------------------------------- CCD lines


@dataclass
class CCDLine:
    """One ``Crash-1500.txt`` line: ``vid,[l0, ..., lT-1],start_frame,source,timing,weather,ego_involved``."""

    vid: str
    labels: list[int]
    start_frame: str
    source: str
    timing: str
    weather: str
    ego_involved: str
    lineno: int

    @property
    def toa(self) -> int:
        """The contact frame: the first frame labelled 1."""
        return self.labels.index(1)


_CCD_LINE = re.compile(r"^\s*([^,\[\]]+?)\s*,\s*\[([^\]]*)\]\s*,(.*)$")


def parse_ccd_line(raw: str, path: str | Path, lineno: int) -> CCDLine:
    """Parse one CCD annotation line (the bracket list holds commas, so it is cut out first)."""
    match = _CCD_LINE.match(raw)
    if match is None:
        raise LabelFormatError(
            path,
            lineno,
            f"expected 'vid,[l0, l1, ...],start_frame,source,timing,weather,ego_involved', got {raw.strip()!r}",
        )
    vid, inside, rest = match.groups()
    try:
        labels = [int(v) for v in inside.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise LabelFormatError(
            path, lineno, f"frame labels must be 0/1 integers, got [{inside.strip()}]"
        ) from None
    if any(v not in (0, 1) for v in labels):
        raise LabelFormatError(path, lineno, f"frame labels must be 0 or 1, got [{inside.strip()}]")
    others = [v.strip() for v in rest.split(",")]
    if len(others) != 5:
        raise LabelFormatError(
            path,
            lineno,
            f"expected 5 fields after the label list (start_frame,source,timing,weather,ego_involved), "
            f"got {len(others)}: {rest.strip()!r}",
        )
    if 1 not in labels:
        raise LabelFormatError(path, lineno, f"crash clip {vid!r} has no frame labelled 1 (no contact frame)")
    if labels[labels.index(1) :].count(0):
        raise LabelFormatError(
            path, lineno, f"labels of {vid!r} drop back to 0 after the contact (expected 0...0 1...1)"
        )
    return CCDLine(vid.strip(), labels, *others, lineno=lineno)


def read_ccd_annotations(
    path: Path, log: DropLog | None = None, rejected: set[str] | None = None
) -> dict[str, CCDLine]:
    """``{vid: CCDLine}`` of a ``Crash-1500.txt`` (a Windows editor's byte-order mark is allowed). A malformed
    line goes to ``log`` (left out and counted; raised without a log or in strict mode), its vid into
    ``rejected`` (its clip is counted once, not again as a clip without a line); a repeated vid is an error."""
    out: dict[str, CCDLine] = {}
    for lineno, raw in enumerate(read_text_file(path).splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = parse_ccd_line(raw, path, lineno)
        except LabelFormatError as err:
            if log is None:
                raise
            log.add("bad_line", path, lineno, err.reason)
            if rejected is not None:
                rejected.add(raw.split(",", 1)[0].strip())
            continue
        if line.vid in out:
            raise LabelFormatError(
                path, lineno, f"clip {line.vid!r} is annotated twice (first on line {out[line.vid].lineno})"
            )
        out[line.vid] = line
    return out


# ------------------------------------------------------------------------------ synthetic / CCD layout


def _clip_entries(folder: Path, videos: dict[str, Path]) -> list[str]:
    """Clip ids in a ``videos/<set>`` folder: the stems of its ``videos`` (:func:`videos_by_stem`) and the names
    of its frame folders (hidden folders left out and counted)."""
    if not folder.is_dir():
        return []
    folders = [p for p in folder.iterdir() if p.is_dir()]
    count_hidden(folder, sorted(p for p in folders if is_hidden(p)))
    return sorted(set(videos) | {p.name for p in folders if not is_hidden(p)})


_ABSENT_BOX = (math.nan,) * 4


def _boxes_of_track(boxes: list, key: str, path: Path) -> np.ndarray:
    """One JSON track's boxes as float32 (T, 4), NaN rows where a box is null. Checked in one numpy pass (a
    Python check per box was 776k calls, 1.2 s of a 200-clip set's read); where that pass does not vouch for
    every box, they are read one by one, and the first that is not [x1, y1, x2, y2] pixels
    (:func:`_plausible_box`) or null raises :class:`LabelFormatError` naming its track and frame."""
    absent = np.array([box is None for box in boxes], dtype=bool)
    try:
        values = np.array([_ABSENT_BOX if box is None else box for box in boxes], dtype=np.float64)
    except (TypeError, ValueError, OverflowError):  # a box of another shape, a dict, a number past a float's
        values = None
    if values is not None and values.shape == (len(boxes), 4):
        x1, y1, x2, y2 = values.T
        plausible = np.isfinite(values).all(axis=1) & (np.abs(values) <= MAX_FRAME_SIDE).all(axis=1)
        if (absent | (plausible & (x1 <= x2) & (y1 <= y2))).all():
            return values.astype(np.float32)
    arr = np.full((len(boxes), 4), np.nan, dtype=np.float32)
    for t, box in enumerate(boxes):
        if box is None:
            continue
        if not isinstance(box, list) or len(box) != 4 or not _plausible_box(box):
            raise LabelFormatError(
                path, None, f"track {key}, frame {t}: box {box!r} is not [x1, y1, x2, y2] pixels (x1 <= x2, "
                "y1 <= y2) or null",
            )  # fmt: skip
        arr[t] = box
    return arr


def _tracks_from_json(
    meta: dict, n_frames: int, path: Path
) -> tuple[dict[int, np.ndarray], dict[int, float]]:
    tracks, depth = {}, {}
    raw_tracks = meta.get("tracks") or {}
    if not isinstance(raw_tracks, dict):
        raise LabelFormatError(path, None, f"tracks must map track ids to tracks, got {type(raw_tracks).__name__}")
    for key, track in raw_tracks.items():
        tid = _json_int(key, path, f"track id {key!r}")
        boxes = track.get("box") if isinstance(track, dict) else None
        if not isinstance(boxes, list) or len(boxes) != n_frames:
            got = f"{len(boxes)} boxes" if isinstance(boxes, list) else "no box list"
            raise LabelFormatError(path, None, f"track {key}: {got}, expected one per frame ({n_frames})")
        arr = _boxes_of_track(boxes, key, path)
        tracks[tid] = arr
        z = [loc[2] for loc in (track.get("location") or []) if loc is not None]
        depth[tid] = float(np.mean(z)) if z else nearness_by_height(arr)
    return tracks, depth


def _json_object(path: Path, text: str | None = None) -> dict:
    """A clip's annotation JSON (a byte-order mark read; ``text``: the file's, when read already), else
    :class:`LabelFormatError` saying why."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8-sig") if text is None else text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LabelFormatError(path, None, f"not valid JSON ({err})") from None
    if not isinstance(meta, dict):  # meta.get then ended the read in a bare AttributeError
        raise LabelFormatError(path, None, f"expected a JSON object of the clip's keys, got a {type(meta).__name__}")
    return meta


_JSON_SPACE = re.compile(r"[ \t\n\r]*")  # JSON's whitespace


def _top_level_values(text: str, keys: set[str]) -> dict:
    """The values of ``keys`` in the JSON object ``text`` (of those it has), parsing its top-level pairs in order
    (each with :meth:`json.JSONDecoder.raw_decode`) and stopping once all are found. ValueError (and IndexError
    at a cut-short end) where ``text`` is no JSON object up to that point."""
    decoder = json.JSONDecoder()
    found = {}
    at = _JSON_SPACE.match(text).end()
    if text[at] != "{":
        raise ValueError("not an object")
    at = _JSON_SPACE.match(text, at + 1).end()
    closed = text[at] == "}"
    while not closed:
        name, at = decoder.raw_decode(text, at)
        at = _JSON_SPACE.match(text, at).end()
        if not isinstance(name, str) or text[at] != ":":
            raise ValueError("not a key")
        value, at = decoder.raw_decode(text, _JSON_SPACE.match(text, at + 1).end())
        if name in keys:
            found[name] = value
            if len(found) == len(keys):
                return found
        at = _JSON_SPACE.match(text, at).end()
        closed = text[at] == "}"
        if not closed and text[at] != ",":
            raise ValueError("no comma")
        at = _JSON_SPACE.match(text, at + 1).end()
    if at != len(text):
        raise ValueError("extra data")
    return found


def _json_head(path: Path, defaults: dict) -> dict:
    """The top-level values of ``defaults``' keys in a clip's annotation JSON (the default where it has none), as
    :func:`_json_object` reads them, parsing the top-level pairs up to the last of them only: the split needs
    every clip's kind (a list of clips its scenario and rate too), and parsing whole annotations (their per-frame
    tracks, 90 kB a clip) was the larger part of a set's listing. A file naming one of the keys more than once or
    writing escapes (a key spelt ``"\\u006bind"``), or that the walk cannot read, is parsed whole, so the answer
    is always what json.loads would give; that raises :class:`LabelFormatError` saying why."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise LabelFormatError(path, None, f"not valid JSON ({err})") from None
    found = None
    if "\\u" not in text and all(text.count(f'"{key}"') == 1 for key in defaults):
        try:
            found = _top_level_values(text, set(defaults))
        except (ValueError, IndexError):
            pass  # parsed whole below, for json's own words
    if found is None:
        found = _json_object(path, text)
    return {key: found.get(key, default) for key, default in defaults.items()}


def _kind_problem(kind, line: CCDLine | None, vid: str, annotation: Path) -> str | None:
    """Why a clip's JSON ``kind`` is refused (not one of :data:`KINDS`, or a crash without an annotation line and
    the other way round), or None."""
    if kind not in KINDS:
        return f"kind {kind!r} is not one of {KINDS}"
    if (kind == "crash") != (line is not None):
        expected = "crash" if line else "near_miss / normal"
        return (
            f"kind {kind!r} disagrees with {annotation.name} ({'has' if line else 'has no'} a line for {vid!r}, "
            f"expected {expected})"
        )
    return None


@dataclass
class CCDEntry:
    """A clip of a CCD-layout root before it is read (:func:`list_ccd_layout`): what a split needs (``clip_id``,
    ``kind``; ``subset`` None: the layout fixes no split) and where its files are."""

    clip_id: str
    kind: str
    vid: str
    parent: Path  # its videos/<set> folder
    line: CCDLine | None
    video: Path | None  # None: a frame folder
    subset: str | None = None
    # its JSON's scenario and frame rate where they are a name and a rate, for a list of clips (not checked: the
    # clip's read checks them)
    scenario: str | None = None
    fps: float | None = None


@dataclass
class CCDLayout:
    """A listed CCD-layout root: its annotation file, whether each clip needs its JSON, and its clips."""

    root: Path
    annotation: Path
    require_json: bool
    entries: list[CCDEntry]

    @property
    def videos_dir(self) -> Path:
        """The folder of ``Crash-1500/`` and ``Normal/``."""
        return _ccd_videos_folder(self.annotation.parent)


def _ccd_annotation_lines(root: Path, log: DropLog) -> tuple[Path, dict, set[str]]:
    """The root's ``Crash-1500.txt``, its lines by clip id, and the ids of its malformed lines (to ``log``)."""
    annotation = _ccd_annotation(root)
    rejected: set[str] = set()
    return annotation, read_ccd_annotations(annotation, log, rejected), rejected


def _ccd_annotation(root: Path) -> Path:
    """The root's ``Crash-1500.txt`` (:func:`find_ccd_annotation`), else FileNotFoundError."""
    annotation = find_ccd_annotation(root, above=False)
    if annotation is None:
        raise FileNotFoundError(
            f"{root / CCD_ANNOTATION}: CCD annotation file not found (expected <root>/{CCD_ANNOTATION} "
            f"or <root>/videos/{CCD_ANNOTATION})"
        )
    return annotation


def list_ccd_layout(
    root: str | Path, require_json: bool = False, strict: bool = False, log: DropLog | None = None
) -> CCDLayout:
    """The clips of a CCD-layout root (:func:`read_ccd_layout`), not read: ids and kinds from ``Crash-1500.txt``,
    the folder listings and each annotation JSON's ``kind``, so a split can be chosen before its clips are read
    (:func:`read_ccd_entries`). What the listing shows goes to ``log`` as :func:`read_ccd_layout` counts it: a
    malformed annotation line, a crash clip without one, a clip without video or frames, a JSON that is missing
    (``require_json``), not JSON, or of a kind that is not one of :data:`KINDS` or disagrees with the annotation."""
    root = Path(root)
    log, own = DropLog.owned(log, strict)
    annotation, lines, rejected = _ccd_annotation_lines(root, log)
    videos_dir = _ccd_videos_folder(annotation.parent)
    crash_dir, normal_dir = videos_dir / CCD_CRASH_DIR, videos_dir / CCD_NORMAL_DIR
    entries = []
    with counting_hidden_files(videos_dir):  # one count over every clip folder
        videos = {folder: videos_by_stem(folder) for folder in (crash_dir, normal_dir)}
        for vid in _clip_entries(crash_dir, videos[crash_dir]):
            if vid not in lines and vid not in rejected:
                _unlabelled_crash_clip(crash_dir, vid, annotation, log)
        listed = [(vid, crash_dir, lines[vid]) for vid in sorted(lines)]
        listed += [(vid, normal_dir, None) for vid in _clip_entries(normal_dir, videos[normal_dir])]
        for vid, parent, line in listed:
            entry = _ccd_entry(root, annotation, vid, parent, videos[parent], line, vid in lines, require_json, log)
            if entry is not None:
                entries.append(entry)
    if own:
        log.report(f"list_ccd_layout({root})")
    return CCDLayout(root, annotation, require_json, entries)


def _ccd_entry(
    root: Path,
    annotation: Path,
    vid: str,
    parent: Path,
    videos: dict[str, Path],
    line: CCDLine | None,
    numbered_like_a_crash: bool,
    require_json: bool,
    log: DropLog,
) -> CCDEntry | None:
    """One clip of :func:`list_ccd_layout` (None after logging why it is none): its video or frame folder (the
    frames are listed when it is read: listing 10,000 frames cost more than the split saved) and its kind, its
    JSON's where it has one. A negative numbered like a crash clip (real CCD numbers both folders from 000001)
    is named ``normal_<vid>``."""
    video = videos.get(vid)
    if video is None and not (parent / vid).is_dir():
        _missing_clip(annotation, line, parent, vid, log)
        return None
    head = {"kind": "crash" if line else "normal", "scenario": None, "fps": None}
    json_path = root / "annotations" / f"{vid}.json"
    if json_path.is_file():
        try:
            head = _json_head(json_path, head)
        except LabelFormatError as err:
            log.add("bad_json", json_path, None, err.reason)
            return None
        if (problem := _kind_problem(head["kind"], line, vid, annotation)) is not None:
            log.add("bad_json", json_path, None, problem)
            return None
    elif require_json:
        log.add("missing_json", json_path, None, f"synthetic clip {vid!r} has no annotation JSON")
        return None
    clip_id = f"normal_{vid}" if line is None and numbered_like_a_crash else vid
    scenario = head["scenario"] if isinstance(head["scenario"], str) else None
    fps = head["fps"]
    fps = float(fps) if type(fps) in (int, float) and math.isfinite(fps) and fps > 0 else None
    return CCDEntry(clip_id, head["kind"], vid, parent, line, video, scenario=scenario, fps=fps)


def _missing_clip(annotation: Path, line: CCDLine | None, parent: Path, vid: str, log: DropLog) -> None:
    """Log a clip without video or frames (named by its annotation line, else by its folder)."""
    where = (annotation, line.lineno) if line else (parent / vid, None)
    log.add(
        "missing_clip",
        *where,
        f"no video or frames for clip {vid!r} (expected {parent}/{vid}.mp4 or {parent}/{vid}/image_2/*.jpg)",
    )


def read_ccd_entries(
    layout: CCDLayout,
    entries: list[CCDEntry],
    fps: float = CCD_FPS,
    min_frames: int = MIN_FRAMES,
    strict: bool = False,
    log: DropLog | None = None,
    frame_sizes: bool = True,
) -> list[AccidentClip]:
    """The clips of ``entries`` (of ``layout``, :func:`list_ccd_layout`), in their order, read and checked as
    :func:`read_ccd_layout` reads them; a bad one goes to ``log``. ``frame_sizes`` false: of a frame folder only
    the first frame's header is read (the size a boxes-only network scales its boxes by), not every frame's: a
    clip of mixed sizes stops only a decode of its frames, and 10,000 headers were half of a 200-clip set's read."""
    log, own = DropLog.owned(log, strict)
    clips = []
    with counting_hidden_files(layout.videos_dir):  # one count over every frame folder
        for entry in entries:
            clip = _read_ccd_clip(layout, entry, fps, min_frames, log, frame_sizes)
            if clip is not None:
                clips.append(clip)
    if own:
        log.report(f"read_ccd_entries({layout.root})")
    return clips


def read_ccd_layout(
    root: str | Path,
    strict: bool = False,
    require_json: bool = False,
    fps: float = CCD_FPS,
    min_frames: int = MIN_FRAMES,
    log: DropLog | None = None,
    frame_sizes: bool = True,
) -> list[AccidentClip]:
    """Clips of the CCD layout (real CCD or the synthetic scenario clips).

    ``Crash-1500.txt`` names the crash clips (``Crash-1500/<vid>.mp4`` or a frame folder); every clip under
    ``Normal/`` is a negative, named ``normal_<vid>`` where its vid is also a crash clip's (real CCD numbers both
    folders from 000001). The released CCD keeps all three in ``CarCrash/videos/``: ``root`` may be ``CarCrash``
    or its ``videos``; the synthetic clips keep the annotation at ``<root>`` and the folders in ``<root>/videos``.
    A crash video without a line is left out and counted. ``annotations/<vid>.json`` (the synthetic extras;
    required with ``require_json``) gives the kind (near miss / normal), the frame rate, per-frame TTC, the
    involved track ids and ground-truth boxes per track. Real CCD has no boxes: its clips get no tracks
    (``box_valid`` all false; a detector could fill them later) and ``fps`` (10). ``frame_sizes``: as
    :func:`read_ccd_entries`. :func:`list_ccd_layout` and :func:`read_ccd_entries` read it in two steps (a split
    chosen in between), :func:`read_ccd_clip` one clip of it.
    """
    log, own = DropLog.owned(log, strict)
    with counting_hidden_files(ccd_videos_folder(root)):  # the clip folders and their frames: one count
        layout = list_ccd_layout(root, require_json, log=log)
        clips = read_ccd_entries(layout, layout.entries, fps, min_frames, log=log, frame_sizes=frame_sizes)
    if own:
        log.report(f"read_ccd_layout({root})")
    return clips


def read_ccd_clip(
    root: str | Path,
    clip_id: str,
    require_json: bool = False,
    fps: float = CCD_FPS,
    min_frames: int = MIN_FRAMES,
    strict: bool = False,
    log: DropLog | None = None,
) -> AccidentClip | None:
    """The clip ``clip_id`` (as :func:`read_ccd_layout` names it) of a CCD-layout root, with that clip's checks
    and errors and the annotation file's, and no other clip read: the demo's pick of one clip read all 200 of a
    set (7 s). None where the root has no such clip; a clip that fails goes to ``log`` (raised with ``strict``)."""
    root = Path(root)
    log, own = DropLog.owned(log, strict)
    annotation, lines, rejected = _ccd_annotation_lines(root, log)
    videos_dir = _ccd_videos_folder(annotation.parent)
    crash_dir, normal_dir = videos_dir / CCD_CRASH_DIR, videos_dir / CCD_NORMAL_DIR
    numbered = clip_id.removeprefix("normal_")
    with counting_hidden_files(videos_dir):
        if clip_id in lines:
            vid, parent, line = clip_id, crash_dir, lines[clip_id]
        else:  # a negative, named normal_<vid> where a crash clip has its number
            vid, parent, line = (numbered if numbered in lines else clip_id), normal_dir, None
        videos = videos_by_stem(parent)
        entry = None
        if line is not None or _is_clip_of(normal_dir, vid, videos):
            entry = _ccd_entry(root, annotation, vid, parent, videos, line, vid in lines, require_json, log)
        elif clip_id not in rejected and _is_clip_of(crash_dir, clip_id, videos_by_stem(crash_dir)):
            _unlabelled_crash_clip(crash_dir, clip_id, annotation, log)
        layout = CCDLayout(root, annotation, require_json, [entry] if entry else [])
        clip = None if entry is None else _read_ccd_clip(layout, entry, fps, min_frames, log)
    if own:
        log.report(f"read_ccd_clip({root}, {clip_id!r})")
    return clip


def _is_clip_of(folder: Path, vid: str, videos: dict[str, Path]) -> bool:
    """Whether ``vid`` is a clip of a ``videos/<set>`` folder as :func:`_clip_entries` lists them (``videos``:
    its :func:`videos_by_stem`), without listing the folder."""
    if not vid or Path(vid).name != vid or is_hidden(vid):  # a path or a hidden name is no clip id
        return False
    return vid in videos or (folder / vid).is_dir()


def _unlabelled_crash_clip(crash_dir: Path, vid: str, annotation: Path, log: DropLog) -> None:
    """Log a clip of ``Crash-1500/`` that the annotation has no line for (it is left out)."""
    log.add("missing_label", crash_dir / vid, None, f"crash clip {vid!r} has no readable line in {annotation.name}")


def ccd_videos_folder(root: str | Path) -> Path:
    """The folder of a CCD-layout root's ``Crash-1500/`` and ``Normal/`` (FileNotFoundError without an
    annotation): a :func:`~shared.files.counting_hidden_files` block over it counts the hidden files of a
    listing and of the reads after it in one warning."""
    return _ccd_videos_folder(_ccd_annotation(Path(root)).parent)


def _ccd_videos_folder(base: Path) -> Path:
    """The folder holding ``Crash-1500/`` and ``Normal/``: ``base`` (the annotation's folder, as released) where
    it has either, else ``base/videos`` (the synthetic layout; also where a missing clip is looked for)."""
    if any((base / name).is_dir() for name in (CCD_CRASH_DIR, CCD_NORMAL_DIR)):
        return base
    return base / "videos"


def _read_ccd_clip(
    layout: CCDLayout,
    entry: CCDEntry,
    fps: float,
    min_frames: int,
    log: DropLog,
    frame_sizes: bool = True,
) -> AccidentClip | None:
    root, annotation, vid, line = layout.root, layout.annotation, entry.vid, entry.line
    video, frames = entry.video, None
    if video is None:
        _, frames = locate_clip(entry.parent, vid, {})
        if frames is None:
            _missing_clip(annotation, line, entry.parent, vid, log)
            return None
    lineno = line.lineno if line else None
    source = video or frames[0].parent
    size = None
    if video is not None:
        try:
            n_frames, container_fps, width, height = video_info(video)
        except LabelFormatError as err:
            log.add("unreadable_video", video, None, err.reason)
            return None
        size = (width, height)
    else:
        n_frames, container_fps = len(frames), None
    json_path = root / "annotations" / f"{vid}.json"
    meta = None
    if json_path.is_file():
        try:
            meta = _json_object(json_path)
        except LabelFormatError as err:
            log.add("bad_json", json_path, None, err.reason)
            return None
    elif layout.require_json:
        log.add("missing_json", json_path, None, f"synthetic clip {vid!r} has no annotation JSON")
        return None
    kind, toa, clip_fps, ttc, tracks, depth, involved, scenario = (
        ("crash" if line else "normal"),
        -1,
        fps,
        None,
        {},
        {},
        [],
        None,
    )
    if meta is not None:
        clip_fps = _check_fps(meta.get("fps"), json_path, None, log)
        if clip_fps is None:
            return None
        kind = meta.get("kind", kind)
        if (problem := _kind_problem(kind, line, vid, annotation)) is not None:
            log.add("bad_json", json_path, None, problem)
            return None
        if meta.get("n_frames") is not None and meta["n_frames"] != n_frames:
            log.add(
                "frame_count",
                json_path,
                None,
                f"n_frames {meta['n_frames']} but the clip has {n_frames} frames ({source})",
            )
            return None
        scenario = meta.get("scenario")
        try:
            if meta.get("size") is not None:
                size = meta["size"]
                if not isinstance(size, list) or len(size) != 2:
                    raise LabelFormatError(json_path, None, f"size {size!r} is not [width, height]")
                size = tuple(_json_int(v, json_path, f"size {meta['size']!r}", positive=True) for v in size)
            tracks, depth = _tracks_from_json(meta, n_frames, json_path)
            involved = meta.get("involved") or []
            involved = [_json_int(v, json_path, f"involved track id {v!r}") for v in involved]
        except LabelFormatError as err:
            log.add("bad_json", json_path, None, err.reason)
            return None
        raw_ttc = meta.get("ttc")
        if raw_ttc is not None:
            if not isinstance(raw_ttc, list) or len(raw_ttc) != n_frames:
                got = f"{len(raw_ttc)} values" if isinstance(raw_ttc, list) else f"{type(raw_ttc).__name__}"
                log.add("frame_count", json_path, None, f"ttc has {got}, expected one per frame ({n_frames})")
                return None
            if bad := [v for v in raw_ttc if v is not None and not isinstance(v, (int, float))]:
                log.add("bad_json", json_path, None, f"ttc value {bad[0]!r} is not seconds (a number or null)")
                return None
            ttc = np.array([np.nan if v is None else v for v in raw_ttc], dtype=np.float32)
    expected_from = "the annotation's" if meta is not None else "CCD's"  # Crash-1500.txt states no rate
    if container_fps is not None and _check_fps(container_fps, video, None, log, clip_fps, expected_from) is None:
        return None
    if line is not None:
        if len(line.labels) != n_frames:
            log.add(
                "label_count",
                annotation,
                lineno,
                f"clip {vid!r} has {len(line.labels)} frame labels but {n_frames} frames ({source})",
            )
            return None
        toa = line.toa
        if meta is not None and meta.get("contact_frame") is not None and meta["contact_frame"] != toa:
            log.add(
                "contact_frame",
                json_path,
                None,
                f"contact_frame {meta['contact_frame']} disagrees with {annotation.name} line {lineno} (first 1 at {toa})",
            )
            return None
    elif meta is not None and meta.get("contact_frame") is not None:
        log.add(
            "contact_frame",
            json_path,
            None,
            f"a {kind} clip has contact_frame {meta['contact_frame']} (expected null)",
        )
        return None
    if n_frames < min_frames:
        log.add("too_short", source, None, _too_short(n_frames, min_frames))
        return None
    if video is not None and (held := frames_in_file(video, n_frames)) < n_frames:
        log.add(
            "frame_count", video, None, f"its header counts {n_frames} frames but the file holds {held} (a copy "
            "cut short? copy it again)",
        )  # fmt: skip
        return None
    if frames is not None and not _frames_share_a_size(frames if frame_sizes else frames[:1], log):
        return None
    return AccidentClip(
        clip_id=entry.clip_id,
        kind=kind,
        fps=clip_fps,
        n_frames=n_frames,
        toa=toa,
        source=source,
        frames=frames,
        video=video,
        size=size,
        tracks=tracks,
        depth=depth,
        involved=involved,
        ttc=ttc,
        scenario=scenario,
    )


# ------------------------------------------------------------------------------------- npz features


def _subset_of(path: Path, root: Path) -> str | None:
    for part in path.relative_to(root).parts[:-1]:
        if part.lower() in ("training", "train"):
            return "train"
        if part.lower() in ("testing", "test"):
            return "test"
    return None


def find_ccd_annotation(root: Path, above: bool = True) -> Path | None:
    """CCD keeps ``Crash-1500.txt`` in ``videos/``, beside ``vgg16_features/`` in UString's layout: the first of
    ``<root>``, ``<root>/videos`` and (``above``) ``<root>/..``, ``<root>/../videos`` that holds one, else None."""
    folders = (root, root / "videos", *((root.parent, root.parent / "videos") if above else ()))
    for folder in folders:
        if (folder / CCD_ANNOTATION).is_file():
            return folder / CCD_ANNOTATION
    return None


def _listed_subsets(root: Path) -> dict[Path, str]:
    """``{npz path: subset}`` from UString's split lists ``<root>/{train,test}.txt`` (lines
    ``positive/000001.npz 1``), which CCD's feature release uses instead of training / testing folders."""
    subsets = {}
    for name, subset in (("train", "train"), ("training", "train"), ("test", "test"), ("testing", "test")):
        listing = root / f"{name}.txt"
        if listing.is_file():
            for line in read_text_file(listing).splitlines():
                if line.strip():
                    subsets[(root / line.split()[0]).resolve()] = subset
    return subsets


def read_npz_clips(
    root: str | Path,
    fps: float = DAD_FPS,
    toa: int = DAD_TOA,
    strict: bool = False,
    min_frames: int = MIN_FRAMES,
    log: DropLog | None = None,
    annotation: str | Path | None = None,
) -> list[AccidentClip]:
    """Clips of the UString / DSTA feature layout: ``<root>/{training,testing}/*.npz`` (DAD), or any folder of
    them, with UString's ``train.txt`` / ``test.txt`` lists where present (CCD: ``positive/*.npz``,
    ``negative/*.npz``).

    Each file: ``data`` (T, 1 + N, D) features of the frame and N detected objects, ``det`` (T, N, 6) boxes
    ``x1, y1, x2, y2, score, class`` in source pixels, ``labels`` one-hot (2,) (``[0, 1]`` = accident), and
    optionally ``ID`` (the clip id; else the file stem) and ``toa`` (the contact frame). A positive clip's contact
    frame is its ``toa``, else its ``ID``'s line in ``annotation`` (CCD's ``Crash-1500.txt``: the first frame
    labelled 1, as UString reads it), else ``toa`` (DAD's 90). ``fps`` is the features' frame rate (DAD 20,
    CCD 10). A file under ``training`` / ``testing`` or in a list keeps that split. Object slot n is the
    detector's n-th box of each frame (the layout has no track ids), so slot n's track id is n; an all-zero box
    is an empty slot.
    """
    root = Path(root)
    log, own = DropLog.owned(log, strict)
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"read_npz_clips: fps must be a positive frame rate, got {fps!r}")
    files = visible_files(root, (".npz",), recursive=True)
    if not files:
        raise FileNotFoundError(
            f"{root}: no *.npz feature files (expected <root>/training/*.npz or <root>/*.npz)"
        )
    contact_frames = None
    if annotation is not None:
        lines = read_ccd_annotations(Path(annotation), log)
        contact_frames = {vid: line.toa for vid, line in lines.items()}
    listed = _listed_subsets(root)
    clips, first = [], None
    for path in files:
        clip = _read_npz_clip(path, root, fps, toa, min_frames, log, contact_frames)
        if clip is None:
            continue
        clip.subset = listed.get(path.resolve(), clip.subset)
        shape = _npz_array_shape(path, "data")  # the header only; clips of one set batch together
        if shape is not None:
            first = first or (shape, path)
            if shape[1:] != first[0][1:]:
                raise LabelFormatError(
                    path, None, f"data has {shape[1] - 1} objects x {shape[2]} features per frame, but "
                    f"{first[1]} has {first[0][1] - 1} x {first[0][2]}: one set's features must match",
                )  # fmt: skip
        clips.append(clip)
    # CCD's release numbers positive/ and negative/ each from 000001, and UString wrote that number as the ID
    crash_ids = {clip.clip_id for clip in clips if clip.kind == "crash"}
    seen: dict[str, Path] = {}
    for clip in clips:
        if clip.kind != "crash" and clip.clip_id in crash_ids:
            clip.clip_id = f"normal_{clip.clip_id}"  # as the video layout names them
        if clip.clip_id in seen:
            raise LabelFormatError(clip.npz, None, f"clip id {clip.clip_id!r} also used by {seen[clip.clip_id]}")
        seen[clip.clip_id] = clip.npz
    if own:
        log.report(f"read_npz_clips({root})")
    return clips


def _npz_array_shape(path: Path, key: str) -> tuple[int, ...] | None:
    """Shape of one array of an npz from its .npy header, without reading the array (None if not plain)."""
    try:
        with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as handle:
            major, _ = np.lib.format.read_magic(handle)
            read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            return tuple(read(handle)[0])
    except (KeyError, ValueError, zipfile.BadZipFile):
        return None


def _read_npz_clip(path, root, fps, default_toa, min_frames, log, contact_frames=None) -> AccidentClip | None:
    problem = None
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in NPZ_KEYS if k not in npz.files]
            if missing:
                problem = (
                    f"missing key(s) {missing}; expected {list(NPZ_KEYS)} (+ optional ID, toa), found {npz.files}"
                )
            else:
                det, labels = npz["det"], np.asarray(npz["labels"]).reshape(-1)
                data_shape = _npz_array_shape(path, "data")
                clip_id = _npz_id(npz["ID"]) if "ID" in npz.files else path.stem
                file_toa = int(np.asarray(npz["toa"]).reshape(-1)[0]) if "toa" in npz.files else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        # np.load reads a file that is no zip archive as a pickle, and refuses it saying "pickled data"
        # (with advice to allow pickles): say what the file is instead
        plain = isinstance(err, zipfile.BadZipFile) or "pickle" in str(err)
        problem = (
            "not an npz archive (truncated, or another kind of file)" if plain else f"not a readable npz ({err})"
        )
    if problem is not None:
        log.add("npz_keys", path, None, problem)
        return None
    if det.ndim != 3 or det.shape[2] < 4:
        log.add("npz_keys", path, None, f"det has shape {det.shape}, expected (T, N, 6)")
        return None
    if labels.shape != (2,):
        log.add("npz_keys", path, None, f"labels has shape {labels.shape}, expected a one-hot (2,)")
        return None
    if not (np.isin(labels, (0, 1)).all() and labels.sum() == 1):  # [0.3, 0.7] read as a crash, so did [0.7, 0.3]
        log.add(
            "npz_keys", path, None, f"labels is {labels.tolist()}, expected a one-hot [1, 0] (no accident) or "
            "[0, 1] (accident)",
        )  # fmt: skip
        return None
    n_frames = det.shape[0]
    if data_shape is not None and (len(data_shape) != 3 or data_shape[:2] != (n_frames, 1 + det.shape[1])):
        log.add(
            "npz_keys",
            path,
            None,
            f"data has shape {data_shape}, expected (T={n_frames}, 1 + {det.shape[1]} "
            "objects, D) to match det",
        )
        return None
    positive = bool(labels[1] > 0)
    toa = -1
    if positive and file_toa is not None:
        toa = file_toa
    elif positive and contact_frames is not None:
        if clip_id not in contact_frames:
            log.add("missing_label", path, None, f"crash clip ID {clip_id!r} has no line in {CCD_ANNOTATION}")
            return None
        toa = contact_frames[clip_id]
    elif positive:
        toa = default_toa
    if positive and not 0 <= toa < n_frames:
        log.add(
            "contact_frame",
            path,
            None,
            f"contact frame {toa} is past the clip's end (frames 0..{n_frames - 1})",
        )
        return None
    if n_frames < min_frames:
        log.add("too_short", path, None, _too_short(n_frames, min_frames))
        return None
    boxes = det[..., :4].astype(np.float32)
    visible = (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
    tracks, depth = {}, {}
    for n in range(boxes.shape[1]):
        arr = np.where(visible[:, n, None], boxes[:, n], np.nan).astype(np.float32)
        tracks[n] = arr
        depth[n] = nearness_by_height(arr)
    return AccidentClip(
        clip_id=clip_id,
        kind="crash" if positive else "normal",
        fps=float(fps),
        n_frames=n_frames,
        toa=toa,
        source=path,
        npz=path,
        tracks=tracks,
        depth=depth,
        subset=_subset_of(path, root),
        feature_dim=None if data_shape is None else int(data_shape[2]),
    )


# --------------------------------------------------------------------------------------------------- DoTA


def read_dota(
    root: str | Path,
    strict: bool = False,
    fps: float = DOTA_FPS,
    min_frames: int = MIN_FRAMES,
    log: DropLog | None = None,
    frame_sizes: bool = True,
) -> list[AccidentClip]:
    """Clips of DoTA (Yao et al. 2020): ``<root>/annotations/<vid>.json`` per clip and frames under
    ``<root>/frames/<vid>/images/*.jpg``, or ``<root>/frames/<vid>/*.jpg`` as DoTA's ``video2frames.py`` writes
    them (10 fps). DoTA's ``metadata_train.json`` / ``metadata_val.json`` (its split lists: clip -> anomaly_start,
    num_frames, ..., without the per-frame objects) are not read: a set with only them is refused, naming them.

    Per-clip JSON keys used: ``num_frames``, ``anomaly_start`` (the contact frame, toa), ``anomaly_end``,
    ``anomaly_class`` (``"ego: turning"``, ``"other: pedestrian"``, ...), and ``labels``: one entry per frame with
    ``frame_id``, ``image_path`` (relative to ``root``) and ``objects`` (``obj_track_id``, ``bbox`` xyxy pixels,
    ``category``). Every DoTA clip holds an anomaly, so all are positives (``crash``); ``subset`` (train / test /
    val) is kept when the JSON has it. DoTA does not mark the involved objects (``involved`` empty).
    ``frame_sizes``: as :func:`read_ccd_entries`.
    """
    root = Path(root)
    log, own = DropLog.owned(log, strict)
    folder = root / "annotations"
    files = visible_files(folder, (".json",)) if folder.is_dir() else []
    if not files:
        lists = sorted(p.name for p in root.glob("metadata_*.json"))
        hint = (
            f"; {root} holds {' and '.join(lists)}: DoTA's split lists, without the per-frame objects this reader "
            f"takes: unpack DoTA's per-clip annotations (dataset/DoTA_annotations.zip of its repository) into {folder}"
            if lists else ""
        )
        raise FileNotFoundError(f"{folder}: no DoTA per-clip *.json annotations{hint}")
    clips, seen = [], {}
    with counting_hidden_files(root / "frames"):  # one count over every clip's frame folder
        for path in files:
            clip = _read_dota_clip(root, path, fps, min_frames, log, frame_sizes)
            if clip is None:
                continue
            if clip.clip_id in seen:
                raise LabelFormatError(path, None, f"video_name {clip.clip_id!r} also used by {seen[clip.clip_id]}")
            seen[clip.clip_id] = path
            clips.append(clip)
    if own:
        log.report(f"read_dota({root})")
    return clips


def _read_dota_clip(
    root: Path, path: Path, fps: float, min_frames: int, log: DropLog, frame_sizes: bool = True
) -> AccidentClip | None:
    try:
        meta = json.loads(path.read_text(encoding="utf-8-sig"))  # a byte-order mark read
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        log.add("bad_json", path, None, f"not valid JSON ({err})")
        return None
    missing = [k for k in ("anomaly_start", "num_frames", "labels") if k not in meta]
    if missing:
        log.add("bad_json", path, None, f"missing key(s) {missing} (expected DoTA's per-clip annotation)")
        return None
    vid = str(meta.get("video_name") or path.stem)
    numbers = {}
    for key in ("num_frames", "anomaly_start"):
        value = meta[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
            log.add("bad_json", path, None, f"{key} must be a whole number of frames, got {value!r}")
            return None
        numbers[key] = int(value)
    n_frames, labels = numbers["num_frames"], meta["labels"]
    if not isinstance(labels, list):
        log.add("bad_json", path, None, f"labels must be a list (one entry per frame), got {type(labels).__name__}")
        return None
    if len(labels) != n_frames:
        log.add("label_count", path, None, f"{len(labels)} frame labels but num_frames is {n_frames}")
        return None
    for t, entry in enumerate(labels):
        try:
            if not isinstance(entry, dict):
                raise LabelFormatError(
                    path, f"labels[{t}]", f"expected an object (frame_id, image_path, objects), got {entry!r}"
                )
            _json_int(entry.get("frame_id", t), path, f"frame_id {entry.get('frame_id')!r}")
        except LabelFormatError as err:
            log.add("bad_json", path, f"labels[{t}]", err.reason)
            return None
    toa = numbers["anomaly_start"]
    if not 0 <= toa < n_frames:
        log.add(
            "contact_frame",
            path,
            None,
            f"anomaly_start {toa} is past the clip's end (frames 0..{n_frames - 1})",
        )
        return None
    end = meta.get("anomaly_end")
    if isinstance(end, (int, float)) and not isinstance(end, bool) and end < toa:
        log.add("bad_json", path, None, f"anomaly_end {end} is before anomaly_start {toa}")
        return None
    frames, absent = [], []
    _, found_frames = locate_clip(root / "frames", vid, {})  # frames/<vid>/images/ or video2frames.py's <vid>/
    folder = found_frames[0].parent if found_frames else root / "frames" / vid / "images"
    by_stem = {p.stem: p for p in found_frames or []}
    for t, entry in enumerate(labels):
        # DoTA writes image_path relative to frames/ ("<vid>/images/000001.jpg"); relative to the root is read too,
        # and else the frame's number in the clip's frame folder in any image format (000001.JPG, .png)
        image = entry.get("image_path")
        named = [root / image, root / "frames" / image] if image else []
        found = next((c for c in named if c.is_file()), None) or by_stem.get(f"{int(entry.get('frame_id', t)):06d}")
        if found is None:
            numbered = folder / f"{int(entry.get('frame_id', t)):06d}.jpg"
            absent.append(f"image_path {image!r} (under {root} or {root / 'frames'})" if image else numbered)
        frames.append(found)
    if absent:
        log.add(
            "missing_clip", path, None, f"{len(absent)} of {n_frames} frames not found, e.g. {absent[0]} (expected "
            f"frames/{vid}/images/000000.jpg ..., or frames/{vid}/000000.jpg ...)",
        )  # fmt: skip
        return None
    if n_frames < min_frames:
        log.add("too_short", path, None, _too_short(n_frames, min_frames))
        return None
    tracks: dict[int, np.ndarray] = {}
    for t, entry in enumerate(labels):
        for obj in entry.get("objects") or []:
            tid = obj.get("obj_track_id", obj.get("trackID")) if isinstance(obj, dict) else None
            box = obj.get("bbox") if isinstance(obj, dict) else None
            if tid is None or not isinstance(box, list) or len(box) != 4:
                log.add(
                    "bad_json",
                    path,
                    f"labels[{t}]",
                    f"object needs obj_track_id and a 4-value bbox, got {obj}",
                )
                return None
            try:
                tid = _json_int(tid, path, f"obj_track_id {tid!r}")
            except LabelFormatError as err:
                log.add("bad_json", path, f"labels[{t}]", err.reason)
                return None
            if not _plausible_box(box):
                log.add(
                    "bad_json",
                    path,
                    f"labels[{t}]",
                    f"bbox {box} is not x1 <= x2, y1 <= y2 in pixels (at most {MAX_FRAME_SIDE} from the frame)",
                )
                return None
            tracks.setdefault(int(tid), np.full((n_frames, 4), np.nan, dtype=np.float32))[t] = box
    if not _frames_share_a_size(frames if frame_sizes else frames[:1], log):
        return None
    depth = {k: nearness_by_height(v) for k, v in tracks.items()}
    return AccidentClip(
        clip_id=vid,
        kind="crash",
        fps=float(fps),
        n_frames=n_frames,
        toa=toa,
        source=path,
        frames=frames,
        tracks=tracks,
        depth=depth,
        subset=meta.get("subset"),
        scenario=meta.get("anomaly_class"),
    )


def nearness_by_height(track: np.ndarray) -> float:
    """A track's nearness key without 3D positions (``AccidentClip.depth``: smaller is nearer): minus its mean
    box height over the frames it is seen in (0 when never seen)."""
    seen = np.isfinite(track).all(axis=1)
    return -float(np.mean(track[seen, 3] - track[seen, 1])) if seen.any() else 0.0


def _npz_id(value: np.ndarray) -> str:
    """A feature file's ``ID`` as text: numpy strings and bytes (``b'000001'``, as Python 2 era files store it)
    alike, so it matches its annotation line."""
    item = np.asarray(value).reshape(-1)[0].item()
    return item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)


def _json_int(value, path: Path, what: str, positive: bool = False) -> int:
    """An integer of a clip's JSON (a JSON key is a string: "7" is 7), else :class:`LabelFormatError` naming
    ``what``; a bool or a fraction is not one."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not number or value != int(value):
        raise LabelFormatError(path, None, f"{what} is not an integer")
    if positive and value <= 0:
        raise LabelFormatError(path, None, f"{what}: expected a positive integer")
    return int(value)


def _plausible_box(box) -> bool:
    """Finite xyxy pixels, x1 <= x2 and y1 <= y2, within :data:`MAX_FRAME_SIDE` of the frame's corner (boxes
    partly outside the frame are normal; 5e9 is a broken annotation)."""
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer of 400 digits
        return False
    values = (x1, y1, x2, y2)
    return all(math.isfinite(v) and abs(v) <= MAX_FRAME_SIDE for v in values) and x1 <= x2 and y1 <= y2


