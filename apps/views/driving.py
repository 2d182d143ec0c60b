"""Driving page: road objects (boxes, KITTI text), road-user instances (masks, id map) and road anomalies (heat
map, frame score) on one photo."""

from __future__ import annotations

import functools
import math
import os
import tempfile
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import streamlit as st

from apps import demo_models as dm
from apps import page_common as pc
from apps import uploads as up

SYNTHETIC, UPLOAD = "Synthetic scene", "Upload a photo"
UPLOAD_KEY = "driving_upload"  # the file uploader's; its decoded photo is kept under it (pc.upload_memo)
DETECTION, ANOMALY = "driving_detection", "driving_anomaly"
INSTANCES = "driving_instances"
#: models whose best / worst test frames (shipped in apps/examples) the scene list offers, and their names
FRAME_EXAMPLES = {DETECTION: "detector", INSTANCES: "instance segmenter"}
DISPLAY_WIDTH = 1280  # overlays are drawn at most this wide (downloads use the full size)
#: (min, max, start, step) of the slider "outline this image's top % of pixels", for scores without a fixed scale
RELATIVE_TOP = (0.1, 10.0, 1.0, 0.1)
#: what the driving models saw, for the warning on photos unlike it
TRAINED_ON = "The models learnt from wide dashcam frames (640x192, 3.3:1) of synthetic streets"
#: at most this many of the data set's images in the Scene list, the first in natural name order (Streamlit
#: sends every option to the browser on each rerun: 20,000 names were 360 KB a rerun); any other is opened by
#: name (SCENE_NAME, shown only when the set holds more)
SCENE_LIST_CAP = 200
SCENE_NAME = "driving_scene_name"


# ------------------------------------------------------------------------------------------------ caching


#: a scene of the data set: name, image path, label mask path or None
Scene = tuple[str, str, str | None]


def _folder_stamps(root: Path) -> tuple[int, int | None]:
    """The modification times (ns) of ``root``'s ``images/`` and ``labels_masks/`` (None: no such folder), the
    key that lists the set again when a file was added, removed or renamed in either: two stat calls a rerun,
    where the listing takes 0.7 s of CPU at 20,000 images. FileNotFoundError without ``images/``."""
    images = (root / "images").stat().st_mtime_ns
    try:
        labels = (root / "labels_masks").stat().st_mtime_ns
    except FileNotFoundError:
        labels = None
    return images, labels


# cache_resource: the one listing, not copied out on every rerun (callers never modify it)
@st.cache_resource(show_spinner=False, max_entries=2)
def _scene_list(root: str, stamps: tuple[int, int | None]) -> tuple[list[Scene], dict[str, Scene]]:
    """(name, image path, label path or None) of the SegmentMeIfYouCan-layout set, in natural name order
    (``img2`` before ``img10``), and the same by name (the first of a name: a rerun looks a typed name up without
    walking 20,000); masks found as ``test`` finds them (``<name>.png`` or SMIYC's
    ``<name>_labels_semantic.png``, any case). Keyed by :func:`_folder_stamps` too: a changed folder is listed
    again."""
    from domains.driving.anomaly.data import AnomalyDataset, label_masks
    from shared.files import natural_key, visible_files

    images = Path(root) / "images"
    labels = Path(root) / "labels_masks"
    found = visible_files(images, AnomalyDataset.IMAGE_EXTENSIONS)  # no ._name.png of a Mac copy
    found.sort(key=lambda p: natural_key(p.name))
    masks = label_masks(labels, [p.stem for p in found]) if labels.is_dir() else {}
    scenes = [(p.stem, str(p), str(masks[p.stem]) if p.stem in masks else None) for p in found]
    by_name: dict[str, Scene] = {}
    for scene in scenes:
        by_name.setdefault(scene[0], scene)
    return scenes, by_name


def _file_stamps(*paths: str | None) -> tuple[tuple[int, int] | None, ...]:
    """(modification time in ns, size) of each file, None for no path or no file: with the paths, the key of
    :func:`_read_scene`, so an image or mask overwritten in place is read again (one stat call each)."""
    stamps = []
    for path in paths:
        try:
            info = os.stat(path) if path is not None else None
        except OSError:  # _read_scene names the missing file
            info = None
        stamps.append(None if info is None else (info.st_mtime_ns, info.st_size))
    return tuple(stamps)


