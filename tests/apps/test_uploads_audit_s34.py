"""Defects a driving engineer found driving the demo (audit s34): a 16:9 photo analysed at half the object size
the models learnt, without a word; a clip's frame limit counting decoded frames, not the ones the model reads
(a 12 s clip at 30 fps refused though the model reads 120 of its frames); the accident page naming an object
"behind" an alarm whose own risk was far below it."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from apps import demo_models as dm
from apps import uploads as up
from domains.driving.accident.readers import model_steps
from tests.apps import samples as S
from tests.apps.pages import metrics as _metrics
from tests.apps.pages import page_ok as _ok
from tests.apps.pages import texts as _texts
from tests.apps.pages import upload_on
from tests.apps.test_accident_page import _page, _upload

pytestmark = pytest.mark.usefixtures("one_thread")

TRAINED = "The models learnt from wide dashcam frames (640x192, 3.3:1) of synthetic streets"


# ------------------------------------------------------------------------------------- 1: a photo's scale


def test_a_16_9_photo_is_warned_with_the_scale_it_is_analysed_at_and_the_crop_that_fixes_it():
    """At 16:9 the photo is fitted into the 3.3:1 input at 341x192 of 640x192: both pedestrians of a test scene
    fell under the page's 0.50 where the same road cropped to 1920x576 kept them. Only under 1.3:1 was warned."""
    assert up.analysis_scale(1920, 1080) == pytest.approx(0.533, abs=1e-3)
    assert up.analysis_scale(1920, 576) == up.analysis_scale(3000, 600) == 1.0
    warning = up.unlike_dashcam(1920, 1080, "photo", TRAINED)
    assert warning.startswith("This photo (1920x1080, 1.78:1) is fitted whole into the models' 3.3:1 input, so it is "
                              "analysed at 0.53x the object size they learnt (341x192 of it where their frames fill "
                              "640x192). The models learnt from wide dashcam frames")
    assert "expect missed objects, small and distant ones first" in warning
    assert "Crop the road band to about 3.3:1 first (e.g. 1920x576 from this photo)" in warning
    assert "0.71x" in up.unlike_dashcam(2560, 1080, "photo", TRAINED)  # 21:9 too
    # the model's own shape (and one near it) is not warned; portrait keeps its own warning
    for width, height in ((640, 192), (1920, 576), (1001, 333)):
        assert up.unlike_dashcam(width, height, "photo", TRAINED) is None
    assert up.unlike_dashcam(1080, 1920, "photo", TRAINED).startswith("This photo is portrait (1080x1920)")
    # the narrow-only rule the accident page keeps (its anticipator squeezes frames; see _far_from_training)
    assert up.unlike_dashcam(1920, 1080, "clip", TRAINED, min_scale=None) is None
    assert "much less wide" in up.unlike_dashcam(1200, 1000, "clip", TRAINED, min_scale=None)


def test_the_driving_page_shows_the_scale_warning_for_a_16_9_photo(demo_env):
    """Where the warning is shown (apps/views/driving.py, through its unchanged call): it reads right there."""
    road = np.full((90, 160, 3), 100, np.uint8)  # 16:9
    at = _ok(upload_on("driving", "road.png", S.png(road)))
    warning = _texts(at.warning)
    assert "This photo (160x90, 1.78:1) is fitted whole into the models' 3.3:1 input, so it is analysed at 0.53x" \
        in warning
    assert "(e.g. 160x48 from this photo)" in warning
    at = _ok(upload_on("driving", "band.png", S.png(np.full((48, 160, 3), 100, np.uint8))))  # 3.3:1
    assert "analysed at" not in _texts(at.warning)


# ------------------------------------------------------------------------------ 2: the frames the model reads


