"""A data set's clips of another shape than the network's frame trained a boxes-only network on squeezed boxes,
unsaid (a user writing the generator's ``size`` (width, height) as ``image_size``'s [H, W] got 96-wide portrait
clips): ``fit`` now warns, as ``predict`` warns of one's own clips."""

from __future__ import annotations

import warnings

import pytest

from domains.driving.accident.__main__ import main
from tests.driving.accident.layouts import write_accident_clips
from tests.driving.accident.test_task import KINDS, _cli_args

pytestmark = pytest.mark.usefixtures("one_thread")


def _fit_warnings(tmp_path, monkeypatch, size) -> list[str]:
    data = write_accident_clips(tmp_path / "clips", KINDS, n_frames=12, toa=7, size=size)
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main(["fit", *_cli_args(data, "--trainer.max_steps", "1", "--trainer.limit_val_batches", "1")])
    return [str(w.message) for w in caught if "frames (" in str(w.message)]


def test_fit_on_clips_of_another_shape_warns_naming_them(tmp_path, monkeypatch):
    said = _fit_warnings(tmp_path, monkeypatch, size=(24, 48))  # portrait clips, a 48x24 (2:1) network frame
    assert said and all(text.startswith("--data.data_path ") for text in said)
    assert "24x48 frames (0.50:1), but the network reads only the objects' boxes, scaled to its 48x24" in said[0]
    assert "squeezed 4.0x in height" in said[0]


def test_fit_on_clips_of_the_networks_shape_is_quiet(tmp_path, monkeypatch):
    assert _fit_warnings(tmp_path, monkeypatch, size=(48, 24)) == []
