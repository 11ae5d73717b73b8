"""/app/users over HTTP: admins only, CSRF on every change, the same account rules as
`outreach users` (outreach/team/accounts.py), each change in the audit log with the admin."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from outreach.store.db import session_scope
from outreach.store.models import AuditEntry, User, WebSession
from tests.workspace_support import Clock, csrf_of, full_sign_in, make_user, sign_in, workspace_client

NOW = dt.datetime(2026, 11, 23, 15, 0)


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def client(engine: Engine, clock: Clock) -> Iterator[TestClient]:
    with workspace_client(engine, clock) as test_client:
        yield test_client


@pytest.fixture
def admin(client: TestClient, engine: Engine) -> str:
    """Signed in as an admin; returns the CSRF token."""
    secret = make_user(engine, "admin@example.org", "admin", NOW)
    return full_sign_in(client, "admin@example.org", secret, NOW)


def _audit(engine: Engine, action: str) -> list[AuditEntry]:
    with session_scope(engine) as session:
        found = select(AuditEntry).where(AuditEntry.action == action, AuditEntry.actor != "test")
        rows = list(session.scalars(found))  # make_user's own entries are by "test"
        session.expunge_all()
    return rows


def test_coordinators_and_viewers_are_refused(client: TestClient, engine: Engine) -> None:
    secret = make_user(engine, "coord@example.org", "coordinator", NOW)
    token = full_sign_in(client, "coord@example.org", secret, NOW)
    assert client.get("/app/users").status_code == 403
    refused = client.post(
        "/app/users/add",
        data={"email": "x@example.org", "role": "admin", "password": "p" * 16, "csrf_token": token},
    )
    assert refused.status_code == 403
    client.cookies.clear()
    make_user(engine, "view@example.org", "viewer", NOW)
    assert sign_in(client, "view@example.org").status_code == 200
    assert client.get("/app/users").status_code == 403
    assert 'href="/app/users"' not in client.get("/app/inbox").text  # no nav link either
    with session_scope(engine) as session:
        assert session.scalar(select(User).where(User.email == "x@example.org")) is None


def test_an_admin_adds_an_account_audited_and_it_can_sign_in(
    client: TestClient, engine: Engine, admin: str
) -> None:
    page = client.get("/app/users")
    assert page.status_code == 200 and 'href="/app/audit"' in page.text
    done = client.post(
        "/app/users/add",
        data={
            "email": " New@Example.org ",
            "role": "viewer",
            "password": "a long password",
            "csrf_token": admin,
        },
        follow_redirects=True,
    )
    assert "Account added" in done.text and 'data-email="new@example.org"' in done.text
    [entry] = _audit(engine, "user_add")
    assert (entry.actor, entry.subject, entry.detail) == (
        "admin@example.org",
        "user new@example.org",
        "role viewer",
    )
    other = TestClient(client.app)
    page = sign_in(other, "new@example.org", "a long password")
    assert str(page.url).endswith("/app/inbox")  # a viewer needs no second factor


def test_bad_input_is_refused_with_the_engines_reason_and_nothing_added(
    client: TestClient, engine: Engine, admin: str
) -> None:
    short = client.post(
        "/app/users/add",
        data={"email": "new@example.org", "role": "viewer", "password": "short", "csrf_token": admin},
    )
    assert short.status_code == 400 and "at least 12 characters" in short.text
    assert 'value="new@example.org"' in short.text  # the email kept, the password not
    taken = client.post(
        "/app/users/add",
        data={"email": "admin@example.org", "role": "viewer", "password": "p" * 12, "csrf_token": admin},
    )
    assert taken.status_code == 400 and "already has an account" in taken.text
    role = client.post(
        "/app/users/add",
        data={"email": "r@example.org", "role": "owner", "password": "p" * 12, "csrf_token": admin},
    )
    assert role.status_code == 400 and "one of admin, coordinator, viewer" in role.text
    assert _audit(engine, "user_add") == []


def test_changes_without_the_csrf_token_are_refused(client: TestClient, engine: Engine, admin: str) -> None:
    make_user(engine, "coord@example.org", "coordinator", NOW)
    for path in ("/app/users/add", "/app/users/disable", "/app/users/reset-mfa"):
        refused = client.post(
            path, data={"email": "coord@example.org", "role": "viewer", "password": "p" * 12}
        )
        assert refused.status_code == 403, path
        wrong = client.post(path, data={"email": "coord@example.org", "csrf_token": "x" * 43})
        assert wrong.status_code == 403, path
    with session_scope(engine) as session:
        user = session.scalar(select(User).where(User.email == "coord@example.org"))
        assert user is not None and not user.disabled


def test_disable_ends_the_accounts_sessions_and_is_audited(
    client: TestClient, engine: Engine, clock: Clock, admin: str
) -> None:
    secret = make_user(engine, "coord@example.org", "coordinator", NOW)
    theirs = TestClient(client.app)
    full_sign_in(theirs, "coord@example.org", secret, NOW)
    assert theirs.get("/app/inbox").status_code == 200
    done = client.post(
        "/app/users/disable", data={"email": "coord@example.org", "csrf_token": admin}, follow_redirects=True
    )
    assert "Account disabled" in done.text and 'data-state="disabled"' in done.text
    assert str(theirs.get("/app/inbox").url).endswith("/app/login")
    with session_scope(engine) as session:
        user = session.scalar(select(User).where(User.email == "coord@example.org"))
        assert user is not None and user.disabled
        live = session.scalars(
            select(WebSession).where(WebSession.user_id == user.id, WebSession.ended_at.is_(None))
        )
        assert list(live) == []
    [entry] = _audit(engine, "user_disable")
    assert entry.actor == "admin@example.org" and entry.subject == "user coord@example.org"


def test_reset_mfa_asks_for_enrolment_again_and_is_audited(
    client: TestClient, engine: Engine, admin: str
) -> None:
    secret = make_user(engine, "coord@example.org", "coordinator", NOW)
    full_sign_in(TestClient(client.app), "coord@example.org", secret, NOW)
    done = client.post(
        "/app/users/reset-mfa",
        data={"email": "coord@example.org", "csrf_token": admin},
        follow_redirects=True,
    )
    assert "Second factor reset" in done.text
    with session_scope(engine) as session:
        user = session.scalar(select(User).where(User.email == "coord@example.org"))
        assert user is not None and user.totp_confirmed_at is None and user.totp_secret != secret
    [entry] = _audit(engine, "user_reset_mfa")
    assert entry.actor == "admin@example.org"
    unknown = client.post("/app/users/reset-mfa", data={"email": "nobody@example.org", "csrf_token": admin})
    assert unknown.status_code == 400 and "no account" in unknown.text
    assert csrf_of(unknown.text) == admin