@st.cache_data(max_entries=16, show_spinner=False)
def _read_scene(
    path: str, label: str | None, stamps: tuple[tuple[int, int] | None, ...]
) -> tuple[bytes, np.ndarray, np.ndarray | None, str | None]:
    """A scene's bytes (the page's cache key), its RGB pixels and its ground truth, or why that is not shown.
    Read as ``test`` reads them: as stored (EXIF orientation not applied, as the mask is drawn); a scene that
    cannot be decoded raises LabelFormatError naming it. ``stamps``: :func:`_file_stamps` of both files (only
    the cache key)."""
    from domains.driving.common import read_label_map, read_rgb
    from domains.driving.formats import LabelFormatError

    image = read_rgb(path, ignore_orientation=label is not None)
    truth, problem = None, None
    if label is not None:
        try:
            truth = read_label_map(label)
        except (LabelFormatError, OSError) as exc:
            truth, problem = None, f"Ground truth not shown: {exc}"
        else:
            if truth.shape != image.shape[:2]:
                problem = (
                    f"Ground truth not shown: {label} is {truth.shape[1]}x{truth.shape[0]} but its image "
                    f"{Path(path).name} is {image.shape[1]}x{image.shape[0]}"
                )
                truth = None
    return Path(path).read_bytes(), image, truth, problem


def _decode(digest: str, name: str, data: bytes) -> up.RGBImage:
    """The upload's pixels, kept in its session (not in st.cache_resource, which every session of the server
    shares: it kept them after the session ended)."""
    return pc.upload_memo(
        UPLOAD_KEY, "photo", (digest,), lambda: up.decode_rgb_image(data, name), spinner="Decoding the photo ..."
    )


def _per_photo(cache, max_entries: int, spinner: str | None = None, kept: int = 2):
    """:func:`pc.per_upload` for this page's photo: a synthetic scene's results shared, an upload's in its
    session."""
    return pc.per_upload(UPLOAD_KEY, lambda: source == UPLOAD, cache, max_entries, spinner, kept)


@_per_photo(st.cache_data, 16, "Detecting objects ...")
def _detect(token: str, digest: str, _image: np.ndarray) -> dict:
    return dm.detect_objects(pc.load_model(DETECTION), _image)


@_per_photo(st.cache_data, 4, "Segmenting instances ...")  # masks: up to ~30 MB per photo
def _segment(token: str, digest: str, _image: np.ndarray) -> dict:
    return dm.segment_instances(pc.load_model(INSTANCES), _image)


# cache_resource: tensors, not copied out on every rerun (callers never modify them). One network pass per
# photo: every score is computed from these outputs, so picking another score does not run the network again.
@_per_photo(st.cache_resource, 4, "Running the road segmenter ...", kept=1)
def _anomaly_forward(token: str, digest: str, _image: np.ndarray) -> dict:
    return dm.anomaly_forward(pc.load_model(ANOMALY), _image)


# cache_resource: a full-size float map per entry, not copied out on every rerun (callers never modify it)
@_per_photo(st.cache_resource, 8, "Scoring anomalies ...", kept=4)
def _analyse(token: str, digest: str, score: str, _image: np.ndarray) -> dict:
    forward = _anomaly_forward(token, digest, _image)
    return dm.anomaly_analysis(pc.load_model(ANOMALY), _image, score, forward)


@_per_photo(st.cache_data, 64, kept=8)
def _top_percentile(token: str, digest: str, score: str, top: float, _score_map: np.ndarray) -> float:
    """The score above which ``top`` % of the photo's pixels lie: a sort of the full-size map, so once per
    photo, score and setting, not on every rerun (the opacity slider)."""
    return float(np.quantile(_score_map, 1 - top / 100))


@_per_photo(st.cache_data, 64, kept=8)
def _share_above(token: str, digest: str, score: str, threshold: float, _score_map: np.ndarray) -> float:
    """The share of the photo's pixels at or above ``threshold``: a pass over the full-size map (30 ms at 40 MP),
    so once per photo, score and threshold, not on every rerun (the opacity slider)."""
    return float((_score_map >= threshold).mean())


@_per_photo(st.cache_data, 16)
def _score_shown(token: str, digest: str, score: str, size: tuple[int, int], _score_map: np.ndarray) -> np.ndarray:
    """The score map at the shown photo's (width, height): a resize of the full-size map, so once per photo and
    score, not on every rerun (the opacity slider)."""
    return cv2.resize(_score_map, size, interpolation=cv2.INTER_LINEAR)


@_per_photo(st.cache_data, 16, kept=1)
def _display(digest: str, _image: np.ndarray) -> tuple[np.ndarray, float]:
    """The photo at most DISPLAY_WIDTH wide, and its scale."""
    h, w = _image.shape[:2]
    if w <= DISPLAY_WIDTH:
        return _image, 1.0
    s = DISPLAY_WIDTH / w
    return cv2.resize(_image, (DISPLAY_WIDTH, round(h * s)), interpolation=cv2.INTER_AREA), s


# ------------------------------------------------------------------------------------------------ helpers


def _kitti_text(pred: dict, class_names: list[str]) -> str:
    """KITTI result lines (16 fields, score last) through the suite's own writer (class names' spaces become
    underscores in detections_to_kitti)."""
    import torch

    from domains.driving.detection.predict import detections_to_kitti
    from domains.driving.formats import write_kitti_label

    tensors = {k: torch.as_tensor(v) for k, v in pred.items()}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "result.txt"
        write_kitti_label(path, detections_to_kitti(tensors, class_names), with_score=True)
        return path.read_text(encoding="utf-8")


