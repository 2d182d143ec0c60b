"""A resumed run with max_steps set that Lightning ends one epoch early is said, with the way on."""

from __future__ import annotations

import warnings

import pytest
from pytorch_lightning.callbacks import ModelCheckpoint

from shared.cli import SuiteTrainer
from tests.shared.tiny_task import SquaresDataModule, TinySegTask

pytestmark = pytest.mark.usefixtures("one_thread")


def _trainer(tmp_path, **limits) -> SuiteTrainer:
    every_epoch = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_epochs=1)
    return SuiteTrainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=1, callbacks=[every_epoch], **limits)  # fmt: skip


def test_a_resume_that_lightning_ends_an_epoch_early_is_said(tmp_path):
    """4 steps per epoch: 16 steps, then resumed to max_steps 32 with max_epochs 8, stopped at step 28 (Lightning
    2.6 counts the saved epoch twice in an iteration-based resume) without a word."""
    data = lambda: SquaresDataModule(n_train=16, batch_size=4)
    _trainer(tmp_path, max_steps=16, max_epochs=8).fit(TinySegTask(), data())
    resumed = _trainer(tmp_path, max_steps=32, max_epochs=8)
    short = r"stopped at max_epochs 8 after 28 steps, one epoch \(4 steps\) short of the 32 planned"
    with pytest.warns(UserWarning, match=short):
        resumed.fit(TinySegTask(), data(), ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert resumed.global_step == 28  # Lightning's count: if this becomes 32, the warning can go
    # the way on the warning gives: max_steps alone ends the next resume, at 32
    rest = _trainer(tmp_path, max_steps=32, max_epochs=-1)
    rest.fit(TinySegTask(), data(), ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert rest.global_step == 32
    # a resume that max_steps ends where it should: nothing said
    _trainer(tmp_path / "b", max_steps=16, max_epochs=8).fit(TinySegTask(), data())
    again = _trainer(tmp_path / "b", max_steps=20, max_epochs=8)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*short of the")
        again.fit(TinySegTask(), data(), ckpt_path=tmp_path / "b" / "ckpt" / "last.ckpt")
    assert again.global_step == 20
