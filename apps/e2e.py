"""Browser check of the demo: serve it, screenshot each page with headless Chromium, fail on exceptions.

``python apps/e2e.py`` (``make e2e``; not part of ``make test``). Needs Debian's ``chromium`` package
(``apt-get install chromium``). Screenshots and each page's DOM go to ``outputs/e2e/``. A page fails when its
DOM holds a Streamlit exception block (``stException``) or a Python traceback, or when its title never
rendered. ``st.error`` messages are listed, not failed: a page may rightly say a checkpoint is missing.

Two ways to drive Chromium:

* ``--mode cdp`` (default): one headless Chromium with ``--remote-debugging-port``, driven over the DevTools
  protocol (the ``websockets`` package Streamlit itself depends on); each page is polled in *real* time until
  its script has finished (no "Running..." indicator), then its DOM and a screenshot are taken.
* ``--mode oneshot``: ``chromium --screenshot`` / ``--dump-dom`` with ``--virtual-time-budget``. Simpler, but
  virtual time does not wait for the server's script (it talks over a websocket), so on a slow or busy
  machine the page is caught half-rendered; visits are repeated a few times to warm the caches.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from apps.prepare_demo import streamlit_command

ROOT = Path(__file__).resolve().parents[1]
PAGES = {
    "home": ("", "Applied deep learning"),
    "medical": ("medical", "Medical imaging"),
    "driving": ("driving", "Driving: road objects"),
}
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
]
FAILURE_MARKERS = ("stException", "Traceback (most recent call last)")
RUNNING_MARKER = "stStatusWidgetRunningIcon"  # the "Running..." man: the script had not finished


def find_chromium(explicit: str | None) -> str | None:
    for candidate in (
        explicit,
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
        shutil.which("google-chrome"),
    ):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, timeout: float, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"e2e: the Streamlit server exited with code {server.returncode} (see its log)")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200 and response.read().strip() == b"ok":
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"e2e: {url} did not answer 'ok' within {timeout:.0f} s")


def chromium(binary: str, args: list[str], budget_ms: int, timeout: float) -> subprocess.CompletedProcess:
    """One headless Chromium run with a fresh profile folder (removed afterwards)."""
    with tempfile.TemporaryDirectory(prefix="e2e-chromium-") as profile:
        cmd = [
            binary,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}",
            *args,
        ]
        return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)


def check_page(
    binary: str, name: str, url: str, title: str, out: Path, budget_ms: int, timeout: float, attempts: int = 4
) -> list[str]:
    """DOM + screenshot of one page; returns the problems found (empty: passed).

    Chromium's virtual time does not wait for the server's script (it talks over a websocket), so the first
    visit of a cold server may end while the page still runs (imports, model loading). The DOM is fetched
    again until the page is idle (its caches warm), then the screenshot is taken.
    """
    problems = []
    dom = ""
    for attempt in range(1, attempts + 1):
        dom = chromium(binary, ["--dump-dom", url], budget_ms, timeout).stdout
        if title in dom and RUNNING_MARKER not in dom:
            break
        print(f"  {name}: still running after attempt {attempt}; fetching again")
    (out / f"{name}.html").write_text(dom, encoding="utf-8")
    png = out / f"{name}.png"
    png.unlink(missing_ok=True)
    shot = chromium(binary, [f"--screenshot={png}", url], budget_ms, timeout)
    if not png.is_file() or png.stat().st_size < 5000:
        problems.append(f"no usable screenshot ({png}; chromium said: {shot.stderr.strip()[-300:]})")
    for marker in FAILURE_MARKERS:
        if marker in dom:
            problems.append(f"the page shows an exception ({marker!r} in its DOM)")
    if title not in dom:
        problems.append(f"the page never rendered its title {title!r} ({attempts} visits of {budget_ms} ms)")
    elif RUNNING_MARKER in dom:
        problems.append(
            f"the page was still running after {attempts} visits (slow model or data preparation?)"
        )
    errors = dom.count('data-testid="stAlertContentError"')
    if errors:
        print(f"  note: {name} shows {errors} st.error message(s); see {out / (name + '.html')}")
    return problems


class DevTools:
    """A minimal Chrome DevTools Protocol client over the ``websockets`` package (synchronous)."""

    def __init__(self, url: str, timeout: float):
        from contextlib import ExitStack

        from websockets.sync.client import connect

        self._stack = ExitStack()
        self.socket = self._stack.enter_context(connect(url, max_size=None, open_timeout=timeout))
        self.timeout = timeout
        self.next_id = 0

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        call_id = self.next_id
        self.socket.send(json.dumps({"id": call_id, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while True:
            message = json.loads(self.socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == call_id:  # events and other answers are skipped
                if "error" in message:
                    raise RuntimeError(f"DevTools {method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def close(self) -> None:
        self._stack.close()


def start_devtools_browser(binary: str, profile: str, timeout: float) -> tuple[subprocess.Popen, DevTools]:
    """Headless Chromium on a free DevTools port (read from DevToolsActivePort) and a client on its page."""
    cmd = [
        binary,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        "--remote-debugging-port=0",
        "--remote-debugging-address=127.0.0.1",
        "about:blank",
    ]
    browser = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    port_file = Path(profile) / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while not (port_file.is_file() and port_file.read_text(encoding="utf-8").strip()):
        if browser.poll() is not None or time.monotonic() > deadline:
            stop(browser)
            raise SystemExit("e2e: Chromium did not open its DevTools port (is /usr/bin/chromium working?)")
        time.sleep(0.2)
    port = int(port_file.read_text(encoding="utf-8").split()[0])
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as response:
                targets = [t for t in json.loads(response.read()) if t.get("type") == "page"]
            if targets:
                break
        except (urllib.error.URLError, ConnectionError):
            pass
        if time.monotonic() > deadline:
            stop(browser)
            raise SystemExit("e2e: Chromium's DevTools endpoint listed no page")
        time.sleep(0.2)
    tools = DevTools(targets[0]["webSocketDebuggerUrl"], timeout)
    tools.call("Page.enable")
    tools.call(
        "Emulation.setDeviceMetricsOverride", width=1400, height=1000, deviceScaleFactor=1, mobile=False
    )
    return browser, tools


def check_page_cdp(tools: DevTools, name: str, url: str, title: str, out: Path, timeout: float) -> list[str]:
    """Load one page and wait (real time) until its title shows and its script stopped running."""
    tools.call("Page.navigate", url=url)
    time.sleep(1.0)  # let the old document go before polling the new one
    probe = (
        f"(() => {{ const t = document.body ? document.body.innerText : ''; "
        f"return t.includes({json.dumps(title)}) "
        f"&& !document.querySelector('[data-testid={RUNNING_MARKER}]') "
        f"&& !!document.querySelector('[data-testid=stMainBlockContainer]'); }})()"
    )
    deadline = time.monotonic() + timeout
    ready = False
    while time.monotonic() < deadline:
        if tools.evaluate(probe):
            ready = True
            break
        time.sleep(0.5)
    time.sleep(1.0)  # images and fonts settle
    dom = tools.evaluate("document.documentElement.outerHTML") or ""
    (out / f"{name}.html").write_text(dom, encoding="utf-8")
    shot = tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=False)
    (out / f"{name}.png").write_bytes(base64.b64decode(shot["data"]))
    problems = [f"the page shows an exception ({m!r} in its DOM)" for m in FAILURE_MARKERS if m in dom]
    if not ready and title not in dom:
        problems.append(f"the page never rendered its title {title!r} within {timeout:.0f} s")
    elif not ready:
        problems.append(f"the page was still running after {timeout:.0f} s")
    errors = dom.count('data-testid="stAlertContentError"')
    if errors:
        print(f"  note: {name} shows {errors} st.error message(s); see {out / (name + '.html')}")
    return problems


def stop(process: subprocess.Popen) -> None:
    """End a process group this script started (the server or the browser), politely first."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=20)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chromium", help="Chromium binary (default: /usr/bin/chromium or on PATH)")
    ap.add_argument("--out", default=str(ROOT / "outputs" / "e2e"))
    ap.add_argument("--port", type=int, default=0, help="0: a free port")
    ap.add_argument("--budget-ms", type=int, default=15000, help="Chromium --virtual-time-budget per page")
    ap.add_argument("--timeout", type=float, default=120, help="seconds for the server start and each page")
    ap.add_argument(
        "--mode", choices=("cdp", "oneshot"), default="cdp", help="how Chromium is driven (see above)"
    )
    args = ap.parse_args(argv)
    binary = find_chromium(args.chromium)
    if binary is None:
        print(
            "e2e: Chromium not found. Install it with:  apt-get install chromium  (Debian/Ubuntu)",
            file=sys.stderr,
        )
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    port = args.port or free_port()
    base = f"http://127.0.0.1:{port}"
    log = (out / "server.log").open("w", encoding="utf-8")
    cmd = streamlit_command(port, "127.0.0.1")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    server = subprocess.Popen(
        cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    failures: dict[str, list[str]] = {}
    try:
        wait_healthy(f"{base}/_stcore/health", args.timeout, server)
        print(f"server up at {base}")
        with tempfile.TemporaryDirectory(prefix="e2e-chromium-") as profile:
            browser, tools = (None, None)
            if args.mode == "cdp":
                browser, tools = start_devtools_browser(binary, profile, args.timeout)
            try:
                for name, (path, title) in PAGES.items():
                    start = time.perf_counter()
                    url = f"{base}/{path}"
                    if tools is not None:
                        problems = check_page_cdp(tools, name, url, title, out, args.timeout)
                    else:
                        problems = check_page(binary, name, url, title, out, args.budget_ms, args.timeout)
                    status = "ok" if not problems else "FAILED"
                    print(f"  {name:8s} {status} in {time.perf_counter() - start:.1f} s -> {out / name}.png")
                    for p in problems:
                        print(f"    - {p}")
                    if problems:
                        failures[name] = problems
            finally:
                if tools is not None:
                    tools.close()
                if browser is not None:
                    stop(browser)
    finally:
        stop(server)  # the server we started, and only its process group
        log.close()
    if failures:
        print(
            f"e2e: {len(failures)} page(s) failed: {', '.join(failures)} (server log: {out / 'server.log'})"
        )
        return 1
    print(f"e2e: all {len(PAGES)} pages rendered without exceptions; screenshots in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
