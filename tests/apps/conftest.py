"""Tiny checkpoints and data roots for the page tests; the pages find them through environment variables."""

from __future__ import annotations

import os

import pytest

from apps import demo_models as dm
from tests.apps import tiny


@pytest.fixture(scope="session")
def demo_env(tmp_path_factory):
    """Build once per session; point SUITE_DEMO_CHECKPOINTS and the SUITE_*_DATA roots at it."""
    paths = tiny.build_all(tmp_path_factory.mktemp("demo"))
    values = {
        dm.ENV_CHECKPOINTS: str(paths["checkpoints"]),
        # the page tests run the tiny checkpoints; tests/apps/test_shipped_weights.py covers the shipped ones
        dm.ENV_WEIGHTS: str(paths["checkpoints"] / "no_shipped_weights"),
        dm.ENV_MEDICAL_DATA: str(paths["medical"]),
        dm.ENV_ANOMALY_DATA: str(paths["anomaly"]),
        dm.ENV_ACCIDENT_DATA: str(paths["accident"]),
    }
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    yield paths
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
