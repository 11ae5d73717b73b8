"""Consent per phone number (DESIGN.md §6, invariant 2): opt-out, opt-in, and the query every sender
and planner relies on.

Consent belongs to the number, not the patient: one STOP silences every patient and every campaign
sharing that number. A number is opted out when it has an opt-out newer than its latest opt-in, so
the row keeps both moments for the audit trail instead of deleting anything. The `audit_log` rows
of a change name the number masked (outreach.phones.mask), as logs do: the full number stays here.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import (
    ColumnElement,
    DateTime,
    String,
    and_,
    bindparam,
    exists,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import QueryableAttribute, Session

from outreach.phones import mask
from outreach.store import sql
from outreach.store.models import AuditEntry, Message, MessageStatus, PhoneConsent
from outreach.store.statuses import WAITING

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


_PHONE = bindparam("number", type_=String())
_AT = bindparam("at", type_=DateTime())
_IS_OPTED_OUT = select(PhoneConsent.phone).where(PhoneConsent.phone == _PHONE, opted_out())
# Opt out unless already out; RETURNING yields a row exactly when this statement changed the
# number's state, so "was it already out?" needs no SELECT first and cannot race.
_OPT_OUT = sql.per_dialect(
    lambda dialect: (
        sql.upsert(PhoneConsent, dialect)
        .values(
            phone=_PHONE,
            opted_out_at=_AT,
            opted_out_by=bindparam("by"),
            opted_out_actor=bindparam("actor"),
            updated_at=_AT,
        )
        .on_conflict_do_update(
            index_elements=["phone"],
            set_={
                "opted_out_at": _AT,
                "opted_out_by": bindparam("by"),
                "opted_out_actor": bindparam("actor"),
                "updated_at": _AT,
            },
            where=~opted_out(),
        )
        .returning(PhoneConsent.phone)
    )
)
_OPT_IN = (
    update(PhoneConsent)
    .where(PhoneConsent.phone == _PHONE, opted_out())
    .values(opted_in_at=_AT, opted_in_by=bindparam("by"), updated_at=_AT)
)
_CANCEL_PENDING = (
    update(Message)
    .where(Message.phone == _PHONE, sql.in_constants(Message.status, WAITING))
    .values(status=MessageStatus.canceled, canceled_at=_AT, cancel_reason=bindparam("reason"), updated_at=_AT)
)
_AUDIT = insert(AuditEntry)


def is_opted_out(session: Session, phone: str) -> bool:
    found = sql.connection(session).scalar(_IS_OPTED_OUT, {"number": phone})
    return found is not None


def opted_out_among(session: Session, phones: Iterable[str]) -> set[str]:
    """Those of `phones` that refuse texts now (one query)."""
    found = session.scalars(
        select(PhoneConsent.phone).where(PhoneConsent.phone.in_(set(phones)), opted_out())
    )
    return set(found)


def record_opt_out(
    session: Session, phone: str, *, by: str, at: dt.datetime, actor: str = "patient"
) -> ConsentChange:
    """Opt the number out and cancel everything still waiting for it, in the caller's transaction.

    Pending messages are canceled even when the number was already opted out, so a row planned by a
    racing scheduler cannot slip through; the first opt-out's time and keyword are kept.
    """
    conn = sql.connection(session)
    params = {"number": phone, "at": at, "by": by[:100], "actor": actor[:100]}
    changed = conn.execute(_OPT_OUT[conn.dialect.name], params).first() is not None
    canceled = cancel_pending(session, phone, at=at)
    if changed:
        detail = f"by {by}; canceled {canceled}"
        conn.execute(
            _AUDIT, {"at": at, "actor": actor, "action": "opt_out", "subject": mask(phone), "detail": detail}
        )
        log.info("number %s opted out by %s; %s pending messages canceled", mask(phone), by, canceled)
    return ConsentChange(changed=changed, canceled=canceled)


def record_opt_in(
    session: Session, phone: str, *, by: str, at: dt.datetime, actor: str = "patient"
) -> ConsentChange:
    """Clear an opt-out; a number that is not opted out is left untouched (nothing to undo)."""
    conn = sql.connection(session)
    changed = bool(conn.execute(_OPT_IN, {"number": phone, "at": at, "by": by[:100]}).rowcount)
    if changed:
        conn.execute(
            _AUDIT,
            {"at": at, "actor": actor, "action": "opt_in", "subject": mask(phone), "detail": f"by {by}"},
        )
        log.info("number %s opted back in by %s", mask(phone), by)
    return ConsentChange(changed=changed)


def cancel_pending(session: Session, phone: str, *, at: dt.datetime, reason: str = CANCEL_REASON) -> int:
    """Cancel every planned or queued message to the number at once; returns how many."""
    result = sql.connection(session).execute(_CANCEL_PENDING, {"number": phone, "at": at, "reason": reason})
    return int(result.rowcount)
