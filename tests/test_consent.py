"""Consent per number: opt-out cancels what is pending, opt-in clears it, history is kept."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from outreach.listen import consent
from outreach.store.models import AuditEntry, Message, MessageKind, MessageStatus, PhoneConsent

PHONE = "+16175550123"
OTHER = "+16175550124"
T0 = dt.datetime(2026, 3, 2, 15, 0)


def _message(session: Session, phone: str, step: str, status: MessageStatus) -> Message:
    row = Message(
        enrollment_id=None,
        step_id=step,
        kind=MessageKind.outreach,
        phone=phone,
        body="text",
        status=status,
        send_at=T0,
    )
    session.add(row)
    session.flush()
    return row


def _statuses(session: Session) -> dict[str, tuple[str, str | None]]:
    rows = session.execute(select(Message.step_id, Message.status, Message.cancel_reason)).all()
    return {step: (status, reason) for step, status, reason in rows}


def test_a_number_without_a_row_is_not_opted_out(session: Session) -> None:
    assert consent.is_opted_out(session, PHONE) is False


def test_opt_out_cancels_pending_messages_to_that_number_only(session: Session) -> None:
    _message(session, PHONE, "planned", MessageStatus.planned)
    _message(session, PHONE, "queued", MessageStatus.queued)
    _message(session, PHONE, "sent", MessageStatus.sent)
    _message(session, OTHER, "other", MessageStatus.queued)

    change = consent.record_opt_out(session, PHONE, by="STOP", at=T0)

    assert change == consent.ConsentChange(changed=True, canceled=2)
    assert consent.is_opted_out(session, PHONE)
    assert not consent.is_opted_out(session, OTHER)
    session.expire_all()
    assert _statuses(session) == {
        "planned": ("canceled", "opted out"),
        "queued": ("canceled", "opted out"),
        "sent": ("sent", None),
        "other": ("queued", None),
    }
    row = session.get(PhoneConsent, PHONE)
    assert row is not None and (row.opted_out_at, row.opted_out_by) == (T0, "STOP")


def test_second_opt_out_keeps_the_first_but_still_cancels_new_pending_rows(session: Session) -> None:
    consent.record_opt_out(session, PHONE, by="STOP", at=T0)
    _message(session, PHONE, "late", MessageStatus.queued)

    change = consent.record_opt_out(session, PHONE, by="twilio:21610", at=T0 + dt.timedelta(hours=1))

    assert change == consent.ConsentChange(changed=False, canceled=1)
    session.expire_all()
    row = session.get(PhoneConsent, PHONE)
    assert row is not None and (row.opted_out_at, row.opted_out_by) == (T0, "STOP")
    actions = session.scalars(select(AuditEntry.action)).all()
    assert actions == ["opt_out"]


def test_opt_in_clears_an_opt_out_and_a_later_opt_out_applies_again(session: Session) -> None:
    consent.record_opt_out(session, PHONE, by="STOP", at=T0)
    assert consent.record_opt_in(session, PHONE, by="START", at=T0 + dt.timedelta(minutes=5)).changed
    assert not consent.is_opted_out(session, PHONE)

    assert consent.record_opt_out(session, PHONE, by="QUIT", at=T0 + dt.timedelta(minutes=9)).changed
    assert consent.is_opted_out(session, PHONE)
    session.expire_all()
    row = session.get(PhoneConsent, PHONE)
    assert row is not None
    assert (row.opted_out_by, row.opted_in_by) == ("QUIT", "START")
    actions = session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)).all()
    assert actions == ["opt_out", "opt_in", "opt_out"]


def test_opt_in_of_a_number_that_never_opted_out_changes_nothing(session: Session) -> None:
    assert consent.record_opt_in(session, PHONE, by="START", at=T0) == consent.ConsentChange(changed=False)
    assert session.get(PhoneConsent, PHONE) is None
    assert session.scalars(select(AuditEntry)).all() == []


def test_opted_out_condition_selects_the_same_numbers_as_is_opted_out(session: Session) -> None:
    consent.record_opt_out(session, PHONE, by="STOP", at=T0)
    consent.record_opt_out(session, OTHER, by="STOP", at=T0)
    consent.record_opt_in(session, OTHER, by="START", at=T0 + dt.timedelta(seconds=1))

    found = session.scalars(select(PhoneConsent.phone).where(consent.opted_out())).all()

    assert found == [PHONE]
