"""shared.images: deep images brought to [0, 1]."""

import numpy as np

from shared.images import stretch_to_unit


def test_a_stretched_16_bit_image_stays_within_0_and_1():
    """OpenCV's float scale and shift put the minimum of 51037..60272 at -1.2e-8: below the [0, 1] promised."""
    unit = stretch_to_unit(np.array([[51037, 60272, 55000]], np.uint16))
    assert unit.min() == 0.0 and unit.max() == 1.0
