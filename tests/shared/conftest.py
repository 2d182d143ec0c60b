"""Fixtures of the shared-layer tests: a local webhook server."""

from __future__ import annotations

import http.server
import json
import threading

import pytest


class _Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.headers["Content-Type"], json.loads(body)))
        self.send_response(self.server.answer)
        self.end_headers()

    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def webhook():
    """A local HTTP server on 127.0.0.1 at ``.url``: it keeps the (content type, JSON body) of every POST in
    ``.received`` and answers with the status ``.answer`` (200)."""
    server = http.server.HTTPServer(("127.0.0.1", 0), _Hook)
    server.received, server.answer = [], 200
    # shutdown() waits for the serving loop to look again: at the default 0.5 s poll that was half a second of
    # every test's teardown
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield server
    server.shutdown()
    server.server_close()
