"""Every page through ``streamlit.testing.v1.AppTest``: default view, widgets, each upload type, bad uploads.

Tiny checkpoints and data come from the ``demo_env`` fixture (tests/apps/conftest.py). A page passes when it
raises nothing (``at.exception`` empty) and shows what it should.
"""

from __future__ import annotations

import inspect
import re
from unittest.mock import patch

import numpy as np
import pytest
import streamlit as st
import torch
from streamlit.testing.v1 import AppTest

from apps import demo_models as dm
from apps import page_common as pc
from apps import uploads as up
from tests.apps import samples as S
from tests.apps.pages import APPS, TIMEOUT
from tests.apps.pages import image_captions as _image_captions
from tests.apps.pages import page as _page
from tests.apps.pages import page_ok as _ok
from tests.apps.pages import texts as _texts
from tests.apps.pages import upload_on as _upload_on


def _image_urls(at: AppTest) -> dict[str, str]:
    """Each shown image's media URL by caption. The URL's file id is a hash of the encoded image's bytes (with
    its MIME type), so two equal URLs are the same picture and two different ones are different pictures."""
    return {img.caption: img.url for element in at.get("image") for img in element.proto.imgs}


# ------------------------------------------------------------------------------------------------- home


def test_home_lists_checkpoints(demo_env):
    at = _ok(_page("home"))
    table = at.dataframe[0].value
    assert list(table["model"]) == [
        "U-Net",
        "Probabilistic U-Net",
        "Hierarchical Probabilistic U-Net",
        "FCOS road-object detector",
        "Mask R-CNN road-user instances",
        "Road-anomaly segmenter",
        "Accident anticipator",
    ]
    checkpoints, figures = list(table["checkpoint"]), list(table["test figures"])
    assert checkpoints[2] == "missing"
    assert "prepare_demo.py --train --only medical_hpu_net" in figures[2]
    assert "ged 0.500" in figures[0]
    assert checkpoints[4] == "driving_instances.ckpt" and "mask_map50 0.300, box_map50 0.350" in figures[4]
    assert checkpoints[6] == "driving_accident.ckpt" and "video_ap 0.600, frame_ap 0.400" in figures[6]
    assert "mtta 1.200 s" in figures[6]  # lead times in seconds, said (it read as a ratio beside the APs)


def test_app_navigation_runs_every_page(demo_env):
    at = AppTest.from_file(str(APPS / "app.py"), default_timeout=TIMEOUT).run()
    _ok(at)
    assert at.title[0].value.startswith("Applied deep learning")
    at.switch_page(str(APPS / "views" / "medical.py")).run()
    _ok(at)
    assert at.title[0].value.startswith("Medical imaging")
    at.switch_page(str(APPS / "views" / "driving.py")).run()
    _ok(at)
    assert at.title[0].value.startswith("Driving")
    at.switch_page(str(APPS / "views" / "accident.py")).run()
    _ok(at)
    assert at.title[0].value == "Driving: accident risk"


def test_chosen_settings_survive_a_page_switch(demo_env):
    """Streamlit drops a widget's value when it is not drawn: the model, samples, seed and thresholds a person
    chose were back at their defaults after a look at another page."""
    at = AppTest.from_file(str(APPS / "app.py"), default_timeout=TIMEOUT).run()
    at.switch_page(str(APPS / "views" / "medical.py")).run()
    at.slider(key="medical_samples").set_value(4)
    at.number_input(key="medical_seed").set_value(7).run()
    own = str(demo_env["checkpoints"] / "medical_unet.ckpt")
    at.text_input(key="own_path_medical_unet").set_value(own).run()  # one's own checkpoint
    at.switch_page(str(APPS / "views" / "driving.py")).run()
    at.slider(key="driving_det_threshold").set_value(0.2)
    at.slider(key="driving_ano_alpha").set_value(0.8).run()
    at.switch_page(str(APPS / "views" / "accident.py")).run()
    at.slider(key="accident_threshold").set_value(0.3).run()
    at.switch_page(str(APPS / "views" / "medical.py")).run()
    _ok(at)
    assert (at.slider(key="medical_samples").value, at.number_input(key="medical_seed").value) == (4, 7)
    assert at.text_input(key="own_path_medical_unet").value == own
    at.switch_page(str(APPS / "views" / "driving.py")).run()
    _ok(at)
    assert at.slider(key="driving_det_threshold").value == 0.2 and at.slider(key="driving_ano_alpha").value == 0.8
    at.switch_page(str(APPS / "views" / "accident.py")).run()
    _ok(at)
    assert at.slider(key="accident_threshold").value == 0.3


