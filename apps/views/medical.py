"""Medical page: several plausible lesion segmentations per image, their mean; where the model is unsure."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import streamlit as st

from apps import demo_models as dm
from apps import page_common as pc
from apps import uploads as up

SYNTHETIC, UPLOAD = "Synthetic test image", "Upload a file"
UPLOAD_KEY = "medical_upload"  # the file uploader's; its decoded forms are kept under it (pc.upload_memo)
TILE = 112  # px per sample tile on screen
#: how many times smaller than the models learnt a resized slice makes a lesion before the page warns (and, for a
#: file that states no pixel size, starts at a window of its own pixels instead)
SHRINKS = 2.0


# ------------------------------------------------------------------------------------------------ caching


@st.cache_resource(show_spinner="Reading the synthetic test split ...", max_entries=2)
def _test_split(root: str):
    from domains.medical.data import LIDCPngDataset

    return LIDCPngDataset(root, "test")


@st.cache_data(max_entries=64, show_spinner=False)
def _test_item(root: str, index: int) -> tuple[np.ndarray, np.ndarray, str]:
    item = _test_split(root).load(index)
    return item["image"].astype(np.float32), item["masks"].astype(np.uint8), item["id"]


# An upload's decoded pixels are kept in its session (pc.upload_memo), not in st.cache_resource: that is shared by
# every session of the server and kept them after the session ended. Kept (never copied on a rerun: a
# 40-megapixel slice is 160 MB of float32) and never modified by the callers: without them every rerun (a seed, a
# sample count) converted and resized the whole slice again.


def _decode(digest: str, name: str, data: bytes, percentiles: tuple[float, float]) -> up.MedicalVolume:
    return pc.upload_memo(
        UPLOAD_KEY,
        "volume",
        (digest, percentiles),
        lambda: up.decode_medical(data, name, percentiles=percentiles),
        spinner="Decoding the upload ...",
    )


def _trained_percentiles(path: str) -> tuple[float, float]:
    """The intensity percentiles the weights at ``path`` learnt NIfTI slices at: the data settings stored with
    them (a checkpoint's, shipped weights' model card; :func:`dm.trained_data_settings`, read once per file
    version), 0.5 / 99.5 where none are."""
    from domains.medical.volumes import trained_percentiles

    return trained_percentiles(dm.trained_data_settings(path))


def _slice(digest: str, index: int, channel: int, volume: up.MedicalVolume) -> np.ndarray:
    return pc.upload_memo(UPLOAD_KEY, "slice", (digest, index, channel), lambda: volume.slice(index, channel))


def _fitted(
    digest: str, index: int, channel: int, size: int, mode: str, centre: tuple | None, volume: up.MedicalVolume
) -> tuple[np.ndarray, str, np.ndarray | None]:
    """The model's input from the slice, how it was made, and the whole slice's preview with the window drawn
    (None where the model sees the whole slice)."""

    def make():
        raw = _slice(digest, index, channel, volume)
        image, how = up.fit_to_model(raw, size, mode, volume.spacing, centre)
        rect = up.window_rect(raw.shape, size, mode, volume.spacing, centre)
        return image, how, (up.window_preview(raw, rect, volume.spacing) if rect else None)

    return pc.upload_memo(UPLOAD_KEY, "fitted", (digest, index, channel, size, mode, centre), make, max_entries=4)


@pc.per_upload(UPLOAD_KEY, lambda: source == UPLOAD, st.cache_data, 32, "Drawing samples ...", kept=8)
def _predict(token: str, key: str, image_key: str, num_samples: int, seed: int, _shown: tuple) -> dict:
    """The samples of the shown image, as shown: a synthetic test image's shared, an upload's in its session.
    ``_shown`` is (the image as the page shows it, the upload it came from or None; ``image_key`` names both):
    a NIfTI upload's slice goes to the model as training cut the file's (:meth:`up.MedicalVolume.to_model`) and
    its maps come back turned as shown (``from_model``) here, once per image, not on every rerun (a slider)."""
    image, volume = _shown
    model_input = np.ascontiguousarray(volume.to_model(image) if volume else image, dtype=np.float32)
    result = dm.medical_predict(pc.load_model(key), model_input, num_samples, seed)
    return result if volume is None else {what: volume.from_model(value) for what, value in result.items()}


@st.cache_data(max_entries=32, show_spinner=False)
def _scores(probs: np.ndarray, mean: np.ndarray, readers: np.ndarray, threshold: float) -> dict:
    return dm.medical_scores(probs, mean, readers, threshold)


# ------------------------------------------------------------------------------------------------ drawing


def _grey_rgb(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(dm.to_uint8(image), cv2.COLOR_GRAY2RGB)


def _overlay(image: np.ndarray, mask: np.ndarray, color=(255, 60, 60)) -> np.ndarray:
    """The grey image with the mask tinted and outlined."""
    rgb = _grey_rgb(image)
    m = mask.astype(bool)
    tint = rgb.copy()
    tint[m] = (0.5 * rgb[m] + 0.5 * np.array(color)).astype(np.uint8)
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(tint, contours, -1, color, 1)
    return tint


def _big(image: np.ndarray, size: int = 256) -> np.ndarray:
    """Nearest-neighbour enlargement so small crops stay crisp on screen."""
    h, w = image.shape[:2]
    factor = max(1, size // max(h, w))
    return (
        cv2.resize(image, (w * factor, h * factor), interpolation=cv2.INTER_NEAREST) if factor > 1 else image
    )


@dataclass(eq=False)
class SliceGrid:
    """The uploaded slice (its own pixels, [0, 1]) the model's input came from and how (:func:`up.fit_to_model`'s
    arguments), so maps on the input go back on it; ``volume`` and ``index``: the upload and its slice, whose
    :class:`up.NiftiGrid` (NIfTI and placed DICOM uploads) takes the mean mask out as a NIfTI."""

    image: np.ndarray
    mode: str
    spacing: tuple[float, float] | None = None
    centre: tuple[float, float] | None = None
    volume: up.MedicalVolume | None = None
    index: int = 0

    @property
    def nifti(self) -> up.NiftiGrid | None:
        return self.volume.nifti_grid if self.volume is not None else None

    def to_slice(self, model_map: np.ndarray) -> np.ndarray:
        return up.to_slice(model_map, self.image.shape, self.mode, self.spacing, self.centre)

    def nifti_mask(self, mask: np.ndarray) -> bytes:
        """``mask`` on this slice of the volume, the other slices 0, as a .nii.gz on the file's grid."""
        shown = np.zeros((self.volume.num_slices, *self.volume.shape2d), np.uint8)
        shown[self.index] = mask
        return self.nifti.mask_file(shown)

    def slab_mask(self, task, first: int, last: int, channel: int, num_samples: int, seed: int, threshold: float):
        """The mean masks of the page's slices ``first``..``last``, each fitted to the model as this one is (the
        same mode and window, given to it as training cut the file's slices) and put back on its pixels, as a
        .nii.gz on the file's grid (the others 0): a lesion spans several slices, and the models segment one at a
        time."""
        size = dm.medical_input_size(task)
        shown = np.zeros((self.volume.num_slices, *self.volume.shape2d), np.uint8)
        for k in range(first, last + 1):
            raw = self.volume.slice(k, channel)
            image, _ = up.fit_to_model(raw, size, self.mode, self.spacing, self.centre)
            predicted = dm.medical_predict(task, self.volume.to_model(image), num_samples, seed)
            mean = self.volume.from_model(predicted["mean"])
            shown[k] = up.to_slice(mean, raw.shape, self.mode, self.spacing, self.centre) >= threshold
        return self.nifti.mask_file(shown)