def test_a_faster_video_counts_and_keeps_only_the_frames_the_model_reads(monkeypatch):
    """36 frames at 30 fps are 12 model steps at 10 fps: under a 15-frame limit, where they were refused; only
    those frames are converted and held, and they are the full decode's frames at the model's steps."""
    frames = S.moving_box_frames(36)
    data = S.mp4(frames, fps=30.0)
    whole = up.decode_clip(data, "dash.mp4")  # no model rate: every frame, as before
    assert len(whole.frames) == 36 and whole.fps == pytest.approx(30.0) and not whole.resampled
    with pytest.raises(up.UploadError, match=r"dash.mp4: 36 frames; the demo takes at most 15 frames the model reads "
                                             r"\(1.5 s at 10 fps\), and this video is 1.2 s at 30 fps: cut"):
        up.decode_clip(data, "dash.mp4", max_frames=15)
    shrunk = []
    real_shrink = up._shrink
    monkeypatch.setattr(up, "_shrink", lambda frame, side: shrunk.append(1) or real_shrink(frame, side))
    clip = up.decode_clip(data, "dash.mp4", max_frames=15, model_fps=10.0)
    steps = model_steps(36, 30.0, 10.0)
    np.testing.assert_array_equal(steps, np.arange(0, 36, 3))
    assert len(shrunk) <= len(steps) + 1  # decoded frames between steps are never converted nor held
    np.testing.assert_array_equal(clip.frames, whole.frames[steps])
    np.testing.assert_array_equal(clip.source_frames, steps)
    assert clip.fps == 10.0 and clip.source_fps == pytest.approx(30.0) and clip.source_count == 36
    assert clip.resampled and clip.source_size == (96, 48)
    assert ("resampled to the model's 10 fps as decoded: the 12 of the video's 36 frames (30 fps) that the model "
            "reads were kept, each model step the nearest frame") in clip.notes
    # more steps than the limit: refused before decoding, in frames and seconds at the model's rate
    with pytest.raises(up.UploadError, match=r"36 frames; the demo takes at most 10 frames the model reads \(1 s at "
                                             r"the model's 10 fps\), and this video is 1.2 s at 30 fps \(12 frames at "
                                             r"the model's rate\): cut"):
        up.decode_clip(data, "dash.mp4", max_frames=10, model_fps=10.0)


@pytest.mark.parametrize(("n", "fps"), [(11, 25.0), (12, 25.0), (13, 20.0), (7, 60.0)])
def test_frames_kept_as_decoded_are_the_model_steps_of_the_whole_clip(n, fps):
    """Uneven ratios (25 -> 10 fps reads frames 0, 3, 5, 8, 10) and clip ends that drop the last frame kept."""
    frames = [np.full((32, 64, 3), 8 * i, np.uint8) for i in range(n)]
    data = S.mp4(frames, fps=fps)
    whole = up.decode_clip(data, "v.mp4")
    clip = up.decode_clip(data, "v.mp4", model_fps=10.0)
    steps = model_steps(n, fps, 10.0)
    np.testing.assert_array_equal(clip.source_frames, steps)
    np.testing.assert_array_equal(clip.frames, whole.frames[steps])


def test_a_video_at_the_models_rate_and_a_zip_are_decoded_whole():
    at_rate = up.decode_clip(S.mp4(S.moving_box_frames(6), fps=10.0), "ten.mp4", model_fps=10.0)
    assert len(at_rate.frames) == 6 and not at_rate.resampled and at_rate.fps == pytest.approx(10.0)
    # a zip's rate is set after it is read: all its frames count, and the message says how to stay under
    with pytest.raises(up.UploadError, match=r"z.zip: 6 frames; the demo takes at most 4 frames the model reads \(0.4 s "
                                             r"at the model's 10 fps\): a zip's frames are all read"):
        up.decode_clip(S.frames_zip(S.moving_box_frames(6)), "z.zip", max_frames=4, model_fps=10.0)


def test_the_risk_of_a_video_resampled_as_decoded_is_the_risk_of_the_whole_clip_resampled(demo_env):
    """Decoding only the frames the model reads leaves the model's outputs as they were."""
    task = dm.load_task("driving_accident", demo_env["checkpoints"] / "driving_accident.ckpt")
    data = S.mp4(S.moving_box_frames(30), fps=30.0)
    whole = up.decode_clip(data, "v.mp4")
    kept = up.decode_clip(data, "v.mp4", model_fps=10.0)
    empty = dm.no_objects(len(whole.frames))
    before = dm.accident_predict(task, whole.frames, empty["boxes"], empty["box_valid"], empty["track_ids"], 30.0,
                                 model_fps=10.0)
    empty = dm.no_objects(len(kept.frames))
    after = dm.accident_predict(task, kept.frames, empty["boxes"], empty["box_valid"], empty["track_ids"], 10.0,
                                model_fps=10.0)
    steps = np.asarray(before["model_steps"])
    np.testing.assert_array_equal(steps, kept.source_frames)
    np.testing.assert_allclose(after["probabilities"], before["probabilities"][steps], atol=1e-6)


