"""Answers Twilio's API (or a gateway in front of it) can give that the sandbox alone does not:
a 2xx that is not JSON, a 2xx without a sid, 502/504 after the request was forwarded, a
connection reset after the request left (issue 10). Each is sorted by whether a message may
exist: if it may, the row becomes `unknown` and is reconciled, never sent again.

A real HTTP gateway (http.server in a thread) stands between the official client and the
sandbox: it forwards requests and replaces the answer, so the message really exists (or not)
where reconciliation will look for it.
"""

from __future__ import annotations

import datetime as dt
import socket
import struct
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from sqlalchemy import Engine, select

from outreach.clock import utcnow
from outreach.config import Settings, get_settings
from outreach.providers import AmbiguousError, RetryableError
from outreach.providers.twilio import TwilioProvider
from outreach.sandbox.server import SandboxServer
from outreach.sandbox.state import SandboxConfig
from outreach.send import batch, sweeper
from outreach.send.ratelimit import NoLimit
from outreach.store.db import session_scope
from outreach.store.models import Message, MessageStatus

PATIENT = "+16175550123"
# How the gateway answers a create. "forward": the sandbox's own answer. Others forward the
# request first, then answer in their own way, except "500"/"503": Twilio's API itself refusing
# before it did anything (the sandbox never sees the request).
FORWARDED = {"non_json", "no_sid", "502", "504", "reset"}
NOT_FORWARDED = {"500", "503"}


class Gateway:
    """A reverse proxy to the sandbox whose answers to creates can be replaced."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.mode = "forward"
        self.read_mode = "forward"  # "502": a look-up (GET) answered 502 by the gateway
        self.creates = 0
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                if gateway.read_mode == "502":
                    return self._answer(502, b"<html>Bad Gateway</html>", "text/html")
                self._relay(self._forward("GET", b""))

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                mode = gateway.mode if self.path.endswith("/Messages.json") else "forward"
                gateway.creates += 1
                if mode in NOT_FORWARDED:
                    return self._answer(int(mode), b'{"code": 20500, "message": "Internal", "status": 500}')
                answer = self._forward("POST", body)
                if mode == "forward":
                    self._relay(answer)
                elif mode == "non_json":
                    self._answer(201, b"<html><body>Message accepted</body></html>", "text/html")
                elif mode == "no_sid":
                    self._answer(201, b'{"status": "queued"}')
                elif mode == "reset":
                    # RST instead of an answer: SO_LINGER 0 makes close() reset the connection.
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    self.connection.close()
                else:
                    self._answer(int(mode), b"<html>Bad Gateway</html>", "text/html")

            def _forward(self, method: str, body: bytes) -> requests.Response:
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type")
                }
                return requests.request(
                    method, gateway.upstream + self.path, data=body, headers=headers, timeout=10
                )

            def _relay(self, answer: requests.Response) -> None:
                self._answer(answer.status_code, answer.content, answer.headers.get("Content-Type", ""))

            def _answer(self, status: int, body: bytes, kind: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    config = SandboxConfig(sent_after_s=0, delivered_after_s=0)
    with SandboxServer("AC" + "4" * 32, "faults-token", config=config) as server:
        yield server


@pytest.fixture
def gateway(sandbox: SandboxServer) -> Iterator[Gateway]:
    proxy = Gateway(sandbox.url)
    yield proxy
    proxy.close()


@pytest.fixture
def settings(
    sandbox: SandboxServer, gateway: Gateway, monkeypatch: pytest.MonkeyPatch, engine: Engine
) -> Settings:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", sandbox.account_sid)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", sandbox.auth_token)
    monkeypatch.setenv("TWILIO_FROM_NUMBER", "+16175550000")
    monkeypatch.setenv("OUTREACH_TWILIO_API_URL", gateway.url)
    get_settings.cache_clear()
    return get_settings()


@pytest.mark.parametrize("mode", sorted(FORWARDED))
def test_an_answer_after_the_request_was_forwarded_is_ambiguous(
    settings: Settings, sandbox: SandboxServer, gateway: Gateway, mode: str
) -> None:
    gateway.mode = mode
    provider = TwilioProvider(settings, timeout=5)
    with pytest.raises(AmbiguousError):
        provider.send(to=PATIENT, body="hello")
    assert len(sandbox.messages()) == 1  # the message does exist: resending it would be a duplicate
    assert gateway.creates == 1  # and the client did not resend it by itself
    gateway.mode = "forward"
    [found] = provider.list_to(PATIENT, since=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
    assert found.sid == sandbox.messages()[0]["sid"]


@pytest.mark.parametrize("mode", sorted(NOT_FORWARDED))
def test_a_server_error_of_the_api_itself_is_retryable(
    settings: Settings, sandbox: SandboxServer, gateway: Gateway, mode: str
) -> None:
    gateway.mode = mode
    with pytest.raises(RetryableError) as caught:
        TwilioProvider(settings, timeout=5).send(to=PATIENT, body="hello")
    assert caught.value.http_status == int(mode)
    assert sandbox.messages() == []


def test_a_bad_gateway_on_a_lookup_is_only_postponed(settings: Settings, gateway: Gateway) -> None:
    """Reads create nothing: a lost answer to a GET is simply worth another try."""
    provider = TwilioProvider(settings, timeout=5)
    sid = provider.send(to=PATIENT, body="hello").sid
    gateway.read_mode = "502"
    with pytest.raises(RetryableError) as caught:
        provider.fetch(sid)
    assert caught.value.http_status is None  # no HTTP error of Twilio's: nothing to record
    with pytest.raises(RetryableError):
        provider.list_to(PATIENT, since=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))


@pytest.mark.parametrize("mode", ["non_json", "502"])
def test_the_sender_marks_such_rows_unknown_keeps_going_and_the_sweeper_settles_them(
    engine: Engine, settings: Settings, sandbox: SandboxServer, gateway: Gateway, mode: str
) -> None:
    """The batch does not abort at the first unreadable answer (every claimed row would then wait
    for the sweeper); each row becomes `unknown`, and the sweeper finds each one at the provider."""
    now = utcnow()  # the provider stamps messages with the real clock: reconciliation looks by time
    with session_scope(engine) as s:
        for i in range(3):
            s.add(
                Message(
                    step_id=f"answer:{i}",
                    kind="answer",
                    phone=f"+1617555010{i}",
                    body=f"Thanks {i}!",
                    status=MessageStatus.queued,
                    send_at=now,
                    queued_at=now,
                )
            )
    with session_scope(engine) as s:
        ids = list(s.scalars(select(Message.id).order_by(Message.id)))
    gateway.mode = mode
    sender = batch.Sender(engine, TwilioProvider(settings, timeout=5), NoLimit(), {}, settings, lambda: now)
    result = sender.send(ids)
    assert (result.unknown, result.sent, result.retrying) == (3, 0, 0)
    assert len(sandbox.messages()) == 3

    gateway.mode = "forward"
    swept = sweeper.sweep(
        engine, provider=TwilioProvider(settings), dispatch=None, now=now + dt.timedelta(minutes=1)
    )
    assert (swept.found, swept.requeued, swept.failed) == (3, 0, 0)
    with session_scope(engine) as s:
        rows = list(s.scalars(select(Message).order_by(Message.id)))
    assert {r.provider_sid for r in rows} == {m["sid"] for m in sandbox.messages()}
    assert {r.status for r in rows} == {MessageStatus.delivered}
    assert len(sandbox.messages()) == 3  # never sent again
