"""Fixtures around the Twilio sandbox: one server per session, reset for each test, and a tiny
HTTP receiver for status callbacks and inbound webhooks. Register with
`pytest_plugins = ["tests.sandbox_fixtures"]`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

import pytest

from outreach.config import get_settings
from outreach.sandbox import SandboxConfig, SandboxServer

SENDER = "+15005550006"  # Twilio's magic "valid From" number
SERVICE_SID = "MG" + "0123456789abcdef" * 2


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[SandboxServer]:
    with SandboxServer() as server:
        yield server


@pytest.fixture
def sandbox(sandbox_server: SandboxServer) -> SandboxServer:
    """The session's sandbox with default settings and no records."""
    sandbox_server.state.replies = None
    sandbox_server.configure(**SandboxConfig().model_dump())
    sandbox_server.reset()
    return sandbox_server


@pytest.fixture
def twilio_env(sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> SandboxServer:
    """Settings that point the real twilio client at the sandbox, sending from a plain number."""
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", sandbox.account_sid)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", sandbox.auth_token)
    monkeypatch.setenv("TWILIO_FROM_NUMBER", SENDER)
    monkeypatch.setenv("OUTREACH_TWILIO_API_URL", sandbox.url)
    get_settings.cache_clear()
    return sandbox


@dataclass(frozen=True)
class Received:
    url: str
    headers: dict[str, str]
    params: dict[str, str]


class WebhookReceiver:
    """Records every POST it gets; `url(path)` is where to point callbacks."""

    def __init__(self) -> None:
        self.received: queue.Queue[Received] = queue.Queue()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length).decode()
                receiver.received.put(
                    Received(
                        url=f"{receiver.base}{self.path}",
                        headers={k.lower(): v for k, v in self.headers.items()},
                        params=dict(parse_qsl(body, keep_blank_values=True)),
                    )
                )
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: test output is not the place for request lines."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str = "/twilio/status") -> str:
        return self.base + path

    def wait(self, count: int, timeout: float = 15.0) -> list[Received]:
        """The next `count` requests (fails the test if they do not come within `timeout`)."""
        got = []
        for _ in range(count):
            try:
                got.append(self.received.get(timeout=timeout))
            except queue.Empty:
                pytest.fail(f"expected {count} webhook requests, got {len(got)}: {got}")
        return got

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()
