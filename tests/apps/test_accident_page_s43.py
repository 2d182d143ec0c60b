"""The accident page without a detector, s43: the warning said "the anticipator runs on the frames alone, with
no objects" whatever the model reads; a boxes-only model (the shipped one) reads no pixels: its risk is 0."""

from __future__ import annotations

import shutil

import pytest
import streamlit as st

from apps import demo_models as dm
from tests.apps import samples as S
from tests.apps.pages import page, page_ok, texts
from tests.apps.tiny import ACCIDENT_ALARM, ACCIDENT_INPUT

pytestmark = pytest.mark.usefixtures("one_thread")

FRAMES_ALONE = "the anticipator runs on the frames alone, with no objects"


def test_without_a_detector_a_boxes_only_model_says_it_has_nothing_to_read(demo_env, tmp_path, monkeypatch):
    from domains.driving.accident.model import AccidentAnticipator
    from domains.driving.accident.task import AccidentTask

    folder = tmp_path / "ckpts"
    shutil.copytree(demo_env["checkpoints"], folder)
    (folder / "driving_detection.ckpt").unlink()
    monkeypatch.setenv(dm.ENV_CHECKPOINTS, str(folder))
    load = dm.load_task

    def boxes_model(key, path):  # the tiny checkpoint's file, a boxes-only network in its place
        if key != "driving_accident":
            return load(key, path)
        network = AccidentAnticipator(input_kind="boxes", input_size=ACCIDENT_INPUT, hidden=8)
        task = AccidentTask(network=network)
        task.model.alarm_threshold.fill_(ACCIDENT_ALARM)
        return task.eval()

    monkeypatch.setattr(dm, "load_task", boxes_model)
    st.cache_resource.clear()
    try:
        at = page("accident")
        at.radio(key="accident_source").set_value("Upload a video or a zip of frames").run()
        clip = S.frames_zip(S.moving_box_frames(6))
        at.file_uploader(key="accident_upload").set_value(("dash.zip", clip, "application/zip"))
        warnings = texts(page_ok(at.run()).warning)
    finally:
        st.cache_resource.clear()  # the other tests' model reads frames
    assert FRAMES_ALONE not in warnings
    assert (
        "No road-object detector available: this model reads only the objects' boxes, not the pixels, so "
        "with no objects it has nothing to estimate a risk from (shown as 0 throughout)" in warnings
    )


def test_the_wording_follows_the_input_kind():
    from apps.views.accident import _without_objects

    assert _without_objects("frames") == FRAMES_ALONE  # what the page test of a frames model reads
    assert "reads only the objects' boxes" in _without_objects("boxes")
    assert _without_objects("features") == "the anticipator runs with no objects"
