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
