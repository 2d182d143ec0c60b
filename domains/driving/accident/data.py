"""Accident-anticipation data: clips from the synthetic scenarios, CCD, UString / DSTA features or DoTA, split by
clip, decoded into the padded batch every accident model takes.

Batch (``collate_clips``, padded to the longest clip; B clips, T frames, N = ``max_objects`` slots):
``frames`` float32 (B, T, 3, H, W) in [0, 1] (absent for feature input), ``features`` float32 (B, T, D) and
``object_features`` float32 (B, T, N, D) (feature input only), ``boxes`` float32 (B, T, N, 4) xyxy pixels of the
model input (``box_scale`` float32 (B, 4): the x, y, x, y factors from the clip's own pixels), ``box_valid`` bool
(B, T, N), ``track_ids`` long (B, N) (-1: empty slot), ``frame_valid`` bool (B, T),
``toa`` long (B,) (contact frame, -1 for negatives), ``fps`` float32 (B,), ``involved`` bool (B, N), ``ttc`` float32
(B, T) (NaN where undefined), ``kind`` list[str], ``clip_id`` list[str]; ``source_frames`` long (B, T) (own clips
resampled to the model's rate: each frame's number in its video or folder; -1 on padding).

Object slots: per clip the ``max_objects`` tracks with the most visible frames (ties: nearest first), fixed for
the whole clip, so a recurrent model's slot n always follows one object.
"""

from __future__ import annotations

import itertools
import json
import math
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import Dataset

from domains.driving.accident.readers import (
    CCD_FPS,
    DAD_FPS,
    DAD_TOA,
    DOTA_FPS,
    FPS_TOLERANCE,
    KINDS,
    MIN_FRAMES,
    AccidentClip,
    CCDLayout,
    ccd_videos_folder,
    clips_of_one_frame_size,
    find_ccd_annotation,
    list_ccd_layout,
    nearness_by_height,
    read_ccd_entries,
    read_ccd_layout,
    read_dota,
    read_npz_clips,
    read_own_clips,
    read_video_frames,
)
from domains.driving.common import check_decodes, finished_data_path, read_rgb
from domains.driving.formats import DropLog, LabelFormatError, LabelWarning, image_size
from shared.data import SPLIT_NAMES, SplitLoaders, check_cap, stable_rank
from shared.files import counting_hidden_files, holding_generated_sets
from shared.shipped import WeightFileError
from shared.task import CheckpointMismatchError

DATA_FORMATS = ("synthetic", "ccd", "npz", "dota")
HELD_OUT_SUBSETS = ("test", "testing", "val")  # a split the source fixes (UString's testing/, DoTA's val)
#: the splits whose clips a stage reads (predict without --data.predict_path: the test clips); others: all
STAGE_READS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}


# ---------------------------------------------------------------------------------------------- slots


def select_slots(clip: AccidentClip, max_objects: int) -> list[int]:
    """Track ids of the clip's object slots: the ``max_objects`` tracks visible in the most frames, ties broken
    by nearness (``clip.depth``, smaller first), then by track id so the choice is deterministic."""
    visible = {tid: int(np.isfinite(arr[:, 0]).sum()) for tid, arr in clip.tracks.items()}
    order = sorted(
        (t for t, n in visible.items() if n > 0), key=lambda t: (-visible[t], clip.depth.get(t, 0.0), t)
    )
    return order[:max_objects]


# -------------------------------------------------------------------------------------------- dataset


