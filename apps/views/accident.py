"""Driving page: accident risk over a dashcam clip (issue #18): the risk curve per horizon, the alarm moment
at an adjustable threshold, which object it is about, and the annotated clip."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import streamlit as st

from apps import demo_models as dm
from apps import page_common as pc
from apps import uploads as up
from domains.driving.accident.predict import frame_time

ACCIDENT, DETECTION = "driving_accident", "driving_detection"
SYNTHETIC, UPLOAD = "Synthetic clip", "Upload a video or a zip of frames"
UPLOAD_KEY = "accident_upload"  # the file uploader's; what its clip gives is kept under it (pc.upload_memo)


# ------------------------------------------------------------------------------------------------ caching


@st.cache_resource(show_spinner="Listing the clips ...", max_entries=4)
def _entries(root: str, bundled: bool, stamp: float) -> list[dm.ClipEntry]:
    """The clips of a synthetic-layout root (the default test split of a generated set; every bundled one),
    listed, not read. ``stamp`` (the annotation file's mtime) makes a regenerated set reload."""
    return dm.accident_clip_entries(root, bundled=bundled, test_only=not bundled)


@st.cache_resource(show_spinner="Decoding the clip ...", max_entries=4)
def _synthetic_clip(root: str, clip_id: str, stamp: float) -> dict:
    """``stamp``: the set's annotation mtime, so a regenerated set is read again."""
    return dm.load_accident_clip(root, clip_id)


# An upload's frames, tracks and risks are kept in its session (pc.upload_memo), not in st.cache_*: those are
# shared by every session of the server process and kept them after the session ended. Kept, never copied on a
# rerun (the frames are large); callers never modify them.


def _decode(digest: str, name: str, model_fps: float | None, data: bytes) -> up.FrameClip:
    """A video faster than ``model_fps`` keeps only the frames the model reads (and counts only those)."""
    return pc.upload_memo(
        UPLOAD_KEY,
        "clip",
        (digest, name, model_fps),
        lambda: up.decode_clip(data, name, model_fps=model_fps),
        spinner="Decoding the upload ...",
    )


def _detect(token: str, digest: str, threshold: float, steps: tuple[int, ...], frames: np.ndarray) -> dict:
    """The detector's tracks in the frames the model reads, ``steps`` (a third of a 30 fps clip's for a 10 fps
    model: :func:`dm.detect_clip_objects`; keyed by the steps, not the rate: 29.97 and 30 fps read the same
    frames), held on the frames between, once per upload and setting (a rerun reuses them)."""
    make = lambda: _tracks(threshold, steps, frames)
    return pc.upload_memo(UPLOAD_KEY, "tracks", (token, digest, threshold, steps), make, max_entries=4)


def _tracks(threshold: float, steps: tuple[int, ...], frames: np.ndarray) -> dict:
    """:func:`_detect`'s work, with a progress bar over the frames detected (about a second a frame on 2 CPU
    cores), made and emptied in here."""
    total = len(steps)
    which = "" if total == len(frames) else f" (of {len(frames)}: the ones the model reads)"
    bar = st.progress(0.0, text=f"Detecting objects in {total} frames{which} ...")
    every = max(1, total // 20)  # about 20 updates, not one per frame

    def progress(done: int, _: int) -> None:
        if done % every == 0 or done == total:
            of = f"frame {done} of {total}" if not which else f"{done} of the {total} frames the model reads"
            bar.progress(done / total, text=f"Detecting objects: {of}")

    try:
        detector = pc.load_model(DETECTION)
        return dm.detect_clip_objects(detector, frames, threshold, progress=progress, steps=np.asarray(steps))
    finally:
        bar.empty()  # a detector failure leaves no half-full bar beside its warning


@st.cache_data(max_entries=4, show_spinner=False)
def _model_fps(token: str, path: str) -> tuple[float, str]:
    """The frame rate the accident model learnt at and where that comes from (card or checkpoint)."""
    return dm.accident_model_fps(path)


PREDICTING = "Running the anticipator over the clip ..."


# cache_resource for the examples (shared, not copied on every rerun: the frames are large); an upload's in its
# session. Callers never modify the results.
@pc.per_upload(UPLOAD_KEY, lambda: source == UPLOAD, st.cache_resource, 8, PREDICTING, kept=4)
def _predict(token: str, digest: str, fps: float, model_fps: float | None, objects: str, _clip: dict) -> dict:
    """The risks over the clip."""
    return dm.accident_predict(
        pc.load_model(ACCIDENT),
        _clip["frames"],
        _clip["boxes"],
        _clip["box_valid"],
        _clip["track_ids"],
        fps,
        _clip.get("toa", -1),
        _clip["clip_id"],
        model_fps=model_fps,
    )


def _outputs(
    prediction: dict,
    threshold: float,
    gif: bool,
    source_scale: tuple[float, float] | None = None,
    source_frames: np.ndarray | None = None,
) -> dict[str, bytes]:
    """risk.csv, objects.csv (and the GIF) through the task's own writer, in a temporary folder: a clip resampled
    to the model's rate at its steps, with their frame numbers, as ``predict`` writes it (:func:`dm.at_model_steps`).
    ``source_scale`` (x, y): the file's pixels per frame pixel of an upload shrunk on decoding, so ``objects.csv``
    holds the boxes in the file's own pixels, as ``predict`` writes them. ``source_frames``: the video's frame
    number of each step of an upload resampled as decoded (:attr:`up.FrameClip.source_frames`), written beside
    it as for a clip resampled here."""
    from domains.driving.accident.predict import write_clip

    prediction = dm.at_model_steps(prediction)
    if source_frames is not None:
        prediction = {**prediction, "source_frames": source_frames}
    if source_scale is not None:
        x, y = source_scale
        prediction = {**prediction, "source_boxes": np.asarray(prediction["boxes"]) * np.array([x, y, x, y])}
    with tempfile.TemporaryDirectory() as tmp:
        written = write_clip({**prediction, "threshold": threshold}, tmp, gif=gif)
        return {p.name: p.read_bytes() for p in written}


# ------------------------------------------------------------------------------------------------ helpers


def _stamp(root: Path) -> float:
    path = root / "Crash-1500.txt"
    return path.stat().st_mtime if path.is_file() else 0.0


#: the frame rule's place among the chart's layers: above the curves and the threshold, under the alarm and
#: the contact
FRAME_LAYER = 2


@st.cache_data(max_entries=16, show_spinner=False)
def _risk_spec(
    fps: float,
    steps: np.ndarray,
    probabilities: np.ndarray,
    n_frames: int,
    horizons: tuple[float, ...],
    threshold: float,
    alarm: int | None,
    toa: int,
) -> dict:
    """Vega-Lite spec of the risk chart but the frame rule: P(contact within h) per horizon at the model's
    ``steps`` (each at the time of the source frame it read), the threshold (dashed), the alarm (red) and the
    contact (black). Cached on what defines it: Altair takes ~40 ms to build and validate it, most of a rerun,
    and moving the frame slider changes none of it (:func:`_risk_chart` adds the rule)."""
    import altair as alt
    import pandas as pd

    probs = np.asarray(probabilities, dtype=np.float64)[steps]
    times = steps / fps
    end = (n_frames - 1) / fps
    names = [f"within {h:g} s" for h in horizons]
    curves = pd.DataFrame(
        {
            "time (s)": np.repeat(times, len(names)),
            "P(contact)": probs.reshape(-1),
            "horizon": names * len(times),
        }
    )
    x = alt.X("time (s):Q", scale=alt.Scale(domain=[0, float(end)]))
    layers = [
        alt.Chart(curves)
        .mark_line(interpolate="step-after" if len(steps) != n_frames else "linear")
        .encode(
            x=x,
            y=alt.Y("P(contact):Q", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("horizon:N", sort=names),
            tooltip=["time (s)", "horizon", alt.Tooltip("P(contact):Q", format=".3f")],
        ),
        alt.Chart(pd.DataFrame({"threshold": [threshold]}))
        .mark_rule(strokeDash=[5, 4], color="gray")
        .encode(y="threshold:Q"),
    ]
    if alarm is not None:
        layers.append(
            alt.Chart(pd.DataFrame({"time (s)": [alarm / fps], "event": ["alarm"]}))
            .mark_rule(color="red", strokeWidth=2)
            .encode(x="time (s):Q", tooltip=["event", "time (s)"])
        )
    if toa >= 0:
        layers.append(
            alt.Chart(pd.DataFrame({"time (s)": [toa / fps], "event": ["contact"]}))
            .mark_rule(color="black", strokeWidth=2)
            .encode(x="time (s):Q", tooltip=["event", "time (s)"])
        )
    # Altair's default transformer refuses charts over 5,000 rows (a long clip, many horizons);
    # st.altair_chart, used before the spec was cached, had no such limit
    with alt.data_transformers.enable("default", max_rows=None):
        spec = alt.layer(*layers).properties(height=260).to_dict()
    spec.pop("config", None)  # Altair's default theme (view sizes): st.altair_chart leaves it out too
    return spec


def _risk_chart(spec: dict, at_time: float) -> dict:
    """:func:`_risk_spec`'s chart with the rule at the frame shown (blue), the one layer the slider moves."""
    rule = {
        "data": {"values": [{"time (s)": at_time}]},
        "mark": {"type": "rule", "color": "#4c78a8", "opacity": 0.4},
        "encoding": {"x": {"field": "time (s)", "type": "quantitative"}},
    }
    layers = spec["layer"]
    return {**spec, "layer": [*layers[:FRAME_LAYER], rule, *layers[FRAME_LAYER:]]}


def _top_object(prediction: dict, frame: int) -> tuple[int, float] | None:
    """(slot, risk) of the highest-risk visible object at ``frame``; None without objects there."""
    valid = np.asarray(prediction["box_valid"])[frame]
    slots = np.flatnonzero(valid)
    if not len(slots):
        return None
    risks = np.asarray(prediction["object_risk"])[frame, slots]
    best = int(np.argmax(risks))
    return int(slots[best]), float(risks[best])


def _which_object(prediction: dict, clip: dict, alarm: int | None, threshold: float) -> None:
    """The highest-risk object at the alarm (track id, class, risk), and whether it is the involved one. The
    frame's risk (the alarm's) and the objects' come from separate heads: an object whose own risk stays below
    the threshold does not account for the alarm (a frame risk of 0.949 was put on a car of 0.354), so it is
    named only as the most likely one."""
    fps = float(prediction["fps"])
    risk = np.asarray(prediction["risk"])
    if alarm is None:
        peak = int(np.argmax(risk))
        advice = (  # near zero, a lower threshold would only fire on noise
            "Lower the threshold to see when it would fire."
            if risk[peak] >= 0.05
            else "Nothing in this clip looks like a coming contact to the model."
        )
        st.info(
            f"No alarm: the risk within {prediction['horizons'][-1]:g} s stays below {threshold:.3f} "
            f"(highest {risk[peak]:.3f} at t = {frame_time(peak, fps)} s). {advice}"
        )
        return
    top = _top_object(prediction, alarm)
    if top is None:
        st.info(f"Alarm at t = {frame_time(alarm, fps)} s, with no tracked object in view at that frame.")
        return
    slot, object_risk = top
    track = int(prediction["track_ids"][slot])
    kind = clip["classes"].get(track)
    named = f"**track {track}**{f' ({kind})' if kind else ''}, risk "
    if object_risk >= threshold:
        text = f"At the alarm (t = {frame_time(alarm, fps)} s) the highest-risk object is {named}{object_risk:.3f}."
    else:
        shown, limit = pc.below_threshold(object_risk, threshold, places=3)  # 0.4996 is not "0.500 below 0.500"
        text = (
            f"At the alarm (t = {frame_time(alarm, fps)} s) no tracked object accounts for it: the frame's risk "
            f"{risk[alarm]:.3f} comes from the model's frame head, and every object's own risk (a separate "
            f"head) stays below the threshold {limit}. The most likely one is {named}{shown}."
        )
    involved = clip.get("involved")
    if involved is not None and clip.get("toa", -1) >= 0:
        truth = [int(prediction["track_ids"][n]) for n in np.flatnonzero(involved)]
        if slot < len(involved) and involved[slot]:
            text += " It is the object involved in the contact (ground truth)."
        elif truth:
            text += (
                f" The object involved in the contact is track {', '.join(map(str, truth))} (ground truth)."
            )
    st.markdown(text)


def _own(key: str) -> bool:
    return bool(st.session_state.get(pc.OVERRIDES, {}).get(key))


def _far_from_training(width: int, height: int, in_w: int, in_h: int, input_kind: str) -> str | None:
    """The driving page's warning for a clip unlike the wide dashcam frames the models learnt from."""
    reads = "every frame squeezed" if input_kind != "boxes" else "the boxes scaled"
    trained = (
        "The detector and the anticipator learnt from wide dashcam frames of synthetic streets, and the "
        f"anticipator reads {reads} to its {in_w}x{in_h} frame ({in_w / in_h:.1f}:1)"
    )
    # the portrait / narrow rule only: the anticipator squeezes frames rather than fitting them (below)
    if warning := up.unlike_dashcam(width, height, "clip", trained, min_scale=None):
        return warning
    from domains.driving.accident.data import squeezed_boxes  # predict's rule for own clips too

    if boxes := squeezed_boxes(width, height, (in_h, in_w), input_kind):
        return f"This clip is {width / height:.2f}:1 ({width}x{height}). {trained}, so {boxes}."
    return None


def _without_objects(input_kind: str) -> str:
    """What the anticipator does with no detected objects, by what it reads: a frames network still sees
    the pixels, a boxes-only one (the shipped model) reads nothing at all and shows a risk of 0 throughout
    (the page said it "runs on the frames alone" for both)."""
    if input_kind == "boxes":
        return (
            "this model reads only the objects' boxes, not the pixels, so with no objects it has nothing to "
            "estimate a risk from (shown as 0 throughout)"
        )
    if input_kind == "frames":
        return "the anticipator runs on the frames alone, with no objects"
    return "the anticipator runs with no objects"


def _detected_caveat(figures: str, input_kind: str) -> str:
    """The warning on an upload's results: its objects come from the detector and a tracker, not ground truth.
    A boxes-only model reads nothing but the tracks, so the cause and size of its alarm moving are said: the
    same crash clip alarmed at 3.0 s as an mp4 and 0.5 s as a zip of its JPEG frames (a close car found in one
    encoding, lost in the other)."""
    if input_kind == "boxes":
        moves = (
            "and alarm times that move by seconds with small changes to the clip: the model reads only the "
            "tracked boxes, not the pixels, so a box the detector finds in one encoding of a clip and misses in "
            "another (an mp4 and a zip of its JPEG frames) changes a track, and with it the alarm"
        )
    else:
        moves = (
            "and alarm times that move with small changes to the clip (the same clip as an mp4 and as a zip of "
            "JPEG frames can alarm at different times)"
        )
    return (
        f"{figures}. This upload's objects are the demo detector's boxes linked by an IoU tracker, which miss, "
        "jitter and swap objects, so those figures (the near-miss false alarms included) do not hold here: "
        "expect missed crashes above all (on six test crash clips run through the detector, two alarmed; all "
        f"six did on their true tracks), false alarms on near misses, {moves}."
    )


def _resampling(
    label: str,
    n_frames: int,
    fps: float,
    steps: np.ndarray,
    model_fps: float | None,
    where: str,
    source: tuple[int, float] | None = None,
) -> str:
    """What the page did to the clip's frame rate, in words. ``source``: (frames, fps) of a video resampled as
    decoded, whose ``n_frames`` are the model's steps already."""
    if model_fps is None:
        return (
            f"{label}: the model's frame rate is unknown, so each of the {n_frames} frames is one model step "
            f"(its horizons are right only if the clip is at the rate it learnt at)."
        )
    if source is None and len(steps) == n_frames:
        same = "" if fps == model_fps else f" (within 1 % of the model's {model_fps:g} fps)"
        return (
            f"{label}: {fps:g} fps{same}, the frame rate the model learnt at ({where}): each of the {n_frames} "
            "frames is one model step."
        )
    count, rate = source or (n_frames, fps)
    text = (
        f"{label}: {rate:g} fps clip resampled to the model's {model_fps:g} fps ({where}): {count} -> "
        f"{len(steps)} frames, each model step (every {1 / model_fps:.2g} s) reading the nearest frame"
    )
    downloads = (
        f"The downloads hold the model's {len(steps)} steps, as `predict` writes them: a CSV's `frame` is the "
        "step, its `source_frame` the clip's frame that step read."
    )
    if source is not None:
        return (
            f"{text}; only those frames were kept as the video was decoded (a long clip is never held whole), so "
            f"the curve, the alarm and the frame slider are on the model's {len(steps)} steps. {downloads}"
        )
    return (
        f"{text}. The curve shows the model's {len(steps)} steps; the alarm and the frame slider are on the clip's "
        f"own {n_frames} frames, each holding the risk of the latest step at or before it. {downloads}"
    )


def _alarm_text(
    alarm: int | None, fps: float, steps: np.ndarray, n_frames: int, source_frames: np.ndarray | None = None
) -> str:
    """The Alarm metric: its time and frame; for a resampled clip both numbers, the clip's frame (the slider's)
    and the model's step (a download's ``frame``), which differ (source frame 69 is step 23 at 30 fps).
    ``source_frames``: the video's frame of each step of an upload resampled as decoded (the slider's are the
    steps)."""
    if alarm is None:
        return "none"
    if source_frames is not None:
        return f"t = {frame_time(alarm, fps)} s (source frame {int(source_frames[alarm])}, model step {alarm})"
    if len(steps) == n_frames:
        return f"t = {frame_time(alarm, fps)} s (frame {alarm})"
    from domains.driving.accident.readers import held_steps

    step = int(held_steps(steps, n_frames)[alarm])  # the step whose risk the frame holds
    return f"t = {frame_time(alarm, fps)} s (source frame {alarm}, model step {step})"


def _too_short(label: str, n_frames: int, fps: float, horizon: float) -> str | None:
    """A warning (not a refusal) for a clip shorter than the model's longest horizon: it is scored as a full
    clip, but the model reads each step with the motion before it, and its first steps have little."""
    seconds = n_frames / fps
    if seconds >= horizon:
        return None
    return (
        f"{label} is {seconds:.1f} s long, shorter than the {horizon:g} s the model looks ahead (its longest "
        "horizon), and the model learnt from longer clips: it is scored as a full clip, but its early risk has "
        "little history behind it (the model reads each step with the motion before it). Read it with care."
    )


# ------------------------------------------------------------------------------------------------- page


st.title("Driving: accident risk")
st.write(
    "The anticipator reads a dashcam clip frame by frame with the tracked road users, at the frame rate it "
    "learnt at (a faster clip is resampled to it), and gives, at every frame it reads, the probability of "
    "contact within each horizon (0.5 to 2 s) and a risk per object. An alarm fires the first time the 2 s "
    "risk reaches the threshold."
)
pc.own_checkpoint_picker([ACCIDENT], "Use your own accident checkpoint")
pc.show_missing([ACCIDENT])
if pc.model_path(ACCIDENT) is None:
    st.error(
        "No accident-anticipation model to run yet: train the quick one with "
        f"`{dm.train_command(ACCIDENT)}` (or `{dm.demo_command('demo-train', '--train')}`) and reload this page."
    )
    st.stop()
try:
    model = pc.load_model(ACCIDENT)
except Exception as exc:  # noqa: BLE001 - a checkpoint from another version: say so, no traceback
    pc.show_load_error(ACCIDENT, "the accident checkpoint", exc)
    st.stop()
if model is None:
    st.error(f"No accident weights: `{dm.train_command(ACCIDENT)}`")
    st.stop()
pc.checkpoint_caption(ACCIDENT, limit=6)
token = pc.model_token(ACCIDENT)
in_h, in_w = model.model.input_size
model_fps: float | None
try:
    model_fps, model_fps_where = _model_fps(token, str(pc.model_path(ACCIDENT)))
except Exception as exc:  # noqa: BLE001 - an unreadable card / checkpoint: said, the page goes on
    model_fps, model_fps_where = None, ""
    st.warning(
        f"Could not tell the frame rate the accident model learnt at ({type(exc).__name__}: {exc}): every frame "
        "of a clip is fed as one model step."
    )

source = st.radio("Clip", [SYNTHETIC, UPLOAD], horizontal=True, key="accident_source", persist_state=pc.KEEP)
source_scale = None  # an upload shrunk on decoding: its pixels per frame pixel (x, y), for objects.csv
source_frames, resampled_from = None, None  # a video resampled as decoded: its frame per step; (frames, fps)
if source == SYNTHETIC:
    root = dm.accident_data_root()
    entries: list[dm.ClipEntry] = []
    if (root / "Crash-1500.txt").is_file():
        try:
            entries = _entries(str(root), False, _stamp(root))
        except Exception as exc:  # noqa: BLE001 - a broken generated set: say so, keep the examples
            st.warning(f"Could not read the generated clips in `{root}`: {type(exc).__name__}: {exc}")
    if entries:
        st.caption(
            f"Clips of the test split of `{root}` (the data module's default split: the model did not train on "
            "them), crashes first, then the bundled examples."
        )
    else:
        st.caption(
            f"No generated clips in `{root}` (training the accident model generates them: "
            f"`{dm.train_command(ACCIDENT)}`); showing the bundled examples."
        )
    if (dm.ACCIDENT_EXAMPLES / "Crash-1500.txt").is_file():
        entries = entries + _entries(str(dm.ACCIDENT_EXAMPLES), True, _stamp(dm.ACCIDENT_EXAMPLES))
    if not entries:
        st.error(f"No clips to show: `{root}` is empty and the bundled examples are missing.")
        st.stop()
    index = st.selectbox(
        "Clip", range(len(entries)), format_func=lambda i: entries[i].label, key="accident_clip"
    )
    entry = entries[int(index)]
    try:
        clip = _synthetic_clip(entry.root, entry.clip_id, _stamp(Path(entry.root)))
    except Exception as exc:  # noqa: BLE001 - the reader names the file and what is wrong
        st.error(f"Could not read clip {entry.clip_id}: {type(exc).__name__}: {exc}")
        st.stop()
    fps = clip["fps"]
    digest = f"{entry.root}:{entry.clip_id}:{_stamp(Path(entry.root))}"
    label = f"Clip {entry.clip_id}"
    # a bundled example may share its id with a generated clip (both 000003): their downloads must not
    stem = up.download_stem(f"example_{entry.clip_id}" if entry.bundled else entry.clip_id, default="clip")
    objects = "truth"
    n_tracks = int((clip["track_ids"] >= 0).sum())
    st.caption(
        f"Objects: the clip's ground-truth tracks from its annotation ({n_tracks} in the "
        f"{dm.ACCIDENT_SLOTS} object slots). {len(clip['frames'])} frames at {fps:g} fps, "
        f"{clip['frames'].shape[2]}x{clip['frames'].shape[1]} pixels."
    )
else:
    data, name, digest = pc.upload_or_stop(
        "Dashcam clip: a video (mp4) or a zip of JPEG / PNG / WebP frames",
        key=UPLOAD_KEY,
        help_text=(
            f"Up to {up.MAX_UPLOAD_MB} MB and {up.MAX_CLIP_FRAMES} frames read by the model ("
            f"{up.MAX_CLIP_FRAMES / (model_fps or 10.0):g} s at {f'its {model_fps:g}' if model_fps else '10'} fps: "
            "a faster video is resampled to its rate as it is decoded, a zip's frames all count); frames are "
            f"scaled to at most {up.MAX_CLIP_SIDE} px on the long side. A zip's frames are read in name order."
        ),
        prompt="Upload a dashcam clip, or pick a synthetic clip above.",
    )
    decoded = pc.decoded_or_stop(name, lambda: _decode(digest, name, model_fps, data))
    frames = decoded.frames
    if decoded.resampled:
        source_frames, resampled_from = decoded.source_frames, (decoded.source_count, decoded.source_fps)
    if decoded.source_size and decoded.source_size != (frames.shape[2], frames.shape[1]):
        source_scale = (decoded.source_size[0] / frames.shape[2], decoded.source_size[1] / frames.shape[1])
    far = _far_from_training(frames.shape[2], frames.shape[1], in_w, in_h, model.model.input_kind)
    if far:
        st.warning(far)
    if decoded.fps is None:
        st.info(f"{name} does not say its frame rate: set it (the horizons are in seconds).")
        start_fps = min(max(model_fps or 10.0, 1.0), 120.0)
        fps = float(
            st.number_input(
                "Frame rate (frames per second)",
                1.0,
                120.0,
                float(start_fps),
                1.0,
                key="accident_fps",
                format="%.2f",
                help=(
                    f"The clip's own frame rate. The model learnt at {model_fps:g} fps: a faster clip is "
                    "resampled to it, a slower one refused."
                    if model_fps
                    else "The clip's own frame rate."
                ),
            )
        )
        fps_from = "as set above"
    else:
        fps = float(decoded.fps)
        fps_from = "from the video's header"
    try:  # before the detector's minutes: a too slow or too short clip is known already
        clip_steps = dm.accident_clip_steps(len(frames), fps, model_fps)
    except ValueError as exc:
        st.error(f"{name}: {exc}.")
        st.stop()
    clip_id = up.download_stem(name, default="upload")  # names output files: never a path or '..'
    label, stem = name, clip_id
    clip = {"frames": frames, "clip_id": clip_id, "toa": -1, "involved": None}
    objects = "none"
    detector = None
    if pc.model_path(DETECTION) is not None:
        try:
            detector = pc.load_model(DETECTION)
        except Exception as exc:  # noqa: BLE001
            st.warning(f"The detector could not be loaded ({type(exc).__name__}: {exc}).")
    if detector is None:
        clip.update(dm.no_objects(len(frames)))
        st.warning(
            f"No road-object detector available: {_without_objects(model.model.input_kind)} "
            f"(train the detector with `{dm.train_command(DETECTION)}`)."
        )
    else:
        point = {} if _own(DETECTION) else dm.operating_point(DETECTION)
        det_threshold = float(point.get("threshold", detector.predict_score_thresh))
        try:
            steps = tuple(clip_steps.tolist())
            clip.update(_detect(pc.model_token(DETECTION), digest, det_threshold, steps, frames))
            objects = f"{pc.model_token(DETECTION)}|{det_threshold:.4f}"  # which detector made the boxes
        except Exception as exc:  # noqa: BLE001 - e.g. a detector checkpoint whose code changed since
            st.warning(
                f"The detector failed on this clip ({type(exc).__name__}: {exc}): "
                f"{_without_objects(model.model.input_kind)}."
            )
            clip.update(dm.no_objects(len(frames)))
        else:
            n_tracks = int((clip["track_ids"] >= 0).sum())
            where, rate, held = "in every frame", "", ""
            if resampled_from is not None:
                where, rate = f"in the {len(frames)} frames that the model reads", f" at the model's {model_fps:g} fps"
            elif len(clip_steps) != len(frames):
                where = f"in the {len(clip_steps)} of the clip's {len(frames)} frames that the model reads"
                rate = f" at the model's {model_fps:g} fps"
                held = " A frame between two it reads shows the boxes of the one before, as it shows its risk."
            st.caption(
                f"Objects: the demo detector's boxes scoring >= {det_threshold:.2f} {where} "
                f"({clip['detections']} boxes), linked into tracks by IoU{rate}; {n_tracks} tracks in the "
                f"{dm.ACCIDENT_SLOTS} object slots (the longest-seen first). The contact time is unknown.{held}"
            )
            if clip["tracks"] > dm.ACCIDENT_SLOTS:
                st.info(
                    f"{clip['tracks']} tracks were found and the {dm.ACCIDENT_SLOTS} seen in the most frames of the "
                    "whole clip are scored: a track seen only later can take the slot of one seen early, so cutting "
                    "the clip can change the risk before the cut. A car running live picks its slots as objects "
                    "appear."
                )
    file_frames, file_fps = resampled_from or (len(frames), fps)  # the file's own, before any resampling
    kept = "" if resampled_from is None else f"; the {len(frames)} the model reads at its {fps:g} fps kept"
    st.caption(
        f"{name}: {file_frames} frames at {file_fps:g} fps ({fps_from}; {file_frames / file_fps:.1f} s), "
        f"{frames.shape[2]}x{frames.shape[1]} pixels{kept}."
    )

# the model counts frames (motion lags, horizons learnt at its own rate): the clip goes in at that rate
n_frames = len(clip["frames"])
try:
    prediction = _predict(token, digest, fps, model_fps, objects, clip)
except ValueError as exc:  # the clip: slower than the model, or too short at its rate (accident_predict says)
    st.error(f"{label}: {exc}.")
    st.stop()
except Exception as exc:  # noqa: BLE001 - every model failure is a message, not a traceback
    st.error(f"The accident model failed on this clip: {type(exc).__name__}: {exc}")
    st.stop()
steps = np.asarray(prediction["model_steps"])  # which source frame each model step read
st.caption(_resampling(label, n_frames, fps, steps, model_fps, model_fps_where, resampled_from))
if short := _too_short(label, n_frames, float(prediction["fps"]), float(model.model.horizons.max())):
    st.warning(short)
if model.model.input_kind == "frames":
    st.caption(
        f"The model sees every frame{' it reads' if len(steps) != n_frames else ''} resized to {in_w}x{in_h} (its "
        "training size); boxes are scaled with them."
    )
elif model.model.input_kind == "boxes":
    st.caption(
        f"The model reads the objects' boxes and their motion, not the pixels; boxes are scaled to its "
        f"{in_w}x{in_h} training frame."
    )
    blind = int(np.asarray(prediction["blind"]).sum())
    if blind == n_frames:
        st.warning(
            "No object in view in any frame: this model reads only the objects' boxes, so it has nothing to "
            "estimate a risk from (shown as 0 throughout)."
        )
    elif blind:
        st.caption(
            f"{blind} of {n_frames} frames have no object in view: their risk is 0 (the model reads only boxes; "
            "with none it would give a prior learnt from clips that always had objects)."
        )

if source == UPLOAD and objects != "none":
    # the card's figures come from ground-truth tracks; an upload's objects from the detector and a tracker
    if _own(ACCIDENT) or not (dm.read_metrics(ACCIDENT) or {}).get("test"):
        figures = "A model's test figures hold for the objects it was tested with"
    else:
        figures = "The test figures above were measured on the test clips' ground-truth tracks"
    st.warning(_detected_caveat(figures, model.model.input_kind))

fps = float(prediction["fps"])
toa = int(prediction["toa"])
risk = np.asarray(prediction["risk"])
start = float(model.model.alarm_threshold)
shown_start = round(min(max(start, 0.0), 1.0), 3)
chosen = st.slider(
    "Alarm threshold",
    0.0,
    1.0,
    shown_start,
    0.001,
    format="%.3f",
    key="accident_threshold",
    persist_state=pc.KEEP,
    help=(
        f"Starts at the model's own alarm threshold ({start:.3f}): on validation clips, the lowest one whose "
        "false-alarm rate on negative clips stayed within the training cap."
    ),
)
# the slider holds 3 decimals; at the model's own (rounded) value it stands for the exact threshold, so the alarm
# and risk.csv agree with the CLI's predict (0.87033 shown as 0.870 moved the alarm for a risk in between)
threshold = start if chosen == shown_start else chosen
from domains.driving.accident.predict import alarm_frame

alarm = alarm_frame(risk, threshold)
m1, m2, m3 = st.columns(3)
m1.metric("Alarm", _alarm_text(alarm, fps, steps, n_frames, source_frames))
if toa >= 0:
    lead = None if alarm is None else (toa - alarm) / fps
    m2.metric(
        "Lead time before contact",
        "missed" if lead is None else f"{lead:.1f} s",
        help=f"contact at t = {frame_time(toa, fps)} s (frame {toa}); negative: the alarm came after the contact",
    )
else:
    m2.metric("Contact", "none known", help="no ground-truth contact for this clip")
m3.metric("Highest risk", f"{risk.max():.3f}", help=f"P(contact within {prediction['horizons'][-1]:g} s)")

# starts at the alarm of the model's own threshold (a fixed default per clip and frame rate: the slider keeps its
# place while the threshold moves, and goes to the new alarm when a newly set frame rate changes the risk)
first = alarm_frame(risk, start)
frame = st.slider(  # a video resampled as decoded: the model's steps, each naming its source frame below
    "Frame" if source_frames is None else "Model step",
    0,
    len(risk) - 1,
    first if first is not None else 0,
    key=f"accident_frame_{digest}_{fps:g}",
)
spec_args = (
    fps,
    np.asarray(prediction["model_steps"]),
    np.asarray(prediction["probabilities"]),
    len(risk),
    tuple(prediction["horizons"]),
    threshold,
    alarm,
    toa,
)
if source == UPLOAD:  # an upload's risk curve stays in its session, with the risks it draws
    curves = pc.digest(spec_args[1].tobytes() + spec_args[2].tobytes())  # a few kB: the steps and risks drawn
    chart_key = (fps, curves, *spec_args[3:])
    spec = pc.upload_memo(UPLOAD_KEY, "chart", chart_key, lambda: _risk_spec.__wrapped__(*spec_args), max_entries=4)
else:
    spec = _risk_spec(*spec_args)
st.vega_lite_chart(_risk_chart(spec, frame / fps), width="stretch")
events = [f"dashed: threshold {threshold:.3f}"]
if alarm is not None:
    events.append(f"red: alarm at {frame_time(alarm, fps)} s")
if toa >= 0:
    events.append(f"black: contact at {frame_time(toa, fps)} s")
events.append("blue: the frame below")
st.caption("Probability of contact within each horizon; " + "; ".join(events) + ".")
_which_object(prediction, clip, alarm, threshold)

try:  # the frame shown alone (a few ms): drawing the whole clip per threshold cost 0.5 s and 230 MB each
    from domains.driving.accident.predict import draw_frame

    drawn = draw_frame({**prediction, "threshold": threshold}, frame)
except Exception as exc:  # noqa: BLE001
    st.error(f"Could not draw the clip: {type(exc).__name__}: {exc}")
    st.stop()
top = _top_object(prediction, frame)
what = (
    ""
    if top is None
    else f"; highest-risk object: track {int(prediction['track_ids'][top[0]])} ({top[1]:.2f})"
)
which = f"Frame {frame}" if source_frames is None else f"Model step {frame} (source frame {int(source_frames[frame])})"
st.image(
    drawn,
    caption=f"{which} (t = {frame_time(frame, fps)} s), risk {risk[frame]:.3f}{what}. Boxes green (low) to red "
    "(high risk). Below it, the risk up to this frame: dashed the threshold, red dot the alarm, white line the "
    "contact, blue line this frame.",
    width="stretch",
)

downloads = (  # label, the file among predict's outputs, download name, MIME type, widget key
    ("Risk per frame (CSV)", "risk.csv", f"{stem}_risk.csv", "text/csv", "accident_dl_risk"),
    ("Object risk per frame (CSV)", "objects.csv", f"{stem}_objects.csv", "text/csv", "accident_dl_objects"),
    (
        "Annotated clip (GIF)",
        f"{prediction['clip_id']}.gif",
        f"{stem}_risk.gif",
        "image/gif",
        "accident_dl_gif",
    ),
)
for column, (label, output, file_name, mime, key) in zip(st.columns(3), downloads):
    column.download_button(
        label,
        # written only when clicked (the GIF takes a while)
        data=lambda output=output: _outputs(
            prediction, threshold, output.endswith(".gif"), source_scale, source_frames
        )[output],
        file_name=file_name,
        mime=mime,
        key=key,
    )
