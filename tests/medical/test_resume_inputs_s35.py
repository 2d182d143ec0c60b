"""A ``fit --ckpt_path`` resume of a medical checkpoint at another crop size went on unsaid (the resume warning
covered the other tasks' ``image_size``): it now names ``data.crop_size``, as ``validate`` and ``test`` do."""

from __future__ import annotations

import warnings

import pytest

from domains.medical.__main__ import main
from domains.medical.data import MedicalDataModule
from tests.medical.test_cli import tiny_args

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_resume_at_another_crop_size_is_said(lidc, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [*tiny_args(lidc, "unet"), "--trainer.limit_val_batches", "1", "--data.crop_size", "32"]
    main(["fit", *args, "--trainer.max_steps", "1"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main(["fit", *args[:-1], "16", "--trainer.max_steps", "2", "--ckpt_path", "last"])
    said = [str(w.message) for w in caught if "was fitted with" in str(w.message)]
    assert len(said) == 1 and "was fitted with data.crop_size 32 (this command: 16): this resume goes on" in said[0]


def test_the_decathlon_input_settings_are_named_beside_the_crop():
    """The channel and intensity window a Decathlon network reads: a resume on another one is named too."""
    dm = MedicalDataModule(data_format="decathlon", data_path="anywhere", crop_size=96, num_workers=0,
                           dataset_kwargs={"modality_index": 1})  # fmt: skip
    trained = {"data_format": "decathlon", "crop_size": 128, "dataset_kwargs": {"modality_index": 2}}
    assert dm.other_input_than(trained) == (
        "data.crop_size 128 (this command: 96), data.dataset_kwargs modality_index 2 (this command: 1)"
    )
    same = {"data_format": "decathlon", "crop_size": 96, "dataset_kwargs": {"modality_index": 1}}
    assert dm.other_input_than(same) is None
