"""Start cost (s39): the accident page lists its clips from the set's layout (ids, kinds, the JSON's scenario and
rate) and reads only the clip it shows; the list is the one reading every clip gave."""

from __future__ import annotations

import json

import pytest
import streamlit as st

from apps import demo_models as dm
from domains.driving.accident import readers
from tests.apps import tiny
from tests.apps.pages import page, page_ok

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def accident_env(tmp_path_factory):
    """The tiny anticipator and the fixture clips (3 of each kind) alone: the page needs no other model."""
    root = tmp_path_factory.mktemp("accident")
    clips = tiny.accident_clips(root / "clips")
    tiny.build_accident(root / "checkpoints", clips)
    return root / "checkpoints", clips


@pytest.fixture
def clips_read(monkeypatch) -> list[str]:
    """``<root name>/<clip id>`` of every clip read (``_read_ccd_clip``), in order."""
    read = []
    original = readers._read_ccd_clip

    def counted(layout, entry, *args, **kwargs):
        read.append(f"{layout.root.name}/{entry.clip_id}")
        return original(layout, entry, *args, **kwargs)

    monkeypatch.setattr(readers, "_read_ccd_clip", counted)
    return read


def test_the_accident_page_reads_only_the_clip_it_shows(accident_env, clips_read, monkeypatch):
    """Listing the clips read all of them (5-8 s of a generated 200-clip set; 0.1-0.3 s listed) and the bundled two."""
    checkpoints, clips = accident_env
    monkeypatch.setenv(dm.ENV_CHECKPOINTS, str(checkpoints))
    monkeypatch.setenv(dm.ENV_WEIGHTS, str(checkpoints / "no_shipped_weights"))
    monkeypatch.setenv(dm.ENV_ACCIDENT_DATA, str(clips))
    st.cache_resource.clear()  # the lists of an earlier page run in this process
    at = page_ok(page("accident"))
    assert clips_read == ["clips/000001"]  # the first clip listed, and nothing else
    box = at.selectbox(key="accident_clip")
    labels = [box.format_func(i) for i in range(len(box.options))]
    # the labels reading every clip gave: the test split of the data module's default split, then the examples
    assert labels == [
        "000001: crash, lead braking, contact at 0.7 s",
        "000003: near miss, lead braking",
        "000008: normal, ordinary",
        "bundled example 000000: crash, lead braking, contact at 3.9 s",
        "bundled example 000003: near miss, pedestrian stepping out",
    ]
    clips_read.clear()
    box.set_value(4).run()
    page_ok(at)
    assert clips_read == ["accident/000003"]  # the bundled near miss, read alone


@pytest.mark.parametrize(
    "text",
    [
        '{"fps": 10.0, "kind": "near_miss", "scenario": "cut_in", "tracks": {"1": {"box": [[0, 0, 1, 1]]}}}',
        '{"tracks": {"1": {"scenario": "x"}}, "kind": "normal"}',  # a nested scenario is not the clip's
        '{"scenario": "a", "kind": "normal", "scenario": "b"}',  # json.loads keeps the last
        '{"kind": "normal", "\\u0066ps": 5}',
        "{}",
    ],
)
def test_the_listing_reads_a_clips_scenario_and_rate_as_json_reads_them(tmp_path, text):
    path = tmp_path / "a.json"
    path.write_text(text)
    meta = json.loads(text)
    defaults = {"kind": "crash", "scenario": None, "fps": None}
    assert readers._json_head(path, defaults) == {key: meta.get(key, d) for key, d in defaults.items()}


def test_a_listed_clip_has_its_scenario_and_rate_where_they_are_a_name_and_a_rate(tmp_path):
    clips = tiny.accident_clips(tmp_path / "clips")
    meta = json.loads((clips / "annotations/000003.json").read_text())
    (clips / "annotations/000003.json").write_text(json.dumps({**meta, "fps": "fast", "scenario": 3}))
    entries = {e.clip_id: e for e in readers.list_ccd_layout(clips, require_json=True).entries}
    assert len(entries) == 9  # the listing keeps what it kept: the clip's read refuses its rate
    assert (entries["000001"].scenario, entries["000001"].fps) == ("lead_braking", 10.0)
    assert (entries["000003"].scenario, entries["000003"].fps) == (None, None)