class AccidentDataset(Dataset):
    """Decoded clips as dicts of per-clip tensors (the batch of the module docstring without the B axis).

    ``image_size`` (H, W): frames resized to it (cv2, area interpolation) and boxes scaled with them; None keeps
    the source size. For feature clips ``feature_image_size`` (H, W) is the size the ``det`` boxes refer to,
    scaled to ``image_size`` when given. ``clip_length`` with ``train``: a random window of that many frames
    (torch's RNG, so seeded per worker); a crash clip's window starts at or before its contact frame and keeps
    ``toa`` relative to its start, also when the contact lies past the window's end (the horizon targets are
    read from it, so early windows teach "no contact within 2 s yet" and no positive becomes a negative).
    Windows that always held the contact taught a shortcut: a crash window is one that ends in contact.
    ``hflip`` with ``train``: the probability of mirroring a sample left to right (frames and boxes; the
    traffic of a left-driving country, cut-ins and crossings from the other side), against overfitting a few
    hundred clips. Evaluation (``train`` false) always takes whole clips, unflipped.
    """

    def __init__(
        self,
        clips: Sequence[AccidentClip],
        image_size: tuple[int, int] | None = None,
        max_objects: int = 19,
        clip_length: int | None = None,
        train: bool = False,
        feature_image_size: tuple[int, int] | None = None,
        decode_frames: bool = True,
        hflip: float = 0.0,
    ):
        if not 0.0 <= hflip <= 1.0:
            raise ValueError(f"AccidentDataset: hflip must be a probability in [0, 1], got {hflip}")
        self.clips = list(clips)
        self.hflip = float(hflip)
        self.decode_frames = decode_frames
        self.image_size = tuple(image_size) if image_size else None
        self.max_objects = max_objects
        self.clip_length = clip_length
        self.train = train
        self.feature_image_size = tuple(feature_image_size) if feature_image_size else None
        self.slots = [select_slots(c, max_objects) for c in self.clips]

    def __len__(self) -> int:
        return len(self.clips)

    def window(self, clip: AccidentClip) -> tuple[int, int]:
        """``(start, stop)`` frame range of one sample."""
        length = self.clip_length
        if not self.train or length is None or clip.n_frames <= length:
            return 0, clip.n_frames
        low, high = 0, clip.n_frames - length
        if clip.toa >= 0:  # start at or before the contact: the contact may lie past the window's end
            high = min(clip.toa, high)
        start = int(torch.randint(low, high + 1, ()).item())
        return start, start + length

    @staticmethod
    def source_images(clip: AccidentClip, start: int, stop: int) -> list[np.ndarray]:
        """Frames [start, stop) as RGB uint8 (H, W, 3) at the source size, all of one size (else an error
        naming the frame)."""
        if clip.video is not None and clip.source_steps is not None:  # resampled: the steps' frames only
            wanted = [int(i) for i in clip.source_steps[start:stop]]
            decoded = read_video_frames(clip.video, start=wanted[0], stop=wanted[-1] + 1, keep=set(wanted))
            by_index = dict(zip(sorted(set(wanted)), decoded))
            images = [by_index[i] for i in wanted]
            paths = [clip.video] * len(images)
        elif clip.video is not None:
            images = read_video_frames(clip.video, expected=clip.n_frames, start=start, stop=stop)
            paths = [clip.video] * len(images)
        else:
            paths = clip.frames[start:stop]
            images = [read_rgb(p) for p in paths]
        source = images[0].shape[:2]
        if clip.size is not None and (clip.size[1], clip.size[0]) != source:
            raise LabelFormatError(
                paths[0],
                None,
                f"frame is {source[1]}x{source[0]} but the clip's annotation says "
                f"{clip.size[0]}x{clip.size[1]} (width x height)",
            )
        for path, image in zip(paths, images):
            if image.shape[:2] != source:
                raise LabelFormatError(
                    path,
                    None,
                    f"frame is {image.shape[1]}x{image.shape[0]} but frame {paths[0].name} of the same clip is "
                    f"{source[1]}x{source[0]} (frames of one clip must share a size)",
                )
        return images

    def _frames(self, clip: AccidentClip, start: int, stop: int) -> tuple[torch.Tensor, tuple[int, int]]:
        """Frames [start, stop) as float32 (T, 3, H, W) at ``image_size``, and the source (H, W)."""
        images = self.source_images(clip, start, stop)
        source = images[0].shape[:2]
        if self.image_size is not None and self.image_size != source:
            height, width = self.image_size
            images = [cv2.resize(im, (width, height), interpolation=cv2.INTER_AREA) for im in images]
        array = np.stack(images).transpose(0, 3, 1, 2)
        return torch.from_numpy(np.ascontiguousarray(array)).float().div_(255.0), source

    @staticmethod
    def _frame_size(clip: AccidentClip) -> tuple[int, int]:
        """The clip's frame (H, W) without decoding frames: its annotation's size, else the video's or the
        first image's header."""
        if clip.size is not None:
            return int(clip.size[1]), int(clip.size[0])
        if clip.video is not None:
            capture = cv2.VideoCapture(str(clip.video))
            try:
                size = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
            finally:
                capture.release()
            if min(size) < 1:
                raise LabelFormatError(clip.video, None, "cannot read the video's frame size")
            return size
        return image_size(clip.frames[0])  # the header only; an unreadable one is a LabelFormatError

    def __getitem__(self, i: int) -> dict:
        clip, slots = self.clips[i], self.slots[i]
        start, stop = self.window(clip)
        length, n = stop - start, self.max_objects
        item: dict = {}
        if clip.npz is not None:
            try:
                with np.load(clip.npz, allow_pickle=False) as npz:
                    data = np.asarray(npz["data"], dtype=np.float32)
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # e.g. a bad CRC in data.npy
                raise LabelFormatError(clip.npz, None, f"cannot read its data array ({err})") from None
            n_det = len(clip.tracks)
            if data.ndim != 3 or data.shape[0] != clip.n_frames or data.shape[1] != 1 + n_det:
                raise LabelFormatError(
                    clip.npz,
                    None,
                    f"data has shape {data.shape}, expected (T={clip.n_frames}, 1 + {n_det} objects, D) "
                    "to match det",
                )
            data = data[start:stop]
            item["features"] = torch.from_numpy(np.ascontiguousarray(data[:, 0]))
            objects = torch.zeros(length, n, data.shape[2])
            for k, tid in enumerate(slots):
                objects[:, k] = torch.from_numpy(data[:, 1 + tid])
            item["object_features"] = objects
            source = self.feature_image_size
        elif self.decode_frames:
            item["frames"], source = self._frames(clip, start, stop)
        else:  # a boxes-only network: the boxes are scaled from the frames' size, read from the first one only
            source = self._frame_size(clip)
        scale = np.ones(4, dtype=np.float32)
        width = None if source is None else source[1]  # of the frame the boxes end up in
        if source is not None and self.image_size is not None:
            sy, sx = self.image_size[0] / source[0], self.image_size[1] / source[1]
            scale = np.array([sx, sy, sx, sy], dtype=np.float32)
            width = self.image_size[1]
        boxes = np.zeros((length, n, 4), dtype=np.float32)
        valid = np.zeros((length, n), dtype=bool)
        for k, tid in enumerate(slots):
            track = clip.tracks[tid][start:stop]
            ok = np.isfinite(track).all(axis=1)
            boxes[ok, k] = track[ok] * scale
            valid[:, k] = ok
        track_ids = torch.full((n,), -1, dtype=torch.long)
        track_ids[: len(slots)] = torch.tensor(slots, dtype=torch.long)
        # precomputed appearance features cannot be mirrored (the data module refuses hflip for them)
        if (
            self.train
            and self.hflip > 0
            and width is not None
            and "features" not in item
            and torch.rand(()) < self.hflip
        ):
            boxes[..., [0, 2]] = np.where(valid[..., None], width - boxes[..., [2, 0]], 0.0)
            if "frames" in item:
                item["frames"] = item["frames"].flip(-1)
        involved = torch.zeros(n, dtype=torch.bool)
        for k, tid in enumerate(slots):
            involved[k] = tid in clip.involved
        ttc = clip.ttc[start:stop] if clip.ttc is not None else np.full(length, np.nan, dtype=np.float32)
        if clip.source_steps is not None:  # which frame of the source each one is (predict's CSVs say it)
            item["source_frames"] = torch.as_tensor(np.asarray(clip.source_steps[start:stop], dtype=np.int64))
        item.update(
            boxes=torch.from_numpy(boxes),
            box_scale=torch.from_numpy(scale),  # boxes / box_scale: the clip's own pixels (predict's objects.csv)
            box_valid=torch.from_numpy(valid),
            track_ids=track_ids,
            toa=clip.toa - start if clip.toa >= 0 else -1,
            fps=float(clip.fps),
            involved=involved,
            ttc=torch.as_tensor(np.asarray(ttc, dtype=np.float32)),
            kind=clip.kind,
            clip_id=clip.clip_id,
        )
        return item