def _nifti_place(volume: up.MedicalVolume) -> str:
    """Where an upload's NIfTI mask lies: a NIfTI's voxel grid, or where the DICOM header puts its frame(s)."""
    if not volume.nifti_grid.from_dicom:
        return (
            "on the upload's voxel grid (its spatial shape and affine), this slice filled and the others 0: it "
            "overlays the scan in ITK-SNAP or 3D Slicer"
        )
    which = (
        f"its {volume.num_slices} frames (this one filled, the others 0) placed where the DICOM header puts them"
        if volume.is_volume
        else "a one-slice NIfTI placed where the DICOM header puts the slice"
    )
    if volume.format == "DICOM series" and volume.is_volume:  # a zip of single-frame files, each placed itself
        which = f"its {volume.num_slices} slices (this one filled, the others 0) placed where their DICOM headers put them"
    return (
        f"as {which} (ImagePositionPatient, ImageOrientationPatient, PixelSpacing): it overlays the series in "
        "3D Slicer"
    )


def _model_grid_files(image: np.ndarray, result: dict, threshold: float, prefix: str = "") -> dict[str, bytes]:
    """The input, each sample's mask, the mean and the entropy as PNGs on the model's input grid."""
    files = {f"{prefix}input.png": up.png_bytes(dm.to_uint8(image))}
    for i, p in enumerate(result["probs"]):
        files[f"{prefix}sample_{i:02d}.png"] = _mask_png(p, threshold)
    files[f"{prefix}mean_prob.png"] = up.png_bytes(dm.to_uint8(result["mean"]))
    files[f"{prefix}mean_mask.png"] = _mask_png(result["mean"], threshold)
    files[f"{prefix}uncertainty_entropy.png"] = up.png_bytes(dm.to_uint8(result["uncertainty"]))
    return files


