"""NotifyWhenDone: a SIGTERM is an interruption, and the run field tells two runs apart (audit findings)."""

from __future__ import annotations

import os
import signal
import socket
import types

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


def test_a_sigterm_before_the_first_save_reports_the_last_checkpoint_saved_on_the_way_out(
    tmp_path, monkeypatch, webhook, capsys
):
    """The CLI's checkpoint callback saves last.ckpt on a SIGTERM, but Lightning called it after the message
    was sent: ``last_checkpoint`` was null while the file was there."""
    with pytest.raises(SystemExit):
        _cli_run(tmp_path, monkeypatch, webhook, "medical_classification", "--trainer.max_steps", "6",
                 "--trainer.callbacks+=tests.shared.test_notify_audit._SigTerm")  # fmt: skip
    ((_, report),) = webhook.received
    assert report["status"] == "interrupted" and report["last_checkpoint"], report
    assert report["last_checkpoint"].endswith("last.ckpt") and os.path.isfile(report["last_checkpoint"])
    assert capsys.readouterr().out.count("SIGTERM: the fit's state at step") <= 1  # saved and said once


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


# ------------------------------------------------------------------- webhook text, SMTPS, duration (audit 2)


def test_webhook_body_has_a_text_line_beside_the_fields(tmp_path, webhook):
    """The body was the bare report: Slack and Teams incoming webhooks answer HTTP 400 without ``text``."""
    notify = NotifyWhenDone(webhook_url=webhook.url, run_name="r", monitor="val/loss")
    notify_fit(tmp_path, notify)
    ((_, body),) = webhook.received
    assert {key: body[key] for key in notify.last_report} == notify.last_report  # the fields, all kept
    best, duration = notify.last_report["best"], notify.last_report["duration_s"]
    assert body["text"] == f"r: finished, best val/loss {best:.4g} (min), after {duration:.1f} s"


def test_summary_line_of_a_long_failed_run_and_of_one_without_a_monitor():
    from shared.notify import _summary

    report = {"run": "driving_classification/quick (csv/version_2)", "status": "failed", "monitor": "val/acc",
              "mode": "max", "best": None, "duration_s": 7512.0}  # fmt: skip
    assert _summary(report) == (
        "driving_classification/quick (csv/version_2): failed, best val/acc none logged (max), after 2 h 05 min"
    )
    assert _summary({"run": "r", "status": "interrupted", "monitor": None, "duration_s": 192.4}) == (
        "r: interrupted, after 3 min 12 s"
    )


#: a trainer as the report reads it, with no checkpoint callback nor logger
_NO_CHECKPOINT = types.SimpleNamespace(checkpoint_callback=None, logger=None, is_global_zero=True)