def _filter(pred: dict, threshold: float, keep: list[int]) -> dict:
    ok = (pred["scores"] >= threshold) & np.isin(pred["labels"], keep)
    return {k: v[ok] for k, v in pred.items()}


def _draw(image: np.ndarray, pred: dict, class_names: list[str], scale: float = 1.0) -> np.ndarray:
    import torch

    from domains.driving.detection.predict import draw_detections

    tensors = {
        "boxes": torch.as_tensor(pred["boxes"] * scale),
        "scores": torch.as_tensor(pred["scores"]),
        "labels": torch.as_tensor(pred["labels"]),
    }
    return draw_detections(image, tensors, class_names, score_thresh=0.0)


def _draw_instances(
    image: np.ndarray,
    pred: dict,
    class_names: list[str],
    ids: tuple[np.ndarray, list[int]],
    alpha: float,
    scale: float = 1.0,
) -> np.ndarray:
    """The instances tinted, outlined and boxed by the task's own drawing; ``ids``: :func:`dm.instance_ids` at
    the image's size (so the masks are never held at that size one by one)."""
    import torch

    from domains.driving.instances.predict import draw_instances

    tensors = {
        "boxes": torch.as_tensor(pred["boxes"] * scale),
        "scores": torch.as_tensor(pred["scores"]),
        "labels": torch.as_tensor(pred["labels"]),
    }
    return draw_instances(image, tensors, class_names, score_thresh=0.0, alpha=alpha, id_map=ids)


def _outline(overlay: np.ndarray, mask: np.ndarray) -> np.ndarray:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = overlay.copy()
    cv2.drawContours(out, contours, -1, (255, 255, 255), 1)
    return out


def _score_png16(score: np.ndarray, lo: float, hi: float) -> bytes:
    """The raw score map scaled lo..hi -> 0..65535 (16-bit PNG keeps more levels than the 8-bit overlay)."""
    scaled = np.clip((score - lo) / max(hi - lo, 1e-12), 0, 1)
    ok, buf = cv2.imencode(".png", (scaled * 65535 + 0.5).astype(np.uint16))
    return buf.tobytes() if ok else b""


def _example_scenes(
    scenes: dict[str, Scene],
) -> tuple[list[tuple[str, str, str, str | None]], list[str]]:
    """(label, name, image path, label path) of the best and worst test examples the weights recorded: where
    the models are right (first, the page's default) and where they are wrong; and the recorded example files
    that are missing (the page says how many: they were dropped unsaid)."""
    out, missing = [], []
    for which, what in (("best", "right"), ("worst", "wrong")):
        example = dm.examples(ANOMALY).get(which) if not _own(ANOMALY) else None
        if example and example["id"] in scenes:
            label = f"{example['id']}: where the anomaly model is most {what} (its {which} test scene)"
            out.append((label, *scenes[example["id"]]))
        for key, model in FRAME_EXAMPLES.items():
            example = dm.examples(key).get(which) if not _own(key) else None
            if not example:
                continue
            path = dm.ROOT / example.get("file", "")
            if not path.is_file():
                missing.append(str(path))
                continue
            label = f"{example['id']}: where the {model} is most {what} (its {which} test frame, F1 {example['f1']:.2f})"
            out.append((label, example["id"], str(path), None))
    return out, missing


def _example_truth(key: str, path: str | None, classes: list[str]) -> str | None:
    """When ``path`` is one of ``key``'s recorded test frames: which one, its F1 at the card's operating point
    and what its KITTI labels hold, to hold against what the tab finds (None otherwise). The model's
    ``classes`` are named beside them: a label such as Truck or DontCare is none of them."""
    from domains.driving.formats import read_kitti_label

    if path is None or _own(key):
        return None
    for which, example in dm.examples(key).items():
        if isinstance(example, dict) and Path(path) == dm.ROOT / example.get("file", "?"):
            label = Path(path).with_suffix(".txt")
            objects = Counter(
                o.type for o in (read_kitti_label(label, known_types=None) if label.is_file() else [])
            )
            listed = ", ".join(f"{n} {t}" for t, n in sorted(objects.items())) or "no label file shipped"
            return (
                f"The {FRAME_EXAMPLES[key]}'s {which} test frame: F1 {example['f1']:.2f} at the slider's "
                f"starting threshold (boxes matched at IoU 0.5). Its ground-truth labels: {listed} (the model's "
                f"classes: {', '.join(classes)})."
            )
    return None


