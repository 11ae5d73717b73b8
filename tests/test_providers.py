"""The providers through the real twilio client against the sandbox: every failure lands in the
class the sender relies on (retry, permanent, ambiguous), and nothing is sent twice by accident."""

from __future__ import annotations

import datetime as dt
import io
import re
import socket
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
import requests
from requests import exceptions as rq
from urllib3.exceptions import NewConnectionError, ProtocolError

from outreach.config import get_settings
from outreach.errors import UserError
from outreach.providers import AmbiguousError, OperatorError, PermanentError, RetryableError
from outreach.providers.console import ConsoleProvider
from outreach.providers.twilio import TwilioProvider, classify_http, classify_transport
from outreach.sandbox import SandboxServer

if TYPE_CHECKING:
    from tests.sandbox_fixtures import WebhookReceiver

pytest_plugins = ["tests.sandbox_fixtures"]

PATIENT = "+16175550123"
SENDER = "+15005550006"
SERVICE_SID = "MG" + "fedcba9876543210" * 2
SID = re.compile(r"^SM[0-9a-f]{32}$")


def test_create_fetch_and_list_through_the_official_client(
    twilio_env: SandboxServer, webhook_receiver: WebhookReceiver
) -> None:
    provider = TwilioProvider(get_settings())
    before = dt.datetime.now(dt.UTC)
    sent = provider.send(
        to=PATIENT, body="Hi Ana, Riverside Health here.", status_callback=webhook_receiver.url()
    )

    assert SID.match(sent.sid)
    assert (sent.to, sent.status, sent.error_code, sent.num_segments) == (PATIENT, "queued", None, 1)
    assert sent.date_created is not None and sent.date_created >= before.replace(microsecond=0)
    statuses = [r.params["MessageStatus"] for r in webhook_receiver.wait(2)]
    assert statuses == ["sent", "delivered"]  # Twilio posts no callback for the initial "queued"
    assert provider.fetch(sent.sid).status == "delivered"
    assert [m.sid for m in provider.list_to(PATIENT, since=before)] == [sent.sid]
    assert provider.list_to("+16175550199", since=before) == []
    [record] = twilio_env.messages()
    assert (record["sid"], record["from"], record["validity_period"]) == (sent.sid, SENDER, 14400)


def test_list_to_pages_newest_first_and_stops_at_since(twilio_env: SandboxServer) -> None:
    provider = TwilioProvider(get_settings())
    sids = [provider.send(to=PATIENT, body=f"message {i}").sid for i in range(55)]  # > one page of 50
    provider.send(to="+16175550124", body="someone else")

    found = provider.list_to(PATIENT, since=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5))
    assert [m.sid for m in found] == sids[::-1]
    assert provider.list_to(PATIENT, since=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)) == []


