"""Send outbox rows: claim, re-check consent and window, take a rate token, call the provider,
record the outcome (DESIGN.md §7 invariants 1-4).

The claim (`queued → sending`, one conditional UPDATE: outreach.send.claim) is the only door to
the provider, so any number of workers and duplicate task deliveries still send each row at most
once. Outcomes (outreach.send.record): accepted → `sent`; retryable → back to `planned` with a
backed-off time (the scheduler re-enqueues it: nothing waits in the broker); permanent → `failed`
with Twilio's code; ambiguous → `unknown`, left for the sweeper to look up at the provider instead
of sending again; an account or configuration error → back to `queued` and the sender held
(outreach.send.holds) until a probe is accepted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import cast

from sqlalchemy import Engine, Table, bindparam, update
from sqlalchemy.orm import Session

from outreach.campaigns import CampaignFile
from outreach.clock import Clock, utcnow
from outreach.config import Settings
from outreach.listen import consent, status
from outreach.phones import mask
from outreach.plan.pacing import Pacer, recipient
from outreach.plan.windows import LAW_HOURS, is_open, next_opening
from outreach.providers.base import (
    AmbiguousError,
    OperatorError,
    PermanentError,
    Provider,
    RetryableError,
)
from outreach.providers.twilio_codes import OPT_OUT_CODES
from outreach.send import holds, reachability, record
from outreach.send.claim import Claimed, claim, claim_probe, still_queued
from outreach.send.ratelimit import RateLimiter
from outreach.send.record import MAX_ATTEMPTS, backoff
from outreach.store.db import session_scope
from outreach.store.models import Message, MessageKind, MessageStatus

__all__ = [
    "CLAIM_CHUNK",
    "CLAIM_LEASE_S",
    "CONSENT_FRESH_S",
    "MAX_ATTEMPTS",
    "OPT_OUT_CODES",
    "BatchResult",
    "Sender",
    "backoff",
    "claim",
    "send_batch",
]

log = logging.getLogger(__name__)

# The claim's lease: a claimed row is handed to the provider within this long of its claim, or
# goes back to `queued` unsent (its rate token did not come in time: the slot is someone else's).
# The sweeper's OUTREACH_SWEEP_SENDING_AFTER (at least 40 s) must exceed this plus the provider's
# HTTP timeout (10 s), so a stale `sending` row it puts back is one no live worker will still send.
CLAIM_LEASE_S = 20.0
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
    held: int = 0  # the sender is held (outreach.send.holds): left, or put back, `queued`
    by_id: dict[int, str] = field(default_factory=dict)

    def count(self, message_id: int, outcome: str, *, won: bool = True) -> None:
        self.by_id[message_id] = outcome
        setattr(self, outcome, getattr(self, outcome) + 1)
        if won:
            self.claimed += 1


@dataclass(frozen=True)
class _Accepted:
    id: int
    sid: str
    status: str
    at: dt.datetime


@dataclass
class _Chunk:
    """One claim's rows on their way to the provider."""

    ready: list[Claimed]
    probes: dict[int, int]  # message id -> the hold whose probe it is
    deadline: float  # monotonic: the claim's lease ends
    held_scopes: list[str] = field(default_factory=list)  # holds placed while sending this chunk