def _fixed_range(segmenter, score: str) -> tuple[float, float] | None:
    """The range a score cannot leave, whatever the photo: the probabilities' 0..1 (``FIXED_RANGES``) and the
    softmax entropy's 0..ln C (C: the model's classes; the score's blur keeps it inside). None for the unbounded
    scores (max_logit, sml, energy, mahalanobis: logits, energies, distances)."""
    from domains.driving.anomaly.model import FIXED_RANGES

    if score in FIXED_RANGES:
        lo, hi = FIXED_RANGES[score]
        return float(lo), float(hi)
    if score == "entropy":
        return 0.0, math.log(int(segmenter.model.num_classes))
    return None


def _fixed_start(score: str, lo: float, hi: float) -> tuple[float, float, str]:
    """(start, step, help) of the threshold slider of a fixed-range score: the weights' operating point for the
    score it was measured for (95 % of outlier pixels flagged on validation images with pasted objects, in
    the model card), else a value with a plain meaning."""
    point = {} if _own(ANOMALY) else dm.operating_point(ANOMALY)
    if point.get("score") == score:
        start = float(point["threshold"])
        why = (
            f"Starts at {start:.3g}: on validation images with pasted objects, 95 % of object pixels score at least "
            f"this, and {100 * point['fpr']:.1f} % of road-scene pixels do."
        )
    elif score == "entropy":
        start = math.log(2)
        why = (
            f"Starts at ln 2 = {start:.3f} nats: as unsure as an even split between two classes (the maximum, "
            f"{hi:.3f} = ln {round(math.exp(hi))}, is an even split over all classes)."
        )
    elif score == "msp":
        start = 0.5
        why = "Starts at 0.5: the most likely class has at most 50 % probability."
    else:
        start = 0.5
        why = "Starts at 0.5: even odds that the pixel is an outlier."
    return float(min(max(start, lo), hi)), max((hi - lo) / 100, 1e-6), why


def _relative_note(
    score: str, lo: float, hi: float, top: float, threshold: float, names: list[str], segmenter
) -> str:
    """What the view of a score without a fixed scale shows, and what it does not."""
    fixed = [f"`{n}`" for n in names if _fixed_range(segmenter, n) is not None]
    instead = f" For that, pick a score with a fixed scale ({', '.join(fixed)})." if fixed else ""
    return (
        f"`{score}` has no fixed scale, so here the colours and the outline are relative to this image: blue is "
        f"its lowest score ({lo:.3g}), red its highest ({hi:.3g}), and the outline marks its top {top:g} % of "
        f"pixels (score >= {threshold:.3g}), on every photo, with or without anything on the road. It shows where "
        f"the model is least sure in this photo, not whether the scene holds an anomaly.{instead}"
    )


def _own(key: str) -> bool:
    return bool(st.session_state.get(pc.OVERRIDES, {}).get(key))


# ------------------------------------------------------------------------------------------------- page


st.title("Driving: road objects and road anomalies")
st.write(
    "The detector finds cars, pedestrians and cyclists; the instance segmenter (Mask R-CNN) says which pixels "
    "are each of them. The anomaly model is a road-scene segmenter whose uncertainty flags things that belong "
    "to no known class (lost cargo, debris, animals)."
)
pc.own_checkpoint_picker([DETECTION], "Use your own detector checkpoint")
pc.own_checkpoint_picker([INSTANCES], "Use your own instance-segmentation checkpoint")
pc.own_checkpoint_picker([ANOMALY], "Use your own anomaly checkpoint")
pc.show_missing([DETECTION, INSTANCES, ANOMALY])
have_det = pc.model_path(DETECTION) is not None
have_inst = pc.model_path(INSTANCES) is not None
have_ano = pc.model_path(ANOMALY) is not None
if not (have_det or have_inst or have_ano):
    st.error(
        f"No driving checkpoint to show yet: run `{dm.demo_command('demo', '--train')}` (or a command above) and "
        "reload this page."
    )
    st.stop()

