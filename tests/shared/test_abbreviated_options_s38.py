"""A shortened option name is not taken for the whole one: argparse's prefix matching ran
``--trainer.max_epoch 3`` as ``--trainer.max_epochs 3`` without a word (a typo dropping the last letter started
a full training); it is now unrecognized, with the close option suggested."""

import sys
from pathlib import Path

import pytest


def test_an_abbreviated_option_is_refused_with_the_whole_name_suggested(monkeypatch, capsys):
    from domains.driving.detection.__main__ import main

    monkeypatch.setattr(sys, "argv", ["python"])
    config = Path(__file__).resolve().parents[2] / "domains/driving/detection/configs/quick.yaml"
    with pytest.raises(SystemExit) as stop:
        main(["fit", "-c", str(config), "--trainer.max_epoch", "3", "--print_config"])  # accepted: printed only
    assert stop.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[-2:] == [
        "error: unrecognized arguments: --trainer.max_epoch 3",
        "--trainer.max_epoch: did you mean --trainer.max_epochs?",
    ]
