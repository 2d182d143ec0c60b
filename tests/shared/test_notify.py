"""NotifyWhenDone against a real local SMTP server (aiosmtpd) and a local HTTP server, both on 127.0.0.1."""

from __future__ import annotations

import email
import json
import logging
import socket
import time
import types

import pytest
import pytorch_lightning as pl
import torch
import yaml

from shared.cli import run_cli
from shared.notify import NotifyConfigError, NotifyWhenDone
from tests.helpers import notify_fit
from tests.shared.tiny_task import SquaresDataModule, TinySegTask

pytestmark = pytest.mark.usefixtures("one_thread")
SECRET = "hunter2-not-for-logs"


@pytest.fixture
def smtp_server():
    from aiosmtpd.controller import Controller

    class Handler:
        def __init__(self):
            self.messages = []

        async def handle_DATA(self, server, session, envelope):
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
            return "250 OK"

    handler = Handler()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    handler.port = port
    yield handler
    controller.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_webhook_gets_the_report_when_fit_finishes(tmp_path, webhook, caplog):
    notify = NotifyWhenDone(webhook_url=webhook.url, run_name="tiny-run", monitor="val/loss", mode="min")
    with caplog.at_level(logging.INFO, logger="pytorch_lightning"):
        trainer = notify_fit(tmp_path, notify)
    # said where a user sees it (Lightning's logger has a handler; the module's own logger had none for info)
    assert "NotifyWhenDone: webhook sent (finished)" in caplog.text
    assert trainer.state.finished
    assert len(webhook.received) == 1
    content_type, report = webhook.received[0]
    assert content_type == "application/json"
    assert report["run"] == "tiny-run" and report["status"] == "finished" and report["stage"] == "fit"
    assert report["monitor"] == "val/loss"
    val_loss = float(trainer.callback_metrics["val/loss"])
    assert report["last"] == pytest.approx(val_loss) and report["best"] <= report["last"] + 1e-9
    assert 0 <= report["duration_s"] < 120 and report["global_step"] == 2


def test_email_arrives_with_the_fields(tmp_path, smtp_server):
    notify = NotifyWhenDone(
        smtp_host="127.0.0.1",
        smtp_port=smtp_server.port,
        sender="Trainer <trainer@example.org>",
        recipients=["a@example.org", "b@example.org"],
        run_name="mail-run",
        monitor="val/loss",
    )
    notify_fit(tmp_path, notify)
    assert len(smtp_server.messages) == 1
    mail_from, to, content = smtp_server.messages[0]
    assert mail_from == "trainer@example.org" and to == ["a@example.org", "b@example.org"]
    message = email.message_from_bytes(content)
    assert message["Subject"] == "[applied-dl-suite] mail-run: finished"
    body = message.get_payload(decode=True).decode()
    report = json.loads(body[body.index("{") :])
    assert report["status"] == "finished" and report["run"] == "mail-run" and report["last"] is not None