def _mask_png(prob: np.ndarray, threshold: float) -> bytes:
    return up.png_bytes(((prob >= threshold) * 255).astype(np.uint8))


def _downloads(
    name: str,
    image: np.ndarray,
    result: dict,
    threshold: float,
    grid: str,
    back: SliceGrid | None = None,
    made_by: str = "",
) -> dict[str, bytes]:
    """The zip's files. ``grid`` says where the model's input sits on the file's pixels; with ``back`` (an
    upload whose slice the model saw resized or through a window) the masks and maps are also put back on the
    slice's own pixels (and, for a NIfTI upload, the mean mask on the volume's voxel grid), which is what a
    viewer overlays on the scan."""
    legend = (
        f"sample_NN.png: sampled masks (0/255, probability >= {threshold}).\n"
        "mean_prob.png: mean foreground probability x 255. mean_mask.png: mean >= threshold.\n"
        "uncertainty_entropy.png: binary entropy of the mean probability (bits) x 255.\n"
    )
    model_size = f"{image.shape[1]}x{image.shape[0]}"
    if back is None:
        files = _model_grid_files(image, result, threshold)
        where = f"Every image is the model's {model_size} input: {grid}.\n"
    else:
        files = {"slice.png": up.png_bytes(dm.to_uint8(back.image))}
        for i, p in enumerate(result["probs"]):
            files[f"sample_{i:02d}.png"] = _mask_png(back.to_slice(p), threshold)
        mean = back.to_slice(result["mean"])
        files["mean_prob.png"] = up.png_bytes(dm.to_uint8(mean))
        files["mean_mask.png"] = _mask_png(mean, threshold)
        files["uncertainty_entropy.png"] = up.png_bytes(dm.to_uint8(back.to_slice(result["uncertainty"])))
        height, width = back.image.shape
        shown = ""
        if back.nifti is not None and not back.nifti.from_dicom:  # a NIfTI's slices are turned for the screen
            shown = (
                " as the page shows it (anterior up, the patient's right on the left: not the file's array order, "
                "which mean_mask.nii.gz keeps)"
            )
        where = (
            f"The images at the top level are on the slice's own {width}x{height} pixels{shown} (slice.png), the "
            f"model's maps resampled back (bilinear; 0 where the model's window did not reach). model_input/ "
            f"holds the same on the model's {model_size} input: {grid}.\n"
        )
        if back.volume is not None and back.volume.model_view is not None:
            where += (
                "model_input/ is turned as the page shows it; the model read it as training cuts the file's "
                "slices (each voxel axis in its stored direction).\n"
            )
        if back.nifti is not None:
            files["mean_mask.nii.gz"] = back.nifti_mask(mean >= threshold)
            where += f"mean_mask.nii.gz: the mean mask (0/1) {_nifti_place(back.volume)}.\n"
        files |= _model_grid_files(image, result, threshold, prefix="model_input/")
    files["README.txt"] = (f"Segmentations of {name}.\n{made_by}" + legend + where).encode()
    return files


# ------------------------------------------------------------------------------------------------- page


st.title("Medical imaging: lesion segmentation that says how sure it is")
st.write(
    "Radiologists outline the same lesion differently. The probabilistic models draw several plausible "
    "segmentations; where they disagree, the model is unsure. The U-Net gives one answer."
)


