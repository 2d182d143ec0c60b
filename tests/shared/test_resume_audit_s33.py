"""Resume and fine-tune audit: the first step's warm-up, another network on resume, the settings and data a
``fit --ckpt_path`` resume takes, a stop inside an epoch, and ``fit --ckpt_path best``."""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from domains.medical.classification.__main__ import main
from shared.classification.model import ImageClassifier
from shared.classification.task import ClassificationTask
from shared.cli import SuiteTrainer
from shared.optim import adamw, warmup_cosine
from shared.task import CheckpointMismatchError
from tests.helpers import STRIPE_CLASSES, stripes_data, stripes_folder
from tests.shared.tiny_task import SquaresDataModule, TinySegTask

pytestmark = pytest.mark.usefixtures("one_thread")


def _warned(caught, text: str) -> list[str]:
    """The messages of the warnings ``caught`` that hold ``text``."""
    return [str(w.message) for w in caught if text in str(w.message)]


# ------------------------------------------------------------------------------------------------- warm-up


class RecordLR(pl.Callback):
    """The LR each optimiser step runs at (read just before the step)."""

    def __init__(self):
        self.lrs: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.lrs.append(optimizer.param_groups[0]["lr"])


def test_the_first_step_of_a_new_fit_runs_at_the_warm_up_lr():
    """The schedule was built with no length (its factor at step 0 then 1) and given the trainer's plan after:
    step 0 ran at the full LR (0.002 in the detection CSV log, then 0.00067 at step 1)."""
    record = RecordLR()
    trainer = pl.Trainer(max_steps=3, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, limit_val_batches=0, callbacks=[record])  # fmt: skip
    task = TinySegTask(optimizer=adamw(lr=0.01), lr_scheduler=warmup_cosine(warmup_steps=2))
    trainer.fit(task, SquaresDataModule(n_train=12, batch_size=4))
    assert task.schedule_steps == 3
    # warm-up: (step + 1) / (2 + 1) of 0.01, then the cosine's start (factor 1)
    assert record.lrs == pytest.approx([0.01 / 3, 0.02 / 3, 0.01])


# ------------------------------------------------------------------------------------ another network


def _classifier(backbone: str = "tiny_cnn", **network) -> ClassificationTask:
    """The stripes classifier (grey, two classes) on ``backbone``; ``network``: its other settings."""
    net = ImageClassifier(len(STRIPE_CLASSES), backbone, in_channels=1, **network)
    return ClassificationTask(net, STRIPE_CLASSES, optimizer=adamw(lr=0.01))


def _checkpoint_of(task) -> dict:
    """What loading reads of the checkpoint Lightning saves of ``task``: weights, settings, task record."""
    checkpoint = {"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}
    task.on_save_checkpoint(checkpoint)
    return checkpoint


def test_a_deeper_or_shallower_backbone_is_one_error_naming_counts_examples_and_the_setting():
    """A ResNet-34 built on a ResNet-18 checkpoint (same widths: no shape differs) ended in torch's 35-line
    "Missing key(s) in state_dict" RuntimeError, which named neither the setting nor its values."""
    resnet18, resnet34 = _classifier("resnet18"), _classifier("resnet34")
    extra = [key for key in resnet34.state_dict() if key not in resnet18.state_dict()]  # in network order
    # 8 more basic blocks ([3, 4, 6, 3] against [2, 2, 2, 2]) of 2 convolutions and 2 batch norms (5 tensors)
    assert len(extra) == 8 * 12 and not set(resnet18.state_dict()) - set(resnet34.state_dict())
    missing = [key for key in extra if not key.endswith("num_batches_tracked")]  # torch fills those in itself
    resnet34.on_load_checkpoint(_checkpoint_of(resnet18))
    with pytest.raises(CheckpointMismatchError) as err:
        resnet34.load_state_dict(_checkpoint_of(resnet18)["state_dict"])
    assert str(err.value) == (
        "the checkpoint holds another network than the one built here (it was trained with "
        "model.network.init_args.backbone 'resnet18' in the checkpoint, 'resnet34' here): 80 weights of this "
        f"network are not in it, e.g. {', '.join(missing[:3])}. Build it with the model settings it was "
        "trained with (a fit --ckpt_path resume through the CLI takes them from the checkpoint)"
    )
    resnet18.on_load_checkpoint(_checkpoint_of(resnet34))
    shallower = r"'resnet34' in the checkpoint, 'resnet18' here\): 96 of its weights fit nowhere, e\.g\. "
    with pytest.raises(CheckpointMismatchError, match=shallower + r"model\.backbone\.net\.layer1\.2\."):
        resnet18.load_state_dict(_checkpoint_of(resnet34)["state_dict"])
    resnet18.load_state_dict(_checkpoint_of(resnet34)["state_dict"], strict=False)  # asked for: torch's own


def _stripes_fit(tmp_path, task, ckpt_path=None, max_steps: int = 1) -> pl.Trainer:
    """``max_steps`` of ``task`` on the stripes folder ``tmp_path/data`` (from ``ckpt_path`` when given)."""
    fit = SuiteTrainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                       default_root_dir=tmp_path, max_steps=max_steps)  # fmt: skip
    fit.fit(task, stripes_data(tmp_path / "data"), ckpt_path=ckpt_path)
    return fit


