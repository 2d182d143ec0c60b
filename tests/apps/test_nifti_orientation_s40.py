"""NIfTI uploads, s40: the model gets an uploaded slice as the CLI cuts it, scaled by the checkpoint's percentiles.

The demo showed a NIfTI reoriented to RAS+ in the radiological view and gave the model THAT slice, where training
(``domains.medical.volumes.axial_slices``) keeps each voxel axis in its stored direction: a 24x20x3 volume with an
identity affine had its corner voxel at (0, 0) of the CLI's slice and at (19, 23) of the demo's, so a checkpoint
fitted through the CLI saw uploads turned half a turn (and a file stored with x and y swapped, transposed). The
demo also scaled every volume by the 0.5 / 99.5 percentiles, whatever the checkpoint's ``percentiles`` were."""

from __future__ import annotations

import gzip
import io
import zipfile

import nibabel as nib
import numpy as np
import pytest
import torch

from apps import uploads as up
from domains.medical.data import NiftiImageDataset
from domains.medical.volumes import axial_slices, trained_percentiles
from tests.apps import samples as S
from tests.apps.pages import page_ok, record_downloads, texts, upload_on

pytestmark = pytest.mark.usefixtures("one_thread")

RAS = np.eye(4)
SWAPPED = np.array([[0, 1.0, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])  # stored (y, x, z)
AFFINES = {
    "ras": RAS,
    "lps": np.diag([-1.0, -1.0, 1.0, 1.0]),  # as Decathlon / DICOM converters write: not mirrored for the model
    "superior_first": np.diag([1.0, 1.0, -1.0, 1.0]),
    "swapped": SWAPPED,
    "zyx": np.array([[0, 0, 1.0, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]]),  # head-foot axis first
    "turned": np.array([[0, 0, -1.0, 0], [-1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]]),  # (A, S, R), two flipped
}


def _stored(affine: np.ndarray, world: np.ndarray) -> np.ndarray:
    """``world``, an (R, A, S)-ordered array, laid out as a file with ``affine`` stores it (axes permuted)."""
    order = [int(np.flatnonzero(np.abs(affine[:3, axis]) > 0)[0]) for axis in range(3)]  # stored axis -> world
    return np.ascontiguousarray(np.transpose(world, order))


def _cli_slice(tmp_path, data: bytes, page_index: int, volume: up.MedicalVolume, size: int, percentiles):
    """The slice ``predict`` gives the model for the page's slice ``page_index`` of the file ``data``."""
    path = tmp_path / "scan.nii"
    path.write_bytes(data)
    dataset = NiftiImageDataset([path], ["scan"], crop_size=size, percentiles=percentiles)
    _axis, z = volume.nifti_grid.file_slice(page_index, volume.num_slices)  # the file's own slice
    return dataset.load(z)["image"]


@pytest.mark.parametrize("name", list(AFFINES))
def test_the_model_reads_an_uploaded_slice_as_the_cli_cuts_it(tmp_path, name):
    """Each stored orientation: the slice fitted to the model and turned by ``to_model`` is the CLI's slice
    (24 x 20 voxels padded by 2 rows or columns each side to the 24-pixel input: the CLI pads with zeros, the
    demo with the edge, so the padding is left out), and its maps come back as shown."""
    affine = AFFINES[name]
    world = np.random.default_rng(0).random((24, 20, 3)).astype(np.float32) * 1000  # R 24, A 20, S 3
    data = S.nifti(_stored(affine, world), affine=affine)
    volume = up.decode_medical(data, "scan.nii")
    assert volume.shape2d == (20, 24)  # shown: anterior up, the patient's right on the left, whatever the file
    for index in range(volume.num_slices):
        fitted, _ = up.fit_to_model(volume.slice(index), 24, "resize", volume.spacing)
        model_input = volume.to_model(fitted)
        expected = _cli_slice(tmp_path, data, index, volume, 24, up.PERCENTILES)
        inside = np.ix_(expected.any(axis=1), expected.any(axis=0))  # the CLI's zero padding left out
        assert expected[inside].size == 24 * 20
        np.testing.assert_allclose(model_input[inside], expected[inside], atol=1e-5)
        np.testing.assert_array_equal(volume.from_model(model_input), fitted)
        np.testing.assert_array_equal(volume.from_model(np.stack([model_input] * 2)), np.stack([fitted] * 2))


def test_the_audits_marker_is_where_the_cli_puts_it_and_shown_where_it_was():
    """The audit's 24x20x3 volume, identity affine, a marker at voxel (0, 0) of each slice: the CLI's slice
    (and now the model's input) has it at row 0 (+2 rows of padding), column 0; the page still shows it at
    (19, 23), the patient's left-posterior corner in the radiological view."""
    volume = np.zeros((24, 20, 3), np.float32)
    volume[0, 0, :] = 1000.0
    decoded = up.decode_medical(S.nifti(volume), "marker.nii", percentiles=(0.0, 100.0))  # min..max: one maximum
    shown = decoded.slice(1)
    assert shown.shape == (20, 24) and np.argwhere(shown == 1.0).tolist() == [[19, 23]]
    fitted, _ = up.fit_to_model(shown, 24, "resize", decoded.spacing)
    assert np.argwhere(decoded.to_model(fitted)[2:22] == 1.0).tolist() == [[0, 0]]  # the padding left out
    assert decoded.model_view == (False, True, True)  # half a turn, no transpose


def test_a_single_coronal_slice_and_a_png_go_to_the_model_as_shown():
    """Training cuts axial slices only: one coronal slice (and a 2-D image) has no other way to give."""
    coronal = up.decode_medical(S.nifti(np.zeros((64, 1, 80), np.int16)), "coronal.nii")
    png = up.decode_medical(S.png(np.zeros((20, 30), np.uint8)), "slice.png")
    image = np.arange(12, dtype=np.float32).reshape(3, 4)
    for volume in (coronal, png):
        assert volume.model_view is None
        assert volume.to_model(image) is image and volume.from_model(image) is image


def test_a_checkpoints_percentiles_set_the_window_of_an_upload():
    """The window was the 0.5 / 99.5 percentiles whatever the checkpoint learnt with; it is the checkpoint's
    ``dataset_kwargs.percentiles`` (the Decathlon default where it records none), for NIfTI and DICOM alike."""
    assert trained_percentiles({"data_format": "decathlon", "dataset_kwargs": {"percentiles": [5, 95]}}) == (5.0, 95.0)
    assert trained_percentiles({"data_format": "lidc_png", "dataset_kwargs": None}) == (0.5, 99.5) == up.PERCENTILES
    assert trained_percentiles(None) == (0.5, 99.5)
    values = np.arange(20 * 16 * 4, dtype=np.float32).reshape(20, 16, 4)
    volume = up.decode_medical(S.nifti(values), "ct.nii", percentiles=(5.0, 95.0))
    lo, hi = np.percentile(values.astype(np.float64), [5, 95])
    assert (volume.lo, volume.hi) == pytest.approx((lo, hi))
    assert "(5-95 percentiles of the volume) mapped to 0..1" in volume.notes[0]
    dicom = up.decode_medical(S.dicom(np.arange(24 * 20).reshape(24, 20)), "ct.dcm", percentiles=(10.0, 90.0))
    assert "(10-90 percentiles, as a NIfTI's)" in dicom.notes[0]
    assert dicom.hi - dicom.lo == pytest.approx(np.ptp(np.percentile(np.arange(24 * 20.0), [10, 90])))


@pytest.mark.parametrize("affine", [RAS, SWAPPED], ids=["ras", "swapped"])
def test_the_page_gives_the_model_the_cli_slice_scaled_by_its_checkpoints_percentiles(
    demo_env, monkeypatch, tmp_path, affine
):
    """Through the page, with one's own checkpoint fitted at percentiles 5 / 95: the model's input is the slice
    ``predict`` gives it (it was turned half a turn, transposed for a file stored (y, x, z), and scaled by 0.5 /
    99.5), and its mean mask lands on the voxels it was computed from (a stand-in model: mean = input >= 0.5)."""
    from apps import demo_models as dm

    given = []

    def thresholded_input(task, image, num_samples, seed):
        given.append(image.copy())
        mean = (image >= 0.5).astype(np.float32)
        return {"probs": np.stack([mean] * num_samples), "mean": mean, "uncertainty": np.zeros_like(mean)}

    monkeypatch.setattr(dm, "medical_predict", thresholded_input)
    made = record_downloads(monkeypatch)
    checkpoint = torch.load(demo_env["checkpoints"] / "medical_unet.ckpt", weights_only=True)
    checkpoint["datamodule_hyper_parameters"] = {
        "data_format": "decathlon",
        "data_path": str(tmp_path),
        "crop_size": 128,
        "dataset_kwargs": {"percentiles": [5.0, 95.0]},
    }
    own = tmp_path / "decathlon_unet.ckpt"
    torch.save(checkpoint, own)
    world = np.zeros((128, 128, 3), np.float32)  # 128x128: fed as it is, no resize to differ by
    world += np.linspace(0, 400, 128, dtype=np.float32)[:, None, None]  # rises to the patient's right
    world[20:50, 90:120, :] += 600  # a lesion, right-anterior
    data = S.nifti(_stored(affine, world), compressed=True, affine=affine)
    at = upload_on("medical", "ct.nii.gz", data)
    at.text_input(key="own_path_medical_unet").set_value(str(own)).run()
    page_ok(at)
    assert at.selectbox(key="medical_model").value == "medical_unet"
    volume = up.decode_medical(data, "ct.nii.gz", percentiles=(5.0, 95.0))
    expected = _cli_slice(tmp_path, gzip.decompress(data), 1, volume, 128, (5.0, 95.0))
    np.testing.assert_allclose(given[-1], expected, atol=1e-5)
    assert "(5-95 percentiles of the volume)" in texts(at.info)  # the upload's notes say so
    name = next(n for n in made if n.endswith("_mean_mask.nii.gz") and "_slices_" not in n)
    mask = np.asanyarray(nib.Nifti1Image.from_bytes(gzip.decompress(made[name]())).dataobj)
    cut = axial_slices(mask, affine)
    np.testing.assert_array_equal(cut[1], given[-1] >= 0.5)  # the file's slice 1, as the model read it
    assert cut[1].any() and not cut[[0, 2]].any()
    readme = zipfile.ZipFile(io.BytesIO(made["ct_slice_1_segmentations.zip"]())).read("README.txt").decode()
    assert "model_input/ is turned as the page shows it; the model read it as training cuts" in readme
