"""The inbox and the conversation page over HTTP: order, filters, unread counts, assign, close and
reopen, staff replies (queued, waiting for the morning, blocked by an opt-out), opaque URLs, and
what reaches the audit log and the logs."""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from outreach.apps.web.app import create_app
from outreach.config import Settings, get_settings
from outreach.listen.consent import record_opt_out
from outreach.store.db import session_scope
from outreach.store.models import AuditEntry, Handoff, Message
from tests.factories import campaign
from tests.workspace_support import Clock, full_sign_in, make_user, patient, reply_from

NOW = dt.datetime(2026, 11, 23, 15, 0)  # Monday 10:00 in New York
NIGHT = dt.datetime(2026, 11, 24, 3, 0)  # Monday 22:00 in New York
CAMPAIGN = campaign()
ROW = re.compile(r'data-testid="inbox-row".*?href="/app/conversations/([^"]+)">([^<]*)<', re.S)


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def dispatched() -> list[list[int]]:
    return []


@pytest.fixture
def client(engine: Engine, clock: Clock, dispatched: list[list[int]]) -> Iterator[TestClient]:
    settings: Settings = get_settings().model_copy(
        update={"twilio_auth_token": "t" * 32, "public_url": "http://127.0.0.1:8000"}
    )
    app = create_app(
        settings, engine=engine, campaigns={CAMPAIGN.id: CAMPAIGN}, clock=clock, dispatch=dispatched.append
    )
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def coordinator(client: TestClient, engine: Engine) -> str:
    """Signed in as a coordinator; returns the CSRF token."""
    secret = make_user(engine, "coord@example.org", "coordinator", NOW)
    return full_sign_in(client, "coord@example.org", secret, NOW)


def _rows(client: TestClient, query: str = "") -> list[tuple[str, str]]:
    return [(pid, name.strip()) for pid, name in ROW.findall(client.get(f"/app/inbox{query}").text)]


def _three(engine: Engine) -> None:
    """Ana (hand-off, oldest), Ben (newest, no hand-off), Cy (middle, no hand-off)."""
    ids = {
        name: patient(engine, name, f"+1617555010{i}", first_name=name)
        for i, name in enumerate(["Ana", "Ben", "Cy"])
    }
    reply_from(
        engine,
        "+16175550100",
        "can you call me after 5",
        NOW - dt.timedelta(hours=3),
        sid="SMa",
        patient_id=ids["Ana"],
        handoff=True,
    )
    reply_from(
        engine, "+16175550101", "thanks", NOW - dt.timedelta(hours=1), sid="SMb", patient_id=ids["Ben"]
    )
    reply_from(engine, "+16175550102", "ok", NOW - dt.timedelta(hours=2), sid="SMc", patient_id=ids["Cy"])


def test_open_handoffs_come_first_then_the_newest_reply(
    client: TestClient, engine: Engine, coordinator: str
) -> None:
    _three(engine)
    assert [name for _, name in _rows(client)] == ["Ana", "Ben", "Cy"]
    reply_from(engine, "+16175550102", "one more thing", NOW, sid="SMc2", patient_id=None)
    assert [name for _, name in _rows(client)] == ["Ana", "Cy", "Ben"]  # a new reply moves Cy up


def test_urls_carry_opaque_ids_never_a_number_or_mrn(
    client: TestClient, engine: Engine, coordinator: str
) -> None:
    _three(engine)
    html = client.get("/app/inbox").text
    for public_id, _ in _rows(client):
        assert re.fullmatch(r"[A-Za-z0-9_-]{16}", public_id)
    assert "5550100" not in html and "+1617" not in html  # numbers are masked in the list


def test_unread_counts_fall_when_the_conversation_is_read(
    client: TestClient, engine: Engine, coordinator: str
) -> None:
    _three(engine)
    reply_from(engine, "+16175550100", "are you there?", NOW, sid="SMa2")
    page = client.get("/app/inbox").text
    assert "2 unread" in page
    public_id = _rows(client)[0][0]
    client.get(f"/app/conversations/{public_id}")
    assert "2 unread" not in client.get("/app/inbox").text


def test_filters_by_status_assignee_and_campaign(
    client: TestClient, engine: Engine, coordinator: str
) -> None:
    _three(engine)
    first = _rows(client)[0][0]
    client.post(f"/app/conversations/{first}/assign", data={"assignee": "me", "csrf_token": coordinator})
    assert [n for _, n in _rows(client, "?assignee=me")] == ["Ana"]
    assert [n for _, n in _rows(client, "?assignee=none")] == ["Ben", "Cy"]
    client.post(
        f"/app/conversations/{first}/close", data={"outcome": "called_back", "csrf_token": coordinator}
    )
    assert [n for _, n in _rows(client)] == ["Ben", "Cy"]
    assert [n for _, n in _rows(client, "?status=closed")] == ["Ana"]
    assert _rows(client, "?campaign=test-screening") == []


