"""An upload's results go with its session (s34): the driving page kept a photo's display copy, boxes, masks and
score maps, and the accident page an uploaded clip's frames, tracks and risks, in ``st.cache_data`` /
``st.cache_resource``, shared by every session of the server process, while the home page said uploads are
never kept. The synthetic examples keep the shared caches (no one's data, and the demo stays fast)."""

from __future__ import annotations

from collections import Counter

import pytest

from apps import demo_models as dm
from apps import page_common as pc
from tests.apps import samples as S
from tests.apps.pages import page as _page
from tests.apps.pages import page_ok as _ok
from tests.apps.pages import upload as _upload

pytestmark = pytest.mark.usefixtures("one_thread")


def _shared_entries() -> Counter:
    """{cached function: entries} over the pages' ``st.cache_data`` / ``st.cache_resource`` in the process (read
    from Streamlit's registries: no public API counts entries)."""
    from streamlit.runtime.caching import cache_data_api, cache_resource_api

    counts: Counter = Counter()
    for registry in (cache_data_api._data_caches, cache_resource_api._resource_caches):
        for caches in registry._function_caches.values():
            for cache in caches.values():
                storage = getattr(cache, "storage", cache)  # a data cache's entries are in its storage
                name = getattr(storage, "function_display_name", None) or cache.display_name
                if not name.startswith("apps.page_common."):  # loaded models, checkpoint lists: no upload's
                    counts[name.rsplit(".", 1)[-1]] += len(storage._mem_cache)  # a page's: __main__._detect
    return +counts


def _count_calls(monkeypatch, *names: str) -> Counter:
    """How often each of ``dm``'s ``names`` runs from now on."""
    calls: Counter = Counter()
    for name in names:
        real = getattr(dm, name)
        monkeypatch.setattr(dm, name, lambda *a, _n=name, _f=real, **k: calls.update([_n]) or _f(*a, **k))
    return calls


def test_a_photos_results_stay_in_its_session_and_a_rerun_reuses_them(demo_env, monkeypatch):
    """After a photo's session, the shared caches held its display copy and every model's output on it."""
    at = _ok(_page("driving"))  # the synthetic scene: its results in the shared caches, as before
    shared = _shared_entries()
    assert shared["_detect"] and shared["_analyse"]
    calls = _count_calls(monkeypatch, "detect_objects", "segment_instances", "anomaly_forward", "anomaly_analysis")
    at.radio(key="driving_source").set_value("Upload a photo").run()
    wide = S.gradient_rgb(40, 1400)  # wider than the page shows: _display makes a copy
    _ok(_upload(at, "driving_upload", "private_road_s34.png", S.png(wide)))
    assert calls == {"detect_objects": 1, "segment_instances": 1, "anomaly_forward": 1, "anomaly_analysis": 1}
    assert _shared_entries() == shared  # nothing of the upload in a cache every session shares
    kept = at.session_state[pc._memo_key("driving_upload")]
    assert {"photo", "_display", "_detect", "_segment", "_anomaly_forward", "_analyse"} <= set(kept)
    assert kept["_display"][next(iter(kept["_display"]))][0].shape == (37, 1280, 3)
    at.slider(key="driving_det_threshold").set_value(0.9).run()  # a rerun: no model runs again
    _ok(at)
    at.slider(key="driving_ano_alpha").set_value(0.2).run()
    _ok(at)
    assert sum(calls.values()) == 4
    del at
    _ok(_page("home"))  # the session ended, another runs
    assert _shared_entries() == shared


def test_a_clips_frames_tracks_and_risks_stay_in_its_session_and_a_rerun_reuses_them(demo_env, monkeypatch):
    """After a clip's session, the shared caches held its decoded frames, its tracks and its risk curve."""
    at = _ok(_page("accident"))  # a synthetic clip: its risks in the shared cache, as before
    shared = _shared_entries()
    calls = _count_calls(monkeypatch, "detect_objects", "accident_predict")
    at.radio(key="accident_source").set_value("Upload a video or a zip of frames").run()
    _ok(_upload(at, "accident_upload", "private_dash_s34.zip", S.frames_zip(S.moving_box_frames(8))))
    assert calls == {"detect_objects": 8, "accident_predict": 1}
    assert _shared_entries() == shared
    kept = at.session_state[pc._memo_key("accident_upload")]
    assert set(kept) == {"clip", "tracks", "_predict", "chart"}
    assert kept["clip"][next(iter(kept["clip"]))].frames.shape == (8, 48, 96, 3)
    at.slider(key="accident_threshold").set_value(0.2).run()  # a rerun: neither the detector nor the model again
    _ok(at)
    assert calls == {"detect_objects": 8, "accident_predict": 1}
    assert len(kept["chart"]) == 2  # the chart of each threshold, in the session too
    assert _shared_entries() == shared
    del at
    _ok(_page("home"))
    assert _shared_entries() == shared
