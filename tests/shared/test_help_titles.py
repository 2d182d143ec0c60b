"""``fit --help`` titles each group of options with its class docstring's first line (jsonargparse): a first
paragraph wrapped over two lines showed cut mid-sentence ("... split by sequence (``python -m ... fit --help``
lists:")."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

DOMAINS = Path(__file__).resolve().parents[2] / "domains"
#: each CLI's ``domain_main(__package__, DESCRIPTION, ".task:Task", ".data:DataModule", ...)``
CLASSES = sorted(
    (str(main.parent.relative_to(DOMAINS.parent)).replace("/", "."), spec)
    for main in DOMAINS.glob("**/__main__.py")
    for spec in re.findall(r'"([\w.]*:\w+)"', main.read_text())
)


def test_every_domain_cli_is_found():
    assert len({package for package, _ in CLASSES}) >= 7 and len(CLASSES) >= 14


@pytest.mark.parametrize("package, spec", CLASSES)
def test_a_cli_classs_first_paragraph_is_one_line(package, spec):
    module, name = spec.split(":")
    cls = getattr(importlib.import_module(module, package), name)
    first = (cls.__doc__ or "").strip().split("\n\n")[0]
    assert first and "\n" not in first, f"{package}{spec}: its --help title is cut at the line end: {first!r}"


def test_the_fit_ckpt_path_group_has_a_title():
    """Its group was titled ``<function SuiteTrainer.fit at 0x7f...>`` in every domain's ``fit --help``."""
    from shared.cli import SuiteTrainer

    first = (SuiteTrainer.fit.__doc__ or "").strip().split("\n\n")[0]
    assert first and "\n" not in first
