"""The accident page feeds clips at the model's own frame rate: the model counts frames (motion lags, horizon
targets made at its training clips' 10 fps), so a 30 fps clip is resampled to 10 fps (each model step reads the
nearest frame) and the results are mapped back to the clip's own frames; a clip slower than the model is
refused. Helpers alone (hand-checked indices, the shipped model on the bundled crash), then the page."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df
from streamlit.testing.v1 import AppTest

from apps import demo_models as dm
from domains.driving.accident.readers import model_steps
from tests.apps import samples as S
from tests.apps.pages import page_ok as _ok
from tests.apps.pages import texts as _texts
from tests.apps.test_accident_page import _charts, _metrics, _page, _upload

pytestmark = pytest.mark.usefixtures("one_thread")

SHIPPED = dm.SHIPPED_DIR / "driving_accident.safetensors"


# ------------------------------------------------------------------------------------------ helpers alone


def test_model_steps_read_the_nearest_frame_at_the_model_rate():
    # 30 fps -> 10 fps: every third frame; 10 frames span 0.3 s: steps at 0, 0.1, 0.2, 0.3 s
    np.testing.assert_array_equal(model_steps(10, 30.0, 10.0), [0, 3, 6, 9])
    # 25 fps -> 10 fps: step k at k * 2.5 frames, rounded half up: 0, 2.5 -> 3, 5, 7.5 -> 8, 10
    np.testing.assert_array_equal(model_steps(11, 25.0, 10.0), [0, 3, 5, 8, 10])
    # within 1 % of the model's rate (29.97 for 30): every frame is a step
    np.testing.assert_array_equal(model_steps(5, 29.97, 30.0), [0, 1, 2, 3, 4])
    with pytest.raises(ValueError, match="5 fps is slower than the 10 fps the model learnt at"):
        model_steps(20, 5.0, 10.0)


def test_model_fps_comes_from_the_training_data_settings(tmp_path, demo_env):
    fps, where = dm.accident_model_fps(SHIPPED)  # synthetic, settings null: the generator's 10 fps
    assert fps == 10.0 and "model card driving_accident.json" in where
    card = json.loads(SHIPPED.with_suffix(".json").read_text())
    for data, expected in (
        ({"data_format": "synthetic", "synthetic": {"fps": 25}}, 25.0),
        ({"data_format": "npz", "feature_fps": 20.0}, 20.0),
        ({"data_format": "ccd", "data_path": "/nowhere"}, 10.0),
    ):
        (tmp_path / "m.json").write_text(json.dumps({**card, "data_hyper_parameters": data}))
        assert dm.accident_model_fps(tmp_path / "m.safetensors")[0] == expected, data
    # the tiny fixture checkpoint was fitted without a data module: said to be assumed
    fps, where = dm.accident_model_fps(demo_env["checkpoints"] / "driving_accident.ckpt")
    assert fps == 10.0 and where.startswith("assumed")


def _repeat3(clip: dict) -> tuple[np.ndarray, ...]:
    """The same motion as a 30 fps clip: each frame and box three times."""
    return tuple(np.repeat(clip[k], 3, axis=0) for k in ("frames", "boxes", "box_valid"))


def test_a_30_fps_clip_gives_the_10_fps_risk_per_second():
    task = dm.load_task("driving_accident", SHIPPED)  # reads box motion: frame lags matter
    clip = dm.load_accident_clip(dm.ACCIDENT_EXAMPLES, "000000")  # 50 frames at 10 fps, contact frame 39
    args = (clip["track_ids"],)
    ten = dm.accident_predict(
        task, clip["frames"], clip["boxes"], clip["box_valid"], *args, 10.0, 39, "a", 10.0
    )
    frames, boxes, valid = _repeat3(clip)
    thirty = dm.accident_predict(task, frames, boxes, valid, *args, 30.0, 117, "b", model_fps=10.0)
    np.testing.assert_array_equal(thirty["model_steps"], np.arange(50) * 3)
    assert thirty["probabilities"].shape == (150, 4) and thirty["fps"] == 30.0 and thirty["toa"] == 117
    # frame 3k (t = k / 10 s) and the two after it hold step k: the 10 fps risk at the same second
    np.testing.assert_allclose(thirty["risk"], np.repeat(ten["risk"], 3), atol=1e-6)
    np.testing.assert_allclose(thirty["probabilities"][::3], ten["probabilities"], atol=1e-6)
    from domains.driving.accident.predict import alarm_frame

    threshold = float(task.model.alarm_threshold)
    alarm = alarm_frame(ten["risk"], threshold)
    assert alarm is not None and alarm_frame(thirty["risk"], threshold) == 3 * alarm  # same second
    # what the page did before: every 30 fps frame a model step, so the risk per second is not the same
    unresampled = dm.accident_predict(task, frames, boxes, valid, *args, 30.0, 117, "c")
    assert np.abs(unresampled["risk"][::3] - ten["risk"]).max() > 0.05


# ------------------------------------------------------------------------------------------------ page


def _curve_points(at: AppTest) -> dict[tuple[float, str], float]:
    """{(time s, horizon): P(contact)} of the risk chart's curves (its first layer's data set)."""
    proto = _charts(at)[0].proto
    name = json.loads(proto.spec)["layer"][0]["data"]["name"]
    data = next(d for d in proto.datasets if d.name == name)
    frame = convert_arrow_bytes_to_pandas_df(data.data.data)
    return {
        (round(float(t), 6), str(h)): float(p)
        for t, h, p in zip(frame["time (s)"], frame["horizon"], frame["P(contact)"])
    }


def test_page_resamples_a_30_fps_upload_to_the_model_rate(demo_env):
    motion = S.moving_box_frames(10)
    at = _ok(_upload(_page(), "ten.zip", S.frames_zip(motion)))
    assert "ten.zip: 10 fps, the frame rate the model learnt at" in _texts(at.caption)
    ten, ten_top = _curve_points(at), _metrics(at)["Highest risk"]
    at.file_uploader(key="accident_upload").set_value(
        ("thirty.zip", S.frames_zip([f for f in motion for _ in range(3)]), "application/zip")
    )
    at.run()
    at.number_input(key="accident_fps").set_value(30.0).run()
    _ok(at)
    captions = _texts(at.caption)
    assert "thirty.zip: 30 frames at 30 fps (as set above; 1.0 s)" in captions
    assert "thirty.zip: 30 fps clip resampled to the model's 10 fps (" in captions
    assert "30 -> 10 frames" in captions
    thirty = _curve_points(at)
    # the curve holds the model's 10 steps at 0.0, 0.1, ... 0.9 s, as the 10 fps clip's: the same risks
    assert sorted({t for t, _ in thirty}) == pytest.approx([k / 10 for k in range(10)])
    assert thirty.keys() == ten.keys()
    for point, p in ten.items():
        assert thirty[point] == pytest.approx(p, abs=1e-6), point
    assert _metrics(at)["Highest risk"] == ten_top
    # the frame slider and the alarm are on the clip's own 30 frames
    frame = next(s for s in at.slider if str(s.key).startswith("accident_frame_"))
    assert frame.max == 29


def test_a_resampled_clips_caption_and_alarm_say_which_frames_the_downloads_and_the_alarm_count(demo_env):
    """A 30 fps clip's caption said the CSVs were on the clip's own frames (they hold the model's steps, with
    source_frame), and the Alarm metric's "frame 69" was a clip frame where the CSV's frame column ends at 49."""
    motion = S.moving_box_frames(10)
    at = _upload(_page(), "thirty.zip", S.frames_zip([f for f in motion for _ in range(3)]))
    at.number_input(key="accident_fps").set_value(30.0).run()
    _ok(at)
    caption = next(c.value for c in at.caption if "resampled to the model's 10 fps" in c.value)
    assert "the alarm and the frame slider are on the clip's own 30 frames" in caption
    assert "The downloads hold the model's 10 steps, as `predict` writes them: a CSV's `frame` is the step, its " \
        "`source_frame` the clip's frame that step read." in caption
    assert "CSVs are on the clip's own" not in caption
    # a threshold the risk first reaches at a later step k: the alarm is source frame 3k, model step k
    risk = [p for (t, h), p in sorted(_curve_points(at).items()) if h == "within 2 s"]
    top = max(risk)
    threshold = math.floor(top * 1000) / 1000
    step = next(k for k, p in enumerate(risk) if p >= threshold)
    at.slider(key="accident_threshold").set_value(threshold).run()
    _ok(at)
    assert _metrics(at)["Alarm"] == f"t = {3 * step / 30:.2f} s (source frame {3 * step}, model step {step})"


def test_the_alarm_metric_names_the_source_frame_and_the_model_step_of_a_resampled_clip():
    from apps.views.accident import _alarm_text

    steps = np.arange(0, 150, 3)  # 150 frames at 30 fps, read at 10 fps: 50 steps
    assert _alarm_text(69, 30.0, steps, 150) == "t = 2.30 s (source frame 69, model step 23)"
    assert _alarm_text(70, 30.0, steps, 150).endswith("(source frame 70, model step 23)")  # holds step 23
    assert _alarm_text(23, 10.0, np.arange(50), 50) == "t = 2.3 s (frame 23)"  # at the model's rate: one number
    assert _alarm_text(None, 30.0, steps, 150) == "none"


def test_a_clip_shorter_than_the_longest_horizon_is_scored_with_a_warning(demo_env):
    """A 0.3 s clip (3 frames at 10 fps) was scored like a full clip without a word; the longest horizon is 2 s."""
    at = _ok(_upload(_page(), "short.zip", S.frames_zip(S.moving_box_frames(3))))
    (warning,) = [w.value for w in at.warning if "shorter than" in w.value]
    assert warning.startswith("short.zip is 0.3 s long, shorter than the 2 s the model looks ahead")
    assert "its early risk has little history behind it" in warning
    assert len(_charts(at)) == 1  # scored, not refused
    at = _ok(_upload(_page(), "long.zip", S.frames_zip(S.moving_box_frames(20))))  # 2.0 s: as long as the horizon
    assert "shorter than" not in _texts(at.warning)


def test_page_refuses_a_clip_slower_than_the_model(demo_env):
    at = _upload(_page(), "slow.zip", S.frames_zip(S.moving_box_frames(8)))
    at.number_input(key="accident_fps").set_value(5.0).run()
    assert not at.exception and len(at.error) == 1
    message = at.error[0].value
    assert message.startswith("slow.zip: the clip's 5 fps is slower than the 10 fps the model learnt at")
    assert "Give a clip of 10 fps or more" in message
    assert not _charts(at)


def test_a_slow_video_is_refused_before_the_detector_reads_its_frames(demo_env, monkeypatch):
    """The header's frame rate is known at once: the refusal came after the detector's second a frame."""
    calls = []
    monkeypatch.setattr(dm, "detect_clip_objects", lambda *args, **kwargs: calls.append(args) or {})
    at = _upload(_page(), "slow.mp4", S.mp4(S.moving_box_frames(8), fps=5.0))
    assert not at.exception and len(at.error) == 1
    assert at.error[0].value.startswith("slow.mp4: the clip's 5 fps is slower than the 10 fps")
    assert calls == [] and not _charts(at)


def test_clip_steps_without_a_model_rate_take_every_frame_and_name_a_too_short_clip():
    assert dm.accident_clip_steps(5, 10.0, None).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match=r"1 frames at 10 fps \(0\.00 s between its first and last frame\): that is 1 step"):
        dm.accident_clip_steps(1, 10.0, None)  # formatted the missing model rate: a TypeError



def _red_box(task, image: np.ndarray) -> dict:
    """A stand-in for the demo detector: the moving box of ``S.moving_box_frames`` (its red pixels), exactly."""
    ys, xs = np.nonzero((image[..., 0] > 150) & (image[..., 1] < 100))
    box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    return {"boxes": np.array([box], np.float32), "scores": np.array([1.0]), "labels": np.array([0])}


def test_the_detector_runs_only_on_the_frames_the_model_reads_and_those_between_hold_their_boxes(
    demo_env, monkeypatch
):
    """A 30 fps upload ran the detector (a second a frame on 2 CPU cores) on all its frames where the model
    reads a third of them, and linked its tracks at 30 fps; a changed frame rate reused the detections made at
    the other one. Now: the model's frames alone, and each frame between two shows the latest one's boxes."""
    import streamlit as st

    detected: list[np.ndarray] = []  # the box the detector found, per call

    def detect(task, image):
        found = _red_box(task, image)
        detected.append(found["boxes"][0])
        return found

    monkeypatch.setattr(dm, "detect_objects", detect)
    fed: list[tuple[np.ndarray, np.ndarray]] = []  # (boxes, box_valid) the page gave the anticipator
    predict = dm.accident_predict
    monkeypatch.setattr(dm, "accident_predict", lambda *a, **k: fed.append(a[2:4]) or predict(*a, **k))
    bar_texts: list[str] = []
    real_progress = st.progress

    class Bar:  # st.progress's bar, its texts recorded
        def __init__(self, value, text=None):
            bar_texts.append(text)
            self.bar = real_progress(value, text=text)

        def progress(self, value, text=None):
            bar_texts.append(text)
            return self.bar.progress(value, text=text)

        def empty(self):
            return self.bar.empty()

    monkeypatch.setattr(st, "progress", Bar)
    motion = S.moving_box_frames(30, h=96, w=192)  # the box grows every frame: each frame's box is its own
    at = _ok(_upload(_page(), "held.zip", S.frames_zip(motion)))  # asked for its rate: the model's 10 fps
    # at the model's own rate, as before: every frame detected, each with its own boxes
    assert len(detected) == 30 and bar_texts[0] == "Detecting objects in 30 frames ..."
    every = r"boxes scoring >= [\d.]+ in every frame \(30 boxes\), linked into tracks by IoU;"
    assert re.search(every, _texts(at.caption))
    boxes, valid = fed[-1]
    (slot,) = np.flatnonzero(valid.any(0))
    np.testing.assert_array_equal(boxes[:, slot], np.stack(detected))
    detected.clear()
    bar_texts.clear()
    at.number_input(key="accident_fps").set_value(30.0).run()
    _ok(at)
    # 30 fps: the model reads frames 0, 3, ... 27, and only those are detected (not the 10 fps run's detections
    # of every frame again)
    assert len(detected) == 10
    steps = np.arange(0, 30, 3)
    np.testing.assert_array_equal(np.stack(detected), [_red_box(None, motion[i])["boxes"][0] for i in steps])
    assert bar_texts[0] == "Detecting objects in 10 frames (of 30: the ones the model reads) ..."
    assert bar_texts[-1] == "Detecting objects: 10 of the 10 frames the model reads"
    # per source frame, as the page draws and writes them: frames 3k, 3k + 1, 3k + 2 hold step k's box
    boxes, valid = fed[-1]
    assert boxes.shape[:2] == valid.shape == (30, dm.ACCIDENT_SLOTS)
    (slot,) = np.flatnonzero(valid.any(0))
    assert valid[:, slot].all()
    np.testing.assert_array_equal(boxes[:, slot], np.repeat(np.stack(detected), 3, axis=0))
    captions = _texts(at.caption)
    assert "in the 10 of the clip's 30 frames that the model reads (10 boxes), linked into tracks by IoU at" in captions
    assert "A frame between two it reads shows the boxes of the one before, as it shows its risk." in captions
    assert "linked into tracks by IoU at the model's 10 fps;" in captions
    detected.clear()
    at.number_input(key="accident_fps").set_value(29.97).run()  # the same frames read: nothing detected again
    _ok(at)
    assert not detected and "29.97 fps" in _texts(at.caption)


def test_frame_times_tell_frames_apart_above_ten_fps():
    """At 30 fps frames 17 and 18 were both labelled 0.6 s, the one before the alarm carrying the alarm's time."""
    from domains.driving.accident.predict import frame_time

    assert (frame_time(17, 30), frame_time(18, 30), frame_time(20, 30)) == ("0.57", "0.60", "0.67")
    assert frame_time(5, 10) == "0.5"  # at the model's 10 fps, as before