def test_an_upload_survives_a_page_switch_until_it_is_removed(demo_env):
    """Streamlit empties a file uploader that was not drawn: after a look at another page the photo was gone and
    the page asked for it again. It is kept now; removing it in the uploader or with "Forget it" drops it."""
    at = AppTest.from_file(str(APPS / "app.py"), default_timeout=TIMEOUT).run()
    at.switch_page(str(APPS / "views" / "driving.py")).run()
    at.radio(key="driving_source").set_value("Upload a photo").run()
    at.file_uploader(key="driving_upload").set_value(("mine.png", S.png(S.gradient_rgb(48, 96)), "image/png")).run()
    _ok(at)
    assert "mine.png" in _texts(at.caption)
    at.switch_page(str(APPS / "views" / "medical.py")).run()
    at.switch_page(str(APPS / "views" / "driving.py")).run()
    _ok(at)
    assert "Upload a road photo" not in _texts(at.info)
    assert "Showing your earlier upload `mine.png`" in _texts(at.caption) and at.metric  # the models ran on it
    at.button(key="driving_upload_forget").click().run()
    _ok(at)
    assert "Upload a road photo" in _texts(at.info) and "mine.png" not in _texts(at.caption)

    at.file_uploader(key="driving_upload").set_value(("other.png", S.png(S.gradient_rgb(48, 96)), "image/png")).run()
    assert "other.png" in _texts(at.caption)
    at.file_uploader(key="driving_upload").set_value(None).run()  # the uploader's own remove button
    _ok(at)
    assert "Upload a road photo" in _texts(at.info) and "other.png" not in _texts(at.caption)


# ---------------------------------------------------------------------------------------------- medical


def test_medical_default_sample_renders(demo_env):
    at = _ok(_page("medical"))
    # only the checkpoints that exist are offered; the missing one is named with its command
    assert at.selectbox(key="medical_model").options == ["U-Net", "Probabilistic U-Net"]
    assert "Hierarchical Probabilistic U-Net" in _texts(at.warning)
    assert "--only medical_hpu_net" in _texts(at.code)
    # the page opens on a sampling model: several different masks, not the U-Net's one
    assert at.selectbox(key="medical_model").value == "medical_prob_unet"
    assert [c for c in _image_captions(at) if c.startswith("#")] == [f"#{i}" for i in range(16)]
    at.selectbox(key="medical_model").set_value("medical_unet").run()
    _ok(at)
    assert "Test figures: ged 0.500, dice 0.250" in _texts(at.caption)
    labels = {m.label: float(m.value) for m in at.metric}
    assert {"GED (lower is better)", "Dice of the mean vs readers", "Hungarian-matched IoU"} <= set(labels)
    assert 0.0 <= labels["Dice of the mean vs readers"] <= 1.0
    captions = _image_captions(at)
    assert [c for c in captions if c.startswith("#")] == ["#0"]  # the U-Net's 16 samples are one mask
    assert "**16 samples** (probability >= 0.5, all 16 identical: one shown)" in [m.value for m in at.markdown]
    assert [c for c in captions if c.startswith("reader")] == [f"reader {i}" for i in range(4)]
    assert labels["Sample diversity"] == pytest.approx(0.0)  # the U-Net's samples are identical
    names = [b.proto.label for b in at.get("download_button")]
    assert names == ["Mean mask (PNG)", "All 16 sample masks + maps (zip)"]


def test_medical_widgets_rerun(demo_env):
    at = _ok(_page("medical"))
    at.selectbox(key="medical_model").set_value("medical_prob_unet").run()
    _ok(at)
    assert "medical_prob_unet.ckpt" in _texts(at.caption)
    at.slider(key="medical_samples").set_value(4).run()
    _ok(at)
    assert [b.proto.label for b in at.get("download_button")][1] == "All 4 sample masks + maps (zip)"
    assert [c for c in _image_captions(at) if c.startswith("#")] == ["#0", "#1", "#2", "#3"]  # a sampling model
    # the seed draws the samples: their mean (and its entropy) is another picture under another seed, and the
    # same picture again under the same seed, even when drawn afresh (caches cleared)
    maps = (
        "Mean foreground probability (0 black .. 1 yellow)",
        "Uncertainty: entropy of the mean, bits (0 .. 1)",
    )
    seed_0 = [_image_urls(at)[m] for m in maps]
    at.number_input(key="medical_seed").set_value(3).run()
    _ok(at)
    seed_3 = [_image_urls(at)[m] for m in maps]
    assert seed_3[0] != seed_0[0] and seed_3[1] != seed_0[1]
    st.cache_data.clear()
    at.number_input(key="medical_seed").set_value(0).run()
    assert [_image_urls(at)[m] for m in maps] == seed_0
    at.number_input(key="medical_seed").set_value(3).run()
    assert [_image_urls(at)[m] for m in maps] == seed_3
    at.selectbox(key="medical_item").set_value(at.selectbox(key="medical_item").options[-1]).run()
    _ok(at)


