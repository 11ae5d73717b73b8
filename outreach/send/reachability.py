"""Numbers that cannot receive texts, remembered per number like opt-outs.

When Twilio says a number is invalid, not a mobile, unknown or a landline
(twilio_codes.UNREACHABLE_CODES), every later step and campaign would be refused the same way, at
the cost of a request, a failed row and a "previous step failed" for the steps after it. The mark
is set from the create error (the sender), from a status callback (outreach.listen.status) and
from the sweeper's look-ups; planning leaves marked numbers out (outreach.plan.eligibility) and
the claim cancels an outreach row to one (a row planned before the mark).

Clearing: a roster that brings a *different* number for the patient brings a number with no mark,
so the patient is reached again at once. The *same* number imported again keeps its mark: rosters
are re-exported every night, and a landline does not become a mobile by being exported again.
`clear()` is there for the operator who knows better (a number ported to a mobile).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable

from sqlalchemy import ColumnElement, bindparam, delete, exists, select
from sqlalchemy.orm import QueryableAttribute, Session

from outreach.phones import mask
from outreach.providers.twilio_codes import UNREACHABLE_CODES
from outreach.store import sql
from outreach.store.models import UnreachableNumber

log = logging.getLogger(__name__)

CANCEL_REASON = "unreachable number"

_MARK = sql.per_dialect(
    lambda dialect: (
        sql.upsert(UnreachableNumber, dialect)
        .values(
            phone=bindparam("phone"),
            error_code=bindparam("code"),
            marked_at=bindparam("at"),
            seen_at=bindparam("at"),
        )
        .on_conflict_do_update(
            index_elements=["phone"], set_={"error_code": bindparam("code"), "seen_at": bindparam("at")}
        )
        .returning(UnreachableNumber.marked_at)
    )
)


def number_unreachable(phone: ColumnElement[str] | QueryableAttribute[str]) -> ColumnElement[bool]:
    """SQL condition "the number in column `phone` cannot receive texts", for set-based queries."""
    return exists().where(UnreachableNumber.phone == phone)


def record(session: Session, phone: str, *, code: int | None, at: dt.datetime) -> bool:
    """Mark `phone` if `code` says it cannot receive texts; True when the code was such a code.

    Called in the caller's transaction with whatever code the provider gave, so callers need not
    know the set."""
    if code not in UNREACHABLE_CODES or not phone:
        return False
    conn = sql.connection(session)
    first = conn.execute(_MARK[conn.dialect.name], {"phone": phone, "code": code, "at": at}).scalar()
    if first == at:
        log.info("number %s marked unreachable (Twilio %s): no more outreach to it", mask(phone), code)
    return True


def unreachable_among(session: Session, phones: Iterable[str]) -> set[str]:
    """Those of `phones` that are marked (one query)."""
    wanted = set(phones)
    if not wanted:
        return set()
    return set(session.scalars(select(UnreachableNumber.phone).where(UnreachableNumber.phone.in_(wanted))))


def clear(session: Session, phone: str) -> bool:
    """Forget the mark (the operator knows the number can text now); True when there was one."""
    return (
        sql.rowcount(session.execute(delete(UnreachableNumber).where(UnreachableNumber.phone == phone))) > 0
    )
