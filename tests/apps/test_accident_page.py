"""The accident page through ``streamlit.testing.v1.AppTest`` with a tiny random-weight anticipator (``demo_env``):
a fixture clip and the bundled examples, an uploaded zip (detector objects, asked frame rate), bad uploads, own
checkpoints, no model; and the page's inference helpers alone."""

from __future__ import annotations

import csv
import json
import re
import shutil

import numpy as np
import pytest
from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df
from streamlit.testing.v1 import AppTest

from apps import demo_models as dm
from tests.apps import samples as S
from tests.apps.pages import image_captions as _image_captions
from tests.apps.pages import metrics as _metrics
from tests.apps.pages import page
from tests.apps.pages import page_ok as _ok
from tests.apps.pages import texts as _texts
from tests.apps.tiny import ACCIDENT_ALARM

pytestmark = pytest.mark.usefixtures("one_thread")


def _page() -> AppTest:
    return page("accident")


def _charts(at: AppTest) -> list:
    return at.get("vega_lite_chart")


def test_fixture_clip_shows_the_curve_the_alarm_and_the_object(demo_env):
    at = _ok(_page())
    assert "driving_accident.ckpt" in _texts(at.caption) and "video_ap 0.600" in _texts(at.caption)
    clips = at.selectbox(key="accident_clip")
    labels = [clips.format_func(i) for i in range(len(clips.options))]
    # the fixture set's test split (one clip per kind), a crash first, then the two bundled examples
    assert labels[0].startswith("000001: crash") and "contact at 0.7 s" in labels[0]
    assert [lab.split(":")[1].split(",")[0].strip() for lab in labels[:3]] == ["crash", "near miss", "normal"]
    assert labels[3:] == [
        "bundled example 000000: crash, lead braking, contact at 3.9 s",
        "bundled example 000003: near miss, pedestrian stepping out",
    ]
    assert "ground-truth tracks from its annotation (3 in the 19 object slots)" in _texts(at.caption)
    # what the model reads follows its input_kind: this fixture's reads frames (the shipped one reads boxes)
    assert "sees every frame resized" in _texts(at.caption)
    assert "reads the objects' boxes" not in _texts(at.caption)
    assert len(_charts(at)) == 1
    spec = _charts(at)[0].proto.spec
    assert "P(contact)" in spec and "threshold" in spec
    # the threshold starts at the model's own alarm threshold
    assert at.slider(key="accident_threshold").value == pytest.approx(ACCIDENT_ALARM, abs=1e-3)
    assert set(_metrics(at)) == {"Alarm", "Lead time before contact", "Highest risk"}
    # threshold 0: the alarm fires at the first frame, 0.7 s before the contact, on a ground-truth object
    at.slider(key="accident_threshold").set_value(0.0).run()
    _ok(at)
    metrics = _metrics(at)
    assert metrics["Alarm"] == "t = 0.0 s (frame 0)" and metrics["Lead time before contact"] == "0.7 s"
    which = _texts(at.markdown)
    assert re.search(r"highest-risk object is \*\*track (1|5|2)\*\* \(Car\), risk 0\.\d{3}", which)
    assert "red: alarm at 0.0 s" in _texts(at.caption) and "black: contact at 0.7 s" in _texts(at.caption)
    # threshold 1: no alarm, said in words
    at.slider(key="accident_threshold").set_value(1.0).run()
    _ok(at)
    assert _metrics(at)["Alarm"] == "none" and _metrics(at)["Lead time before contact"] == "missed"
    assert "No alarm" in _texts(at.info)
    frame = next(s for s in at.slider if str(s.key).startswith("accident_frame_"))
    frame.set_value(5).run()
    _ok(at)
    assert _image_captions(at)[0].startswith("Frame 5 (t = 0.5 s), risk ")
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == ["Risk per frame (CSV)", "Object risk per frame (CSV)", "Annotated clip (GIF)"]


def test_bundled_example_clip_runs(demo_env):
    at = _ok(_page())
    at.selectbox(key="accident_clip").set_value(3).run()
    _ok(at)
    assert "50 frames at 10 fps, 320x96 pixels" in _texts(at.caption)
    assert "contact at 3.9 s" in _texts(at.caption) and len(_charts(at)) == 1


def _frame_slider(at: AppTest):
    return next(s for s in at.slider if str(s.key).startswith("accident_frame_"))