def collate_clips(items: Sequence[dict]) -> dict:
    """Stack clips into the batch of the module docstring, padding time to the longest clip (``frame_valid``
    false on padding; padded boxes invalid, padded TTC NaN)."""
    if not items:
        raise ValueError("collate_clips: empty batch")
    lengths = [len(item["boxes"]) for item in items]
    batch, longest = len(items), max(lengths)

    def pad(key: str, fill) -> torch.Tensor:
        first = items[0][key]
        out = torch.full((batch, longest, *first.shape[1:]), fill, dtype=first.dtype)
        for b, item in enumerate(items):
            out[b, : lengths[b]] = item[key]
        return out

    for key in ("frames", "features", "object_features"):
        present = [key in item for item in items]
        if any(present) and not all(present):
            raise ValueError(f"collate_clips: '{key}' is in some clips of the batch but not in others")
    if "frames" in items[0]:
        shapes = {tuple(item["frames"].shape[1:]) for item in items}
        if len(shapes) > 1:
            raise ValueError(
                f"collate_clips: clips of one batch have frames of sizes {sorted(shapes)}; set data.image_size"
            )
    out = {key: pad(key, 0.0) for key in ("frames", "features", "object_features") if key in items[0]}
    out["boxes"] = pad("boxes", 0.0)
    out["box_valid"] = pad("box_valid", False)
    if all("box_scale" in item for item in items):
        out["box_scale"] = torch.stack([item["box_scale"] for item in items])
    out["ttc"] = pad("ttc", float("nan"))
    if all("source_frames" in item for item in items):
        out["source_frames"] = pad("source_frames", -1)
    out["frame_valid"] = torch.arange(longest)[None, :] < torch.tensor(lengths)[:, None]
    out["track_ids"] = torch.stack([item["track_ids"] for item in items])
    out["involved"] = torch.stack([item["involved"] for item in items])
    out["toa"] = torch.tensor([item["toa"] for item in items], dtype=torch.long)
    out["fps"] = torch.tensor([item["fps"] for item in items], dtype=torch.float32)
    out["kind"] = [item["kind"] for item in items]
    out["clip_id"] = [item["clip_id"] for item in items]
    return out


# ---------------------------------------------------------------------------------------------- splits


def split_clips(clips: Sequence, val_fraction: float, test_fraction: float, seed: int = 0) -> dict[str, list]:
    """Train / val / test by clip id, stratified by kind (crash, near miss, normal). ``clips``: anything with
    ``clip_id``, ``kind`` and ``subset`` (:class:`AccidentClip`, or a listing's not yet read ``CCDEntry``).

    Clips the source puts in a held-out subset (UString's ``testing/``, DoTA's ``val``) form the test split and
    the others are split into train / val; otherwise each kind is cut by ``val_fraction`` / ``test_fraction`` in a
    seeded order. A kind with at least 3 clips gets at least one clip in every split with a non-zero fraction.
    """
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction {val_fraction} and test_fraction {test_fraction} must be in [0, 1) and sum below 1"
        )
    ids = [c.clip_id for c in clips]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"clip ids must be unique to split by clip, repeated: {dupes[:5]}")
    splits: dict[str, list[AccidentClip]] = {"train": [], "val": [], "test": []}
    fixed = [c for c in clips if (c.subset or "").lower() in HELD_OUT_SUBSETS]
    pool = [c for c in clips if (c.subset or "").lower() not in HELD_OUT_SUBSETS]
    if fixed:
        splits["test"].extend(fixed)
        test_fraction = 0.0
    for kind in KINDS:
        group = sorted((c for c in pool if c.kind == kind), key=lambda c: stable_rank(c.clip_id, seed))
        n = len(group)
        n_test, n_val = round(test_fraction * n), round(val_fraction * n)
        if n >= 3:
            n_test = max(n_test, 1) if test_fraction > 0 else 0
            n_val = max(n_val, 1) if val_fraction > 0 else 0
        n_test, n_val = min(n_test, n), min(n_val, n - min(n_test, n))
        splits["test"].extend(group[:n_test])
        splits["val"].extend(group[n_test : n_test + n_val])
        splits["train"].extend(group[n_test + n_val :])
    return splits


def decodable_clips(clips: Sequence[AccidentClip], log: DropLog) -> list[AccidentClip]:
    """The clips whose frame files all decode whole (:func:`~domains.driving.common.check_decodes`, far cheaper
    than the decode that follows); a clip with one that does not goes to ``log`` (``unreadable_frame``, naming
    the file and why), and the others are kept. Frames are decoded only when a clip is read (the dataset's
    ``__getitem__``, or the detector's pass): one cut-short frame ended predict for every clip, after some had
    been written. Videos are checked as they are opened (``read_own_clips``)."""
    kept = []
    for clip in clips:
        try:
            for path in clip.frames or ():
                check_decodes(Path(path))
        except LabelFormatError as err:
            log.add("unreadable_frame", err.path, None, f"{err.reason}: clip {clip.clip_id} is not predicted")
        else:
            kept.append(clip)
    return kept


def split_breakdown(splits: dict[str, Sequence[AccidentClip]]) -> str:
    """Markdown table: clips, positives (crash), near misses and ordinary clips per split (near misses and ordinary
    clips are both negatives to the metrics: a column named "negatives" counted the ordinary ones alone)."""
    lines = ["| split | clips | positives | near misses | ordinary |", "|---|---:|---:|---:|---:|"]
    for name, clips in splits.items():
        counts = {k: sum(c.kind == k for c in clips) for k in KINDS}
        lines.append(
            f"| {name} | {len(clips)} | {counts['crash']} | {counts['near_miss']} | {counts['normal']} |"
        )
    return "\n".join(lines)


def generated_clips_fps() -> float:
    """The clip generator's default frame rate (what a model trained on ``synthetic: null`` saw)."""
    import inspect

    from domains.driving.synthetic.clips import generate_clips  # lazy: the generator is optional here

    return float(inspect.signature(generate_clips).parameters["fps"].default)