def test_a_refused_recipient_is_not_counted_as_sent(tmp_path, caplog):
    from aiosmtpd.controller import Controller

    class RefuseBad:
        async def handle_RCPT(self, server, session, envelope, address, options):
            if address.startswith("bad@"):
                return "550 no such user"
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server, session, envelope):
            return "250 OK"

    port = _free_port()
    controller = Controller(RefuseBad(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        notify = NotifyWhenDone(
            smtp_host="127.0.0.1", smtp_port=port, sender="t@example.org",
            recipients=["a@example.org", "bad@example.org"], run_name="r",
        )  # fmt: skip
        with caplog.at_level(logging.INFO):
            notify_fit(tmp_path, notify)
    finally:
        controller.stop()
    assert "e-mail refused for bad@example.org" in caplog.text
    assert "e-mail sent to 1 recipient(s)" in caplog.text


class _Boom(pl.Callback):
    def on_train_batch_end(self, trainer, *args):
        raise RuntimeError("boom at step 1")


class _CtrlC(pl.Callback):
    def on_train_batch_end(self, trainer, *args):
        raise KeyboardInterrupt


def test_failed_run_reports_failed_and_the_error_still_propagates(tmp_path, webhook):
    notify = NotifyWhenDone(webhook_url=webhook.url, run_name="r")
    with pytest.raises(RuntimeError, match="boom at step 1"):
        notify_fit(tmp_path, notify, callbacks=[notify, _Boom()])
    ((_, report),) = webhook.received
    assert report["status"] == "failed" and "boom at step 1" in report["error"]


class _BoomInValidate(pl.Callback):
    def on_validation_batch_end(self, trainer, *args):
        if trainer.state.fn == "validate":  # not fit's validation
            raise RuntimeError("boom in validate")


def test_a_failing_validate_after_a_finished_fit_sends_nothing_more(tmp_path, webhook):
    """Only fit is reported: a later trainer.validate() / test() that failed sent a second message, 'failed'."""
    notify = NotifyWhenDone(webhook_url=webhook.url, run_name="r")
    trainer = notify_fit(tmp_path, notify, callbacks=[notify, _BoomInValidate()])
    with pytest.raises(RuntimeError, match="boom in validate"):
        trainer.validate(trainer.lightning_module, datamodule=trainer.datamodule)
    assert [report["status"] for _, report in webhook.received] == ["finished"]


def test_interrupted_run_reports_interrupted(tmp_path, webhook):
    notify = NotifyWhenDone(webhook_url=webhook.url, run_name="r")
    with pytest.raises(SystemExit):  # Lightning turns Ctrl-C into a graceful shutdown + exit(1)
        notify_fit(tmp_path, notify, callbacks=[notify, _CtrlC()])
    ((_, report),) = webhook.received
    assert report["status"] == "interrupted"


def test_server_down_refused_or_silent_gives_warnings_and_fit_still_finishes(tmp_path, caplog):
    silent = socket.socket()  # accepts connections (backlog) but never answers: a timeout
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        notify = NotifyWhenDone(
            webhook_url=f"http://127.0.0.1:{_free_port()}/hook",  # nothing listens: refused
            smtp_host="127.0.0.1",
            smtp_port=silent.getsockname()[1],
            sender="t@example.org",
            recipients=["a@example.org"],
            timeout=0.5,
        )
        start = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="shared.notify"):
            trainer = notify_fit(tmp_path, notify)
        assert trainer.state.finished and trainer.global_step == 2
        assert time.monotonic() - start < 60
    finally:
        silent.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("webhook not sent" in w for w in warnings), warnings
    # the silent server: its socket times out, or the message's own deadline (the same 0.5 s) comes first
    assert any(
        ("e-mail not sent" in w and "timed out" in w.lower()) or "e-mail not confirmed within the 0.5 s" in w
        for w in warnings
    ), warnings


def test_webhook_error_status_is_a_warning(tmp_path, webhook, caplog):
    webhook.answer = 500
    notify = NotifyWhenDone(webhook_url=webhook.url)
    with caplog.at_level(logging.WARNING, logger="shared.notify"):
        trainer = notify_fit(tmp_path, notify)
    assert trainer.state.finished
    assert any("HTTP Error 500" in r.getMessage() for r in caplog.records)


def test_password_only_from_env_never_sent_in_clear_nor_logged(tmp_path, smtp_server, monkeypatch, caplog):
    monkeypatch.setenv("MY_SMTP_PW", SECRET)
    notify = NotifyWhenDone(
        smtp_host="127.0.0.1",
        smtp_port=smtp_server.port,
        sender="t@example.org",
        recipients=["a@example.org"],
        smtp_user="t",
        password_env="MY_SMTP_PW",
    )
    assert SECRET not in repr(vars(notify))
    with caplog.at_level(logging.DEBUG):
        notify_fit(tmp_path, notify)
    # the local server offers no STARTTLS: the message is refused rather than the password sent in clear
    assert smtp_server.messages == []
    assert any("not sending the password in clear" in r.getMessage() for r in caplog.records)
    assert all(SECRET not in r.getMessage() for r in caplog.records)


def test_only_rank_zero_sends(webhook):
    notify = NotifyWhenDone(webhook_url=webhook.url)
    notify.setup(None, None, "fit")
    rank1 = types.SimpleNamespace(is_global_zero=False)
    assert notify.notify(rank1, "finished") is None and webhook.received == []


def test_one_message_per_run(webhook):
    """A run that finished and then fails in a later hook (or is reported twice) sends its first status only;
    the next run (setup again) sends anew."""
    notify = NotifyWhenDone(webhook_url=webhook.url, run_name="r")
    trainer = types.SimpleNamespace(checkpoint_callback=None, logger=None, is_global_zero=True)
    notify.setup(None, None, "fit")
    assert notify.notify(trainer, "finished")["status"] == "finished"
    assert notify.notify(trainer, "failed", error="RuntimeError: late") is None
    assert [report["status"] for _, report in webhook.received] == ["finished"]
    notify.setup(None, None, "fit")
    notify.notify(trainer, "finished")
    assert len(webhook.received) == 2


def _validate(notify: NotifyWhenDone, trainer, value: float, sanity: bool = False, name: str = "val/loss") -> None:
    """``notify``'s hook after a validation (or a sanity check) that logged ``name`` (``val/loss``) = ``value``."""
    trainer.sanity_checking, trainer.callback_metrics = sanity, {name: torch.tensor(value)}
    notify.on_validation_end(trainer, None)


@pytest.mark.parametrize(("mode", "best"), [("min", 0.3), ("max", 0.5)])
def test_best_follows_the_mode_and_last_is_the_last_validation(webhook, mode, best):
    notify = NotifyWhenDone(webhook_url=webhook.url, run_name="r", monitor="val/loss", mode=mode)
    notify.setup(None, None, "fit")
    # a stand-in trainer without a checkpoint callback: the monitor and the mode are the options'
    trainer = types.SimpleNamespace(checkpoint_callback=None, logger=None, is_global_zero=True)
    # the sanity check's 0.1 and 0.9 are no validation of the trained model: they count for neither value
    _validate(notify, trainer, 0.1, sanity=True)
    _validate(notify, trainer, 0.9, sanity=True)
    # 0.5, 0.3, 0.4: the lowest (best for min) is the second, the highest (best for max) the first, the last
    # is neither
    for value in (0.5, 0.3, 0.4):
        _validate(notify, trainer, value)
    notify.notify(trainer, "finished")
    ((_, report),) = webhook.received
    assert (report["monitor"], report["mode"]) == ("val/loss", mode)
    assert report["best"] == pytest.approx(best) and report["last"] == pytest.approx(0.4)


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({}, "nothing to send"),
        ({"webhook_url": "ftp://x/y"}, "webhook_url"),
        ({"webhook_url": "not a url"}, "webhook_url"),
        ({"smtp_host": "h", "sender": "no-at-sign", "recipients": ["a@b.org"]}, "sender"),
        ({"smtp_host": "h", "sender": "a@b.org", "recipients": ["ok@b.org", "bad"]}, r"recipients\[1\]"),
        ({"smtp_host": "h", "sender": "a@b.org"}, "recipients"),
        ({"smtp_host": "h", "sender": "a@b.org", "recipients": ["c@d.org"], "smtp_port": 70000}, "smtp_port"),
        ({"webhook_url": "http://h/", "password_env": "MY PW"}, "password_env"),
        ({"webhook_url": "http://h/", "timeout": 0}, "timeout"),
    ],
)
def test_bad_options_name_the_option(kwargs, option):
    with pytest.raises(NotifyConfigError, match=option):
        NotifyWhenDone(**kwargs)


