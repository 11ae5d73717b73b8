"""Sender holds: an account or configuration error pauses the sender, not the campaign.

Twilio answers some creates with errors that no row is at fault for (a from-number that cannot
text, wrong credentials, a broken Messaging Service: twilio_codes.OPERATOR_CODES). Failing the row
would make the scheduler cancel every later step, so one misconfiguration would lose whole
campaigns. Instead the sender puts the row back in the queue as if it had never been claimed and
places a hold here, in the database, so every worker process stops claiming for that sender at
once (the claim checks `held()`); rows stay `queued`. The first refusal is logged at ERROR, once
per hold; /healthz and the report show `active_holds()`.

The hold ends by itself once the setup is fixed: after `probe_after` one row is let through
(`take_probe`, one winner across workers). Accepted: the hold is lifted and the sweeper hands the
rows back to the workers. Refused the same way: the hold is renewed until the next probe.
`outreach sweep` makes a probe due at once, for the operator who has just fixed the setup.

A region permission error (21408) holds only the destination's country code ("+44"), since a
roster with one foreign number must not stop every domestic text.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

import phonenumbers
from sqlalchemy import (
    BindParameter,
    ColumnElement,
    String,
    bindparam,
    delete,
    exists,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from outreach.config import Settings
from outreach.providers.base import OperatorError
from outreach.providers.twilio_codes import REGION_CODES
from outreach.store import sql
from outreach.store.models import AuditEntry, SenderHold

log = logging.getLogger(__name__)

WHOLE_SENDER = ""
DEFAULT_PROBE_AFTER = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class Hold:
    """An active hold as /healthz and the report show it."""

    id: int
    sender: str
    scope: str
    error_code: int | None
    http_status: int | None
    message: str
    since: dt.datetime
    seen_at: dt.datetime
    probe_at: dt.datetime

    def covers(self, phone: str) -> bool:
        return phone.startswith(self.scope)

    def as_json(self) -> dict[str, Any]:
        return {
            "sender": self.sender,
            "scope": self.scope or "all",
            "error_code": self.error_code,
            "http_status": self.http_status,
            "message": self.message,
            "since": self.since.isoformat(),
            "seen_at": self.seen_at.isoformat(),
            "next_probe_at": self.probe_at.isoformat(),
        }

    def describe(self) -> str:
        """One line for logs, the health check and the report's table."""
        code = f"Twilio {self.error_code}" if self.error_code is not None else f"HTTP {self.http_status}"
        where = f" (to {self.scope} numbers)" if self.scope else ""
        return (
            f"sender {self.sender}{where} held since {self.since:%Y-%m-%d %H:%M} UTC: {code}: {self.message}"
        )


def sender_key(settings: Settings) -> str:
    """Who sends: the Messaging Service SID, else the from-number (also the rate limit's key)."""
    return settings.twilio_messaging_service_sid or settings.twilio_from_number or "default"


def scope_for(code: int | None, phone: str) -> str:
    """What a refusal holds: the destination's country code for a region error, else everything."""
    if code not in REGION_CODES:
        return WHOLE_SENDER
    try:
        return f"+{phonenumbers.parse(phone, None).country_code}"
    except phonenumbers.NumberParseException:
        return WHOLE_SENDER


def held(sender: Any, phone: Any) -> ColumnElement[bool]:
    """SQL: "a hold of `sender` covers the number in `phone`" (both SQL expressions or binds)."""
    return exists().where(
        SenderHold.sender == sender,
        or_(SenderHold.scope == WHOLE_SENDER, phone.startswith(SenderHold.scope)),
    )


def active_holds(session: Session, sender: str | None = None) -> list[Hold]:
    """Every hold now on (of `sender` only, if given), oldest first: for /healthz, the report and
    the sweeper."""
    query = select(SenderHold).order_by(SenderHold.since, SenderHold.id)
    if sender is not None:
        query = query.where(SenderHold.sender == sender)
    return [_hold(row) for row in session.scalars(query)]