def training_fps(data: dict | None) -> tuple[float, str]:
    """The frame rate a model trained with these data settings (:class:`AccidentDataModule`'s hyper-parameters,
    as checkpoints store them) learnt at, and where it comes from (a phrase). The network counts frames (its
    motion lags are frame lags; the horizon targets were made at the training clips' rate), so a clip must
    reach it at this rate: generated clips at their ``synthetic.fps`` (the generator's default when unset), CCD
    / DoTA at their 10 fps, ``npz`` features at ``feature_fps``, a synthetic ``data_path`` at the ``fps`` of its
    first annotation. No settings: the default data module's (the generated clips)."""
    if not data:
        return generated_clips_fps(), "assumed: no training data recorded; the generated clips' default"
    data = dict(data)
    fmt = data.get("data_format") or "synthetic"
    if fmt == "npz":
        return float(data.get("feature_fps") or DAD_FPS), "the npz features' feature_fps"
    if fmt in ("ccd", "dota"):
        return (CCD_FPS if fmt == "ccd" else DOTA_FPS), f"{fmt.upper()} clips"
    if data.get("data_path"):
        for annotation in sorted((Path(data["data_path"]) / "annotations").glob("*.json"))[:1]:
            try:
                fps = float(json.loads(annotation.read_text(encoding="utf-8-sig")).get("fps"))
            except (OSError, ValueError, TypeError):
                break
            if math.isfinite(fps) and fps > 0:
                return fps, f"the training clips' annotation {annotation.name}"
        return generated_clips_fps(), f"assumed: the training clips in {data['data_path']} are not readable here"
    settings = dict(data.get("synthetic") or {})
    if settings.get("fps"):
        return float(settings["fps"]), "its generated training clips' synthetic.fps"
    return generated_clips_fps(), "its training clips, generated at the generator's default rate"


#: how far (a share of the side) an ``npz`` box may reach past ``--data.feature_image_size`` before it is warned
#: of: detectors clip their boxes to the frame, a box 1 % outside is rounding, one 60 % outside other pixels
BOX_BEYOND_FRAME = 0.01


def warn_boxes_beyond_frame(clips: Sequence[AccidentClip], size: Sequence[int]) -> int:
    """One :class:`LabelWarning` counting the clips whose boxes reach past ``size`` (H, W, the frame their boxes
    are said to be in: ``--data.feature_image_size``) by more than :data:`BOX_BEYOND_FRAME`: boxes in other
    pixels (1080p ``det`` read as 720p) are scaled to the wrong place, and the network learns from them without
    a word. Returns that count."""
    height, width = size
    beyond, reach = [], [0.0, 0.0]
    for clip in clips:
        if not clip.tracks:
            continue
        boxes = np.stack(list(clip.tracks.values()))  # NaN where a track is not in view
        if not np.isfinite(boxes).any():
            continue
        x2, y2 = float(np.nanmax(boxes[..., 2])), float(np.nanmax(boxes[..., 3]))
        if x2 > width * (1 + BOX_BEYOND_FRAME) or y2 > height * (1 + BOX_BEYOND_FRAME):
            beyond.append(clip.source)
            reach = [max(reach[0], x2), max(reach[1], y2)]
    if beyond:
        warnings.warn(
            f"{len(beyond)} of {len(clips)} clips have boxes beyond --data.feature_image_size [{height}, {width}] "
            f"(height, width): up to x2 = {reach[0]:g}, y2 = {reach[1]:g} (e.g. {beyond[0]}). Their det boxes are "
            "in the pixels of larger frames: set --data.feature_image_size to the size of the frames the features "
            "were extracted from (boxes are scaled from it to --data.image_size)",
            LabelWarning,
            stacklevel=3,
        )
    return len(beyond)


#: how far a clip's width:height may differ (as a ratio) from a boxes-only network's input frame before the
#: demo and ``predict`` warn. Boxes are scaled to ``image_size`` in x and y apart, so a clip of another shape
#: gives every box another shape and motion than the network learnt: 16:9 clips' boxes, squeezed 2x in height
#: into the 3.5:1 frame, lost 3 of the 10 alarms the same test crash clips raised at the training shape (12
#: clips, edge-padded to 16:9)
BOX_SHAPE_TOLERANCE = 1.15


def squeezed_boxes(width: int, height: int, input_size: Sequence[int], input_kind: str) -> str | None:
    """What a clip of ``width`` x ``height`` pixels does to a boxes-only network (``input_kind`` boxes) whose
    frame is ``input_size`` (H, W), in words for a warning ("the objects' boxes are squeezed 2.0x in height
    ...: expect missed and late alarms ..."); None for a network reading frames or features, or a shape within
    :data:`BOX_SHAPE_TOLERANCE`. The one rule of the demo page's upload warning and ``predict``'s
    (:func:`own_clip_shape_warnings`)."""
    in_h, in_w = input_size
    squeeze = (in_w / in_h) / (width / height)
    if input_kind != "boxes" or abs(math.log(squeeze)) <= math.log(BOX_SHAPE_TOLERANCE):
        return None
    how = "squeezed" if squeeze > 1 else "stretched"
    return (
        f"the objects' boxes are {how} {max(squeeze, 1 / squeeze):.1f}x in height against what it learnt: "
        "expect missed and late alarms. A clip cropped to the road band at about "
        f"{in_w / in_h:.1f}:1 is closer to what it learnt"
    )


def own_clip_shape_warnings(
    clips: Sequence[AccidentClip],
    input_size: Sequence[int],
    input_kind: str,
    listed: int = 5,
    option: str = "--data.predict_path",
) -> list[str]:
    """Warnings for clips (``predict``'s own ones, ``--data.predict_path``; or a data set's, named by ``option``)
    whose frames are of another shape than a boxes-only network's input frame (:func:`squeezed_boxes`): one per
    frame size, naming its clips (the first ``listed``). Reads each clip's size from its video's or first frame's
    header."""
    if input_kind != "boxes":
        return []
    by_size: dict[tuple[int, int], list[str]] = {}
    for clip in clips:
        height, width = AccidentDataset._frame_size(clip)
        by_size.setdefault((width, height), []).append(clip.clip_id)
    in_h, in_w = input_size
    found = []
    for (width, height), names in by_size.items():
        if (what := squeezed_boxes(width, height, input_size, input_kind)) is None:
            continue
        more = f" and {len(names) - listed} more" if len(names) > listed else ""
        which = f"clip {names[0]}"
        if len(names) > 1:
            which = f"{len(names)} clips ({', '.join(names[:listed])}{more})"
        found.append(
            f"{option} {which}: {width}x{height} frames ({width / height:.2f}:1), but the network "
            f"reads only the objects' boxes, scaled to its {in_w}x{in_h} input frame ({in_w / in_h:.2f}:1), "
            f"so {what}."
        )
    return found


