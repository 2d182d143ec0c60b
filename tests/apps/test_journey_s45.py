"""A new user's uploads and commands, s45: the driving page said "no box reaches the threshold 0.50; the best
score here is 0.50" (a best score of 0.4996 rounded up), and that the instance masks of a photo at their own
size were "upscaled"; a zip of a directory tree was read as one clip across its folders without a word; and
``prepare_demo.py --force`` without ``--train`` did nothing, unsaid."""

from __future__ import annotations

import numpy as np
import pytest

from apps import demo_models as dm
from apps import uploads as up
from tests.apps import samples as S
from tests.apps.pages import page, page_ok, texts, upload_on

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_best_score_just_under_the_threshold_is_not_written_as_the_threshold(demo_env, monkeypatch):
    def one_box(task, image):
        return {
            "boxes": np.array([[10.0, 10.0, 40.0, 30.0]]),
            "scores": np.array([0.4996], np.float32),
            "labels": np.array([0], np.int64),
        }

    monkeypatch.setattr(dm, "detect_objects", one_box)
    at = page_ok(upload_on("driving", "road.png", S.png(S.gradient_rgb(48, 160))))
    at.slider(key="driving_det_threshold").set_value(0.5).run()
    page_ok(at)
    assert texts(at.tabs[0].info) == (
        "No box reaches the threshold 0.5000; the best score here is 0.4996. Lower the slider to see the "
        "weaker ones."
    )
    at.slider(key="driving_det_threshold").set_value(0.6).run()  # far apart: two decimals, as before
    assert texts(page_ok(at).tabs[0].info).startswith(
        "No box reaches the threshold 0.60; the best score here is 0.50."
    )


def test_instance_masks_at_the_photo_size_are_not_said_to_be_upscaled(demo_env):
    at = page_ok(page("driving"))  # a 128x64 scene: the tiny network's 128-px input is its own size
    caption = next(c for c in texts(at.caption).split(" | ") if c.startswith("Mask R-CNN"))
    assert (
        "its masks are kept at 128x64, the photo's own size, boxes" in caption and "upscaled" not in caption
    )
    at = page_ok(upload_on("driving", "road.png", S.png(S.gradient_rgb(90, 300))))  # shrunk to 128x38
    assert "its masks are kept at 128x38 and upscaled for the view and the downloads" in texts(at.caption)


def test_a_zip_of_frames_in_several_folders_says_so():
    frames = S.moving_box_frames(5)
    names = [
        "drive/front/f1.png",
        "drive/front/f2.png",
        "drive/front/f10.png",
        "drive/rear/f1.png",
        "top.png",
    ]
    clip = up.decode_clip(S.frames_zip(frames, names), "export.zip")
    assert len(clip.frames) == 5
    assert (
        "the frames lie in 3 folders (3 in drive/front/, 1 in drive/rear/, 1 in the top level), read as one "
        "clip, one folder after the other: if they are separate clips (other cameras, other drives), zip one "
        "clip's folder at a time"
    ) in clip.notes
    one_folder = up.decode_clip(
        S.frames_zip(frames[:3], ["clip/a.png", "clip/b.png", "clip/c.png"]), "one.zip"
    )
    assert not any("folders" in note for note in one_folder.notes)


def test_prepare_demo_refuses_training_options_without_train(monkeypatch, capsys):
    """``--force`` alone used the shipped weights and said nothing of the flag."""
    from apps import prepare_demo as pd

    monkeypatch.setattr(pd, "use_shipped", lambda keys: pytest.fail("prepared without a word about --force"))
    with pytest.raises(SystemExit) as stop:
        pd.main(["--force"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.endswith(
        "error: --force only applies to local training: add --train (else the shipped weights serve)\n"
    )


def test_an_object_risk_just_under_the_threshold_is_not_written_as_the_threshold(monkeypatch, demo_env):
    """The accident page wrote an object risk of 0.4996 as "0.500" and said it "stays below the threshold 0.500"."""
    import numpy as np

    from tests.apps.test_uploads_audit_s34 import _said

    prediction = {
        "fps": 10.0,
        "risk": np.array([0.1, 0.949]),
        "horizons": [0.5, 1.0, 1.5, 2.0],
        "box_valid": np.array([[True, True], [True, True]]),
        "object_risk": np.array([[0.1, 0.05], [0.4996, 0.2]]),
        "track_ids": np.array([9, 4]),
    }
    text = _said(monkeypatch, prediction, {"classes": {9: "Car"}}, 1, 0.5)
    assert "stays below the threshold 0.5000. The most likely one is **track 9** (Car), risk 0.4996." in text
