"""Upload memory, s39: a .nii.gz decoded with one full copy of its voxels live (the file decompressed whole
beside its voxels peaked at 1.06 GB for a 510 MB volume), and a DICOM refused from its header before its
pixel data is read (a deflated one inflated whole and its pixel data read out of it: 974 MB for a 0.5 MB
upload declaring 1.4 GB). Scaled down: the limit is lowered, the files are built here."""

from __future__ import annotations

import gzip
import io
import tracemalloc
import zlib

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian

from apps import uploads as up
from tests.apps import samples as S

MB = 2**20


def _peak(call) -> tuple[object, int]:
    """(what ``call`` returns or the UploadError it raises, the peak of memory traced while it ran) in bytes."""
    tracemalloc.start()
    try:
        try:
            result = call()
        except up.UploadError as err:
            result = err
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, peak


def _nifti(volume: np.ndarray, affine=None, slope=None, inter=0.0, order="<", gz=True) -> bytes:
    """A NIfTI-1 holding ``volume``'s values as they are (Fortran order, ``order`` its byte order), its
    scl_slope / scl_inter set (nibabel's writer would rescale the values to them)."""
    header = nib.Nifti1Header(endianness=order)
    header.set_data_shape(volume.shape)
    header.set_data_dtype(volume.dtype)
    header.set_data_offset(352)
    header.set_sform(np.eye(4) if affine is None else affine, code=1)
    if slope is not None:
        header.set_slope_inter(slope, inter)
    raw = header.binaryblock + bytes(4) + volume.astype(volume.dtype.newbyteorder(order)).tobytes(order="F")
    return gzip.compress(raw, mtime=0) if gz else raw


# ------------------------------------------------------------------------------------ 1: NIfTI, one copy


def _no_window(display: np.ndarray, percentiles=None) -> tuple[float, float]:
    """Stands in for the window's percentiles in the peak tests: its sample of 2 million voxels takes 40 MB
    at any size (1 / 13 of a volume at the limit), more than the scaled-down volumes here."""
    return 0.0, 1.0


def test_a_nifti_gz_near_the_limit_holds_one_copy_of_its_voxels(monkeypatch):
    """The limit lowered to 8 MB and a 7.97 MB int16 volume (a CT at the 512 MB limit, scaled): it peaked at
    2.7 times its size (the file decompressed whole, then its voxels read out of it); now its voxels and a
    chunk."""
    monkeypatch.setattr(up, "MAX_VOLUME_BYTES", 8 * MB)
    monkeypatch.setattr(up, "_CHUNK_VOXELS", 1 << 16)  # 128 KB chunks (2 MB at the real limit)
    monkeypatch.setattr(up, "_window_from_percentiles", _no_window)
    volume = np.full((128, 128, 255), -1024, np.int16)
    volume[32:96, 40:90, :] = np.arange(255, dtype=np.int16)  # a body, slice by slice
    data = _nifti(volume)
    assert len(data) < MB and up.MAX_VOLUME_BYTES - 352 - MB // 8 < volume.nbytes < up.MAX_VOLUME_BYTES - 352
    decoded, peak = _peak(lambda: up.decode_medical(data, "ct.nii.gz"))
    assert decoded.data.dtype == np.int16
    np.testing.assert_array_equal(decoded.data[0], np.transpose(volume, (2, 1, 0))[:, ::-1, ::-1])
    assert peak < 1.2 * volume.nbytes  # it was 2.7x (21.4 MB); now 1.07x


