"""A Decathlon ``modality_index`` the images have no channel for is refused when the set is listed, naming the
file and the valid range: it was found only at the first training batch, after the model was built."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from domains.medical.data import DecathlonSliceDataset, MedicalDataError


def test_a_modality_index_past_the_channels_is_refused_at_setup(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    label = np.zeros((8, 8, 2), np.uint8)
    label[2:5, 2:5, 0] = 1
    nib.save(nib.Nifti1Image(np.ones((8, 8, 2, 2), np.float32), np.eye(4)), tmp_path / "imagesTr" / "a.nii.gz")
    nib.save(nib.Nifti1Image(label, np.eye(4)), tmp_path / "labelsTr" / "a.nii.gz")
    meta = {"modality": {"0": "FLAIR", "1": "T1w"}, "labels": {"0": "background", "1": "lesion"},
            "training": [{"image": "imagesTr/a.nii.gz", "label": "labelsTr/a.nii.gz"}]}  # fmt: skip
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(MedicalDataError, match=r"a\.nii\.gz: modality_index=5 but the image has 2 channel.*0\.\.1"):
        DecathlonSliceDataset(tmp_path, "all", crop_size=16, modality_index=5)
    assert len(DecathlonSliceDataset(tmp_path, "all", crop_size=16, modality_index=1)) == 2
