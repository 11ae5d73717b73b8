"""Workspace accounts and sessions over HTTP (DESIGN.md §12): password then TOTP, lockout, session
timeouts, cookie flags, CSRF, roles, security headers, and the audit trail of each."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from outreach.apps.web.app import create_app
from outreach.config import Settings, get_settings
from outreach.store.db import session_scope
from outreach.store.models import AuditEntry, Message, User, WebSession
from outreach.team import accounts
from tests.workspace_support import (
    PASSWORD,
    Clock,
    code_at,
    csrf_of,
    full_sign_in,
    make_user,
    patient,
    reply_from,
    sign_in,
)

NOW = dt.datetime(2026, 11, 23, 15, 0)  # Monday 10:00 in New York
PUBLIC = "https://outreach.example.org"


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def settings(engine: Engine) -> Settings:
    return get_settings().model_copy(update={"twilio_auth_token": "t" * 32, "public_url": PUBLIC})


@pytest.fixture
def client(engine: Engine, settings: Settings, clock: Clock) -> Iterator[TestClient]:
    app = create_app(settings, engine=engine, campaigns={}, clock=clock)
    with TestClient(app, base_url="https://testserver") as test_client:
        yield test_client


def _actions(engine: Engine) -> list[tuple[str, str]]:
    with session_scope(engine) as session:
        return [(a.actor, a.action) for a in session.scalars(select(AuditEntry).order_by(AuditEntry.id))]


def test_coordinator_enrols_totp_at_first_sign_in_then_reaches_the_inbox(
    client: TestClient, engine: Engine, clock: Clock
) -> None:
    secret = make_user(engine, "coord@example.org", "coordinator", NOW)
    page = sign_in(client, "coord@example.org")
    assert str(page.url).endswith("/app/mfa") and "Set up your authenticator" in page.text
    assert client.get("/app/inbox", follow_redirects=False).headers["location"] == "/app/mfa"
    qr = client.get("/app/mfa/qr.svg")
    assert (
        qr.status_code == 200
        and qr.headers["content-type"].startswith("image/svg+xml")
        and b"<svg" in qr.content
    )
    wrong = client.post("/app/mfa", data={"code": "000000", "csrf_token": csrf_of(page.text)})
    assert wrong.status_code == 401 and "not right" in wrong.text
    ok = client.post(
        "/app/mfa",
        data={"code": code_at(secret, NOW), "csrf_token": csrf_of(page.text)},
        follow_redirects=True,
    )
    assert str(ok.url).endswith("/app/inbox") and "<h1>Inbox</h1>" in ok.text
    with session_scope(engine) as session:
        user = session.scalar(select(User))
        assert user is not None and user.totp_confirmed_at == NOW
    assert client.get("/app/mfa/qr.svg").status_code == 403  # the secret is not shown once enrolled
    assert [a for _, a in _actions(engine)] == ["user_add", "sign_in_failed", "mfa_enrolled", "sign_in"]


def test_session_cookie_is_httponly_lax_secure_and_renewed_after_the_code(
    client: TestClient, engine: Engine
) -> None:
    secret = make_user(engine, "coord@example.org", "coordinator", NOW)
    page = sign_in(client, "coord@example.org")
    first = client.cookies.get("outreach_session")
    response = client.post(
        "/app/mfa",
        data={"code": code_at(secret, NOW), "csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )
    header = response.headers["set-cookie"].lower()
    assert "httponly" in header and "samesite=lax" in header and "secure" in header and "path=/app" in header
    assert client.cookies.get("outreach_session") not in (None, first)  # no session fixation
    with session_scope(engine) as session:
        assert {s.ended_why for s in session.scalars(select(WebSession))} == {"upgraded", None}


def test_a_used_code_cannot_be_replayed(client: TestClient, engine: Engine, clock: Clock) -> None:
    secret = make_user(engine, "coord@example.org", "coordinator", NOW)
    full_sign_in(client, "coord@example.org", secret, NOW)
    client.cookies.clear()
    page = sign_in(client, "coord@example.org")
    again = client.post("/app/mfa", data={"code": code_at(secret, NOW), "csrf_token": csrf_of(page.text)})
    assert again.status_code == 401


def test_wrong_passwords_lock_the_account_for_15_minutes(
    client: TestClient, engine: Engine, clock: Clock
) -> None:
    make_user(engine, "view@example.org", "viewer", NOW)
    for _ in range(accounts.MAX_FAILURES - 1):
        assert sign_in(client, "view@example.org", "wrong password!").status_code == 401
    locked = sign_in(client, "view@example.org", "wrong password!")
    assert locked.status_code == 401 and "locked until" in locked.text
    assert "locked until" in sign_in(client, "view@example.org").text  # even the right password
    clock.now = NOW + accounts.LOCKOUT + dt.timedelta(seconds=1)
    assert str(sign_in(client, "view@example.org").url).endswith("/app/inbox")  # a viewer needs no code
    actions = [a for _, a in _actions(engine)]
    assert (
        actions.count("sign_in_failed") == 4 and "account_locked" in actions and "sign_in_locked" in actions
    )


def test_unknown_email_gets_the_same_words_as_a_wrong_password(client: TestClient, engine: Engine) -> None:
    make_user(engine, "view@example.org", "viewer", NOW)
    unknown = sign_in(client, "nobody@example.org")
    wrong = sign_in(client, "view@example.org", "not the password")
    assert unknown.status_code == wrong.status_code == 401
    assert (
        "The email or password is not right." in unknown.text
        and "The email or password is not right." in wrong.text
    )


def test_sign_in_without_the_forms_csrf_token_is_refused(client: TestClient, engine: Engine) -> None:
    make_user(engine, "view@example.org", "viewer", NOW)
    client.get("/app/login")
    refused = client.post("/app/login", data={"email": "view@example.org", "password": PASSWORD})
    assert refused.status_code == 403 and "outreach_session" not in client.cookies


def test_idle_sessions_end_after_15_minutes_and_any_after_12_hours(
    client: TestClient, engine: Engine, clock: Clock
) -> None:
    make_user(engine, "view@example.org", "viewer", NOW)
    sign_in(client, "view@example.org")
    for minutes in range(10, 12 * 60, 10):  # active every 10 minutes ...
        clock.now = NOW + dt.timedelta(minutes=minutes)
        assert client.get("/app/inbox", follow_redirects=False).status_code == 200
    clock.now = NOW + dt.timedelta(hours=12)  # ... until the absolute limit
    assert client.get("/app/inbox", follow_redirects=False).headers["location"] == "/app/login"
    sign_in(client, "view@example.org")
    clock.now += dt.timedelta(minutes=15)
    assert client.get("/app/inbox", follow_redirects=False).headers["location"] == "/app/login"
    with session_scope(engine) as session:
        assert sorted(s.ended_why or "" for s in session.scalars(select(WebSession))) == ["absolute", "idle"]


def test_state_changing_requests_need_the_sessions_csrf_token(client: TestClient, engine: Engine) -> None:
    secret = make_user(engine, "coord@example.org", "coordinator", NOW)
    reply_from(
        engine,
        "+16175550123",
        "can you call me",
        NOW,
        sid="SM" + "1" * 32,
        patient_id=patient(engine, "m1", "+16175550123"),
        handoff=True,
    )
    token = full_sign_in(client, "coord@example.org", secret, NOW)
    row = client.get("/app/inbox").text
    public_id = row.split('href="/app/conversations/')[1].split('"')[0]
    url = f"/app/conversations/{public_id}/reply"
    assert client.post(url, data={"body": "Hello"}).status_code == 403
    assert client.post(url, data={"body": "Hello", "csrf_token": "forged"}).status_code == 403
    assert client.post(url, data={"body": "Hello"}, headers={"X-CSRF-Token": "forged"}).status_code == 403
    with session_scope(engine) as session:
        assert session.scalar(select(Message)) is None
    sent = client.post(url, data={"body": "Hello", "csrf_token": token}, follow_redirects=False)
    assert sent.status_code == 303


def test_a_viewer_reads_but_cannot_send(client: TestClient, engine: Engine) -> None:
    make_user(engine, "view@example.org", "viewer", NOW)
    reply_from(engine, "+16175550123", "question", NOW, sid="SM" + "2" * 32, handoff=True)
    page = sign_in(client, "view@example.org")
    token = csrf_of(page.text)
    public_id = page.text.split('href="/app/conversations/')[1].split('"')[0]
    conversation = client.get(f"/app/conversations/{public_id}")
    assert (
        'data-testid="read-only"' in conversation.text and 'data-testid="reply-send"' not in conversation.text
    )
    refused = client.post(f"/app/conversations/{public_id}/reply", data={"body": "Hi", "csrf_token": token})
    assert refused.status_code == 403 and "read-only" not in refused.text and "viewer" in refused.text
    with session_scope(engine) as session:
        assert session.scalar(select(Message)) is None


def test_disabling_an_account_ends_its_sessions_at_once(client: TestClient, engine: Engine) -> None:
    make_user(engine, "view@example.org", "viewer", NOW)
    sign_in(client, "view@example.org")
    assert client.get("/app/inbox", follow_redirects=False).status_code == 200
    with session_scope(engine) as session:
        accounts.disable_user(session, "view@example.org", by="admin@example.org", at=NOW)
    assert client.get("/app/inbox", follow_redirects=False).headers["location"] == "/app/login"
    assert sign_in(client, "view@example.org").status_code == 401


def test_sign_out_ends_the_session(client: TestClient, engine: Engine) -> None:
    make_user(engine, "view@example.org", "viewer", NOW)
    page = sign_in(client, "view@example.org")
    cookie = client.cookies.get("outreach_session")
    assert cookie and client.get("/app/inbox", follow_redirects=False).status_code == 200
    client.post("/app/logout", data={"csrf_token": csrf_of(page.text)})
    client.cookies.clear()
    stale = client.get("/app/inbox", headers={"Cookie": f"outreach_session={cookie}"}, follow_redirects=False)
    assert stale.headers["location"] == "/app/login"  # the old token is worth nothing
    assert ("view@example.org", "sign_out") in _actions(engine)


def test_workspace_pages_carry_security_headers_and_the_webhooks_do_not(
    client: TestClient, engine: Engine
) -> None:
    make_user(engine, "view@example.org", "viewer", NOW)
    page = sign_in(client, "view@example.org")
    headers = page.headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "unsafe-inline" not in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["cache-control"] == "no-store" and headers["x-frame-options"] == "DENY"
    assert "<script>" not in page.text and " on" + "click=" not in page.text  # no inline script
    static = client.get("/app/static/htmx.min.js")
    assert static.status_code == 200 and "no-store" not in static.headers.get("cache-control", "")
    webhook = client.post("/twilio/status", data={"MessageSid": "SM" + "0" * 32, "MessageStatus": "sent"})
    assert webhook.status_code == 403 and "content-security-policy" not in webhook.headers


def test_the_pages_own_polls_do_not_keep_an_idle_session_alive(
    client: TestClient, engine: Engine, clock: Clock
) -> None:
    make_user(engine, "view@example.org", "viewer", NOW)
    sign_in(client, "view@example.org")
    for minutes in range(1, 15):  # a screen left open polls on its own ...
        clock.now = NOW + dt.timedelta(minutes=minutes)
        assert client.get("/app/inbox/rows", headers={"HX-Request": "true"}).status_code == 200
    clock.now = NOW + dt.timedelta(minutes=15)  # ... and is signed out 15 minutes after the last click
    ended = client.get("/app/inbox/rows", headers={"HX-Request": "true"})
    assert ended.headers["HX-Redirect"] == "/app/login"  # htmx takes the browser to the sign-in page
    assert client.get("/app/inbox", follow_redirects=False).headers["location"] == "/app/login"