def test_the_frame_slider_moves_the_rule_of_a_cached_chart(demo_env, monkeypatch):
    """The risk chart but its frame rule is built once per clip and threshold (building it was ~40 ms of a
    ~55 ms rerun): moving the frame slider moves the blue rule and builds nothing."""
    import altair as alt

    builds, layer = [], alt.layer
    monkeypatch.setattr(alt, "layer", lambda *charts, **kw: builds.append(1) or layer(*charts, **kw))
    at = _ok(_page())
    built = len(builds)  # 0 when an earlier test drew this clip at this threshold already
    for frame in (3, 5):
        _frame_slider(at).set_value(frame).run()
        _ok(at)
        layers = json.loads(_charts(at)[0].proto.spec)["layer"]
        assert [layer["mark"]["type"] for layer in layers[:3]] == ["line", "rule", "rule"]
        assert layers[2]["mark"]["color"] == "#4c78a8"  # above the curves and the threshold, under the alarm
        assert layers[2]["data"]["values"] == [{"time (s)": pytest.approx(frame / 10)}]
        assert _image_captions(at)[0].startswith(f"Frame {frame} (t = {frame / 10:.1f} s)")
    assert len(builds) == built
    at.slider(key="accident_threshold").set_value(0.321).run()  # another threshold: another chart
    _ok(at)
    assert len(builds) == built + 1
    chart = _charts(at)[0].proto
    name = json.loads(chart.spec)["layer"][1]["data"]["name"]
    threshold = next(d for d in chart.datasets if d.name == name).data.data
    assert convert_arrow_bytes_to_pandas_df(threshold)["threshold"].tolist() == [0.321]


def _upload(at: AppTest, name: str, data: bytes) -> AppTest:
    at.radio(key="accident_source").set_value("Upload a video or a zip of frames").run()
    at.file_uploader(key="accident_upload").set_value((name, data, "application/zip"))
    return at.run()


def test_uploaded_zip_runs_with_detector_objects_and_an_asked_frame_rate(demo_env):
    at = _ok(_upload(_page(), "dash.zip", S.frames_zip(S.moving_box_frames(8))))
    assert at.number_input(key="accident_fps").value == 10.0
    assert "does not say its frame rate" in _texts(at.info)
    captions = _texts(at.caption)
    assert (
        "Objects: the demo detector's boxes scoring >=" in captions
        and "linked into tracks by IoU" in captions
    )
    assert "dash.zip: 8 frames at 10 fps (as set above; 0.8 s), 96x48 pixels" in captions
    assert "each of the 8 frames is one model step" in captions  # the model's own 10 fps
    assert len(_charts(at)) == 1 and _metrics(at)["Contact"] == "none known"
    at.number_input(key="accident_fps").set_value(20.0).run()
    _ok(at)
    # 20 fps: resampled to the model's 10 fps, frames 0, 2, 4, 6 (0.0 to 0.3 s)
    assert "8 frames at 20 fps (as set above; 0.4 s)" in _texts(at.caption)
    assert "20 fps clip resampled to the model's 10 fps (" in _texts(at.caption)
    assert "8 -> 4 frames" in _texts(at.caption)
    at.slider(key="accident_threshold").set_value(0.0).run()
    _ok(at)
    assert _metrics(at)["Alarm"] == "t = 0.00 s (source frame 0, model step 0)"  # hundredths above 10 fps


def test_a_clip_with_more_tracks_than_slots_says_the_slots_are_chosen_over_the_whole_clip(demo_env, monkeypatch):
    """The 19 tracks seen longest over the whole clip are scored: the same 16 frames alarmed alone and not as
    the start of a 30-frame clip, and the page said nothing of it."""
    real = dm.detect_clip_objects
    monkeypatch.setattr(dm, "detect_clip_objects", lambda *a, **k: {**real(*a, **k), "tracks": 25})
    at = _ok(_upload(_page(), "many.zip", S.frames_zip(S.moving_box_frames(7))))
    assert "25 tracks were found and the 19 seen in the most frames of the whole clip are scored" in _texts(at.info)
    monkeypatch.setattr(dm, "detect_clip_objects", lambda *a, **k: {**real(*a, **k), "tracks": 19})
    at = _ok(_upload(_page(), "few.zip", S.frames_zip(S.moving_box_frames(9))))
    assert "tracks were found" not in _texts(at.info)  # as many tracks as slots: every one is scored


