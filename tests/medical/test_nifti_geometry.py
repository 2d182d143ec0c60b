"""Decathlon volumes keep the image's geometry: its affine (not the label's), the names of linked files, the
header codes; a misnamed file is said as such."""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings

import nibabel as nib
import numpy as np
import pytest

from domains.medical.data import (
    DecathlonSliceDataset,
    MedicalDataError,
    MedicalDataModule,
    MedicalDataWarning,
)
from tests.medical.test_data_splits_predict import _echo_task, _predict
from tests.medical.test_predict_path import AFFINE, _msd

pytestmark = pytest.mark.usefixtures("one_thread")


def _all(root) -> DecathlonSliceDataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MedicalDataWarning)
        return DecathlonSliceDataset(root, "all", crop_size=16, all_slices=True)


def test_a_label_without_geometry_leaves_predictions_on_the_image_and_is_said(tmp_path):
    """The label's identity affine placed predictions off the scan and resized 0.7 x 1.4 mm voxels as 1 x 1."""
    root = _msd(tmp_path / "msd", n_cases=1)
    label = root / "labelsTr" / "case_0.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(nib.load(str(label)).dataobj), np.eye(4)), str(label))
    with pytest.warns(MedicalDataWarning, match=f"{label}: its affine differs from its image {root / 'imagesTr' / 'case_0.nii.gz'}'s"):
        dataset = DecathlonSliceDataset(root, "all", crop_size=16, all_slices=True)
    assert dataset._sources[0]["resized"].tolist() == [16, 16]  # 18 x 0.7 mm by 9 x 1.4 mm: square
    dm = MedicalDataModule("decathlon", str(root), crop_size=16, num_workers=0, dataset_kwargs={"fractions": [0, 0, 1]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MedicalDataWarning)
        _predict(_echo_task(tmp_path / "pred", []), dm)
    np.testing.assert_allclose(nib.load(str(tmp_path / "pred" / "case_0" / "mean_prob.nii.gz")).affine, AFFINE)


def test_linked_files_keep_their_own_names_and_a_broken_link_names_its_entry(tmp_path):
    """git-annex / DVC / HF caches link each file to a blob named by its hash: resolve() made the hash the case's
    name, and predict wrote no NIfTI (the blob has no .nii suffix)."""
    root = _msd(tmp_path / "msd")
    store = root / ".store"
    store.mkdir()
    for path in [*root.glob("imagesTr/*"), *root.glob("labelsTr/*")]:
        blob = store / hashlib.sha1(str(path).encode() + path.read_bytes()).hexdigest()[:16]
        shutil.move(path, blob)
        os.symlink(os.path.relpath(blob, path.parent), path)
    assert [case for case, *_ in _all(root).cases] == ["case_0", "case_1"]
    dm = MedicalDataModule("decathlon", str(root), crop_size=16, num_workers=0, dataset_kwargs={"fractions": [0, 0, 1]})
    _predict(_echo_task(tmp_path / "pred", []), dm)
    assert (tmp_path / "pred" / "case_1" / "mean_prob.nii.gz").is_file()
    target = os.readlink(root / "labelsTr" / "case_1.nii.gz")
    (root / "labelsTr" / target).unlink()
    with pytest.raises(FileNotFoundError) as err:
        _all(root)
    assert str(err.value) == (
        f"{root / 'labelsTr' / 'case_1.nii.gz'}: listed in {root / 'dataset.json'} (training entry 1, label "
        f"'./labelsTr/case_1.nii.gz') but missing: a link to {target}, which does not exist"
    )


def test_a_plain_nifti_named_gz_says_so_with_the_fix(tmp_path):
    root = _msd(tmp_path / "msd", n_cases=1)
    image = root / "imagesTr" / "case_0.nii.gz"
    plain = tmp_path / "plain.nii"
    nib.save(nib.load(str(image)), str(plain))
    image.write_bytes(plain.read_bytes())
    with pytest.raises(MedicalDataError, match=f"{image}: named .gz but not gzip-compressed: rename to .nii"):
        _all(root)
