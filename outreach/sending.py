"""Send outbox rows: claim, re-check consent and window, take a rate token, call the provider,
record the outcome (DESIGN.md §7 invariants 1-4).

The claim (`queued → sending`, one conditional UPDATE) is the only door to the provider, so any
number of workers and duplicate task deliveries still send each row at most once. Outcomes:
accepted → `sent`; retryable → back to `planned` with a backed-off time (the scheduler re-enqueues
it: nothing waits in the broker); permanent → `failed` with Twilio's code; ambiguous → `unknown`,
left for the sweeper to look up at the provider instead of sending again.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from outreach import consent
from outreach.campaigns import CampaignFile
from outreach.config import Settings
from outreach.db import session_scope
from outreach.models import Enrollment, Message, MessageKind, MessageStatus, Patient, utcnow
from outreach.pacing import Pacer, recipient
from outreach.phones import mask
from outreach.providers.base import AmbiguousError, PermanentError, Provider, RetryableError
from outreach.ratelimit import RateLimiter
from outreach.windows import is_open

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 6
THROTTLE_TIMEOUT_S = 30.0  # longest wait for a rate token; the row then goes back to `queued`
# Twilio codes that mean the number itself refuses our texts: record an opt-out for it.
OPT_OUT_CODES = frozenset({21610})
Clock = Callable[[], dt.datetime]


@dataclass
class BatchResult:
    claimed: int = 0
    sent: int = 0
    rescheduled: int = 0
    retrying: int = 0
    failed: int = 0
    canceled: int = 0
    unknown: int = 0
    skipped: int = 0  # not `queued` any more: another worker has it, or it was canceled
    throttled: int = 0  # no rate token in time: back to `queued` for the sweeper to dispatch again
    by_id: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Claimed:
    id: int
    phone: str
    body: str
    segments: int
    kind: str
    attempts: int
    campaign_id: str | None
    timezone: str | None
    phone_zones: str | None
    postal_code: str | None
    opted_out: bool


def backoff(attempts: int) -> dt.timedelta:
    """Exponential with full jitter: 30 s, 1 min, 2 min … capped at 30 min."""
    ceiling = min(30 * 2 ** max(attempts - 1, 0), 1800)
    return dt.timedelta(seconds=random.uniform(ceiling / 2, ceiling))


def send_batch(
    ids: Sequence[int],
    *,
    engine: Engine,
    provider: Provider,
    limiter: RateLimiter,
    campaigns: dict[str, CampaignFile],
    settings: Settings,
    clock: Clock = utcnow,
) -> BatchResult:
    """Send the given outbox rows; safe to call twice with the same ids (the claim decides)."""
    result = BatchResult()
    for message_id in ids:
        outcome = send_one(
            message_id,
            engine=engine,
            provider=provider,
            limiter=limiter,
            campaigns=campaigns,
            settings=settings,
            clock=clock,
        )
        result.by_id[message_id] = outcome
        setattr(result, outcome, getattr(result, outcome) + 1)
        if outcome != "skipped":
            result.claimed += 1
    return result


def claim(session: Session, message_id: int, now: dt.datetime) -> _Claimed | None:
    """`queued → sending`, exactly one winner across processes; None when someone else won."""
    won = session.execute(
        update(Message)
        .where(Message.id == message_id, Message.status == MessageStatus.queued)
        .values(status=MessageStatus.sending, sending_at=now, attempts=Message.attempts + 1, updated_at=now)
        .returning(Message.id)
    ).first()
    if won is None:
        return None
    row = session.execute(
        select(
            Message.id,
            Message.phone,
            Message.body,
            Message.segments,
            Message.kind,
            Message.attempts,
            Enrollment.campaign_id,
            Patient.timezone,
            Patient.phone_zones,
            Patient.postal_code,
            consent.number_opted_out(Message.phone).label("opted_out"),
        )
        .outerjoin(Enrollment, Enrollment.id == Message.enrollment_id)
        .outerjoin(Patient, Patient.id == Enrollment.patient_id)
        .where(Message.id == message_id)
    ).one()
    return _Claimed(**row._asdict())


def send_one(
    message_id: int,
    *,
    engine: Engine,
    provider: Provider,
    limiter: RateLimiter,
    campaigns: dict[str, CampaignFile],
    settings: Settings,
    clock: Clock = utcnow,
) -> str:
    now = clock()
    with session_scope(engine) as session:
        claimed = claim(session, message_id, now)
        if claimed is None:
            return "skipped"
        if claimed.opted_out:
            _finish(
                session,
                claimed.id,
                now,
                status=MessageStatus.canceled,
                cancel_reason="opted out",
                canceled_at=now,
            )
            return "canceled"
        campaign = campaigns.get(claimed.campaign_id) if claimed.campaign_id else None
        if claimed.kind == MessageKind.outreach and campaign is not None:
            later = _outside_window(session, claimed, campaign, settings, now)
            if later is not None:
                _finish(session, claimed.id, now, status=MessageStatus.planned, send_at=later, queued_at=None)
                log.info(
                    "message %s to %s moved to the next opening %s", claimed.id, mask(claimed.phone), later
                )
                return "rescheduled"

    # The token is taken right before the request, so the provider sees the limiter's spacing
    # (database work in between would add jitter). The wait is bounded well below the sweeper's
    # SENDING_TOO_LONG: a row is never held in `sending` long enough to look abandoned.
    try:
        limiter.acquire(claimed.segments, timeout=THROTTLE_TIMEOUT_S)
    except TimeoutError:
        with session_scope(engine) as session:
            _finish(
                session,
                claimed.id,
                clock(),
                status=MessageStatus.queued,
                sending_at=None,
                attempts=Message.attempts - 1,
            )
        return "throttled"
    try:
        sent = provider.send(to=claimed.phone, body=claimed.body)
    except RetryableError as exc:
        return _retry_later(engine, claimed, exc, clock())
    except PermanentError as exc:
        return _permanent(engine, claimed, exc, clock())
    except AmbiguousError as exc:
        with session_scope(engine) as session:
            _finish(session, claimed.id, clock(), status=MessageStatus.unknown, error_message=str(exc)[:500])
        log.warning("message %s to %s: outcome unknown, will reconcile", claimed.id, mask(claimed.phone))
        return "unknown"
    with session_scope(engine) as session:
        done = clock()
        _finish(
            session,
            claimed.id,
            done,
            status=MessageStatus.sent,
            provider_sid=sent.sid,
            provider_status=sent.status,
            sent_at=done,
        )
    return "sent"


def _outside_window(
    session: Session, claimed: _Claimed, campaign: CampaignFile, settings: Settings, now: dt.datetime
) -> dt.datetime | None:
    """None when the patient's window is open now; else the next slot that also fits the cap."""
    who = recipient(
        claimed.phone, claimed.timezone, claimed.phone_zones, claimed.postal_code, settings.default_timezone
    )
    if is_open(now, window=campaign.send_window, zones=who.zones, strict=who.strict):
        return None
    pacer = Pacer(settings.daily_cap, settings.weekly_cap)
    pacer.load(session, [claimed.phone], now, exclude_id=claimed.id)
    return pacer.place(who, now, campaign.send_window)


