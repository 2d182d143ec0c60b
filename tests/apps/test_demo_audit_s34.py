"""What a clinician's audit of the demo found (s34): a large slice with no pixel size went in resized (a lesion 4x
smaller than the models learnt, a confident wrong mask), the medical page never said its weights learnt from
synthetic data, the Hungarian-matched IoU changed meaning with the sample count unsaid, an upload's pixels
outlived its session in a process-wide cache, and the sidebar listed every task's checkpoints. Driven through
``streamlit.testing.v1.AppTest`` on the tiny ``demo_env`` models (the shipped ones where their card matters)."""

from __future__ import annotations

import gc
import logging
import shutil

import numpy as np
import pytest
import torch

from apps import demo_models as dm
from apps import page_common as pc
from apps import uploads as up
from tests.apps import samples as S
from tests.apps.pages import page as _page
from tests.apps.pages import page_ok as _ok
from tests.apps.pages import texts as _texts
from tests.apps.pages import upload as _upload
from tests.apps.pages import upload_on as _upload_on

pytestmark = pytest.mark.usefixtures("one_thread")


def _slice(size: int) -> np.ndarray:
    """A grey ``size`` x ``size`` slice: noise with a bright 20-pixel square at its centre."""
    image = (np.random.default_rng(0).random((size, size)) * 60).astype(np.uint8)
    image[size // 2 - 10 : size // 2 + 10, size // 2 - 10 : size // 2 + 10] = 220
    return image


# ------------------------------------------------------------------------------ 1: the fit of a large slice


def test_a_large_slice_without_a_pixel_size_goes_in_at_its_own_pixels_and_resizing_it_is_warned(demo_env):
    """A 512x512 PNG of a CT slice went in resized to 128 by default: the lesion 4x smaller than the models
    learnt, a mask 4.6x the lesion's area, and no warning."""
    at = _ok(_upload_on("medical", "ct_slice_512.png", S.png(_slice(512))))
    assert at.radio(key="medical_fit_2").value == "crop"
    assert "PNG upload, a 128x128 window centred at row 256, column 256 of the 512x512 slice." in _texts(at.caption)
    assert "Resizing" not in _texts(at.warning)
    at.radio(key="medical_fit_2").set_value("resize").run()
    _ok(at)
    assert (
        "Resizing the whole 512x512 slice to the model's 128x128 input makes everything in it 4.0 times smaller. "
        "The models learnt lesions in 128x128 crops of 0.5 mm pixels (a CT slice's are 0.5-1 mm): a lesion shrunk "
        'this much is outlined wrongly or missed. Choose "a window of the file\'s own pixels" above and move the '
        "window onto the lesion."
    ) in _texts(at.warning)
    # a slice near the model's size still starts resized, unwarned; the next large file starts at its own
    # pixels again, whatever the last one was shown at
    _upload(at, "medical_upload", "small.png", S.png(_slice(160)))
    _ok(at)
    assert at.radio(key="medical_fit_2").value == "resize" and "Resizing" not in _texts(at.warning)
    # the window where the slice holds nothing says so, and where to move it (the audit's crop lay off-centre)
    off_centre = np.full((512, 512), 30, np.uint8)
    off_centre[100:228, 300:428] = _slice(128)
    _upload(at, "medical_upload", "off_centre_512.png", S.png(off_centre))
    _ok(at)
    assert at.radio(key="medical_fit_2").value == "crop"
    assert (
        "The model's window is almost uniform: there is nothing for the models to outline there. Move it onto the "
        "lesion with the window centre sliders."
    ) in _texts(at.warning)
    at.slider(key="medical_centre_row").set_value(164)
    at.slider(key="medical_centre_col").set_value(364).run()
    _ok(at)
    assert "almost uniform" not in _texts(at.warning)
    # a file stating its pixel size starts at the models' 0.5 mm as before; resized, the warning says in mm
    dcm = S.dicom(_slice(512).astype(np.int16) * 4, pixel_spacing=(0.7, 0.7))
    _upload(at, "medical_upload", "ct.dcm", dcm)
    _ok(at)
    assert at.radio(key="medical_fit_3").value == "mm" and "Resizing" not in _texts(at.warning)
    at.radio(key="medical_fit_3").set_value("resize").run()
    assert "makes its pixels 2.80 mm, 5.6 times the models' 0.5 mm" in _texts(at.warning)


# ------------------------------------------------------------------------------ 2: what the weights learnt from


def test_the_medical_page_says_its_shipped_weights_learnt_from_synthetic_data(demo_env, tmp_path, monkeypatch):
    """The caption said only "trained 2026-12-04 on NVIDIA H200", and a colour photo was told the models learnt
    from "grey CT crops of lung lesions": the card's data field ("synthetic four-reader LIDC set") was never
    shown."""
    monkeypatch.setenv(dm.ENV_WEIGHTS, str(dm.SHIPPED_DIR))
    monkeypatch.setenv(dm.ENV_CHECKPOINTS, str(tmp_path / "no_local_checkpoints"))
    card = dm.read_card(dm.SHIPPED_DIR / "medical_prob_unet.safetensors")["data"]
    assert card.startswith("synthetic four-reader LIDC set")
    at = _ok(_upload_on("medical", "photo.jpg", S.jpeg(S.gradient_rgb(100, 140))))
    caption = next(c.value for c in at.caption if c.value.startswith("Shipped weights `medical_prob_unet"))
    assert f"model card `medical_prob_unet.json`). Training data: {card}. Test figures: " in caption
    assert _texts(at.warning) == (
        f"This is a colour image, and the models read grey slices: these weights learnt from {card}. On a photo "
        "their masks mean nothing."
    )
    # the driving models' cards say theirs (synthetic streets)
    detector = pc.training_data_sentence("driving_detection", dm.SHIPPED_DIR / "driving_detection.safetensors")
    assert detector.startswith("Training data: synthetic KITTI-layout road scenes (1500 frames)")


def test_a_checkpoint_says_its_own_training_data(demo_env, tmp_path):
    """One's own weights say what they learnt from (the checkpoint's data-module settings), not the demo's."""
    checkpoint = torch.load(demo_env["checkpoints"] / "medical_unet.ckpt", weights_only=True)
    checkpoint["datamodule_hyper_parameters"] = {"data_format": "lidc_pickle", "data_path": "/data/lidc.pickle", "crop_size": 128}
    real = tmp_path / "real_lidc.ckpt"
    torch.save(checkpoint, real)
    assert dm.training_data("medical_unet", real) == "lidc_pickle data at /data/lidc.pickle, 128 px crops, split by patient"
    assert dm.training_data("medical_unet", demo_env["checkpoints"] / "medical_unet.ckpt") is None  # not recorded
    at = _ok(_page("medical"))
    at.text_input(key="own_path_medical_unet").set_value(str(real)).run()
    _ok(at)
    assert (
        f"Your checkpoint `{real}`. Training data: lidc_pickle data at /data/lidc.pickle, 128 px crops, split by "
        "patient. Its test figures:" in _texts(at.caption)
    )
    at.selectbox(key="medical_model").set_value("medical_prob_unet").run()
    assert "Training data: not recorded with these weights." in _texts(at.caption)  # the tiny demo checkpoint's


# ------------------------------------------------------------------------------ 3: the matched IoU's meaning


def test_the_matched_iou_says_what_it_scores_when_the_samples_are_no_multiple_of_the_readers(demo_env):
    """With 16, 4, 2, 1 samples the IoU read 0.875, 0.872, 0.906, 0.913: below 4 samples it scores the best
    readers only, said only in the server's console."""
    at = _ok(_page("medical"))
    assert "Hungarian-matched IoU of" not in _texts(at.caption)  # 16 samples for 4 readers: the protocol
    at.slider(key="medical_samples").set_value(2).run()
    _ok(at)
    assert (
        "Hungarian-matched IoU of 2 samples for 4 readers: only the best-matching 2 of the 4 readers are scored, the "
        "readers the samples miss do not count. The published protocol matches 16 samples to 4 readers, each "
        "reader 4 times: choose a multiple of 4 samples to compare it with the model card's."
    ) in _texts(at.caption)
    at.slider(key="medical_samples").set_value(1).run()
    assert "scored (1 sample: the best single reader's IoU)" in _texts(at.caption)
    at.slider(key="medical_samples").set_value(6).run()
    assert "not weighted equally (each is matched 1 or 2 times)" in _texts(at.caption)
    at.slider(key="medical_samples").set_value(8).run()
    assert "Hungarian-matched IoU of" not in _texts(at.caption)


# ------------------------------------------------------------------------------ 4: nothing kept after a session


def _alive(kind: type, name: str) -> list:
    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, kind) and o.name == name]


