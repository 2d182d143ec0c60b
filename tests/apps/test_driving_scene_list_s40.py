"""The driving page's Scene list at scale: a set of many images listed whole sent every name to the browser on
each rerun (20,004 options at 20k images); it now lists the first SCENE_LIST_CAP in natural name order, says
how many there are, and opens any other by name (with its ground truth)."""

from __future__ import annotations

import os

import cv2
import numpy as np

from apps import demo_models as dm
from tests.apps.pages import image_captions, page, page_ok, texts

N_IMAGES = 300
NAME_BOX = "driving_scene_name"


def _many_scenes(root, n: int = N_IMAGES):
    """``scene_1`` .. ``scene_<n>`` (unpadded: a plain sort puts scene_10 second), hard links of one tiny image;
    only the last has a mask."""
    (root / "images").mkdir(parents=True)
    (root / "labels_masks").mkdir()
    first = root / "images" / "scene_1.png"
    cv2.imwrite(str(first), np.full((32, 64, 3), 120, np.uint8))
    for i in range(2, n + 1):
        os.link(first, root / "images" / f"scene_{i}.png")
    label = np.zeros((32, 64), np.uint8)
    label[5:10, 5:20] = 1
    cv2.imwrite(str(root / "labels_masks" / f"scene_{n}.png"), label)
    return root


def test_a_large_set_lists_the_first_cap_scenes_in_natural_order_and_names_the_total(
    demo_env, tmp_path, monkeypatch
):
    monkeypatch.setenv(dm.ENV_ANOMALY_DATA, str(_many_scenes(tmp_path / "many")))
    at = page_ok(page("driving"))
    options = at.selectbox(key="driving_scene").options
    listed = [o for o in options if o.startswith("scene_")]  # the weights' recorded examples aside
    cap = len(listed)  # the page's SCENE_LIST_CAP (a script AppTest runs, not a module to patch)
    assert 0 < cap < N_IMAGES and listed == [f"scene_{i}" for i in range(1, cap + 1)]
    assert len(options) - len(listed) <= 2 * 3  # best and worst of each driving model at most
    note = texts(at.caption)
    assert f"the first {cap:,} of the {N_IMAGES:,} images" in note and dm.ENV_ANOMALY_DATA in note
    assert at.text_input(key=NAME_BOX).label == "Or open a scene by name"


def test_a_scene_past_the_cap_opens_by_name_with_its_ground_truth(demo_env, tmp_path, monkeypatch):
    monkeypatch.setenv(dm.ENV_ANOMALY_DATA, str(_many_scenes(tmp_path / "many")))
    at = page_ok(page("driving"))
    at.text_input(key=NAME_BOX).input(f"scene_{N_IMAGES}").run()
    page_ok(at)
    assert f"scene_{N_IMAGES}.png: 64x32 pixels" in texts(at.caption)
    assert "Ground truth: orange anomaly, grey void (ignored)" in image_captions(at)
    assert at.selectbox(key="driving_scene").disabled
    at.text_input(key=NAME_BOX).input("no_such_scene").run()
    assert not at.exception
    assert "No image named `no_such_scene`" in texts(at.warning)
    assert "scene_1.png: 64x32 pixels" in texts(at.caption) and not at.selectbox(key="driving_scene").disabled


def test_a_small_set_is_listed_whole_without_a_name_box(demo_env):
    at = page_ok(page("driving"))
    scenes = sorted(p.stem for p in (demo_env["anomaly"] / "images").iterdir())
    assert [o for o in at.selectbox(key="driving_scene").options if o in scenes] == scenes
    assert not [t for t in at.text_input if t.key == NAME_BOX]
    assert "The list holds the first" not in texts(at.caption)
