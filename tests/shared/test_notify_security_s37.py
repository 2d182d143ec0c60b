"""NotifyWhenDone's webhook as a credential: its URL from an environment variable (kept out of config.yaml and
the checkpoints), and a redirect that is reported, not followed as a GET without the report."""

from __future__ import annotations

import http.server
import logging
import types
import warnings

import pytest
import yaml

from shared.cli import run_cli
from shared.notify import NotifyConfigError, NotifyWhenDone
from tests.shared.tiny_task import SquaresDataModule, TinySegTask

pytestmark = pytest.mark.usefixtures("one_thread")
HOOK_SECRET = "HOOK_SECRET_s37x"
STORED = "stored in the run's config.yaml and in every checkpoint"
_TRAINER = types.SimpleNamespace(checkpoint_callback=None, logger=None, is_global_zero=True)


def test_webhook_url_env_keeps_the_url_out_of_the_config_and_the_checkpoints(tmp_path, monkeypatch, webhook):
    """The URL given on the command line was in config.yaml and in last.ckpt; its variable's name is there now."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("S37_HOOK_URL", f"{webhook.url}/{HOOK_SECRET}")
    args = [
        "fit", "--trainer.max_steps", "1", "--trainer.limit_val_batches", "1",
        "--trainer.enable_progress_bar", "false",
        "--trainer.callbacks+=shared.notify.NotifyWhenDone",
        "--trainer.callbacks.init_args.webhook_url_env=S37_HOOK_URL",
        "--trainer.callbacks.init_args.run_name=env-run",
    ]  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_cli(TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss", args=args)
    ((_, report),) = webhook.received
    assert report["run"] == "env-run" and report["status"] == "finished"
    assert not [w for w in caught if STORED in str(w.message)]  # nothing stored, nothing to warn about
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".ckpt" for p in files) and any(p.name == "config.yaml" for p in files)
    assert [p.name for p in files if HOOK_SECRET.encode() in p.read_bytes()] == []
    config = yaml.safe_load(next(tmp_path.rglob("config.yaml")).read_text())
    (notify_cfg,) = [c for c in config["trainer"]["callbacks"] if c["class_path"].endswith("NotifyWhenDone")]
    assert notify_cfg["init_args"]["webhook_url_env"] == "S37_HOOK_URL"
    assert notify_cfg["init_args"]["webhook_url"] is None


def test_webhook_url_env_is_read_when_sending_and_never_stored(monkeypatch, webhook):
    monkeypatch.setenv("S37_HOOK_URL", "https://hooks.example.org/services/T0/B0/" + HOOK_SECRET)
    notify = NotifyWhenDone(webhook_url_env="S37_HOOK_URL", run_name="r")
    assert HOOK_SECRET not in repr(vars(notify))
    monkeypatch.setenv("S37_HOOK_URL", webhook.url)  # changed after the start: the send uses the new one
    notify.setup(None, None, "fit")
    assert notify.notify(_TRAINER, "finished")["status"] == "finished"
    assert [report["run"] for _, report in webhook.received] == ["r"]


@pytest.mark.parametrize(
    ("kwargs", "env", "message"),
    [
        (
            {"webhook_url": "http://h/", "webhook_url_env": "S37_HOOK_URL"},
            "http://h/x",
            "webhook_url and NotifyWhenDone.webhook_url_env: give one of them, not both",
        ),
        ({"webhook_url_env": "S37_HOOK_URL"}, None, "environment variable S37_HOOK_URL is not set or empty"),
        ({"webhook_url_env": "S37_HOOK_URL"}, "", "environment variable S37_HOOK_URL is not set or empty"),
        ({"webhook_url_env": "S37 HOOK"}, "http://h/x", "webhook_url_env: 'S37 HOOK' is not an environment var"),
        (
            {"webhook_url_env": "S37_HOOK_URL"},
            f"ftp://h/{HOOK_SECRET}",
            "webhook_url_env: the value of S37_HOOK_URL \\(scheme 'ftp'\\) is not an http\\(s\\) URL",
        ),
        (
            {"webhook_url_env": "S37_HOOK_URL"},
            f"hooks.example.org/{HOOK_SECRET}",
            "webhook_url_env: the value of S37_HOOK_URL \\(scheme ''\\) is not an http\\(s\\) URL",
        ),
    ],
)
def test_bad_webhook_url_env_is_an_error_at_the_start_naming_the_variable(monkeypatch, kwargs, env, message):
    monkeypatch.delenv("S37_HOOK_URL", raising=False)
    if env is not None:
        monkeypatch.setenv("S37_HOOK_URL", env)
    with pytest.raises(NotifyConfigError, match=message) as error:
        NotifyWhenDone(**kwargs)
    assert HOOK_SECRET not in str(error.value)  # the URL is the credential: never in an error


def test_a_literal_webhook_url_warns_once_that_it_is_stored(monkeypatch):
    with pytest.warns(UserWarning) as caught:
        NotifyWhenDone(webhook_url="https://hooks.example.org/services/T0/B0/" + HOOK_SECRET)
    stored = [str(w.message) for w in caught if STORED in str(w.message)]
    assert len(stored) == 1 and "webhook_url_env" in stored[0]
    assert HOOK_SECRET not in stored[0]
    monkeypatch.setenv("S37_HOOK_URL", "https://hooks.example.org/x")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        NotifyWhenDone(webhook_url_env="S37_HOOK_URL")
    assert not [w for w in caught if STORED in str(w.message)]


class _Redirecting(http.server.BaseHTTPRequestHandler):
    """``POST /hook`` answers ``server.answer`` with ``Location: /moved``; every request is kept in
    ``server.received`` as (method, path, body)."""

    def _answer(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.received.append((self.command, self.path, body))
        self.send_response(self.server.answer if self.path == "/hook" else 200)
        if self.path == "/hook":
            self.send_header("Location", "/moved")
        self.end_headers()

    do_GET = do_POST = _answer

    def log_message(self, *args):  # keep test output clean
        pass


@pytest.mark.parametrize("code", [301, 302, 303, 307])
def test_a_redirect_is_not_followed_and_is_reported_as_not_sent(webhook, caplog, code):
    """urllib followed a 301/302/303 as a GET without the body, and the log said the webhook was sent."""
    webhook.RequestHandlerClass, webhook.answer = _Redirecting, code
    notify = NotifyWhenDone(webhook_url=webhook.url, run_name="r")
    notify.setup(None, None, "fit")
    with caplog.at_level(logging.INFO):
        notify.notify(_TRAINER, "finished")
    assert [(method, path) for method, path, _ in webhook.received] == [("POST", "/hook")]  # /moved never asked
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "webhook sent" in m], messages
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith(f"NotifyWhenDone: webhook not sent (HTTPError: HTTP Error {code}: "), warning
    assert "(Location: /moved): a redirect is not followed" in warning, warning