def test_messaging_service_is_preferred_and_reports_no_segments_yet(
    twilio_env: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWILIO_MESSAGING_SERVICE_SID", SERVICE_SID)
    get_settings.cache_clear()
    sent = TwilioProvider(get_settings()).send(to=PATIENT, body="hello")
    assert (sent.status, sent.num_segments) == ("accepted", None)
    [record] = twilio_env.messages()
    assert (record["messaging_service_sid"], record["history"][0]) == (SERVICE_SID, "accepted")


def test_status_callback_defaults_to_the_public_url(
    twilio_env: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OUTREACH_PUBLIC_URL", "https://outreach.example.org/")
    get_settings.cache_clear()
    provider = TwilioProvider(get_settings())
    provider.send(to=PATIENT, body="a")
    provider.send(to=PATIENT, body="b", status_callback="https://other.example.org/cb")
    callbacks = [m["status_callback"] for m in twilio_env.messages()]
    assert callbacks == ["https://outreach.example.org/twilio/status", "https://other.example.org/cb"]


def test_region_and_edge_do_not_redirect_a_custom_api_url(
    twilio_env: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWILIO_REGION", "au1")
    monkeypatch.setenv("TWILIO_EDGE", "sydney")
    TwilioProvider(get_settings()).send(to=PATIENT, body="hello")
    assert len(twilio_env.messages()) == 1


@pytest.mark.parametrize(
    ("fault", "http_status", "code"), [({"p429": 1.0}, 429, 20429), ({"p500": 1.0}, 500, 20500)]
)
def test_rate_limit_and_server_error_are_retryable_and_create_nothing(
    twilio_env: SandboxServer, fault: dict[str, float], http_status: int, code: int
) -> None:
    twilio_env.configure(**fault)
    with pytest.raises(RetryableError) as caught:
        TwilioProvider(get_settings()).send(to=PATIENT, body="hello")
    assert (caught.value.code, caught.value.http_status) == (code, http_status)
    assert twilio_env.messages() == []
    # One request, one answer: neither requests nor the twilio client resent the POST.
    assert twilio_env.stats()["counters"] == {f"fault_{http_status}": 1}


def test_connection_refused_is_retryable() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = _provider(f"http://127.0.0.1:{port}")
    with pytest.raises(RetryableError) as caught:
        provider.send(to=PATIENT, body="hello")
    assert caught.value.http_status is None
    with pytest.raises(RetryableError):
        provider.fetch("SM" + "0" * 32)


def test_unknown_host_is_retryable() -> None:
    with pytest.raises(RetryableError):
        _provider("http://sandbox.invalid").send(to=PATIENT, body="hello")


def test_accepted_then_timeout_is_ambiguous_and_the_message_exists(twilio_env: SandboxServer) -> None:
    twilio_env.configure(p_timeout=1.0, timeout_hold_s=5)
    provider = TwilioProvider(get_settings(), timeout=0.5)
    since = dt.datetime.now(dt.UTC)
    with pytest.raises(AmbiguousError):
        provider.send(to=PATIENT, body="hello")

    [record] = twilio_env.messages()
    assert record["timed_out"] is True
    # Reconciliation finds the message instead of sending it again.
    assert [m.sid for m in provider.list_to(PATIENT, since=since)] == [record["sid"]]


@pytest.fixture
def answers_then_hangs_up() -> Iterator[tuple[str, list[bytes]]]:
    """A server that reads a whole request and closes the connection without answering."""
    seen: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                data = conn.recv(65536)
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                seen.append(data)

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", seen
    listener.close()


def test_connection_lost_after_sending_is_ambiguous_and_not_resent(
    answers_then_hangs_up: tuple[str, list[bytes]],
) -> None:
    url, seen = answers_then_hangs_up
    provider = _provider(url)
    with pytest.raises(AmbiguousError):
        provider.send(to=PATIENT, body="hello")
    assert len(seen) == 1 and seen[0].startswith(b"POST ")
    # A read that loses its answer created nothing: worth another try.
    with pytest.raises(RetryableError):
        provider.fetch("SM" + "0" * 32)


@pytest.mark.parametrize(
    ("to", "code"), [("+15005550001", 21211), ("+15005550004", 21610), ("+15005550009", 21614)]
)
def test_refused_numbers_are_permanent_with_twilio_code(
    twilio_env: SandboxServer, to: str, code: int
) -> None:
    with pytest.raises(PermanentError) as caught:
        TwilioProvider(get_settings()).send(to=to, body="hello")
    assert (caught.value.code, caught.value.http_status) == (code, 400)
    assert to not in caught.value.message  # the message is logged; numbers are masked
    assert twilio_env.messages() == []


def test_configured_rejection_and_unknown_sid(twilio_env: SandboxServer) -> None:
    twilio_env.configure(reject={PATIENT: 21610})
    provider = TwilioProvider(get_settings())
    with pytest.raises(PermanentError) as caught:
        provider.send(to=PATIENT, body="hello")
    assert caught.value.code == 21610
    with pytest.raises(PermanentError) as missing:
        provider.fetch("SM" + "0" * 32)
    assert (missing.value.code, missing.value.http_status) == (20404, 404)


def test_wrong_credentials_answer_401_and_are_an_operator_error(
    twilio_env: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not the row's fault, not worth a retry of the row either: the sender is held until fixed."""
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "not-the-token")
    get_settings.cache_clear()
    provider = TwilioProvider(get_settings())
    with pytest.raises(OperatorError) as caught:
        provider.send(to=PATIENT, body="hello")
    assert (caught.value.code, caught.value.http_status) == (20003, 401)
    with pytest.raises(RetryableError):  # a look-up by the sweeper is only postponed
        provider.fetch("SM" + "0" * 32)
    answer = requests.get(
        f"{twilio_env.url}/2010-04-01/Accounts/{twilio_env.account_sid}/Messages.json",
        auth=(twilio_env.account_sid, "not-the-token"),
        timeout=10,
    )
    assert answer.status_code == 401
    assert answer.json() == {
        "code": 20003,
        "message": "Authenticate",
        "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401,
    }
    assert twilio_env.messages() == []


@pytest.mark.parametrize(
    ("unset", "named"),
    [
        ("TWILIO_ACCOUNT_SID", "TWILIO_ACCOUNT_SID"),
        ("TWILIO_AUTH_TOKEN", "TWILIO_AUTH_TOKEN"),
        ("TWILIO_FROM_NUMBER", "TWILIO_MESSAGING_SERVICE_SID (preferred) or TWILIO_FROM_NUMBER"),
    ],
)
def test_missing_settings_name_the_variable(
    twilio_env: SandboxServer, monkeypatch: pytest.MonkeyPatch, unset: str, named: str
) -> None:
    monkeypatch.delenv(unset)
    get_settings.cache_clear()
    with pytest.raises(UserError, match=re.escape(named)):
        TwilioProvider(get_settings())


def test_transport_errors_are_sorted_by_whether_the_request_left() -> None:
    refused = rq.ConnectionError(NewConnectionError(None, "Connection refused"))  # type: ignore[arg-type]
    lost = rq.ConnectionError(ProtocolError("Connection aborted.", ConnectionResetError()))
    assert isinstance(classify_transport(rq.ConnectTimeout(), creates=True), RetryableError)
    assert isinstance(classify_transport(refused, creates=True), RetryableError)
    assert isinstance(classify_transport(rq.ReadTimeout(), creates=True), AmbiguousError)
    assert isinstance(classify_transport(lost, creates=True), AmbiguousError)
    assert isinstance(classify_transport(rq.ChunkedEncodingError(), creates=True), AmbiguousError)
    assert isinstance(classify_transport(rq.ReadTimeout(), creates=False), RetryableError)


def test_http_errors_are_sorted_by_status_and_code() -> None:
    assert isinstance(classify_http(429, 20429, "slow down"), RetryableError)
    assert isinstance(classify_http(400, 20429, "slow down"), RetryableError)
    assert isinstance(classify_http(503, 20503, "unavailable"), RetryableError)
    assert isinstance(classify_http(504, None, "gateway timeout"), AmbiguousError)
    permanent = classify_http(400, 30034, "unregistered number")
    assert isinstance(permanent, PermanentError) and permanent.code == 30034


def test_console_provider_prints_no_body_and_no_whole_number() -> None:
    out = io.StringIO()
    provider = ConsoleProvider(out, clock=lambda: dt.datetime(2026, 3, 2, 15, 0, tzinfo=dt.UTC))
    body = "Hi Ana, your colon screening kit is ready. " * 5
    sent = provider.send(to=PATIENT, body=body)

    printed = out.getvalue()
    assert sent.sid in printed and "+1********23" in printed and "2 segment(s)" in printed
    assert PATIENT not in printed and "Ana" not in printed
    assert provider.fetch(sent.sid) == sent
    assert provider.list_to(PATIENT, since=dt.datetime(2026, 3, 2, tzinfo=dt.UTC)) == [sent]
    assert provider.list_to(PATIENT, since=dt.datetime(2026, 3, 3, tzinfo=dt.UTC)) == []
    with pytest.raises(PermanentError):
        provider.fetch("SM" + "0" * 32)


def _provider(api_url: str) -> TwilioProvider:
    settings = get_settings().model_copy(
        update={
            "twilio_account_sid": "AC" + "1" * 32,
            "twilio_auth_token": "token",
            "twilio_from_number": SENDER,
            "twilio_api_url": api_url,
        }
    )
    return TwilioProvider(settings, timeout=5)
