"""NotifyWhenDone: a SIGTERM is an interruption, and the run field tells two runs apart (audit findings)."""

from __future__ import annotations

import os
import signal

import pytest
import pytorch_lightning as pl

from shared.cli import run_cli
from shared.notify import NotifyWhenDone
from tests.helpers import notify_fit
from tests.shared.tiny_task import SquaresDataModule, TinySegTask

pytestmark = pytest.mark.usefixtures("one_thread")


class _SigTerm(pl.Callback):
    """``docker stop`` / preemption: a real SIGTERM to this process, which Lightning's handler turns into a
    SIGTERMException at the next step."""

    def on_train_batch_end(self, trainer, *args):
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            pytest.fail("Lightning registered no SIGTERM handler: the signal would kill the test process")
        os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_is_reported_as_interrupted_not_failed(tmp_path, webhook):
    """SIGTERM was reported as ``failed`` with the error ``SIGTERMException: ``."""
    notify = NotifyWhenDone(webhook_url=webhook.url, run_name="r")
    with pytest.raises(SystemExit):  # Lightning's own handling of SIGTERM, unchanged
        notify_fit(tmp_path, notify, max_steps=5, callbacks=[notify, _SigTerm()])
    ((_, report),) = webhook.received
    assert report["status"] == "interrupted", report
    assert "SIGTERM" in report["error"] and report["error"] != "SIGTERMException: "


def _cli_run(tmp_path, monkeypatch, webhook, domain: str, *extra: str) -> dict:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "mine.yaml"
    config.write_text("trainer:\n  max_steps: 1\n  limit_val_batches: 1\n  enable_progress_bar: false\n")
    args = [
        "fit", "-c", str(config),
        "--trainer.callbacks+=shared.notify.NotifyWhenDone",
        f"--trainer.callbacks.init_args.webhook_url={webhook.url}",
        *extra,
    ]  # fmt: skip
    run_cli(TinySegTask, SquaresDataModule, domain=domain, monitor="val/loss", args=args)
    return webhook.received.pop()[1]


def test_run_field_names_the_domain_config_and_version(tmp_path, monkeypatch, webhook):
    """A medical and a driving run were both ``csv/version_0`` (``/`` under fast_dev_run)."""
    medical = _cli_run(tmp_path, monkeypatch, webhook, "medical_classification")
    driving = _cli_run(tmp_path, monkeypatch, webhook, "driving_classification")
    assert medical["run"] == "medical_classification/mine (csv/version_0)"
    assert driving["run"] == "driving_classification/mine (csv/version_0)"
    again = _cli_run(tmp_path, monkeypatch, webhook, "driving_classification")
    assert again["run"] == "driving_classification/mine (csv/version_1)"  # the next run of that config
    smoke = _cli_run(tmp_path, monkeypatch, webhook, "driving_classification", "--trainer.fast_dev_run", "1")
    assert smoke["run"] == "driving_classification/mine"  # no logger version under fast_dev_run


def test_a_refused_mode_sends_no_report(webhook):
    """The notifier refusing its own settings at setup also sent a "failed" report carrying the refused mode."""
    import types

    from shared.notify import NotifyConfigError

    ckpt = types.SimpleNamespace(monitor="val/f1", mode="max", best_model_score=None, best_model_path="",
                                 last_model_path="")  # fmt: skip
    trainer = types.SimpleNamespace(checkpoint_callback=ckpt, logger=None, is_global_zero=True, default_root_dir=".")
    notify = NotifyWhenDone(webhook_url=webhook.url, monitor="val/acc")
    with pytest.raises(NotifyConfigError):
        notify.setup(trainer, None, "fit")
    notify.on_exception(trainer, None, NotifyConfigError("refused"))  # what Lightning calls next
    assert webhook.received == [] and notify.last_report is None


def test_an_unlogged_monitor_is_warned_once_and_a_failed_run_names_its_last_checkpoint(tmp_path, webhook):
    """A monitor no validation logs left the report's last and best empty without a word (said when the report
    is sent: a train metric logged at an epoch's end appears only at the next validation); a failed or stopped
    run named only the best checkpoint, not the last.ckpt that `fit --ckpt_path last` goes on from."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    notify = NotifyWhenDone(webhook_url=webhook.url, run_name="r", monitor="val/lsos", mode="min")
    every = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/loss", save_last=True)
    class SigTermAtStep5(_SigTerm):  # after two validations and checkpoints (2 steps an epoch)
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 5:
                super().on_train_batch_end(trainer, *args)

    unlogged = r"monitor 'val/lsos' was never logged at a validation of this run \(logged: .*val/loss"
    with pytest.warns(UserWarning, match=unlogged) as caught, pytest.raises(SystemExit):
        notify_fit(tmp_path, notify, max_steps=8, enable_checkpointing=True,
                   callbacks=[notify, every, SigTermAtStep5()])  # fmt: skip
    assert len([w for w in caught if "never logged" in str(w.message)]) == 1  # once, when the report is sent
    ((_, report),) = webhook.received
    assert report["status"] == "interrupted" and report["last"] is None
    assert report["last_checkpoint"] == str(tmp_path / "ckpt" / "last.ckpt")
