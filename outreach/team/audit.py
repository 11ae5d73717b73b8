"""One function that writes `audit_log`: every sign-in, failure and care-team action goes here.

DESIGN.md §12 lists what is audited; keeping one door means a later page (the control room) audits
the same way, and a reviewer finds every call by its name. Details never hold a message body or a
full number: they say what was done, not what was written.

Numbers are masked when written (outreach.phones.mask, the one masking rule logs use too): here
for every entry through `audit`, and by the engine's own writers (consent changes, callbacks kept
aside), which name the number masked. Reading back (`search`, the audit page) masks again, for
entries written before numbers were masked at the source.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from outreach.phones import mask_in_text
from outreach.store.models import AuditEntry

ACTOR_MAX = 100
SUBJECT_MAX = 200


def audit(
    session: Session, actor: str, action: str, subject: str, at: dt.datetime, detail: str | None = None
) -> None:
    """Record `actor` (an email, or "system") doing `action` to `subject`, in the caller's transaction,
    so the entry commits with the change it describes or not at all. A number in the subject or
    detail (a file named after one, say) is stored masked."""
    session.add(
        AuditEntry(
            at=at,
            actor=actor[:ACTOR_MAX],
            action=action,
            subject=redact(subject)[:SUBJECT_MAX],
            detail=None if detail is None else redact(detail),
        )
    )


PER_PAGE = 50


def redact(text: str | None) -> str:
    """`text` as the log stores and the audit page shows it: every number masked
    (outreach.phones.mask_in_text)."""
    if not text:
        return ""
    return mask_in_text(text)


@dataclass(frozen=True)
class Filters:
    """What the audit page asks for; `since` and `until` are naive UTC, `until` exclusive."""

    actor: str | None = None
    action: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    page: int = 1


@dataclass(frozen=True)
class Entry:
    at: dt.datetime
    actor: str
    action: str
    subject: str  # redacted
    detail: str  # redacted


@dataclass(frozen=True)
class Found:
    entries: list[Entry]
    page: int
    more: bool  # a next page exists (found by reading one row past this page, not by counting)


def search(session: Session, filters: Filters) -> Found:
    """One page of the log, newest first, every number masked before it leaves this function."""
    stmt = select(AuditEntry).order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
    if filters.actor:
        stmt = stmt.where(func.lower(AuditEntry.actor) == filters.actor.strip().lower())
    if filters.action:
        stmt = stmt.where(AuditEntry.action == filters.action)
    if filters.since is not None:
        stmt = stmt.where(AuditEntry.at >= filters.since)
    if filters.until is not None:
        stmt = stmt.where(AuditEntry.at < filters.until)
    page = max(filters.page, 1)
    rows = list(session.scalars(stmt.offset((page - 1) * PER_PAGE).limit(PER_PAGE + 1)))
    entries = [
        Entry(row.at, row.actor, row.action, redact(row.subject), redact(row.detail))
        for row in rows[:PER_PAGE]
    ]
    return Found(entries, page, len(rows) > PER_PAGE)


def actions(session: Session) -> list[str]:
    """The actions the log holds, for the page's filter."""
    return list(session.scalars(select(AuditEntry.action).distinct().order_by(AuditEntry.action)))
