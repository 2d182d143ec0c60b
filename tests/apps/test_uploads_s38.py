"""Upload memory, s38: a deflated DICOM counted with its unpacked bytes beside its float32 values (8 frames
of 4096x4096 peaked at 1.5 GB), DICOM frames decoded one at a time, a zip's deflated slices sharing the
limit, the NaN count of a volume done in chunks, a NIfTI's slice size checked from its header before a voxel
is decoded. The files are crafted here, tiny; what matters is what their headers declare, or the limit is
lowered."""

from __future__ import annotations

import io
import tracemalloc
import weakref
import zipfile

import nibabel as nib
import numpy as np
import pydicom
import pydicom.pixels
import pytest

from apps import uploads as up
from tests.apps import samples as S

MB = 2**20


def _traced(call) -> tuple[object, int, int]:
    """(what ``call`` returns, memory traced still held after it, the peak while it ran) in bytes."""
    tracemalloc.start()
    try:
        result = call()
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, held, peak


# ------------------------------------------------------------------------------------------ 1: DICOM memory


def test_a_deflated_dicom_is_refused_counting_its_unpacked_bytes_beside_its_float32_values(monkeypatch):
    """pydicom holds a deflated data set's bytes unpacked while its frames decode: 8 frames of 4096x4096 int16
    (512 MB as float32, exactly the limit) also held 256 MB unpacked and peaked at 1.5 GB. Scaled down: 4
    frames of 256x256 are 1 MB as float32 and unpack to 0.5 MB, against a 1.4 MB limit."""
    stored = (np.arange(4 * 256 * 256) % 251).reshape(4, 256, 256).astype(np.int16)
    data = S.deflated_dicom(stored)
    assert len(data) < 20_000
    whole = up.decode_medical(data, "cine.dcm")  # under the real limit: decoded, a frame at a time
    np.testing.assert_array_equal(whole.data[0], stored - 1024.0)
    monkeypatch.setattr(up, "MAX_VOLUME_BYTES", int(1.4 * MB))
    monkeypatch.setattr(pydicom.pixels, "iter_pixels", lambda *a, **k: pytest.fail("pixel data decoded"))
    with pytest.raises(up.UploadError) as err:
        up.decode_medical(data, "cine.dcm")
    assert str(err.value) == (
        "cine.dcm: its header declares 4 frames of 256x256 pixels, as float32, beside its deflated data "
        "unpacked (0.5 MB) = 1.5 MB to hold; the limit is 1.4 MB (crop or downsample it first)"
    )


def test_a_deflated_dicom_keeps_its_unpacked_data_set_once_not_twice():
    """pydicom's data set kept the buffer it read from, for a deflated file the whole data set unpacked,
    beside the pixel data read out of it: 2 x 256 MB for 8 frames of 4096x4096."""
    stored = np.zeros((8, 256, 256), np.int16)  # 1 MB unpacked
    data = S.deflated_dicom(stored)
    (ds, inflated), held, _ = _traced(lambda: up._read_dicom(data, "cine.dcm"))
    assert inflated == pytest.approx(stored.nbytes, rel=0.01)
    assert len(ds.PixelData) == stored.nbytes
    assert held < 1.25 * stored.nbytes  # the pixel data once; it was 2 MB


def test_dicom_frames_are_decoded_one_at_a_time_not_the_whole_object_beside_the_values():
    """ds.pixel_array decodes every frame at once (and keeps them on the data set) beside the float32 values:
    256 MB more for 8 frames of 4096x4096 int16. Now the values and one frame."""
    stored = (np.arange(16 * 128 * 256) % 3000).reshape(16, 128, 256).astype(np.int16)  # 1 MB stored
    ds, _ = up._read_dicom(S.dicom(stored), "cine.dcm")
    values, _, peak = _traced(lambda: up._dicom_values(ds, "cine.dcm", up.MAX_PIXELS, []))
    np.testing.assert_array_equal(values, stored - 1024.0)
    assert peak < values.nbytes + 0.5 * MB  # it was values + the whole stored object (+ 1 MB)
    assert "_pixel_array" not in vars(ds) or ds._pixel_array is None  # nothing decoded kept on the data set


def test_a_frame_is_rescaled_in_float64_a_block_of_rows_at_a_time(monkeypatch):
    """apply_modality_lut rescales in float64: a 4096x4096 frame took 128 MB on the way. Now a block of rows
    (about a million pixels; here 240)."""
    shapes = []
    real = pydicom.pixels.apply_modality_lut

    def spy(arr, ds):
        shapes.append(arr.shape)
        return real(arr, ds)

    monkeypatch.setattr(pydicom.pixels, "apply_modality_lut", spy)
    monkeypatch.setattr(up, "_CHUNK_VOXELS", 240)
    stored = np.arange(2 * 40 * 24).reshape(2, 40, 24).astype(np.int16)
    volume = up.decode_medical(S.dicom(stored), "cine.dcm")
    assert shapes == [(10, 24)] * 8
    np.testing.assert_array_equal(volume.data[0], stored - 1024.0)