source = st.radio("Image", [SYNTHETIC, UPLOAD], horizontal=True, key="driving_source", persist_state=pc.KEEP)
truth = image_path = None
if source == SYNTHETIC:
    root = dm.anomaly_data_root()
    if not root.is_dir() and root == dm.default_anomaly_data():
        with st.spinner("Generating the synthetic road-anomaly scenes (first run only) ..."):
            from domains.driving.synthetic import ensure_synthetic_anomaly

            try:
                ensure_synthetic_anomaly(root, verbose=False)
            except OSError as exc:  # a read-only or full folder: where, and what to set
                st.error(dm.unwritable_data("road-anomaly scenes", root, dm.ENV_ANOMALY_DATA, exc))
                st.stop()
    try:
        scenes, by_name = _scene_list(str(root), _folder_stamps(root))
    except OSError as exc:
        st.error(f"No synthetic scenes in {root}: {exc}")
        st.stop()
    except ValueError as exc:  # LabelFormatError: an image with two masks
        st.error(f"Cannot list the scenes in {root}: {exc}")
        st.stop()
    if not scenes:
        st.error(f"No images in {root / 'images'}.")
        st.stop()
    recorded, missing = _example_scenes(by_name)
    if missing:
        st.caption(
            f"{len(missing)} of the weights' recorded example frames {'is' if len(missing) == 1 else 'are'} "
            f"missing, not listed: {', '.join(f'`{m}`' for m in missing)} (restore them from git, or reinstall "
            "the suite)."
        )
    # the whole set is the anomaly model's test set (no split to list instead): a bounded list, any other by name
    more = len(scenes) > SCENE_LIST_CAP
    typed = str(st.session_state.get(SCENE_NAME) or "").strip() if more else ""
    named = (typed, *by_name[typed]) if typed in by_name else None
    choices = recorded + [(n, n, p, lab) for n, p, lab in scenes[:SCENE_LIST_CAP]]
    index = st.selectbox(
        "Scene",
        range(len(choices)),
        format_func=lambda i: choices[i][0],
        key="driving_scene",
        disabled=named is not None,
        help="Clear the name box below to pick from this list." if named else None,
    )
    if more:
        st.caption(
            f"The list holds the first {SCENE_LIST_CAP:,} of the {len(scenes):,} images in `{root / 'images'}` "
            f"(name order); open any other by name below, or set `${dm.ENV_ANOMALY_DATA}` to a folder of the "
            "ones you want."
        )
        st.text_input(
            "Or open a scene by name",
            key=SCENE_NAME,
            placeholder=f"e.g. {scenes[-1][0]}",
            help="An image's name in images/ without its extension; clear it to pick from the list again.",
        )
        if typed and named is None:
            st.warning(f"No image named `{typed}` in `{root / 'images'}`: showing the list's pick.")
    _, name, image_path, label_path = named or choices[int(index)]
    try:
        data, scene_image, truth, problem = _read_scene(image_path, label_path, _file_stamps(image_path, label_path))
    except (ValueError, OSError) as exc:  # LabelFormatError naming the file: nothing was uploaded
        st.error(f"Cannot read this scene: {exc}")
        st.stop()
    if problem:
        st.warning(problem)
    name = Path(image_path).name
else:
    data, name, digest = pc.upload_or_stop(
        f"Road photo (PNG, JPEG or WebP, up to {up.MAX_PIXELS / 1e6:.0f} megapixels)",
        key=UPLOAD_KEY,
        help_text=(
            f"Up to {up.MAX_UPLOAD_MB} MB and {up.MAX_PIXELS / 1e6:.0f} megapixels (e.g. 7200x5400; downscale a "
            "larger photo first: the models work on a shrunk copy anyway). Grey, RGBA and 16-bit "
            "images are converted to 8-bit RGB."
        ),
        prompt="Upload a road photo, or pick a synthetic scene above.",
    )
if source == SYNTHETIC:  # read from the data folder as test reads it (WebP, 16-bit too), not as an upload
    decoded = up.RGBImage(name=name, image=scene_image)
    digest = pc.digest(data)
    pc.show_notes(decoded.notes)
else:
    decoded = pc.decoded_or_stop(name, lambda: _decode(digest, name, data))
image = decoded.image
if source == UPLOAD and (warning := up.unlike_dashcam(image.shape[1], image.shape[0], "photo", TRAINED_ON)):
    st.warning(warning)
if source == UPLOAD and (warning := up.grey_photo(decoded, TRAINED_ON)):
    st.warning(warning)
height, width = image.shape[:2]
shown, shown_scale = _display(digest, image)
st.caption(
    f"{name}: {width}x{height} pixels" + (f", shown at {shown.shape[1]} px wide" if shown_scale < 1 else "")
)

objects_tab, instances_tab, anomaly_tab = st.tabs(["Objects", "Instances", "Road anomalies"])


def _model_or_warning(key: str, available: bool, what: str, caption_limit: int = 6):
    """The loaded task of ``key``, or None after a warning (nothing to load) or a load error (never a
    traceback); ``what`` names the model in the messages ("detector", ...)."""
    if not available:
        st.warning(f"No {what} checkpoint: `{dm.train_command(key)}`")
        return None
    try:
        task = pc.load_model(key)
    except Exception as exc:  # noqa: BLE001 - a checkpoint from another version: say so, no traceback
        pc.show_load_error(key, f"the {what} checkpoint", exc)
        return None
    if task is None:
        st.warning(f"No {what} weights: `{dm.train_command(key)}`")
        return None
    pc.checkpoint_caption(key, limit=caption_limit)
    return task


