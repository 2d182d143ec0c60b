"""The CLI's logs and messages: a failed fit's report names no log folder the CLI then removes as empty, a value
of the wrong type is one line (not the usage of every option), as is a ``--trainer.devices`` Lightning refuses,
and an evaluation of a checkpoint fitted with ``--trainer.max_time`` says nothing of the Timer (a fit-only
state)."""

from __future__ import annotations

import re
import sys
import warnings

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from jsonargparse import ArgumentError

from shared.cli import _FIT_ONLY_CALLBACKS_WARNING, SuggestingArgumentParser, run_cli
from shared.cli_help import _is_input_error, report_input_errors
from tests.helpers import REPO
from tests.shared.tiny_task import SquaresDataModule, TinySegTask

pytestmark = pytest.mark.usefixtures("one_thread")

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


# ------------------------------------------------------------------- 1: the report of a fit that logged nothing


class FailAtStep2(pl.Callback):
    """Fails the fit after its second step (values logged by then, with ``log_every_n_steps`` 1)."""

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == 2:
            raise RuntimeError("failed at step 2")


def _notified_fit(webhook, *args: str) -> dict:
    """A tiny CLI fit with ``args``, notified to ``webhook``, failing; the report sent."""
    notify = [
        "--trainer.callbacks+=shared.notify.NotifyWhenDone", f"--trainer.callbacks.init_args.webhook_url={webhook.url}",
    ]  # fmt: skip
    with pytest.raises((ValueError, RuntimeError)):
        run_cli(TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss",
                args=["fit", "--trainer.max_steps", "3", "--trainer.limit_val_batches", "1", *QUIET, *args, *notify])
    ((_, report),) = webhook.received
    assert report["status"] == "failed", report
    return report


def test_a_fit_failing_before_its_first_value_names_no_removed_log_folder(tmp_path, monkeypatch, webhook):
    """The report named ``csv/version_0``, which the CLI removed as empty right after sending it."""
    monkeypatch.chdir(tmp_path)
    report = _notified_fit(webhook, "--data.batch_size", "0")  # the DataLoader refuses it inside fit
    assert "batch_size" in report["error"]
    assert not list(tmp_path.glob("lightning_logs/tiny/*/version_*"))  # removed: it held no value
    assert report["run"] == "tiny (csv: no values logged)", report["run"]
    assert "version_" not in report["text"]


def test_a_fit_failing_after_logging_names_its_kept_log_folder(tmp_path, monkeypatch, webhook):
    monkeypatch.chdir(tmp_path)
    report = _notified_fit(
        webhook, "--trainer.log_every_n_steps", "1", "--trainer.callbacks+=tests.shared.test_cli_logs_s40.FailAtStep2"
    )
    assert report["error"] == "RuntimeError: failed at step 2"
    assert report["run"] == "tiny (csv/version_0)", report["run"]
    assert (tmp_path / "lightning_logs/tiny/csv/version_0/metrics.csv").is_file()


# ------------------------------------------------------------------------ 2: a wrong value is one line

MEDICAL = REPO / "domains/medical/configs/unet.yaml"
DETECTION = REPO / "domains/driving/detection/configs/quick.yaml"
QUICK = REPO / "domains/medical/configs/quick.yaml"
CLASSIFICATION = REPO / "domains/driving/classification/configs/quick.yaml"
NOTIFY = "--trainer.callbacks+=shared.notify.NotifyWhenDone"
COSINEE = (
    "--model.lr_scheduler: class_path 'shared.optim.WarmupCosinee': module 'shared.optim' has no attribute "
    "'WarmupCosinee'"
)


