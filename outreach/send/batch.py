"""Send outbox rows: claim, re-check consent and window, take a rate token, call the provider,
record the outcome (DESIGN.md §7 invariants 1-4).

The claim (`queued → sending`, one conditional UPDATE) is the only door to the provider, so any
number of workers and duplicate task deliveries still send each row at most once. Outcomes:
accepted → `sent`; retryable → back to `planned` with a backed-off time (the scheduler re-enqueues
it: nothing waits in the broker); permanent → `failed` with Twilio's code; ambiguous → `unknown`,
left for the sweeper to look up at the provider instead of sending again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Engine, Table, bindparam, select, update
from sqlalchemy.orm import Session

from outreach.campaigns import CampaignFile
from outreach.clock import Clock, utcnow
from outreach.config import Settings
from outreach.listen import consent, status
from outreach.phones import mask
from outreach.plan.pacing import Pacer, recipient
from outreach.plan.windows import is_open
from outreach.providers.base import AmbiguousError, PermanentError, Provider, RetryableError
from outreach.providers.twilio_codes import OPT_OUT_CODES
from outreach.send.ratelimit import RateLimiter
from outreach.store.db import session_scope
from outreach.store.models import Enrollment, Message, MessageKind, MessageStatus, Patient

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 6
# Longest a claimed chunk waits for rate tokens, all its rows together; the rest then go back to
# `queued`. Well below the sweeper's SENDING_TOO_LONG, so a row is never held in `sending` long
# enough to look abandoned (and be queued again while this worker still means to send it).
THROTTLE_TIMEOUT_S = 30.0
CLAIM_CHUNK = 10  # rows claimed per transaction: at most this many wait in `sending` for tokens
RECORD_WITHIN = dt.timedelta(seconds=1)  # an accepted row is recorded at most this late
CONSENT_FRESH_S = 1.0  # a row whose opt-out check is older than this (waiting for tokens) is checked again


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

    def count(self, message_id: int, outcome: str) -> None:
        self.by_id[message_id] = outcome
        setattr(self, outcome, getattr(self, outcome) + 1)
        if outcome != "skipped":
            self.claimed += 1


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


@dataclass(frozen=True)
class _Accepted:
    id: int
    sid: str
    status: str
    at: dt.datetime


def backoff(attempts: int) -> dt.timedelta:
    """Exponential with full jitter: 30 s, 1 min, 2 min … capped at 30 min."""
    ceiling = min(30 * 2 ** max(attempts - 1, 0), 1800)
    return dt.timedelta(seconds=random.uniform(ceiling / 2, ceiling))


_outbox = cast(Table, Message.__table__)
# Built once: the sender runs them for every message, and a statement built per call costs more
# worker CPU than its round trip. Core (not ORM) statements: there are no objects to keep in sync.
_RECORD_ACCEPTED = (
    update(_outbox)
    .where(_outbox.c.id == bindparam("b_id"), _outbox.c.status == MessageStatus.sending)
    .values(
        status=MessageStatus.sent,
        provider_sid=bindparam("b_sid"),
        provider_status=bindparam("b_status"),
        sent_at=bindparam("b_at"),
        updated_at=bindparam("b_at"),
    )
)


@dataclass
class Sender:
    """What sending needs, gathered once per worker process (see outreach.runtime)."""

    engine: Engine
    provider: Provider
    limiter: RateLimiter
    campaigns: dict[str, CampaignFile]
    settings: Settings
    clock: Clock = utcnow
    consent_fresh_s: float = CONSENT_FRESH_S
    monotonic: Callable[[], float] = time.monotonic  # elapsed real time: token waits, consent age

    def send(self, ids: Sequence[int]) -> BatchResult:
        """Send the given outbox rows; safe to call twice with the same ids (the claim decides).

        Rows are claimed CLAIM_CHUNK at a time, so none waits long in `sending` behind a slow rate,
        and the accepted rows of one chunk are recorded in the transaction that claims the next:
        two round trips per chunk instead of three transactions per message. A crash before that
        commit leaves accepted rows in `sending`; the sweeper finds them at the provider (by
        number and body) and records them, so nothing is sent twice.
        """
        result = BatchResult()
        ledger = _Ledger()
        unique = list(dict.fromkeys(ids))
        try:
            for start in range(0, len(unique), CLAIM_CHUNK):
                chunk = unique[start : start + CLAIM_CHUNK]
                now = self.clock()
                with ledger.writing(self.engine) as session:
                    claimed = claim(session, chunk, now)
                    ready = self._screen(session, claimed, now, result)
                won = {row.id for row in claimed}
                for message_id in chunk:
                    if message_id not in won:
                        result.count(message_id, "skipped")
                checked = self.monotonic()
                deadline = checked + THROTTLE_TIMEOUT_S
                refused: set[str] = set()
                for position, row in enumerate(ready):
                    if not self._take_token(row, deadline):
                        self._release([r.id for r in ready[position:]], result)
                        break
                    if self.monotonic() - checked > self.consent_fresh_s:
                        # A STOP can land while a claimed row waits for its token; check the rest again.
                        refused = self._opted_out([r.phone for r in ready[position:]])
                        checked = self.monotonic()
                    if row.phone in refused:
                        self._cancel_opted_out(row)
                        result.count(row.id, "canceled")
                        continue
                    outcome = self._send_row(row, ledger)
                    result.count(row.id, outcome)
                    if ledger.due(self.clock()):
                        self._write_all(ledger)
        except BaseException:
            # Record what the provider already accepted before giving up: those rows would
            # otherwise wait in `sending` for the sweeper to find them at the provider.
            with contextlib.suppress(Exception):
                self._write_all(ledger)
            raise
        self._write_all(ledger)
        return result

    def _write_all(self, ledger: _Ledger) -> None:
        while ledger.pending():
            with ledger.writing(self.engine):
                pass

    def _screen(
        self, session: Session, claimed: list[_Claimed], now: dt.datetime, result: BatchResult
    ) -> list[_Claimed]:
        """Re-check consent and the send window for freshly claimed rows; returns those to send."""
        ready: list[_Claimed] = []
        for row in claimed:
            if row.opted_out:
                _cancel_opted_out(session, row.id, now)
                result.count(row.id, "canceled")
                continue
            campaign = self.campaigns.get(row.campaign_id) if row.campaign_id else None
            if row.kind == MessageKind.outreach and campaign is not None:
                later = _outside_window(session, row, campaign, self.settings, now)
                if later is not None:
                    _finish(session, row.id, now, status=MessageStatus.planned, send_at=later, queued_at=None)
                    log.info("message %s to %s moved to the next opening %s", row.id, mask(row.phone), later)
                    result.count(row.id, "rescheduled")
                    continue
            ready.append(row)
        return ready

    def _take_token(self, row: _Claimed, deadline: float) -> bool:
        """Wait for the row's rate slot, right before its request, so the provider sees the
        limiter's spacing; False when it would come after the chunk's deadline."""
        remaining = deadline - self.monotonic()
        if remaining < 0:
            return False
        try:
            self.limiter.acquire(row.segments, timeout=remaining)
        except TimeoutError:
            return False
        return True

    def _opted_out(self, phones: list[str]) -> set[str]:
        with session_scope(self.engine) as session:
            return consent.opted_out_among(session, phones)

    def _cancel_opted_out(self, row: _Claimed) -> None:
        with session_scope(self.engine) as session:
            _cancel_opted_out(session, row.id, self.clock())

    def _send_row(self, row: _Claimed, ledger: _Ledger) -> str:
        try:
            sent = self.provider.send(to=row.phone, body=row.body)
        except RetryableError as exc:
            return _retry_later(self.engine, row, exc, self.clock())
        except PermanentError as exc:
            return _permanent(self.engine, row, exc, self.clock())
        except AmbiguousError as exc:
            with session_scope(self.engine) as session:
                _finish(
                    session, row.id, self.clock(), status=MessageStatus.unknown, error_message=str(exc)[:500]
                )
            log.warning("message %s to %s: outcome unknown, will reconcile", row.id, mask(row.phone))
            return "unknown"
        ledger.accepted.append(_Accepted(row.id, sent.sid, sent.status, self.clock()))
        return "sent"

    def _release(self, ids: list[int], result: BatchResult) -> None:
        """Rows that got no rate token in time go back to `queued`, as if never claimed."""
        with session_scope(self.engine) as session:
            session.execute(
                update(_outbox)
                .where(_outbox.c.id.in_(ids), _outbox.c.status == MessageStatus.sending)
                .values(
                    status=MessageStatus.queued,
                    sending_at=None,
                    attempts=_outbox.c.attempts - 1,
                    updated_at=self.clock(),
                )
            )
        for message_id in ids:
            result.count(message_id, "throttled")


class _Ledger:
    """Accepted rows waiting to be recorded, and recorded SIDs waiting for early status callbacks.

    A status callback can arrive before its SID is recorded; it is then kept as unmatched
    (outreach.listen.status). Looking for those in a *later* transaction than the one that recorded the
    SID sees every callback committed in between; the sweeper's `reapply_recent` covers the rest.
    """

    def __init__(self) -> None:
        self.accepted: list[_Accepted] = []
        self._recorded: list[str] = []

    def pending(self) -> bool:
        return bool(self.accepted or self._recorded)

    def due(self, now: dt.datetime) -> bool:
        return bool(self.accepted) and now - self.accepted[0].at >= RECORD_WITHIN

    @contextlib.contextmanager
    def writing(self, engine: Engine) -> Iterator[Session]:
        """A transaction that also records what is pending; forgotten only once it commits, so a
        failed transaction leaves it pending for the next one."""
        accepted, recorded = self.accepted, self._recorded
        with session_scope(engine) as session:
            if recorded:
                status.reapply_for(session, recorded)
            if accepted:
                session.connection().execute(
                    _RECORD_ACCEPTED,
                    [{"b_id": a.id, "b_sid": a.sid, "b_status": a.status, "b_at": a.at} for a in accepted],
                )
            yield session
        self.accepted = self.accepted[len(accepted) :]
        self._recorded = [a.sid for a in accepted]


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
    return Sender(engine, provider, limiter, campaigns, settings, clock).send(ids)


# One conditional UPDATE: only rows still `queued` match, so of any number of workers holding the
# same ids exactly one wins each row.
_CLAIM = (
    update(_outbox)
    .where(_outbox.c.id.in_(bindparam("ids", expanding=True)), _outbox.c.status == MessageStatus.queued)
    .values(
        status=MessageStatus.sending,
        sending_at=bindparam("now"),
        attempts=_outbox.c.attempts + 1,
        updated_at=bindparam("now"),
    )
    .returning(_outbox.c.id)
)
_CLAIM_DETAILS = (
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
    .where(Message.id.in_(bindparam("ids", expanding=True)))
    .order_by(Message.id)
)


def claim(session: Session, ids: Sequence[int], now: dt.datetime) -> list[_Claimed]:
    """`queued → sending` for those of `ids` still queued, exactly one winner across processes;
    returns the rows this caller won, with what sending them needs."""
    won = session.execute(_CLAIM, {"ids": list(ids), "now": now}).all()
    if not won:
        return []
    rows = session.execute(_CLAIM_DETAILS, {"ids": [row.id for row in won]})
    return [_Claimed(**row._asdict()) for row in rows]


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


def _cancel_opted_out(session: Session, message_id: int, now: dt.datetime) -> None:
    _finish(
        session,
        message_id,
        now,
        status=MessageStatus.canceled,
        cancel_reason=consent.CANCEL_REASON,
        canceled_at=now,
    )


def _finish(session: Session, message_id: int, now: dt.datetime, **values: Any) -> None:
    """Record an outcome for a row this worker holds in `sending`."""
    session.execute(
        update(Message)
        .where(Message.id == message_id, Message.status == MessageStatus.sending)
        .values(updated_at=now, **values)
        .execution_options(synchronize_session=False)
    )


def _fail(session: Session, message_id: int, now: dt.datetime, code: int | None, why: str) -> None:
    _finish(
        session,
        message_id,
        now,
        status=MessageStatus.failed,
        failed_at=now,
        error_code=code,
        error_message=why[:500],
    )


def _retry_later(engine: Engine, claimed: _Claimed, exc: RetryableError, now: dt.datetime) -> str:
    with session_scope(engine) as session:
        if claimed.attempts >= MAX_ATTEMPTS:
            _fail(session, claimed.id, now, exc.code, f"gave up after {claimed.attempts} attempts: {exc}")
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
        _fail(session, claimed.id, now, exc.code, str(exc))
        if exc.code in OPT_OUT_CODES:
            consent.record_opt_out(session, claimed.phone, by=f"twilio:{exc.code}", at=now)
    log.info("message %s to %s failed permanently: %s", claimed.id, mask(claimed.phone), exc.code)
    return "failed"