def _score_slider(column, key: str, task, slider_key: str, judge: str, items: str) -> float:
    """The score-threshold slider of a box / instance tab. It starts at the weights' operating point (best F1
    on the validation split, recorded in the model card); without one, where ``predict`` draws (its
    ``predict_score_thresh``, a run-time setting not saved in checkpoints). It starts at that threshold as it
    is, not rounded to the slider's steps (0.37 opened at 0.35 and drew boxes ``predict`` does not): Streamlit
    takes a start off its step grid as given."""
    point = {} if _own(key) else dm.operating_point(key)
    start = min(1.0, max(0.05, float(point.get("threshold", task.predict_score_thresh))))
    return column.slider(
        "Score threshold",
        0.05,
        1.0,
        start,
        0.01,
        key=slider_key,
        persist_state=pc.KEEP,
        help=(
            f"Starts at {point['threshold']:.2f}, where the {judge}'s F1 was best on the validation split "
            f"(precision {point['precision']:.2f}, recall {point['recall']:.2f})."
            if point
            else f"{items.capitalize()} below this score are hidden."
        ),
    )


def _nothing_shown_note(
    pred: dict,
    kept: dict,
    threshold: float,
    chosen: list[str],
    class_names: list[str],
    things: tuple[str, str],
) -> None:
    """When the model found something but nothing is drawn, say what hides it: the class filter (``chosen``),
    the score threshold, or both; ``things``: the singular and plural ("box", "boxes")."""
    if len(kept["scores"]) or not len(pred["scores"]):
        return
    one, many = things
    names = np.array(class_names)[pred["labels"].astype(int)]
    selected = np.isin(names, chosen)
    above = pred["scores"] >= threshold
    hidden = Counter(names[above & ~selected].tolist())  # reach the threshold, hidden by the class filter
    listed = ", ".join(f"{cls} {n}" for cls, n in sorted(hidden.items()))
    n = sum(hidden.values())
    if not chosen:
        st.info(
            f"No class is selected under Classes: {n} {one if n == 1 else many} at or above the threshold "
            f"{threshold:.2f} {'is' if n == 1 else 'are'} hidden ({listed}). Select classes to see them."
            if n
            else f"No class is selected under Classes (and no {one} reaches the threshold {threshold:.2f})."
        )
        return
    which = "" if set(chosen) == set(class_names) else " or ".join(chosen) + " "
    if selected.any():
        best, limit = pc.below_threshold(float(pred["scores"][selected].max()), threshold)
        text = (
            f"No {which}{one} reaches the threshold {limit}; the best {which.strip() + ' ' if which else ''}"
            f"score here is {best}. Lower the slider to see the weaker ones."
        )
    else:
        text = f"The model found no {which}{one} here."
    if n:
        text += (
            f" {n} {one if n == 1 else many} of other classes ({listed}) {'reaches' if n == 1 else 'reach'} the "
            "threshold but the class filter hides them: select their classes under Classes to see them."
        )
    st.info(text)


def _result_or_error(run, what: str):
    """``run()``, or None after an error message naming ``what`` (e.g. a checkpoint whose task code changed
    since, or a score these weights cannot give): the page shows a message, never a traceback."""
    try:
        return run()
    except Exception as exc:  # noqa: BLE001
        st.error(f"The {what} failed on this image: {type(exc).__name__}: {exc}")
        return None


def _objects() -> None:
    """The detector tab; returns early (with a message) when the model cannot run."""
    detector = _model_or_warning(DETECTION, have_det, "detector")
    if detector is None:
        return
    in_h, in_w = detector.model.input_size
    st.caption(
        f"The detector scales every photo into its {in_w}x{in_h} input (aspect ratio kept) and maps the "
        "boxes back to the photo's pixels."
    )
    class_names = list(detector.class_names)
    pred = _result_or_error(lambda: _detect(pc.model_token(DETECTION), digest, image), "detector")
    if pred is None:
        return
    if note := _example_truth(DETECTION, image_path, class_names):
        st.caption(note)
    c1, c2 = st.columns([1, 2])
    threshold = _score_slider(c1, DETECTION, detector, "driving_det_threshold", "detector", "detections")
    chosen = c2.multiselect("Classes", class_names, default=class_names, key="driving_det_classes")
    kept = _filter(pred, threshold, [class_names.index(c) for c in chosen])
    below = int((pred["scores"] < threshold).sum())
    st.image(
        _draw(shown, kept, class_names, shown_scale),
        caption=f"{len(kept['scores'])} of {len(pred['scores'])} detections shown; {below} below the score threshold",
        width="stretch",
    )
    _nothing_shown_note(pred, kept, threshold, chosen, class_names, ("box", "boxes"))
    if len(kept["scores"]):
        st.dataframe(
            [
                {
                    "class": class_names[int(lab)],
                    "score": round(float(s), 3),
                    **{k: round(float(v), 1) for k, v in zip(("left", "top", "right", "bottom"), box)},
                }
                for box, s, lab in zip(kept["boxes"], kept["scores"], kept["labels"])
            ],
            hide_index=True,
        )
    d1, d2 = st.columns(2)
    kitti = _result_or_error(lambda: _kitti_text(kept, class_names), "KITTI text export")
    if kitti is not None:
        d1.download_button(
            "Detections (KITTI text)",
            data=kitti,
            file_name=f"{up.download_stem(name)}.txt",
            mime="text/plain",
            key="driving_dl_kitti",
        )
    d2.download_button(
        "Image with boxes (PNG)",
        data=lambda: up.png_bytes(_draw(image, kept, class_names)),
        file_name=f"{up.download_stem(name)}_detections.png",
        mime="image/png",
        key="driving_dl_boxes",
    )