_outbox = cast(Table, Message.__table__)
# Built once: the sender runs it for every message, and a statement built per call costs more
# worker CPU than its round trip. Core (not ORM): there are no objects to keep in sync.
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

    @property
    def sender(self) -> str:
        return holds.sender_key(self.settings)

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
                chunk = self._claim(unique[start : start + CLAIM_CHUNK], ledger, result)
                self._send_chunk(chunk, ledger, result)
        except BaseException:
            # Record what the provider already accepted before giving up: those rows would
            # otherwise wait in `sending` for the sweeper to find them at the provider.
            with contextlib.suppress(Exception):
                self._write_all(ledger)
            raise
        self._write_all(ledger)
        return result

    def _claim(self, ids: list[int], ledger: _Ledger, result: BatchResult) -> _Chunk:
        """Claim `ids` (and a held row when a hold's probe is due), screen them, count the rest."""
        started = self.monotonic()  # the lease runs from before the claim, never from after it
        now = self.clock()
        with ledger.writing(self.engine) as session:
            claimed = claim(session, ids, now, self.sender)
            probes: dict[int, int] = {}
            if len(claimed) < len(ids):
                claimed += self._held_and_probes(session, ids, claimed, now, probes, result)
            ready = self._screen(session, claimed, now, result, probes)
        won = {row.id for row in claimed}
        for message_id in ids:
            if message_id not in won and message_id not in result.by_id:
                result.count(message_id, "skipped", won=False)
        return _Chunk(ready, probes, started + CLAIM_LEASE_S)

    def _held_and_probes(
        self,
        session: Session,
        ids: list[int],
        claimed: list[Claimed],
        now: dt.datetime,
        probes: dict[int, int],
        result: BatchResult,
    ) -> list[Claimed]:
        """Rows a hold kept `queued` are counted `held`; for each hold whose probe is due, one of
        them is claimed after all (the probe), so a fixed setup is noticed without an operator."""
        won = {row.id for row in claimed}
        waiting = still_queued(session, [i for i in ids if i not in won])
        active = sorted(holds.active_holds(session, self.sender), key=lambda h: len(h.scope))
        probe_rows: list[Claimed] = []
        for message_id, phone in waiting:
            hold = next((h for h in active if h.covers(phone)), None)
            if hold is None:
                continue  # queued, not held: claimed and finished by another worker meanwhile
            due = hold.probe_at <= now and hold.id not in probes.values()
            if due and holds.take_probe(session, hold.id, now, self.settings.hold_probe_after):
                rows = claim_probe(session, message_id, now)
                if rows:
                    probes[message_id] = hold.id
                    probe_rows += rows
                    log.info("sender %s held: message %s probes whether it is fixed", self.sender, message_id)
                    continue
            result.count(message_id, "held", won=False)
        return probe_rows

    def _screen(
        self,
        session: Session,
        claimed: list[Claimed],
        now: dt.datetime,
        result: BatchResult,
        probes: dict[int, int],
    ) -> list[Claimed]:
        """Re-check consent, reachability and the send window for freshly claimed rows; returns
        those to send. A probe that is not sent now gives its turn back to its hold."""
        ready: list[Claimed] = []
        for row in claimed:
            outcome = self._screened_out(session, row, now)
            if outcome is None:
                ready.append(row)
                continue
            result.count(row.id, outcome)
            if row.id in probes:
                holds.give_back_probe(session, probes.pop(row.id), now)
        return ready

    def _screened_out(self, session: Session, row: Claimed, now: dt.datetime) -> str | None:
        if row.opted_out:
            record.cancel(session, row.id, now, consent.CANCEL_REASON)
            return "canceled"
        if row.kind == MessageKind.staff:
            return self._staff_hours(session, row, now)
        if row.kind != MessageKind.outreach:
            return None
        if row.unreachable:
            # Planned before the number was marked: outreach to it would be refused again.
            record.cancel(session, row.id, now, reachability.CANCEL_REASON)
            return "canceled"
        campaign = self.campaigns.get(row.campaign_id) if row.campaign_id else None
        if campaign is None:
            return None
        later = _outside_window(session, row, campaign, self.settings, now)
        if later is None:
            return None
        record.finish(session, row.id, now, status=MessageStatus.planned, send_at=later, queued_at=None)
        log.info("message %s to %s moved to the next opening %s", row.id, mask(row.phone), later)
        return "rescheduled"

    def _staff_hours(self, session: Session, row: Claimed, now: dt.datetime) -> str | None:
        """A staff reply is not capped, but the law's hours hold: outside 08:00-21:00 patient-local
        (20:00 strict) it waits for the next morning (outreach/team/staff.py)."""
        who = recipient(
            row.phone, row.timezone, row.phone_zones, row.postal_code, self.settings.default_timezone
        )
        later = next_opening(now, window=LAW_HOURS, zones=who.zones, strict=who.strict)
        if later <= now:
            return None
        record.finish(session, row.id, now, status=MessageStatus.planned, send_at=later, queued_at=None)
        return "rescheduled"

    def _send_chunk(self, chunk: _Chunk, ledger: _Ledger, result: BatchResult) -> None:
        checked = self.monotonic()
        refused: set[str] = set()
        for position, row in enumerate(chunk.ready):
            if any(row.phone.startswith(scope) for scope in chunk.held_scopes):
                self._put_back(chunk, [row], result, "held")
                continue
            if not self._take_token(row, chunk.deadline):
                self._put_back(chunk, chunk.ready[position:], result, "throttled")
                return
            if self.monotonic() - checked > self.consent_fresh_s:
                # A STOP can land while a claimed row waits for its token; check the rest again.
                refused = self._opted_out([r.phone for r in chunk.ready[position:]])
                checked = self.monotonic()
            if row.phone in refused:
                self._cancel_opted_out(row)
                result.count(row.id, "canceled")
                continue
            if self.monotonic() > chunk.deadline:
                # The lease is over (a slow consent check): the sweeper may already think this row
                # abandoned, so it must not reach the provider from here.
                self._put_back(chunk, chunk.ready[position:], result, "throttled")
                return
            result.count(row.id, self._send_row(row, ledger, chunk))
            if ledger.due(self.clock()):
                self._write_all(ledger)

    def _write_all(self, ledger: _Ledger) -> None:
        while ledger.pending():
            with ledger.writing(self.engine):
                pass

    def _take_token(self, row: Claimed, deadline: float) -> bool:
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

    def _cancel_opted_out(self, row: Claimed) -> None:
        with session_scope(self.engine) as session:
            record.cancel(session, row.id, self.clock(), consent.CANCEL_REASON)

    def _send_row(self, row: Claimed, ledger: _Ledger, chunk: _Chunk) -> str:
        clock = self.clock
        try:
            sent = self.provider.send(to=row.phone, body=row.body)
        except OperatorError as exc:
            chunk.held_scopes.append(holds.scope_for(exc.code, row.phone))
            return record.hold_sender(
                self.engine, row, exc, clock(), sender=self.sender, probe_after=self.settings.hold_probe_after
            )
        except RetryableError as exc:
            return record.retry_later(self.engine, row, exc, clock())
        except PermanentError as exc:
            return record.permanent(self.engine, row, exc, clock())
        except AmbiguousError as exc:
            return record.ambiguous(self.engine, row, exc, clock())
        ledger.accepted.append(_Accepted(row.id, sent.sid, sent.status, clock()))
        if row.id in chunk.probes:
            self._lift(chunk.probes.pop(row.id))
        return "sent"

    def _lift(self, hold_id: int) -> None:
        with session_scope(self.engine) as session:
            lifted = holds.lift(session, hold_id, self.clock(), why="a probe message was accepted")
        if lifted is not None:
            log.warning(
                "sending resumed for sender %s: a probe was accepted after %s (held since %s); "
                "the held messages go out from the next sweep",
                lifted.sender,
                lifted.error_code or f"HTTP {lifted.http_status}",
                lifted.since,
            )

    def _put_back(self, chunk: _Chunk, rows: Sequence[Claimed], result: BatchResult, outcome: str) -> None:
        """Claimed rows that will not be sent now go back to `queued`, as if never claimed."""
        now = self.clock()
        with session_scope(self.engine) as session:
            record.put_back(session, [row.id for row in rows], now)
            for row in rows:
                if row.id in chunk.probes:
                    holds.give_back_probe(session, chunk.probes.pop(row.id), now)
        for row in rows:
            result.count(row.id, outcome)


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


def _outside_window(
    session: Session, claimed: Claimed, campaign: CampaignFile, settings: Settings, now: dt.datetime
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