def test_a_resampled_uploads_downloads_are_predicts_files_at_the_model_steps(demo_env):
    """A 30 fps upload's risk.csv and objects.csv had a row per source frame, two of three holding copies (and
    boxes the detector never found there), with nothing saying which frames the model read; predict writes the
    model's steps with their source_frame. The downloads are now predict's files."""
    import csv
    import io

    from apps.views.accident import _outputs

    task = dm.load_task("driving_accident", demo_env["checkpoints"] / "driving_accident.ckpt")
    example = dm.load_accident_clip(dm.ACCIDENT_EXAMPLES, "000000")
    thrice = {k: np.repeat(example[k], 3, axis=0) for k in ("frames", "boxes", "box_valid")}  # 10 -> 30 fps
    prediction = dm.accident_predict(
        task, thrice["frames"], thrice["boxes"], thrice["box_valid"], example["track_ids"], 30.0, model_fps=10.0
    )
    steps = np.asarray(prediction["model_steps"])
    np.testing.assert_array_equal(steps, np.arange(0, len(thrice["frames"]), 3))
    files = _outputs(prediction, 0.5, True)
    rows = list(csv.DictReader(io.StringIO(files["risk.csv"].decode())))
    assert [int(r["source_frame"]) for r in rows] == steps.tolist()
    assert [int(r["frame"]) for r in rows] == list(range(len(steps)))
    np.testing.assert_allclose([float(r["risk"]) for r in rows], prediction["risk"][steps], atol=1e-4)
    objects = list(csv.DictReader(io.StringIO(files["objects.csv"].decode())))
    assert objects and {int(r["source_frame"]) for r in objects} <= set(steps.tolist())
    from PIL import Image

    gif = Image.open(io.BytesIO(files[f"{prediction['clip_id']}.gif"]))
    assert gif.n_frames == len(steps)
    # a clip at the model's own rate is written as before: every frame, no source_frame column
    own = dm.accident_predict(task, example["frames"], example["boxes"], example["box_valid"], example["track_ids"], 10.0)
    header = _outputs(own, 0.5, False)["risk.csv"].decode().splitlines()[0]
    assert header.startswith("frame,") and "source_frame" not in header



def test_the_frame_slider_goes_to_the_new_alarm_when_the_frame_rate_is_set_again(demo_env):
    motion = S.moving_box_frames(10)
    at = _ok(_upload(_page(), "thirty.zip", S.frames_zip([f for f in motion for _ in range(3)])))

    def frame_slider():
        return next(s for s in at.slider if str(s.key).startswith("accident_frame_"))

    threshold = at.slider(key="accident_threshold")
    own = threshold.value
    frame_slider().set_value(20).run()
    threshold.set_value(0.5).run()  # a threshold moved leaves the frame where it was
    assert frame_slider().value == 20
    threshold.set_value(own).run()
    at.number_input(key="accident_fps").set_value(30.0).run()
    _ok(at)
    # a newly set rate is a new risk curve: the slider starts again at its alarm, not at frame 20
    alarm = re.search(r"\(source frame (\d+)", _metrics(at)["Alarm"])
    assert frame_slider().value == (int(alarm.group(1)) if alarm else 0) != 20