@pytest.mark.parametrize(
    ("module", "config", "args", "said"),
    [
        ("domains.medical", MEDICAL, ["--trainer.max_epochs", "abc"], "--trainer.max_epochs: expected an int, got 'abc'"),
        ("domains.medical", MEDICAL, ["--data.batch_size", "1.5"], "--data.batch_size: expected an int, got '1.5'"),
        ("domains.medical", MEDICAL, ["--model.threshold", "x"], "--model.threshold: expected a float, got 'x'"),
        ("domains.medical", MEDICAL, ["--model.optimizer.init_args.lr", "x"],
         "--model.optimizer.init_args.lr: expected a float, got 'x'"),
        ("domains.medical", MEDICAL, ["--data.augment", "maybe"], "--data.augment: expected true or false, got 'maybe'"),
        ("domains.medical", MEDICAL, ["--data.reader_sampling", "most"],
         "--data.reader_sampling: expected one of {random, all}, got 'most'"),
        ("domains.medical", MEDICAL, ["--model.network", "nowhere.Net"],
         "--model.network: class_path 'nowhere.Net': No module named 'nowhere'"),
        ("domains.medical", MEDICAL, ["--model.network.init_args.channels", "abc"],
         "--model.network.init_args.channels: expected a list, got 'abc'"),
        ("domains.driving.detection", DETECTION, ["--trainer.max_epochs", "abc"],
         "--trainer.max_epochs: expected an int, got 'abc'"),
        ("domains.driving.detection", DETECTION, ["--data.batch_size", "1.5"],
         "--data.batch_size: expected an int, got '1.5'"),
        ("domains.driving.detection", DETECTION, ["--data.augment", "maybe"],
         "--data.augment: expected true or false, got 'maybe'"),
        ("domains.driving.detection", DETECTION, ["--data.data_format", "voc"],
         "--data.data_format: expected one of {kitti, coco, yolo}, got 'voc'"),
        ("domains.driving.detection", DETECTION, ["--trainer.callbacks+=nowhere.Callback"],
         "--trainer.callbacks: class_path 'nowhere.Callback': No module named 'nowhere'"),
        ("domains.driving.detection", DETECTION, ["--model.network", "torch.nn.Linear"],
         "--model.network: torch.nn.Linear is not a RoadDetector (nor a subclass of it)"),
        # an Optional class path that does not load was "expected null"; a Callable's, the usage and 5 lines
        ("domains.medical", QUICK, ["--model.lr_scheduler", "shared.optim.WarmupCosinee"],
         COSINEE),
        ("domains.medical", QUICK, ["-c", "model: {lr_scheduler: shared.optim.WarmupCosinee}"],
         COSINEE),
        ("domains.medical", QUICK, ["--model.lr_scheduler", "torch.optim.AdamW"],
         "--model.lr_scheduler: class_path 'torch.optim.AdamW': not a subclass of LRScheduler or ReduceLROnPlateau"),
        ("domains.driving.classification", CLASSIFICATION, ["--model.lr_scheduler", "nowhere.Sched"],
         "--model.lr_scheduler: class_path 'nowhere.Sched': No module named 'nowhere'"),
        ("domains.medical", QUICK, ["--model.optimizer", "torch.optim.SGDD"],
         "--model.optimizer: class_path 'torch.optim.SGDD': module 'torch.optim' has no attribute 'SGDD'"),
        ("domains.driving.classification", CLASSIFICATION, ["-c", "model: {optimizer: torch.optim.SGDD}"],
         "--model.optimizer: class_path 'torch.optim.SGDD': module 'torch.optim' has no attribute 'SGDD'"),
        # a class's own option: its own error, not that of the union's other class (pytorch_lightning.Callback)
        ("domains.driving.classification", CLASSIFICATION, [NOTIFY, "--trainer.callbacks.init_args.timeout", "abc"],
         "--trainer.callbacks.init_args.timeout: expected a float, got 'abc'"),
        # the value as given, not jsonargparse's NestedArg(...), "... Got value: Namespace(...)" or the whole dict
        ("domains.medical", QUICK, ["--model.lr_scheduler.init_args.warmup_steps", "abc"],
         "--model.lr_scheduler.init_args.warmup_steps: expected an int, got 'abc'"),
        ("domains.medical", QUICK, ["--model.optimizer.init_args.betas", "abc"],
         "--model.optimizer.init_args.betas: expected a list, got 'abc'"),
        ("domains.medical", QUICK,
         ["-c", "model: {lr_scheduler: {class_path: torch.optim.lr_scheduler.StepLR, init_args: {step_size: abc}}}"],
         "--model.lr_scheduler.init_args.step_size: expected an int, got 'abc'"),
        ("domains.driving.classification", CLASSIFICATION, ["--trainer.logger", "bogus"],
         "--trainer.logger: expected a Logger class path or an Iterable or true or false, got 'bogus'"),
    ],
)  # fmt: skip
def test_a_value_of_the_wrong_type_is_one_line(module, config, args, said, capsys, monkeypatch):
    """jsonargparse printed the usage of every option (90-100 lines), then 2-10 lines of Python types."""
    main = __import__(f"{module}.__main__", fromlist=["main"]).main
    monkeypatch.setattr(sys, "argv", ["python"])  # pytest's own arguments: Lightning warns of both given
    with pytest.raises(SystemExit) as stop:
        main(["fit", "-c", str(config), *args])
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines() == [f"python -m {module} fit: {said}"]