def place(
    session: Session,
    *,
    sender: str,
    phone: str,
    error: OperatorError,
    now: dt.datetime,
    probe_after: dt.timedelta,
) -> bool:
    """Hold `sender` for `error` (refusing a text to `phone`), or renew the hold already there;
    True when this call placed it (so the caller logs it once, at ERROR)."""
    scope = scope_for(error.code, phone)
    values = {
        "error_code": error.code,
        "http_status": error.http_status,
        "message": error.message[:500],
        "seen_at": now,
        "probe_at": now + probe_after,
    }
    conn = sql.connection(session)
    placed = conn.execute(
        sql.upsert(SenderHold, conn)
        .values(sender=sender, scope=scope, since=now, **values)
        .on_conflict_do_nothing(index_elements=["sender", "scope"])
        .returning(SenderHold.id)
    ).first()
    if placed is None:
        conn.execute(
            update(SenderHold).where(SenderHold.sender == sender, SenderHold.scope == scope).values(**values)
        )
        return False
    conn.execute(
        insert(AuditEntry).values(
            at=now,
            actor="twilio",
            action="sender_hold",
            subject=f"{sender} {scope}".strip()[:200],
            detail=f"{error.code or error.http_status}: {error.message}"[:2000],
        )
    )
    return True


def take_probe(session: Session, hold_id: int, now: dt.datetime, probe_after: dt.timedelta) -> bool:
    """Claim the hold's due probe (one winner across workers); the next one is due `probe_after` on."""
    moved = session.execute(
        update(SenderHold)
        .where(SenderHold.id == hold_id, SenderHold.probe_at <= now)
        .values(probe_at=now + probe_after)
    )
    return sql.rowcount(moved) == 1


def give_back_probe(session: Session, hold_id: int, now: dt.datetime) -> None:
    """A probe row that never reached the provider (outside its window, opted out): the next held
    row may probe at once."""
    session.execute(update(SenderHold).where(SenderHold.id == hold_id).values(probe_at=now))


def probe_now(session: Session, sender: str, now: dt.datetime) -> int:
    """Make every probe of `sender` due now (`outreach sweep`: the operator has just fixed it)."""
    moved = session.execute(
        update(SenderHold).where(SenderHold.sender == sender, SenderHold.probe_at > now).values(probe_at=now)
    )
    return sql.rowcount(moved)


def lift(session: Session, hold_id: int, now: dt.datetime, *, why: str) -> Hold | None:
    """End a hold (a probe was accepted, or the sender is no longer configured); the hold as it
    was, or None when another worker lifted it first."""
    row = session.get(SenderHold, hold_id)
    if row is None:
        return None
    hold = _hold(row)
    gone = session.execute(delete(SenderHold).where(SenderHold.id == hold_id))
    if sql.rowcount(gone) != 1:
        return None
    session.add(
        AuditEntry(
            at=now,
            actor="outreach",
            action=LIFTED,
            subject=f"{hold.sender} {hold.scope}".strip()[:200],
            detail=f"{why}; held since {hold.since.isoformat()} for {hold.error_code or hold.http_status}",
        )
    )
    return hold


LIFTED = "sender_hold_lifted"


def last_lifted(session: Session, since: dt.datetime) -> dt.datetime | None:
    """When a hold was last lifted, if after `since`: rows queued before that were held, their
    tasks spent, and wait for the sweeper to hand them back."""
    return session.scalar(
        select(AuditEntry.at)
        .where(AuditEntry.action == LIFTED, AuditEntry.at >= since)
        .order_by(AuditEntry.at.desc())
        .limit(1)
    )


def _hold(row: SenderHold) -> Hold:
    return Hold(
        id=row.id,
        sender=row.sender,
        scope=row.scope,
        error_code=row.error_code,
        http_status=row.http_status,
        message=row.message,
        since=row.since,
        seen_at=row.seen_at,
        probe_at=row.probe_at,
    )


SENDER: BindParameter[str] = bindparam("sender", type_=String())  # the claim's bind for `held()`
