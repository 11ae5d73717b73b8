"""Provider status callbacks: move an outbox row forward, never back (DESIGN.md §6, invariant 4).

Twilio posts `queued`, `sent`, `delivered`… in no guaranteed order and may post each more than
once, so every update is one conditional UPDATE that only matches rows whose status ranks lower:
a late `sent` never overwrites `delivered`, and a replay matches nothing.

A callback can also race ahead of the sender's own commit of the provider SID (Twilio answers the
create request and posts the next statuses at once; it posts none for the initial status, so
nothing here waits for one). Such a callback is kept in `audit_log` as action
`status_unmatched` (subject = the SID, detail = the callback as JSON, the number masked); the sender calls
`reapply_unmatched(session, sid)` right after it commits the SID, and the sweeper calls
`reapply_recent(session, since=...)` for the callbacks that slipped between the two. Re-applying is
harmless because updates only move forward, so the entries stay in place as the audit trail.

The sender's commit can also land between the UPDATE that matched nothing and the SELECT that
tells "no such SID" from "already there" (PostgreSQL reads each statement at its own snapshot).
The SELECT therefore asks the UPDATE's own condition: a row that has the SID and is still behind
the callback was committed in between, and the UPDATE runs again instead of calling it stale (a
fault run lost delivered statuses that way). On SQLite writers take turns, so the sender's commit
cannot fall in between there.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Integer,
    Select,
    String,
    Text,
    Update,
    bindparam,
    case,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.orm import Session

from outreach.listen import consent
from outreach.phones import mask
from outreach.providers.twilio_codes import ERROR_MESSAGES, OPT_OUT_CODES
from outreach.send import reachability
from outreach.store import sql
from outreach.store.models import AuditEntry, Message, MessageStatus
from outreach.store.statuses import RANK

log = logging.getLogger(__name__)

UNMATCHED = "status_unmatched"

# Twilio's MessageStatus -> (our status, or None when it only updates provider_status; its rank).
_CALLBACK: dict[str, tuple[MessageStatus | None, int]] = {
    "accepted": (None, 1),
    "scheduled": (None, 1),
    "queued": (None, 1),
    "sending": (MessageStatus.sending, 2),
    "sent": (MessageStatus.sent, 3),
    "delivered": (MessageStatus.delivered, 4),
    "read": (MessageStatus.delivered, 4),
    "undelivered": (MessageStatus.undelivered, 4),
    "failed": (MessageStatus.failed, 4),
}
_PROVIDER_RANK = {name: rank for name, (_status, rank) in _CALLBACK.items()} | {"read": 5}


class Outcome(enum.StrEnum):
    applied = "applied"  # the row moved forward (status or provider_status)
    stale = "stale"  # the row is already at or past this status: a replay or a late callback
    unmatched = "unmatched"  # no row has this SID (yet): kept for `reapply_unmatched`
    ignored = "ignored"  # a status value we do not track


def apply_status(
    session: Session,
    sid: str,
    status: str,
    error_code: int | None,
    at: dt.datetime,
    *,
    error_message: str | None = None,
    to: str | None = None,
) -> Outcome:
    """Apply one callback for provider SID `sid` at time `at` (naive UTC), in the caller's transaction.

    `to` (the callback's recipient, E.164) lets an opt-out error be recorded for the number even
    before the callback matches a row.
    """
    status = status.strip().lower()
    if status not in _CALLBACK:
        return Outcome.ignored
    if error_code is not None and error_message is None:
        error_message = ERROR_MESSAGES.get(error_code)

    outcome = Outcome.applied
    phone = _advance(session, sid, status, error_code, error_message, at)
    if phone is None:
        found = sql.connection(session).execute(_BEHIND[status], {"sid": sid}).first()
        if found is None:  # no row has the SID (yet): keep the callback for when one does
            if not _keep_unmatched(session, sid, status, error_code, error_message, to, at):
                return Outcome.stale
            outcome, phone = Outcome.unmatched, to
        elif not found.behind:
            return Outcome.stale
        else:
            # The sender committed the SID after the UPDATE looked and before this SELECT did: the
            # row is there and behind the callback, so the same UPDATE now matches it.
            phone = _advance(session, sid, status, error_code, error_message, at)
            if phone is None:  # another callback for the row moved it past this one meanwhile
                return Outcome.stale
    if error_code in OPT_OUT_CODES and phone:
        consent.record_opt_out(session, phone, by=f"twilio:{error_code}", at=at, actor="twilio")
    if phone:
        reachability.record(session, phone, code=error_code, at=at)  # 30005/30006: plan no more for it
    log.info("status %s for %s: %s (%s)", status, sid, outcome, mask(phone or ""))
    return outcome


def reapply_unmatched(session: Session, sid: str) -> int:
    """Apply the callbacks that arrived for `sid` before its row had it; returns how many moved it.

    The sender, through `reapply_for`, calls this in a transaction after the one that committed
    `provider_sid` (so callbacks committed meanwhile are seen); `reapply_recent` closes the
    remaining gap from the sweeper.
    """
    entries = session.scalars(
        select(AuditEntry)
        .where(AuditEntry.action == UNMATCHED, AuditEntry.subject == sid)
        .order_by(AuditEntry.id)
    ).all()
    applied = 0
    for entry in entries:
        data: dict[str, Any] = json.loads(entry.detail or "{}")
        if _advance(
            session, sid, data["status"], data.get("error_code"), data.get("error_message"), entry.at
        ):
            applied += 1
    return applied


def reapply_for(session: Session, sids: Sequence[str]) -> int:
    """`reapply_unmatched` for those of `sids` that have unmatched callbacks (one query to find them)."""
    early = session.scalars(
        select(AuditEntry.subject)
        .where(AuditEntry.action == UNMATCHED, AuditEntry.subject.in_(sids))
        .distinct()
    ).all()
    return sum(reapply_unmatched(session, sid) for sid in early)


def reapply_recent(session: Session, *, since: dt.datetime) -> int:
    """Re-apply every unmatched callback kept since `since` whose SID a message now has.

    A callback can still slip between the sender's commit and its `reapply_unmatched` (both
    transactions in flight at once); the sweeper calls this each pass so it is applied late, not lost.
    """
    sids = session.scalars(
        select(AuditEntry.subject)
        .join(Message, Message.provider_sid == AuditEntry.subject)
        .where(AuditEntry.action == UNMATCHED, AuditEntry.at >= since)
        .distinct()
    ).all()
    return sum(reapply_unmatched(session, sid) for sid in sids)


def _advance(
    session: Session,
    sid: str,
    status: str,
    error_code: int | None,
    error_message: str | None,
    at: dt.datetime,
) -> str | None:
    """Move the row forward (status, else just provider_status); its phone if it moved, else None.

    One conditional UPDATE, so concurrent callbacks cannot move a row backwards.
    """
    params = {"sid": sid, "at": at, "code": error_code, "reason": error_message}
    phone = sql.connection(session).scalar(_ADVANCE[status], params)
    return str(phone) if phone is not None else None


def _provider_behind(status: str) -> ColumnElement[bool]:
    """The provider status the row has ranks lower than callback `status` (or it has none)."""
    lower = [name for name, r in _PROVIDER_RANK.items() if r < _PROVIDER_RANK[status]]
    return Message.provider_status.is_(None) | sql.in_constants(Message.provider_status, lower)


def _status_behind(status: str) -> ColumnElement[bool] | None:
    """Our status ranks lower than what callback `status` maps to; None when it maps to none."""
    target, rank = _CALLBACK[status]
    if target is None:
        return None
    return sql.in_constants(Message.status, [s for s, r in RANK.items() if r < rank])


def _moves(status: str) -> ColumnElement[bool]:
    """The condition under which callback `status` changes a row: its UPDATE's WHERE, and what
    the SELECT after an UPDATE that matched nothing asks (one condition, so they cannot disagree)."""
    behind = _status_behind(status)
    return _provider_behind(status) if behind is None else behind | _provider_behind(status)


def _advance_statement(status: str) -> Update:
    """The UPDATE for callback `status`, built once: it moves our status forward when the row's
    ranks lower (stamping the moment once), and otherwise refines only what the provider said, and
    only forward (the sender marks `sent` when Twilio accepts, so a `sent` callback usually finds
    our status already there). Both branches are one statement: CASE keeps a column as it was
    where only the provider status moves."""
    target, _rank = _CALLBACK[status]
    behind = _status_behind(status)
    at = bindparam("at", type_=DateTime())
    values: dict[str, Any] = {"provider_status": status, "updated_at": at}
    if target is not None and behind is not None:

        def forward(column: Any, value: Any) -> Any:
            return case((behind, value), else_=column)

        values["status"] = forward(Message.status, literal(target.value, String()))
        stamp = {
            MessageStatus.sending: Message.sending_at,
            MessageStatus.sent: Message.sent_at,
            MessageStatus.delivered: Message.delivered_at,
        }.get(target, Message.failed_at)
        values[stamp.key] = forward(stamp, func.coalesce(stamp, at))
        if stamp is Message.failed_at:
            values["error_code"] = forward(Message.error_code, bindparam("code", type_=Integer()))
            values["error_message"] = forward(Message.error_message, bindparam("reason", type_=Text()))
    return update(Message).where(_BY_SID, _moves(status)).values(values).returning(Message.phone)


_BY_SID = Message.provider_sid == bindparam("sid", type_=String())
_ADVANCE: dict[str, Update] = {status: _advance_statement(status) for status in _CALLBACK}
# After an UPDATE that matched nothing: is there a row with the SID, and would the callback move it?
_BEHIND: dict[str, Select[bool]] = {
    status: select(_moves(status).label("behind")).where(_BY_SID) for status in _CALLBACK
}


def _keep_unmatched(
    session: Session,
    sid: str,
    status: str,
    error_code: int | None,
    error_message: str | None,
    to: str | None,
    at: dt.datetime,
) -> bool:
    """Store a callback for a SID no row has yet; False when this exact callback is already kept.
    The recipient is kept masked, like every number in the audit log: re-applying reads only the
    status and error, and the row found by its SID has the number."""
    shown = mask(to) if to else None
    detail = json.dumps(
        {"status": status, "error_code": error_code, "error_message": error_message, "to": shown},
        sort_keys=True,
    )
    seen = session.scalar(
        select(AuditEntry.id).where(
            AuditEntry.action == UNMATCHED, AuditEntry.subject == sid, AuditEntry.detail == detail
        )
    )
    if seen is not None:
        return False
    session.add(AuditEntry(at=at, actor="twilio", action=UNMATCHED, subject=sid[:200], detail=detail))
    session.flush()
    return True