def _medical_key(path: str) -> str:
    """Which of the page's models a user checkpoint replaces: the one its network (hyper-parameters' class_path)
    is or extends, by the task's rule (:func:`domains.medical.models.model_name`): a subclass of the Prob. U-Net
    replaces the Prob. U-Net."""
    from domains.medical.models import MODELS, model_name

    network = (dm.read_checkpoint(path).get("hyper_parameters") or {}).get("network") or {}
    class_path = network.get("class_path")
    if not class_path:  # a bare state dict, or another tool's file: no network is named to route by
        raise ValueError(f"it names no network (hyper_parameters.network): {pc.NOT_A_CHECKPOINT} that fit wrote")
    name = model_name(str(class_path))
    key = next((k for k in dm.MEDICAL_KEYS if name and dm.DEMO_MODELS[k].model_name == MODELS[name].__name__), None)
    if key is None:
        known = ", ".join(dm.DEMO_MODELS[k].model_name for k in dm.MEDICAL_KEYS)
        raise ValueError(
            f"it holds model {class_path!r}, which is none of {known} nor a subclass of one (a medical checkpoint?)"
        )
    return key


def _far_from_training(volume, image: np.ndarray, trained_on: str | None, windowed: bool = False) -> str | None:
    """A plain warning when an upload is unlike the grey slices the models learnt from; ``trained_on``: the
    weights' training data (:func:`dm.training_data`: the demo's learnt from synthetic CT-like crops);
    ``windowed``: the model sees a window of the slice (which can be moved onto the lesion)."""
    if any("colour" in note for note in volume.notes):
        learnt = f"these weights learnt from {trained_on}" if trained_on else "their training data is not recorded"
        return (
            f"This is a colour image, and the models read grey slices: {learnt}. On a photo their masks mean "
            "nothing."
        )
    if float(np.std(image)) < 0.02 and windowed:
        return (
            "The model's window is almost uniform: there is nothing for the models to outline there. Move it onto "
            "the lesion with the window centre sliders."
        )
    if float(np.std(image)) < 0.02:
        return "This slice is almost uniform: there is nothing for the models to outline."
    return None


def _matched_iou_note(n: int, m: int) -> str | None:
    """What the Hungarian-matched IoU scores when ``n`` samples are no multiple of the ``m`` readers (the metric
    says so only in the server's console, :func:`domains.medical.metrics.hungarian_matched_iou`); None when
    they are, as in the published protocol."""
    if n >= m and n % m == 0:
        return None
    if n < m:
        what = (
            f"only the best-matching {n} of the {m} readers are scored"
            + (" (1 sample: the best single reader's IoU)" if n == 1 else "")
            + ", the readers the samples miss do not count"
        )
    else:
        what = f"the readers are not weighted equally (each is matched {n // m} or {n // m + 1} times)"
    return (
        f"Hungarian-matched IoU of {n} sample{'s' * (n != 1)} for {m} readers: {what}. The published protocol "
        f"matches 16 samples to 4 readers, each reader 4 times: choose a multiple of {m} samples to compare it "
        "with the model card's."
    )


def _shrunk(shape: tuple[int, int], size: int, spacing: tuple[float, float] | None) -> str | None:
    """A warning when resizing the whole slice to the model's input shrinks a lesion :data:`SHRINKS` times or
    more below the scale the models learnt (``size`` pixels of :data:`up.MODEL_PIXEL_MM`), saying which window
    keeps it; None otherwise."""
    h, w = shape
    whole = f"Resizing the whole {w}x{h} slice to the model's {size}x{size} input"
    if spacing is None:
        times = max(h, w) / size
        what = (
            f"makes everything in it {times:.1f} times smaller. The models learnt lesions in {size}x{size} crops of "
            f"{up.MODEL_PIXEL_MM:g} mm pixels (a CT slice's are 0.5-1 mm): a lesion shrunk this much is "
            "outlined wrongly or missed"
        )
        choose = "a window of the file's own pixels"
    else:
        pixel_mm = max(h * spacing[0], w * spacing[1]) / size
        times = pixel_mm / up.MODEL_PIXEL_MM
        what = (
            f"makes its pixels {pixel_mm:.2f} mm, {times:.1f} times the models' {up.MODEL_PIXEL_MM:g} mm: a lesion "
            "is that many times smaller than the models learnt, and is outlined wrongly or missed"
        )
        choose = f"a window at the models' {up.MODEL_PIXEL_MM:g} mm pixels"
    if times < SHRINKS:
        return None
    return f'{whole} {what}. Choose "{choose}" above and move the window onto the lesion.'


