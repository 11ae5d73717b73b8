"""Helpers for workspace tests: accounts, signed-in clients, replies as the webhooks store them."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import Iterator, Mapping

import pyotp
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from outreach.campaigns import CampaignFile
from outreach.store.db import session_scope
from outreach.store.models import Handoff, InboundMessage, Patient
from outreach.team.accounts import add_user, totp_uri

PASSWORD = "correct horse battery"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Clock:
    """A clock the test moves (naive UTC), shared by the app and the test."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def make_user(engine: Engine, email: str, role: str, now: dt.datetime) -> str:
    """An account; returns its TOTP secret."""
    with session_scope(engine) as session:
        user = add_user(session, email, role, PASSWORD, by="test", at=now)
        return pyotp.parse_uri(totp_uri(user)).secret


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found is not None, html[:500]
    return found.group(1)


def sign_in(client: TestClient, email: str, password: str = PASSWORD) -> TestClient:
    """Email and password (the first factor); the response is the next page or the refusal."""
    page = client.get("/app/login")
    return client.post(  # type: ignore[return-value]
        "/app/login",
        data={"email": email, "password": password, "csrf_token": csrf_of(page.text)},
        follow_redirects=True,
    )


def code_at(secret: str, now: dt.datetime, steps: int = 0) -> str:
    return pyotp.TOTP(secret).at(now.replace(tzinfo=dt.UTC) + dt.timedelta(seconds=30 * steps))


def full_sign_in(client: TestClient, email: str, secret: str, now: dt.datetime) -> str:
    """Password then code; returns the inbox page's CSRF token."""
    page = sign_in(client, email)
    assert "/app/mfa" in str(page.url), page.text[:300]
    done = client.post(
        "/app/mfa",
        data={"code": code_at(secret, now), "csrf_token": csrf_of(page.text)},
        follow_redirects=True,
    )
    assert done.status_code == 200 and str(done.url).endswith("/app/inbox"), done.text[:300]
    return csrf_of(done.text)


def reply_from(
    engine: Engine,
    phone: str,
    body: str,
    at: dt.datetime,
    *,
    sid: str,
    patient_id: int | None = None,
    handoff: bool = False,
) -> int:
    """A stored reply (as the inbound webhook stores one), with a hand-off when asked."""
    with session_scope(engine) as session:
        row = InboundMessage(
            provider_sid=sid,
            from_phone=phone,
            to_phone="+16175550100",
            body=body,
            received_at=at,
            patient_id=patient_id,
            classification="free_text" if handoff else "other",
        )
        session.add(row)
        session.flush()
        if handoff:
            session.add(Handoff(inbound_id=row.id, patient_id=patient_id, reason="free_text", opened_at=at))
        return row.id


def patient(
    engine: Engine, mrn: str, phone: str, first_name: str = "Ana", timezone: str | None = None
) -> int:
    with session_scope(engine) as session:
        row = Patient(
            mrn=mrn,
            first_name=first_name,
            birth_date=dt.date(1960, 1, 1),
            sex="female",
            phone=phone,
            timezone=timezone,
            language="en",
        )
        session.add(row)
        session.flush()
        return row.id


@contextlib.contextmanager
def workspace_client(
    engine: Engine, clock: Clock, campaigns: Mapping[str, CampaignFile] | None = None
) -> Iterator[TestClient]:
    """The whole web app (webhooks and workspace) over the test database, with `campaigns` (none
    by default) as the loaded files."""
    from outreach.apps.web.app import create_app
    from outreach.config import get_settings

    settings = get_settings().model_copy(
        update={"twilio_auth_token": "t" * 32, "public_url": "http://127.0.0.1:8000"}
    )
    app = create_app(
        settings, engine=engine, campaigns=dict(campaigns or {}), clock=clock, dispatch=lambda ids: None
    )
    with TestClient(app) as client:
        yield client
