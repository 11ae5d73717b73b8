"""The care team's queue of replies that need a person: list them, close them with a note.

Closing is one conditional UPDATE (`status = 'open'` in its WHERE clause), so two people closing the
same hand-off at once cannot both succeed and the second one learns who got there first. Every
close leaves an `audit_log` row: the team must be able to show who answered a patient and how.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from outreach.errors import UserError
from outreach.phones import mask, mask_in_text
from outreach.store.models import AuditEntry, Enrollment, Handoff, InboundMessage, Patient

OPEN = "open"
CLOSED = "closed"
AUDIT_CLOSE = "handoff_close"
NAME_MAX = 100  # handoffs.closed_by and audit_log.actor


class HandoffRefused(UserError):
    """The hand-off cannot be closed as asked (unknown id, already closed): the CLI exits 1."""


@dataclass(frozen=True)
class HandoffRow:
    id: int
    opened_at: dt.datetime  # naive UTC, as stored
    status: str
    reason: str  # free_text, question, or the campaign outcome that asked for a person
    phone: str  # E.164: the number the reply came from
    mrn: str | None  # None when the number matched no patient, or several (shared phone)
    first_name: str | None
    campaign: str | None
    text: str  # the patient's reply, as received
    closed_at: dt.datetime | None
    closed_by: str | None
    note: str | None

    def as_dict(self, *, show_numbers: bool = False) -> dict[str, Any]:
        """The documented `--json` shape; numbers are masked unless asked for."""
        return {
            "id": self.id,
            "opened_at": iso_utc(self.opened_at),
            "status": self.status,
            "reason": self.reason,
            "phone": self.phone if show_numbers else mask(self.phone),
            "mrn": self.mrn,
            "first_name": self.first_name,
            "campaign": self.campaign,
            "text": self.text,
            "closed_at": iso_utc(self.closed_at),
            "closed_by": self.closed_by,
            "note": self.note,
        }


def iso_utc(value: dt.datetime | None) -> str | None:
    """Stored times are naive UTC; output says so explicitly so scripts cannot misread them."""
    return value.replace(tzinfo=dt.UTC).isoformat() if value is not None else None


def list_handoffs(session: Session, *, open_only: bool = False, limit: int | None = None) -> list[HandoffRow]:
    """Hand-offs newest first, with the reply and whom it came from, in one query."""
    stmt = _select().order_by(Handoff.opened_at.desc(), Handoff.id.desc())
    if open_only:
        stmt = stmt.where(Handoff.status == OPEN)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [_row(*found) for found in session.execute(stmt)]


def get_handoff(session: Session, handoff_id: int) -> HandoffRow | None:
    stmt = _select().where(Handoff.id == handoff_id).execution_options(populate_existing=True)
    found = session.execute(stmt).first()
    return _row(*found) if found is not None else None


def close_handoff(session: Session, handoff_id: int, *, by: str, note: str, at: dt.datetime) -> HandoffRow:
    """Close an open hand-off with who closed it and what was done, in the caller's transaction.

    Raises HandoffRefused for an unknown or already-closed id, UserError for an empty name or note.
    """
    actor = staff_name(by)
    note = note.strip()
    if not note:
        raise UserError("--note: say what was done (for example 'called back, kit mailed')")
    closed = session.scalar(
        update(Handoff)
        .where(Handoff.id == handoff_id, Handoff.status == OPEN)
        .values(status=CLOSED, closed_at=at, closed_by=actor, note=note)
        .returning(Handoff.id)
        .execution_options(synchronize_session=False)
    )
    if closed is None:
        existing = session.get(Handoff, handoff_id, populate_existing=True)
        if existing is None:
            raise HandoffRefused(f"no hand-off {handoff_id}")
        when = existing.closed_at.strftime("%Y-%m-%d %H:%M UTC") if existing.closed_at else "earlier"
        raise HandoffRefused(f"hand-off {handoff_id} is already closed (by {existing.closed_by}, {when})")
    session.add(
        AuditEntry(
            at=at,
            actor=actor,
            action=AUDIT_CLOSE,
            subject=f"handoff {handoff_id}",
            detail=None if note is None else mask_in_text(note),  # the log holds no full number
        )
    )
    session.flush()
    row = get_handoff(session, handoff_id)
    assert row is not None
    return row


def staff_name(by: str) -> str:
    """The person acting, as recorded in audit_log.actor: required and short enough to store."""
    name = by.strip()
    if not name:
        raise UserError("--by: give the name of the person making the change")
    if len(name) > NAME_MAX:
        raise UserError(f"--by: at most {NAME_MAX} characters (got {len(name)})")
    return name


def _select() -> Select[Handoff, str, str, str, str, str]:  # outer-joined columns may be NULL
    """A hand-off with its reply, number, patient (the enrollment's when the number is shared) and
    campaign."""
    patient_id = func.coalesce(Handoff.patient_id, Enrollment.patient_id)
    return (
        select(
            Handoff,
            InboundMessage.body,
            InboundMessage.from_phone,
            Patient.mrn,
            Patient.first_name,
            Enrollment.campaign_id,
        )
        .join(InboundMessage, InboundMessage.id == Handoff.inbound_id)
        .outerjoin(Enrollment, Enrollment.id == Handoff.enrollment_id)
        .outerjoin(Patient, Patient.id == patient_id)
    )


def _row(
    handoff: Handoff,
    body: str,
    phone: str,
    mrn: str | None,
    first_name: str | None,
    campaign: str | None,
) -> HandoffRow:
    return HandoffRow(
        id=handoff.id,
        opened_at=handoff.opened_at,
        status=handoff.status,
        reason=handoff.reason,
        phone=phone,
        mrn=mrn,
        first_name=first_name,
        campaign=campaign,
        text=body,
        closed_at=handoff.closed_at,
        closed_by=handoff.closed_by,
        note=handoff.note,
    )