def test_a_resume_into_another_network_names_the_setting_and_keys_filled_in_for_older_checkpoints_load(
    tmp_path,
):
    """Through Lightning's restore: a wider backbone names the setting beside the shapes, and a checkpoint
    from before the fitted threshold (which the classification task fills in after BaseTask's hook) still
    resumes, while a weight really missing is the suite's error, not torch's."""
    stripes_folder(tmp_path / "data", {"train": 2, "val": 1})
    _stripes_fit(tmp_path, _classifier()).save_checkpoint(tmp_path / "narrow.ckpt")
    wider = _classifier(backbone_kwargs={"width": 16})
    # 3 stages of 2 convolutions and 2 batch norms (4 shaped tensors each), and the head's weight
    wider_here = (
        r"narrow\.ckpt holds another network than the one built here \(it was trained with "
        r"model\.network\.init_args\.backbone_kwargs None in the checkpoint, \{'width': 16\} here\): "
        r"31 weights differ in shape"
    )
    with pytest.raises(CheckpointMismatchError, match=wider_here):
        _stripes_fit(tmp_path, wider, ckpt_path=tmp_path / "narrow.ckpt", max_steps=2)
    older = torch.load(tmp_path / "narrow.ckpt", weights_only=True)
    del older["state_dict"]["fitted_threshold"]
    torch.save(older, tmp_path / "older.ckpt")
    resumed = _stripes_fit(tmp_path, _classifier(), ckpt_path=tmp_path / "older.ckpt", max_steps=2)
    assert resumed.global_step == 2
    del older["state_dict"]["model.head.bias"]
    torch.save(older, tmp_path / "broken.ckpt")
    lacking = r"broken\.ckpt holds another network than the one built here: 1 weights of this network are not"
    with pytest.raises(CheckpointMismatchError, match=lacking + r" in it, e\.g\. model\.head\.bias\. Build"):
        _stripes_fit(tmp_path, _classifier(), ckpt_path=tmp_path / "broken.ckpt", max_steps=2)


# --------------------------------------------------------------------- what a fit --ckpt_path resume takes


def _cli_args(root) -> list[str]:
    """The medical classification CLI on a grey 16 px ``tiny_cnn`` over the stripes folder ``root``."""
    return [
        "--data.data_format", "imagefolder", "--data.data_path", str(root), "--data.class_names", "[h, v]",
        "--data.image_size", "[16, 16]", "--data.batch_size", "4", "--data.num_workers", "0",
        "--model.network.init_args.backbone", "tiny_cnn", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.logger", "false",
    ]  # fmt: skip


@pytest.fixture
def fitted(tmp_path, monkeypatch):
    """One epoch (one step: 4 images in a batch of 4) of the stripes classifier through the CLI, run in
    ``tmp_path``: (its arguments, its checkpoint folder)."""
    monkeypatch.chdir(tmp_path)
    args = _cli_args(stripes_folder(tmp_path / "data", {"train": 2, "val": 2}))
    cli = main(["fit", *args, "--trainer.max_epochs", "1"])
    assert cli.trainer.global_step == 1 and cli.trainer.checkpoint_callback.best_model_path
    return args, tmp_path / "lightning_logs/medical_classification/checkpoints"


