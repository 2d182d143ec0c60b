r"""A message when a run ends: e-mail and / or a JSON webhook, sent by rank 0 at the end of ``fit`` or on failure.

Off unless added as a callback, e.g. on the command line::

    python -m domains.medical fit -c ... \
        --trainer.callbacks+=shared.notify.NotifyWhenDone \
        --trainer.callbacks.init_args.webhook_url_env=SUITE_WEBHOOK_URL

(after ``export SUITE_WEBHOOK_URL=https://hooks.example.org/services/T0/B0``), or in a config's
``trainer.callbacks`` list (``class_path: shared.notify.NotifyWhenDone``, ``init_args: ...``).

Written here because Lightning has no notifier; sending uses only the standard library (``smtplib`` with
STARTTLS when the server offers it, or implicit TLS on port 465; ``urllib`` for the webhook, whose JSON carries a
one-line ``text`` beside the fields, as Slack and Teams incoming webhooks need). Nothing sent can change how
training ends:
every failure to deliver (server down, refused, timed out, rejected, redirected) becomes a logged warning.
The webhook goes to its URL only: a redirect is such a failure, not followed (``urllib`` would follow it as a
GET without the report). The SMTP password and the webhook's URL (a Slack, Teams or Discord URL is itself the
credential) are read from the environment variables named by ``password_env`` and ``webhook_url_env`` at send
time and never stored on the callback, so they cannot reach a saved ``config.yaml``, the checkpoints (which
carry the config), hyperparameters or logs; a literal ``webhook_url`` is stored there (a warning says so). Errors
and warnings name a webhook URL by its scheme and host only (``https://hooks.example.com/…``), and a URL with a
user name or password (``user:password@host``) is refused at the start: nothing here logs in with it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import smtplib
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from email.message import EmailMessage
from email.utils import parseaddr
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from pytorch_lightning.utilities.exceptions import SIGTERMException

from shared.cli_help import metric_mode

log = logging.getLogger(__name__)

STATUSES = ("finished", "failed", "interrupted")


class NotifyConfigError(ValueError):
    """A notification option that cannot work; the message names the option."""


def _check_address(value: str, option: str) -> str:
    _name, address = parseaddr(value)
    local, _, domain = address.rpartition("@")
    if not address or not local or not domain or " " in address or value.strip() != value:
        raise NotifyConfigError(f"NotifyWhenDone.{option}: {value!r} is not an e-mail address")
    return value


def _shown_url(url: str) -> str | None:
    """``https://hooks.example.com/…``: how a webhook URL is named in errors and warnings, by its scheme and host
    only (None: it has none to show). The user, password, path and query are left out: a webhook's token lives
    there (Slack's ``/services/T0/B0/<token>``, a ``?token=``), and a saved log or a CI page is no place for it."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
    except ValueError:  # an unclosed IPv6 bracket
        parts, host = None, None
    if parts is None or not parts.scheme or not host:
        return None
    host = f"[{host}]" if ":" in host else host
    more = parts.path not in ("", "/") or parts.query or parts.fragment
    return f"{parts.scheme}://{host}/…" if more else f"{parts.scheme}://{host}"


def _without_secrets(text: str, url: str) -> str:
    """``text`` with the secret parts of the webhook ``url`` (user and password, path, query) replaced by ``…``:
    http.client quotes the path of a URL it refuses, and a redirect's ``Location`` may repeat it."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # an unclosed IPv6 bracket (refused before sending): the whole URL is hidden
        return text.replace(url, "…") if len(url) > 1 else text
    user = parts.netloc.rpartition("@")[0]
    path_query = f"{parts.path}?{parts.query}" if parts.query else ""
    secrets = {url: _shown_url(url) or "…"}
    secrets.update((part, "…") for part in (path_query, parts.path, parts.query, user, parts.password or ""))
    for secret in sorted((s for s in secrets if len(s) > 1), key=len, reverse=True):  # the whole URL first
        text = text.replace(secret, secrets[secret])
    return text


def _check_url(value: str, option: str, shown: str | None = None) -> str:
    """``value`` if it is an http(s) URL with a host and no user name or password; ``shown`` stands for it in
    the errors (default: its scheme and host, :func:`_shown_url`), which never show its path or query."""
    if shown is None:
        url = _shown_url(value)
        shown = f"'{url}'" if url else f"the value given ({len(value)} characters, not shown: it may hold a token)"
    try:
        parsed = urllib.parse.urlsplit(value)
        host = parsed.hostname
    except ValueError:  # an unclosed IPv6 bracket
        parsed, host = None, None
    if parsed is None or parsed.scheme not in ("http", "https") or not host:
        raise NotifyConfigError(
            f"NotifyWhenDone.{option}: {shown} is not an http(s) URL (expected e.g. https://host/path)"
        )
    try:
        parsed.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:  # not its text: it quotes the port, which may be a token pasted in the wrong place
        raise NotifyConfigError(f"NotifyWhenDone.{option}: {shown}: its port is not a number 0-65535") from None
    if parsed.username is not None or parsed.password is not None:
        # urllib logs in with none of it (it took "user:password@host" as the host), and a literal webhook_url
        # would put the password in config.yaml and every checkpoint
        given = "" if option == "webhook_url_env" else (
            ", given with webhook_url_env (export SUITE_WEBHOOK_URL=https://host/path; "
            "--trainer.callbacks.init_args.webhook_url_env=SUITE_WEBHOOK_URL)"
        )
        raise NotifyConfigError(
            f"NotifyWhenDone.{option}: {shown} holds a user name or password (user:password@host), which is "
            "refused: the webhook is sent without logging in. Use a webhook whose URL is its credential (Slack, "
            f"Teams, Discord){given}"
        )
    if any(char.isspace() or not char.isprintable() for char in value):  # http.client refuses it when sending
        raise NotifyConfigError(
            f"NotifyWhenDone.{option}: {shown} contains a space or a control character: percent-encode it "
            "(a space is %20)"
        )
    return value


def _check_env_name(value: str, option: str) -> str:
    if not value or not value.replace("_", "").isalnum():
        raise NotifyConfigError(f"NotifyWhenDone.{option}: {value!r} is not an environment variable name")
    return value


def _url_from_env(name: str) -> str:
    """The webhook URL in the environment variable ``name``, checked; the errors never show the URL (it is the
    credential), only its scheme."""
    url = os.environ.get(name, "")
    if not url:
        raise NotifyConfigError(
            f"NotifyWhenDone.webhook_url_env: the environment variable {name} is not set or empty (expected "
            f"the webhook's URL: export {name}=https://host/path before the run)"
        )
    try:
        scheme = urllib.parse.urlsplit(url).scheme
    except ValueError:  # an unclosed IPv6 bracket: refused by _check_url
        scheme = ""
    return _check_url(url, "webhook_url_env", f"the value of {name} (scheme {scheme!r})")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Follow no redirect: urllib re-sends a redirected POST as a GET without the body, and the report is lost
    while the send looks done. ``None`` here leaves the 3xx to the default handler, which raises HTTPError."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def _number(value) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _duration(seconds: float) -> str:
    """``42.0 s``, ``3 min 12 s``, ``2 h 05 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes = int(seconds // 60)
    return f"{minutes} min {int(seconds % 60)} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _summary(report: dict) -> str:
    """The report in one line for people: run, status, best monitored value, duration. It is the webhook's
    ``text``, which Slack and Microsoft Teams incoming webhooks need (HTTP 400 without it)."""
    parts = [f"{report['run']}: {report['status']}"]
    if report.get("monitor"):
        best = report.get("best")
        value = "none logged" if best is None else f"{best:.4g}"
        parts.append(f"best {report['monitor']} {value} ({report.get('mode')})")
    if report.get("duration_s") is not None:
        parts.append(f"after {_duration(report['duration_s'])}")
    return ", ".join(parts)


def _short_folder(path) -> str:
    """``lightning_logs/medical/quick/checkpoints`` -> ``medical/quick``: the part below ``lightning_logs`` (the
    whole path when it is elsewhere) without a trailing ``checkpoints``."""
    parts = list(Path(str(path)).parts)
    if parts and parts[-1] == "checkpoints":
        parts.pop()
    if "lightning_logs" in parts[:-1]:
        parts = parts[len(parts) - parts[::-1].index("lightning_logs") :]
    return Path(*parts).as_posix() if parts else str(path)


def holds_logged_values(folder: Path) -> bool:
    """Whether a run's log folder holds a logged value: a CSV logger's ``metrics.csv``, or in a TensorBoard
    event file any summary but the run's settings (read with tensorboard's own reader, up to the first). The
    CLI removes a failed run's folder holding none (:meth:`shared.cli.SuiteCLI._remove_unlogged_versions`),
    and the report of such a run names none (:meth:`NotifyWhenDone._run_name`)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    if (folder / "metrics.csv").is_file():
        return True
    return any(
        value.metadata.plugin_data.plugin_name != "hparams"  # scalars, images, ...: the reader tags each
        for events in folder.glob("events.out.tfevents.*")
        for event in EventFileLoader(str(events)).Load()
        for value in event.summary.value
    )


def _logged_nothing(logger) -> bool:
    """Whether ``logger``, a CSV or TensorBoard logger writing to a local folder, holds no logged value there
    (:func:`holds_logged_values`), its pending ones written first (Lightning writes them only after the
    callbacks' ``on_exception``); False for other loggers (what they hold is not known here)."""
    if not isinstance(logger, (CSVLogger, TensorBoardLogger)) or "://" in str(logger.root_dir):
        return False
    try:
        if getattr(logger, "_experiment", None) is not None:  # made at its first value or settings
            logger.save()  # CSV rows held in memory, TensorBoard's event buffer
        return not holds_logged_values(Path(logger.log_dir))
    except Exception:  # noqa: BLE001 - unreadable: named as before (a report is never lost to it)
        return False


class NotifyWhenDone(pl.Callback):
    """Send a short report when ``fit`` ends, fails or is interrupted (rank 0 only; off unless added).

    Args:
        webhook_url: POST the report as JSON here (http or https); null: no webhook. The URL is stored in the
            run's config.yaml and in every checkpoint (a warning says so): for a secret URL (Slack, Teams,
            Discord) use ``webhook_url_env`` instead. A redirect is not followed (a failure, warned about). A
            URL with ``user:password@`` is refused (the webhook is sent without logging in).
        webhook_url_env: name of the environment variable holding the webhook URL, read when sending and never
            stored (only the name lands in a saved config); it must be set at the start. Not with
            ``webhook_url``.
        smtp_host: SMTP server for the e-mail; null: no e-mail.
        smtp_port: its port (587: submission with STARTTLS; 465: SMTPS, implicit TLS; 25: relay).
        sender: the From address (needed with ``smtp_host``).
        recipients: the To addresses (at least one with ``smtp_host``).
        smtp_user: login name; null: send without logging in.
        password_env: name of the environment variable holding the SMTP password (the password itself is never
            an option, so it never lands in a saved config).
        require_tls: refuse to send the e-mail when the server offers no STARTTLS. Without it a message still
            goes out in clear, but a password is never sent over a connection without TLS.
        implicit_tls: connect with TLS from the start (SMTPS, ``smtplib.SMTP_SSL``) instead of STARTTLS; null:
            on for port 465, the SMTPS port (where a plain connection waits for a greeting that never comes).
        timeout: seconds allowed to each message, all of it (connect, send, the server's answer), before the run
            goes on without it (a warning, not an error).
        run_name: the name in the message; null: the checkpoint folder's ``<domain>/<config>`` (the CLI's
            ``lightning_logs/<domain>/<config>/checkpoints``) and the logger's version, e.g.
            ``medical_classification/quick (csv/version_3)``; for a run that failed or was interrupted before
            it logged a value, ``medical_classification/quick (csv: no values logged)`` (the CLI removes
            such a run's empty ``version_N``).
        monitor: the metric reported (last and best value); null: the checkpoint callback's monitor.
        mode: ``min`` or ``max`` for the best value; null: the checkpoint callback's mode for its monitor,
            ``min`` for a loss (``val/loss``); another metric without a mode is an error at the start of the
            run (which way is better is unknown).
        notify_on_success: also send when ``fit`` finishes normally (failures and interrupts always send).
    """

    def __init__(
        self,
        webhook_url: str | None = None,
        webhook_url_env: str | None = None,
        smtp_host: str | None = None,
        smtp_port: int = 587,
        sender: str | None = None,
        recipients: list[str] | None = None,
        smtp_user: str | None = None,
        password_env: str = "SUITE_SMTP_PASSWORD",
        require_tls: bool = False,
        implicit_tls: bool | None = None,
        timeout: float = 10.0,
        run_name: str | None = None,
        monitor: str | None = None,
        mode: str | None = None,
        notify_on_success: bool = True,
    ):
        super().__init__()
        recipients = list(recipients or [])
        if webhook_url is None and webhook_url_env is None and smtp_host is None:
            raise NotifyConfigError(
                "NotifyWhenDone: nothing to send to: set webhook_url (or webhook_url_env) and / or smtp_host "
                "(with sender and recipients)"
            )
        if webhook_url is not None and webhook_url_env is not None:
            raise NotifyConfigError(
                "NotifyWhenDone.webhook_url and NotifyWhenDone.webhook_url_env: give one of them, not both"
            )
        if webhook_url is not None:
            _check_url(webhook_url, "webhook_url")
            rank_zero_warn(
                "NotifyWhenDone.webhook_url: the URL (the webhook's credential for Slack, Teams or Discord) "
                "is stored in the run's config.yaml and in every checkpoint; to keep it out, export it in an "
                "environment variable and name that with webhook_url_env (e.g. "
                "--trainer.callbacks.init_args.webhook_url_env=SUITE_WEBHOOK_URL)"
            )
        if webhook_url_env is not None:
            _url_from_env(_check_env_name(webhook_url_env, "webhook_url_env"))
        if smtp_host is not None:
            if not smtp_host.strip() or any(c.isspace() for c in smtp_host):
                raise NotifyConfigError(f"NotifyWhenDone.smtp_host: {smtp_host!r} is not a host name")
            if not 0 < int(smtp_port) < 65536:
                raise NotifyConfigError(f"NotifyWhenDone.smtp_port: {smtp_port} is not a port (1-65535)")
            if sender is None:
                raise NotifyConfigError("NotifyWhenDone.sender: needed with smtp_host (the From address)")
            if not recipients:
                raise NotifyConfigError(
                    "NotifyWhenDone.recipients: needed with smtp_host (at least one address)"
                )
        elif sender is not None or recipients:
            raise NotifyConfigError("NotifyWhenDone.smtp_host: sender / recipients given but no SMTP server")
        if sender is not None:
            _check_address(sender, "sender")
        for i, address in enumerate(recipients):
            _check_address(address, f"recipients[{i}]")
        _check_env_name(password_env, "password_env")
        if not timeout > 0:
            raise NotifyConfigError(f"NotifyWhenDone.timeout: must be > 0 seconds, got {timeout}")
        if mode not in (None, "min", "max"):
            raise NotifyConfigError(f"NotifyWhenDone.mode: 'min' or 'max', got {mode!r}")
        self.webhook_url = webhook_url
        self.webhook_url_env = webhook_url_env
        self.smtp_host = smtp_host
        self.smtp_port = int(smtp_port)
        self.sender = sender
        self.recipients = recipients
        self.smtp_user = smtp_user
        self.password_env = password_env
        self.require_tls = require_tls
        self.implicit_tls = self.smtp_port == 465 if implicit_tls is None else bool(implicit_tls)
        self.timeout = float(timeout)
        self.run_name = run_name
        self.monitor = monitor
        self.mode = mode
        self.notify_on_success = notify_on_success
        # the run's clock starts here: the CLI builds the callback before the data module's setup, which runs
        # before any callback hook (and may fail there: setup is never reached)
        self._start = time.monotonic()
        self._last: float | None = None
        self._best: float | None = None
        self._sent = False
        self._logged: list[str] | None = None  # the metrics the last validation had (None: none ran)
        #: what was sent last (the report dict), for logs and tests
        self.last_report: dict | None = None

    # ------------------------------------------------------------------------------------------ hooks

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._last = self._best = None
        self._sent, self._logged = False, None
        ckpt_monitor = getattr(getattr(trainer, "checkpoint_callback", None), "monitor", None)
        other = self.monitor and self.monitor != ckpt_monitor and metric_mode(self.monitor) is None
        if stage == "fit" and self.mode is None and other:  # only fit sends
            # "best" of an accuracy taken as a minimum was its worst epoch. Nothing is sent for this: the run
            # stops here, and its report would carry the very mode refused
            self._sent = True
            raise NotifyConfigError(
                f"NotifyWhenDone.monitor {self.monitor!r} is not the checkpoint callback's "
                f"({ckpt_monitor!r}), so which way is better is unknown: set NotifyWhenDone.mode to 'max' "
                "(accuracy, F1, mAP, IoU) or 'min' (a loss, GED, ECE)"
            )

    def _monitor_and_mode(self, trainer) -> tuple[str | None, str]:
        ckpt = getattr(trainer, "checkpoint_callback", None)
        monitor = self.monitor or getattr(ckpt, "monitor", None)
        mode = self.mode
        if mode is None:  # the checkpoint callback's monitor, or a loss (setup refuses others without a mode)
            same = ckpt is not None and getattr(ckpt, "monitor", None) == monitor
            mode = getattr(ckpt, "mode", "min") if same else metric_mode(monitor) or "min"
        return monitor, mode

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        monitor, mode = self._monitor_and_mode(trainer)
        self._logged = sorted(k for k in trainer.callback_metrics if "/" in k)  # for the warning in notify
        value = _number(trainer.callback_metrics.get(monitor)) if monitor else None
        if value is None:
            return
        self._last = value
        if self._best is None or (value < self._best if mode == "min" else value > self._best):
            self._best = value

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.notify_on_success:
            self.notify(trainer, "finished")

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._start = time.monotonic()  # a callback used again: the next run starts when this one ended

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if getattr(getattr(trainer, "state", None), "fn", "fit") != "fit":
            self._start = time.monotonic()  # as in teardown, which Lightning skips after an exception
            return  # only a training run is reported: a failing test / validate / predict is the caller's to see
        # Ctrl-C and SIGTERM (docker stop, a scheduler's preemption; Lightning raises SIGTERMException at the
        # next step) are someone stopping the run, not the run failing
        interrupted = isinstance(exception, (SIGTERMException, KeyboardInterrupt))
        if isinstance(exception, SIGTERMException):
            status, error = "interrupted", "SIGTERM received (docker stop, preemption or kill)"
        else:
            status = "interrupted" if interrupted else "failed"
            error = f"{type(exception).__name__}: {exception}" if str(exception) else type(exception).__name__
        if interrupted:
            # Lightning calls the checkpoint callbacks last, and the CLI's saves last.ckpt on a SIGTERM or Ctrl-C:
            # let it save first, so the report names what `fit --ckpt_path last` resumes from (it said null, and
            # a scheduler reading it restarted from scratch); the callback saves once
            for callback in getattr(trainer, "checkpoint_callbacks", []):
                callback.on_exception(trainer, pl_module, exception)
        self.notify(trainer, status, error=error)
        self._start = time.monotonic()

    # ---------------------------------------------------------------------------------------- report

    def _run_name(self, trainer, status: str = "finished") -> str:
        """``<domain>/<config> (<logger>/version_N)``: the CLI's checkpoint folder
        ``lightning_logs/<domain>/<config>/checkpoints`` names the task and config (the loggers' ``csv/version_0``
        alone was the same for a medical and a driving run), the logger's version the run; else the loggers'
        folder, else the root folder's name. A run that ended before any logger held a value says ``(csv: no
        values logged)`` instead: the CLI removes the ``version_N`` folders it reserved for such a run
        (:func:`holds_logged_values`), and the failure report named that folder, gone when read."""
        if self.run_name:
            return self.run_name
        ckpt = getattr(trainer, "checkpoint_callback", None)
        logger = getattr(trainer, "logger", None)
        folder = getattr(ckpt, "dirpath", None) or getattr(logger, "save_dir", None)
        name = (
            _short_folder(folder) if folder else os.path.basename(os.path.abspath(trainer.default_root_dir))
        )
        version = getattr(logger, "version", None)
        if version in (None, ""):  # no logger, or fast_dev_run's stand-in
            return name
        version = version if isinstance(version, str) else f"version_{version}"
        loggers = getattr(trainer, "loggers", None) or [logger]
        if status != "finished" and all(map(_logged_nothing, loggers)):  # a finished run's folder stays
            return f"{name} ({logger.name}: no values logged)" if getattr(logger, "name", None) else (
                f"{name} (no values logged)"
            )
        return f"{name} ({logger.name}/{version})" if getattr(logger, "name", None) else f"{name} ({version})"

    def report(self, trainer, status: str, error: str | None = None) -> dict:
        """The message's fields as a JSON-ready dict."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        monitor, mode = self._monitor_and_mode(trainer)
        ckpt = getattr(trainer, "checkpoint_callback", None)
        best = self._best
        if ckpt is not None and getattr(ckpt, "monitor", None) == monitor:
            # the score of the checkpoint the message names: a resumed run's own best can be worse than one
            # saved before the resume
            saved = _number(getattr(ckpt, "best_model_score", None))
            best = best if saved is None else saved
        path = (getattr(ckpt, "best_model_path", "") or getattr(ckpt, "last_model_path", "")) if ckpt else ""
        state = getattr(trainer, "state", None)
        return {
            "run": self._run_name(trainer, status),
            "status": status,
            "stage": str(getattr(getattr(state, "fn", None), "value", "") or "") or None,
            "duration_s": round(time.monotonic() - self._start, 1),
            "epoch": getattr(trainer, "current_epoch", None),
            "global_step": getattr(trainer, "global_step", None),
            "monitor": monitor,
            "mode": mode,
            "last": self._last,
            "best": best,
            "checkpoint": path or None,
            # what `fit --ckpt_path last` resumes from (a failed or interrupted run goes on from here)
            "last_checkpoint": (getattr(ckpt, "last_model_path", "") or None) if ckpt else None,
            "error": error,
            "host": socket.gethostname(),
        }

    def notify(self, trainer, status: str, error: str | None = None) -> dict | None:
        """Build the report and send it everywhere configured (rank 0, once per run); never raises."""
        if not getattr(trainer, "is_global_zero", True) or self._sent:
            return None
        self._sent = True
        monitor = self._monitor_and_mode(trainer)[0]
        if monitor and self._last is None and self._logged is not None:  # validated, never with it: a typo?
            rank_zero_warn(
                f"NotifyWhenDone.monitor {monitor!r} was never logged at a validation of this run (logged: "
                f"{', '.join(self._logged) or 'nothing'}): the report's last and best are empty"
            )
        try:
            report = self.report(trainer, status, error)
        except Exception as err:  # noqa: BLE001 - a report that cannot be built must not mask the run's own outcome
            log.warning("NotifyWhenDone: could not build the report: %s", err)
            return None
        self.last_report = report
        if self.webhook_url is not None or self.webhook_url_env is not None:
            self._guarded("webhook", self.send_webhook, report)
        if self.smtp_host is not None:
            self._guarded("e-mail", self.send_email, report)
        return report

    def _guarded(self, what: str, send, report: dict) -> None:
        """``send(report)`` within ``timeout`` seconds in all: the sockets' own timeout bounds each read, so a
        server that trickles its answer a byte at a time held a finished run for minutes. The send runs in a
        daemon thread; past the deadline the run goes on (and the process may end before the server answers)."""
        failure: list[BaseException] = []

        def attempt() -> None:
            try:
                send(report)
            except Exception as err:  # noqa: BLE001 - down, refused, timed out, rejected: tell, never change how the run ends
                failure.append(err)

        worker = threading.Thread(target=attempt, name=f"NotifyWhenDone {what}", daemon=True)
        worker.start()
        worker.join(self.timeout)
        if worker.is_alive():
            log.warning(
                "NotifyWhenDone: %s not confirmed within the %g s timeout (the server is slow to answer): the run "
                "goes on without waiting for it", what, self.timeout,
            )  # fmt: skip
        elif failure:
            error = self._hide_webhook_url(f"{type(failure[0]).__name__}: {failure[0]}")
            log.warning("NotifyWhenDone: %s not sent (%s)", what, error)

    def _hide_webhook_url(self, text: str) -> str:
        """``text`` without the webhook URL's secret parts (:func:`_without_secrets`), for the warnings."""
        url = self.webhook_url if self.webhook_url_env is None else os.environ.get(self.webhook_url_env, "")
        return _without_secrets(text, url) if url else text

    # ------------------------------------------------------------------------------------------ sending

    def send_webhook(self, report: dict) -> None:
        url = self.webhook_url if self.webhook_url_env is None else _url_from_env(self.webhook_url_env)
        request = urllib.request.Request(
            url,
            data=json.dumps({"text": _summary(report), **report}).encode(),
            headers={"Content-Type": "application/json", "User-Agent": "applied-dl-suite/notify"},
            method="POST",
        )
        # the URL's scheme is checked to be http(s); the opener raises HTTPError on any status outside 2xx, a
        # redirect included (not followed)
        try:
            with urllib.request.build_opener(_NoRedirect).open(request, timeout=self.timeout):
                pass
        except urllib.error.HTTPError as err:
            if not 300 <= err.code < 400:
                raise
            err.close()
            location = err.headers.get("Location") or "none"
            raise urllib.error.HTTPError(
                err.url, err.code,
                f"{err.reason} (Location: {location}): a redirect is not followed (a redirected POST loses "
                "the report); point the webhook at its final URL",
                err.headers, None,
            ) from None  # fmt: skip
        rank_zero_info(f"NotifyWhenDone: webhook sent ({report['status']})")  # Lightning's logger is shown

    def _message(self, report: dict) -> EmailMessage:
        message = EmailMessage()
        message["Subject"] = f"[applied-dl-suite] {report['run']}: {report['status']}"
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        lines = [f"{key}: {value}" for key, value in report.items() if value is not None]
        message.set_content("\n".join(lines) + "\n\n" + json.dumps(report, indent=2) + "\n")
        return message

    def send_email(self, report: dict) -> None:
        password = os.environ.get(self.password_env) if self.smtp_user else None
        if self.implicit_tls:  # SMTPS: TLS from the first byte
            smtp = smtplib.SMTP_SSL(
                self.smtp_host, self.smtp_port, timeout=self.timeout, context=ssl.create_default_context()
            )
        else:
            smtp = smtplib.SMTP(self.smtp_host, self.smtp_port, timeout=self.timeout)
        with smtp as server:
            server.ehlo()
            tls = self.implicit_tls
            if not tls and server.has_extn("starttls"):
                server.starttls(context=ssl.create_default_context())
                server.ehlo()
                tls = True
            if not tls and self.require_tls:
                raise ConnectionError(
                    f"{self.smtp_host}:{self.smtp_port} offers no STARTTLS (require_tls is on)"
                )
            if self.smtp_user:
                if not password:
                    raise PermissionError(
                        f"smtp_user is set but the environment variable {self.password_env} is empty"
                    )
                if not tls:
                    raise ConnectionError(
                        f"{self.smtp_host}:{self.smtp_port} offers no STARTTLS: not sending the password in clear"
                    )
                server.login(self.smtp_user, password)
            refused = server.send_message(self._message(report))
        if refused:
            log.warning("NotifyWhenDone: e-mail refused for %s", ", ".join(refused))
        rank_zero_info(
            f"NotifyWhenDone: e-mail sent to {len(self.recipients) - len(refused)} recipient(s) ({report['status']})"
        )


__all__ = ["NotifyConfigError", "NotifyWhenDone"]
