"""The sweeper: what a Redis flush, a lost task, a killed worker or a lost callback left behind
(DESIGN.md §7.5). One pass (`sweep`) runs from Celery beat every OUTREACH_SWEEP_EVERY, and from
`outreach sweep`.

- `sending` rows that were never finished (the worker died) and `unknown` rows (a timeout after
  the request left) are looked up at the provider: found → recorded with its sid and the status
  the provider reports, through the same forward-only rules as a status callback; not found → a
  stale `sending` row is queued again (its request never reached the provider), an `unknown` row
  past OUTREACH_SWEEP_UNKNOWN_AFTER is failed with a clear reason. Nothing is re-sent blindly.
- `sent` rows with no final status long after sending are fetched from the provider, oldest first
  and at most OUTREACH_SWEEP_STATUS_FETCHES a pass: Twilio does not retry a status callback that
  got no answer in time, and without this the delivered figure would stay short for good.
- `queued` rows that sat too long are dispatched again (the broker lost them, or never got them);
  the claim makes a duplicate dispatch harmless. Rows of a held sender stay put, except one probe
  per hold when it is due; rows a hold kept back are handed over once it is lifted. Rows of a
  paused campaign (outreach.send.pause) stay put too, until it is resumed.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from outreach.clock import naive_utc, utcnow
from outreach.config import Settings
from outreach.listen import status
from outreach.phones import mask
from outreach.providers.base import PermanentError, Provider, ProviderMessage, RetryableError
from outreach.send import holds, pause
from outreach.send.dispatch import Dispatch
from outreach.store import sql
from outreach.store.db import session_scope
from outreach.store.models import Message, MessageStatus, SenderHold

log = logging.getLogger(__name__)

CLOCK_SKEW = dt.timedelta(minutes=2)  # the provider's clock against ours, when listing by date
LATE_CALLBACKS = dt.timedelta(hours=1)
# Past this, a `sent` row's final status is not asked for any more: carriers that send no
# delivery receipt leave Twilio's status at `sent` for good.
STATUS_GIVE_UP = dt.timedelta(days=2)
DISPATCH_CHUNK = 50


@dataclass(frozen=True)
class SweepPolicy:
    """The sweeper's patience (OUTREACH_SWEEP_* in outreach.config, documented there) and the
    sender whose holds it minds (None: holds are left alone)."""

    queued_after: dt.timedelta = dt.timedelta(minutes=5)
    sending_after: dt.timedelta = dt.timedelta(seconds=40)
    unknown_after: dt.timedelta = dt.timedelta(minutes=10)
    status_after: dt.timedelta = dt.timedelta(minutes=15)
    status_fetches: int = 30
    sender: str | None = None
    probe_now: bool = False  # `outreach sweep`: the operator may just have fixed the setup

    @classmethod
    def from_settings(cls, settings: Settings, *, probe_now: bool = False) -> SweepPolicy:
        return cls(
            queued_after=settings.sweep_queued_after,
            sending_after=settings.sweep_sending_after,
            unknown_after=settings.sweep_unknown_after,
            status_after=settings.sweep_status_after,
            status_fetches=settings.sweep_status_fetches,
            sender=holds.sender_key(settings),
            probe_now=probe_now,
        )


@dataclass
class SweepResult:
    redispatched: int = 0
    found: int = 0
    requeued: int = 0
    failed: int = 0
    late_callbacks: int = 0
    statuses_fetched: int = 0
    statuses_moved: int = 0
    probes: int = 0
    holds: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The figures `outreach sweep --json` prints (documented in the README)."""
        return dict(vars(self))


def sweep(
    engine: Engine,
    *,
    provider: Provider | None,
    dispatch: Dispatch | None,
    now: dt.datetime | None = None,
    policy: SweepPolicy | None = None,
) -> SweepResult:
    now = now or utcnow()
    policy = policy or SweepPolicy()
    result = SweepResult()
    requeued: list[int] = []
    if provider is not None:
        requeued = reconcile(engine, provider, now, result, policy)
        refresh_statuses(engine, provider, now, result, policy)
    with session_scope(engine) as session:
        # Status callbacks that raced ahead of the sender's commit of their sid.
        result.late_callbacks = status.reapply_recent(session, since=now - LATE_CALLBACKS)
    probes = _mind_holds(engine, now, policy)
    result.probes = len(probes) if dispatch is not None else 0
    stale = redispatch_stale_queued(engine, now, policy)
    result.redispatched = len(stale)
    _dispatch(sorted(set(requeued + stale + probes)), dispatch)
    with session_scope(engine) as session:
        result.holds = [hold.as_json() for hold in holds.active_holds(session)]
    return result


def _dispatch(ids: list[int], dispatch: Dispatch | None) -> None:
    if dispatch is not None:
        for start in range(0, len(ids), DISPATCH_CHUNK):
            dispatch(ids[start : start + DISPATCH_CHUNK])


def redispatch_stale_queued(engine: Engine, now: dt.datetime, policy: SweepPolicy | None = None) -> list[int]:
    """Ids of `queued` rows the broker apparently lost, or that a lifted hold kept back; their
    clock restarts so they go out once. Rows a hold still covers are left alone."""
    policy = policy or SweepPolicy()
    with session_scope(engine) as session:
        stale = (Message.queued_at < now - policy.queued_after) & ~pause.held_by_pause(
            Message.kind, Message.enrollment_id, many=True
        )
        if policy.sender is not None:
            lifted = holds.last_lifted(session, since=now - policy.queued_after)
            if lifted is not None:
                stale = stale | (Message.queued_at <= lifted)
            stale = stale & ~holds.held(policy.sender, Message.phone)
        return list(
            session.scalars(
                update(Message)
                .where(Message.status == MessageStatus.queued, stale)
                .values(queued_at=now, updated_at=now)
                .returning(Message.id)
            )
        )


