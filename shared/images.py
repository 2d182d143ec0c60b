"""Images deeper than 8 bits (16-bit PNG / TIFF, float TIFF) brought to the uint8 every network here reads,
image files checked to read whole (OpenCV fills a cut-short JPEG with grey, saying so on stderr only), and
images written with an error that names the file."""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from shared.files import written_whole

# OpenCV's own log printed "[ WARN:0@5.2] global loadsave.cpp:279 findDecoder imread_('...'): can't open/read
# file" and "[ERROR:0@1.3] global grfmt_png.cpp:296 readHeader IHDR chunk shall be first" to stderr (the second
# naming no file) beside the suite's own error or unreadable.csv that names the file and why: silent. This also
# hides OpenCV's other errors in the process (a VideoCapture backend's, for the accident videos, which the suite
# reports itself); OPENCV_LOG_LEVEL=ERROR brings them back: when set, it is the user's (kept). Every module of the
# suite that reads images imports this one (loader workers too).
if "OPENCV_LOG_LEVEL" not in os.environ:
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

#: what Pillow raises for a file it cannot read (not an image, cut short, corrupt, a decompression bomb)
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)

#: the warning categories that have said, in this process, that deep images are stretched (once each)
_said: set[type[Warning]] = set()


def _say_once(image: np.ndarray, path, category: type[Warning] | None, target: str) -> None:
    """A warning of ``category`` (if given), once per process (each loader worker is one), naming the first file,
    since the stretch differs per image."""
    if category is not None and category not in _said:
        _said.add(category)
        warnings.warn(
            f"{path}: a {image.dtype} image; images deeper than 8 bits (16-bit PNG / TIFF) are read at full depth "
            f"and contrast-stretched per image (its own min..max to {target})",
            category,
            stacklevel=4,
        )


def stretch_to_unit(
    image: np.ndarray, path: str | Path | None = None, category: type[Warning] | None = None
) -> np.ndarray:
    """float32 in [0, 1]: the image's own finite min..max stretched to 0..1, at full precision (a 12-bit CT keeps
    its 4096 levels). A float image already in [0, 1] keeps its scale; NaN / inf pixels and flat images become 0.
    ``category``: say so in a warning (:func:`stretch_to_uint8`)."""
    _say_once(image, path, category, "0..1")
    if image.dtype.kind in "ui":  # no NaN to mind: OpenCV's min-max normalisation, 15x the numpy path per slice
        unit = cv2.normalize(image, None, 0.0, 1.0, cv2.NORM_MINMAX, dtype=cv2.CV_32F)
        # its float scale and shift leave the minimum a hair below 0 for some ranges (-1.2e-8 at 51037..60272)
        return np.clip(unit, 0.0, 1.0, out=unit)
    values = image.astype(np.float32)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(image.shape, np.float32)
    low, high = float(values[finite].min()), float(values[finite].max())
    if image.dtype.kind == "f" and low >= 0.0 and high <= 1.0:
        low, high = 0.0, 1.0  # already a [0, 1] intensity: keep its scale
    if high <= low:
        return np.zeros(image.shape, np.float32)
    return np.where(finite, (values - low) / (high - low), 0.0).astype(np.float32)


def stretch_to_uint8(
    image: np.ndarray, path: str | Path | None = None, category: type[Warning] | None = None
) -> np.ndarray:
    """A 16-bit (or float) image mapped to uint8 by stretching its own finite min..max to 0..255
    (:func:`stretch_to_unit`).

    Dividing by 65535 would keep the common 12-bit sensor or CT in a 16-bit container (0..4095) nearly black,
    and dropping the low byte (a plain ``cv2.imread``) leaves it 16 grey levels. With ``category``, a
    warning of that category says so once per process."""
    _say_once(image, path, category, "0..255")
    if image.dtype.kind in "ui":  # no NaN to mind: OpenCV's min-max normalisation
        return cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX, dtype=cv2.CV_8U)
    return np.round(stretch_to_unit(image) * 255.0).astype(np.uint8)  # said above


def write_image(path: str | Path, image: np.ndarray, rgb: bool = False, params=(), what: str = "image") -> None:
    """``cv2.imwrite`` that fails loudly (OpenCV returns False for a full disk or a format it cannot write, and
    writes nothing) and writes the file whole (:func:`~shared.files.written_whole`). ``rgb``: ``image`` is RGB
    (OpenCV writes BGR); ``params``: OpenCV's."""
    if rgb:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    try:
        with written_whole(path) as tmp:  # whole or not at all
            if not cv2.imwrite(str(tmp), np.ascontiguousarray(image), list(params)):
                raise OSError(f"{path}: cannot write the {what} (disk full, or a format OpenCV cannot write)")
    except FileNotFoundError:
        raise OSError(f"{path}: cannot write the {what}: its folder does not exist") from None


class ImageDecodeError(ValueError):
    """An image file that does not read whole: the message names the file, ``reason`` says why without it
    (for readers that word their own error). One argument is the whole message (how pickle and torch's
    DataLoader rebuild an error raised in a worker)."""

    def __init__(self, path: str | Path, reason: str | None = None):
        super().__init__(str(path) if reason is None else f"{path}: {reason}")
        self.reason = str(path) if reason is None else reason


def check_decodes(path: str | Path) -> None:
    """:class:`ImageDecodeError` unless the whole image file reads: a readable header can front truncated data
    (a copy cut short), which OpenCV fills with grey or refuses only when the loader reaches it. A PNG is verified
    (every chunk's checksum up to its end marker, no pixels decoded), a JPEG decoded at 1/8 scale (``draft``,
    which still reads every byte), other formats decoded whole: far cheaper than the full decode that follows."""
    try:
        with Image.open(path) as image:
            if image.format == "PNG":
                image.verify()
            else:
                image.draft(None, (1, 1))
                image.load()
    except DECODE_ERRORS as err:
        raise ImageDecodeError(path, f"cannot decode image ({err})") from None


def check_jpeg_whole(path: str | Path) -> None:
    """:class:`ImageDecodeError` if ``path`` holds a JPEG (by its content, whatever its name) that is cut short:
    OpenCV decodes the rows it lacks as grey and says so on stderr only, naming no file. Cheap enough for every
    read: checked once per file version (size, modification time) and process, a stat after that."""
    stat = os.stat(path)
    _check_jpeg_whole(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=1 << 16)
def _check_jpeg_whole(path: str, size: int, mtime_ns: int) -> None:
    """:func:`check_jpeg_whole` of one file version (``size``, ``mtime_ns``), remembered once it passes. A file
    not starting with a JPEG's start-of-image marker (FF D8 FF) passes; a JPEG ending with its end-of-image marker
    (FF D9, zero padding aside: its last 64 bytes read) is whole; one that does not is cut short, or carries data
    after the marker (some phones append theirs), which a decode tells apart (:func:`check_decodes`), once, not
    at every epoch's read."""
    with open(path, "rb") as f:
        if f.read(3) != b"\xff\xd8\xff":
            return
        f.seek(max(0, size - 64))
        if f.read().rstrip(b"\x00").endswith(b"\xff\xd9"):
            return
    check_decodes(Path(path))
