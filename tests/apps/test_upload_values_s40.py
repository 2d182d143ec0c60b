"""Demo uploads with edge intensities and headers: windows beyond any scan refused naming the file, a slice
scaled in float64 (finite), a NaN voxel size named (not "corrupt or truncated"), an invalid DICOM pixel size
named by its values."""

from __future__ import annotations

import re

import nibabel as nib
import numpy as np
import pytest

from apps import uploads as up
from tests.apps import samples as S

RNG = np.random.default_rng(0)
TISSUE = RNG.normal(40, 300, (32, 32, 3)).astype(np.float32)  # a CT-like volume (HU)


@pytest.mark.parametrize(
    "name, volume, shown",
    [
        ("extreme.nii", np.where(TISSUE > 40, 3e38, -3e38).astype(np.float32), "-3e+38..3e+38"),
        ("fill.nii", np.where(np.arange(32)[:, None, None] < 8, -1e30, TISSUE).astype(np.float32), "-1e+30.."),
    ],
)
def test_an_upload_whose_window_is_beyond_any_scan_is_refused_naming_the_file(name, volume, shown):
    """+-3e38 gave NaN probabilities; a -1e30 'no data' fill showed (and fed the model) every tissue as 1.0."""
    with pytest.raises(up.UploadError, match=rf"^{re.escape(name)}: its intensity window .*{re.escape(shown)}.*background"):
        up.decode_medical(S.nifti(volume), name)


def test_the_slice_is_scaled_in_float64_and_stays_finite_for_values_near_float32_s_limit():
    data = np.array([[-3e38, 0.0], [1.5e38, 3e38]], np.float32)[None, None]
    vol = up.MedicalVolume("edge.nii", "NIfTI", data, -3e38, 3e38)
    np.testing.assert_allclose(vol.slice(), [[0.0, 0.5], [0.75, 1.0]], atol=1e-6)  # float32: NaN at 3e38


def test_a_nan_voxel_size_is_named_not_called_corrupt():
    header = nib.Nifti1Header()
    header.set_data_shape(TISSUE.shape)
    header.set_data_dtype(np.float32)
    header["pixdim"][1:4] = [np.nan, 1, 2]  # qform / sform codes 0: the affine comes from pixdim
    data = nib.Nifti1Image(TISSUE, None, header).to_bytes()
    with pytest.raises(up.UploadError, match=r"^nanpix.nii: its voxel sizes \(pixdim\) \(nan, 1, 2\)") as err:
        up.decode_medical(data, "nanpix.nii")
    assert "corrupt" not in str(err.value)


@pytest.mark.parametrize("spacing, shown", [((0.0, 0.0), "0 x 0 mm"), ((0.7, -0.5), "-0.5 x 0.7 mm")])
def test_an_invalid_dicom_pixel_size_is_named_by_its_values(spacing, shown):
    """It was said as 'the DICOM states no pixel size'."""
    vol = up.decode_medical(S.dicom(np.full((40, 48), 1000, np.int16), pixel_spacing=spacing), "bad.dcm")
    assert vol.spacing is None
    assert any(f"pixel size, {shown}, is no size" in n and "mm window cannot be offered" in n for n in vol.notes)
    assert not any("states no pixel size" in n for n in vol.notes)