pc.own_checkpoint_picker(
    list(dm.MEDICAL_KEYS), "Use your own medical checkpoint", route=_medical_key, select_key="medical_model"
)
pc.show_missing(list(dm.MEDICAL_KEYS))
available = [k for k in dm.MEDICAL_KEYS if pc.model_path(k) is not None]
if not available:
    st.error(
        f"No medical checkpoint to show yet: run `{dm.demo_command('demo', '--train')}` (or a command above) and "
        "reload this page."
    )
    st.stop()

c1, c2, c3 = st.columns([2, 2, 1])
# the page opens on a sampling model: several plausible masks and where they disagree are its point; the U-Net's
# one mask is the baseline beside them
first = next((k for k in ("medical_prob_unet", "medical_hpu_net") if k in available), available[0])
if st.session_state.get("medical_model") not in available:
    # the box's one source of its value is the session state (the sidebar sets it to the model a checkpoint
    # replaces): a default given to the box besides made Streamlit warn in the server's log on every routing
    st.session_state["medical_model"] = first
key = c1.selectbox(
    "Model",
    available,
    format_func=lambda k: dm.DEMO_MODELS[k].title,
    key="medical_model",
    persist_state=pc.KEEP,
)
num_samples = c2.slider("Samples per image", 1, 32, 16, key="medical_samples", persist_state=pc.KEEP)
seed = int(
    c3.number_input(
        "Seed", min_value=0, max_value=99_999, value=0, step=1, key="medical_seed", persist_state=pc.KEEP
    )
)

try:
    task = pc.load_model(key)
except Exception as exc:  # noqa: BLE001 - a checkpoint from another version: say so, no traceback
    pc.show_load_error(key, f"the checkpoint for {dm.DEMO_MODELS[key].title}", exc)
    st.stop()
pc.checkpoint_caption(key)
threshold = float(getattr(task, "threshold", 0.5))
size = dm.medical_input_size(task)

source = st.radio("Image", [SYNTHETIC, UPLOAD], horizontal=True, key="medical_source", persist_state=pc.KEEP)
readers = None
back = None  # the file's slice, where the model saw it resized or through a window: downloads go back on it
oriented = None  # an upload, whose slices the model gets as training cut its file's (up.MedicalVolume.to_model)
card_ged = None  # the model card's GED of the chosen image, when it is the card's best or worst
if source == SYNTHETIC:
    root = dm.medical_data_root()
    if not root.is_dir() and root == dm.default_medical_data():
        with st.spinner("Generating the synthetic LIDC-style data set (first run only) ..."):
            from domains.medical.synthetic import ensure_synthetic_lidc

            try:
                ensure_synthetic_lidc(root)
            except OSError as exc:  # a read-only or full folder: where, and what to set
                st.error(dm.unwritable_data("LIDC-style data set", root, dm.ENV_MEDICAL_DATA, exc))
                st.stop()
    try:
        dataset = _test_split(str(root))
    except (FileNotFoundError, ValueError) as exc:
        st.error(f"No synthetic test images: {exc}")
        st.stop()
    # the weights' best test image first (where the model is right), their worst second, then all of them
    own = bool(st.session_state.get(pc.OVERRIDES, {}).get(key))
    recorded = {} if own else dm.examples(key)
    # options are what they mean ("best", "worst" or an image id), not list positions or per-model labels:
    # switching model keeps the image, or shows the new model's own best / worst
    position = {image_id: i for i, image_id in enumerate(dataset.ids)}
    ranked = {w: recorded[w] for w in ("best", "worst") if w in recorded and recorded[w]["id"] in position}
    choices = {w: position[example["id"]] for w, example in ranked.items()} | position
    what = {"best": "right", "worst": "wrong"}

    def _label(option: str) -> str:
        if option not in ranked:
            return option
        example = ranked[option]
        # the card's GED comes from its own draw of samples; the page draws its own, so the label says whose
        return (
            f"{example['id']}: where the model is most {what[option]} (its {option} test image on the model "
            f"card's test run, GED {example['ged']:.2f} there)"
        )

    pick = st.selectbox("Test image", list(choices), format_func=_label, key="medical_item")
    try:
        image, readers, name = _test_item(str(root), choices[pick])
    except ValueError as exc:  # MedicalDataError: a set of smaller images than the reader's crop, a bad file
        st.error(f"Cannot read this test image of `{root}` (`${dm.ENV_MEDICAL_DATA}`): {exc}")
        st.stop()
    card_ged = float(ranked[pick]["ged"]) if pick in ranked else None
    stem = up.download_stem(name)
    grid = f"the test image as stored ({image.shape[1]}x{image.shape[0]})"
    if image.shape != (size, size):
        back = SliceGrid(image, "crop")
        image, how = up.fit_to_model(image, size, "crop")
        grid = f"the test image {how}"
        readers = np.stack([up.fit_to_model(r.astype(np.float32), size, "crop")[0] for r in readers]) > 0.5
        st.caption(f"Image {how}.")
