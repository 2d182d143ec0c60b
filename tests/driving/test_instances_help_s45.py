"""``python -m domains.driving.instances fit --help`` described ``--data.split_fractions`` with the detection data
module's YOLO rule (their shared base's docstring; jsonargparse documents a parameter passed on in ``**kwargs``
from the class that declares it): the instance data module reads no YOLO set and keeps no split of its own."""

from __future__ import annotations

import pytest

from domains.driving.instances.__main__ import main as instances_main


def _option_help(out: str, option: str) -> str:
    """The help text of ``option`` in a ``--help`` listing, on one line."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith(f"{option} "))
    text = []
    for line in lines[start + 1 :]:
        if line.lstrip().startswith("--") or not line.strip():
            break
        text.append(line.strip())
    return " ".join(text)


def test_split_fractions_help_describes_the_instance_formats(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as stop:
        instances_main(["fit", "--help"])
    assert stop.value.code == 0
    text = _option_help(capsys.readouterr().out, "--data.split_fractions")
    assert "YOLO" not in text
    assert text.startswith("train / val / test shares of the images, split by driving sequence")
    assert "a Cityscapes download's frames by city. No format keeps splits of its own" in text
    assert "default: (0.7, 0.15, 0.15)" in text  # the shared base's default, as before