def test_the_page_reads_a_30_fps_video_resampled_as_decoded_and_says_so(demo_env):
    at = _ok(_upload(_page(), "dash.mp4", S.mp4(S.moving_box_frames(12), fps=30.0)))
    captions = _texts(at.caption)
    assert "dash.mp4: 12 frames at 30 fps (from the video's header; 0.4 s), 96x48 pixels; the 4 the model reads " \
        "at its 10 fps kept." in captions
    assert "dash.mp4: 30 fps clip resampled to the model's 10 fps (" in captions
    assert "12 -> 4 frames, each model step (every 0.1 s) reading the nearest frame; only those frames were kept as " \
        "the video was decoded" in captions
    assert "in the 4 frames that the model reads" in captions
    assert "resampled to the model's 10 fps as decoded" in _texts(at.info)
    def frame_slider():
        return next(s for s in at.slider if str(s.key).startswith("accident_frame_"))

    assert frame_slider().max == 3  # the model's steps: the frames between were never kept
    assert frame_slider().label == "Model step"  # "Frame 2" read as the video's frame 2; it is its frame 6
    at.slider(key="accident_threshold").set_value(0.0).run()  # an alarm at the first step
    assert _metrics(at)["Alarm"] == "t = 0.0 s (source frame 0, model step 0)"
    frame_slider().set_value(2).run()
    assert any(img.caption.startswith("Model step 2 (source frame 6) (t = 0.2 s)")
               for element in at.get("image") for img in element.proto.imgs)
    help_text = at.file_uploader(key="accident_upload").proto.help
    assert "300 frames read by the model (30 s at its 10 fps: a faster video is resampled" in help_text


def test_downloads_of_a_video_resampled_as_decoded_number_the_videos_frames(demo_env):
    from apps.views.accident import _outputs

    task = dm.load_task("driving_accident", demo_env["checkpoints"] / "driving_accident.ckpt")
    kept = up.decode_clip(S.mp4(S.moving_box_frames(12), fps=30.0), "v.mp4", model_fps=10.0)
    empty = dm.no_objects(len(kept.frames))
    prediction = dm.accident_predict(task, kept.frames, empty["boxes"], empty["box_valid"], empty["track_ids"], 10.0,
                                     model_fps=10.0)
    rows = list(csv.DictReader(io.StringIO(_outputs(prediction, 0.5, False, None, kept.source_frames)["risk.csv"]
                                           .decode())))
    assert [(int(r["frame"]), int(r["source_frame"])) for r in rows] == [(0, 0), (1, 3), (2, 6), (3, 9)]


# ------------------------------------------------------------------------------- 3: the object behind an alarm


def _said(monkeypatch, prediction: dict, clip: dict, alarm: int, threshold: float) -> str:
    import streamlit as st

    from apps.views.accident import _which_object

    said: list[str] = []
    monkeypatch.setattr(st, "markdown", said.append)
    monkeypatch.setattr(st, "info", said.append)
    _which_object(prediction, clip, alarm, threshold)
    return " ".join(said)


def test_an_object_far_below_the_alarm_is_named_only_as_the_most_likely_one(monkeypatch, demo_env):
    """dashcam_10fps.avi alarmed at a frame risk of 0.949 and the page said "the highest-risk object is track 9
    (Car), risk 0.354": the frame head saw it; no object's own risk came near the threshold."""
    prediction = {
        "fps": 10.0,
        "risk": np.array([0.1, 0.949]),
        "horizons": [0.5, 1.0, 1.5, 2.0],
        "box_valid": np.array([[True, True], [True, True]]),
        "object_risk": np.array([[0.1, 0.05], [0.354, 0.2]]),
        "track_ids": np.array([9, 4]),
    }
    clip = {"classes": {9: "Car", 4: "Pedestrian"}}
    text = _said(monkeypatch, prediction, clip, 1, 0.6)
    assert text.startswith("At the alarm (t = 0.1 s) no tracked object accounts for it: the frame's risk 0.949 comes "
                           "from the model's frame head, and every object's own risk (a separate head) stays below "
                           "the threshold 0.600. The most likely one is **track 9** (Car), risk 0.354.")
    # an object at or above the threshold explains the alarm, as before
    prediction["object_risk"] = np.array([[0.1, 0.05], [0.7, 0.2]])
    text = _said(monkeypatch, prediction, clip, 1, 0.6)
    assert text == "At the alarm (t = 0.1 s) the highest-risk object is **track 9** (Car), risk 0.700."
