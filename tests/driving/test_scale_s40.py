"""Scale findings in the driving readers (s40): a fit whose training clips are all shorter than
``--data.clip_length`` is refused naming the window and the longest clip (not the split fractions); a box is
formatted for its message only when it is dropped."""

from __future__ import annotations

import logging

import pytest

from domains.driving import formats
from domains.driving.accident.data import AccidentDataModule
from domains.driving.formats import DropLog, LabelWarning
from tests.driving.accident.layouts import write_accident_clips


def test_fit_with_every_training_clip_shorter_than_clip_length_names_the_window_and_the_longest(tmp_path, caplog):
    root = write_accident_clips(tmp_path / "clips", {"crash": 4, "near_miss": 3, "normal": 3}, n_frames=12)
    dm = AccidentDataModule(
        data_path=str(root), image_size=(12, 96), batch_size=3, num_workers=0, max_objects=4, clip_length=20
    )
    too_short = pytest.warns(LabelWarning, match="dropped too_short: 4 ")
    with caplog.at_level(logging.INFO), too_short, pytest.raises(ValueError) as raised:
        dm.setup("fit")
    message = str(raised.value)
    assert "--data.clip_length 20" in message and "longest has 12 frames" in message, message
    assert "--data.clip_length <= 12" in message and "all 4 clips of the train split" in message, message
    assert "val_fraction" not in message, message  # the fractions cannot fill a split emptied by the window
    table = next(r.getMessage() for r in caplog.records if "split by clip" in r.getMessage())
    assert "| train (4 left out: shorter than --data.clip_length 20) | 0 |" in table, table


def test_check_box_formats_a_box_only_when_it_drops_it(monkeypatch):
    """A valid box costs no message (every box of a 10k-image set formatted one); a dropped one names the box
    as given, not as clipped."""
    calls = []
    fmt = formats._fmt
    monkeypatch.setattr(formats, "_fmt", lambda value: calls.append(value) or fmt(value))
    log = DropLog()
    assert formats.check_box((1, 2, 30, 40), (50, 60), log, "a.txt", 1) == (1.0, 2.0, 30.0, 40.0)
    assert formats.check_box((-0.5, 2, 30, 40), (50, 60), log, "a.txt", 2) == (0.0, 2.0, 30.0, 40.0)  # clipped
    assert calls == [] and log.total == 0
    assert formats.check_box((-0.9, 2, -0.2, 40), (50, 60), log, "a.txt", 3) is None
    assert calls == [-0.9, 2.0, -0.2, 40.0]
    assert "box (-0.90, 2.00, -0.20, 40.00) is empty after clipping" in log.summary(), log.summary()