@pytest.mark.parametrize(
    ("name", "make", "note", "size"),
    [
        (
            "slice.png",
            lambda: S.png((np.random.default_rng(0).random((128, 128)) * 255).astype(np.uint8)),
            None,
            (128, 128),
        ),
        (
            "slice16.png",
            lambda: S.png(np.random.default_rng(0).integers(0, 4000, (96, 96)).astype(np.uint16)),
            "16-bit",
            (96, 96),
        ),
        ("photo.jpg", lambda: S.jpeg(S.gradient_rgb(100, 140)), "grayscale", (100, 140)),  # rows x columns
        (
            "slice.dcm",
            lambda: S.dicom(np.random.default_rng(0).integers(0, 2000, (64, 64)), window=(-600, 1500)),
            "DICOM window",
            (64, 64),
        ),
    ],
)
def test_medical_2d_uploads(demo_env, name, make, note, size):
    at = _upload_on("medical", name, make())
    _ok(at)
    assert at.subheader[0].value == name
    infos = _texts(at.info)
    if note:
        assert note in infos
    assert any("GED" in m.label for m in at.metric) is False  # no readers for an upload
    if name != "slice.png":  # not 128x128: the fit choice is offered
        at.radio(key="medical_fit_2").set_value("crop").run()  # no pixel size in these files: 2 choices
        _ok(at)
        h, w = size  # the upload's own: rows and columns were not swapped on the way
        assert [at.slider(key=f"medical_centre_{axis}").max for axis in ("row", "col")] == [h - 1, w - 1]
        assert f"a 128x128 window centred at row {h // 2}, column {w // 2} of the {w}x{h} slice" in _texts(at.caption)


def test_medical_nifti_volume_has_slice_and_channel_sliders(demo_env):
    volume = np.random.default_rng(0).random((40, 40, 6, 2)).astype(np.float32)
    at = _upload_on("medical", "brain.nii.gz", S.nifti(volume, compressed=True))
    _ok(at)
    assert at.slider(key="medical_slice").value == 3
    at.slider(key="medical_slice").set_value(5).run()
    _ok(at)
    assert at.subheader[0].value == "brain.nii.gz slice 5"
    at.slider(key="medical_channel").set_value(1).run()
    _ok(at)
    assert "4D volume" in _texts(at.info)


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("broken.png", S.png(np.zeros((64, 64), np.uint8))[:70], "corrupt or truncated"),
        ("notes.txt", b"not an image at all", "unsupported file type"),
        ("cut.nii", S.nifti(np.random.default_rng(0).random((30, 30, 8)))[:600], "corrupt or truncated"),
        ("huge.png", b"\x89PNG\r\n\x1a\n" + b"\0" * (up.MAX_UPLOAD_BYTES + 1), "the limit is 50.0 MB"),
    ],
)
def test_medical_bad_uploads_show_a_message(demo_env, name, data, message):
    at = _upload_on("medical", name, data)
    assert not at.exception
    assert len(at.error) == 1 and message in at.error[0].value and name in at.error[0].value
    assert not at.subheader  # nothing else was drawn


# ---------------------------------------------------------------------------------------------- driving


def test_driving_default_scene_renders(demo_env):
    at = _ok(_page("driving"))
    captions = _texts(at.caption)
    assert "driving_detection.ckpt" in captions and "map50 0.200, map 0.100" in captions
    assert "driving_anomaly.ckpt" in captions
    assert at.metric[0].label == "Frame anomaly score"
    float(at.metric[0].value)
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == [
        "Detections (KITTI text)",
        "Image with boxes (PNG)",
        "Instance ids (16-bit PNG)",
        "Instance list (text)",
        "Image with masks (PNG)",
        "Heat-map overlay (PNG)",
        "Anomaly mask (PNG)",
        "Score map (16-bit PNG)",
    ]