def test_a_resume_takes_the_checkpoints_settings_for_a_path_and_for_last_alike_naming_those_given(fitted):
    """``--ckpt_path FILE`` re-applied the checkpoint's settings over the command line unsaid (a resume with
    --model.max_false_alarm 0.3 trained on at the saved 0.1), while ``last`` took the command line's (and a
    wider network then ended in a size-mismatch error)."""
    args, folder = fitted
    other = ["--model.label_smoothing", "0.2", "--model.network.init_args.backbone_kwargs", '{"width": 16}']
    for ckpt_path in (str(folder / "last.ckpt"), "last"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cli = main(["fit", *args, "--trainer.max_epochs", "2", "--ckpt_path", ckpt_path, *other])
        assert cli.trainer.global_step == 2  # resumed, with the checkpoint's settings
        assert cli.model.hparams.label_smoothing == 0.0
        assert cli.model.model.init_args["backbone_kwargs"] is None  # the checkpoint's width
        expected = (
            f"fit --ckpt_path {ckpt_path} resumes the saved model with its own settings, not this command's: "
            "model.network.init_args.backbone_kwargs {'width': 16} (the checkpoint's: None); "
            "model.label_smoothing 0.2 (the checkpoint's: 0.0). The checkpoint's are used; for other ones "
            "start a new fit (its backbone can come from the checkpoint: --model.pretrained_backbone with "
            "--model.pretrained_prefix)"
        )
        assert _warned(caught, "resumes the saved model") == [expected]
    with warnings.catch_warnings(record=True) as caught:  # the checkpoint's own settings: nothing to say
        warnings.simplefilter("always")
        main(["fit", *args, "--trainer.max_epochs", "3", "--ckpt_path", "last"])
    assert not _warned(caught, "resumes the saved model") and not _warned(caught, "was fitted with")


def test_a_resume_at_another_image_size_or_on_other_data_is_said_with_the_best_checkpoints_ranking(
    fitted, tmp_path
):
    """A 32 px resume of a 64 px fit went on unsaid, and its best checkpoint replaced (and deleted) the 64 px
    one: the best ranks the scores of both set-ups together."""
    args, folder = fitted
    with pytest.warns(UserWarning) as caught:
        main(["fit", *args, "--trainer.max_epochs", "2", "--ckpt_path", "last",
              "--data.image_size", "[24, 24]"])  # fmt: skip
    expected = (
        "fit --ckpt_path last was fitted with data.image_size [16, 16] (this command: [24, 24]): this resume "
        "goes on with other data or input than it trained on; the best checkpoint (--checkpoint.monitor "
        "val/f1_macro) ranks the scores of both set-ups together, so a score on these settings can replace "
        "(and delete) the best one of the checkpoint's. Give the checkpoint's settings to go on as it "
        "trained, or start a new fit (another --checkpoint.dirpath keeps its files apart)"
    )
    assert _warned(caught, "was fitted with") == [expected]
    # at that resume's size, on a copy of the data elsewhere
    moved, path = shutil.copytree(tmp_path / "data", tmp_path / "moved"), str(folder / "last.ckpt")
    with pytest.warns(UserWarning, match=rf"fit --ckpt_path {path} was fitted with data\.data_path '.*data' "
                      r"\(this command: '.*moved'\): this resume goes on with other data"):  # fmt: skip
        main(["fit", *args, "--trainer.max_epochs", "3", "--ckpt_path", path, "--data.image_size", "[24, 24]",
              "--data.data_path", str(moved)])  # fmt: skip


def test_fit_from_best_goes_on_from_the_recorded_best_file(fitted, caplog):
    """Lightning knows "best" only inside the fit that found it: a new `fit --ckpt_path best` failed with
    "`ModelCheckpoint` is not configured to save the best model", which it is."""
    args, folder = fitted
    last = torch.load(folder / "last.ckpt", weights_only=True)
    best = next(s["best_model_path"] for k, s in last["callbacks"].items() if k.startswith("ModelCheckpoint"))
    with caplog.at_level(logging.INFO):
        cli = main(["fit", *args, "--trainer.max_epochs", "2", "--ckpt_path", "best"])
    assert Path(cli.trainer.ckpt_path).resolve() == Path(best).resolve()
    assert cli.trainer.global_step == 2  # the best file's step 1, then epoch 2's
    shown = folder.relative_to(Path.cwd()) / Path(best).name
    assert f"--ckpt_path best: {shown} (the fit goes on from the state saved in it)" in caplog.text


# ---------------------------------------------------------------------------------- a stop inside an epoch


class StopAtStep(pl.Callback):
    """Stops the fit after optimiser step ``step``, as ``max_time`` does (its Timer sets should_stop)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            trainer.should_stop = True


def _squares_fit(folder, ckpt_path=None, callbacks=(), **limits) -> SuiteTrainer:
    """The squares task (4 batches an epoch), saving last.ckpt in ``folder/ckpt``."""
    saves = ModelCheckpoint(dirpath=folder / "ckpt", save_last=True, every_n_epochs=1)
    trainer = SuiteTrainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                           limit_val_batches=1, callbacks=[saves, *callbacks], **limits)  # fmt: skip
    trainer.fit(TinySegTask(), SquaresDataModule(n_train=16, batch_size=4), ckpt_path=ckpt_path)
    return trainer


@pytest.mark.parametrize("stop", ["max_steps", "max_time"])
def test_a_resume_that_skips_the_rest_of_a_stopped_epoch_says_so(tmp_path, stop):
    """Stopped at step 6, inside epoch 1 (2 of its 4 batches): Lightning saves the epoch as finished, and the
    resume to max_epochs 3 started epoch 2, ending at step 10 instead of 12, unsaid."""
    first = {"max_steps": 6} if stop == "max_steps" else {"callbacks": [StopAtStep(6)]}
    assert _squares_fit(tmp_path, max_epochs=8, **first).global_step == 6
    last = tmp_path / "ckpt" / "last.ckpt"
    with pytest.warns(UserWarning) as caught:
        resumed = _squares_fit(tmp_path, ckpt_path=last, max_epochs=3)
    assert resumed.global_step == 10  # Lightning's: if this becomes 12, the warning can go
    expected = (
        f"fit --ckpt_path {last}: its run stopped inside epoch 1 (max_steps, max_time or a callback) after 2 "
        "of its 4 batches, and Lightning resumes at the start of epoch 2: the other 2 batches of epoch 1 are "
        "skipped, not trained on"
    )
    assert _warned(caught, "skipped") == [expected]
    # stopped at an epoch's end (step 8): nothing is skipped, nothing said
    _squares_fit(tmp_path / "b", max_steps=8, max_epochs=8)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*are skipped")
        again = _squares_fit(tmp_path / "b", ckpt_path=tmp_path / "b" / "ckpt" / "last.ckpt", max_epochs=3)
    assert again.global_step == 12
