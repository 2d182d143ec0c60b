"""A checkpoint is evaluated and predicted on the inputs it was fitted on: other input settings are refused."""

from __future__ import annotations

import re
import warnings

import pytest

from domains.medical.data import MedicalDataModule
from shared.task import CheckpointMismatchError
from tests.helpers import quiet_trainer
from tests.medical.test_data_splits_predict import _echo_task
from tests.medical.test_predict_path import _msd

pytestmark = pytest.mark.usefixtures("one_thread")

FITTED = {"modality_index": 1, "foreground_labels": ["x"], "fractions": [0, 0, 1]}


def _module(root, **kw) -> MedicalDataModule:
    return MedicalDataModule("decathlon", str(root), crop_size=16, num_workers=0, **kw)


def test_other_input_settings_than_the_checkpoint_s_are_refused_naming_setting_values_and_option(tmp_path):
    """Fitted on channel 1 with label "x", a test without dataset_kwargs scored channel 0 against every label."""
    root = _msd(tmp_path / "msd")
    trained = dict(_module(root, dataset_kwargs=FITTED).hparams)
    now = _module(root, dataset_kwargs={"fractions": [0, 0, 1]})
    expected = "the checkpoint (--ckpt_path) was fitted with data.dataset_kwargs modality_index 1 (this command: 0, the default):"
    with pytest.raises(CheckpointMismatchError, match=re.escape(expected)) as err:
        now.other_split_than(trained, "test")  # what the CLI calls before validate / test
    assert "--data.dataset_kwargs '{fractions: [0, 0, 1], modality_index: 1}'" in str(err.value)
    # labels: null (every non-zero label) is [x] on this 0 / 1 set; a label it does not declare differs
    other = _module(root, dataset_kwargs={"modality_index": 1, "foreground_labels": [2], "fractions": [0, 0, 1]})
    with pytest.raises(CheckpointMismatchError, match=r"foreground_labels \[1\] \(this command: \[2\]\)"):
        other.other_split_than(trained, "test")
    with pytest.raises(CheckpointMismatchError, match=r"data\.crop_size 16 \(this command: 32\).*--data\.crop_size 16"):
        MedicalDataModule("decathlon", str(root), crop_size=32, dataset_kwargs=FITTED).check_checkpoint_inputs(
            trained, "predict"
        )
    # settings that do not change what the network sees pass; a label by name is its value
    same = {"modality_index": 1, "foreground_labels": [1], "cache_volumes": 1, "empty_ratio": 0.0, "fractions": [0, 0, 1]}
    kept = _module(root, batch_size=3, max_items=5, dataset_kwargs=same)
    assert kept.other_split_than(trained, "test") is None
    # a checkpoint's settings as YAML gives them (lists) equal the defaults (tuples)
    listed = {**trained, "dataset_kwargs": {**FITTED, "percentiles": [0.5, 99.5]}}
    _module(root, dataset_kwargs=FITTED).check_checkpoint_inputs(listed, "test")
    # predict scores nothing: the labels may differ there
    _module(root, dataset_kwargs={"modality_index": 1}).check_checkpoint_inputs(trained, "predict")


def test_predict_refuses_a_checkpoint_fitted_on_other_inputs(tmp_path):
    """The CLI checks the split only before validate / test: predict wrote channel 0's segmentations."""
    root = _msd(tmp_path / "msd")
    task = _echo_task(tmp_path / "pred", [])
    trainer = quiet_trainer()
    trainer.predict(task, datamodule=_module(root, dataset_kwargs=FITTED))
    trainer.save_checkpoint(tmp_path / "fitted.ckpt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CheckpointMismatchError, match=r"fitted\.ckpt was fitted with data\.dataset_kwargs modality_index 1"):
            quiet_trainer().predict(task, datamodule=_module(root, dataset_kwargs={"fractions": [0, 0, 1]}), ckpt_path=tmp_path / "fitted.ckpt")
        own = MedicalDataModule(crop_size=16, num_workers=0, predict_path=str(root / "imagesTs"))
        with pytest.raises(CheckpointMismatchError, match="modality_index 1"):
            quiet_trainer().predict(task, datamodule=own, ckpt_path=tmp_path / "fitted.ckpt")
        allowed = _module(root, batch_size=2, dataset_kwargs={**FITTED, "cache_volumes": 1})
        quiet_trainer().predict(task, datamodule=allowed, ckpt_path=tmp_path / "fitted.ckpt")
        # the fix the refusal gives works as pasted, under the configs' data_format (lidc_png): NIfTI volumes go
        # through the Decathlon reader's settings whatever the format (it was "not an option of the lidc_png reader")
        fixed = MedicalDataModule(
            crop_size=16, num_workers=0, predict_path=str(root / "imagesTs"), dataset_kwargs={"modality_index": 1}
        )
        quiet_trainer().predict(task, datamodule=fixed, ckpt_path=tmp_path / "fitted.ckpt")
        # 2-D images are read whole: the volumes' settings are not asked for
        import numpy as np
        from PIL import Image

        (tmp_path / "pngs").mkdir()
        Image.fromarray(np.full((20, 24), 90, np.uint8)).save(tmp_path / "pngs" / "a.png")
        pngs = MedicalDataModule(crop_size=16, num_workers=0, predict_path=str(tmp_path / "pngs"))
        quiet_trainer().predict(task, datamodule=pngs, ckpt_path=tmp_path / "fitted.ckpt")
