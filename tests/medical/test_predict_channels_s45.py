"""A NIfTI to predict that lacks the channel ``modality_index`` asks for is refused when the predict set is built
(from its header, named in the one warning), not when its first slice is read half-way through ``predict``."""

from __future__ import annotations

import pytest

from domains.medical.data import MedicalDataError, MedicalDataWarning, build_predict_dataset
from tests.medical.test_predict_path import _volume


def test_a_volume_without_the_channel_is_named_up_front_and_the_others_are_predicted(tmp_path):
    _volume(tmp_path / "two.nii.gz", 0)  # 2 channels
    _volume(tmp_path / "one.nii.gz", 1, shape=(18, 9, 4))  # 1 channel
    with pytest.warns(MedicalDataWarning) as caught:
        dataset = build_predict_dataset(tmp_path, 16, modality_index=1)
    (message,) = [str(w.message) for w in caught]
    assert "1 of 2 files are not predicted, without the channel asked for" in message
    assert (
        f"{tmp_path / 'one.nii.gz'}: modality_index=1 but the image has 1 channel(s): this model reads channel 1 "
        "(its checkpoint's modality_index)" in message
    )  # not the training set's advice to give another modality_index: the checkpoint's is the one to read
    assert [name for name, _path, _label in dataset.cases] == ["two"]
    assert len(dataset) == 4  # the 4 axial slices of the 2-channel volume, the second channel of each
    assert dataset.not_predicted == [message.split("without the channel asked for: ")[1]]


def test_none_with_the_channel_says_so_not_unreadable(tmp_path):
    _volume(tmp_path / "one.nii.gz", 1, shape=(18, 9, 4))
    with pytest.warns(MedicalDataWarning), pytest.raises(MedicalDataError) as raised:
        build_predict_dataset(tmp_path, 16, modality_index=3)
    assert str(raised.value).startswith(
        f"--data.predict_path {tmp_path}: none of its 1 files can be predicted (without the channel asked for): "
        f"{tmp_path / 'one.nii.gz'}: modality_index=3"
    )
