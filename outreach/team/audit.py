"""One function that writes `audit_log`: every sign-in, failure and care-team action goes here.

DESIGN.md §12 lists what is audited; keeping one door means a later page (the control room) audits
the same way, and a reviewer finds every call by its name. Details never hold a message body or a
full number: they say what was done, not what was written.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

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