def _instances() -> None:
    """The instance tab (same flow as the detector's); returns early (with a message) when the model cannot
    run."""
    from domains.driving.instances.predict import instance_list

    segmenter = _model_or_warning(INSTANCES, have_inst, "instance-segmentation")
    if segmenter is None:
        return
    class_names = list(segmenter.class_names)
    pred = _result_or_error(lambda: _segment(pc.model_token(INSTANCES), digest, image), "instance segmenter")
    if pred is None:
        return
    in_h, in_w = segmenter.model.input_size
    mask_h, mask_w = pred["masks"].shape[1:]
    masks = (
        f"its masks are kept at {mask_w}x{mask_h}, the photo's own size"
        if (mask_h, mask_w) == image.shape[:2]
        else f"its masks are kept at {mask_w}x{mask_h} and upscaled for the view and the downloads"
    )
    st.caption(
        f"Mask R-CNN scales every photo into its {in_w}x{in_h} input (aspect ratio kept); {masks}, boxes in "
        "the photo's pixels."
    )
    if note := _example_truth(INSTANCES, image_path, class_names):
        st.caption(note)
    c1, c2, c3 = st.columns([1, 2, 1])
    threshold = _score_slider(c1, INSTANCES, segmenter, "driving_inst_threshold", "model", "instances")
    chosen = c2.multiselect("Classes", class_names, default=class_names, key="driving_inst_classes")
    alpha = c3.slider("Mask opacity", 0.0, 1.0, 0.5, 0.05, key="driving_inst_alpha", persist_state=pc.KEEP)
    kept = _filter(pred, threshold, [class_names.index(c) for c in chosen])
    below = int((pred["scores"] < threshold).sum())
    ids_shown = dm.instance_ids(kept, shown.shape[:2])
    st.image(
        _draw_instances(shown, kept, class_names, ids_shown, alpha, shown_scale),
        caption=f"{len(kept['scores'])} of {len(pred['scores'])} instances shown; {below} below the score threshold",
        width="stretch",
    )
    _nothing_shown_note(pred, kept, threshold, chosen, class_names, ("instance", "instances"))
    order = ids_shown[1]  # id k of the table, the PNG and the text list: kept[...][order[k - 1]]
    if order:
        st.dataframe(
            [
                {
                    "id": k,
                    "class": class_names[int(kept["labels"][i])],
                    "score": round(float(kept["scores"][i]), 3),
                    "mask area (px, before overlaps)": round(float(kept["areas"][i])),
                    **{
                        k2: round(float(v), 1)
                        for k2, v in zip(("left", "top", "right", "bottom"), kept["boxes"][i])
                    },
                }
                for k, i in enumerate(order, start=1)
            ],
            hide_index=True,
        )
    # the photo-size id map only when a download asks for it (deferred callables), computed once; the shown
    # map when the photo is shown at its own size
    full_ids = (
        (lambda: ids_shown)
        if shown_scale == 1
        else functools.cache(lambda: dm.instance_ids(kept, image.shape[:2]))
    )
    d1, d2, d3 = st.columns(3)
    d1.download_button(
        "Instance ids (16-bit PNG)",
        data=lambda: dm.id_map_png(full_ids()[0]),
        file_name=f"{up.download_stem(name)}_instances.png",
        mime="image/png",
        key="driving_dl_instance_ids",
        help="uint16 at the photo's size: 0 background, k = line k of the instance list (highest score first)",
    )
    d2.download_button(
        "Instance list (text)",
        data=instance_list(kept, order, class_names),  # as predict writes it
        file_name=f"{up.download_stem(name)}_instances.txt",
        mime="text/plain",
        key="driving_dl_instance_list",
        help="one line per id: k class score left top right bottom (as `predict` writes)",
    )
    d3.download_button(
        "Image with masks (PNG)",
        data=lambda: up.png_bytes(_draw_instances(image, kept, class_names, full_ids(), alpha)),
        file_name=f"{up.download_stem(name)}_instances_overlay.png",
        mime="image/png",
        key="driving_dl_instance_overlay",
    )


