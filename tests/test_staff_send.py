"""Staff replies through the real sender and the sandbox (DESIGN.md §12): the same claim and
consent check as every text, the law's 08:00-21:00 (20:00 strict) patient-local hours at claim
time, and no frequency cap."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine, select

from outreach.config import Settings, get_settings
from outreach.listen.consent import record_opt_out
from outreach.plan.scheduler import enqueue_due
from outreach.providers.twilio import TwilioProvider
from outreach.sandbox.server import SandboxServer
from outreach.send.batch import send_batch
from outreach.send.ratelimit import NoLimit
from outreach.store.db import session_scope
from outreach.store.models import Message, PhoneConsent, User
from outreach.team import conversations, staff
from tests.workspace_support import make_user, patient, reply_from

MONDAY_10 = dt.datetime(2026, 11, 23, 15, 0)  # 10:00 in New York
MONDAY_2059 = dt.datetime(2026, 11, 24, 1, 59)  # 20:59 in New York
TUESDAY_08 = dt.datetime(2026, 11, 24, 13, 0)  # 08:00 in New York


@pytest.fixture
def settings(twilio_env: SandboxServer, engine: Engine) -> Settings:
    """The shared sandbox (tests/sandbox_fixtures.py), answering at once."""
    twilio_env.configure(sent_after_s=0, delivered_after_s=0)
    return get_settings()


def _write(
    engine: Engine, settings: Settings, phone: str, body: str, at: dt.datetime, tz: str | None = None
) -> staff.Queued:
    """A patient on `phone` who wrote in, answered by a coordinator at `at`."""
    make_user(engine, f"coord{phone[-3:]}@example.org", "coordinator", at)
    patient_id = patient(engine, f"m{phone}", phone, timezone=tz)
    reply_from(
        engine,
        phone,
        "can you call me",
        at - dt.timedelta(minutes=5),
        sid=f"SM{phone[1:]}",
        patient_id=patient_id,
    )
    with session_scope(engine) as session:
        conversations.sync(session)
        conversation = session.scalar(
            select(conversations.Conversation).where(conversations.Conversation.phone == phone)
        )
        assert conversation is not None
        author = session.scalar(select(User.id).where(User.email == f"coord{phone[-3:]}@example.org"))
        assert author is not None
        return staff.send_reply(
            session,
            conversation,
            body,
            author_id=author,
            author="coord@example.org",
            settings=settings,
            now=at,
        )


def _send(engine: Engine, settings: Settings, ids: list[int], now: dt.datetime) -> dict[int, str]:
    provider = TwilioProvider(settings)
    result = send_batch(
        ids,
        engine=engine,
        provider=provider,
        limiter=NoLimit(),
        campaigns={},
        settings=settings,
        clock=lambda: now,
    )
    return result.by_id


def _status(engine: Engine, message_id: int) -> tuple[str, dt.datetime]:
    with session_scope(engine) as session:
        row = session.get(Message, message_id)
        assert row is not None
        return row.status, row.send_at


def test_a_staff_reply_is_sent_by_the_same_sender_without_the_frequency_cap(
    engine: Engine, settings: Settings, sandbox: SandboxServer
) -> None:
    queued = _write(engine, settings, "+16175550101", "We will call after 5.", MONDAY_10)
    with session_scope(engine) as session:  # the number already had its outreach text today
        session.add(
            Message(
                step_id="invite",
                phone="+16175550101",
                body="x",
                status="delivered",
                send_at=MONDAY_10,
                sent_at=MONDAY_10,
            )
        )
    assert queued.status == "queued"
    assert _send(engine, settings, [queued.message_id], MONDAY_10) == {queued.message_id: "sent"}
    assert [m["body"] for m in sandbox.messages()] == ["We will call after 5."]
    assert _send(engine, settings, [queued.message_id], MONDAY_10) == {
        queued.message_id: "skipped"
    }  # never twice
    assert len(sandbox.messages()) == 1


def test_a_reply_claimed_after_21_waits_for_08_and_then_goes(
    engine: Engine, settings: Settings, sandbox: SandboxServer
) -> None:
    queued = _write(engine, settings, "+16175550102", "Call us tomorrow.", MONDAY_2059)
    assert queued.status == "queued"
    late = MONDAY_2059 + dt.timedelta(minutes=2)  # the worker got to it at 21:01
    assert _send(engine, settings, [queued.message_id], late) == {queued.message_id: "rescheduled"}
    assert _status(engine, queued.message_id) == ("planned", TUESDAY_08)
    assert sandbox.messages() == []
    assert enqueue_due(engine, TUESDAY_08 - dt.timedelta(minutes=1), dispatch=None) == []
    assert enqueue_due(engine, TUESDAY_08, dispatch=None) == [queued.message_id]
    assert _send(engine, settings, [queued.message_id], TUESDAY_08) == {queued.message_id: "sent"}
    assert len(sandbox.messages()) == 1


def test_strict_states_end_at_20_patient_local(engine: Engine, settings: Settings) -> None:
    at = dt.datetime(2026, 11, 24, 1, 30)  # 20:30 in Miami
    queued = _write(engine, settings, "+13055550103", "Hello", at, tz="America/New_York")
    assert queued.status == "planned" and queued.send_at == TUESDAY_08


def test_a_stop_cancels_a_staff_reply_waiting_for_the_morning(
    engine: Engine, settings: Settings, sandbox: SandboxServer
) -> None:
    at = dt.datetime(2026, 11, 24, 3, 0)  # 22:00 in New York
    queued = _write(engine, settings, "+16175550104", "Call us", at)
    assert queued.status == "planned"
    with session_scope(engine) as session:
        record_opt_out(session, "+16175550104", by="STOP", at=at)
    assert _status(engine, queued.message_id)[0] == "canceled"
    enqueue_due(engine, TUESDAY_08, dispatch=None)
    assert _send(engine, settings, [queued.message_id], TUESDAY_08) == {queued.message_id: "skipped"}
    assert sandbox.messages() == []


def test_the_worker_cancels_a_queued_staff_reply_to_a_number_opted_out_since(
    engine: Engine, settings: Settings, sandbox: SandboxServer
) -> None:
    queued = _write(engine, settings, "+16175550105", "Hello", MONDAY_10)
    with session_scope(engine) as session:  # an opt-out stored without canceling (a racing writer)
        session.add(PhoneConsent(phone="+16175550105", opted_out_at=MONDAY_10, opted_out_by="STOP"))
    assert _send(engine, settings, [queued.message_id], MONDAY_10) == {queued.message_id: "canceled"}
    assert sandbox.messages() == []
