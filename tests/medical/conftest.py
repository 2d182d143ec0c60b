"""Tiny generated LIDC data shared by the medical CLI and fault tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from domains.medical.synthetic import generate_lidc_png


@pytest.fixture(scope="module")
def lidc(tmp_path_factory) -> Path:
    """8 patients x 2 images of 32 px, split by patient: 12 train, 2 val, 2 test images."""
    return generate_lidc_png(tmp_path_factory.mktemp("lidc"), n_patients=8, images_per_patient=2, size=32)
