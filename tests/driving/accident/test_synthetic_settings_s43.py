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