@pytest.fixture
def smtp_with_login():
    """A local aiosmtpd server that takes the login ``t`` / ``pw`` without TLS (a stand-in for an SMTPS server
    behind its TLS layer); ``.messages`` and ``.logins`` keep what came."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    class Handler:
        messages, logins = [], []

        async def handle_DATA(self, server, session, envelope):
            self.messages.append(envelope.content)
            return "250 OK"

    def authenticator(server, session, envelope, mechanism, auth_data):
        Handler.logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=(auth_data.login, auth_data.password) == (b"t", b"pw"))

    handler = Handler()
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        handler.port = free.getsockname()[1]
    controller = Controller(handler, hostname="127.0.0.1", port=handler.port, authenticator=authenticator,
                            auth_require_tls=False)  # fmt: skip
    controller.start()
    yield handler
    controller.stop()


def test_port_465_connects_with_implicit_tls_and_logs_in(smtp_with_login, monkeypatch):
    """Port 465 (SMTPS) was spoken to as plain SMTP + STARTTLS: it timed out into a warning. ``SMTP_SSL`` is
    stood in for by plain SMTP to the local server (no certificate here); the real handshake is the next test."""
    import smtplib
    import ssl

    opened = []

    class SmtpsStandIn(smtplib.SMTP):
        def __init__(self, host, port, timeout, context):
            opened.append((host, port, type(context)))
            super().__init__(host, smtp_with_login.port, timeout=timeout)

    monkeypatch.setattr(smtplib, "SMTP_SSL", SmtpsStandIn)
    monkeypatch.setenv("SUITE_SMTP_PASSWORD", "pw")
    notify = NotifyWhenDone(smtp_host="127.0.0.1", smtp_port=465, sender="t@example.org",
                            recipients=["a@example.org"], smtp_user="t", require_tls=True, run_name="r")  # fmt: skip
    assert notify.implicit_tls and not NotifyWhenDone(webhook_url="http://h/x", smtp_port=587).implicit_tls
    notify.notify(_NO_CHECKPOINT, "finished")
    assert opened == [("127.0.0.1", 465, ssl.SSLContext)]
    assert smtp_with_login.logins == [(b"t", b"pw")]  # the password goes: the connection is TLS from the start
    (content,) = smtp_with_login.messages
    assert b"Subject: [applied-dl-suite] r: finished" in content


def test_implicit_tls_sends_a_tls_hello_first(caplog):
    """On an SMTPS port the client speaks first, with a TLS ClientHello (record type 22, handshake type 1);
    plain SMTP waited for a greeting the server never sends."""
    import logging
    import threading

    first: list[bytes] = []
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(5)

        def take_hello():
            try:
                conn, _ = server.accept()
                with conn:
                    conn.settimeout(5)
                    first.append(conn.recv(6))  # then closed: the handshake fails, which is a warning
            except OSError:  # nothing came
                pass

        thread = threading.Thread(target=take_hello, daemon=True)
        thread.start()
        notify = NotifyWhenDone(smtp_host="127.0.0.1", smtp_port=server.getsockname()[1], implicit_tls=True,
                                sender="t@example.org", recipients=["a@example.org"], timeout=2, run_name="r")  # fmt: skip
        with caplog.at_level(logging.WARNING, logger="shared.notify"):
            notify.notify(_NO_CHECKPOINT, "finished")
        thread.join(5)
    assert first and first[0][0] == 22 and first[0][5] == 1, first
    assert "e-mail not sent" in caplog.text


class _SlowDataSetup(SquaresDataModule):
    """A data module whose setup takes ``seconds`` (a folder scan) and then, with ``error``, fails (a class
    name typo)."""

    def __init__(self, seconds: float, error: str | None = None):
        super().__init__(n_train=8, n_val=4)
        self.seconds, self.error = seconds, error

    def setup(self, stage):
        import time

        time.sleep(self.seconds)
        if self.error:
            raise ValueError(self.error)


def test_duration_counts_the_data_setup_and_a_failure_there(tmp_path, webhook):
    """The clock started at the callback's setup, after the data module's: a run failing in data setup (a class
    name typo) reported a null duration, and a finished one left out the data setup's time."""
    from tests.helpers import quiet_trainer

    notify = NotifyWhenDone(webhook_url=webhook.url, run_name="r")

    def fit(data):
        settings = {"max_steps": 2, "limit_val_batches": 1, "default_root_dir": str(tmp_path)}
        quiet_trainer(callbacks=[notify], **settings).fit(TinySegTask(), data)
        return webhook.received[-1][1]

    with pytest.raises(ValueError, match="sqaure"):
        fit(_SlowDataSetup(0.6, error="data.class_names: no folder 'sqaure'"))
    failed = webhook.received[-1][1]
    assert failed["status"] == "failed" and 0.6 <= failed["duration_s"] < 30, failed
    finished = fit(_SlowDataSetup(0.6))  # the same callback again: from the end of the failed run
    assert finished["status"] == "finished" and 0.6 <= finished["duration_s"] < 30, finished
    # not counting the runs before: counted from the callback's construction it would exceed both together
    assert fit(_SlowDataSetup(0.0))["duration_s"] < failed["duration_s"] + finished["duration_s"]


def test_a_server_that_trickles_its_answer_holds_the_run_no_longer_than_the_timeout(caplog):
    """``urlopen``'s timeout bounds each socket read: a server sending one header byte every 0.2 s held a
    finished run for minutes (the audit's: 2 min 49 s for a 29 s run with timeout 10)."""
    import logging
    import threading
    import time

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    stop = threading.Event()

    def trickle():
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            while not stop.is_set():  # a header that never ends, one byte at a time
                conn.sendall(b"X")
                time.sleep(0.2)

    threading.Thread(target=trickle, daemon=True).start()
    notify = NotifyWhenDone(webhook_url=f"http://127.0.0.1:{server.getsockname()[1]}/hook", timeout=1.0)
    trainer = types.SimpleNamespace(is_global_zero=True, current_epoch=0, global_step=3, default_root_dir=".")
    start = time.monotonic()
    try:
        with caplog.at_level(logging.WARNING, logger="shared.notify"):
            assert notify.notify(trainer, "finished")["status"] == "finished"
        waited = time.monotonic() - start
    finally:
        stop.set()
        server.close()
    assert waited < 3, waited
    assert any("webhook not confirmed within the 1 s timeout" in r.getMessage() for r in caplog.records)
