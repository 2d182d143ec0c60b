"""The driving page, s43: a WebP road photo is taken as a PNG is (it was refused as "unsupported file type"
though ``predict`` reads it), and the score sliders open at the weights' own threshold, not rounded to their
steps (0.37 opened at 0.35 and drew boxes ``predict`` does not)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from apps import demo_models as dm
from tests.apps import samples as S
from tests.apps.pages import image_captions, page, page_ok, upload_on

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_webp_photo_is_analysed_as_a_png_is(demo_env):
    buf = io.BytesIO()
    Image.fromarray(S.gradient_rgb(48, 160)).save(buf, "WEBP", lossless=True)
    at = page_ok(upload_on("driving", "road.webp", buf.getvalue()))
    assert at.get("file_uploader")[0].proto.label == "Road photo (PNG, JPEG or WebP, up to 40 megapixels)"
    assert "detections shown" in image_captions(at)[0]


def test_the_score_sliders_open_at_the_weights_own_threshold(demo_env, monkeypatch):
    """Off the sliders' 0.01 grid too (0.372): Streamlit takes a start as given; the page filters with it."""
    points = {"driving_detection": 0.372, "driving_instances": 0.37}

    def point(key: str) -> dict:
        return {"threshold": points[key], "precision": 0.8, "recall": 0.7} if key in points else {}

    monkeypatch.setattr(dm, "operating_point", point)
    at = page_ok(page("driving"))
    assert at.slider(key="driving_det_threshold").value == 0.372
    assert at.slider(key="driving_inst_threshold").value == 0.37