def test_no_alarm_advises_a_lower_threshold_only_when_the_risk_rose_at_all(demo_env, monkeypatch):
    """A risk near zero throughout (no object found) was told to lower the threshold, which would fire on noise."""
    real = dm.accident_predict

    def quiet(*args, **kwargs):
        out = real(*args, **kwargs)
        return {**out, "risk": out["risk"] * 0 + 0.01}

    monkeypatch.setattr(dm, "accident_predict", quiet)
    at = _ok(_upload(_page(), "calm.zip", S.frames_zip(S.moving_box_frames(11))))
    assert "Nothing in this clip looks like a coming contact to the model." in _texts(at.info)
    monkeypatch.setattr(dm, "accident_predict", real)
    at = _ok(_upload(_page(), "busy.zip", S.frames_zip(S.moving_box_frames(12))))
    at.slider(key="accident_threshold").set_value(1.0).run()
    _ok(at)
    assert "Lower the threshold to see when it would fire." in _texts(at.info)


def test_uploaded_video_keeps_its_frame_rate(demo_env):
    at = _ok(_upload(_page(), "dash.mp4", S.mp4(S.moving_box_frames(6), fps=20.0)))
    assert not at.number_input  # the container says 20 fps
    assert "dash.mp4: 6 frames at 20 fps (from the video's header; 0.3 s)" in _texts(at.caption)
    assert "20 fps clip resampled to the model's 10 fps (" in _texts(at.caption)
    assert "6 -> 3 frames" in _texts(at.caption)


def test_without_a_detector_the_upload_runs_with_no_objects(demo_env, tmp_path, monkeypatch):
    folder = tmp_path / "ckpts"
    shutil.copytree(demo_env["checkpoints"], folder)
    (folder / "driving_detection.ckpt").unlink()
    monkeypatch.setenv(dm.ENV_CHECKPOINTS, str(folder))
    at = _upload(_page(), "dash.zip", S.frames_zip(S.moving_box_frames(6)))
    assert not at.exception and not at.error
    assert "runs on the frames alone, with no objects" in _texts(at.warning)
    assert len(_charts(at)) == 1
    at.slider(key="accident_threshold").set_value(0.0).run()
    assert "no tracked object in view" in _texts(at.info)


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("empty.zip", S.frames_zip([]), "the zip is empty"),
        ("notes.zip", S.frames_zip([], extra={"a.txt": b"x"}), "a.txt is not an image"),
        ("broken.mp4", b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 300, "unreadable video"),
    ],
)
def test_bad_uploads_show_one_message(demo_env, name, data, message):
    at = _upload(_page(), name, data)
    assert not at.exception
    assert len(at.error) == 1 and message in at.error[0].value and name in at.error[0].value
    assert not _charts(at)


def test_own_accident_checkpoint_is_used_and_another_task_is_refused(demo_env):
    at = _ok(_page())
    own = demo_env["checkpoints"] / "driving_accident.ckpt"
    at.text_input(key="own_path_driving_accident").set_value(str(own)).run()
    _ok(at)
    assert f"Your checkpoint `{own}`" in _texts(at.caption)
    wrong = demo_env["checkpoints"] / "driving_detection.ckpt"
    at.text_input(key="own_path_driving_accident").set_value(str(wrong)).run()
    assert not at.exception
    assert len(at.error) == 1 and "driving_detection.ckpt` was not loaded" in at.error[0].value
    assert "DetectionTask" in at.error[0].value  # names what the file holds
    assert len(_charts(at)) == 1  # and the page goes on with the demo model


def test_without_an_accident_model_the_page_says_what_to_run(demo_env, tmp_path, monkeypatch):
    monkeypatch.setenv(dm.ENV_CHECKPOINTS, str(tmp_path / "empty"))
    at = _page()
    assert not at.exception
    assert "prepare_demo.py --train --only driving_accident" in at.error[0].value
    assert "prepare_demo.py --train --only driving_accident" in _texts(at.code)


def test_broken_accident_checkpoint_is_a_message(demo_env, tmp_path, monkeypatch):
    folder = tmp_path / "ckpts"
    shutil.copytree(demo_env["checkpoints"], folder)
    (folder / "driving_accident.ckpt").write_bytes(b"not a checkpoint")
    monkeypatch.setenv(dm.ENV_CHECKPOINTS, str(folder))
    at = _page()
    assert not at.exception
    assert len(at.error) == 1 and "Could not load the accident checkpoint" in at.error[0].value
    assert "--only driving_accident --force" in at.error[0].value


# ------------------------------------------------------------------------------------------ helpers alone


