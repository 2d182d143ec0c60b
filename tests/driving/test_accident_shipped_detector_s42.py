"""``--data.predict_detector`` takes the shipped detector (``.safetensors`` + model card), which
``DetectionTask.load_checked`` loads, and draws at the card's operating point; before, it was refused as "a
checkpoint that detection fit wrote" was wanted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from domains.driving.accident.data import AccidentDataModule
from domains.driving.accident.readers import read_own_clips
from shared.shipped import WeightFileError
from tests.driving.accident.layouts import write_clip_frames

pytestmark = pytest.mark.usefixtures("one_thread")

SHIPPED = Path(__file__).resolve().parents[2] / "apps/weights/driving_detection.safetensors"


def test_own_clips_get_tracks_from_the_shipped_detector(tmp_path, monkeypatch):
    from domains.driving.accident import tracking

    write_clip_frames(tmp_path / "own" / "drive", 2)  # two 48x24 frames: the detector runs on each
    clips = read_own_clips(tmp_path / "own", 10.0, frames_fps=10.0)
    drawn = []
    real = tracking.detect_and_track

    def spy(detect, frames, threshold, *args, **kwargs):
        drawn.append(threshold)
        return real(detect, frames, threshold, *args, **kwargs)

    monkeypatch.setattr(tracking, "detect_and_track", spy)
    # a copy whose card names 0.37: the shipped card's 0.5 is also the unfitted default, which proves nothing
    (tmp_path / "det.safetensors").write_bytes(SHIPPED.read_bytes())
    card = json.loads(SHIPPED.with_suffix(".json").read_text(encoding="utf-8"))
    card["operating_point"]["threshold"] = 0.37
    (tmp_path / "det.json").write_text(json.dumps(card), encoding="utf-8")
    dm = AccidentDataModule(
        predict_path=str(tmp_path / "own"), predict_fps=10.0, predict_detector=str(tmp_path / "det.safetensors")
    )
    kept = dm._detect_tracks(clips)
    assert [clip.clip_id for clip in kept] == [clip.clip_id for clip in clips] == ["drive"]
    assert drawn == [pytest.approx(0.37)]


def test_a_shipped_detector_that_does_not_match_its_card_is_refused_naming_the_option(tmp_path):
    (tmp_path / "det.safetensors").write_bytes(SHIPPED.read_bytes()[:-8])  # truncated
    (tmp_path / "det.json").write_text(SHIPPED.with_suffix(".json").read_text(encoding="utf-8"), encoding="utf-8")
    write_clip_frames(tmp_path / "own" / "drive", 2)
    clips = read_own_clips(tmp_path / "own", 10.0, frames_fps=10.0)
    dm = AccidentDataModule(
        predict_path=str(tmp_path / "own"), predict_fps=10.0, predict_detector=str(tmp_path / "det.safetensors")
    )
    with pytest.raises(WeightFileError, match=r"^--data.predict_detector: .*det.safetensors: sha256"):
        dm._detect_tracks(clips)
