"""Images deeper than 8 bits (16-bit PNG / TIFF, float TIFF) brought to the uint8 every network here reads."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np

#: the warning categories that have said, in this process, that deep images are stretched (once each)
_said: set[type[Warning]] = set()


def stretch_to_uint8(
    image: np.ndarray, path: str | Path | None = None, category: type[Warning] | None = None
) -> np.ndarray:
    """A 16-bit (or float) image mapped to uint8 by stretching its own finite min..max to 0..255.

    Dividing by 65535 would keep the common 12-bit sensor or CT in a 16-bit container (0..4095) nearly black,
    and dropping the low byte (a plain ``cv2.imread``) leaves it 16 grey levels. A float image already in
    [0, 1] is scaled by 255 instead; NaN / inf pixels become 0; a flat image becomes 0. With ``category``, a
    warning of that category says so once per process (each loader worker is one), naming the first file,
    since the stretch differs per image."""
    if category is not None and category not in _said:
        _said.add(category)
        warnings.warn(
            f"{path}: a {image.dtype} image; images deeper than 8 bits (16-bit PNG / TIFF) are read at full depth "
            "and contrast-stretched per image (its own min..max to 0..255)",
            category,
            stacklevel=3,
        )
    if image.dtype.kind in "ui":  # no NaN to mind: OpenCV's min-max normalisation
        return cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX, dtype=cv2.CV_8U)
    finite = np.isfinite(image)
    if not finite.any():
        return np.zeros(image.shape, np.uint8)
    values = image.astype(np.float32)
    low, high = float(values[finite].min()), float(values[finite].max())
    if image.dtype.kind == "f" and low >= 0.0 and high <= 1.0:
        low, high = 0.0, 1.0  # already a [0, 1] intensity: keep its scale
    if high <= low:
        return np.zeros(image.shape, np.uint8)
    scaled = np.where(finite, (values - low) * (255.0 / (high - low)), 0.0)
    return np.round(scaled).astype(np.uint8)
