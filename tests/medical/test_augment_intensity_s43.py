"""``--data.augment_intensity`` sets the training brightness / contrast step (0: none), refused outside [0, 1)."""

from __future__ import annotations

import albumentations as A
import pytest

from domains.medical.data import AUGMENT_INTENSITY, MedicalDataModule


def _intensity_steps(dm: MedicalDataModule) -> list:
    dm.prepare_data()
    dm.setup("fit")
    pipeline = dm.dataset("train").augment
    return [t for t in pipeline.transforms if isinstance(t, A.RandomBrightnessContrast)]


@pytest.mark.parametrize("intensity", [0.0, 0.25])
def test_the_intensity_step_follows_the_option(lidc, intensity):
    steps = _intensity_steps(MedicalDataModule(data_path=str(lidc), num_workers=0, augment_intensity=intensity))
    if intensity == 0:
        assert steps == []
    else:
        (step,) = steps
        assert step.brightness_limit == pytest.approx((-intensity, intensity))


def test_the_default_keeps_the_documented_step(lidc):
    (step,) = _intensity_steps(MedicalDataModule(data_path=str(lidc), num_workers=0))
    assert step.contrast_limit == pytest.approx((-AUGMENT_INTENSITY, AUGMENT_INTENSITY))


def test_an_intensity_outside_the_range_names_the_option():
    with pytest.raises(ValueError, match=r"--data.augment_intensity must be in \[0, 1\).*got 1.5"):
        MedicalDataModule(augment_intensity=1.5)