def test_driving_widgets_rerun(demo_env):
    at = _ok(_page("driving"))
    size = re.search(r"scales every photo into its (\d+)x(\d+) input", _texts(at.caption))
    assert size and min(map(int, size.groups())) >= 16  # the model's input_size, not "0x0"
    # starts where `predict` draws boxes: DetectionTask's predict_score_thresh (not the old fixed 0.3)
    from domains.driving.detection.task import DetectorTask

    drawn = inspect.signature(DetectorTask).parameters["predict_score_thresh"].default
    assert at.slider(key="driving_det_threshold").value == pytest.approx(drawn) != 0.3
    at.slider(key="driving_det_threshold").set_value(0.05).run()  # the model's own floor: everything shown
    _ok(at)
    shown, total = map(int, re.match(r"(\d+) of (\d+) detections shown", _image_captions(at)[0]).groups())
    assert shown == total > 0, "the tiny detector should give some boxes to filter"
    table = at.dataframe[0].value
    assert len(table) == total and (table["score"] >= 0.05).all()
    cars = int((table["class"] == "Car").sum())
    above = int((table["score"] >= 0.5).sum())
    at.multiselect(key="driving_det_classes").set_value(["Car"]).run()
    _ok(at)
    assert _image_captions(at)[0] == f"{cars} of {total} detections shown; 0 below the score threshold"
    at.multiselect(key="driving_det_classes").set_value(["Car", "Pedestrian", "Cyclist"])
    at.slider(key="driving_det_threshold").set_value(0.5).run()
    _ok(at)
    below = total - above
    assert _image_captions(at)[0] == f"{above} of {total} detections shown; {below} below the score threshold"
    at.slider(key="driving_ano_alpha").set_value(0.9).run()
    _ok(at)
    # entropy: a score with a fixed range (0 .. ln C), so its slider is in score units and the share of
    # pixels above it is a finding (the unbounded scores: tests/apps/test_pages_audit.py)
    at.selectbox(key="driving_ano_score").set_value("entropy").run()
    _ok(at)
    threshold = at.slider(key="driving_ano_threshold_entropy")
    threshold.set_value(threshold.min).run()
    _ok(at)
    assert _image_captions(at)[2].startswith("entropy: ")  # after the objects' and the instances' images
    # every pixel's entropy is >= 0, and only a uniform prediction reaches ln C (exact shares: test_pages_audit)
    assert {m.label: m.value for m in at.metric}["Pixels above the threshold"] == "100.00 %"
    at.slider(key="driving_ano_threshold_entropy").set_value(threshold.max).run()
    _ok(at)
    assert {m.label: m.value for m in at.metric}["Pixels above the threshold"] == "0.00 %"
    at.selectbox(key="driving_scene").set_value(1).run()
    _ok(at)
    assert "synthetic_00001.png" in _texts(at.caption)


def _instance_caption(at: AppTest) -> tuple[int, int, int]:
    """(shown, total, below) of the Instances tab's image caption (the page's second image)."""
    caption = _image_captions(at)[1]
    found = re.match(r"(\d+) of (\d+) instances shown; (\d+) below the score threshold", caption)
    assert found, caption
    return tuple(int(v) for v in found.groups())


def _instance_table(at: AppTest):
    """The Instances tab's table (the one with mask areas)."""
    return next(df.value for df in at.dataframe if "mask area (px, before overlaps)" in df.value.columns)


def test_driving_instances_tab_shows_masks_and_the_slider_filters_them(demo_env):
    at = _ok(_page("driving"))
    # no operating point with these weights: the slider starts where `predict` draws (predict_score_thresh)
    from domains.driving.detection.task import DetectorTask

    drawn = inspect.signature(DetectorTask).parameters["predict_score_thresh"].default  # InstanceTask's base
    assert at.slider(key="driving_inst_threshold").value == pytest.approx(drawn)
    start_shown, start_total, start_below = _instance_caption(at)
    assert start_shown + start_below == start_total
    assert "driving_instances.ckpt" in _texts(at.caption) and "mask_map50 0.300" in _texts(at.caption)
    # the tiny network's input is 128 px wide: the scene's own size
    assert "masks are kept at 128x64" in _texts(at.caption)
    at.slider(key="driving_inst_threshold").set_value(0.05).run()  # the post-processing floor: everything
    _ok(at)
    shown, total, below = _instance_caption(at)
    assert shown == total > 0 and below == 0, "the tiny Mask R-CNN should give some instances to filter"
    table = _instance_table(at)
    assert len(table) == total and list(table["id"]) == list(range(1, total + 1))
    assert (table["score"].diff().dropna() <= 0).all()  # id 1 = the highest score, as `predict` numbers them
    assert (table["mask area (px, before overlaps)"] > 0).any()  # masks are drawn, not only boxes
    assert ((table["right"] <= 128) & (table["bottom"] <= 64) & (table["left"] >= 0)).all()
    # the tiny model scores every instance about 0.24 (one step from its start): none reach 0.5, all 0.05
    assert total == start_total and start_shown == int((table["score"] >= drawn).sum()) < total
    at.slider(key="driving_inst_threshold").set_value(1.0).run()
    _ok(at)
    assert _instance_caption(at)[0] == 0 and "No instance reaches the threshold 1.00" in _texts(at.info)
    at.slider(key="driving_inst_threshold").set_value(0.05)
    cars = int((table["class"] == "Car").sum())
    at.multiselect(key="driving_inst_classes").set_value(["Car"]).run()
    _ok(at)
    assert _instance_caption(at) == (cars, total, 0)
    at.slider(key="driving_inst_alpha").set_value(0.9).run()
    _ok(at)
    # (the opacity's effect is checked on the uploaded photo below: the tiny model's masks on this 128x64 scene
    # are a few pixels each, all covered by their outlines and boxes, so no opacity changes this picture)