def _anomalies() -> None:
    """The anomaly tab; returns early (with a message) when the model cannot run."""
    segmenter = _model_or_warning(ANOMALY, have_ano, "anomaly", caption_limit=8)
    if segmenter is None:
        return
    st.caption(
        f"Test figures are for the checkpoint's own score, `{segmenter.score}` (pixel AP, AUROC, FPR at "
        "95 % TPR; component mean F1; frame-level AUROC)."
    )
    names = dm.anomaly_scores(segmenter)
    c1, c2, c3 = st.columns(3)
    score_name = c1.selectbox("Anomaly score", names, key="driving_ano_score", persist_state=pc.KEEP)
    result = _result_or_error(
        lambda: _analyse(pc.model_token(ANOMALY), digest, score_name, image), f"anomaly model ({score_name})"
    )
    if result is None:
        return
    fixed = _fixed_range(segmenter, score_name)
    if fixed is not None:
        # one scale for every photo: the colours and the share of pixels above the threshold compare across
        # scenes, and a threshold the user set stays when the scene changes (the slider's range does not move)
        lo, hi = fixed
        start, step, why = _fixed_start(score_name, lo, hi)
        threshold = c2.slider(
            "Anomaly threshold",
            lo,
            hi,
            start,
            step,
            key=f"driving_ano_threshold_{score_name}",
            help=why,
            persist_state=pc.KEEP,
        )
        top = None
    else:
        # no fixed scale: colours span this image's own scores, and the slider picks a share of its pixels
        # (a fixed range, so the user's choice stays when the scene changes); said on the page
        lo, hi = result["range"]
        top = c2.slider(
            "Outline this image's top % of pixels",
            *RELATIVE_TOP,
            key=f"driving_ano_top_{score_name}",
            persist_state=pc.KEEP,
            help=f"`{score_name}` has no fixed scale: the threshold is this image's own percentile.",
        )
        threshold = _top_percentile(pc.model_token(ANOMALY), digest, score_name, top, result["score"])
    alpha = c3.slider("Heat-map opacity", 0.0, 1.0, 0.5, 0.05, key="driving_ano_alpha", persist_state=pc.KEEP)
    st.caption(
        f"The segmenter sees the photo resized to {'x'.join(map(str, result['analysis_size']))} "
        "(fitted into the training frames' size, its aspect kept); the map is resized back to the photo."
    )
    from domains.driving.anomaly.predict import overlay_heatmap

    score_small = (
        result["score"]
        if shown_scale == 1
        else _score_shown(
            pc.model_token(ANOMALY), digest, score_name, (shown.shape[1], shown.shape[0]), result["score"]
        )
    )
    mask_small = score_small >= threshold
    view = _outline(overlay_heatmap(shown, score_small, alpha=alpha, vmin=lo, vmax=hi), mask_small)
    m1, m2 = st.columns(2)
    m1.metric(
        "Frame anomaly score",
        f"{result['frame_score']:.3f}",
        help="high pixel scores inside the predicted road (see the model's image_score settings)",
    )
    if top is None:
        share = _share_above(pc.model_token(ANOMALY), digest, score_name, threshold, result["score"])
        m2.metric("Pixels above the threshold", f"{100 * share:.2f} %")
        caption = f"{score_name}: blue {lo:g} .. red {hi:.3g} (fixed scale); white outline: score >= {threshold:.3g}"
    else:
        st.info(_relative_note(score_name, lo, hi, top, threshold, names, segmenter))
        caption = (
            f"{score_name}: blue = this image's lowest .. red = its highest score; white outline: its top "
            f"{top:g} % of pixels (score >= {threshold:.3g})"
        )
    st.image(view, caption=caption, width="stretch")
    if truth is not None:
        vis = np.zeros((*truth.shape, 3), np.uint8)
        vis[truth == 1] = (255, 80, 0)
        vis[truth == 255] = (90, 90, 90)
        if shown_scale < 1:
            vis = cv2.resize(vis, (shown.shape[1], shown.shape[0]), interpolation=cv2.INTER_NEAREST)
        st.image(vis, caption="Ground truth: orange anomaly, grey void (ignored)", width="stretch")
    d1, d2, d3 = st.columns(3)
    d1.download_button(
        "Heat-map overlay (PNG)",
        data=lambda: up.png_bytes(overlay_heatmap(image, result["score"], alpha, lo, hi)),
        file_name=f"{up.download_stem(name)}_{score_name}_overlay.png",
        mime="image/png",
        key="driving_dl_overlay",
    )
    d2.download_button(
        "Anomaly mask (PNG)",
        data=lambda: up.png_bytes(((result["score"] >= threshold) * 255).astype(np.uint8)),
        file_name=f"{up.download_stem(name)}_{score_name}_mask.png",
        mime="image/png",
        key="driving_dl_mask",
    )
    d3.download_button(
        "Score map (16-bit PNG)",
        data=lambda: _score_png16(result["score"], lo, hi),
        file_name=f"{up.download_stem(name)}_{score_name}_score16.png",
        mime="image/png",
        key="driving_dl_score",
        help=f"uint16, linear: 0 = {score_name} {lo:.4g}, 65535 = {hi:.4g}"
        + ("" if top is None else " (this image's own lowest and highest score)"),
    )


with objects_tab:
    _objects()
with instances_tab:
    _instances()
with anomaly_tab:
    _anomalies()