def test_closing_closes_the_numbers_handoffs_and_a_new_reply_reopens(
    client: TestClient, engine: Engine, coordinator: str
) -> None:
    _three(engine)
    first = _rows(client)[0][0]
    done = client.post(
        f"/app/conversations/{first}/close",
        data={"outcome": "called_back", "csrf_token": coordinator},
        follow_redirects=True,
    )
    assert "Conversation closed." in done.text and 'data-testid="reopen"' in done.text
    with session_scope(engine) as session:
        handoff = session.scalar(select(Handoff))
        assert handoff is not None and handoff.status == "closed" and handoff.closed_by == "coord@example.org"
    reopened = client.post(
        f"/app/conversations/{first}/reopen", data={"csrf_token": coordinator}, follow_redirects=True
    )
    assert "Conversation reopened." in reopened.text
    client.post(f"/app/conversations/{first}/close", data={"outcome": "answered", "csrf_token": coordinator})
    reply_from(engine, "+16175550100", "one more question", NOW, sid="SMa3")
    assert "Ana" in [n for _, n in _rows(client)]
    with session_scope(engine) as session:
        actions = [a.action for a in session.scalars(select(AuditEntry).order_by(AuditEntry.id))]
    assert actions.count("close") == 2 and "reopen" in actions


def test_a_reply_in_daytime_is_queued_and_dispatched(
    client: TestClient,
    engine: Engine,
    coordinator: str,
    dispatched: list[list[int]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _three(engine)
    public_id = _rows(client)[0][0]
    body = "Hi Ana, we will call you after 5 today. Secret-ish words"
    with caplog.at_level(logging.DEBUG):
        page = client.post(
            f"/app/conversations/{public_id}/reply",
            data={"body": body, "csrf_token": coordinator},
            follow_redirects=True,
        )
    assert "it goes out now" in page.text
    with session_scope(engine) as session:
        message = session.scalar(select(Message))
        assert message is not None
        assert (message.kind, message.status, message.phone, message.send_at) == (
            "staff",
            "queued",
            "+16175550100",
            NOW,
        )
        audit = session.scalar(select(AuditEntry).where(AuditEntry.action == "message_send"))
        assert audit is not None and audit.actor == "coord@example.org" and body not in (audit.detail or "")
        assert "+16175550100" not in (audit.detail or "")
    assert dispatched == [[message.id]]
    assert 'data-testid="thread-message" data-status="queued" data-kind="staff"' in page.text
    assert body not in caplog.text and "+16175550100" not in caplog.text


def test_a_reply_at_night_waits_for_the_patients_morning(
    client: TestClient, engine: Engine, clock: Clock, dispatched: list[list[int]]
) -> None:
    _three(engine)
    clock.now = NIGHT
    secret = make_user(engine, "night@example.org", "coordinator", NIGHT)
    coordinator = full_sign_in(client, "night@example.org", secret, NIGHT)
    public_id = _rows(client)[0][0]
    page = client.post(
        f"/app/conversations/{public_id}/reply",
        data={"body": "We will call tomorrow", "csrf_token": coordinator},
        follow_redirects=True,
    )
    assert "waits for their morning" in page.text and "Waiting for the patient's morning" in page.text
    with session_scope(engine) as session:
        message = session.scalar(select(Message))
        assert message is not None and message.status == "planned"
        assert message.send_at == dt.datetime(2026, 11, 24, 13, 0)  # Tuesday 08:00 in New York
    assert dispatched == []


def test_an_opted_out_number_cannot_be_answered_and_the_page_says_why(
    client: TestClient, engine: Engine, coordinator: str
) -> None:
    _three(engine)
    public_id = _rows(client)[0][0]
    with session_scope(engine) as session:
        record_opt_out(session, "+16175550100", at=NOW, by="STOP")
    page = client.get(f"/app/conversations/{public_id}").text
    assert (
        'data-testid="blocked"' in page
        and "opted out" in page
        and 'disabled data-testid="reply-send"' in page
    )
    refused = client.post(
        f"/app/conversations/{public_id}/reply", data={"body": "Hello?", "csrf_token": coordinator}
    )
    assert refused.status_code == 409 and "This number opted out" in refused.text
    with session_scope(engine) as session:
        assert session.scalar(select(Message)) is None
        assert session.scalar(select(AuditEntry).where(AuditEntry.action == "message_blocked")) is not None


def test_segments_are_counted_as_typed_and_canned_replies_fill_the_box(
    client: TestClient, engine: Engine, coordinator: str
) -> None:
    _three(engine)
    public_id = _rows(client)[0][0]
    count = client.post(
        f"/app/conversations/{public_id}/segments",
        data={"body": "é" * 70 + "ñ"},
        headers={"X-CSRF-Token": coordinator},
    )
    assert count.text == "1 segment · GSM-7 · 71 characters"
    count = client.post(
        f"/app/conversations/{public_id}/segments",
        data={"body": "🙂" * 40},
        headers={"X-CSRF-Token": coordinator},
    )
    assert count.text.startswith("2 segments · UCS-2")
    canned = client.get(f"/app/conversations/{public_id}?canned=shared:call-us").text
    assert "Hi Ana, this is Riverside Health. Please call us at (617) 555-0100" in canned


def test_the_full_number_is_shown_only_on_request_and_audited(
    client: TestClient, engine: Engine, coordinator: str
) -> None:
    _three(engine)
    public_id = _rows(client)[0][0]
    assert "+16175550100" not in client.get(f"/app/conversations/{public_id}").text
    shown = client.post(f"/app/conversations/{public_id}/number", data={"csrf_token": coordinator})
    assert 'data-testid="full-number">+16175550100<' in shown.text
    with session_scope(engine) as session:
        assert session.scalar(select(AuditEntry).where(AuditEntry.action == "number_reveal")) is not None
        assert session.scalar(select(AuditEntry).where(AuditEntry.action == "conversation_view")) is not None


def test_an_unknown_conversation_id_is_refused(client: TestClient, coordinator: str) -> None:
    assert client.get("/app/conversations/nope").status_code == 403