def test_cli_append_syntax_adds_the_callback_and_keeps_the_password_out_of_the_config(
    tmp_path, monkeypatch, webhook
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SUITE_SMTP_PASSWORD", SECRET)
    args = [
        "fit", "--trainer.max_steps", "1", "--trainer.limit_val_batches", "1",
        "--trainer.enable_progress_bar", "false",
        "--trainer.callbacks+=shared.notify.NotifyWhenDone",
        f"--trainer.callbacks.init_args.webhook_url={webhook.url}",
        "--trainer.callbacks.init_args.run_name=cli-run",
    ]  # fmt: skip
    cli = run_cli(TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss", args=args)
    names = [type(c).__name__ for c in cli.trainer.callbacks]
    assert "NotifyWhenDone" in names and "LearningRateMonitor" in names  # appended, defaults kept
    ((_, report),) = webhook.received
    assert report["run"] == "cli-run" and report["monitor"] == "val/loss" and report["checkpoint"]
    saved = list(tmp_path.rglob("config.yaml"))
    assert saved
    text = "".join(p.read_text() for p in saved)
    assert "shared.notify.NotifyWhenDone" in text and SECRET not in text
    assert all(
        SECRET not in p.read_text(errors="ignore")
        for p in tmp_path.rglob("*")
        if p.is_file() and p.suffix != ".ckpt"
    )
    config = yaml.safe_load(saved[0].read_text())
    notify_cfg = next(c for c in config["trainer"]["callbacks"] if c["class_path"].endswith("NotifyWhenDone"))
    assert notify_cfg["init_args"]["password_env"] == "SUITE_SMTP_PASSWORD"


def test_config_file_form_with_smtp_settings(tmp_path, monkeypatch, smtp_server):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "notify.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "trainer": {
                    "max_steps": 1,
                    "limit_val_batches": 1,
                    "enable_progress_bar": False,
                    "callbacks": [
                        {
                            "class_path": "shared.notify.NotifyWhenDone",
                            "init_args": {
                                "smtp_host": "127.0.0.1",
                                "smtp_port": smtp_server.port,
                                "sender": "trainer@example.org",
                                "recipients": ["me@example.org"],
                                "run_name": "yaml-run",
                            },
                        }
                    ],
                }
            }
        )
    )
    cli = run_cli(
        TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss", args=["fit", "-c", str(config)]
    )
    names = [type(c).__name__ for c in cli.trainer.callbacks]
    assert "NotifyWhenDone" in names and "LearningRateMonitor" in names  # LightningCLI adds its defaults too
    ((_, to, content),) = smtp_server.messages
    assert to == ["me@example.org"] and b"yaml-run: finished" in content


