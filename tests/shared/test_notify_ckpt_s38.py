"""A webhook URL's secret (its path, query, ``user:password@``) kept out of NotifyWhenDone's errors and warnings,
and a ``.ckpt`` that is no zip archive told for what it is, not by torch's mmap advice."""

from __future__ import annotations

import http.server
import logging
import types
import warnings

import pytest
import torch

from shared.cli import run_cli
from shared.notify import NotifyConfigError, NotifyWhenDone
from shared.task import CheckpointMismatchError, check_checkpoint_file, read_checkpoint_data
from tests.shared.tiny_task import SquaresDataModule, TinySegTask

pytestmark = pytest.mark.usefixtures("one_thread")
SECRET = "S38SECRETxyz"
_TRAINER = types.SimpleNamespace(checkpoint_callback=None, logger=None, is_global_zero=True)


# ------------------------------------------------------------------------------------- 1: the webhook's URL


@pytest.mark.parametrize(
    ("url", "shown", "why"),
    [
        (f"ftp://hooks.example.com/services/T0/{SECRET}", "ftp://hooks.example.com/…", "is not an http"),
        (f"https://hooks.example.com:{SECRET}/x", "https://hooks.example.com/…", "its port is not a number"),
        (f"https://hooks.example.com/services/{SECRET} x", "https://hooks.example.com/…", "percent-encode"),
        (f"hooks.example.com/services/T0/{SECRET}", "characters, not shown", "is not an http"),
    ],
    ids=["scheme", "port", "space", "no-scheme"],
)
def test_a_bad_literal_webhook_url_is_named_by_scheme_and_host_only(url, shown, why):
    """The whole URL was echoed (``'ftp://hooks.example.com/services/T0/<token>' is not an http(s) URL``), and
    one with a space was accepted, for http.client to quote its path in the send's warning."""
    with pytest.raises(NotifyConfigError) as caught:
        NotifyWhenDone(webhook_url=url)
    message = str(caught.value)
    assert message.startswith("NotifyWhenDone.webhook_url: ") and shown in message and why in message, message
    assert SECRET not in message


def test_a_webhook_url_with_user_and_password_is_refused_at_the_start(monkeypatch):
    """``https://user:password@host/...`` was accepted (stored in config.yaml and every checkpoint) and sent
    with the password taken for part of the host name."""
    with pytest.raises(NotifyConfigError) as caught:
        NotifyWhenDone(webhook_url=f"https://bot:{SECRET}@hooks.example.com/hook")
    message = str(caught.value)
    assert message.startswith("NotifyWhenDone.webhook_url: 'https://hooks.example.com/…' holds a user name or "), message
    assert "webhook_url_env" in message and SECRET not in message and "bot" not in message
    monkeypatch.setenv("S38_HOOK_URL", f"https://bot:{SECRET}@hooks.example.com/hook")
    with pytest.raises(NotifyConfigError, match="the value of S38_HOOK_URL .* holds a user name or password") as env:
        NotifyWhenDone(webhook_url_env="S38_HOOK_URL")
    assert SECRET not in str(env.value)


def test_a_send_failure_warning_never_shows_the_urls_path_or_query(caplog):
    """http.client refuses a URL with a space quoting its path and query: the warning carried the token."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the literal URL's "stored in config.yaml" warning
        notify = NotifyWhenDone(webhook_url="http://127.0.0.1:9/hook", run_name="r", timeout=5)
    notify.webhook_url = f"http://127.0.0.1:9/hook?token={SECRET} x"  # as a URL read from the environment can be
    notify.setup(None, None, "fit")
    with caplog.at_level(logging.WARNING):
        notify.notify(_TRAINER, "finished")
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith("NotifyWhenDone: webhook not sent (InvalidURL: "), warning
    assert SECRET not in warning and "…" in warning, warning


class _RedirectsToItself(http.server.BaseHTTPRequestHandler):
    """Answers a POST with 308 and ``Location``: the URL it was sent to, with a slash at the end."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(308)
        self.send_header("Location", f"http://127.0.0.1:{self.server.server_address[1]}{self.path}/")
        self.end_headers()

    def log_message(self, *args):  # keep test output clean
        pass


def test_a_redirect_repeating_the_webhook_url_is_warned_about_without_its_token(webhook, caplog, monkeypatch):
    webhook.RequestHandlerClass = _RedirectsToItself
    monkeypatch.setenv("S38_HOOK_URL", f"{webhook.url}/{SECRET}")
    notify = NotifyWhenDone(webhook_url_env="S38_HOOK_URL", run_name="r")
    notify.setup(None, None, "fit")
    with caplog.at_level(logging.WARNING):
        notify.notify(_TRAINER, "finished")
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "(Location: http://127.0.0.1/…/): a redirect is not followed" in warning, warning
    assert SECRET not in warning and "/hook" not in warning


# ------------------------------------------------------------------------------ 2: a .ckpt that is no zip


def _legacy(path):
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path, _use_new_zipfile_serialization=False)


def _truncated(path):
    torch.save({"state_dict": {"w": torch.zeros(500)}}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("write", "what"),
    [
        (lambda path: path.write_text("version https://git-lfs.github.com/spec/v1\n"), "a text file (it starts 'version"),
        (lambda path: path.write_bytes(b""), "an empty file"),
        (_legacy, "a Python pickle (torch.save's legacy format"),
        (_truncated, "a zip archive, truncated or not written by torch.save"),
    ],
    ids=["text", "empty", "legacy", "truncated"],
)
def test_a_ckpt_that_is_no_zip_archive_says_what_it_is_in_one_line(tmp_path, write, what):
    """The demo's reader and the CLI's (``check_checkpoint_file``) said torch's "mmap can only be used with files
    saved with torch.save(_use_new_zipfile_serialization=True)", or "not a zip archive: truncated, or not written
    by torch.save" for a text file and for a legacy file torch.save did write."""
    path = tmp_path / "model.ckpt"
    write(path)
    for read in (lambda: read_checkpoint_data(path, mmap=True), lambda: check_checkpoint_file(path, TinySegTask)):
        with pytest.raises(CheckpointMismatchError) as caught:
            read()
        message = str(caught.value)
        assert message.startswith(f"{path}: not a weights-only Lightning checkpoint: {what}"), message
        assert "mmap" not in message and "_use_new_zipfile" not in message and "\n" not in message


def test_fit_ckpt_path_to_a_legacy_file_is_refused_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _legacy(tmp_path / "old.ckpt")
    with pytest.raises(CheckpointMismatchError, match=r"old\.ckpt: not a weights-only .*: a Python pickle"):
        run_cli(TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss", args=["fit", "--ckpt_path", "old.ckpt"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.ckpt"]