else:
    data, file_name, data_digest = pc.upload_or_stop(
        "PNG / JPEG image, DICOM file (.dcm), zip of one DICOM series or NIfTI volume (.nii, .nii.gz)",
        key=UPLOAD_KEY,
        help_text=f"Up to {up.MAX_UPLOAD_MB} MB. Nothing is kept after the session ends.",
        prompt="Upload a CT slice or volume, or pick a synthetic test image above.",
    )
    percentiles = _trained_percentiles(str(pc.model_path(key)))  # a volume's window, as trained
    scaled = f"{data_digest} {percentiles}"  # its slices: another model's percentiles scale them anew
    volume = pc.decoded_or_stop(file_name, lambda: _decode(data_digest, file_name, data, percentiles))
    channel, index = 0, 0
    if volume.num_channels > 1:
        channel = st.slider("Channel / time point", 0, volume.num_channels - 1, 0, key="medical_channel")
    slice_name = ""
    if volume.is_volume:
        # a NIfTI's slices are shown in RAS+ order; a DICOM's frames, as stored
        order = " (inferior to superior)" if volume.nifti_grid and not volume.nifti_grid.from_dicom else ""
        index = st.slider(f"Slice{order}", 0, volume.num_slices - 1, volume.num_slices // 2, key="medical_slice")
        slice_name = f"slice {index}"
        if volume.nifti_grid is not None:  # names and downloads say the file's own slice, not the page's count
            axis, file_index = volume.nifti_grid.file_slice(index, volume.num_slices)
            slice_name = f"slice {file_index}" + (f" of its axis {axis}" if axis != 2 else "")
            if (axis, file_index) != (2, index):
                st.caption(f"The page's slice {index} is the file's {slice_name} (its own array order).")
    raw = _slice(scaled, index, channel, volume)
    name = f"{file_name} {slice_name}" if slice_name else file_name
    stem = up.download_stem(file_name) + ("_" + slice_name.replace(" ", "_") if slice_name else "")
    stem += f"_channel_{channel}" if volume.num_channels > 1 else ""
    mode, centre = "resize", None
    # the models learnt lesions at the scale of 128-pixel crops of 0.5 mm: resizing a 512-pixel CT slice to 128
    # shrinks a nodule four times below it, and they outline it wrongly or not at all. The default is a window
    # at the models' 0.5 mm where the file states its pixel size, else, for a slice much larger than the
    # input, a window of the file's own pixels (a CT slice's are 0.5-1 mm)
    modes = list(up.FIT_MODES if volume.spacing is not None else up.FIT_MODES[1:])  # "mm" needs the pixel size
    own_pixels_first = volume.spacing is None and max(raw.shape) >= SHRINKS * size
    fit_key = f"medical_fit_{len(modes)}"  # its own widget per choice list: "mm" is the default wherever offered
    if st.session_state.get("medical_fit_upload") != data_digest:  # another file starts at its own default
        st.session_state.pop(fit_key, None)
        st.session_state["medical_fit_upload"] = data_digest
    if raw.shape != (size, size) or volume.spacing is not None:
        mode = st.radio(
            f"Fit the {raw.shape[1]}x{raw.shape[0]} slice to the model's {size}x{size} input",
            modes,
            index=modes.index("crop") if own_pixels_first else 0,
            format_func=lambda m: {
                "mm": f"a window at the models' {up.MODEL_PIXEL_MM:g} mm pixels (the file's pixel size known)",
                "resize": "resize the whole slice (padded to a square: never squashed)",
                "crop": "a window of the file's own pixels",
            }[m],
            horizontal=True,
            key=fit_key,
        )
    if mode != "resize":  # where the window sits: lesions are rarely at the slice's centre
        h, w = raw.shape
        cx, cy = st.columns(2)
        centre = (
            cy.slider("Window centre, row", 0, h - 1, h // 2, key="medical_centre_row"),
            cx.slider("Window centre, column", 0, w - 1, w // 2, key="medical_centre_col"),
        )
    image, how, preview = _fitted(scaled, index, channel, size, mode, centre, volume)
    if volume.nifti_grid is not None or image.shape != raw.shape or not np.array_equal(image, raw):
        back = SliceGrid(raw, mode, volume.spacing, centre, volume, index)
    st.caption(f"{volume.format} upload, {how}.")
    grid = f"{name}, {how}"
    if preview is not None:
        top, left, rows, cols = up.window_rect(raw.shape, size, mode, volume.spacing, centre)
        grid += (
            f"; the window is rows {top}-{top + rows - 1}, columns {left}-{left + cols - 1} of the slice's "
            f"{raw.shape[1]}x{raw.shape[0]} pixels" + (", resampled to the model's size" if mode == "mm" else "")
        )
        larger = rows > raw.shape[0] or cols > raw.shape[1]
        caption = (
            "The whole slice; the model's window is larger than it (edge-padded around it)"
            if larger
            else "The whole slice; the model sees the yellow window"
        )
        st.image(preview, caption=caption, width=256)
    if mode == "resize" and (warning := _shrunk(raw.shape, size, volume.spacing)):
        st.warning(warning)
    if warning := _far_from_training(volume, image, dm.training_data(key, pc.model_path(key)), preview is not None):
        st.warning(warning)
    oriented = volume

# the page shows a NIfTI slice in the radiological view; the model gets it as training cut the file's slices, and
# its maps come back as shown (in _predict). An upload's image is named by what made it (_fitted's key: the file,
# its scaling, slice, channel and fit), so a rerun hashes no pixels; a test image by its pixels (a cache shared by
# every session)
image_key = (
    f"{scaled} {index} {channel} {size} {mode} {centre}" if oriented is not None else pc.digest(image.tobytes())
)
try:
    result = _predict(pc.model_token(key), key, image_key, num_samples, seed, (image, oriented))
except Exception as exc:  # noqa: BLE001 - e.g. a checkpoint whose task code changed since
    st.error(f"The model failed on this image: {type(exc).__name__}: {exc}")
    st.stop()
samples = result["probs"] >= threshold

st.subheader(name)
a, b, c = st.columns(3)
a.image(_big(_grey_rgb(image)), caption="Input", width=256)
b.image(
    _big(dm.heat_colors(result["mean"])),
    caption="Mean foreground probability (0 black .. 1 yellow)",
    width=256,
)
c.image(
    _big(dm.heat_colors(result["uncertainty"])),
    caption="Uncertainty: entropy of the mean, bits (0 .. 1)",
    width=256,
)
if key == "medical_unet":
    st.caption(
        "The U-Net is deterministic: its samples are identical; its uncertainty is the entropy of its one "
        "probability map."
    )

left, right = st.columns([3, 2]) if readers is not None else (st.container(), None)
with left:
    shown = samples[:1] if key == "medical_unet" else samples  # a deterministic model's samples are one mask
    same = f", all {num_samples} identical: one shown" if len(shown) < len(samples) else ""
    st.markdown(f"**{num_samples} sample{'s' * (num_samples != 1)}** (probability >= {threshold:g}{same})")
    st.image([_overlay(image, s) for s in shown], caption=[f"#{i}" for i in range(len(shown))], width=TILE)
if readers is not None and right is not None:
    with right:
        st.markdown(f"**{len(readers)} reader masks**")
        st.image(
            [_overlay(image, r, (60, 200, 60)) for r in readers],
            caption=[f"reader {i}" for i in range(len(readers))],
            width=TILE,
        )
        scores = _scores(result["probs"], result["mean"], readers.astype(np.uint8), threshold)
        m1, m2 = st.columns(2)
        m1.metric("GED (lower is better)", f"{scores['ged']:.3f}")
        m2.metric("Dice of the mean vs readers", f"{scores['dice_readers']:.3f}")
        m3, m4 = st.columns(2)
        m3.metric("Hungarian-matched IoU", f"{scores['hungarian_iou']:.3f}")
        m4.metric("Sample diversity", f"{scores['diversity']:.3f}")
        if note := _matched_iou_note(num_samples, len(readers)):
            st.caption(note)
        if card_ged is not None and f"{card_ged:.3f}" != f"{scores['ged']:.3f}":
            st.caption(
                f"The model card's test run gave this image GED {card_ged:.3f}, from its own random draw of "
                f"samples; the GED above comes from this page's {num_samples} sample"
                f"{'s' * (num_samples != 1)} with seed {seed}. A sampling model's GED on one image changes from "
                "draw to draw: change the seed to see by how much."
            )

# built when a button is clicked (Streamlit calls the function then): a large slice's masks put back on its
# pixels and a volume's NIfTI mask cost seconds, which no rerun for another seed or sample count should pay
def _mean_mask_png() -> bytes:
    return _mask_png(back.to_slice(result["mean"]) if back is not None else result["mean"], threshold)


made_by = (
    f"Model: {dm.DEMO_MODELS[key].title}, weights {pc.model_path(key).name}; {num_samples} sample"
    f"{'s' * (num_samples != 1)} drawn with seed {seed}.\n"
)
on_pixels = "" if back is None else f", the slice's {back.image.shape[1]}x{back.image.shape[0]} pixels"
buttons = st.columns(3 if back is not None and back.nifti is not None else 2)
buttons[0].download_button(
    f"Mean mask (PNG{on_pixels})",
    data=_mean_mask_png,
    file_name=f"{stem}_mean_mask.png",
    mime="image/png",
    key="medical_dl_png",
)
buttons[1].download_button(
    f"All {num_samples} sample masks + maps (zip)" if num_samples > 1 else "The sample mask + maps (zip)",
    data=lambda: up.zip_bytes(_downloads(str(name), image, result, threshold, grid, back, made_by)),
    file_name=f"{stem}_segmentations.zip",
    mime="application/zip",
    key="medical_dl_zip",
)
if len(buttons) == 3:
    dicom = back.nifti.from_dicom
    buttons[2].download_button(
        "Mean mask (NIfTI, placed by the DICOM header)" if dicom else "Mean mask (NIfTI, the volume's grid)",
        data=lambda: back.nifti_mask(back.to_slice(result["mean"]) >= threshold),
        file_name=f"{stem}_mean_mask.nii.gz",
        mime="application/gzip",
        key="medical_dl_nifti",
        help=f"This slice's mean mask (0/1) {_nifti_place(back.volume)}.",
    )
if back is not None and back.nifti is not None and back.volume.is_volume:
    with st.expander("Segment a range of slices (one NIfTI mask of the volume)"):
        n = back.volume.num_slices
        order = {"DICOM": "as stored", "DICOM series": "in order along the slice normal"}.get(
            back.volume.format, "the page's count, inferior to superior"
        )
        first, last = st.slider(
            f"Slices ({order})",  # "Slices" as the slider above says "Slice": a multi-frame DICOM's frames too
            0,
            n - 1,
            (max(0, back.index - 5), min(n - 1, back.index + 5)),
            key="medical_slab",
        )
        ends = sorted(back.nifti.file_slice(k, n)[1] for k in (first, last))
        st.caption(
            f"Each of the {last - first + 1} slices goes through the model as this one does ({how}; {num_samples} "
            f"sample{'s' * (num_samples != 1)}, seed {seed}), its mean mask put back on its pixels: the file's "
            f"slices {ends[0]}-{ends[1]} filled, the others 0. Made when clicked (a fraction of a second a slice)."
        )
        slab_stem = up.download_stem(file_name) + (f"_channel_{channel}" if volume.num_channels > 1 else "")
        st.download_button(
            f"Mean masks of slices {first}-{last} (NIfTI, the volume's grid)",
            data=lambda: back.slab_mask(task, first, last, channel, num_samples, seed, threshold),
            file_name=f"{slab_stem}_slices_{ends[0]}-{ends[1]}_mean_mask.nii.gz",
            mime="application/gzip",
            key="medical_dl_slab",
        )