def test_detected_objects_become_fixed_slots_with_classes(demo_env):
    detector = dm.load_task("driving_detection", demo_env["checkpoints"] / "driving_detection.ckpt")
    frames = np.stack(S.moving_box_frames(5))
    objects = dm.detect_clip_objects(detector, frames, threshold=0.0, max_objects=19)
    assert objects["boxes"].shape == (5, 19, 4) and objects["box_valid"].shape == (5, 19)
    ids = objects["track_ids"][objects["track_ids"] >= 0]
    assert len(ids) and objects["detections"] >= objects["tracks"] >= len(ids)
    assert set(ids.tolist()) <= set(objects["classes"])  # every slotted track has its detector class
    assert set(objects["classes"].values()) <= set(detector.class_names)
    # slot n holds one track: each valid box lies inside the frame
    boxes = objects["boxes"][objects["box_valid"]]
    assert (boxes[:, 2] <= 96 + 1e-3).all() and (boxes[:, 3] <= 48 + 1e-3).all()


def test_prediction_is_at_the_source_size_and_writes_the_task_outputs(demo_env, tmp_path, monkeypatch):
    from domains.driving.accident.predict import write_clip

    task = dm.load_task("driving_accident", demo_env["checkpoints"] / "driving_accident.ckpt")
    clip = dm.load_accident_clip(dm.ACCIDENT_EXAMPLES, "000000")
    assert clip["frames"].shape == (50, 96, 320, 3) and clip["toa"] == 39
    assert clip["classes"][int(clip["track_ids"][clip["involved"]][0])] == "Car"
    pred = dm.accident_predict(
        task,
        clip["frames"],
        clip["boxes"],
        clip["box_valid"],
        clip["track_ids"],
        clip["fps"],
        clip["toa"],
        "ex",
    )
    assert pred["probabilities"].shape == (50, 4) and pred["frames"].shape == (50, 3, 96, 320)
    # the clip's own frames seen through a view: each cached prediction (one per frame rate) held a copy; an
    # upload's frames are C-contiguous (np.stack of decoded frames), so check that layout too
    assert np.shares_memory(pred["frames"], clip["frames"])
    stacked = np.ascontiguousarray(clip["frames"])
    again = dm.accident_predict(task, stacked, clip["boxes"], clip["box_valid"], clip["track_ids"], clip["fps"])
    assert np.shares_memory(again["frames"], stacked)
    # the page draws the one frame it shows, the same picture as the whole clip's drawing (the GIF)
    from domains.driving.accident.predict import CURVE_HEIGHT, draw_clip, draw_frame

    shown = {**pred, "threshold": 0.5}
    whole = draw_clip(shown)
    assert len(whole) == 50 and all(np.array_equal(draw_frame(shown, t), whole[t]) for t in (0, 39, 49))
    # in the curve panel the contact is a white line, red being the alarm's colour as in the page's chart
    panel = whole[49][-CURVE_HEIGHT:]
    contact_x = round(39 * (320 - 1) / 49)
    assert (panel[:, contact_x] == (235, 235, 235)).all(axis=1).sum() > CURVE_HEIGHT // 2
    assert (np.diff(pred["probabilities"], axis=1) >= 0).all()  # monotone in the horizon
    np.testing.assert_array_equal(pred["boxes"], clip["boxes"])  # source pixels, not the model's input
    written = write_clip(pred, tmp_path)
    assert [p.name for p in written] == ["risk.csv", "objects.csv", "ex.gif"]
    assert [p.name for p in write_clip(pred, tmp_path / "nogif", gif=False)] == ["risk.csv", "objects.csv"]
    assert not list((tmp_path / "nogif").rglob("*.gif"))
    assert len((tmp_path / "ex" / "risk.csv").read_text().splitlines()) == 51
    # the GIF's frames are the drawn ones in 256 colours each (fast octree: median cut took 95 % of a predict run)
    from PIL import Image

    with Image.open(tmp_path / "ex.gif") as gif:
        shown_first = np.asarray(gif.convert("RGB"), dtype=np.int16)
    assert np.abs(shown_first - draw_clip(pred)[0].astype(np.int16)).mean() < 3
    # the scores read back exactly (4 decimals merged scores near 1: mTTA re-scored from the file was 8 % off)
    with open(tmp_path / "ex" / "risk.csv") as f:
        written_risk = np.array([float(row["risk"]) for row in csv.DictReader(f)], dtype=np.float32)
    np.testing.assert_array_equal(written_risk, np.asarray(pred["risk"], dtype=np.float32))
    # the GIF plays in real time: at 10 fps every frame for 100 ms; at 60 fps every second frame (browsers play
    # a delay under 20 ms as 100 ms: the clip ran 6x slow), 50 frames still lasting 50 / 60 s
    from PIL import Image, ImageSequence

    from domains.driving.accident.predict import gif_timing

    assert gif_timing(5, 60.0) == ([0, 2, 4], [30, 40, 30])  # from the first frame on, every other one
    for fps, frames, total in ((10.0, 50, 5000), (60.0, 25, 830)):
        write_clip({**pred, "fps": fps}, tmp_path / str(fps))
        delays = [f.info["duration"] for f in ImageSequence.Iterator(Image.open(tmp_path / str(fps) / "ex.gif"))]
        assert len(delays) == frames and min(delays) >= 20 and abs(sum(delays) - total) <= 10, (fps, delays)
    with pytest.raises(ValueError, match="fps must be a positive frame rate"):
        dm.accident_predict(task, clip["frames"], clip["boxes"], clip["box_valid"], clip["track_ids"], 0.0)
    # a clip that fails while its GIF is drawn leaves neither its files nor their temporary copies
    import domains.driving.accident.predict as accident_predict

    def fail(prediction):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(accident_predict, "draw_clip", fail)
    broken = tmp_path / "broken"
    with pytest.raises(RuntimeError, match="drawing failed"):
        write_clip(pred, broken)
    assert [p.name for p in broken.rglob("*") if p.is_file()] == []


