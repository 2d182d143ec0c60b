"""A misspelt ``--data.synthetic`` setting names the option (it ended the first fit in a bare TypeError traceback
from the clip generator)."""

from __future__ import annotations

import pytest

from domains.driving.accident.data import AccidentDataModule


def test_a_misspelt_synthetic_setting_names_the_option_and_generates_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the set's folder would land under data/ here
    data = AccidentDataModule(synthetic={"n_clip": 12}, num_workers=0)
    with pytest.raises(ValueError, match=r"^--data.synthetic \{'n_clip': 12\}: .*\['n_clip'\].*the settings are .*n_clips"):
        data.prepare_data()
    assert not (tmp_path / "data").exists()


def test_a_type_error_inside_the_generation_stays_a_bug_with_its_traceback(tmp_path, monkeypatch):
    """Only the unknown-setting error is the user's: a TypeError raised while the clips are made is a bug, which
    the command line must show with its traceback, not as a one-line "--data.synthetic" input error."""
    from domains.driving.synthetic import clips

    def broken(*args, **kwargs):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(clips, "generate_clips", broken)
    with pytest.raises(TypeError, match="unsupported operand") as raised:
        AccidentDataModule(synthetic={"n_clips": 7}, num_workers=0).prepare_data()
    assert not isinstance(raised.value, ValueError)
