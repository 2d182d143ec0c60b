"""Small upload files built in memory (PNG, JPEG, DICOM, NIfTI, corrupt ones) for the app tests."""

from __future__ import annotations

import gzip
import io

import cv2
import numpy as np


def png(array: np.ndarray) -> bytes:
    """PNG bytes of a grey (H, W), RGB (H, W, 3) or RGBA (H, W, 4) array (uint8 / uint16), given as RGB(A)."""
    a = np.ascontiguousarray(array)
    if a.ndim == 3 and a.shape[2] == 3:
        a = cv2.cvtColor(a, cv2.COLOR_RGB2BGR)
    elif a.ndim == 3 and a.shape[2] == 4:
        a = cv2.cvtColor(a, cv2.COLOR_RGBA2BGRA)
    ok, buf = cv2.imencode(".png", a)
    assert ok
    return buf.tobytes()


def jpeg(array: np.ndarray, orientation: int | None = None) -> bytes:
    """JPEG bytes (quality 95) of an RGB or grey uint8 array; optional EXIF orientation tag (via PIL)."""
    from PIL import Image

    im = Image.fromarray(array)
    buf = io.BytesIO()
    if orientation is None:
        im.save(buf, format="JPEG", quality=95)
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        im.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def gradient_rgb(h: int = 40, w: int = 64) -> np.ndarray:
    """A distinct RGB test pattern: red ramps along x, green along y, blue constant 77."""
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None].repeat(w, 1)
    return np.stack([x, y, np.full_like(x, 77)], -1).round().astype(np.uint8)


def dicom(
    frames: np.ndarray,
    window: tuple[float, float] | None = None,
    intercept: float = -1024.0,
    photometric: str = "MONOCHROME2",
    pixel_spacing: tuple[float, float] | None = None,
    enhanced: bool = False,
    position: tuple[list[float], list[float]] | None = None,
    frame_positions: list[list[float]] | None = None,
) -> bytes:
    """An uncompressed CT DICOM (int16 stored values) with one frame (H, W) or several (F, H, W);
    ``pixel_spacing``: (row, column) mm; ``enhanced``: rescale, window and pixel size in the shared functional
    group, as an Enhanced CT object keeps them, not at the top level; ``position``: (ImagePositionPatient,
    ImageOrientationPatient); ``frame_positions``: each frame's ImagePositionPatient, in an enhanced object's
    per-frame functional groups (with ``position``'s orientation in the shared group)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    frames = np.asarray(frames, dtype=np.int16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.Rows, ds.Columns = frames.shape[-2:]
    if frames.ndim == 3:
        ds.NumberOfFrames = frames.shape[0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    groups = {name: Dataset() for name in ("PixelValueTransformationSequence", "FrameVOILUTSequence", "PixelMeasuresSequence")}
    where = groups if enhanced else dict.fromkeys(groups, ds)
    where["PixelValueTransformationSequence"].RescaleSlope = 1
    where["PixelValueTransformationSequence"].RescaleIntercept = intercept
    if window is not None:
        where["FrameVOILUTSequence"].WindowCenter, where["FrameVOILUTSequence"].WindowWidth = window
    if pixel_spacing is not None:
        where["PixelMeasuresSequence"].PixelSpacing = list(pixel_spacing)
    shared = Dataset()
    if enhanced:
        for name, item in groups.items():
            setattr(shared, name, [item])
        ds.SharedFunctionalGroupsSequence = [shared]
    if frame_positions is not None:
        orientation = Dataset()
        orientation.ImageOrientationPatient = list(map(float, position[1]))
        shared.PlaneOrientationSequence = [orientation]
        ds.SharedFunctionalGroupsSequence = [shared]
        ds.PerFrameFunctionalGroupsSequence = []
        for place in frame_positions:
            plane, item = Dataset(), Dataset()
            plane.ImagePositionPatient = list(map(float, place))
            item.PlanePositionSequence = [plane]
            ds.PerFrameFunctionalGroupsSequence.append(item)
    elif position is not None:
        ds.ImagePositionPatient, ds.ImageOrientationPatient = (list(map(float, v)) for v in position)
    ds.PixelData = frames.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def nifti(
    volume: np.ndarray, compressed: bool = False, affine: np.ndarray | None = None, unit: str | None = None
) -> bytes:
    """A NIfTI-1 file; ``unit``: the spatial unit in its header (``mm``, ``meter``, ``micron``; None: unset)."""
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(volume), np.eye(4) if affine is None else affine)
    if unit is not None:
        img.header.set_xyzt_units(unit)
    raw = img.to_bytes()
    return gzip.compress(raw, mtime=0) if compressed else raw  # the same bytes every call: test ids hold them


def frames_zip(frames: list[np.ndarray], names: list[str] | None = None, extra: dict | None = None) -> bytes:
    """A zip of PNG frames (``frame_0.png`` ... unless ``names``), plus ``extra`` {member name: bytes}."""
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i, frame in enumerate(frames):
            zf.writestr(names[i] if names else f"frame_{i}.png", png(frame))
        for member, data in (extra or {}).items():
            zf.writestr(member, data)
    return buf.getvalue()


def moving_box_frames(n: int = 8, h: int = 48, w: int = 96) -> list[np.ndarray]:
    """Grey road frames with a bright box growing towards the camera (frame i: side 10 + 2i)."""
    out = []
    for i in range(n):
        frame = np.full((h, w, 3), 90, np.uint8)
        side = 10 + 2 * i
        frame[h - side - 2 : h - 2, w // 2 - side // 2 : w // 2 + side // 2] = (220, 40, 40)
        out.append(frame)
    return out


def mp4(frames: list[np.ndarray], fps: float = 10.0) -> bytes:
    """An MPEG-4 (mp4v) video of RGB frames, through OpenCV and a temporary file."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.mp4"
        h, w = frames[0].shape[:2]
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        writer.release()
        return path.read_bytes()


def deflated_dicom(pixels: np.ndarray, **elements) -> bytes:
    """:func:`dicom` of ``pixels`` (intercept -1024), deflated, header ``elements`` set."""
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = pydicom.dcmread(io.BytesIO(dicom(pixels)))
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