def test_a_rescale_that_cannot_be_applied_keeps_every_frames_stored_values(monkeypatch):
    def broken(arr, ds):
        raise ValueError("bad slope")

    monkeypatch.setattr(pydicom.pixels, "apply_modality_lut", broken)
    stored = np.arange(3 * 20 * 24).reshape(3, 20, 24).astype(np.int16)
    volume = up.decode_medical(S.dicom(stored), "cine.dcm")
    np.testing.assert_array_equal(volume.data[0], stored)
    assert "the DICOM rescale slope / intercept could not be applied: stored values used" in volume.notes


def test_a_monochrome1_volume_is_inverted_in_place_not_into_a_second_volume():
    """``(hi + lo) - values`` made a second float32 volume: 512 MB more for one at the limit."""
    stored = np.arange(2 * 20 * 24).reshape(2, 20, 24).astype(np.int16)
    ds, _ = up._read_dicom(S.dicom(stored, photometric="MONOCHROME1"), "m1.dcm")
    values = up._dicom_values(ds, "m1.dcm", up.MAX_PIXELS, [])
    expected = values.copy()
    volume = up._dicom_volume(ds, "m1.dcm", values, [], lambda notes: None)
    assert np.shares_memory(volume.data, values)
    np.testing.assert_allclose(volume.data[0], (volume.lo + volume.hi) - expected)
    assert "MONOCHROME1 (white = low) inverted to the usual grey scale" in volume.notes


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return buf.getvalue()


def _slice(k: int, deflate: bool = False, **elements) -> bytes:
    pixels = np.full((20, 24), 1024 + k, np.int16)
    place = {"ImagePositionPatient": [0.0, 0.0, 2.0 * k], "ImageOrientationPatient": [1.0, 0, 0, 0, 1, 0]}
    if deflate:
        return S.deflated_dicom(pixels, PixelSpacing=[0.7, 0.7], **place, **elements)
    return S.dicom(pixels, pixel_spacing=(0.7, 0.7), position=tuple(place.values()))


def test_a_zips_deflated_slices_share_the_limit_each_alone_under_it(monkeypatch):
    """Each deflated slice was checked alone: a 50 MB zip of 100 slices each unpacking to 500 MB (a small
    image beside a large document) unpacked to 50 GB, all kept. Scaled down: 3 slices of 0.4 MB, a 1 MB
    limit."""
    document = b"\0" * 400_000
    files = {f"IM{k}.dcm": _slice(k, deflate=True, EncapsulatedDocument=document) for k in range(3)}
    assert max(map(len, files.values())) < 5_000
    series = _zip(files)
    assert up.decode_medical(series, "ct.zip").num_slices == 3  # under the real limit
    monkeypatch.setattr(up, "MAX_VOLUME_BYTES", MB)
    with pytest.raises(up.UploadError) as err:
        up.decode_medical(series, "ct.zip")
    assert str(err.value).startswith(
        "ct.zip: IM2.dcm: the deflated DICOM data unpacks to more than 0.2 MB, what the zip's other files "
        "leave of the 1.0 MB limit (crop or downsample it first)"
    )


def test_a_zip_series_holds_one_slices_pixel_data_at_a_time_while_the_volume_fills(monkeypatch):
    """Every slice's data set was kept with its pixel data (and the file it was read from, and its decoded
    pixels) until the volume was built: 726 MB for a 256 MB series of 64 slices of 1024x1024."""
    read = []
    real_read, real_values = up._read_dicom, up._dicom_values

    def reading(*args, **kwargs):
        result = real_read(*args, **kwargs)
        read.append(weakref.ref(result[0] if isinstance(result, tuple) else result))
        return result

    holding = []

    def decoding(*args, **kwargs):
        alive = [ref() for ref in read]  # the data sets read and not let go
        holding.append(sum(ds is not None and "PixelData" in ds for ds in alive))
        return real_values(*args, **kwargs)

    monkeypatch.setattr(up, "_read_dicom", reading)
    monkeypatch.setattr(up, "_dicom_values", decoding)
    for deflate in (False, True):
        read.clear()
        holding.clear()
        volume = up.decode_medical(_zip({f"IM{k}.dcm": _slice(k, deflate) for k in range(5)}), "ct.zip")
        assert volume.data[0, :, 0, 0].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
        assert holding == [1] * 5, deflate  # the slice being decoded; it was all 5
        assert all(getattr(ds(), "buffer", None) is None for ds in read)


# ---------------------------------------------------------------------------------------- 2: the NaN count


def test_nan_voxels_are_counted_in_chunks_of_any_view_not_a_byte_per_voxel(monkeypatch):
    """np.isfinite over the whole volume allocated a byte per voxel (128 MB for a float32 one at the limit);
    the display is a transposed, flipped view, so the count must not copy it either."""
    volume = np.zeros((64, 64, 32, 2), np.float32)  # (X, Y, Z, C): 1 MB
    volume[0, 0, 0, 0], volume[63, 63, 31, 1], volume[5, 7, 9, 0] = np.nan, np.inf, -np.inf
    volume[:, 3, 4, 1] = np.nan  # 64 more across the chunks
    display = np.transpose(volume, (3, 2, 1, 0))[:, :, ::-1, ::-1]
    monkeypatch.setattr(up, "_CHUNK_VOXELS", 4096)
    for values in (volume, display):
        notes, _, peak = _traced(lambda v=values: up._non_finite_note(v))
        (note,) = notes
        assert note.startswith("67 of 262,144 voxels are NaN or infinite: shown as the window's low")
        assert peak < 32 * 1024  # a chunk's bytes; it was 256 KB (a byte per voxel)
    assert up._non_finite_note(np.zeros((0, 4), np.float32)) == []
    assert up._non_finite_note(volume.astype(np.int16)) == []


