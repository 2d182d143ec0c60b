"""Medical inputs at the edges of their values: a 2-D image too small for the network is skipped and named by
``predict`` (the others predicted); percentile windows beyond any scan, float64 values beyond float32 and a
constant volume are named by file; a NaN voxel size is named, not an SVD error."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest

from domains.medical.data import MedicalDataError, MedicalDataModule, NiftiImageDataset, build_predict_dataset
from tests.helpers import medical_task, quiet_trainer

pytestmark = pytest.mark.usefixtures("one_thread")

TISSUE = np.random.default_rng(0).normal(40, 300, (16, 16, 3)).astype(np.float32)  # CT-like (HU)


def _nifti(path: Path, volume: np.ndarray, header: nib.Nifti1Header | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(volume, None if header is not None else np.eye(4), header), str(path))
    return path


def test_a_png_too_small_for_the_network_is_skipped_and_named_the_others_predicted(tmp_path):
    """An 8x8 PNG left a 1x1 map at the Prob. U-Net's stride 8, whose norms (GroupNorm) raised "Expected more
    than 1 value per channel" mid-run: no file named, nothing written for the good images."""
    rng = np.random.default_rng(1)
    (tmp_path / "in").mkdir()
    for name, side in (("a", 40), ("b", 33), ("thumb", 8)):
        cv2.imwrite(str(tmp_path / "in" / f"{name}.png"), rng.integers(0, 255, (side, side), dtype=np.uint8))
    task = medical_task(
        "prob_unet",
        {"channels": [8, 16, 32, 64], "latent_dim": 2},
        num_samples=2,
        predict_dir=str(tmp_path / "out"),
    )
    data = MedicalDataModule(crop_size=32, batch_size=2, num_workers=0, predict_path=str(tmp_path / "in"))
    with pytest.warns(
        UserWarning,
        match=r"1 of 3 files are not predicted, too small for the network: .*thumb\.png: "
        r"8x8 pixels, too small for ProbabilisticUNet .*at least 16x16 pixels",
    ):
        quiet_trainer().predict(task, datamodule=data)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a", "b"]
    probed = dict(task._predict_probes)
    assert task.predict_size_problem(64, 70) is None  # a large image is not run through the network to know
    assert task._predict_probes == probed


@pytest.mark.parametrize(
    "volume, shown",
    [
        (
            np.where(TISSUE > 40, 3e38, -3e38).astype(np.float32),
            r"-3e\+38\.\.3e\+38",
        ),  # predict wrote NaN maps
        (
            np.where(np.arange(16)[:, None, None] < 4, -1e30, TISSUE).astype(np.float32),
            r"-1e\+30\.\.",
        ),  # all 1.0
    ],
)
def test_a_window_beyond_any_scan_is_refused_naming_the_file(tmp_path, volume, shown):
    path = _nifti(tmp_path / "scan.nii.gz", volume)
    dataset = build_predict_dataset(path, crop_size=16)
    with pytest.raises(
        MedicalDataError,
        match=rf"^{re.escape(str(path))}: its intensity window \(0\.5-99\.5 percentiles, "
        rf"modality_index=0\) {shown}.*background value",
    ):
        dataset.load(0)


def test_float64_values_beyond_float32_are_said_as_such_not_as_nan(tmp_path):
    volume = TISSUE.astype(np.float64)
    volume[0, 0, 0] = 1e300
    path = _nifti(tmp_path / "f64.nii.gz", volume)
    with pytest.raises(
        MedicalDataError,
        match=rf"^{re.escape(str(path))}: 1 of 768 voxels .*float64 values beyond .*not "
        "representable as float32",
    ):
        build_predict_dataset(path, crop_size=16).load(0)


def test_a_constant_volume_is_warned_of_by_name_not_by_monai_s_bare_line(tmp_path):
    path = _nifti(tmp_path / "flat.nii.gz", np.full((16, 16, 3), 7.0, np.float32))
    dataset = build_predict_dataset(path, crop_size=16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset.load(0)
    messages = [str(w.message) for w in caught]
    assert any(
        m.startswith(f"{path}: its 0.5-99.5 intensity percentiles (modality_index=0) are both 7")
        for m in messages
    )
    assert not any("Divide by zero" in m for m in messages)


def test_a_nan_voxel_size_is_named_with_its_zooms_not_an_svd_error(tmp_path):
    header = nib.Nifti1Header()
    header.set_data_shape(TISSUE.shape)
    header.set_data_dtype(np.float32)
    header["pixdim"][1:4] = [np.nan, 1, 2]  # qform / sform codes 0: the affine comes from pixdim
    bad = _nifti(tmp_path / "scans" / "nanpix.nii.gz", TISSUE, header)
    _nifti(tmp_path / "scans" / "good.nii.gz", TISSUE)
    with pytest.warns(
        UserWarning,
        match=rf"1 of 2 files are not predicted, unreadable: {re.escape(str(bad))}: its voxel sizes "
        r"\(pixdim\) \(nan, 1, 2\)",
    ):
        dataset = build_predict_dataset(tmp_path / "scans", crop_size=16)
    assert [case[0] for case in dataset.cases] == ["good"]
    with pytest.raises(
        MedicalDataError, match=rf"^{re.escape(str(bad))}: its voxel sizes \(pixdim\) \(nan, 1, 2\)"
    ):
        NiftiImageDataset([bad], ["nanpix"])  # read as training reads its volumes' headers
