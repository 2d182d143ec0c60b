"""``--ckpt_path``'s help says what the suite does with it, not what Lightning's Trainer docstrings say ("best"
only after a fit in the same process, a "registry" download, the last fit's best checkpoint when unset, which
the suite refuses: an evaluation without weights is an error)."""

from __future__ import annotations

import pytest

from domains.medical.__main__ import main as medical_main
from shared.cli import CKPT_PATH_HELP


@pytest.mark.parametrize("subcommand", ["fit", "validate", "test", "predict"])
def test_each_sub_command_s_help_gives_the_suite_s_reading(subcommand, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as stop:
        medical_main([subcommand, "--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert " ".join(CKPT_PATH_HELP[subcommand].split()) in text
    assert '``"registry"``' not in text and "previous ``trainer.fit`` call" not in text