def test_driving_instances_on_an_uploaded_photo(demo_env):
    at = _upload_on("driving", "road.png", S.png(S.gradient_rgb(90, 300)))
    _ok(at)
    assert "masks are kept at 128x38" in _texts(at.caption)  # 300x90 shrunk to the network's 128-px input
    at.slider(key="driving_inst_threshold").set_value(0.05).run()
    _ok(at)
    shown, total, _ = _instance_caption(at)
    assert shown == total > 0
    table = _instance_table(at)
    # boxes and areas come back in the photo's pixels, not the 128-px analysis size
    assert ((table["right"] <= 300) & (table["bottom"] <= 90)).all() and table["right"].max() > 128
    assert table["mask area (px, before overlaps)"].max() <= 300 * 90
    # the opacity slider reaches the drawing: the masks, upscaled to the photo, have insides that their outlines
    # do not cover, tinted at 0.9 instead of 0.5: another picture; back at 0.5, the first one again
    caption = _image_captions(at)[1]
    at_half = _image_urls(at)[caption]
    at.slider(key="driving_inst_alpha").set_value(0.9).run()
    _ok(at)
    assert _image_captions(at)[1] == caption and _image_urls(at)[caption] != at_half
    at.slider(key="driving_inst_alpha").set_value(0.5).run()
    assert _image_urls(at)[caption] == at_half
    labels = [b.proto.label for b in at.get("download_button")]
    assert {"Instance ids (16-bit PNG)", "Instance list (text)", "Image with masks (PNG)"} <= set(labels)


def test_driving_instances_missing_or_broken_weights_are_named(demo_env, tmp_path, monkeypatch):
    import shutil

    folder = tmp_path / "ckpts"
    shutil.copytree(demo_env["checkpoints"], folder)
    (folder / "driving_instances.ckpt").unlink()
    monkeypatch.setenv("SUITE_DEMO_CHECKPOINTS", str(folder))
    at = _ok(_page("driving"))
    assert "No instance-segmentation checkpoint: `.venv/bin/python apps/prepare_demo.py --train --only " \
        "driving_instances`" in _texts(at.warning)  # fmt: skip
    assert "detections shown" in _image_captions(at)[0]  # the other tabs are unaffected
    assert at.metric[0].label == "Frame anomaly score"
    (folder / "driving_instances.ckpt").write_bytes(b"not a checkpoint")  # e.g. a truncated download
    at = _page("driving")
    assert not at.exception
    assert len(at.error) == 1 and "Could not load the instance-segmentation checkpoint" in at.error[0].value
    assert "--train --only driving_instances --force" in at.error[0].value
    assert "detections shown" in _image_captions(at)[0] and at.metric[0].label == "Frame anomaly score"


def test_a_model_failing_on_the_image_is_a_message_and_the_other_tabs_still_work(demo_env, monkeypatch):
    import streamlit as st

    from apps import demo_models as dm

    def broken(*args, **kwargs):
        raise RuntimeError("shapes do not match")

    monkeypatch.setattr(dm, "segment_instances", broken)
    st.cache_data.clear()  # an earlier test's cached masks for the same scene would hide the failure
    at = _page("driving")
    assert not at.exception
    assert [e.value for e in at.error] == [
        "The instance segmenter failed on this image: RuntimeError: shapes do not match"
    ]
    assert "detections shown" in _image_captions(at)[0] and at.metric[0].label == "Frame anomaly score"
    st.cache_data.clear()