@pytest.mark.slow
def test_bundled_examples_are_what_the_generator_writes(tmp_path):
    """apps.accident_examples rebuilds the two bundled clips: same annotations and CCD lines as shipped (the
    videos are re-encoded, so only their presence is compared)."""
    from apps.accident_examples import build

    out = tmp_path / "accident"
    described = build(out)
    assert [line.split()[0] for line in described] == ["000000", "000003"]
    for name in ("Crash-1500.txt", "annotations/000000.json", "annotations/000003.json"):
        assert (out / name).read_text() == (dm.ACCIDENT_EXAMPLES / name).read_text(), name
    assert (out / "videos/Crash-1500/000000.mp4").stat().st_size > 0
    assert (out / "videos/Normal/000003.mp4").stat().st_size > 0


def test_the_risk_chart_takes_more_rows_than_altairs_default_limit():
    """Altair's default transformer refuses over 5,000 rows: a 300-step clip with 17 horizons has 5,100."""
    from apps.views.accident import _risk_spec

    steps, horizons = np.arange(300), tuple(0.5 + 0.1 * i for i in range(17))
    probs = np.linspace(0, 1, 300 * 17).reshape(300, 17)
    spec = _risk_spec.__wrapped__(10.0, steps, probs, 300, horizons, 0.5, 120, 150)
    (curves,) = [layer for layer in spec["layer"] if layer.get("mark", {}).get("type") == "line"]
    assert len(spec["datasets"][curves["data"]["name"]]) == 5100


def test_the_alarm_uses_the_models_exact_threshold_not_the_sliders_rounded_one(demo_env, monkeypatch):
    """The slider holds 3 decimals: the alarm and risk.csv used 0.350 for a model threshold of 0.35033, where the
    CLI's predict uses 0.35033, so a frame risk in between alarmed on one and not the other."""
    import streamlit as st

    from domains.driving.accident import predict

    exact = ACCIDENT_ALARM + 3.3e-4
    load, used = dm.load_task, []

    def load_with_threshold(key, path):
        task = load(key, path)
        if key == "driving_accident":
            task.model.alarm_threshold.fill_(exact)
        return task

    def recorded(risk, threshold):
        used.append(threshold)
        return real_alarm_frame(risk, threshold)

    real_alarm_frame = predict.alarm_frame
    monkeypatch.setattr(dm, "load_task", load_with_threshold)
    monkeypatch.setattr(predict, "alarm_frame", recorded)
    st.cache_resource.clear()
    try:
        at = _ok(_page())
        assert at.slider(key="accident_threshold").value == ACCIDENT_ALARM  # shown rounded
        assert used[0] == pytest.approx(exact, abs=1e-7)  # the alarm (then the frame slider's start)
        used.clear()
        at.slider(key="accident_threshold").set_value(0.5).run()  # a threshold the user chose is used as it is
        assert used[0] == 0.5
    finally:
        st.cache_resource.clear()  # the other tests' model keeps its own threshold
