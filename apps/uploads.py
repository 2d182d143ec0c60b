"""Decoding and validation of files uploaded to the demos (no Streamlit here, so it is testable alone).

Everything a user uploads is untrusted: nothing is unpickled, sizes are checked before decoding, and every
failure is an :class:`UploadError` whose message names the file and says what to do. Conversions that keep
the file usable (RGBA -> RGB, grey -> RGB, 16-bit -> 8-bit, colour -> grey for CT) are done and reported as
``notes`` so the page can show them.

* road photos: PNG / JPEG / WebP through OpenCV (``cv2.imdecode``; their EXIF orientation applied, as
  ``predict``'s ``cv2.imread`` does) -> RGB uint8;
* medical images: PNG / JPEG, DICOM (``pydicom`` from bytes, single- or multi-frame) and NIfTI-1/2
  (``nibabel`` from bytes, ``.nii`` or ``.nii.gz``) -> :class:`MedicalVolume`, a stack of 2D slices;
* dashcam clips: a video (mp4 / avi / mov / mkv through OpenCV) or a zip of JPEG / PNG / WebP frames (in
  name order) -> :class:`FrameClip`, RGB uint8 frames of one size and the frame rate when the file gives one
  (a video faster than the model's rate keeps only the frames the model reads).
"""

from __future__ import annotations

import gzip
import io
import math
import re
import warnings
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import cv2
import numpy as np

from domains.medical.volumes import (
    PERCENTILES,
    axial_slices,
    nonfinite_affine_problem,
    percentile_window,
    window_problem,
)
from shared.files import is_hidden, natural_key
from shared.images import stretch_to_uint8

MAX_UPLOAD_MB = 50  # keep in step with server.maxUploadSize in .streamlit/config.toml
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024
# One 2D image (a 40-megapixel photo, e.g. 7200x5400); larger is refused before decoding, with a message to
# downscale it. Not raised for 48-megapixel phone photos: the driving page holds several arrays at the photo's
# size per photo (RGB 3 bytes per pixel, the anomaly score map 4 and its class map 1, the full-size
# downloads) and caches several photos, while the models work on a shrunk copy (at most 1280 px on the long
# side for the detector and the instance segmenter, fitted into 640x192 for the anomaly model): more pixels would cost
# memory, not accuracy.
MAX_PIXELS = 40_000_000
MAX_VOLUME_BYTES = 512 * 1024 * 1024  # decompressed NIfTI / DICOM pixel data
MIN_SIDE = 16  # smaller images cannot go through the networks' downsampling
# frames the model reads (30 s at its 10 fps): the CPU detector runs on each (about a second a frame on 2 cores). A
# video faster than the model is resampled to its rate as decoded (decode_clip's model_fps), so a 30 fps video
# may hold three times as many; a zip's frames, and a video's with no frame rate, are all read, so all count
MAX_CLIP_FRAMES = 300
MAX_CLIP_SIDE = 640  # longer frame sides are scaled down on upload (the anticipator reads 224-320 px wide)
MAX_CLIP_FRAME_PIXELS = (
    4096 * 2160  # one clip frame: 4K, UHD (3840x2160) and DCI (4096x2160); each shrunk to MAX_CLIP_SIDE as decoded
)
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v")