@pytest.mark.parametrize(
    ("name", "make", "note"),
    [
        ("road.png", lambda: S.png(S.gradient_rgb(90, 300)), None),
        ("road.jpg", lambda: S.jpeg(S.gradient_rgb(120, 160), orientation=6), "EXIF"),
        ("rgba.png", lambda: S.png(np.dstack([S.gradient_rgb(), np.full((40, 64), 9, np.uint8)])), "alpha"),
        ("grey.png", lambda: S.png(np.full((50, 70), 128, np.uint8)), "grayscale image converted to RGB"),
        (
            "raw16.png",
            lambda: S.png(np.random.default_rng(0).integers(0, 60000, (48, 80, 3)).astype(np.uint16)),
            "16-bit",
        ),
    ],
)
def test_driving_uploads(demo_env, name, make, note):
    at = _upload_on("driving", name, make())
    _ok(at)
    if note:
        assert note in _texts(at.info)
    assert name in _texts(at.caption)
    assert at.metric[0].label == "Frame anomaly score"
    # a grey photo (here the one grey upload) is warned about: the models learnt from colour
    assert ("This photo is grey (no colour)" in _texts(at.warning)) is (name == "grey.png")


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("broken.jpg", S.jpeg(S.gradient_rgb())[:200], "corrupt or truncated"),
        ("ct.nii.gz", S.nifti(np.zeros((20, 20, 5), np.int16), compressed=True), "needs a 2D road photo"),
        ("clip.mp4", b"\x00\x00\x00\x18ftypmp42", "unsupported file type"),
    ],
    ids=["broken.jpg", "ct.nii.gz", "clip.mp4"],  # not the bytes: ids both test workers collect alike
)
def test_driving_bad_uploads_show_a_message(demo_env, name, data, message):
    at = _upload_on("driving", name, data)
    assert not at.exception
    assert len(at.error) == 1 and message in at.error[0].value
    assert not at.metric


# -------------------------------------------------------------------------------------------- no models


def test_pages_without_checkpoints_say_what_to_run(demo_env, tmp_path, monkeypatch):
    monkeypatch.setenv("SUITE_DEMO_CHECKPOINTS", str(tmp_path / "empty"))
    for page in ("medical", "driving"):
        at = _page(page)
        assert not at.exception
        assert "make demo" in at.error[0].value
        assert "prepare_demo.py --train --only" in _texts(at.code)
    at = _ok(_page("home"))
    assert set(at.dataframe[0].value["checkpoint"]) == {"missing"}


def test_a_broken_checkpoint_is_reported_and_the_other_tab_still_works(demo_env, tmp_path, monkeypatch):
    import shutil

    folder = tmp_path / "ckpts"
    shutil.copytree(demo_env["checkpoints"], folder)
    (folder / "driving_anomaly.ckpt").write_bytes(b"not a checkpoint")  # e.g. a truncated download
    monkeypatch.setenv("SUITE_DEMO_CHECKPOINTS", str(folder))
    at = _page("driving")
    assert not at.exception
    assert len(at.error) == 1 and "Could not load the anomaly checkpoint" in at.error[0].value
    assert "--train --only driving_anomaly --force" in at.error[0].value
    assert "detections shown" in _image_captions(at)[0]  # the detector tab is unaffected


# ---------------------------------------------------------------------------------------- your own model


def test_own_checkpoint_replaces_the_demo_model_and_a_wrong_one_is_named(demo_env):
    at = _ok(_page("driving"))
    own = demo_env["checkpoints"] / "driving_detection.ckpt"
    at.text_input(key="own_path_driving_detection").set_value(str(own)).run()
    _ok(at)
    assert any(f"Your checkpoint `{own}`" in c.value for c in at.caption)
    wrong = demo_env["checkpoints"] / "medical_unet.ckpt"  # a medical checkpoint on the detector
    at.text_input(key="own_path_driving_detection").set_value(str(wrong)).run()
    assert not at.exception
    assert len(at.error) == 1 and "medical_unet.ckpt` was not loaded" in at.error[0].value
    assert "MedicalSegmentationTask" in at.error[0].value  # says what the file holds
    assert "detections shown" in _image_captions(at)[0]  # and the page goes on with the demo model
    # a rerun (another widget) does not load it again: the failure is remembered per file version and shown
    loads = []
    real = dm.load_task
    with patch.object(dm, "load_task", lambda *a: loads.append(a) or real(*a)):
        at.run()
    assert loads == [] and "medical_unet.ckpt` was not loaded" in _texts(at.sidebar.error)
    at.text_input(key="own_path_driving_detection").set_value("/no/such/file.ckpt").run()
    assert "No such checkpoint file" in _texts(at.sidebar.error)


