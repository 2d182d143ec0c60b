"""``fit --help`` says the suite's defaults where the suite changes Lightning's: Lightning's own help text read
"Default: ``50``" for log_every_n_steps (the suite's 10), ``max_epochs = 1000`` (10), ``None`` for gradient
clipping (1.0) and nothing of save_last (true)."""

from __future__ import annotations

import pytest

from domains.medical.__main__ import main as medical_main
from shared.cli import SAVE_LAST, SUITE_DEFAULT_HELP, default_trainer_kwargs


def test_each_help_quotes_the_default_the_suite_sets():
    defaults = default_trainer_kwargs("medical")
    for key in ("max_epochs", "log_every_n_steps", "gradient_clip_val"):
        assert f"the suite's default {defaults[key]}" in SUITE_DEFAULT_HELP[f"trainer.{key}"]
    assert "the suite's default true" in SUITE_DEFAULT_HELP["checkpoint.save_last"]
    assert SAVE_LAST is True  # the value set_defaults gives checkpoint.save_last


def test_fit_help_shows_them_instead_of_lightning_s(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as stop:
        medical_main(["fit", "--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for help_text in SUITE_DEFAULT_HELP.values():
        assert " ".join(help_text.split()) in text
    assert "Default: ``50``" not in text  # Lightning's log_every_n_steps help