#: a road photo and a clip zip's frames: WebP too, as ``predict`` and the driving page's scene list read it
#: (RoadObstacle21's images are WebP)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
MEDICAL_EXTENSIONS = (".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".nii", ".nii.gz")

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
#: what a file's name says it is, to tell a user whose ``notes.png`` holds text that its content is not a PNG
#: ("unsupported file type" read as if the name were wrong)
_NAMED_AS = {
    ".png": "PNG image",
    ".jpg": "JPEG image",
    ".jpeg": "JPEG image",
    ".webp": "WebP image",
    ".nii": "NIfTI volume",
    ".nii.gz": "gzipped NIfTI volume",
}
_GZIP_MAGIC = b"\x1f\x8b"


class UploadError(ValueError):
    """An upload that cannot be used; the message is meant for the user (names the file, says why)."""


@dataclass
class FrameClip:
    """A decoded dashcam clip: RGB uint8 frames (T, H, W, 3) of one size, and the frame rate if the file says.

    ``fps`` is None for a zip of frames and for a video whose container gives no usable rate: the page asks. A
    video faster than the model's rate is resampled to it as decoded (:func:`decode_clip`'s ``model_fps``):
    ``frames`` then holds only the frames the model reads, ``fps`` is the model's rate, and ``source_*`` say
    which of the video's frames they are."""

    name: str
    frames: np.ndarray
    fps: float | None
    notes: list[str] = field(default_factory=list)
    format: str = ""
    #: (width, height) of the file's own frames, before they were shrunk to ``MAX_CLIP_SIDE``
    source_size: tuple[int, int] | None = None
    #: a video resampled as decoded: its own frame rate and number of frames, and the index in it of each of
    #: ``frames`` (:func:`~domains.driving.accident.readers.model_steps`); None where every frame was kept
    source_fps: float | None = None
    source_count: int | None = None
    source_frames: np.ndarray | None = None

    @property
    def resampled(self) -> bool:
        return self.source_frames is not None


@dataclass
class RGBImage:
    """A decoded road photo: RGB uint8 (H, W, 3) plus the conversions made on the way."""

    name: str
    image: np.ndarray
    notes: list[str] = field(default_factory=list)
    format: str = ""
    #: the file has no colour (grey, or three equal channels), found once when decoded (see :func:`grey_photo`)
    colourless: bool = False


@dataclass(frozen=True)
class NiftiGrid:
    """Where an upload's shown slices lie, so a mask drawn on one goes out as a NIfTI a viewer overlays on the
    scan (ITK-SNAP, 3D Slicer). A NIfTI upload: its own voxel grid, ``axes`` the transpose of the RAS+-reoriented
    (X, Y, Z, C) array that gave the shown (C, D, rows, cols), rows and columns then flipped, ``header`` the
    file's (its codes and units are kept). A DICOM slice: shown as stored, ``axes`` None, ``affine`` its place
    in the patient from its header."""

    version: int
    affine: np.ndarray
    header: object
    axes: tuple[int, int, int, int] | None

    @property
    def from_dicom(self) -> bool:
        return self.axes is None

    def file_slice(self, index: int, num_slices: int) -> tuple[int, int]:
        """(axis, index) in the file's own array of shown slice ``index`` of ``num_slices``: the page counts
        slices in RAS+ order (inferior to superior), a file may store them the other way or along another axis
        (a sagittal-stored volume's shown slices are its axis 0)."""
        import nibabel as nib

        if self.axes is None:  # a DICOM object's frames as stored
            return 2, index
        ornt = nib.orientations.io_orientation(self.affine)  # file axis -> (RAS+ axis, direction)
        axis = int(np.flatnonzero(ornt[:, 0] == self.axes[1])[0])
        return axis, index if ornt[axis, 1] > 0 else num_slices - 1 - index

    def mask_file(self, display_mask: np.ndarray) -> bytes:
        """A shown-layout (D, rows, cols) uint8 mask as a .nii.gz on the file's grid, with the file's affine."""
        import nibabel as nib

        shown = np.asarray(display_mask, np.uint8)
        if self.axes is None:  # (frames, rows, cols) -> (rows, cols, frames): the DICOM wrapper's voxel order
            voxels = np.ascontiguousarray(np.moveaxis(shown, 0, -1))
        else:
            canonical = np.transpose(shown[None, :, ::-1, ::-1], np.argsort(self.axes))[..., 0]  # (X, Y, Z) RAS+
            to_file = nib.orientations.ornt_transform(
                nib.orientations.axcodes2ornt("RAS"), nib.orientations.io_orientation(self.affine)
            )
            voxels = np.ascontiguousarray(nib.orientations.apply_orientation(canonical, to_file))
        cls = nib.Nifti1Image if self.version == 1 else nib.Nifti2Image
        image = cls(voxels, self.affine, self.header)  # a NIfTI's header: its qform / sform codes and units
        if self.header is None:  # a DICOM's place: scanner coordinates, in mm
            image.set_qform(self.affine, code=1)
            image.set_sform(self.affine, code=1)
            image.header.set_xyzt_units("mm")
        image.header.set_data_dtype(np.uint8)
        image.header.set_slope_inter(1.0, 0.0)  # the scan's HU scaling does not apply to a 0/1 mask
        image.header["cal_min"], image.header["cal_max"] = 0, 1  # nor its display range (-1000..1000 washed out)
        image.header["descrip"] = b"lesion mask (applied-dl-suite demo)"
        return gzip.compress(image.to_bytes(), compresslevel=6)


@dataclass
class MedicalVolume:
    """A decoded medical upload as display-oriented 2D slices.

    ``data`` is (C, D, H, W) (C channels / time points, D slices): a NIfTI's integers as stored, any other
    volume's values as float32 (a DICOM's rescaled values, a NIfTI's floating-point or scaled ones: never
    float64, so a volume takes at most ``MAX_VOLUME_BYTES``); a PNG / JPEG as decoded. ``lo`` / ``hi`` is
    the intensity window that maps to [0, 1], ``channel_windows`` one per channel where the channels are
    scaled apart (a 4D NIfTI's modalities: training scales the one channel it reads on its own). A plain 2D
    image has C = D = 1.
    """

    name: str
    format: str
    data: np.ndarray
    lo: float
    hi: float
    notes: list[str] = field(default_factory=list)
    #: mm per pixel along a shown slice's rows and columns, from the file's header (None: a PNG / JPEG, or a
    #: header without one)
    spacing: tuple[float, float] | None = None
    channel_windows: list[tuple[float, float]] | None = None
    #: where the shown slices lie in a NIfTI upload's file or in the patient for a placed DICOM slice (None for
    #: other uploads): a mask goes out on it as a NIfTI
    nifti_grid: NiftiGrid | None = None
    #: (transpose, flip rows, flip columns) that turn a shown slice into the slice training cuts from the file
    #: (a NIfTI's axial slices: :func:`_model_view`); None: the model reads the slice as shown
    model_view: tuple[bool, bool, bool] | None = None

    @property
    def num_channels(self) -> int:
        return int(self.data.shape[0])

    @property
    def num_slices(self) -> int:
        return int(self.data.shape[1])

    @property
    def is_volume(self) -> bool:
        return self.num_slices > 1

    @property
    def shape2d(self) -> tuple[int, int]:
        return int(self.data.shape[2]), int(self.data.shape[3])

    def slice(self, index: int | None = None, channel: int = 0) -> np.ndarray:
        """Float32 (H, W) in [0, 1], always finite; ``index`` defaults to the middle slice."""
        if not 0 <= channel < self.num_channels:
            raise UploadError(f"{self.name}: channel {channel} outside 0..{self.num_channels - 1}")
        index = self.num_slices // 2 if index is None else int(index)
        if not 0 <= index < self.num_slices:
            raise UploadError(f"{self.name}: slice {index} outside 0..{self.num_slices - 1}")
        # in float64: (value - lo) of values near +-3e38 overflowed float32 to inf and NaN
        s = np.asarray(self.data[channel, index], dtype=np.float64)
        lo, hi = self.channel_windows[channel] if self.channel_windows else (self.lo, self.hi)
        # NaN (no data) shows as the window's low end, +-inf as its ends (the clip); decode counts them. A copy:
        # the slice may be a view of the cached volume
        s = np.nan_to_num(s, nan=lo)
        scale = hi - lo
        out = (s - lo) / scale if scale > 0 else np.zeros_like(s)
        return np.ascontiguousarray(np.clip(out, 0.0, 1.0), dtype=np.float32)

    def to_model(self, image: np.ndarray) -> np.ndarray:
        """A shown-orientation (..., rows, cols) array (a slice fitted to the model's input) as training gives
        the model this file's slices (:attr:`model_view`): a NIfTI is shown reoriented to RAS+ for the
        radiological view, and cut with each axis in its stored direction for the models."""
        return image if self.model_view is None else np.ascontiguousarray(_to_view(image, self.model_view))

    def from_model(self, image: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`to_model`: a map on the model's input (a probability, an entropy), shown."""
        if self.model_view is None:
            return image
        transpose, flip_rows, flip_cols = self.model_view
        out = image[..., :: -1 if flip_rows else 1, :: -1 if flip_cols else 1]
        return np.ascontiguousarray(np.swapaxes(out, -1, -2) if transpose else out)


def _to_view(image: np.ndarray, view: tuple[bool, bool, bool]) -> np.ndarray:
    """``image``'s last two axes transposed, then its rows and columns flipped, as ``view`` says (a view)."""
    transpose, flip_rows, flip_cols = view
    out = np.swapaxes(image, -1, -2) if transpose else image
    return out[..., :: -1 if flip_rows else 1, :: -1 if flip_cols else 1]


# ------------------------------------------------------------------------------------------------ checks


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


def check_size(data: bytes, name: str, limit: int = MAX_UPLOAD_BYTES) -> None:
    """Refuse empty files and files over ``limit`` bytes (the server has its own limit too)."""
    if len(data) == 0:
        raise UploadError(f"{name}: the file is empty")
    if len(data) > limit:
        raise UploadError(f"{name}: the file is {_mb(len(data))}; the limit is {_mb(limit)}")


def _check_volume(name: str, declared: str, nbytes: int) -> None:
    """Refuse, from its header and before a voxel is decoded, a volume that would take more than
    ``MAX_VOLUME_BYTES`` as the demo holds it (``declared``: what the header says, ``nbytes``: its size so held):
    a 60-byte gzip whose NIfTI header declared 1024x1024x512 float32 used 2 GB before it was refused."""
    if nbytes > MAX_VOLUME_BYTES:
        size = _mb(nbytes) if nbytes < 1024**3 else f"{nbytes / 1024**3:,.1f} GB"
        raise UploadError(
            f"{name}: its header declares {declared} = {size} to hold; the limit is {_mb(MAX_VOLUME_BYTES)} "
            "(crop or downsample it first)"
        )


def detect_format(data: bytes, name: str = "") -> str:
    """``png``, ``jpeg``, ``webp``, ``dicom``, ``nifti`` (``.nii``), ``nifti_gz``, ``gzip`` or ``unknown``,
    from the content.

    The content decides (not the extension); a DICOM without the 128-byte preamble is recognised by its
    ``.dcm`` extension only. A gzip is ``nifti_gz`` when its first decompressed bytes are a NIfTI header,
    whatever its name (``vol.nii`` that is really ``vol.nii.gz`` included), or when its name says NIfTI / gzip
    (``.nii``, ``.nii.gz``, ``.gz``: the NIfTI reader then says what is wrong inside); any other gzip is
    ``gzip``.
    """
    lower = name.lower()
    if data.startswith(_PNG_MAGIC):
        return "png"
    if data.startswith(_JPEG_MAGIC):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    if data.startswith(_GZIP_MAGIC):
        try:  # only the header's 540 bytes are decompressed (a gzip bomb costs nothing here)
            head = zlib.decompressobj(wbits=31).decompress(data, 540)
        except zlib.error:
            head = b""
        if _nifti_version(head) or lower.endswith((".nii", ".nii.gz", ".gz")):
            return "nifti_gz"
        return "gzip"
    if _nifti_version(data):
        return "nifti"
    if lower.endswith((".dcm", ".dicom")):
        return "dicom"
    return "unknown"


def _nifti_version(header: bytes) -> int:
    """1 or 2 when ``header`` starts like a NIfTI-1 / NIfTI-2 header (sizeof_hdr 348 / 540, magic), else 0."""
    if len(header) >= 348:
        for order in ("<", ">"):
            size = int(np.frombuffer(header[:4], dtype=f"{order}i4")[0])
            if size == 348 and header[344:347] in (b"n+1", b"ni1"):
                return 1
            if size == 540 and len(header) >= 540 and header[4:7] in (b"n+2", b"ni2"):
                return 2
    return 0


def _not_as_named(name: str, suffixes: tuple[str, ...], accepted: str) -> UploadError | None:
    """The error for a file named as a type the page takes (one of ``suffixes``) whose content is none it
    reads (``notes.png`` holding text): its content, not its name, is what is wrong. None for other names."""
    suffix = next((x for x in sorted(suffixes, key=len, reverse=True) if name.lower().endswith(x)), None)
    named = _NAMED_AS.get(suffix)
    if named is None:
        return None
    return UploadError(
        f"{name}: its content is not a {named} (whatever its name says; the file holds something else, or is "
        f"damaged at its start); upload {accepted}"
    )


def _check_pixels(height: int, width: int, name: str, max_pixels: int) -> None:
    if height < MIN_SIDE or width < MIN_SIDE:
        raise UploadError(
            f"{name}: the image is {width}x{height} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed"
        )
    if height * width > max_pixels:
        raise UploadError(
            f"{name}: the image is {width}x{height} = {height * width / 1e6:.1f} megapixels; the limit is "
            f"{max_pixels / 1e6:.1f} megapixels (downscale it first)"
        )


def _open_header(data: bytes, name: str):
    """``data`` opened by Pillow, its header read and no pixels decoded (PIL opens lazily): the size, frame
    count and EXIF of an upload come from this one parse. A header PIL cannot parse is an :class:`UploadError`
    naming ``name`` (a zip passes ``zip: member``)."""
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise UploadError(f"{name}: the image is too large to decode safely ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - any parser failure means a corrupt header
        # PIL's "cannot identify image file <_io.BytesIO object at 0x...>" says nothing the user can act on;
        # another parser message is kept, any object repr in it dropped
        detail = "" if isinstance(exc, UnidentifiedImageError) else str(exc)
        detail = re.sub(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>", "", detail).strip()
        raise UploadError(
            f"{name}: not a readable image; its header cannot be read (the file is corrupt or truncated"
            + (f": {detail})" if detail else ")")
        ) from None


_FORMAT_NAMES = {"webp": "WebP"}  # as written; the others upper-case (PNG, JPEG)


def _frame_count(image) -> int:
    """Frames in an (animated) image from its header; 1 where Pillow cannot tell."""
    try:
        return int(getattr(image, "n_frames", 1))
    except Exception:  # noqa: BLE001 - the header was read before; a count is only a note
        return 1


#: what a PNG names an EXIF or XMP store by (an eXIf chunk; text chunks "exif", "Raw profile type exif",
#: "XML:com.adobe.xmp"), in plain bytes: Pillow's only sources of its orientation
_PNG_EXIF_NAMES = (b"eXIf", b"exif", b"XML:com.adobe.xmp")


def _exif_orientation(image, data: bytes) -> int:
    """The orientation Pillow reads (EXIF, else XMP); 1 where there is none. A PNG whose bytes name no store
    has none: Pillow decoded all its pixels to look for one after them (as long as OpenCV's decode takes)."""
    if image.format == "PNG" and not any(name in data for name in _PNG_EXIF_NAMES):
        return 1
    try:
        return int(image.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - EXIF is optional: no orientation
        return 1


def _apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """EXIF orientation 1..8 -> upright (hand-written: OpenCV's own handling drops alpha / 16-bit)."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: np.swapaxes(a, 0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1],
        8: lambda a: np.rot90(a, 1),
    }
    op = ops.get(orientation)
    return np.ascontiguousarray(op(image)) if op else image


def _decode_raster(data: bytes, name: str, fmt: str, max_pixels: int) -> tuple[np.ndarray, list[str]]:
    """PNG / JPEG / WebP -> the stored array (H, W) or (H, W, C) in BGR(A) order and its native dtype."""
    with _open_header(data, name) as image:  # one Pillow parse: it was opened for each of three reads
        width, height = (int(n) for n in image.size)
        _check_pixels(height, width, name, max_pixels)
        array = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        if array is None:
            raise UploadError(
                f"{name}: the {_FORMAT_NAMES.get(fmt, fmt.upper())} data cannot be decoded; the file is "
                "corrupt or truncated"
            )
        notes = []
        if fmt == "webp" and (frames := _frame_count(image)) > 1:
            notes.append(f"animated WebP ({frames} frames): its first frame is used")
        if fmt in ("jpeg", "png", "webp"):  # as predict's cv2.imread turns them (a PNG's eXIf chunk too)
            orientation = _exif_orientation(image, data)
            if orientation != 1:
                array = _apply_orientation(array, orientation)
                notes.append(f"rotated upright from its EXIF orientation ({orientation})")
    if array.dtype not in (np.uint8, np.uint16):
        raise UploadError(f"{name}: unsupported pixel type {array.dtype} (8- or 16-bit images only)")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    return array, notes


def _to_uint8(array: np.ndarray, notes: list[str]) -> np.ndarray:
    """16-bit -> 8-bit by the image's own min..max (12-bit sensors rarely fill 16 bits), with a note."""
    if array.dtype == np.uint8:
        return array
    lo, hi = int(array.min()), int(array.max())
    notes.append(f"16-bit image rescaled to 8-bit (values {lo}..{hi} -> 0..255)")
    return stretch_to_uint8(array)  # a flat image: all 0


# -------------------------------------------------------------------------------------------- road photos


def decode_rgb_image(
    data: bytes, name: str, max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS
) -> RGBImage:
    """A PNG / JPEG / WebP road photo -> RGB uint8 (H, W, 3); grey, RGBA and 16-bit inputs are converted
    (noted). A name of one of those types on other content is told as such (:func:`_not_as_named`)."""
    check_size(data, name, max_bytes)
    fmt = detect_format(data, name)
    if fmt in ("dicom", "nifti", "nifti_gz"):
        raise UploadError(
            f"{name}: this is a {'DICOM' if fmt == 'dicom' else 'NIfTI'} medical file; this page needs a 2D "
            "road photo (PNG, JPEG or WebP). Medical images go to the medical page."
        )
    if fmt not in ("png", "jpeg", "webp"):
        raise _not_as_named(name, IMAGE_EXTENSIONS, "a PNG, JPEG or WebP photo") or UploadError(
            f"{name}: unsupported file type; upload a PNG, JPEG or WebP photo"
        )
    array, notes = _decode_raster(data, name, fmt, max_pixels)
    array = _to_uint8(array, notes)
    if array.ndim == 2:
        notes.append("grayscale image converted to RGB (the models expect colour)")
        rgb = cv2.cvtColor(array, cv2.COLOR_GRAY2RGB)
    elif array.shape[2] == 4:
        notes.append("the alpha (transparency) channel was dropped")
        rgb = cv2.cvtColor(array, cv2.COLOR_BGRA2RGB)
    elif array.shape[2] == 3:
        rgb = cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    else:
        raise UploadError(f"{name}: {array.shape[2]} colour channels; expected grey, RGB or RGBA")
    equal = array.ndim == 2 or bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
    return RGBImage(name, np.ascontiguousarray(rgb), notes, fmt.upper(), colourless=equal)


# ------------------------------------------------------------------------------------------ dashcam clips


def _is_video(data: bytes, name: str) -> bool:
    """An MP4 / MOV (``ftyp`` box), AVI (RIFF ... AVI), Matroska / WebM (EBML) file, or a video extension."""
    return (
        data[4:8] == b"ftyp"
        or (data[:4] == b"RIFF" and data[8:12] == b"AVI ")
        or data[:4] == b"\x1a\x45\xdf\xa3"
        or name.lower().endswith(VIDEO_EXTENSIONS)
    )


def _shrink(frame: np.ndarray, max_side: int) -> np.ndarray:
    h, w = frame.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return frame
    return cv2.resize(
        frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
    )


def decode_clip(
    data: bytes,
    name: str,
    max_frames: int = MAX_CLIP_FRAMES,
    max_side: int = MAX_CLIP_SIDE,
    max_bytes: int = MAX_UPLOAD_BYTES,
    model_fps: float | None = None,
) -> FrameClip:
    """A dashcam video or a zip of frames -> :class:`FrameClip` (frames scaled to at most ``max_side`` on the
    long side, noted). Errors name the file (and the zip member): unreadable video, empty zip, a member that is
    not an image, frames of mixed sizes, more than ``max_frames`` frames the model reads, fewer than 2.

    ``model_fps``: the rate the model reads at. A video faster than it is resampled to it as decoded (each
    model step the nearest frame, :func:`~domains.driving.accident.readers.model_steps`): only those frames
    are kept and counted against ``max_frames`` (a 12 s clip at 30 fps is 120 frames read at 10 fps, not 360)."""
    check_size(data, name, max_bytes)
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06") or name.lower().endswith(".zip"):
        clip = _zip_clip(data, name, max_frames, max_side, model_fps)
    elif _is_video(data, name):
        clip = _video_clip(data, name, max_frames, max_side, model_fps)
    else:
        raise UploadError(
            f"{name}: unsupported file type; upload a dashcam video (mp4) or a zip of JPEG / PNG / WebP "
            "frames"
        )
    if len(clip.frames) < 2:
        raise UploadError(
            f"{name}: {len(clip.frames)} frame; a clip needs at least 2 frames (the model reads motion)"
        )
    return clip


def _scaled_note(source: tuple[int, int], frames: np.ndarray, max_side: int) -> list[str]:
    h, w = source
    if (h, w) == frames.shape[1:3]:
        return []
    return [f"frames scaled from {w}x{h} to {frames.shape[2]}x{frames.shape[1]} (long side {max_side})"]


def _too_long(
    name: str, frames: str, max_frames: int, model_fps: float | None, advice: str, length: str = ""
) -> UploadError:
    """The refusal of a clip over ``max_frames`` frames read, ``frames`` saying how many it has and ``length``
    (a clause) how long it is; the limit also in seconds at the model's rate (10 fps where it is not known)."""
    rate = f"the model's {model_fps:g} fps" if model_fps else "10 fps"
    seconds = max_frames / (model_fps or 10.0)
    return UploadError(
        f"{name}: {frames}; the demo takes at most {max_frames} frames the model reads ({seconds:g} s at {rate})"
        f"{length}: {advice}"
    )


def _video_clip(data: bytes, name: str, max_frames: int, max_side: int, model_fps: float | None) -> FrameClip:
    import os
    import tempfile

    from domains.driving.accident.readers import FPS_TOLERANCE, model_steps

    suffix = next((e for e in VIDEO_EXTENSIONS if name.lower().endswith(e)), ".mp4")
    # OpenCV's FFmpeg reader takes a path, not bytes: a private temporary file, removed right after
    handle, path = tempfile.mkstemp(suffix=suffix)
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
        cap = cv2.VideoCapture(path)
        try:
            if not cap.isOpened():
                raise UploadError(
                    f"{name}: unreadable video (OpenCV cannot open it; the file may be truncated or use a codec "
                    "without a decoder here); upload an H.264 / MPEG-4 mp4, or a zip of its frames"
                )
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            usable = math.isfinite(fps) and 0 < fps <= 240
            # faster than the model (beyond the tolerance its reader allows): only the frames it reads are kept
            resample = usable and model_fps is not None and fps - model_fps > FPS_TOLERANCE * model_fps
            cut = "cut the clip to the seconds before the event"
            read = len(model_steps(count, fps, model_fps)) if resample else count
            if read > max_frames:
                length = f", and this video is {count / fps:.1f} s at {fps:g} fps" if usable else ""
                if resample:
                    length += f" ({read} frames at the model's rate)"
                raise _too_long(name, f"{count} frames", max_frames, model_fps, cut, length)
            width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            if width * height > MAX_CLIP_FRAME_PIXELS:
                raise UploadError(
                    f"{name}: {width}x{height} frames; the demo takes frames of at most 4096x2160 pixels "
                    f"({MAX_CLIP_FRAME_PIXELS / 1e6:.2f} megapixels: a dashcam video up to 4K)"
                )
            frames, kept, source, decoded = [], [], None, 0
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                source = source or frame.shape[:2]
                index, decoded = decoded, decoded + 1
                # resampled: a frame the model reads if the clip goes on past it (the clip's length is known at
                # its end only: the last one kept may then be dropped, hence the one extra allowed below)
                if resample and index not in model_steps(index + 2, fps, model_fps):
                    continue
                # shrunk as decoded: a long full-size clip is never held in memory
                frames.append(_shrink(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), max_side))
                kept.append(index)
                if len(frames) > max_frames + (1 if resample else 0):
                    raise _too_long(name, f"more than {max_frames} frames read", max_frames, model_fps, cut)
        finally:
            cap.release()
    finally:
        os.unlink(path)
    if not frames:
        raise UploadError(
            f"{name}: unreadable video (no frame decodes; truncated, or a codec without a decoder)"
        )
    notes = []
    if count > decoded:  # the header's count, from a file cut short in a download or a copy
        notes.append(
            f"the video's header says {count} frames but only the first {decoded} decode (the file is "
            "probably truncated): the clip below ends early"
        )
    if not usable:
        fps = None
        notes.append("the video does not give a usable frame rate: set it below")
    steps = None
    if resample:
        steps = model_steps(decoded, fps, model_fps)
        where = {index: i for i, index in enumerate(kept)}
        frames = [frames[where[index]] for index in steps]
        if len(frames) > max_frames:
            raise _too_long(name, f"{len(frames)} frames read", max_frames, model_fps, cut)
        notes.append(
            f"resampled to the model's {model_fps:g} fps as decoded: the {len(steps)} of the video's {decoded} "
            f"frames ({fps:g} fps) that the model reads were kept, each model step the nearest frame"
        )
    stacked = np.stack(frames)
    return FrameClip(
        name,
        stacked,
        model_fps if resample else fps,
        notes + _scaled_note(source, stacked, max_side),
        "video",
        source[::-1],
        source_fps=fps if resample else None,
        source_count=decoded if resample else None,
        source_frames=steps,
    )


#: what makes a zip member's name unsafe (said in the notes and refusals that count them)
_UNSAFE_NAMES = "absolute paths and names with a '..' part"


def _unsafe_name(member: str) -> bool:
    """A zip member named as an absolute path (``/scans/s1.dcm``, ``C:/x``) or with a ``..`` part, in either
    separator: an unpacking tool would write it outside its folder. Such names are left out unread and
    counted; :func:`~shared.files.is_hidden` takes relative names only."""
    parts = member.replace("\\", "/").split("/")
    return member.startswith(("/", "\\")) or bool(re.match(r"[A-Za-z]:", member)) or ".." in parts


def _zip_members(archive: zipfile.ZipFile) -> tuple[list[zipfile.ZipInfo], list[str], list[str]]:
    """The files of ``archive`` to read, and the names of those left out unread: unsafe names
    (:func:`_unsafe_name`), and hidden files (a Mac's ``__MACOSX/`` copies and ``._frame.png`` forks,
    ``.thumbnails/``, Windows' ``Thumbs.db``: :func:`~shared.files.is_hidden`)."""
    files = [info for info in archive.infolist() if not info.is_dir()]
    members, unsafe, hidden = [], [], []
    for info in files:
        if _unsafe_name(info.filename):
            unsafe.append(info.filename)
        elif info.filename.startswith("__MACOSX/") or is_hidden(PurePosixPath(info.filename), PurePosixPath()):
            hidden.append(info.filename)
        else:
            members.append(info)
    return members, unsafe, hidden


def _left_out_notes(unsafe: list[str], hidden: list[str]) -> list[str]:
    """Notes counting the zip members :func:`_zip_members` left out, each kind named for what it is."""
    notes = []
    if unsafe:
        notes.append(
            f"{len(unsafe)} file{'s' if len(unsafe) != 1 else ''} with an unsafe name left out ({_UNSAFE_NAMES}, "
            f"which would unpack outside the zip's folder, e.g. {unsafe[0]})"
        )
    if hidden:
        notes.append(
            f"{len(hidden)} hidden file{'s' if len(hidden) != 1 else ''} left out (names starting with a dot, "
            f"under __MACOSX/ or Windows' Thumbs.db / desktop.ini, e.g. {hidden[0]})"
        )
    return notes


def _folders_note(members: list[zipfile.ZipInfo]) -> list[str]:
    """A note when a zip's frames (in name order) lie in more than one folder: they are read as one clip, one
    folder after the other, which a zip of a dashcam's export (``front/`` and ``rear/``, or one folder per
    drive) does not mean; said with each folder's frame count, not refused (a long drive split into numbered
    folders is one clip)."""
    counts = Counter(str(PurePosixPath(info.filename).parent) for info in members)  # in name order
    if len(counts) < 2:
        return []
    shown = ", ".join(
        f"{n} in {'the top level' if f == '.' else f + '/'}" for f, n in list(counts.items())[:3]
    )
    more = f", and {len(counts) - 3} more folders" if len(counts) > 3 else ""
    note = (
        f"the frames lie in {len(counts)} folders ({shown}{more}), read as one clip, one folder after the "
        "other: if they are separate clips (other cameras, other drives), zip one clip's folder at a time"
    )
    return [note]


def _zip_clip(
    data: bytes, name: str, max_frames: int, max_side: int, model_fps: float | None = None
) -> FrameClip:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise UploadError(f"{name}: not a readable zip archive ({exc})") from None
    with archive:
        members, unsafe, hidden = _zip_members(archive)
        if not members:
            what = "is empty"
            if unsafe or hidden:
                kinds = (
                    (unsafe, "file(s) with unsafe names", _UNSAFE_NAMES),
                    (hidden, "hidden file(s)", "names starting with a dot, __MACOSX/ and Windows' Thumbs.db / desktop.ini"),
                )
                what = "holds only " + " and ".join(
                    f"{len(names)} {kind} ({', '.join(names[:3]) + (', ...' if len(names) > 3 else '')}: {why} are "
                    "not read)"
                    for names, kind, why in kinds
                    if names
                )
            raise UploadError(
                f"{name}: the zip {what}; expected JPEG / PNG / WebP frames, one file per frame"
            )
        # a dashcam's folder carries sidecar files (GPS tracks, JSON, notes): left out and counted, not refused
        others = [m.filename for m in members if not m.filename.lower().endswith(IMAGE_EXTENSIONS)]
        members = [m for m in members if m.filename.lower().endswith(IMAGE_EXTENSIONS)]
        if not members:
            shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
            raise UploadError(
                f"{name}: no JPEG / PNG / WebP frame in the zip ({shown} "
                f"{'is' if len(others) == 1 else 'are'} not an image); expected one image file per frame, "
                "their names in order giving the frame order"
            )
        if len(members) > max_frames:  # its frame rate is set once it is read: every frame counts
            raise _too_long(
                name,
                f"{len(members)} frames",
                max_frames,
                model_fps,
                "a zip's frames are all read, so keep the frames before the event (or every third of a 30 fps "
                "clip), or upload the video: a faster one is resampled to the model's rate as it is decoded",
            )
        total = sum(m.file_size for m in members)
        if total > MAX_VOLUME_BYTES:
            raise UploadError(
                f"{name}: the frames unpack to {_mb(total)}; the limit is {_mb(MAX_VOLUME_BYTES)}"
            )
        members.sort(key=lambda m: natural_key(m.filename))
        # each frame's conversions, counted over the clip ("12 of 20 frames converted from grayscale, e.g.
        # f000.png"): a note of the first frame alone would hide a zip of mixed grey / colour or 16-bit frames
        kinds = (
            ("grayscale image converted", "converted from grayscale to RGB"),
            ("16-bit image rescaled", "rescaled from 16 to 8 bits, each by its own value range"),
            ("the alpha", "had their alpha (transparency) channel dropped"),
            ("rotated upright", "rotated upright from their EXIF orientation"),
        )
        converted: dict[str, list[str]] = {}  # what was done -> the frames it was done to, in order
        frames, notes, first = [], [], None
        for info in members:
            where = f"{name}: {info.filename}"
            try:
                raw = archive.read(info)
            except (zipfile.BadZipFile, zlib.error, OSError, RuntimeError, NotImplementedError) as exc:
                # RuntimeError: encrypted member; NotImplementedError: a compression method zipfile lacks
                raise UploadError(f"{where}: cannot be read from the zip ({exc})") from None
            # empty: check_size says so
            if raw and detect_format(raw, info.filename) not in ("png", "jpeg", "webp"):
                raise UploadError(
                    f"{where}: not a readable image; its content is not PNG, JPEG or WebP data (whatever "
                    "its name says): the zip must hold only JPEG / PNG / WebP frames"
                )
            image = decode_rgb_image(raw, where, max_pixels=MAX_CLIP_FRAME_PIXELS)
            for note in image.notes:
                done = next((text for start, text in kinds if note.startswith(start)), note)
                converted.setdefault(done, []).append(info.filename)
            if first is None:
                first = (info.filename, image.image.shape)
                source = image.image.shape[:2]
            elif image.image.shape != first[1]:
                h, w = image.image.shape[:2]
                raise UploadError(
                    f"{where} is {w}x{h} but the first frame {first[0]} is {first[1][1]}x{first[1][0]}; all "
                    "frames of a clip must share one size"
                )
            frames.append(_shrink(image.image, max_side))  # shrunk as decoded
    notes.extend(
        f"{len(names)} of {len(frames)} frames {done}, e.g. {names[0]}" for done, names in converted.items()
    )
    notes.append(f"{len(frames)} frames in name order ({members[0].filename} ... {members[-1].filename})")
    notes += _folders_note(members)
    notes += _left_out_notes(unsafe, hidden)
    if others:
        notes.append(
            f"{len(others)} file{'s' if len(others) != 1 else ''} not a JPEG / PNG / WebP frame left out "
            f"(e.g. {others[0]})"
        )
    stacked = np.stack(frames)
    return FrameClip(name, stacked, None, notes + _scaled_note(source, stacked, max_side), "zip", source[::-1])


# ------------------------------------------------------------------------------------------ medical files


def decode_medical(
    data: bytes,
    name: str,
    max_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = MAX_PIXELS,
    percentiles: tuple[float, float] = PERCENTILES,
) -> MedicalVolume:
    """PNG / JPEG, DICOM (a file, or a zip of one series' slices) or NIfTI -> :class:`MedicalVolume` (display
    orientation, intensity window noted). A DICOM's or NIfTI's window: its ``percentiles`` (those the model
    was trained with: :func:`domains.medical.volumes.trained_percentiles`); a PNG / JPEG's: its value range."""
    check_size(data, name, max_bytes)
    fmt = detect_format(data, name)
    if fmt in ("png", "jpeg"):
        return _medical_raster(data, name, fmt, max_pixels)
    if fmt == "dicom":
        return _medical_dicom(data, name, max_pixels, percentiles)
    if fmt in ("nifti", "nifti_gz"):
        return _medical_nifti(data, name, fmt == "nifti_gz", max_pixels, percentiles)
    if fmt == "gzip":
        raise UploadError(f"{name}: a gzip file that is not named .nii.gz; only gzipped NIfTI is supported")
    if fmt == "webp":  # no medical data set or reader here takes WebP (lossy by default): not guessed at
        raise UploadError(
            f"{name}: a WebP image; the medical page reads PNG / JPEG images, DICOM and NIfTI (save the "
            "image as PNG)"
        )
    if zipfile.is_zipfile(io.BytesIO(data)):  # a CT series as it usually arrives: one DICOM file per slice
        return _dicom_series(data, name, max_pixels, percentiles)
    accepted = (
        "a PNG / JPEG image, a DICOM file (.dcm), a zip of one DICOM series or a NIfTI volume (.nii / .nii.gz)"
    )
    raise _not_as_named(name, MEDICAL_EXTENSIONS, accepted) or UploadError(
        f"{name}: unsupported file type; upload {accepted}"
    )


def _medical_raster(data: bytes, name: str, fmt: str, max_pixels: int) -> MedicalVolume:
    array, notes = _decode_raster(data, name, fmt, max_pixels)
    if array.ndim == 3:
        channels = array.shape[2]
        if channels not in (3, 4):
            raise UploadError(f"{name}: {channels} channels; expected a grayscale, RGB or RGBA image")
        if channels == 4:
            notes.append("the alpha (transparency) channel was dropped")
        colour = array[..., :3]
        if (colour == colour[..., :1]).all():
            array = colour[..., 0]
        else:
            notes.append("colour image converted to grayscale (the models read one channel)")
            array = cv2.cvtColor(np.ascontiguousarray(colour), cv2.COLOR_BGR2GRAY)
    if array.dtype == np.uint16:
        lo, hi = float(array.min()), float(array.max())
        notes.append(f"16-bit image: intensities {lo:.0f}..{hi:.0f} rescaled to 0..1")
    else:  # 8-bit as the LIDC PNGs the models learnt from: value / 255
        lo, hi = 0.0, 255.0
    return MedicalVolume(name, fmt.upper(), array[None, None], lo, hi, notes)


def _window_from_percentiles(
    data: np.ndarray, percentiles: tuple[float, float] = PERCENTILES
) -> tuple[float, float]:
    """The ``percentiles`` (0.5 / 99.5 by default) of (a subsample of) the data: robust to a few extreme
    voxels. The subsample is taken through ``flat``, not a reshape: the data is a transposed view of the
    volume, and reshaping it copied the whole volume (512 MB for one at the limit) to keep every 64th
    voxel."""
    data = np.asarray(data)
    step = max(1, data.size // 2_000_000)
    sample = data.flat[::step].astype(np.float64)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.0, 1.0
    lo, hi = percentile_window(sample, percentiles)  # the CLI's window, on a subsample
    if hi <= lo:
        lo, hi = float(sample.min()), float(sample.max())
    return float(lo), float(hi)


def _check_window(name: str, window: tuple[float, float], what: str) -> None:
    """An UploadError naming the file where its intensity ``window`` (``what``: which) cannot map it to 0..1:
    not finite as float32, or beyond any scan's intensities (a 'no data' fill such as -1e30 showed every
    tissue as one grey, and the model was fed it): :func:`domains.medical.volumes.window_problem`."""
    if problem := window_problem(*window, f"intensity window ({what})"):
        raise UploadError(
            f"{name}: {problem}; set its 'no data' voxels to the background value (e.g. -1024 for CT) or fix its "
            "intensity scaling, then upload it again"
        )


def _percentiles_text(percentiles: tuple[float, float]) -> str:
    return f"{percentiles[0]:g}-{percentiles[1]:g} percentiles"


def _range_text(lo: float, hi: float) -> str:
    """``lo..hi`` in one format whatever the data type: whole numbers as such, others with as many decimals as
    three significant digits of the span need (a float volume's percentiles read -1044.79..84.3924 beside an
    integer one's -1044..84: now -1045..84; a 0..1 MRI's 0.005..0.995)."""
    span = hi - lo
    if not (math.isfinite(span) and span > 0):
        return f"{lo:g}..{hi:g}"
    whole = float(lo).is_integer() and float(hi).is_integer()
    decimals = 0 if whole else min(6, max(0, 2 - math.floor(math.log10(span))))
    return f"{lo:.{decimals}f}..{hi:.{decimals}f}"


#: voxels tested at a time by :func:`_non_finite_note`
_CHUNK_VOXELS = 1 << 20


def _non_finite_note(values: np.ndarray) -> list[str]:
    """A note counting NaN / infinite voxels (float data only), which ``MedicalVolume.slice`` shows as the
    window's ends: the models would otherwise turn them into NaN probabilities or a sampling error."""
    if values.dtype.kind != "f":
        return []
    # a chunk at a time, in memory order (views of any layout, no copy): np.isfinite over the whole volume
    # allocated a byte per voxel (128 MB for a float32 one at the limit)
    flags = ["external_loop", "buffered", "zerosize_ok"]
    chunks = np.nditer(values, flags=flags, buffersize=_CHUNK_VOXELS, order="K")
    count = sum(int(chunk.size - np.count_nonzero(np.isfinite(chunk))) for chunk in chunks)
    if not count:
        return []
    note = (
        f"{count:,} of {values.size:,} voxels are NaN or infinite: shown as the window's low (NaN, -inf) or "
    )
    return [note + "high (+inf) end"]


def _read_dicom(data: bytes, name: str, budget: int | None = None):
    """(pydicom's data set of ``data`` (a file without the 128-byte preamble read by force), the bytes its
    data set unpacked to if deflated, else 0: the data set holds them), or UploadError. A deflated one is
    refused before pydicom inflates it if it unpacks to more than ``budget`` (default: the limit; a zip's
    slices share it), any one before its pixel data is read if its header declares more than the limit to hold
    (:func:`_check_dicom_size`)."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.filereader import read_dataset

    limit = MAX_VOLUME_BYTES if budget is None else budget
    deflated = _deflated_data_set(data)
    inflated = 0 if deflated is None else _inflated_size(deflated, limit)
    if inflated > limit:
        left = "the limit"
        if budget is not None:
            left = f"what the zip's other files leave of the {_mb(MAX_VOLUME_BYTES)} limit"
        raise UploadError(
            f"{name}: the deflated DICOM data unpacks to more than {_mb(limit)}, {left} (crop or downsample "
            "it first)"
        )
    force = data[128:132] != b"DICM"

    def read(stop_before_pixels: bool):
        try:
            if stop_before_pixels and deflated is not None:  # pydicom inflates it whole first
                return read_dataset(_Inflating(deflated), False, True, stop_when=_at_pixel_data)
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=stop_before_pixels, force=force)
        except InvalidDicomError as exc:
            raise UploadError(f"{name}: not a valid DICOM file ({exc})") from None
        except Exception as exc:  # noqa: BLE001 - truncated / corrupt files raise many kinds
            raise UploadError(
                f"{name}: the DICOM file is corrupt or truncated ({type(exc).__name__}: {exc})"
            ) from None
        # pydicom keeps the buffer it read from, for a deflated file the whole data set inflated beside the
        # elements read from it (its pixel data twice); nothing reads it again
        ds.buffer = None
        return ds

    # the header first: its declared size is checked before the pixel data is read (a deflated data set of 480
    # MB, inflated whole and its pixel data read out of it, peaked at 974 MB before its size was checked)
    _check_dicom_size(read(stop_before_pixels=True), name, inflated)
    return read(stop_before_pixels=False), inflated


def _at_pixel_data(tag, vr, length) -> bool:
    """Where a DICOM header ends: its pixel data element (float, double float or integer values)."""
    return tag in (0x7FE00008, 0x7FE00009, 0x7FE00010)


def _check_dicom_size(ds, name: str, inflated: int = 0) -> None:
    """Refuse a DICOM whose header declares more than ``MAX_VOLUME_BYTES`` to hold: every sample counted as
    float32, the values' type (a colour frame is converted in float32), and ``inflated``, a deflated data
    set's bytes, which pydicom keeps as the frames decode (8 of 4096x4096 peaked at 1.5 GB)."""
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    frames, samples = _dicom_frames(ds, name), int(ds.get("SamplesPerPixel", 1) or 1)
    declared = _frames_text(frames, rows, cols, samples)
    if inflated:
        declared += f", beside its deflated data unpacked ({_mb(inflated)})"
    _check_volume(name, declared, rows * cols * frames * samples * 4 + inflated)


def _deflated_data_set(data: bytes) -> memoryview | None:
    """The deflated data set of a DICOM file in Deflated Explicit VR Little Endian (its file meta, group 0002,
    is never deflated); None for any other file, and for a file meta pydicom cannot parse (it says why)."""
    from pydicom.filereader import read_dataset
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    if data[128:132] != b"DICM":
        return None
    stream = io.BytesIO(data)
    stream.seek(132)
    try:
        meta = read_dataset(stream, False, True, stop_when=lambda tag, vr, length: tag >> 16 != 2)
        deflated = meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian
    except Exception:  # noqa: BLE001 - pydicom says what is wrong with it
        return None
    return memoryview(data)[stream.tell() :] if deflated else None


def _inflated(deflated: memoryview) -> Iterator[bytes]:
    """A deflated data set inflated a chunk (``_CHUNK_VOXELS`` bytes at most) at a time, fed a chunk at a
    time: zlib copies the input it leaves over at every call (a whole upload's each time). zlib.error where it
    is corrupt, ValueError where it ends early."""
    inflate = zlib.decompressobj(wbits=-zlib.MAX_WBITS)
    for start in range(0, len(deflated), _CHUNK_VOXELS):
        piece = deflated[start : start + _CHUNK_VOXELS]
        while piece and not inflate.eof:
            yield inflate.decompress(piece, _CHUNK_VOXELS)
            piece = inflate.unconsumed_tail
    yield inflate.flush()
    if not inflate.eof:
        raise ValueError("the deflated data set ends early (truncated)")


def _inflated_size(deflated: memoryview, limit: int) -> int:
    """The bytes a deflated DICOM data set unpacks to, counted a chunk at a time with nothing kept, no further
    than past ``limit``. pydicom inflates such a data set whole before any element can be read: counted first,
    a small file cannot unpack to gigabytes (a 50 MB upload to 50 GB). Corrupt data is left to pydicom."""
    size = 0
    try:
        for chunk in _inflated(deflated):
            size += len(chunk)
            if size > limit:
                break
    except (zlib.error, ValueError):
        pass  # pydicom names the corruption
    return size


class _Inflating:
    """A deflated DICOM data set as a file (the ``read`` / ``seek`` / ``tell`` pydicom's reader uses) inflated
    only as far as it is read, kept from its start (pydicom seeks back within an element), so its header reads
    without its pixel data inflated. Written here: zlib has no file object for raw deflate data (gzip's reads
    its own container)."""

    def __init__(self, deflated: memoryview):
        self._chunks, self._out, self._pos = _inflated(deflated), bytearray(), 0

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence not in (io.SEEK_SET, io.SEEK_CUR):
            raise io.UnsupportedOperation("a deflated data set is not sought from its end")
        self._pos = offset + (self._pos if whence == io.SEEK_CUR else 0)
        return self._pos

    def read(self, size: int = -1) -> bytes:
        end = self._pos + size if size >= 0 else None
        while end is None or len(self._out) < end:
            chunk = next(self._chunks, None)
            if chunk is None:  # the end of the data set
                break
            self._out += chunk
        with memoryview(self._out) as kept:  # one copy out of what is kept
            part = bytes(kept[self._pos : end])
        self._pos += len(part)
        return part


def _dicom_frames(ds, name: str) -> int:
    """NumberOfFrames (1 where absent, empty or 0), or an UploadError naming it where it is not a whole number
    (``x1 1`` raised a bare ValueError from ``int``)."""
    value = ds.get("NumberOfFrames") or 1
    try:
        frames = int(value)
    except (TypeError, ValueError):
        frames = -1
    if frames < 1:
        raise UploadError(
            f"{name}: the DICOM's NumberOfFrames is {str(value)!r}; expected a whole number of frames, 1 or more"
        )
    return frames


def _number(value) -> float | None:
    """A header value as a finite float, or None where it is absent or not a number (a WindowWidth ``abcd``)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _dicom_values(ds, name: str, max_pixels: int, notes: list[str]) -> np.ndarray:
    """A DICOM object's frames (F, rows, cols) as float32 in the modality's units (Hounsfield for CT):
    colour to grey, the rescale slope / intercept applied (an enhanced object's from its functional groups).
    Its size was checked as it was read (:func:`_read_dicom`)."""
    from pydicom.pixels import apply_modality_lut, iter_pixels

    if "PixelData" not in ds:
        raise UploadError(
            f"{name}: the DICOM file holds no image (no PixelData element: truncated, or not an image object)"
        )
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    _check_pixels(rows, cols, name, max_pixels)
    frames, samples = _dicom_frames(ds, name), int(ds.get("SamplesPerPixel", 1) or 1)
    if samples not in (1, 3):
        raise UploadError(f"{name}: DICOM with {samples} samples per pixel is not supported")
    if samples == 3:
        notes.append("colour DICOM converted to grayscale")
    slope, intercept = _dicom_value(ds, "RescaleSlope"), _dicom_value(ds, "RescaleIntercept")

    def grey(frame: np.ndarray) -> np.ndarray:
        if samples == 1:
            return frame
        return cv2.cvtColor(np.ascontiguousarray(frame).astype(np.float32), cv2.COLOR_RGB2GRAY)

    def rescaled(frame: np.ndarray) -> np.ndarray:
        if "RescaleSlope" not in ds and slope is not None:  # an enhanced (multi-frame) object's functional group
            return frame.astype(np.float32) * float(slope) + float(intercept or 0.0)
        return apply_modality_lut(frame, ds)

    # decoded a frame at a time (ds.pixel_array decodes the whole object and keeps it on the data set) into
    # float32, rescaled a block of rows at a time: apply_modality_lut rescales in float64 (a whole 8-frame
    # 4096x4096 object peaked at 2.4 GB that way)
    values = np.empty((frames, rows, cols), np.float32)
    block = max(1, _CHUNK_VOXELS // max(1, cols))

    def fill(rescale: bool) -> None:
        decoded = iter_pixels(ds)
        for k in range(frames):
            try:
                frame = grey(next(decoded))
            except Exception as exc:  # noqa: BLE001 - missing codec, bad length, ...
                syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
                syntax = getattr(syntax, "name", str(syntax)) if syntax is not None else "unknown"
                raise UploadError(
                    f"{name}: cannot decode the DICOM pixel data (transfer syntax: {syntax}); the file may "
                    "be truncated or use a compression without an installed decoder "
                    f"({type(exc).__name__}: {exc})"
                ) from None
            for top in range(0, rows, block):
                part = frame[top : top + block]
                values[k, top : top + block] = rescaled(part) if rescale else part

    try:
        fill(rescale=True)
    except UploadError:
        raise
    except Exception:  # noqa: BLE001 - a malformed rescale: decoded again, stored values kept, said
        notes.append("the DICOM rescale slope / intercept could not be applied: stored values used")
        fill(rescale=False)
    return values


def _frames_text(frames: int, rows: int, cols: int, samples: int) -> str:
    """``8 frames of 4096x4096 pixels, 3 samples each, as float32``: a DICOM's declared size, for
    :func:`_check_volume`."""
    each = f", {samples} samples each" if samples != 1 else ""
    return f"{frames} frame{'s' * (frames != 1)} of {cols}x{rows} pixels{each}, as float32"


def _dicom_volume(
    ds, name: str, values: np.ndarray, notes: list[str], place, fmt: str = "DICOM", percentiles=PERCENTILES
) -> MedicalVolume:
    """The :class:`MedicalVolume` of DICOM ``values`` (F, rows, cols) with ``ds``'s header (its first slice's
    for a series). The models' input is scaled by the ``percentiles`` (0.5-99.5 by default), as training and
    NIfTI uploads are: the file's own display window (WindowCenter / WindowWidth) fed the models a scanner's
    viewing choice (the same slice, a 440-pixel mask unwindowed, 483 at 40/400, 855 at -600/1500), so it is
    named and not used. ``place(notes)``: where the slices lie (:class:`NiftiGrid`), or None."""
    lo, hi = _window_from_percentiles(values, percentiles)
    _check_window(name, (lo, hi), _percentiles_text(percentiles))
    scaled = f"{_percentiles_text(percentiles)}, as a NIfTI's"
    notes.append(f"intensities {_range_text(lo, hi)} ({scaled}) mapped to 0..1")
    stated = _dicom_value(ds, "WindowCenter"), _dicom_value(ds, "WindowWidth")
    centre, width = (_number(v) for v in stated)
    if centre is not None and width is not None and width >= 1:  # the standard's smallest width
        notes[-1] += (
            f"; the file's DICOM window (centre {centre:g}, width {width:g}) is a display choice and was not used"
        )
    else:
        bad = f" (its window width {width:g} is no window)" if width is not None and width < 1 else ""
        if any(v is not None and n is None for v, n in zip(stated, (centre, width))):  # not numbers (``abcd``)
            bad = f" (its window, centre {stated[0]!s}, width {stated[1]!s}, is not numbers)"
        notes[-1] = f"no DICOM window{bad}: " + notes[-1]
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        # mirrored within the window (the percentiles of the mirrored values are the same), so the slice shows
        # 1 - (the scaled value), as a MONOCHROME1 viewer does
        np.subtract(hi + lo, values, out=values)  # in place: a second volume would pass the limit
        notes.append("MONOCHROME1 (white = low) inverted to the usual grey scale")
    notes += _non_finite_note(values)
    if _dicom_frames(ds, name) > 1:
        notes.append(f"multi-frame DICOM: {values.shape[0]} frames (use the slice slider)")
    said = len(notes)
    spacing = _spacing(_dicom_value(ds, "PixelSpacing", first=False) or ds.get("ImagerPixelSpacing"), notes)
    if spacing is None and len(notes) == said:
        notes.append("the DICOM states no pixel size: the mm window cannot be offered")
    elif spacing is None:  # an invalid one, named by _spacing
        notes[-1] += "; the mm window cannot be offered"
    return MedicalVolume(name, fmt, values[None], lo, hi, notes, spacing, nifti_grid=place(notes))


def _medical_dicom(data: bytes, name: str, max_pixels: int, percentiles=PERCENTILES) -> MedicalVolume:
    ds = _read_dicom(data, name)[0]
    notes: list[str] = []
    values = _dicom_values(ds, name, max_pixels, notes)

    def place(notes: list[str]) -> NiftiGrid | None:
        return _dicom_grid(ds) if len(values) == 1 else _multiframe_grid(ds, len(values), notes)

    return _dicom_volume(ds, name, values, notes, place, percentiles=percentiles)


def _dicom_series(data: bytes, name: str, max_pixels: int, percentiles=PERCENTILES) -> MedicalVolume:
    """A zip of one DICOM series' single-frame slices (a CT series: a file a slice) as a volume, its slices in
    order along the slice normal (ImagePositionPatient on the cross product of ImageOrientationPatient's row
    and column directions, as dcm2niix orders them), placed as a multi-frame object's frames are. Refused,
    saying why, where the files are not one series' slices or share a place; other files are left out, counted."""
    advice = (
        "a zip is read as one DICOM series, one .dcm file per slice: upload one slice (.dcm), or convert the "
        "series to NIfTI (e.g. `dcm2niix`)"
    )
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members, unsafe, hidden = _zip_members(archive)
        unpacked = sum(info.file_size for info in members)  # a deflated slice: its unpacked size, once read
        if unpacked > MAX_VOLUME_BYTES:
            raise UploadError(f"{name}: the zip unpacks to more than {_mb(MAX_VOLUME_BYTES)}; too much for the demo")
        slices, infos, others = [], [], []
        for info in sorted(members, key=lambda m: natural_key(m.filename)):
            try:
                raw = archive.read(info)
            except (zipfile.BadZipFile, zlib.error, OSError, RuntimeError, NotImplementedError) as exc:
                raise UploadError(f"{name}: {info.filename}: cannot be read from the zip ({exc})") from None
            ds = None
            if detect_format(raw, info.filename) == "dicom":
                # every slice's header is kept until the volume is built: deflated ones share the limit (each
                # alone under it, 100 of them unpacked to 50 GB)
                budget = MAX_VOLUME_BYTES - unpacked + info.file_size
                ds, inflated = _read_dicom(raw, f"{name}: {info.filename}", budget)
                unpacked += max(0, inflated - info.file_size)
            if ds is None or "PixelData" not in ds:  # a DICOMDIR, a report, a README: no slice
                others.append(info.filename)
            else:
                # read again as its slice of the volume fills: every slice's pixel data kept meanwhile took
                # as much again as the stored volume (128 MB beside a 256 MB one)
                del ds.PixelData
                slices.append((info.filename, ds))
                infos.append(info)
    left_out = _left_out_notes(unsafe, hidden)
    if not slices:
        raise UploadError(f"{name}: the zip holds no DICOM image; {''.join(n + '; ' for n in left_out)}{advice}")
    first, ds0 = slices[0]
    for key in ("SeriesInstanceUID", "Rows", "Columns", "PixelSpacing", "ImageOrientationPatient", "NumberOfFrames"):
        for member, ds in slices[1:]:
            if str(ds.get(key)) != str(ds0.get(key)):
                raise UploadError(
                    f"{name}: {member} and {first} differ in {key} ({ds.get(key)} vs {ds0.get(key)}): not the "
                    f"slices of one series; {advice}"
                )
    if _dicom_frames(ds0, f"{name}: {first}") > 1:
        raise UploadError(f"{name}: its DICOM files are multi-frame objects; upload one of them alone")
    rows, cols = int(ds0.get("Rows", 0) or 0), int(ds0.get("Columns", 0) or 0)
    samples = int(ds0.get("SamplesPerPixel", 1) or 1)
    # compressed pixel data unpacks past the zip's sizes
    _check_volume(name, _frames_text(len(slices), rows, cols, samples), rows * cols * len(slices) * samples * 4)
    try:
        directions = np.asarray(ds0.ImageOrientationPatient, float).reshape(2, 3)
        places = np.asarray([ds.ImagePositionPatient for _, ds in slices], float).reshape(len(slices), 3)
    except (AttributeError, TypeError, ValueError):
        raise UploadError(
            f"{name}: its files do not all state ImagePositionPatient and ImageOrientationPatient, so the slices "
            f"cannot be put in order; {advice}"
        ) from None
    depth = places @ np.cross(directions[0], directions[1])
    order = np.argsort(depth, kind="stable")
    if len(slices) > 1 and np.diff(depth[order]).min() < 1e-3:
        k = int(np.argmin(np.diff(depth[order])))
        raise UploadError(
            f"{name}: {slices[order[k]][0]} and {slices[order[k + 1]][0]} lie at the same place: not the slices of "
            f"one series (two series, or repeated acquisitions); {advice}"
        )
    notes: list[str] = []
    values = np.empty((len(slices), rows, cols), np.float32)  # filled a slice at a time: no second copy
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for i, k in enumerate(order):
            where = f"{name}: {slices[k][0]}"
            ds = _read_dicom(archive.read(infos[k]), where)[0]  # read whole again, kept for its slice only
            values[i : i + 1] = _dicom_values(ds, where, max_pixels, notes)
    notes = list(dict.fromkeys(notes))  # a note per kind, not per slice
    names = f"{slices[order[0]][0]} ... {slices[order[-1]][0]}"
    notes.insert(0, f"DICOM series: {len(slices)} slices in order along the slice normal ({names}; the slice slider)")
    if others:
        notes.append(f"{len(others)} file{'s' * (len(others) != 1)} without a DICOM image left out (e.g. {others[0]})")
    notes += left_out

    def place(notes: list[str]) -> NiftiGrid | None:
        return _dicom_grid(ds0) if len(slices) == 1 else _stack_grid(ds0, places[order], notes, "slices")

    return _dicom_volume(ds0, name, values, notes, place, "DICOM series", percentiles)


#: DICOM's patient axes (LPS) to NIfTI's (RAS)
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _dicom_grid(ds) -> NiftiGrid | None:
    """Where a single-frame DICOM's pixels lie in the patient, from ImagePositionPatient, ImageOrientationPatient
    and PixelSpacing (nibabel's DICOM wrapper: (row, column, slice) -> LPS mm; RAS for NIfTI), so its mask goes
    out as a NIfTI that a viewer places on the series; None where the header does not say."""
    with warnings.catch_warnings():  # nibabel.nicom warns on import that its readers are experimental, on the
        # server's console at every DICOM upload; its single-frame wrapper's affine is all that is used here
        warnings.filterwarnings("ignore", "The DICOM readers are highly experimental", UserWarning)
        from nibabel.nicom.dicomwrappers import wrapper_from_data

    try:
        lps = wrapper_from_data(ds).affine
    except Exception:  # noqa: BLE001 - WrapperError: a position, orientation or pixel size missing or odd
        return None
    return NiftiGrid(1, _LPS_TO_RAS @ lps, None, None)


def _multiframe_grid(ds, frames: int, notes: list[str]) -> NiftiGrid | None:
    """Where an enhanced (multi-frame) DICOM's frames lie, as stored: each frame's ImagePositionPatient
    (PlanePositionSequence per frame) placed by :func:`_stack_grid`. Written here, not through nibabel: its
    multi-frame wrapper is marked experimental and sorts the frames by their dimension indices, while the page
    shows them as stored."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    try:
        places = np.asarray(
            [item.PlanePositionSequence[0].ImagePositionPatient for item in per_frame], float
        ).reshape(len(per_frame), 3)
    except (AttributeError, IndexError, TypeError, ValueError):  # absent, or not numbers of the right count
        return None
    return _stack_grid(ds, places, notes, "frames") if len(places) == frames else None


def _stack_grid(ds, places: np.ndarray, notes: list[str], what: str) -> NiftiGrid | None:
    """The (row, column, k) -> LPS affine of :func:`_dicom_grid` for a stack of ``places`` (K, 3), the
    ImagePositionPatient of each of its frames or slices in the page's order, with the shared
    ImageOrientationPatient and PixelSpacing and the step between them as its third column. None (said in a
    note where the header places them) unless they are evenly spaced, which one affine needs."""
    try:
        rows_cols = np.asarray(_dicom_value(ds, "ImageOrientationPatient", first=False), float).reshape(2, 3)
        row_mm, col_mm = (float(v) for v in _dicom_value(ds, "PixelSpacing", first=False))
    except (TypeError, ValueError):  # absent, or not numbers of the right count
        return None
    frames = len(places)
    if frames < 2 or min(row_mm, col_mm) <= 0:
        return None
    step = places[1] - places[0]
    spread = np.abs(places - (places[0] + np.arange(frames)[:, None] * step)).max()
    if np.linalg.norm(step) < 1e-3 or spread > max(1e-3, 0.01 * np.linalg.norm(step)):
        notes.append(
            f"the DICOM's {what} are not evenly spaced along one direction (repeated or uneven positions): no "
            "NIfTI mask is offered, as no one affine places them"
        )
        return None
    lps = np.eye(4)
    lps[:3, 0] = rows_cols[1] * row_mm  # down a column: the column direction, one row's spacing
    lps[:3, 1] = rows_cols[0] * col_mm  # along a row
    lps[:3, 2] = step
    lps[:3, 3] = places[0]
    return NiftiGrid(1, _LPS_TO_RAS @ lps, None, None)


#: where an enhanced (multi-frame) DICOM keeps what a single-frame one has at its top level
_FUNCTIONAL_GROUP = {
    "PixelSpacing": "PixelMeasuresSequence",
    "ImageOrientationPatient": "PlaneOrientationSequence",
    "RescaleSlope": "PixelValueTransformationSequence",
    "RescaleIntercept": "PixelValueTransformationSequence",
    "WindowCenter": "FrameVOILUTSequence",
    "WindowWidth": "FrameVOILUTSequence",
}


def _dicom_value(ds, keyword: str, first: bool = True):
    """``keyword`` at the data set's top level, else in its shared (then first frame's) functional group, as an
    enhanced CT / MR object stores it; None if absent. ``first``: the first of a multi-valued element (a window
    list), else the element's value as it is (a pixel spacing pair)."""
    value = ds.get(keyword)
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        if value is not None:
            break
        found = [
            item.get(keyword)
            for group in (ds.get(groups) or [])
            for item in (group.get(_FUNCTIONAL_GROUP[keyword]) or [])[:1]
        ]
        # per frame: only a value every frame shares (frames of their own rescale are not one scale)
        if found and all(str(v) == str(found[0]) for v in found):
            value = found[0]
    if first and value is not None and not isinstance(value, (str, bytes)) and hasattr(value, "__len__"):
        value = value[0] if len(value) else None
    return value


#: in-plane pixel sizes (mm) taken from a header: outside, the value is more likely a unit mix-up than a scan
#: (a 0.01 mm "CT pixel" would make the 64 mm window 6,400 pixels wide)
PLAUSIBLE_PIXEL_MM = (0.05, 10.0)


def _spacing(values, notes: list[str], scale: float = 1.0) -> tuple[float, float] | None:
    """(row, column) mm per pixel from a header's two values times ``scale`` (its unit in mm), noted; None
    when absent, or (said in a note, naming the values) not positive or outside :data:`PLAUSIBLE_PIXEL_MM`."""
    try:
        rows, cols = (float(v) * scale for v in values)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(rows) and math.isfinite(cols) and rows > 0 and cols > 0):
        notes.append(f"the header's pixel size, {cols:g} x {rows:g} mm, is no size (not positive): ignored")
        return None
    low, high = PLAUSIBLE_PIXEL_MM
    if not (low <= rows <= high and low <= cols <= high):
        notes.append(
            f"the header's pixel size, {cols:g} x {rows:g} mm, is not a CT's ({low:g}-{high:g} mm): ignored"
        )
        return None
    notes.append(f"pixels {cols:g} x {rows:g} mm (from the header)")
    return rows, cols


def _gunzipped_size(data: bytes, name: str, limit: int = MAX_VOLUME_BYTES) -> int:
    """The bytes a gzip decompresses to, counted a chunk at a time with nothing kept (the file is then read as
    a stream): a gzip bomb, corrupt or truncated data is refused before anything is allocated."""
    size = 0
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            while chunk := stream.read(_CHUNK_VOXELS):
                size += len(chunk)
                if size > limit:
                    raise UploadError(
                        f"{name}: the volume decompresses to more than {_mb(limit)}; too large for the demo"
                    )
    except EOFError:
        raise UploadError(f"{name}: the gzip data is truncated") from None
    except (OSError, zlib.error) as exc:
        raise UploadError(f"{name}: the gzip data is corrupt or truncated ({exc})") from None
    return size


def _nifti_values(
    stream, shape: tuple[int, ...], stored: np.dtype, held: np.dtype, slope: float, inter: float
) -> np.ndarray:
    """A NIfTI's voxels read from ``stream`` (at its data offset) a chunk at a time into the array held, in
    the file's (Fortran) order: the file decompressed whole beside its voxels peaked at 1.06 GB for a 510 MB
    volume. Held as ``held`` (float32 for floating-point or scaled data), scaled by ``slope`` / ``inter`` in
    float32: nibabel scales in float64 even for ``get_fdata(dtype=np.float32)`` (a 128 MB uint8 volume with
    scl_slope 2 peaked at 2.3 GB)."""
    values = np.empty(shape, held, order="F")
    flat = values.reshape(-1, order="F")  # a view: the array is Fortran-contiguous
    chunk = bytearray(_CHUNK_VOXELS * stored.itemsize)
    for start in range(0, flat.size, _CHUNK_VOXELS):
        part = flat[start : start + _CHUNK_VOXELS]
        read = memoryview(chunk)[: part.size * stored.itemsize]
        if stream.readinto(read) != len(read):
            raise EOFError("the voxel data ends early")  # the size was checked: a stream that lied
        if (slope, inter) == (1.0, 0.0):
            part[...] = np.frombuffer(read, stored)
        else:
            np.multiply(np.frombuffer(read, stored), np.float32(slope), out=part, casting="unsafe")
            part += np.float32(inter)
    return values


def _medical_nifti(
    data: bytes, name: str, gz: bool, max_pixels: int, percentiles: tuple[float, float] = PERCENTILES
) -> MedicalVolume:
    import nibabel as nib

    # a gzip is read as a stream, decompressed as its voxels fill the array: never whole beside them
    size = _gunzipped_size(data, name) if gz else len(data)
    with gzip.GzipFile(fileobj=io.BytesIO(data)) if gz else io.BytesIO(data) as stream:
        version = _nifti_version(stream.read(540))
        if not version:
            raise UploadError(f"{name}: not a NIfTI-1 / NIfTI-2 file (header magic missing)")
        cls = nib.Nifti1Image if version == 1 else nib.Nifti2Image
        try:
            stream.seek(0)
            header = cls.header_class.from_fileobj(stream)
            shape, stored = header.get_data_shape(), header.get_data_dtype()
            scaling = header.get_slope_inter()
            offset = int(header.get_data_offset())
            affine_problem = nonfinite_affine_problem(header.get_best_affine(), header.get_zooms()[:3])
            shown = None if affine_problem else _nifti_shown_slice(header)
        except Exception as exc:  # noqa: BLE001 - bad header fields
            raise UploadError(
                f"{name}: the NIfTI file is corrupt or truncated ({type(exc).__name__}: {exc})"
            ) from None
        if affine_problem:  # nibabel's reorientation failed on it as "SVD did not converge"
            raise UploadError(f"{name}: {affine_problem}")
        if stored.fields is not None or stored.kind not in "iufb":
            raise UploadError(f"{name}: NIfTI data type {stored} is not supported (scalar volumes only)")
        # held as stored, integers unscaled; floating-point or scaled (scl_slope / scl_inter) data as float32
        scaled = scaling not in ((None, None), (1.0, 0.0))
        held = np.dtype(np.float32) if scaled or stored.kind == "f" else stored
        voxels = math.prod(int(n) for n in shape)
        declared = f"{'x'.join(map(str, shape))} voxels of {stored.name}" + (
            f", held as {held.name}" if held != stored else ""
        )
        _check_volume(name, declared, voxels * held.itemsize)
        if shown is not None:  # from the header: a 49-megapixel slice was refused only once decoded
            _check_pixels(*shown, name, max_pixels)
        if size - offset < voxels * stored.itemsize:  # before the array is allocated
            raise UploadError(
                f"{name}: the NIfTI file is corrupt or truncated (its header declares "
                f"{voxels * stored.itemsize:,} bytes of voxels from byte {offset}; the file has "
                f"{max(0, size - offset):,})"
            )
        try:
            stream.seek(offset)
            values = _nifti_values(stream, shape, stored, held, *(scaling if scaled else (1.0, 0.0)))
            if values.ndim == 2:  # one slice: its affine orients it as the same slice stored (X, Y, 1)
                values = values[:, :, None]
            img = cls(values, header.get_best_affine(), header)  # in memory: reoriented as it is
            file_affine, file_header = img.affine, img.header.copy()
            img = nib.as_closest_canonical(img)  # RAS+: slices along the last spatial axis are axial
            volume = np.asanyarray(img.dataobj)
            # the affine's voxel sizes, not pixdim: they agree with the reoriented axes whichever form the
            # header uses
            zooms = nib.affines.voxel_sizes(img.affine)
            unit = img.header.get_xyzt_units()[0]
        except Exception as exc:  # noqa: BLE001 - short data, bad header fields, ...
            raise UploadError(
                f"{name}: the NIfTI file is corrupt or truncated ({type(exc).__name__}: {exc})"
            ) from None
    notes: list[str] = []
    while volume.ndim > 4 and volume.shape[-1] == 1:
        volume = volume[..., 0]
    if volume.ndim == 3:
        volume = volume[..., None]
    elif volume.ndim != 4:
        raise UploadError(f"{name}: a {volume.ndim}D NIfTI array {volume.shape}; 2D, 3D or 4D volumes only")
    x, y, z, c = volume.shape
    plane, axes = _shown_plane(x, y, z)
    pixel_mm = (zooms[axes[2]], zooms[axes[3]])  # (rows, columns)
    display = _shown(volume, axes)
    if shown is None:  # a header whose affine gives no orientation: its slices' size checked only now
        _check_pixels(*display.shape[2:], name, max_pixels)
    if volume.dtype == bool:
        display = display.astype(np.uint8)
    windows = [_window_from_percentiles(channel, percentiles) for channel in display]
    for k, channel_window in enumerate(windows):
        _check_window(name, channel_window, _percentiles_text(percentiles) + (f" of channel {k}" if c > 1 else ""))
    lo, hi = windows[0]
    if c > 1:  # each modality on its own scale (CT and MRI channels, T1 and FLAIR), as training scales it
        notes.append(
            f"4D volume: {c} channels / time points (use the channel slider), each mapped to 0..1 from its own "
            f"{_percentiles_text(percentiles)}: {', '.join(_range_text(a, b) for a, b in windows[:6])}"
            + (f" and {c - 6} more" if c > 6 else "")
        )
    else:
        scaled = f"{_percentiles_text(percentiles)} of the volume"
        notes.append(f"NIfTI intensities {_range_text(lo, hi)} ({scaled}) mapped to 0..1")
    notes += _non_finite_note(volume)
    if plane != "axial":
        notes.append(f"one {plane} slice ({x}x{y}x{z} voxels), shown in its own plane")
    elif z > 1:
        notes.append(f"3D volume: {z} axial slices (use the slice slider)")
    # nibabel writes 1 x 1 with no unit when nothing was given: a size not stated, not 1 mm
    stated = unit != "unknown" or not np.allclose(pixel_mm, 1.0)
    scale = {"meter": 1000.0, "micron": 0.001}.get(unit, 1.0)
    spacing = _spacing(pixel_mm, notes, scale) if stated else None
    grid = NiftiGrid(version, file_affine, file_header, axes)
    view = _model_view(file_affine) if plane == "axial" else None  # training cuts no coronal / sagittal slice
    channel_windows = windows if c > 1 else None
    return MedicalVolume(name, "NIfTI", display, lo, hi, notes, spacing, channel_windows, grid, view)


def _shown(volume: np.ndarray, axes: tuple[int, int, int, int]) -> np.ndarray:
    """The shown (C, D, rows, cols) slices of a RAS+ (X, Y, Z, C) volume (:func:`_shown_plane`'s ``axes``): a
    view, rows and columns flipped for the radiological view."""
    return np.transpose(volume, axes)[:, :, ::-1, ::-1]


def _model_view(affine: np.ndarray) -> tuple[bool, bool, bool] | None:
    """(transpose, flip rows, flip columns): what turns a shown axial slice of a NIfTI with this ``affine``
    into the slice training cuts from it (:func:`domains.medical.volumes.axial_slices`: each voxel axis in its
    stored direction, rows along y, where the page shows anterior up and the patient's right on the left).
    Found by cutting a 2x2x2 volume of numbered voxels both ways: how a slice is shown or cut depends on the
    affine alone, not on the volume's size."""
    import itertools

    import nibabel as nib

    numbered = np.arange(8, dtype=np.int16).reshape(2, 2, 2)
    cut = axial_slices(numbered, affine)  # (Z, rows, cols), Z in the file's order
    canonical = np.asanyarray(nib.as_closest_canonical(nib.Nifti1Image(numbered, affine)).dataobj)[..., None]
    shown = _shown(canonical, _shown_plane(2, 2, 2)[1])[0, 0]  # the page's slice 0: one of ``cut``'s two
    for view in itertools.product((False, True), repeat=3):
        if any(np.array_equal(_to_view(shown, view), part) for part in cut):
            return view if any(view) else None  # None: the model reads the slice as shown
    raise AssertionError(f"no view of the shown slice {shown.tolist()} is cut from {cut.tolist()}")  # a bug


def _shown_plane(x: int, y: int, z: int) -> tuple[str, tuple[int, int, int, int]]:
    """The plane a RAS+ (X, Y, Z, C) NIfTI volume of that size is shown in, and the transpose of it that gives
    the shown (C, D, rows, cols), rows and columns then flipped: axial slices, but a single coronal or
    sagittal slice stored as such is shown in its own plane."""
    if y == 1 and x > 1 and z > 1:  # one coronal slice, stored as such: shown in its plane
        # (C, Y, Z, X), Z and X flipped: superior up, the patient's right on the viewer's left
        return "coronal", (3, 1, 2, 0)
    if x == 1 and y > 1 and z > 1:  # one sagittal slice: superior up, anterior on the viewer's left
        return "sagittal", (3, 0, 2, 1)
    # axial: (X, Y, Z, C) of RAS+ -> (C, Z, Y, X) with Y flipped: each slice shown with anterior up (np.rot90 of
    # [:, :, k]); and X flipped: the patient's right on the viewer's left, the radiological view a DICOM
    # slice of the same scan has (columns run toward the patient's left), so both uploads look the same
    return "axial", (3, 2, 1, 0)


def _nifti_shown_slice(header) -> tuple[int, int] | None:
    """(rows, cols) of the slices :func:`_medical_nifti` shows, from the NIfTI ``header`` alone: its shape
    reoriented to RAS+ by its affine, as ``nib.as_closest_canonical`` reorients the voxels; None where the
    affine gives no orientation (a zero voxel size)."""
    import nibabel as nib

    shape = tuple(int(n) for n in header.get_data_shape())
    spatial = (shape + (1, 1, 1))[:3]  # a 2D file: one slice (X, Y, 1)
    ornt = nib.orientations.io_orientation(header.get_best_affine())
    if np.isnan(ornt).any():
        return None
    canonical = [1, 1, 1]
    for axis, ras_axis in enumerate(ornt[:, 0]):
        canonical[int(ras_axis)] = spatial[axis]
    axes = _shown_plane(*canonical)[1]
    sizes = (*canonical, 1)  # (X, Y, Z, C): the channels are not on a slice
    return sizes[axes[2]], sizes[axes[3]]


# ------------------------------------------------------------------------------------- model input, output


#: the pixel size the medical models learnt at: LIDC-IDRI slices resampled to 0.5 mm in-plane (the preparation
#: of the Probabilistic U-Net's LIDC crops, which the synthetic LIDC-like set imitates)
MODEL_PIXEL_MM = 0.5
FIT_MODES = ("mm", "resize", "crop")


def fit_to_model(
    image: np.ndarray,
    size: int,
    mode: str = "resize",
    spacing: tuple[float, float] | None = None,
    centre: tuple[float, float] | None = None,
) -> tuple[np.ndarray, str]:
    """A 2D slice -> (size, size) float32 for the medical models, and a sentence saying what was done.

    ``mm`` (needs ``spacing``, the slice's (row, column) mm per pixel) takes the window of ``size`` pixels of
    :data:`MODEL_PIXEL_MM` around ``centre`` and resamples it to the models' pixel size: a lesion keeps the size
    in pixels the models learnt (an 11 mm nodule in a 512-pixel CT slice shrank to 4 pixels under ``resize``
    and was not found), and anisotropic pixels come out square. ``resize`` scales the whole slice so its long
    side fits, then pads it to a square with its edge values (the aspect ratio of its extent in mm kept when
    ``spacing`` is known, else of its pixels; area interpolation when shrinking). ``crop`` takes the ``size`` x ``size`` window around ``centre`` (default: the middle), keeping
    the file's pixels. Windows reaching past the slice are padded with its edge values.
    """
    if image.ndim != 2:
        raise UploadError(f"expected a 2D slice, got shape {image.shape}")
    h, w = image.shape
    if mode not in FIT_MODES:
        raise ValueError(f"mode must be one of {FIT_MODES}, got {mode!r}")
    if mode == "mm":
        if spacing is None:
            raise ValueError("mode 'mm' needs the slice's pixel spacing")
        rows_mm, cols_mm = spacing
        window = _mm_window(size, spacing)
        part, padded = _window(image, window, centre)
        interp = cv2.INTER_AREA if max(window) > size else cv2.INTER_LINEAR
        out = cv2.resize(np.asarray(part, np.float32), (size, size), interpolation=interp)
        return out, (
            f"a {size * MODEL_PIXEL_MM:g} mm window ({window[1]}x{window[0]} of its {cols_mm:g} x {rows_mm:g} mm "
            f"pixels{padded}) resampled to the models' {MODEL_PIXEL_MM:g} mm pixels"
        )
    square_pixels = spacing is None or np.isclose(spacing[0], spacing[1])
    if (h, w) == (size, size) and centre is None and square_pixels:
        return image.astype(np.float32), f"used as is ({size}x{size})"
    if mode == "resize":
        # scaled first, then edge-padded to the square: padding a 40000x1000 slice to 40000x40000 first would
        # take gigabytes for a 128x128 input
        new_h, new_w = _resized_shape((h, w), size, spacing)
        scaled = np.asarray(image, np.float32)
        # one axis at a time: OpenCV averages areas only when both axes shrink, and anisotropic pixels may
        # shrink one axis while the other grows
        for axis_size in ((w, new_h), (new_w, new_h)):
            shrinks = axis_size[0] < scaled.shape[1] or axis_size[1] < scaled.shape[0]
            interp = cv2.INTER_AREA if shrinks else cv2.INTER_LINEAR
            scaled = cv2.resize(scaled, axis_size, interpolation=interp)
        pad_y, pad_x = size - new_h, size - new_w
        out = np.pad(
            scaled, ((pad_y // 2, pad_y - pad_y // 2), (pad_x // 2, pad_x - pad_x // 2)), mode="edge"
        )
        shape = "aspect ratio kept"
        if not square_pixels:
            shape = f"{new_w}x{new_h}: its {spacing[1]:g} x {spacing[0]:g} mm pixels made square"
        padded = f", edge-padded to a square ({shape})" if pad_x or pad_y else ""
        return out, f"resized from {w}x{h} to {size}x{size}{padded}"
    out, padded = _window(image, (size, size), centre)
    where = "at the centre" if centre is None else f"centred at row {centre[0]:g}, column {centre[1]:g}"
    return out.astype(np.float32), f"a {size}x{size} window {where} of the {w}x{h} slice{padded}"


def _resized_shape(shape: tuple[int, int], size: int, spacing: tuple[float, float] | None) -> tuple[int, int]:
    """(rows, cols) the whole slice takes inside the model's square input in mode ``resize``: its long side
    ``size``, the shape of its extent in mm (0.5 x 1.5 mm pixels resized as they lie squeezed a round lesion into
    a 1:3 ellipse), or of its pixels where the pixel size is unknown or square."""
    h, w = shape
    square_pixels = spacing is None or np.isclose(spacing[0], spacing[1])
    extent_h, extent_w = (h, w) if square_pixels else (h * spacing[0], w * spacing[1])
    longest = max(extent_h, extent_w)
    return max(1, round(extent_h * size / longest)), max(1, round(extent_w * size / longest))


def to_slice(
    model_map: np.ndarray,
    shape: tuple[int, int],
    mode: str = "resize",
    spacing: tuple[float, float] | None = None,
    centre: tuple[float, float] | None = None,
) -> np.ndarray:
    """A (size, size) map on the model's input (a probability, an entropy) back on the slice's own (rows, cols)
    ``shape`` pixels: the inverse of :func:`fit_to_model` with the same arguments. Bilinear, so a mask is the
    resampled probability thresholded, not a blocky upscaled mask; 0 where the model's window did not reach (it
    looked at nothing there) and the edge padding dropped."""
    size = model_map.shape[0]
    h, w = shape
    model_map = np.asarray(model_map, np.float32)
    rect = window_rect(shape, size, mode, spacing, centre)
    if rect is None:  # resize: the slice, scaled and centred, with edge padding around it
        new_h, new_w = _resized_shape(shape, size, spacing)
        top, left = (size - new_h) // 2, (size - new_w) // 2
        inner = model_map[top : top + new_h, left : left + new_w]
        return cv2.resize(inner, (w, h), interpolation=cv2.INTER_LINEAR) if inner.shape != (h, w) else inner.copy()
    top, left, rows, cols = rect
    window = model_map
    if (rows, cols) != (size, size):  # mode mm: the window's own pixels
        window = cv2.resize(model_map, (cols, rows), interpolation=cv2.INTER_LINEAR)
    out = np.zeros((h, w), np.float32)
    y0, x0, y1, x1 = max(0, top), max(0, left), min(h, top + rows), min(w, left + cols)
    out[y0:y1, x0:x1] = window[y0 - top : y1 - top, x0 - left : x1 - left]
    return out


def _mm_window(size: int, spacing: tuple[float, float]) -> tuple[int, int]:
    """(rows, cols) of the slice's own pixels that cover ``size`` pixels of :data:`MODEL_PIXEL_MM`."""
    rows_mm, cols_mm = spacing
    return max(1, round(size * MODEL_PIXEL_MM / rows_mm)), max(1, round(size * MODEL_PIXEL_MM / cols_mm))


def window_rect(
    shape: tuple[int, int],
    size: int,
    mode: str,
    spacing: tuple[float, float] | None = None,
    centre: tuple[float, float] | None = None,
) -> tuple[int, int, int, int] | None:
    """(top, left, rows, cols) of the part of a ``shape`` slice that :func:`fit_to_model` feeds the model in
    modes ``mm`` and ``crop`` (it may reach past the slice, where it is edge-padded); None for ``resize``, which
    takes the whole slice. The page draws it on the whole slice, so one sees where the window sits."""
    if mode == "resize":
        return None
    window = _mm_window(size, spacing) if mode == "mm" and spacing is not None else (size, size)
    return (*_window_origin(shape, window, centre), *window)


def window_preview(
    image: np.ndarray, rect: tuple[int, int, int, int], spacing=None, side: int = 256
) -> np.ndarray:
    """A [0, 1] slice as RGB uint8 at ``side`` pixels on its long side, at its physical aspect (``spacing``: (row, column)
    mm per pixel: 0.5 x 1.5 mm pixels showed a round nodule as a 1:3 ellipse), with the model's window drawn in
    yellow, clipped to the slice (a window larger than it frames the whole slice)."""
    h, w = image.shape
    rows_mm, cols_mm = spacing if spacing is not None else (1.0, 1.0)
    scale = side / max(h * rows_mm, w * cols_mm)
    sy, sx = rows_mm * scale, cols_mm * scale  # preview pixels per slice pixel
    size = (max(1, round(w * sx)), max(1, round(h * sy)))
    grey = (np.clip(image, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    shown = cv2.resize(grey, size, interpolation=cv2.INTER_AREA if sx * sy < 1 else cv2.INTER_NEAREST)
    rgb = cv2.cvtColor(shown, cv2.COLOR_GRAY2RGB)
    top, left, rows, cols = rect
    x0, y0 = min(max(round(left * sx), 0), size[0] - 1), min(max(round(top * sy), 0), size[1] - 1)
    x1 = min(max(round((left + cols) * sx) - 1, 0), size[0] - 1)
    y1 = min(max(round((top + rows) * sy) - 1, 0), size[1] - 1)
    cv2.rectangle(rgb, (x0, y0), (x1, y1), (255, 220, 0), 1)
    return rgb


def _window_origin(
    shape: tuple[int, int], window: tuple[int, int], centre: tuple[float, float] | None
) -> tuple[int, int]:
    """(top, left) of the (rows, cols) ``window`` around ``centre`` (row, col; default the middle)."""
    h, w = shape
    (win_h, win_w), (cy, cx) = window, centre if centre is not None else ((h - 1) / 2, (w - 1) / 2)
    # nearest start, halves up (round() takes halves to even: the window moved in 2-pixel steps); a window that
    # fits stays inside the slice, a larger one holds its middle
    top, left = math.floor(cy - (win_h - 1) / 2 + 0.5), math.floor(cx - (win_w - 1) / 2 + 0.5)
    top = min(max(top, 0), h - win_h) if win_h <= h else min(max(top, h - win_h), 0)
    left = min(max(left, 0), w - win_w) if win_w <= w else min(max(left, w - win_w), 0)
    return top, left


def _window(
    image: np.ndarray, window: tuple[int, int], centre: tuple[float, float] | None
) -> tuple[np.ndarray, str]:
    """The (rows, cols) ``window`` of ``image`` around ``centre`` (row, col; default the middle), edge-padded
    where it reaches past the image, and a note saying so."""
    h, w = image.shape
    win_h, win_w = window
    top, left = _window_origin((h, w), window, centre)
    before = (max(0, -top), max(0, -left))
    after = (max(0, top + win_h - h), max(0, left + win_w - w))
    inside = image[max(0, top) : min(h, top + win_h), max(0, left) : min(w, left + win_w)]
    if not any(before + after):
        return inside, ""
    padded = np.pad(inside, ((before[0], after[0]), (before[1], after[1])), mode="edge")
    return padded, " (edge-padded)"


_UPLOAD_SUFFIXES = sorted(
    {*VIDEO_EXTENSIONS, *IMAGE_EXTENSIONS, *MEDICAL_EXTENSIONS, ".zip"}, key=len, reverse=True
)
_FILE_SUFFIX = re.compile(
    "(" + "|".join(map(re.escape, _UPLOAD_SUFFIXES)) + ")$", re.IGNORECASE
)  # .nii.gz first


#: (width, height) of the frames the driving models learnt from (the synthetic dashcam's, 10:3). Every driving
#: model's input has their shape (the detector's and the instance segmenter's 1280x384, the anomaly model's
#: 640x192) and takes a photo whole into it, its aspect kept
DASHCAM_FRAME = (640, 192)
#: a photo whose objects reach the models below this share of the size they learnt is warned: the detector
#: learnt at one scale (its crops only enlarged objects), and a 16:9 photo (0.53x) dropped both pedestrians of a
#: test scene from 0.76 and 0.70 to 0.49, under the page's 0.50, where its 3.3:1 road band kept them
MIN_SCALE = 0.8


def analysis_scale(width: int, height: int, frame: tuple[int, int] = DASHCAM_FRAME) -> float:
    """The size at which a ``width`` x ``height`` photo's objects reach the driving models, as a share of the
    size they learnt (the same road seen with more sky and bonnet): fitted whole into their ``frame``-shaped
    input, a photo narrower than it fills only part of its width (a 16:9 one 341 of 640 px: 0.53). 1 for a photo
    as wide as the frames or wider."""
    return min(1.0, (width / height) / (frame[0] / frame[1]))


def unlike_dashcam(
    width: int, height: int, thing: str, trained: str, min_scale: float | None = MIN_SCALE
) -> str | None:
    """A plain warning when an upload (``thing``: photo, clip) is unlike the wide dashcam frames the driving models
    learnt from: portrait or square, or analysed below ``min_scale`` of the object size they learnt
    (:func:`analysis_scale`; 16:9 included), saying at which scale and what to crop. ``min_scale`` None: only less
    than 1.3 times as wide as high is warned. ``trained`` says what they saw."""
    if height >= width:
        return (
            f"This {thing} is {'portrait' if height > width else 'square'} ({width}x{height}). {trained}: expect "
            "missed objects and false alarms."
        )
    scale = analysis_scale(width, height)
    if min_scale is not None and scale < min_scale:
        frame_w, frame_h = DASHCAM_FRAME
        aspect = frame_w / frame_h
        return (
            f"This {thing} ({width}x{height}, {width / height:.2f}:1) is fitted whole into the models' {aspect:.1f}:1 "
            f"input, so it is analysed at {scale:.2f}x the object size they learnt ({round(frame_h * width / height)}"
            f"x{frame_h} of it where their frames fill {frame_w}x{frame_h}). {trained}: expect missed objects, small "
            f"and distant ones first, and lower scores. Crop the road band to about {aspect:.1f}:1 first (e.g. "
            f"{width}x{round(width / aspect)} from this {thing}) to have it analysed at the size they learnt."
        )
    if width / height < 1.3:
        return (
            f"This {thing} ({width}x{height}) is much less wide than the dashcam frames the models learnt from. "
            f"{trained}: expect missed objects and false alarms."
        )
    return None


def grey_photo(decoded: RGBImage, trained: str) -> str | None:
    """A plain warning when an upload has no colour (a grey or infrared camera, a black-and-white copy, found
    once at decoding): the driving models learnt from colour frames, and the anomaly score leans on the road's
    colour (a grey copy of a test scene flagged 4 % of its pixels where the colour one flagged none)."""
    if not decoded.colourless:
        return None
    return (
        f"This photo is grey (no colour). {trained} in colour: expect missed objects and false alarms, road "
        "anomalies most of all."
    )


def download_stem(name: str, default: str = "image") -> str:
    """A file-name stem for downloads: the upload's known extension removed (``.nii.gz`` whole), any other
    dot kept (``z-136.0_c0`` stays distinct from ``z-136.0_c1``), unsafe characters as ``_``."""
    stem = _FILE_SUFFIX.sub("", str(name).strip())
    return re.sub(r"[^\w.-]+", "_", stem).strip("._") or default


def png_bytes(image: np.ndarray) -> bytes:
    """Encode a grey (H, W) or RGB (H, W, 3) uint8 array as PNG."""
    array = np.ascontiguousarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"png_bytes: expected uint8, got {array.dtype}")
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", array)
    if not ok:
        raise ValueError(f"png_bytes: OpenCV could not encode an array of shape {image.shape}")
    return buf.tobytes()


def zip_bytes(files: dict[str, bytes]) -> bytes:
    """A zip archive (deflated) of ``{name: content}``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for fname, content in files.items():
            zf.writestr(fname, content)
    return buf.getvalue()


__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_CLIP_FRAMES",
    "MAX_UPLOAD_BYTES",
    "MAX_UPLOAD_MB",
    "MEDICAL_EXTENSIONS",
    "FrameClip",
    "MedicalVolume",
    "NiftiGrid",
    "RGBImage",
    "UploadError",
    "check_size",
    "decode_clip",
    "decode_medical",
    "decode_rgb_image",
    "detect_format",
    "fit_to_model",
    "png_bytes",
    "to_slice",
    "zip_bytes",
]