def test_a_bare_state_dict_as_ones_own_checkpoint_says_what_it_is(demo_env, tmp_path):
    """torch.save({'state_dict': ...}) showed "KeyError: 'pytorch-lightning_version'" (driving) and "it holds
    model None" (medical)."""
    bare = tmp_path / "bare.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, bare)
    at = _ok(_page("driving"))
    at.text_input(key="own_path_driving_detection").set_value(str(bare)).run()
    assert not at.exception and len(at.error) == 1
    assert "a state dict saved with torch.save, not a checkpoint that Lightning wrote" in at.error[0].value
    at = _ok(_page("medical"))
    at.text_input(key="own_path_medical_unet").set_value(str(bare)).run()
    assert not at.exception
    assert "it names no network (hyper_parameters.network): not a PyTorch Lightning checkpoint" in _texts(
        at.sidebar.error
    )


def test_own_medical_checkpoint_replaces_the_model_of_its_network_class(demo_env):
    at = _ok(_page("medical"))
    own = demo_env["checkpoints"] / "medical_unet.ckpt"  # a UNetSegmenter checkpoint
    at.text_input(key="own_path_medical_unet").set_value(str(own)).run()
    _ok(at)
    assert not at.sidebar.error
    assert any(f"Your checkpoint `{own}`" in c.value for c in at.caption)
    wrong = demo_env["checkpoints"] / "driving_detection.ckpt"
    at.text_input(key="own_path_medical_unet").set_value(str(wrong)).run()
    assert not at.exception and "is not a checkpoint this page can use" in _texts(at.sidebar.error)


def test_own_medical_checkpoint_of_another_model_selects_that_model(demo_env):
    at = _ok(_page("medical"))
    at.selectbox(key="medical_model").set_value("medical_unet").run()
    own = demo_env["checkpoints"] / "medical_prob_unet.ckpt"
    at.text_input(key="own_path_medical_unet").set_value(str(own)).run()
    _ok(at)
    assert at.selectbox(key="medical_model").value == "medical_prob_unet"
    assert "Used as the Probabilistic U-Net." in _texts(at.sidebar.caption)
    at.selectbox(key="medical_model").set_value("medical_unet").run()  # the user can still go back
    _ok(at)
    assert at.selectbox(key="medical_model").value == "medical_unet"


def test_medical_test_image_stays_when_the_model_changes(demo_env):
    at = _ok(_page("medical"))
    image_id = at.selectbox(key="medical_item").options[-1]
    at.selectbox(key="medical_item").set_value(image_id).run()
    _ok(at)
    assert at.subheader[0].value == image_id
    at.selectbox(key="medical_model").set_value("medical_prob_unet").run()
    _ok(at)
    assert at.subheader[0].value == image_id