def _finish(session: Session, message_id: int, now: dt.datetime, **values: Any) -> None:
    """Record an outcome for a row this worker holds in `sending`."""
    session.execute(
        update(Message)
        .where(Message.id == message_id, Message.status == MessageStatus.sending)
        .values(updated_at=now, **values)
        .execution_options(synchronize_session=False)
    )


def _retry_later(engine: Engine, claimed: _Claimed, exc: RetryableError, now: dt.datetime) -> str:
    with session_scope(engine) as session:
        if claimed.attempts >= MAX_ATTEMPTS:
            _finish(
                session,
                claimed.id,
                now,
                status=MessageStatus.failed,
                failed_at=now,
                error_code=exc.code,
                error_message=f"gave up after {claimed.attempts} attempts: {exc}"[:500],
            )
            return "failed"
        _finish(
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


def _permanent(engine: Engine, claimed: _Claimed, exc: PermanentError, now: dt.datetime) -> str:
    with session_scope(engine) as session:
        _finish(
            session,
            claimed.id,
            now,
            status=MessageStatus.failed,
            failed_at=now,
            error_code=exc.code,
            error_message=str(exc)[:500],
        )
        if exc.code in OPT_OUT_CODES:
            consent.record_opt_out(session, claimed.phone, by=f"twilio:{exc.code}", at=now)
    log.info("message %s to %s failed permanently: %s", claimed.id, mask(claimed.phone), exc.code)
    return "failed"