def test_a_wrong_value_in_a_config_file_and_in_test_is_one_line(tmp_path, capsys, monkeypatch):
    from domains.medical.__main__ import main

    monkeypatch.setattr(sys, "argv", ["python"])
    (mine := tmp_path / "mine.yaml").write_text("trainer:\n  precision: 17\n")
    with pytest.raises(SystemExit) as stop:
        main(["test", "-c", str(MEDICAL), "-c", str(mine)])
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("python -m domains.medical test: --trainer.precision: expected one of {64, 32, 16, ")
    assert line.endswith(", bf16-mixed, 32-true, 64-true, bf16}, got '17'"), line


def test_devices_lightning_refuses_are_one_line(tmp_path, monkeypatch, capsys):
    """Lightning refuses ``--trainer.devices 1.5`` with a TypeError, which printed a 30-line traceback: one line
    naming the option as typed; other TypeErrors (bugs) keep theirs."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["python"])
    with pytest.raises(SystemExit) as stop, report_input_errors():
        run_cli(TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss",
                args=["fit", "--trainer.accelerator", "cpu", "--trainer.devices", "1.5", *QUIET])  # fmt: skip
    assert stop.value.code == 2
    (said,) = capsys.readouterr().err.splitlines()
    assert said.endswith(": --trainer.devices: `devices` selected with `CPUAccelerator` should be an int > 0."
                         " (got '1.5')"), said
    assert not _is_input_error(TypeError("'NoneType' object is not callable"))


def test_jsonargparse_debug_true_in_any_case_gives_its_own_error(monkeypatch):
    """The suite reads JSONARGPARSE_DEBUG as jsonargparse does: "true" in any case (it refuses 1, yes and on)."""
    monkeypatch.setenv("JSONARGPARSE_DEBUG", "TRUE")
    parser = SuggestingArgumentParser(prog="tool")
    parser.add_argument("--n", type=int)
    with pytest.raises(ArgumentError, match="Expected a <class 'int'>"):
        parser.parse_args(["--n", "abc"])


# ------------------------------------------------------------------ 3: the Timer at an evaluation


class TinySegTaskWithTest(TinySegTask):
    def test_step(self, batch, batch_idx):
        images, masks = batch
        self.log("test/loss", F.cross_entropy(self.model(images), masks))


class SquaresWithTest(SquaresDataModule):
    def test_dataloader(self):
        return self.val_dataloader()


def test_test_of_a_fit_with_max_time_does_not_ask_for_its_timer(tmp_path, monkeypatch):
    """Lightning warned "Please add the following callbacks: ['Timer']": its state only resumes the fit."""
    monkeypatch.chdir(tmp_path)
    common = [*QUIET, "--trainer.logger", "false", "--checkpoint.dirpath", "ckpt"]
    run_cli(TinySegTaskWithTest, SquaresWithTest, domain="tiny", monitor="val/loss",
            args=["fit", "--trainer.max_steps", "1", "--trainer.limit_val_batches", "1",
                  "--trainer.max_time", "00:00:10:00", *common])  # fmt: skip
    assert "Timer" in torch.load(tmp_path / "ckpt/last.ckpt", weights_only=True)["callbacks"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = run_cli(TinySegTaskWithTest, SquaresWithTest, domain="tiny", monitor="val/loss",
                      args=["test", "--ckpt_path", "last", *common])  # fmt: skip
    assert cli.trainer.callback_metrics["test/loss"] >= 0  # tested
    said = [str(w.message) for w in caught if "Please add the following callbacks" in str(w.message)]
    assert not said, said


def test_only_fit_only_callbacks_go_unwarned():
    """Another callback missing at an evaluation (its state may change what is evaluated) is still warned of."""
    head = (
        "Be aware that when using `ckpt_path`, callbacks used to create the checkpoint need to be provided during "
        "`Trainer` instantiation. Please add the following callbacks: "
    )
    # warnings.filterwarnings matches its message case-insensitively, from the start
    other = head + "['Timer', \"EarlyStopping{'monitor': 'x'}\"]."
    assert re.match(_FIT_ONLY_CALLBACKS_WARNING, head + "['Timer'].", re.IGNORECASE)
    assert not re.match(_FIT_ONLY_CALLBACKS_WARNING, other, re.IGNORECASE)