def test_shipped_weights_are_what_the_pages_show_by_default(demo_env, tmp_path, monkeypatch):
    """Shipped weights, their operating points and their best examples first. The cards' example ids are
    pointed at the tiny test sets (the real ones name images of the full synthetic sets)."""
    import json
    import shutil
    from collections import Counter

    from apps import demo_models as dm
    from domains.medical.data import LIDCPngDataset

    weights = tmp_path / "weights"
    shutil.copytree(dm.SHIPPED_DIR, weights)
    tiny_medical = LIDCPngDataset(str(demo_env["medical"]), "test").ids
    # the medical page opens on the Prob. U-Net
    for key, best in (("medical_prob_unet", tiny_medical[-1]), ("driving_anomaly", "synthetic_00001")):
        card = json.loads((weights / f"{key}.json").read_text())
        card["examples"]["best"]["id"] = best
        (weights / f"{key}.json").write_text(json.dumps(card))
    # the shipped instance card's point is the task's default 0.5: moved here, the slider's start shows its source
    card = json.loads((weights / "driving_instances.json").read_text())
    card["operating_point"]["threshold"] = 0.45
    (weights / "driving_instances.json").write_text(json.dumps(card))
    monkeypatch.setenv(dm.ENV_WEIGHTS, str(weights))
    monkeypatch.setenv(dm.ENV_CHECKPOINTS, str(tmp_path / "no_local_checkpoints"))
    at = _ok(_page("home"))
    shipped = {k for k in dm.DEMO_MODELS if (dm.SHIPPED_DIR / f"{k}.safetensors").is_file()}
    assert shipped == set(dm.DEMO_MODELS)  # every demo model ships its weights
    expected = {f"{k}.safetensors" for k in shipped} | (
        {"missing"} if shipped != set(dm.DEMO_MODELS) else set()
    )
    assert set(at.dataframe[0].value["checkpoint"]) == expected
    at = _ok(_page("driving"))
    point = dm.operating_point("driving_detection")["threshold"]
    assert at.slider(key="driving_det_threshold").value == pytest.approx(point)
    labels = [at.selectbox(key="driving_scene").format_func(i) for i in range(3)]
    assert labels[0].startswith("synthetic_00001: where the anomaly model is most right")
    assert labels[1].startswith(dm.examples("driving_detection")["best"]["id"] + ": where the detector")
    # the instance tab starts at its card's operating point, as the detector's
    point = dm.operating_point("driving_instances")["threshold"]
    assert at.slider(key="driving_inst_threshold").value == pytest.approx(point) == 0.45
    assert "instances shown" in _image_captions(at)[1]
    # the instance segmenter's best and worst test frames are offered beside the detector's; chosen, its tab
    # names the frame, its F1 at the slider's start and its ground truth, beside what the model finds
    scene = at.selectbox(key="driving_scene")
    labels = [scene.format_func(i) for i in range(len(scene.options))]
    for which, what in (("best", "right"), ("worst", "wrong")):
        example = dm.examples("driving_instances")[which]
        index = labels.index(
            f"{example['id']}: where the instance segmenter is most {what} "
            f"(its {which} test frame, F1 {example['f1']:.2f})"
        )
        # the best ones first: the anomaly model's, the detector's, this
        assert which == "worst" or index == 2
        at.selectbox(key="driving_scene").set_value(index).run()
        _ok(at)
        label = (dm.ROOT / example["file"]).with_suffix(".txt").read_text().splitlines()
        types = Counter(line.split()[0] for line in label if line.strip())
        truth = ", ".join(f"{n} {t}" for t, n in sorted(types.items()))
        note = next(c.value for c in at.caption if "instance segmenter's" in c.value)
        assert note.startswith(f"The instance segmenter's {which} test frame: F1 {example['f1']:.2f} ")
        classes = ", ".join(pc.load_model("driving_instances").class_names)
        assert note.endswith(f"Its ground-truth labels: {truth} (the model's classes: {classes}).") and truth
        assert f"instances_{which}.png: " in _texts(at.caption)
        assert "instances shown" in _image_captions(at)[1]
    assert dm.examples("driving_instances")["best"]["f1"] > dm.examples("driving_instances")["worst"]["f1"]
    anomaly = dm.operating_point("driving_anomaly")
    assert at.slider(key=f"driving_ano_threshold_{anomaly['score']}").value == pytest.approx(
        anomaly["threshold"]
    )
    at = _ok(_page("medical"))
    assert at.selectbox(key="medical_item").options[0].startswith(f"{tiny_medical[-1]}: where the model")


def test_a_new_upload_replaces_the_kept_one_with_its_own_digest(demo_env):
    at = AppTest.from_file(str(APPS / "views" / "driving.py"), default_timeout=TIMEOUT).run()
    at.radio(key="driving_source").set_value("Upload a photo").run()
    first, second = S.png(S.gradient_rgb(48, 96)), S.png(S.gradient_rgb(48, 96)[::-1].copy())
    at.file_uploader(key="driving_upload").set_value(("x.png", first, "image/png")).run()
    at.file_uploader(key="driving_upload").set_value(("x.png", second, "image/png")).run()
    _, name, data, digest = at.session_state["driving_upload_kept"]
    assert (name, data, digest) == ("x.png", second, pc.digest(second))


def test_an_exif_rotated_scene_is_shown_as_stored_with_its_mask(demo_env, tmp_path, monkeypatch):
    import cv2
    from PIL import Image

    from tests.apps.pages import page
    root = tmp_path / "own"
    (root / "images").mkdir(parents=True)
    (root / "labels_masks").mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.full((48, 64, 3), 120, np.uint8)).save(root / "images" / "a.jpg", exif=exif)
    label = np.zeros((48, 64), np.uint8)
    label[10:20, 10:30] = 1
    cv2.imwrite(str(root / "labels_masks" / "a.png"), label)
    monkeypatch.setenv(dm.ENV_ANOMALY_DATA, str(root))
    at = page("driving")
    assert not at.exception
    assert not any("Ground truth not shown" in w.value for w in at.warning)
