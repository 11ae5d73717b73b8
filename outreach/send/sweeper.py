"""The sweeper: what a Redis flush, a lost task or a killed worker left behind (DESIGN.md §7.5).

- `queued` rows that sat too long are dispatched again (the broker lost them, or never got them);
  the claim makes a duplicate dispatch harmless.
- `sending` rows that were never finished (the worker died) and `unknown` rows (a timeout after
  the request left) are looked up at the provider: found → recorded as sent with its sid; not
  found → a stale `sending` row is queued again (its request never reached the provider), an
  `unknown` row past the provider's queue time is failed with a clear reason. Nothing is re-sent
  blindly.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy import Engine, select, update

from outreach.clock import utcnow
from outreach.listen import status
from outreach.phones import mask
from outreach.providers.base import Provider, ProviderMessage, RetryableError
from outreach.send.dispatch import Dispatch
from outreach.store.db import session_scope
from outreach.store.models import Message, MessageStatus

log = logging.getLogger(__name__)

QUEUED_TOO_LONG = dt.timedelta(minutes=5)
SENDING_TOO_LONG = dt.timedelta(minutes=2)  # well past the provider client's HTTP timeout
UNKNOWN_GIVE_UP = dt.timedelta(minutes=10)  # past this, a message the provider lacks never will exist
CLOCK_SKEW = dt.timedelta(minutes=2)
LATE_CALLBACKS = dt.timedelta(hours=1)


@dataclass
class SweepResult:
    redispatched: int = 0
    found: int = 0
    requeued: int = 0
    failed: int = 0
    late_callbacks: int = 0


def sweep(
    engine: Engine, *, provider: Provider | None, dispatch: Dispatch | None, now: dt.datetime | None = None
) -> SweepResult:
    now = now or utcnow()
    result = SweepResult()
    requeued = reconcile(engine, provider, now, result) if provider is not None else []
    with session_scope(engine) as session:
        # Status callbacks that raced ahead of the sender's commit of their sid.
        result.late_callbacks = status.reapply_recent(session, since=now - LATE_CALLBACKS)
    stale = redispatch_stale_queued(engine, now)
    result.redispatched = len(stale)
    _dispatch(sorted(requeued + stale), dispatch)
    return result


def _dispatch(ids: list[int], dispatch: Dispatch | None) -> None:
    if dispatch is not None:
        for start in range(0, len(ids), 50):
            dispatch(ids[start : start + 50])


def redispatch_stale_queued(engine: Engine, now: dt.datetime) -> list[int]:
    """Ids of `queued` rows the broker apparently lost; their clock restarts so they go out once."""
    with session_scope(engine) as session:
        return list(
            session.scalars(
                update(Message)
                .where(Message.status == MessageStatus.queued, Message.queued_at < now - QUEUED_TOO_LONG)
                .values(queued_at=now, updated_at=now)
                .returning(Message.id)
            )
        )


def reconcile(engine: Engine, provider: Provider, now: dt.datetime, result: SweepResult) -> list[int]:
    """Settle stale `sending` and `unknown` rows from the provider's own record; returns the ids
    put back in the queue."""
    requeued: list[int] = []
    with session_scope(engine) as session:
        rows = session.execute(
            select(Message.id, Message.status, Message.phone, Message.body, Message.sending_at).where(
                ((Message.status == MessageStatus.sending) & (Message.sending_at < now - SENDING_TOO_LONG))
                | (Message.status == MessageStatus.unknown)
            )
        ).all()
        known = set(
            session.scalars(select(Message.provider_sid).where(Message.phone.in_({r.phone for r in rows})))
        )
    for row in rows:
        since = (row.sending_at or now) - CLOCK_SKEW
        try:
            candidates = provider.list_to(row.phone, since=since)
        except RetryableError as exc:
            log.warning("reconcile of message %s postponed: provider unavailable (%s)", row.id, exc)
            continue
        match = _match(candidates, row.body, known)
        with session_scope(engine) as session:
            if match is not None:
                known.add(match.sid)
                _settle(
                    session,
                    row.id,
                    row.status,
                    now,
                    status=MessageStatus.sent,
                    provider_sid=match.sid,
                    provider_status=match.status,
                    sent_at=match.date_created or now,
                )
                result.found += 1
                log.info("message %s to %s found at the provider as %s", row.id, mask(row.phone), match.sid)
            elif row.status == MessageStatus.sending:
                _settle(session, row.id, row.status, now, status=MessageStatus.queued, queued_at=now)
                requeued.append(row.id)
                result.requeued += 1
            elif row.sending_at is not None and now - row.sending_at > UNKNOWN_GIVE_UP:
                _settle(
                    session,
                    row.id,
                    row.status,
                    now,
                    status=MessageStatus.failed,
                    failed_at=now,
                    error_message="request timed out and the provider has no such message",
                )
                result.failed += 1
    return requeued


def _match(candidates: list[ProviderMessage], body: str, known: set[str | None]) -> ProviderMessage | None:
    """The provider's message with our body that no other row of ours has claimed; oldest first."""
    for candidate in sorted(candidates, key=lambda m: m.date_created or dt.datetime.min):
        if candidate.sid not in known and candidate.body in (None, body):
            return candidate
    return None


def _settle(session: object, message_id: int, expected: str, now: dt.datetime, **values: object) -> None:
    session.execute(  # type: ignore[attr-defined]
        update(Message)
        .where(Message.id == message_id, Message.status == expected)
        .values(updated_at=now, **values)
    )