def test_a_scaled_nifti_holds_its_float32_values_and_a_chunk_not_its_stored_voxels_too(monkeypatch):
    """uint8 scaled by scl_slope is held as float32 (4x): the stored voxels and the decompressed file were
    held beside the float32 values (766 MB for 508 MB of values); now the values and a chunk."""
    monkeypatch.setattr(up, "_CHUNK_VOXELS", 1 << 14)
    monkeypatch.setattr(up, "_window_from_percentiles", _no_window)
    stored = (np.arange(64 * 64 * 128) % 200).reshape(64, 64, 128).astype(np.uint8)  # 0.5 MB stored, 2 held
    data = _nifti(stored, slope=2.0, inter=-1.0)
    decoded, peak = _peak(lambda: up.decode_medical(data, "scaled.nii.gz"))
    expected = stored.astype(np.float32) * np.float32(2.0) + np.float32(-1.0)
    np.testing.assert_array_equal(decoded.data[0], np.transpose(expected, (2, 1, 0))[:, ::-1, ::-1])
    assert peak < 1.2 * expected.nbytes  # it was 1.5x (3.0 MB); now 1.05x


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda v: _nifti(v.astype(np.int16)), "ct.nii.gz"),
        (lambda v: _nifti(v.astype(np.int16), gz=False), "ct.nii"),
        (lambda v: _nifti(v.astype(np.int16), order=">"), "big_endian.nii.gz"),
        (lambda v: _nifti(v.astype(np.int16), order=">", slope=0.5, inter=3.0), "scaled_big.nii.gz"),
        (lambda v: _nifti(v.astype(np.float64) / 7, np.diag([-0.7, -0.8, 2.5, 1])), "lps.nii.gz"),
        (lambda v: _nifti(v[..., :2].astype(np.float32)), "two_d.nii.gz"),
        (lambda v: _nifti(np.stack([v, -v], -1).astype(np.int32)), "four_d.nii.gz"),
    ],
)
def test_niftis_read_as_chunks_give_nibabels_values_and_grid(monkeypatch, make, name):
    """Read a chunk at a time (the last one short), the values are nibabel's own (scaled in float32), and the
    grid a mask goes out on is the file's."""
    monkeypatch.setattr(up, "_CHUNK_VOXELS", 1000)
    data = make(np.arange(20 * 24 * 18).reshape(20, 24, 18) % 997 - 300)
    raw = gzip.decompress(data) if name.endswith(".gz") else data
    img = nib.Nifti1Image.from_bytes(raw)
    proxy = img.dataobj
    stored = np.asanyarray(proxy.get_unscaled())
    expected = stored.astype(np.float32) if stored.dtype.kind == "f" else stored
    if (proxy.slope, proxy.inter) != (1.0, 0.0):
        expected = stored.astype(np.float32) * np.float32(proxy.slope) + np.float32(proxy.inter)
    if expected.ndim == 2:
        expected = expected[:, :, None]
    canonical = np.asanyarray(nib.as_closest_canonical(nib.Nifti1Image(expected, img.affine, img.header)).dataobj)
    if canonical.ndim == 3:
        canonical = canonical[..., None]
    decoded = up.decode_medical(data, name)
    assert decoded.data.dtype == expected.dtype
    np.testing.assert_array_equal(decoded.data, np.transpose(canonical, (3, 2, 1, 0))[:, :, ::-1, ::-1])
    np.testing.assert_array_equal(decoded.nifti_grid.affine, img.affine)
    assert decoded.nifti_grid.header.get_slope_inter() == img.header.get_slope_inter()