def test_a_monitor_other_than_the_checkpoints_needs_a_mode(webhook):
    """Without a mode, another metric than the checkpoint callback's was taken as lower-is-better: the message
    called an accuracy's worst epoch its best."""
    ckpt = types.SimpleNamespace(monitor="val/f1", mode="max", best_model_score=None, best_model_path="",
                                 last_model_path="")  # fmt: skip
    trainer = types.SimpleNamespace(checkpoint_callback=ckpt, logger=None, is_global_zero=True)
    with pytest.raises(NotifyConfigError, match=r"monitor 'val/acc' is not the checkpoint callback's \('val/f1'\)"):
        NotifyWhenDone(webhook_url=webhook.url, monitor="val/acc").setup(trainer, None, "fit")
    NotifyWhenDone(webhook_url=webhook.url, monitor="val/acc", mode="max").setup(trainer, None, "fit")  # fine
    notify = NotifyWhenDone(webhook_url=webhook.url, run_name="r", monitor="val/f1")  # the checkpoint's: its mode
    notify.setup(trainer, None, "fit")
    for value in (0.5, 0.7, 0.6):
        _validate(notify, trainer, value, name="val/f1")
    notify.notify(trainer, "finished")
    ((_, report),) = webhook.received
    assert (report["mode"], report["best"], report["last"]) == ("max", pytest.approx(0.7), pytest.approx(0.6))
    # a loss is lower-is-better without saying so
    NotifyWhenDone(webhook_url=webhook.url, monitor="train/loss").setup(trainer, None, "fit")


def test_a_resumed_runs_best_is_the_score_of_the_checkpoint_it_names(webhook):
    """After a resume the message gave the resumed part's best (0.333) beside the checkpoint saved before it,
    whose score was 0.356."""
    ckpt = types.SimpleNamespace(monitor="val/f1", mode="max", best_model_score=torch.tensor(0.356),
                                 best_model_path="best-03.ckpt", last_model_path="last.ckpt")  # fmt: skip
    trainer = types.SimpleNamespace(checkpoint_callback=ckpt, logger=None, is_global_zero=True)
    notify = NotifyWhenDone(webhook_url=webhook.url, run_name="r")
    notify.setup(trainer, None, "fit")
    for value in (0.30, 0.333):  # the validations after the resume
        _validate(notify, trainer, value, name="val/f1")
    notify.notify(trainer, "finished")
    ((_, report),) = webhook.received
    assert (report["best"], report["last"]) == (pytest.approx(0.356), pytest.approx(0.333))
    assert report["checkpoint"] == "best-03.ckpt"
