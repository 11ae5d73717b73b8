"""Consent per phone number (DESIGN.md §6, invariant 2): opt-out, opt-in, and the query every sender
and planner relies on.

Consent belongs to the number, not the patient: one STOP silences every patient and every campaign
sharing that number. A number is opted out when it has an opt-out newer than its latest opt-in, so
the row keeps both moments for the audit trail instead of deleting anything.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, exists, or_, select, update
from sqlalchemy.orm import QueryableAttribute, Session

from outreach import db
from outreach.models import PENDING_STATUSES, AuditEntry, Message, MessageStatus, PhoneConsent
from outreach.phones import mask

log = logging.getLogger(__name__)

CANCEL_REASON = "opted out"


@dataclass(frozen=True)
class ConsentChange:
    changed: bool  # False when the number was already in the requested state
    canceled: int = 0  # pending messages canceled by an opt-out


def opted_out() -> ColumnElement[bool]:
    """SQL condition on `phone_consents` for "this number refuses texts now"; join on the phone."""
    return and_(
        PhoneConsent.opted_out_at.is_not(None),
        or_(PhoneConsent.opted_in_at.is_(None), PhoneConsent.opted_in_at < PhoneConsent.opted_out_at),
    )


def number_opted_out(phone: ColumnElement[str] | QueryableAttribute[str]) -> ColumnElement[bool]:
    """SQL condition "the number in column `phone` refuses texts now", for set-based queries."""
    return exists().where(PhoneConsent.phone == phone, opted_out())


def is_opted_out(session: Session, phone: str) -> bool:
    found = session.scalar(select(PhoneConsent.phone).where(PhoneConsent.phone == phone, opted_out()))
    return found is not None


def record_opt_out(
    session: Session, phone: str, *, by: str, at: dt.datetime, actor: str = "patient"
) -> ConsentChange:
    """Opt the number out and cancel everything still waiting for it, in the caller's transaction.

    Pending messages are canceled even when the number was already opted out, so a row planned by a
    racing scheduler cannot slip through; the first opt-out's time and keyword are kept.
    """
    was_out = is_opted_out(session, phone)
    stmt = db.insert_for(session, PhoneConsent).values(
        phone=phone, opted_out_at=at, opted_out_by=by[:100], updated_at=at
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["phone"],
        set_={"opted_out_at": at, "opted_out_by": by[:100], "updated_at": at},
        where=~opted_out(),
    )
    session.execute(stmt)
    canceled = cancel_pending(session, phone, at=at)
    if not was_out:
        session.add(
            AuditEntry(
                at=at, actor=actor, action="opt_out", subject=phone, detail=f"by {by}; canceled {canceled}"
            )
        )
        log.info("number %s opted out by %s; %s pending messages canceled", mask(phone), by, canceled)
    return ConsentChange(changed=not was_out, canceled=canceled)


def record_opt_in(
    session: Session, phone: str, *, by: str, at: dt.datetime, actor: str = "patient"
) -> ConsentChange:
    """Clear an opt-out; a number that is not opted out is left untouched (nothing to undo)."""
    result = session.execute(
        update(PhoneConsent)
        .where(PhoneConsent.phone == phone, opted_out())
        .values(opted_in_at=at, opted_in_by=by[:100], updated_at=at)
        .execution_options(synchronize_session=False)
    )
    changed = bool(result.rowcount)  # type: ignore[attr-defined]
    if changed:
        session.add(AuditEntry(at=at, actor=actor, action="opt_in", subject=phone, detail=f"by {by}"))
        log.info("number %s opted back in by %s", mask(phone), by)
    return ConsentChange(changed=changed)


def cancel_pending(session: Session, phone: str, *, at: dt.datetime, reason: str = CANCEL_REASON) -> int:
    """Cancel every planned or queued message to the number at once; returns how many."""
    result = session.execute(
        update(Message)
        .where(Message.phone == phone, Message.status.in_(PENDING_STATUSES))
        .values(status=MessageStatus.canceled, canceled_at=at, cancel_reason=reason, updated_at=at)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