def test_a_cut_short_or_bomb_gzip_is_refused_before_its_voxels_are_allocated():
    """The stream is counted first, nothing kept: what it holds is known before the array is allocated."""
    volume = np.ones((256, 256, 64), np.int16)  # 8 MB declared
    raw = _nifti(volume, gz=False)
    half = zlib.compressobj(6, zlib.DEFLATED, 31)  # a gzip of the first half only, its stream cut short
    cut = half.compress(raw[: len(raw) // 2]) + half.flush(zlib.Z_FULL_FLUSH)
    err, peak = _peak(lambda: up.decode_medical(cut, "cut.nii.gz"))
    assert str(err) == "cut.nii.gz: the gzip data is truncated"
    assert peak < 6 * MB  # the half counted in 16 MB chunks; the 8 MB of voxels never allocated
    whole_half = gzip.compress(raw[: len(raw) // 2])  # a whole gzip of a cut file
    err, peak = _peak(lambda: up.decode_medical(whole_half, "half.nii.gz"))
    assert str(err) == (
        "half.nii.gz: the NIfTI file is corrupt or truncated (its header declares 8,388,608 bytes of voxels from "
        "byte 352; the file has 4,194,128)"
    )
    assert peak < 6 * MB
    with pytest.raises(up.UploadError, match=r"^bomb.nii.gz: the volume decompresses to more than 1.0 MB; too"):
        up._gunzipped_size(gzip.compress(bytes(3 * MB)), "bomb.nii.gz", limit=MB)


# --------------------------------------------------------------------------------- 2: DICOM, header first


def test_a_deflated_dicom_is_refused_from_its_header_without_inflating_its_pixel_data(monkeypatch):
    """Read whole before its size was checked: its data set inflated (twice over, as zlib joins its output)
    and its pixel data read out of it. Scaled: 16 frames of 256x256 (2 MB inflated), a 4 MB limit."""
    data = S.deflated_dicom(np.zeros((16, 256, 256), np.int16))
    assert len(data) < 10_000
    monkeypatch.setattr(up, "MAX_VOLUME_BYTES", 4 * MB)
    monkeypatch.setattr(up, "_CHUNK_VOXELS", 1 << 16)  # 64 KB inflated at a time, as 1 MB is of 512
    real = pydicom.dcmread
    monkeypatch.setattr(pydicom, "dcmread", lambda *a, **k: pytest.fail("pydicom read the file"))
    err, peak = _peak(lambda: up.decode_medical(data, "cine.dcm"))
    assert str(err) == (
        "cine.dcm: its header declares 16 frames of 256x256 pixels, as float32, beside its deflated data unpacked "
        "(2.0 MB) = 6.0 MB to hold; the limit is 4.0 MB (crop or downsample it first)"
    )
    assert peak < MB / 2  # a few 64 KB chunks (the header's, the count's); it was 7.4 MB
    monkeypatch.setattr(pydicom, "dcmread", real)
    monkeypatch.setattr(up, "MAX_VOLUME_BYTES", 8 * MB)  # under the limit: read as before
    stored = (np.arange(16 * 256 * 256) % 3001).reshape(16, 256, 256).astype(np.int16)
    np.testing.assert_array_equal(up.decode_medical(S.deflated_dicom(stored), "cine.dcm").data[0], stored - 1024.0)


def test_an_uncompressed_dicom_is_refused_from_a_header_read_that_stops_before_its_pixels(monkeypatch):
    """Its pixel data was read (up to the 50 MB upload) before the size it declares was checked."""
    reads = []
    real = pydicom.dcmread

    def reading(*args, **kwargs):
        reads.append(kwargs.get("stop_before_pixels", False))
        return real(*args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", reading)
    monkeypatch.setattr(up, "MAX_VOLUME_BYTES", MB)
    with pytest.raises(up.UploadError) as err:
        up.decode_medical(S.dicom(np.zeros((5, 256, 256))), "cine.dcm")
    assert str(err.value) == (
        "cine.dcm: its header declares 5 frames of 256x256 pixels, as float32 = 1.2 MB to hold; the limit is 1.0 MB "
        "(crop or downsample it first)"
    )
    assert reads == [True]  # the header only; it was one whole read


def test_deflated_dicoms_read_through_the_header_stream_as_before():
    """An enhanced object (nested sequences before its pixel data) and a zip series of deflated slices decode
    as their uncompressed files do; a deflated data set cut in its header is refused naming the file."""
    stored = (np.arange(3 * 40 * 48) % 3000).reshape(3, 40, 48).astype(np.int16)
    plain = S.dicom(stored, enhanced=True, pixel_spacing=(0.5, 0.5))
    deflated = S.deflated_dicom(stored)
    ds = pydicom.dcmread(io.BytesIO(plain))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    for data in (buf.getvalue(), deflated):
        decoded = up.decode_medical(data, "cine.dcm")
        np.testing.assert_array_equal(decoded.data[0], stored - 1024.0)
    assert up.decode_medical(buf.getvalue(), "e.dcm").spacing == up.decode_medical(plain, "e.dcm").spacing
    with pytest.raises(up.UploadError, match=r"^cut.dcm: the DICOM file is corrupt or truncated \(ValueError: the "
                                             r"deflated data set ends early"):
        up.decode_medical(deflated[:400], "cut.dcm")


def test_the_inflating_stream_reads_and_seeks_as_a_file_of_the_inflated_bytes():
    inflated = bytes(range(256)) * 400
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    stream, same = up._Inflating(packer.compress(inflated) + packer.flush()), io.BytesIO(inflated)
    for offset, whence, size in [(0, 0, 10), (5, 1, 300), (-100, 1, 50), (90_000, 0, 20), (102_390, 0, 100)]:
        assert stream.seek(offset, whence) == same.seek(offset, whence)
        assert stream.read(size) == same.read(size) and stream.tell() == same.tell()
    stream.seek(7)
    assert stream.read() == inflated[7:]