# ----------------------------------------------------------------------------- 3: a NIfTI's slice size first


def _header_only(shape, affine=None, dtype=np.uint8) -> bytes:
    """A NIfTI-1 declaring ``shape`` of ``dtype`` with ``affine`` (sform and qform), with no voxel data."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_data_offset(352)
    affine = np.eye(4) if affine is None else affine
    header.set_sform(affine, code=1)
    header.set_qform(affine, code=1)
    return header.binaryblock + b"\0" * 4


def test_a_49_megapixel_nifti_slice_is_refused_from_its_header_before_decoding(monkeypatch):
    """Decoded first, then refused by the pixel limit; this 352-byte file (49 MB declared, none there) said
    "truncated". Axial, a single coronal and a single sagittal slice: each shown 7000x7000."""
    monkeypatch.setattr(up, "_nifti_values", lambda *a, **k: pytest.fail("the voxels were decoded"))
    for shape in ((7000, 7000, 1), (7000, 1, 7000), (1, 7000, 7000), (7000, 7000)):
        data = _header_only(shape)
        with pytest.raises(up.UploadError) as err:
            up.decode_medical(data, "big.nii")
        assert str(err.value) == (
            "big.nii: the image is 7000x7000 = 49.0 megapixels; the limit is 40.0 megapixels (downscale it "
            "first)"
        ), shape


def test_a_whole_nifti_over_the_pixel_limit_is_refused_with_the_same_message_without_decoding(monkeypatch):
    data = S.nifti(np.zeros((2000, 1000, 1), np.uint8), compressed=True)  # 2 MB of voxels
    expected = "ct.nii.gz: the image is 2000x1000 = 2.0 megapixels; the limit is 1.5 megapixels (downscale it"
    expected += " first)"
    monkeypatch.setattr(up, "_nifti_values", lambda *a, **k: pytest.fail("the voxels were decoded"))
    with pytest.raises(up.UploadError) as err:
        up.decode_medical(data, "ct.nii.gz", max_pixels=1_500_000)
    assert str(err.value) == expected
    monkeypatch.undo()
    assert up.decode_medical(data, "ct.nii.gz", max_pixels=2_000_000).shape2d == (1000, 2000)


def test_the_slice_size_from_the_header_follows_the_affines_orientation():
    """The slices are shown after reorienting to RAS+: a file storing its axial slices along its second axis
    shows them 1000x1000, not the 1000x200 its stored shape suggests (and the other way round)."""
    swap = np.array([[1.0, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])  # j -> S, k -> A
    declared = 200_000_000  # bytes of voxels declared, none there: a header that passes is then "truncated"
    with pytest.raises(up.UploadError, match="the image is 1000x1000 = 1.0 megapixels; the limit is 0.5"):
        up.decode_medical(_header_only((1000, 200, 1000), swap), "swapped.nii", max_pixels=500_000)
    with pytest.raises(up.UploadError, match=f"truncated \\(its header declares {declared:,} bytes"):
        up.decode_medical(_header_only((1000, 200, 1000)), "stored.nii", max_pixels=500_000)


_ROTATED = np.array([[0.5, -0.866, 0, 0], [0.866, 0.5, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1]])  # 60 deg about S
_SAGITTAL = np.array([[0, 0, 1.0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]])  # a stack of sagittal slices
_CORONAL = np.array([[1.0, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])  # a stack of coronal slices


@pytest.mark.parametrize(
    ("shape", "affine"),
    [
        ((20, 24, 18), np.eye(4)),
        ((20, 24, 18), np.diag([-0.7, -0.8, 2.5, 1])),  # LPS, as a DICOM converter writes
        ((20, 24, 18), _SAGITTAL),
        ((20, 24, 18), _CORONAL),
        ((20, 24, 18), _ROTATED),  # oblique: the nearest axes
        ((20, 1, 30), np.eye(4)),  # one coronal slice
        ((1, 20, 30), np.eye(4)),  # one sagittal slice
        ((30, 20), np.eye(4)),  # 2D
        ((20, 24, 3, 2), np.diag([-1.0, 1, 1, 1])),  # 4D
        ((20, 24, 3, 2, 1), np.eye(4)),  # 5D with a last axis of 1
    ],
)
def test_the_slice_size_from_the_header_is_the_decoded_volumes(shape, affine):
    data = S.nifti(np.ones(shape, np.int16), affine=affine)
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(data))
    assert up._nifti_shown_slice(header) == up.decode_medical(data, "v.nii").shape2d
