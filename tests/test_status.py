"""Status callbacks only move a message forward, whatever order and however often they arrive."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from outreach.listen import consent
from outreach.listen.status import Outcome, apply_status, reapply_recent, reapply_unmatched
from outreach.store.models import AuditEntry, Message, MessageKind, MessageStatus

SID = "SM" + "a" * 32
PHONE = "+16175550123"
T0 = dt.datetime(2026, 3, 2, 15, 0)


def _sent_message(session: Session, sid: str | None = SID, phone: str = PHONE) -> int:
    row = Message(
        enrollment_id=None,
        step_id=f"step-{sid}",
        kind=MessageKind.outreach,
        phone=phone,
        body="text",
        status=MessageStatus.sent,
        provider_sid=sid,
        provider_status="queued",
        send_at=T0,
        sending_at=T0,
        sent_at=T0,
    )
    session.add(row)
    session.flush()
    return row.id


def _row(session: Session, message_id: int) -> Message:
    session.expire_all()
    row = session.get(Message, message_id)
    assert row is not None
    return row


def _at(minutes: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def test_delivered_moves_a_sent_message_and_stamps_it(session: Session) -> None:
    message_id = _sent_message(session)

    assert apply_status(session, SID, "delivered", None, _at(2)) is Outcome.applied

    row = _row(session, message_id)
    assert (row.status, row.provider_status, row.delivered_at, row.sent_at) == (
        "delivered",
        "delivered",
        _at(2),
        T0,
    )


@pytest.mark.parametrize("order", list(itertools.permutations(["queued", "sent", "delivered"])))
def test_any_order_of_callbacks_ends_delivered(session: Session, order: tuple[str, ...]) -> None:
    message_id = _sent_message(session)

    for minute, status in enumerate(order, start=1):
        apply_status(session, SID, status, None, _at(minute))

    row = _row(session, message_id)
    assert (row.status, row.provider_status) == ("delivered", "delivered")
    assert row.delivered_at == _at(order.index("delivered") + 1)


def test_a_late_sent_never_overwrites_delivered(session: Session) -> None:
    message_id = _sent_message(session)
    apply_status(session, SID, "delivered", None, _at(1))

    assert apply_status(session, SID, "sent", None, _at(2)) is Outcome.stale

    row = _row(session, message_id)
    assert (row.status, row.provider_status, row.sent_at) == ("delivered", "delivered", T0)


def test_a_replay_changes_nothing(session: Session) -> None:
    message_id = _sent_message(session)
    assert apply_status(session, SID, "undelivered", 30003, _at(1)) is Outcome.applied
    before = _row(session, message_id)
    snapshot = (before.status, before.failed_at, before.error_code, before.error_message, before.updated_at)

    assert apply_status(session, SID, "undelivered", 30003, _at(5)) is Outcome.stale

    after = _row(session, message_id)
    assert (
        after.status,
        after.failed_at,
        after.error_code,
        after.error_message,
        after.updated_at,
    ) == snapshot


def test_failure_stores_code_and_a_readable_message(session: Session) -> None:
    message_id = _sent_message(session)

    apply_status(session, SID, "undelivered", 30003, _at(1))

    row = _row(session, message_id)
    assert (row.status, row.error_code, row.failed_at) == ("undelivered", 30003, _at(1))
    assert row.error_message == "unreachable destination handset"
    assert not consent.is_opted_out(session, PHONE)


def test_the_callbacks_own_error_message_is_kept(session: Session) -> None:
    message_id = _sent_message(session)

    apply_status(session, SID, "failed", 30008, _at(1), error_message="carrier said no")

    assert _row(session, message_id).error_message == "carrier said no"


@pytest.mark.parametrize("code", [21610, 30004])
def test_opt_out_error_codes_record_an_opt_out_for_the_number(session: Session, code: int) -> None:
    _sent_message(session)
    pending = Message(step_id="next", phone=PHONE, body="x", status=MessageStatus.queued, send_at=_at(60))
    session.add(pending)
    session.flush()

    apply_status(session, SID, "failed", code, _at(1))

    assert consent.is_opted_out(session, PHONE)
    assert _row(session, pending.id).status == "canceled"


def test_queued_after_sent_only_ever_refines_provider_status_forward(session: Session) -> None:
    message_id = _sent_message(session)
    apply_status(session, SID, "sent", None, _at(1))

    assert apply_status(session, SID, "queued", None, _at(2)) is Outcome.stale
    row = _row(session, message_id)
    assert (row.status, row.provider_status) == ("sent", "sent")


def test_a_failure_callback_behind_our_own_failure_only_moves_the_provider_status(session: Session) -> None:
    """Our status and the provider's move separately in one UPDATE: the part already there stays."""
    message_id = _sent_message(session)
    session.execute(
        update(Message)
        .where(Message.id == message_id)
        .values(status=MessageStatus.failed, failed_at=_at(1), error_code=30007, error_message="filtered")
    )

    assert apply_status(session, SID, "undelivered", 30003, _at(2)) is Outcome.applied

    row = _row(session, message_id)
    assert (row.status, row.provider_status, row.failed_at, row.error_code, row.error_message) == (
        "failed",
        "undelivered",
        _at(1),
        30007,
        "filtered",
    )
    assert row.updated_at == _at(2)


