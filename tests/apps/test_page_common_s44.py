"""page_common.decoded_or_stop: the one place the medical and accident pages turn an upload that cannot be
decoded into a message (they had the same try / except each)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from apps import page_common as pc
from apps import uploads as up


class _Stopped(Exception):
    """What the fake ``st.stop`` raises (Streamlit's own ends the script run)."""


@pytest.fixture
def shown(monkeypatch) -> dict[str, list[str]]:
    """The messages page_common draws, by kind, with ``st.stop`` raising :class:`_Stopped`."""
    said: dict[str, list[str]] = {"error": [], "info": []}

    def stop():
        raise _Stopped

    fake = SimpleNamespace(error=said["error"].append, info=said["info"].append, stop=stop)
    monkeypatch.setattr(pc, "st", fake)
    return said


def test_a_decoded_upload_comes_back_with_its_conversion_notes_shown(shown):
    decoded = SimpleNamespace(notes=["16-bit scaled to 8", "EXIF rotation applied"])
    assert pc.decoded_or_stop("a.png", lambda: decoded) is decoded
    assert shown == {"error": [], "info": ["Converted on upload: 16-bit scaled to 8; EXIF rotation applied."]}


def test_a_refused_upload_stops_the_page_on_the_readers_own_words(shown):
    def refuse():
        raise up.UploadError("a.zip: the zip holds no DICOM image")

    with pytest.raises(_Stopped):
        pc.decoded_or_stop("a.zip", refuse)
    assert shown == {"error": ["a.zip: the zip holds no DICOM image"], "info": []}


def test_an_unforeseen_decoder_failure_stops_the_page_naming_the_file_and_the_error(shown):
    def broken():
        raise RuntimeError("a bug")

    with pytest.raises(_Stopped):
        pc.decoded_or_stop("clip.mp4", broken)
    assert shown == {"error": ["clip.mp4: could not be decoded (RuntimeError: a bug)"], "info": []}

