"""One function that writes `audit_log`: every sign-in, failure and care-team action goes here.

DESIGN.md §12 lists what is audited; keeping one door means a later page (the control room) audits
the same way, and a reviewer finds every call by its name. Details never hold a message body or a
full number: they say what was done, not what was written.

Reading it back (`search`, the audit page) masks every number on the way out, because some writers
predate the workspace and name the number itself (consent changes, callbacks kept aside).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from outreach.phones import mask
from outreach.store.models import AuditEntry

ACTOR_MAX = 100
SUBJECT_MAX = 200


def audit(
    session: Session, actor: str, action: str, subject: str, at: dt.datetime, detail: str | None = None
) -> None:
    """Record `actor` (an email, or "system") doing `action` to `subject`, in the caller's transaction,
    so the entry commits with the change it describes or not at all."""
    session.add(
        AuditEntry(
            at=at, actor=actor[:ACTOR_MAX], action=action, subject=subject[:SUBJECT_MAX], detail=detail
        )
    )


PER_PAGE = 50
# A phone number in any stored form (E.164 from the webhooks, or a bare run of digits): shown
# masked, as everywhere else. Subjects of consent entries are numbers; callbacks kept aside carry one.
_NUMBER = re.compile(r"\+\d{7,15}\b|\b\d{10,15}\b")


def redact(text: str | None) -> str:
    """`text` as the audit page shows it: every number masked (outreach.phones.mask)."""
    if not text:
        return ""
    return _NUMBER.sub(lambda found: mask(found.group(0)), text)


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
