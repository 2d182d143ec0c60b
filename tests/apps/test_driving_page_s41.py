"""The driving page's scene listing at scale (s41): listed once per version of the data folder. A rerun (a
slider moved) does not list it again (0.7 s of CPU at 20,000 images), and a folder whose files were added,
removed or renamed is listed again at the next rerun: the listing was cached by the folder's path alone, so a
new scene never showed and a removed one stayed in the list until the server was restarted."""

from __future__ import annotations

import cv2
import numpy as np

import shared.files
from apps import demo_models as dm
from tests.apps.pages import image_captions, page, page_ok
from tests.driving.layouts import write_smiyc
from tests.helpers import write_image

SCENE = "driving_scene"
TRUTH = "Ground truth: orange anomaly, grey void (ignored)"


def _scene_options(at) -> list[str]:
    """The Scene list's data-set scenes (the weights' recorded examples aside)."""
    return [o for o in at.selectbox(key=SCENE).options if o.startswith("frame")]


def test_a_rerun_does_not_list_the_scenes_again(demo_env, tmp_path, monkeypatch):
    root = write_smiyc(tmp_path / "set", n=3)
    monkeypatch.setenv(dm.ENV_ANOMALY_DATA, str(root))
    listed = []
    listing = shared.files.visible_files

    def counted(folder, *args, **kwargs):
        listed.append(folder)
        return listing(folder, *args, **kwargs)

    monkeypatch.setattr(shared.files, "visible_files", counted)  # the page imports it when it lists
    at = page_ok(page("driving"))
    assert listed.count(root / "images") == 1 and _scene_options(at) == ["frame0", "frame1", "frame2"]
    at.slider(key="driving_ano_alpha").set_value(0.3).run()
    page_ok(at).run()
    assert listed.count(root / "images") == 1, listed


def test_scenes_added_and_removed_show_at_the_next_rerun(demo_env, tmp_path, monkeypatch):
    root = write_smiyc(tmp_path / "set", n=3)
    monkeypatch.setenv(dm.ENV_ANOMALY_DATA, str(root))
    at = page_ok(page("driving"))
    assert _scene_options(at) == ["frame0", "frame1", "frame2"]
    write_image(root / "images" / "frame3.jpg", seed=3)
    (root / "images" / "frame1.jpg").unlink()
    page_ok(at.run())
    assert _scene_options(at) == ["frame0", "frame2", "frame3"]


def test_a_mask_added_shows_its_ground_truth_at_the_next_rerun(demo_env, tmp_path, monkeypatch):
    root = write_smiyc(tmp_path / "set", n=2)
    mask = root / "labels_masks" / "frame1.png"
    mask.unlink()
    monkeypatch.setenv(dm.ENV_ANOMALY_DATA, str(root))
    at = page_ok(page("driving"))
    at.selectbox(key=SCENE).select_index(at.selectbox(key=SCENE).options.index("frame1")).run()
    assert TRUTH not in image_captions(page_ok(at))
    label = np.zeros((48, 64), np.uint8)
    label[10:20, 10:30] = 1
    cv2.imwrite(str(mask), label)
    assert TRUTH in image_captions(page_ok(at.run()))
