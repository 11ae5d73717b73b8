"""/app/optouts over HTTP: viewers read and search, coordinators opt out and release (only with a
recorded consent reason: the rule of `outreach optouts remove`, outreach/listen/optouts.py), CSRF
on every POST, each change audited with the person, numbers masked on the page."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from outreach.listen.consent import is_opted_out, record_opt_out
from outreach.store.db import session_scope
from outreach.store.models import AuditEntry, Patient
from tests.workspace_support import Clock, csrf_of, full_sign_in, make_user, sign_in, workspace_client

NOW = dt.datetime(2026, 11, 23, 15, 0)
FOUND = re.compile(
    r'data-testid="optout-found" data-state="(\w+)">\s*<p><strong>([^<]+)</strong> · mrn (\S+)'
)


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    with workspace_client(engine, Clock(NOW)) as test_client:
        yield test_client


@pytest.fixture
def coordinator(client: TestClient, engine: Engine) -> str:
    secret = make_user(engine, "coord@example.org", "coordinator", NOW)
    return full_sign_in(client, "coord@example.org", secret, NOW)


@pytest.fixture(autouse=True)
def patients(engine: Engine) -> None:
    with session_scope(engine) as session:
        for mrn, first, last, phone in [
            ("m1", "Ana", "Lopez", "+16175550123"),
            ("m2", "Ben", "Lopez", "+16175550144"),
            ("m3", "Cy", "Anders", "+16175559999"),
        ]:
            session.add(
                Patient(
                    mrn=mrn,
                    first_name=first,
                    last_name=last,
                    birth_date=dt.date(1960, 1, 1),
                    sex="f",
                    phone=phone,
                )
            )


def _search(client: TestClient, token: str, q: str) -> list[tuple[str, str, str]]:
    page = client.post("/app/optouts/search", data={"q": q, "csrf_token": token})
    assert page.status_code == 200
    return FOUND.findall(page.text)


def _out(engine: Engine, phone: str) -> bool:
    with session_scope(engine) as session:
        return is_opted_out(session, phone)


def _audit(engine: Engine, action: str) -> list[tuple[str, str, str | None]]:
    with session_scope(engine) as session:
        rows = session.execute(
            select(AuditEntry.actor, AuditEntry.subject, AuditEntry.detail).where(AuditEntry.action == action)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


def test_search_by_name_mrn_and_last_four(client: TestClient, coordinator: str) -> None:
    assert [r[2] for r in _search(client, coordinator, "lopez")] == ["m1", "m2"]
    assert [r[2] for r in _search(client, coordinator, "ana lo")] == ["m1"]
    assert [r[2] for r in _search(client, coordinator, "AN")] == ["m3", "m1"]  # Anders, then Ana Lopez
    assert [r[2] for r in _search(client, coordinator, "m2")] == ["m2"]
    assert [r[2] for r in _search(client, coordinator, "9999")] == ["m3"]
    assert _search(client, coordinator, "5555") == []
    page = client.post("/app/optouts/search", data={"q": "0123", "csrf_token": coordinator}).text
    assert "+16175550123" not in page and "+1********23" in page


def test_a_viewer_reads_and_searches_but_cannot_change(client: TestClient, engine: Engine) -> None:
    with session_scope(engine) as session:
        record_opt_out(session, "+16175550123", by="STOP", at=NOW)
    make_user(engine, "view@example.org", "viewer", NOW)
    page = sign_in(client, "view@example.org")
    token = csrf_of(page.text)
    listing = client.get("/app/optouts").text
    assert (
        'data-testid="optout-row"' in listing and "+1********23" in listing and "+16175550123" not in listing
    )
    assert "/app/optouts/remove" not in listing and "/app/optouts/add" not in listing
    assert _search(client, token, "ana") == [("out", "Ana Lopez", "m1")]
    for path in ("/app/optouts/add", "/app/optouts/remove"):
        refused = client.post(path, data={"mrn": "m1", "reason": "asked", "csrf_token": token})
        assert refused.status_code == 403
    assert _out(engine, "+16175550123")


def test_changes_and_searches_need_the_csrf_token(
    client: TestClient, engine: Engine, coordinator: str
) -> None:
    for path in ("/app/optouts/add", "/app/optouts/remove", "/app/optouts/search"):
        assert client.post(path, data={"mrn": "m1", "reason": "asked", "q": "ana"}).status_code == 403
    assert not _out(engine, "+16175550123")


def test_a_coordinator_opts_a_patient_out_audited(
    client: TestClient, engine: Engine, coordinator: str
) -> None:
    done = client.post(
        "/app/optouts/add",
        data={"mrn": "m1", "reason": "asked by phone on Monday", "csrf_token": coordinator},
        follow_redirects=True,
    )
    assert "Opted out" in done.text and _out(engine, "+16175550123")
    assert _audit(engine, "opt_out") == [
        ("coord@example.org", "+1********23", "by staff: asked by phone on Monday; canceled 0")
    ]
    assert _search(client, coordinator, "ana") == [("out", "Ana Lopez", "m1")]
    typed = client.post(
        "/app/optouts/add",
        data={"number": "(617) 555-0144", "reason": "in person", "csrf_token": coordinator},
        follow_redirects=True,
    )
    assert "Opted out" in typed.text and _out(engine, "+16175550144")
    no_reason = client.post("/app/optouts/add", data={"mrn": "m3", "csrf_token": coordinator})
    assert no_reason.status_code == 400 and "Give the reason" in no_reason.text
    bad = client.post("/app/optouts/add", data={"number": "12", "reason": "x", "csrf_token": coordinator})
    assert bad.status_code == 400 and 'value="12"' in bad.text
    assert not _out(engine, "+16175559999")


def test_release_needs_the_patients_consent_the_cli_rule(
    client: TestClient, engine: Engine, coordinator: str
) -> None:
    with session_scope(engine) as session:
        record_opt_out(session, "+16175550123", by="STOP", at=NOW)
        record_opt_out(session, "+16175550100", by="STOP", at=NOW)  # no patient on file
    refused = client.post(
        "/app/optouts/remove", data={"mrn": "m1", "reason": "  ", "csrf_token": coordinator}
    )
    assert refused.status_code == 400 and "(when, how, to whom) to resume texts" in refused.text
    assert _out(engine, "+16175550123") and _audit(engine, "opt_in") == []
    done = client.post(
        "/app/optouts/remove",
        data={"mrn": "m1", "reason": "patient asked in clinic 11/23 to Dr. Wu", "csrf_token": coordinator},
        follow_redirects=True,
    )
    assert "Twilio keeps refusing" in done.text  # STOP is a carrier keyword
    assert not _out(engine, "+16175550123")
    assert _audit(engine, "opt_in") == [
        ("coord@example.org", "+1********23", "by staff: patient asked in clinic 11/23 to Dr. Wu")
    ]
    again = client.post("/app/optouts/remove", data={"mrn": "m1", "reason": "x", "csrf_token": coordinator})
    assert again.status_code == 409 and "is not opted out" in again.text
    listed = client.post(
        "/app/optouts/remove",
        data={"listed": "+1********00", "reason": "texted START", "csrf_token": coordinator},
        follow_redirects=True,
    )
    assert listed.status_code == 200 and not _out(engine, "+16175550100")
    unknown = client.post(
        "/app/optouts/remove", data={"listed": "+1********77", "reason": "x", "csrf_token": coordinator}
    )
    assert unknown.status_code == 400 and "No opted-out numbers show as" in unknown.text
