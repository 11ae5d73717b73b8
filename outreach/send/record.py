"""What the sender records for a claimed row, one function per kind of outcome.

Every write is conditional on the row still being `sending` (the claim this worker won), so a
sweeper that has meanwhile settled the row is never overwritten. Outcomes (DESIGN.md §7.4):
retryable → back to `planned` with a backed-off time; permanent → `failed` with Twilio's code
(and an opt-out or an unreachable mark for the number when the code says so); operator error →
back to `queued` untouched and the sender held (outreach.send.holds); ambiguous → `unknown`.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from typing import Any

from sqlalchemy import Engine, update
from sqlalchemy.orm import Session

from outreach.listen import consent
from outreach.phones import mask
from outreach.providers.base import AmbiguousError, OperatorError, PermanentError, RetryableError
from outreach.providers.twilio_codes import OPT_OUT_CODES
from outreach.send import holds, reachability
from outreach.send.claim import Claimed
from outreach.store.db import session_scope
from outreach.store.models import Message, MessageStatus

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 6


def backoff(attempts: int) -> dt.timedelta:
    """Exponential with full jitter: 30 s, 1 min, 2 min … capped at 30 min."""
    ceiling = min(30 * 2 ** max(attempts - 1, 0), 1800)
    return dt.timedelta(seconds=random.uniform(ceiling / 2, ceiling))


def finish(session: Session, message_id: int, now: dt.datetime, **values: Any) -> None:
    """Record an outcome for a row this worker holds in `sending`."""
    session.execute(
        update(Message)
        .where(Message.id == message_id, Message.status == MessageStatus.sending)
        .values(updated_at=now, **values)
        .execution_options(synchronize_session=False)
    )


def put_back(session: Session, ids: list[int], now: dt.datetime) -> None:
    """Rows this worker claimed but will not send now go back to `queued` as if never claimed:
    no attempt counted, no claim time left behind."""
    session.execute(
        update(Message)
        .where(Message.id.in_(ids), Message.status == MessageStatus.sending)
        .values(status=MessageStatus.queued, sending_at=None, attempts=Message.attempts - 1, updated_at=now)
        .execution_options(synchronize_session=False)
    )


def cancel(session: Session, message_id: int, now: dt.datetime, reason: str) -> None:
    finish(session, message_id, now, status=MessageStatus.canceled, cancel_reason=reason, canceled_at=now)


def fail(session: Session, message_id: int, now: dt.datetime, code: int | None, why: str) -> None:
    finish(
        session,
        message_id,
        now,
        status=MessageStatus.failed,
        failed_at=now,
        error_code=code,
        error_message=why[:500],
    )


def retry_later(engine: Engine, claimed: Claimed, exc: RetryableError, now: dt.datetime) -> str:
    with session_scope(engine) as session:
        if claimed.attempts >= MAX_ATTEMPTS:
            fail(session, claimed.id, now, exc.code, f"gave up after {claimed.attempts} attempts: {exc}")
            return "failed"
        finish(
            session,
            claimed.id,
            now,
            status=MessageStatus.planned,
            send_at=now + backoff(claimed.attempts),
            queued_at=None,
            error_code=exc.code,
            error_message=str(exc)[:500],
        )
    log.info(
        "message %s to %s: retryable error %s, attempt %s",
        claimed.id,
        mask(claimed.phone),
        exc.code,
        claimed.attempts,
    )
    return "retrying"


def permanent(engine: Engine, claimed: Claimed, exc: PermanentError, now: dt.datetime) -> str:
    with session_scope(engine) as session:
        fail(session, claimed.id, now, exc.code, str(exc))
        if exc.code in OPT_OUT_CODES:
            consent.record_opt_out(session, claimed.phone, by=f"twilio:{exc.code}", at=now)
        reachability.record(session, claimed.phone, code=exc.code, at=now)
    log.info("message %s to %s failed permanently: %s", claimed.id, mask(claimed.phone), exc.code)
    return "failed"


def ambiguous(engine: Engine, claimed: Claimed, exc: AmbiguousError, now: dt.datetime) -> str:
    with session_scope(engine) as session:
        finish(session, claimed.id, now, status=MessageStatus.unknown, error_message=str(exc)[:500])
    log.warning("message %s to %s: outcome unknown, will reconcile", claimed.id, mask(claimed.phone))
    return "unknown"


def hold_sender(
    engine: Engine,
    claimed: Claimed,
    exc: OperatorError,
    now: dt.datetime,
    *,
    sender: str,
    probe_after: dt.timedelta,
) -> str:
    """The account or the sender refused: the row goes back to the queue unharmed and the sender
    is held (in the same transaction, so no other worker claims the row before the hold exists)."""
    with session_scope(engine) as session:
        put_back(session, [claimed.id], now)
        placed = holds.place(
            session, sender=sender, phone=claimed.phone, error=exc, now=now, probe_after=probe_after
        )
    code = exc.code if exc.code is not None else f"HTTP {exc.http_status}"
    if placed:
        log.error(
            "sending paused for sender %s: Twilio refused with %s (%s). This is an account or "
            "configuration problem, not the patients': their messages stay queued and go out once "
            "a probe (one message, every %s) is accepted, or after `outreach sweep` once it is fixed.",
            sender,
            code,
            exc.message,
            probe_after,
        )
    else:
        log.info("sender %s still held (%s); message %s stays queued", sender, code, claimed.id)
    return "held"