@pytest.fixture
def _older_objects_frozen():
    """``_alive``'s collections and object lists cover only the objects made since the test began (``gc.freeze``
    sets the older ones aside: a full collection of the process took 0.3-0.7 s, five times a test). The upload's
    objects are all made in the test; one held by an older object (a process-wide cache) is still alive."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def test_an_uploads_pixels_go_with_its_session(demo_env, _older_objects_frozen):
    """Session A uploaded patient_ct.dcm and ended; a new session found MedicalVolume('patient_ct.dcm') alive in
    st.cache_resource, shared by every session, while the uploader said nothing is kept after the session."""
    at = _ok(_upload_on("medical", "patient_s34.dcm", S.dicom(np.arange(64 * 64).reshape(64, 64) % 900)))
    help_text = f"Up to {up.MAX_UPLOAD_MB} MB. Nothing is kept after the session ends."
    assert [f.proto.help for f in at.get("file_uploader")] == [help_text]
    assert len(_alive(up.MedicalVolume, "patient_s34.dcm")) == 1
    at.number_input(key="medical_seed").set_value(3).run()  # a rerun reuses the session's decoded volume
    assert len(_alive(up.MedicalVolume, "patient_s34.dcm")) == 1
    del at
    _ok(_page("home"))  # another session runs (Streamlit keeps the last run's script globals until then)
    assert _alive(up.MedicalVolume, "patient_s34.dcm") == []
    at = _ok(_upload_on("driving", "patient_road_s34.png", S.png(S.gradient_rgb(48, 96))))
    assert len(_alive(up.RGBImage, "patient_road_s34.png")) == 1
    at.file_uploader(key="driving_upload").set_value(None).run()  # removed: its pixels go at once, not the session
    _ok(at)
    assert _alive(up.RGBImage, "patient_road_s34.png") == []


# ------------------------------------------------------------------------------ 5: each page's own checkpoints


def test_each_sidebar_lists_the_checkpoints_of_its_own_tasks(demo_env, tmp_path, monkeypatch):
    """Medical checkpoints were offered on the driving page (picking one gave a refusal): every .ckpt under
    lightning_logs/ was listed on every page."""
    logs = tmp_path / "lightning_logs"
    for domain, key in (("medical", "medical_prob_unet"), ("driving_detection", "driving_detection")):
        (logs / domain).mkdir(parents=True)
        shutil.copy(demo_env["checkpoints"] / f"{key}.ckpt", logs / domain / "last.ckpt")
    (logs / "medical" / "truncated.ckpt").write_bytes(b"PK\x03\x04 not a whole checkpoint")
    monkeypatch.setattr(pc, "logs_dir", lambda: logs)
    medical, detector = str(logs / "medical" / "last.ckpt"), str(logs / "driving_detection" / "last.ckpt")
    at = _ok(_page("medical"))
    assert at.selectbox(key="own_pick_medical_unet").options == ["(none)", medical]
    assert "2 other checkpoints under lightning_logs/ (other tasks, or not readable) left out" in _texts(
        at.sidebar.caption
    )
    reads = []
    real = dm.read_checkpoint
    monkeypatch.setattr(dm, "read_checkpoint", lambda path: reads.append(str(path)) or real(path))
    pc._checkpoints_under_logs.clear()  # the listing again (30 s later): the files are not read again
    at = _ok(_page("driving"))
    assert [path for path in reads if path.startswith(str(logs))] == []
    assert at.selectbox(key="own_pick_driving_detection").options == ["(none)", detector]
    assert at.selectbox(key="own_pick_driving_anomaly").options == ["(none)"]
    at.selectbox(key="own_pick_driving_detection").set_value(detector).run()
    _ok(at)
    assert f"Your checkpoint `{detector}`" in _texts(at.caption)


def test_routing_a_checkpoint_to_its_model_leaves_no_streamlit_warning(demo_env):
    """Routing a user checkpoint logged "widget with key medical_model was created with a default value but
    also had its value set via the Session State API": the box had a default index besides the session state."""
    from streamlit.elements.lib import policies

    logged: list[str] = []

    class Record(logging.Handler):
        def emit(self, record):
            logged.append(record.getMessage())

    handler = Record(logging.WARNING)
    logger = logging.getLogger(policies.__name__)
    logger.addHandler(handler)
    shown = policies._shown_default_value_warning
    policies._shown_default_value_warning = False  # Streamlit says it once per process
    try:
        at = _ok(_page("medical"))
        assert at.selectbox(key="medical_model").value == "medical_prob_unet"  # the page's default
        at.selectbox(key="medical_model").set_value("medical_unet").run()
        at.text_input(key="own_path_medical_unet").set_value(str(demo_env["checkpoints"] / "medical_prob_unet.ckpt"))
        at.run()
        _ok(at)
        assert at.selectbox(key="medical_model").value == "medical_prob_unet"
    finally:
        logger.removeHandler(handler)
        policies._shown_default_value_warning = shown
    assert not [m for m in logged if "medical_model" in m], logged