def test_an_unknown_status_value_is_ignored(session: Session) -> None:
    message_id = _sent_message(session)

    assert apply_status(session, SID, "teleported", None, _at(1)) is Outcome.ignored
    assert _row(session, message_id).status == "sent"


def test_a_callback_that_races_ahead_of_the_sender_is_applied_once_the_sid_is_recorded(
    session: Session,
) -> None:
    """The sender commits provider_sid after Twilio answers; callbacks may arrive before that."""
    message_id = _sent_message(session, sid=None)
    session.execute(update(Message).where(Message.id == message_id).values(status=MessageStatus.sending))

    assert apply_status(session, SID, "sent", None, _at(1), to=PHONE) is Outcome.unmatched
    assert apply_status(session, SID, "delivered", None, _at(2), to=PHONE) is Outcome.unmatched
    assert apply_status(session, SID, "delivered", None, _at(3), to=PHONE) is Outcome.stale  # replay
    kept = session.scalars(select(AuditEntry).where(AuditEntry.action == "status_unmatched")).all()
    assert [entry.subject for entry in kept] == [SID, SID]

    # The sender records the SID (its own "sent"), then re-applies what arrived early.
    session.execute(
        update(Message)
        .where(Message.id == message_id)
        .values(status=MessageStatus.sent, provider_sid=SID, sent_at=_at(1))
    )
    assert reapply_unmatched(session, SID) == 2  # "sent" refines provider_status, "delivered" moves it

    row = _row(session, message_id)
    assert (row.status, row.provider_status, row.delivered_at) == ("delivered", "delivered", _at(2))
    assert reapply_unmatched(session, SID) == 0


def test_an_unmatched_opt_out_error_still_records_consent_from_the_callbacks_number(
    session: Session,
) -> None:
    assert apply_status(session, SID, "failed", 21610, _at(1), to=PHONE) is Outcome.unmatched

    assert consent.is_opted_out(session, PHONE)


def test_the_sweeper_applies_early_callbacks_the_sender_did_not_pick_up(session: Session) -> None:
    early = _sent_message(session, sid=None)
    apply_status(session, SID, "delivered", None, _at(1), to=PHONE)
    apply_status(session, "SM" + "b" * 32, "delivered", None, _at(1))  # never matched: left alone
    session.execute(update(Message).where(Message.id == early).values(provider_sid=SID))

    assert reapply_recent(session, since=_at(0)) == 1
    assert reapply_recent(session, since=_at(0)) == 0
    assert _row(session, early).status == "delivered"