# ---------------------------------------------------------------------------------------------- module


class AccidentDataModule(SplitLoaders):
    """Dashcam clips for accident anticipation, split by clip.

    ``python -m ... fit --help`` lists these as ``--data.*``.

    Args:
        data_format: ``synthetic`` (the generated scenario clips, CCD layout + ``annotations/<vid>.json``), ``ccd``
            (``Crash-1500.txt`` + ``videos/{Crash-1500,Normal}/<vid>.mp4`` or frame folders; no boxes), ``npz``
            (UString / DSTA feature files: ``features`` / ``object_features`` instead of frames) or ``dota``
            (``annotations/<vid>.json`` + ``frames/<vid>/images/*.jpg`` or ``frames/<vid>/*.jpg``).
        data_path: the data set's root; null (synthetic only): generated on first use under data/driving_accident.
        synthetic: settings of the clip generator (n_clips, size, fps, seconds, seed, shares) when data_path is null;
            ``size`` is (width, height) in pixels, as the generator's ``--width --height`` (``image_size`` is [H, W]).
        image_size: [H, W] frames are resized to (boxes scaled with them); also the network's input size (the
            CLI links it), by which it normalises box positions, so it must be set.
        max_objects: object slots per clip (UString's 19): the tracks visible longest, fixed per clip.
        val_fraction: share of each kind's clips for validation.
        test_fraction: share of each kind's clips for test (ignored when the source fixes a test subset).
        split_seed: seed of the clip split.
        batch_size: clips per batch.
        num_workers: loader processes; null: one less than the CPU cores, at most 4.
        clip_length: frames per training sample (a random window starting at or before a crash clip's contact frame); null:
            whole clips. A training clip shorter than this is bad input (left out of training and counted, or
            raised with strict); validation and test take whole clips, of any length, so their metrics do not
            change with it.
        strict: a bad clip raises, naming its file (and line); false: it is left out and counted in one warning.
        feature_fps: frame rate of ``npz`` features (DAD 20, CCD 10).
        feature_toa: contact frame of positive ``npz`` clips without a ``toa`` key or annotation line (DAD: 90).
        feature_annotation: CCD's ``Crash-1500.txt`` for ``npz`` features: each positive clip's contact frame is
            its ``ID``'s first frame labelled 1 (UString's CCD files have no ``toa``); null: looked for in
            data_path, data_path/videos and the folder above (UString's layout), else ``feature_toa`` for all.
        feature_image_size: [H, W] of the frames the ``npz`` ``det`` boxes refer to (DAD / CCD: 720 x 1280);
            boxes beyond it are warned of.
        max_clips: read at most this many clips, the first of each kind (by id) in turn (smoke tests).
        train_frames: decode the clips' frames for the network; false for a network that reads only boxes
            (``input_kind: boxes``): its training, validation and test loaders then read no image, several
            times faster on a CPU (predict still decodes the test clips' frames, for its GIFs).
        hflip: probability of mirroring a training clip left to right (frames and boxes); 0: never. Not for
            ``npz`` features (a precomputed appearance vector cannot be mirrored).
        predict_path: ``predict`` on your own clips instead of the test split: a video, a folder of frames, or a
            folder of videos and frame folders (``read_own_clips`` in readers.py); no labels. Read at the training
            clips' frame rate (``training_fps``), resampled from their own.
        predict_fps: frame rate of ``predict_path``'s frame folders (videos say their own).
        predict_detector: a road detector's checkpoint (``python -m domains.driving.detection fit``), or shipped
            weights with their model card (``apps/weights/driving_detection.safetensors``), that finds
            the objects of ``predict_path``'s clips, linked into tracks by IoU
            (``detect_and_track`` in tracking.py): what a network reading boxes needs
            (own clips come without tracks). Runs once per frame the model reads.
        predict_detector_threshold: the detector's score above which a box is an object; null: the detector's
            ``predict_score_thresh`` (its fitted operating point, the card's for shipped weights).
    """

    SPLIT_SETTINGS = ("split_seed", "val_fraction", "test_fraction")
    INPUT_SETTINGS = ("image_size",)

    def __init__(
        self,
        data_format: Literal["synthetic", "ccd", "npz", "dota"] = "synthetic",
        data_path: str | None = None,
        synthetic: dict | None = None,
        image_size: tuple[int, int] | None = (96, 320),
        max_objects: int = 19,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_seed: int = 0,
        batch_size: int = 4,
        num_workers: int | None = None,
        clip_length: int | None = None,
        strict: bool = False,
        feature_fps: float = DAD_FPS,
        feature_toa: int = DAD_TOA,
        feature_annotation: str | None = None,
        feature_image_size: tuple[int, int] = (720, 1280),
        max_clips: int | None = None,
        train_frames: bool = True,
        hflip: float = 0.0,
        predict_path: str | None = None,
        predict_fps: float | None = None,
        predict_detector: str | None = None,
        predict_detector_threshold: float | None = None,
    ):
        super().__init__()
        if image_size is None:
            raise ValueError(
                "AccidentDataModule: image_size must be [height, width] in pixels, not null: the "
                "network reads box positions relative to it (data.image_size is linked to its input_size)"
            )
        if data_format not in DATA_FORMATS:
            raise ValueError(
                f"AccidentDataModule: data_format must be one of {DATA_FORMATS}, got {data_format!r}"
            )
        if data_path is None and data_format != "synthetic":
            raise ValueError(
                f"AccidentDataModule: data_format {data_format!r} needs data_path (the data set's root)"
            )
        if synthetic is not None and data_path is not None:
            raise ValueError(
                "AccidentDataModule: synthetic settings are for generated data; data_path is set"
            )
        if max_objects < 1:
            raise ValueError(f"AccidentDataModule: max_objects must be >= 1, got {max_objects}")
        if clip_length is not None and clip_length < MIN_FRAMES:
            raise ValueError(f"AccidentDataModule: clip_length must be >= {MIN_FRAMES}, got {clip_length}")
        if image_size is not None and (len(image_size) != 2 or min(image_size) < 1):
            raise ValueError(
                f"AccidentDataModule: image_size must be [H, W] of positive sizes, got {image_size}"
            )
        if not feature_fps > 0:
            raise ValueError(f"AccidentDataModule: feature_fps must be > 0, got {feature_fps}")
        if not 0.0 <= hflip <= 1.0:
            raise ValueError(f"AccidentDataModule: hflip must be a probability in [0, 1], got {hflip}")
        if hflip > 0 and data_format == "npz":
            raise ValueError(
                "AccidentDataModule: hflip needs frames; npz features cannot be mirrored (set hflip 0)"
            )
        if predict_path is None and (predict_detector is not None or predict_fps is not None):
            raise ValueError(
                "AccidentDataModule: predict_detector and predict_fps are for --data.predict_path (own clips); the "
                "data set's clips have their own tracks and rate"
            )
        if predict_detector_threshold is not None and not 0 <= predict_detector_threshold <= 1:
            raise ValueError(
                f"AccidentDataModule: predict_detector_threshold is a detector score in [0, 1], got "
                f"{predict_detector_threshold}"
            )
        if predict_fps is not None and not (math.isfinite(predict_fps) and predict_fps > 0):
            raise ValueError(f"AccidentDataModule: predict_fps must be a frame rate > 0, got {predict_fps}")
        split_clips([], val_fraction, test_fraction)  # checks the fractions now, naming them
        self.save_hyperparameters()
        self.data_format = data_format
        self.data_path = data_path
        self.synthetic = dict(synthetic or {})
        self.image_size = tuple(image_size) if image_size else None
        self.max_objects = max_objects
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.split_seed = self.seed = split_seed
        self.set_loader_options(batch_size, num_workers)
        self.clip_length = clip_length
        self.strict = strict
        self.feature_fps, self.feature_toa = float(feature_fps), int(feature_toa)
        self.feature_annotation = feature_annotation
        self.feature_image_size = tuple(feature_image_size)
        self.max_clips = check_cap(max_clips, "--data.max_clips")
        self.train_frames = bool(train_frames)
        self.hflip = float(hflip)
        self.predict_path, self.predict_fps = predict_path, predict_fps
        self.predict_detector, self.predict_detector_threshold = predict_detector, predict_detector_threshold
        self.splits: dict[str, list[AccidentClip]] = {}
        self.datasets: dict[str, AccidentDataset] = {}
        self.dropped: DropLog | None = None
        self.layout: CCDLayout | None = None  # a CCD-layout root's listing (list_ccd_layout)
        self.planned: dict[str, list] | None = None  # each split's clips (or listed entries) before any is read
        self._sizes_checked: set[str] = set()  # splits read with every frame's size checked
        self.too_short: tuple[int, int] = (0, 0)  # training clips under clip_length: (left out, longest's frames)

    def root(self) -> Path:
        """The data set's root: ``data_path``, or the synthetic clips (generated on first use)."""
        if self.data_path is not None:
            path = finished_data_path(self.data_path)
            if not path.exists():
                raise FileNotFoundError(f"{path}: data_path does not exist")
            return path
        from domains.driving.synthetic.clips import clips_root, ensure_synthetic_clips  # lazy: optional
        from domains.driving.synthetic.writers import UnknownSettingError

        # other settings, another folder: a 400-clip set must not replace the default 200
        try:
            return Path(ensure_synthetic_clips(clips_root(**self.synthetic), **self.synthetic))
        except UnknownSettingError as err:  # a misspelt setting: its bare traceback named no option
            raise ValueError(f"--data.synthetic {self.synthetic}: {err}") from err

    def prepare_data(self) -> None:
        if self.data_path is None and not self.predicting_own_images():
            self.root()

    def read_clips(self, frame_sizes: bool = True) -> list[AccidentClip]:
        """Every readable clip of the source, sorted by id (bad ones raise or are counted in ``self.dropped``).
        Clips of any length from :data:`MIN_FRAMES` on: ``clip_length`` is left to :meth:`training_clips`.
        ``frame_sizes`` false: frame folders are not checked for frames of mixed sizes (``read_ccd_entries``)."""
        root = self.root()
        log = DropLog(strict=self.strict)
        if self.data_format in ("synthetic", "ccd"):
            clips = read_ccd_layout(
                root,
                require_json=self.data_format == "synthetic",
                min_frames=MIN_FRAMES,
                log=log,
                frame_sizes=frame_sizes,
            )
        elif self.data_format == "npz":
            annotation = self.feature_annotation
            if annotation is not None and not Path(annotation).is_file():
                raise FileNotFoundError(f"--data.feature_annotation {annotation}: no such file")
            if annotation is None and (found := find_ccd_annotation(root)) is not None:
                annotation = found
                rank_zero_info(f"npz contact frames from {found} (set --data.feature_annotation to choose)")
            if annotation is not None and self.feature_fps != CCD_FPS:
                warnings.warn(
                    f"{annotation}: CCD clips are {CCD_FPS:g} fps, but --data.feature_fps is {self.feature_fps:g}: "
                    f"lead times and horizons are read at {self.feature_fps:g} fps (set --data.feature_fps "
                    f"{CCD_FPS:g} for CCD's features)",
                    LabelWarning,
                    stacklevel=2,
                )
            clips = read_npz_clips(
                root, self.feature_fps, self.feature_toa, min_frames=MIN_FRAMES, log=log, annotation=annotation
            )
            warn_boxes_beyond_frame(clips, self.feature_image_size)
        else:
            clips = read_dota(root, min_frames=MIN_FRAMES, log=log, frame_sizes=frame_sizes)
        log.report(f"AccidentDataModule({self.data_format}, {root})", stacklevel=3)
        self.dropped = log
        if not clips:
            raise ValueError(f"{root}: no readable {self.data_format} clips ({log.summary()})")
        return self.capped(clips)

    def capped(self, clips: Sequence) -> list:
        """``clips`` (or a listing's entries) sorted by id, at most ``max_clips`` of them: the first of each kind
        in turn (CCD's normal_* ids sort last, and a smoke run of crash clips alone has no negative to choose
        its alarm threshold on)."""
        clips = sorted(clips, key=lambda c: c.clip_id)
        if self.max_clips is None:
            return clips
        by_kind = [[c for c in clips if c.kind == kind] for kind in KINDS]
        taken = [c for turn in itertools.zip_longest(*by_kind) for c in turn if c is not None]
        return sorted(taken[: self.max_clips], key=lambda c: c.clip_id)

    def _read_splits(self, names: Sequence[str], frame_sizes: bool) -> list[str]:
        """Choose the split (once), then read the clips of the splits ``names`` that are not read yet into
        ``self.splits``; returns those names. ``frame_sizes``: as :meth:`read_clips`.

        A CCD-layout root (synthetic, ccd) is split by its listing (``list_ccd_layout``: ids and kinds; the split
        its clips read whole had), then only the clips of ``names`` are read: a ``validate`` read all 200 clips
        of the generated set for the 30 it scores, a ``predict`` of 2 clips spent 6.5 s in it. A listed clip that
        fails to read is left out of its split (counted, or raised with ``strict``); the others keep theirs. npz
        and DoTA keep each clip's id, kind and subset inside its own file: their clips are all read at once."""
        root = self.root()
        if self.data_format not in ("synthetic", "ccd"):
            if self.planned is not None:
                return []
            self.planned = split_clips(
                self.read_clips(frame_sizes), self.val_fraction, self.test_fraction, self.split_seed
            )  # counted in self.dropped
            self._sizes_checked = set(SPLIT_NAMES) if frame_sizes else set()
            self.splits = {name: list(clips) for name, clips in self.planned.items()}
            self.splits["train"] = self.training_clips(self.splits["train"])
            return list(SPLIT_NAMES)
        log = DropLog(strict=self.strict)
        with counting_hidden_files(ccd_videos_folder(root)):  # the listing's and the reads' hidden files: one count
            if self.planned is None:
                self.layout = list_ccd_layout(root, require_json=self.data_format == "synthetic", log=log)
                if not self.layout.entries:
                    log.report(f"AccidentDataModule({self.data_format}, {root})", stacklevel=3)
                    raise ValueError(f"{root}: no readable {self.data_format} clips ({log.summary()})")
                entries = self.capped(self.layout.entries)
                self.planned = split_clips(entries, self.val_fraction, self.test_fraction, self.split_seed)
            new = [name for name in names if name not in self.splits]
            for name in new:
                self.splits[name] = read_ccd_entries(
                    self.layout, self.planned[name], min_frames=MIN_FRAMES, log=log, frame_sizes=frame_sizes
                )
                if frame_sizes:
                    self._sizes_checked.add(name)
        # stacklevel 3: setup's line; 4 was Lightning's call.py, whose own warning format then printed the
        # suite's message as Lightning's ("call.py:199: AccidentDataModule(...): dropped ...")
        log.report(f"AccidentDataModule({self.data_format}, {root})", stacklevel=3)
        self._count_dropped(log)
        if empty := [name for name in new if self.planned[name] and not self.splits[name]]:
            raise ValueError(
                f"{root}: none of the {len(self.planned[empty[0]])} clips of the {empty[0]} split can be read "
                f"({log.summary()})"
            )
        if "train" in new:
            self.splits["train"] = self.training_clips(self.splits["train"])
        return new

    def _count_dropped(self, log: DropLog) -> None:
        """Add what ``log`` counted to ``self.dropped``."""
        if self.dropped is None:
            self.dropped = log
        elif log is not self.dropped:
            self.dropped.merge(log)

    def training_clips(self, clips: list[AccidentClip]) -> list[AccidentClip]:
        """The training split without clips shorter than ``clip_length`` (its windows are that long), left out and
        counted in ``self.dropped`` (raised with ``strict``). Validation and test keep them: they take whole
        clips, so their metrics do not change with a training setting."""
        if not self.clip_length:
            return clips
        log = DropLog(strict=self.strict)
        for clip in clips:
            if clip.n_frames < self.clip_length:
                log.add(
                    "too_short", clip.source, None, f"clip has {clip.n_frames} frames, fewer than the training window "
                    f"--data.clip_length {self.clip_length}: left out of training (validation and test take it)",
                )  # fmt: skip
        log.report(f"AccidentDataModule({self.data_format}) training split", stacklevel=3)
        if self.dropped is not None:
            self.dropped.merge(log)
        kept = [clip for clip in clips if clip.n_frames >= self.clip_length]
        self.too_short = (len(clips) - len(kept), max((clip.n_frames for clip in clips), default=0))
        return kept

    def check_training_window(self, stage: str | None) -> None:
        """Refuse a ``fit`` whose training split :meth:`training_clips` emptied (every clip shorter than
        ``clip_length``), naming the window and the longest clip: the split fractions cannot fill it."""
        dropped, longest = self.too_short
        if stage == "fit" and dropped and not self.splits.get("train"):
            raise ValueError(
                f"AccidentDataModule({self.data_format}, {self.root()}): `fit` has no training clip: all {dropped} "
                f"clips of the train split are shorter than the training window --data.clip_length "
                f"{self.clip_length} (the longest has {longest} frames): set --data.clip_length <= {longest}, or "
                "add longer clips"
            )

    def _split_label(self, name: str) -> str:
        """Split ``name``'s row in the split table: marked when not read, or when clips under ``clip_length``
        were left out of it (:meth:`training_clips`)."""
        if name not in self.splits:
            return f"{name} (not read)"
        if name == "train" and self.too_short[0]:
            return f"train ({self.too_short[0]} left out: shorter than --data.clip_length {self.clip_length})"
        return name

    GROUP_UNIT = "clips"

    def split_groups(self, name: str) -> set[str] | None:
        """The clip ids of split ``name``, for the checkpoint's leak check (clips added since a fit move the cut)."""
        clips = self.splits.get(name)
        return None if clips is None else {clip.clip_id for clip in clips}

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict" and self.predict_path is not None:
            if "predict" not in self.datasets:
                fps, why = training_fps(dict(self.hparams))
                log = DropLog(strict=self.strict)
                clips = read_own_clips(self.predict_path, fps, self.predict_fps, log=log)
                if self.predict_detector is None:  # the detector's pass reads every frame and drops such clips
                    clips = decodable_clips(clips, log)
                if clips:
                    count = f"{len(clips)} clip{'s' * (len(clips) != 1)}"
                    rank_zero_info(f"--data.predict_path: {count}, read at {fps:g} fps ({why})")
                    self.own_clips_fps = fps
                    if self.predict_detector is not None:
                        clips = self._detect_tracks(clips, log)
                log.report(f"--data.predict_path {self.predict_path}", stacklevel=2)
                if not clips:
                    raise ValueError(f"--data.predict_path {self.predict_path}: none of its clips can be read")
                self.splits = {"predict": clips}  # what the task checks its input kind against
                self.datasets["predict"] = self._dataset(clips, train=False, decode_frames=True)
            return
        stage = getattr(stage, "value", stage)  # Lightning passes a TrainerFn (its hash is not its value's)
        # frames are decoded by a network that reads them, and by predict for its GIFs, read or not
        decoded = self.train_frames or stage in ("predict", None)
        with holding_generated_sets():  # a --force run waits for the listing, not the run: never half a set
            read = self._read_splits(STAGE_READS.get(stage, SPLIT_NAMES), frame_sizes=decoded)
        if read:
            shown = {self._split_label(name): self.splits.get(name, clips) for name, clips in self.planned.items()}
            rank_zero_info(f"accident clips ({self.data_format}), split by clip:\n{split_breakdown(shown)}")
        for name in (name for name in SPLIT_NAMES if name in self.splits and name not in self.datasets):
            # a boxes-only network reads no pixel in validation and test either: decoding them cost ~80 % of a
            # validation epoch
            self.datasets[name] = self._dataset(
                self.splits[name], train=name == "train", decode_frames=self.train_frames
            )
        if decoded and not self.train_frames and "predict" not in self.datasets:  # the test clips, for the GIFs
            clips = self.splits["test"]
            if "test" not in self._sizes_checked:  # read for a stage that decodes none of their frames
                log = DropLog(strict=self.strict)
                clips = clips_of_one_frame_size(clips, log)
                log.report(f"AccidentDataModule({self.data_format}) test split, decoded by predict", stacklevel=2)
                self._count_dropped(log)
            self.datasets["predict"] = self._dataset(clips, train=False, decode_frames=True)
        self.check_training_window(stage)
        self.check_splits(
            {name: self.splits.get(name, clips) for name, clips in self.planned.items()}, stage,
            "set --data.val_fraction / --data.test_fraction, or add clips (a source's own training / testing "
            "folders fix its split)",
        )  # fmt: skip
        if stage == "fit" and not any(c.is_positive for c in self.splits["train"]):
            dropped = f"; dropped: {self.dropped.summary()}" if self.dropped and self.dropped.total else ""
            raise ValueError(
                f"{self.root()}: the training split holds no crash clip ({len(self.splits['train'])} clips, all "
                f"negatives), so there is nothing to anticipate{dropped}"
            )

    def check_checkpoint_rate(self, trained: dict | None, source: str = "the checkpoint") -> None:
        """Own clips were read at this command's training rate (:func:`training_fps` of its data settings): a
        checkpoint that learnt at another one (fitted with other data settings) is refused, naming both, before
        any clip is predicted at the wrong rate."""
        fps = getattr(self, "own_clips_fps", None)
        if fps is None or not trained:
            return
        learnt, why = training_fps(trained)
        if abs(learnt - fps) > FPS_TOLERANCE * learnt:
            raise ValueError(
                f"{source} learnt at {learnt:g} fps ({why}), but this command's data settings read own clips at "
                f"{fps:g} fps: predict with the config the checkpoint was fitted with (its data settings)"
            )

    def _detect_tracks(self, clips: list[AccidentClip], log: DropLog | None = None) -> list[AccidentClip]:
        """Give own clips the tracks of ``predict_detector``'s boxes, found in the frames the model reads (on the
        trainer's device); the clips whose frames read. One that does not (a frame that fails to decode, a size
        that changes) goes to ``log`` (None: one reported here), naming the file, and the others are predicted."""
        from domains.driving.accident.tracking import detect_and_track
        from domains.driving.detection.predict import detect_objects
        from domains.driving.detection.task import DetectionTask

        log, own = DropLog.owned(log, self.strict)

        path = Path(self.predict_detector)
        if not path.is_file():
            raise FileNotFoundError(
                f"--data.predict_detector {path}: no such file (a detection .ckpt, or shipped .safetensors weights)"
            )
        try:  # a checkpoint, or shipped weights with their model card (its fitted operating point too)
            detector = DetectionTask.load_checked(path)
        except CheckpointMismatchError as err:  # it named the accident task's own option
            raise CheckpointMismatchError(f"--data.predict_detector: {err}") from None
        except WeightFileError as err:  # shipped weights that do not match their card
            raise WeightFileError(f"--data.predict_detector: {err}") from None
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            detector.to(trainer.strategy.root_device)
        threshold = self.predict_detector_threshold
        threshold = float(detector.predict_score_thresh if threshold is None else threshold)
        kept = []
        for clip in clips:
            try:
                frames = AccidentDataset.source_images(clip, 0, clip.n_frames)
            except LabelFormatError as err:
                log.add("unreadable_frame", err.path, err.line, f"{err.reason}: clip {clip.clip_id} is not predicted")
                continue
            kept.append(clip)
            found = detect_and_track(
                lambda frame: detect_objects(detector.model, frame),
                frames,
                threshold,
                self.max_objects,
                detector.hparams.class_names,
            )
            rank_zero_info(
                f"{clip.clip_id}: {found['detections']} boxes scoring >= {threshold:g} in {len(frames)} frames, "
                f"{found['tracks']} tracks"
            )
            for slot in np.flatnonzero(found["track_ids"] >= 0):
                boxes = np.where(found["box_valid"][:, slot, None], found["boxes"][:, slot], np.nan)
                clip.tracks[int(found["track_ids"][slot])] = boxes.astype(np.float32)
                clip.depth[int(found["track_ids"][slot])] = nearness_by_height(boxes)
        if own:
            log.report(f"--data.predict_path {self.predict_path}", stacklevel=2)
        return kept

    def _dataset(self, clips: list[AccidentClip], train: bool, decode_frames: bool) -> AccidentDataset:
        """One split's clips with this module's settings."""
        return AccidentDataset(
            clips,
            self.image_size,
            self.max_objects,
            self.clip_length,
            train=train,
            feature_image_size=self.feature_image_size if self.data_format == "npz" else None,
            decode_frames=decode_frames,
            hflip=self.hflip,
        )

    collate_fn = staticmethod(collate_clips)