def _mind_holds(engine: Engine, now: dt.datetime, policy: SweepPolicy) -> list[int]:
    """One queued row per hold of our sender whose probe is due (all of them with `probe_now`), for
    a worker to try; holds of a sender no longer configured are lifted (the setup was changed)."""
    if policy.sender is None:
        return []
    with session_scope(engine) as session:
        for other in session.scalars(select(SenderHold.id).where(SenderHold.sender != policy.sender)).all():
            lifted = holds.lift(session, other, now, why=f"the sender is now {policy.sender}")
            if lifted is not None:
                log.warning("hold on sender %s lifted: it is no longer the configured sender", lifted.sender)
        if policy.probe_now:
            holds.probe_now(session, policy.sender, now)
        ids = []
        for hold in holds.active_holds(session, policy.sender):
            if hold.probe_at > now:
                continue
            row = session.scalar(
                select(Message.id)
                .where(
                    Message.status == MessageStatus.queued,
                    Message.phone.startswith(hold.scope),
                    ~pause.held_by_pause(Message.kind, Message.enrollment_id, many=True),
                )
                .order_by(Message.queued_at, Message.id)
                .limit(1)
            )
            if row is not None:
                ids.append(row)
        return ids


def reconcile(
    engine: Engine,
    provider: Provider,
    now: dt.datetime,
    result: SweepResult,
    policy: SweepPolicy | None = None,
) -> list[int]:
    """Settle stale `sending` and `unknown` rows from the provider's own record; returns the ids
    put back in the queue."""
    policy = policy or SweepPolicy()
    requeued: list[int] = []
    with session_scope(engine) as session:
        rows = session.execute(
            select(Message.id, Message.status, Message.phone, Message.body, Message.sending_at).where(
                (
                    (Message.status == MessageStatus.sending)
                    & (Message.sending_at < now - policy.sending_after)
                )
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
                _found(session, row, match, now)
                result.found += 1
            elif row.status == MessageStatus.sending:
                _settle(session, row.id, row.status, now, status=MessageStatus.queued, queued_at=now)
                requeued.append(row.id)
                result.requeued += 1
            elif row.sending_at is not None and now - row.sending_at > policy.unknown_after:
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


def _found(session: Session, row: Any, match: ProviderMessage, now: dt.datetime) -> None:
    """The provider has our message: record its sid as sent, then what the provider says of it
    now (delivered, undelivered, failed…) by the status callbacks' own forward-only rules."""
    sent_at = naive_utc(match.date_created) if match.date_created else now
    _settle(
        session,
        row.id,
        row.status,
        now,
        status=MessageStatus.sent,
        provider_sid=match.sid,
        provider_status=None,
        sent_at=sent_at,
    )
    _apply(session, match, now)
    log.info("message %s to %s found at the provider: %s", row.id, mask(row.phone), match.status)


def refresh_statuses(
    engine: Engine, provider: Provider, now: dt.datetime, result: SweepResult, policy: SweepPolicy
) -> None:
    """Fetch the status of `sent` rows that have waited `status_after` for a final one (oldest
    first, `status_fetches` at most). A row the provider still calls `sent` is asked again only
    after another `status_after` (its `updated_at` moves), until STATUS_GIVE_UP."""
    if policy.status_fetches <= 0:
        return
    with session_scope(engine) as session:
        rows = session.execute(
            select(Message.id, Message.provider_sid)
            .where(
                Message.status == MessageStatus.sent,
                Message.provider_sid.is_not(None),
                Message.send_at > now - STATUS_GIVE_UP,
                Message.sent_at < now - policy.status_after,
                Message.updated_at < now - policy.status_after,
            )
            .order_by(Message.send_at, Message.id)
            .limit(policy.status_fetches)
        ).all()
    for row in rows:
        try:
            found = provider.fetch(row.provider_sid)
        except (RetryableError, PermanentError) as exc:
            log.warning("status of message %s not fetched (%s); asked again later", row.id, exc)
            found = None
        result.statuses_fetched += 1
        with session_scope(engine) as session:
            if found is not None:
                _apply(session, found, now)
            # Still `sent`: its next look-up is `status_after` from this one.
            still_sent = _settle(session, row.id, MessageStatus.sent, now)
            result.statuses_moved += int(not still_sent)


def _apply(session: Session, message: ProviderMessage, now: dt.datetime) -> None:
    """What the provider says of `message`, applied as a status callback would be (forward only,
    error codes, opt-outs and unreachable numbers included)."""
    at = naive_utc(message.date_updated) if message.date_updated else now
    status.apply_status(session, message.sid, message.status, message.error_code, at, to=message.to)


def _match(candidates: list[ProviderMessage], body: str, known: set[str | None]) -> ProviderMessage | None:
    """The provider's message with our body that no other row of ours has claimed; oldest first."""
    for candidate in sorted(candidates, key=lambda m: m.date_created or dt.datetime.min):
        if candidate.sid not in known and candidate.body in (None, body):
            return candidate
    return None


def _settle(session: Session, message_id: int, expected: str, now: dt.datetime, **values: object) -> bool:
    """Move a row the sweeper read in status `expected`, unless someone moved it meanwhile."""
    moved = session.execute(
        update(Message)
        .where(Message.id == message_id, Message.status == expected)
        .values(updated_at=now, **values)
    )
    return sql.rowcount(moved) == 1
