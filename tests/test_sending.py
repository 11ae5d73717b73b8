"""The sender against the sandbox through the real twilio client: once per step, consent and
window at claim time, and each class of provider outcome ending in its stated status."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from outreach.campaigns import CampaignFile
from outreach.clock import utcnow
from outreach.config import Settings, get_settings
from outreach.listen import status
from outreach.listen.consent import is_opted_out, record_opt_out
from outreach.plan import scheduler
from outreach.providers.base import Provider, ProviderMessage
from outreach.providers.twilio import TwilioProvider
from outreach.sandbox.server import SandboxServer
from outreach.send import batch, sweeper
from outreach.send.ratelimit import LocalRateLimiter, NoLimit, RateLimiter
from outreach.store.db import session_scope
from outreach.store.models import Message, MessageStatus
from tests.factories import add_patient, campaign

NOW = dt.datetime(2026, 11, 23, 14, 0)  # Monday 09:00 in New York
CAMPAIGN = campaign()
CAMPAIGNS = {CAMPAIGN.id: CAMPAIGN}


@pytest.fixture
def settings(twilio_env: SandboxServer, engine: Engine) -> Settings:
    """The shared sandbox (tests/sandbox_fixtures.py), answering at once."""
    twilio_env.configure(sent_after_s=0, delivered_after_s=0)
    return get_settings()


def _queue(engine: Engine, now: dt.datetime = NOW) -> list[int]:
    """Plan and enqueue with the real scheduler; returns the queued ids."""
    return sorted(
        scheduler.tick(engine, CAMPAIGNS, settings=get_settings(), now=now).queued and _ids(engine, "queued")
    )


def _queue_two(engine: Engine, session: Session) -> list[int]:
    """Two patients, (617) 555-0101 and -0102, each with a queued invite."""
    add_patient(session, "P1", phone="(617) 555-0101")
    add_patient(session, "P2", phone="(617) 555-0102")
    session.commit()
    return _queue(engine)


def _answer_row(engine: Engine, step_id: str, body: str, status: str, **times: dt.datetime) -> Message:
    """An answer text to (617) 555-0101 in `status` (answers have no send window)."""
    row = Message(step_id=step_id, kind="answer", phone="+16175550101", body=body, status=status, **times)
    with session_scope(engine) as s:
        s.add(row)
    return row


def _ids(engine: Engine, status: str) -> list[int]:
    with session_scope(engine) as s:
        return list(s.scalars(select(Message.id).where(Message.status == status).order_by(Message.id)))


def _send(
    engine: Engine,
    settings: Settings,
    ids: list[int],
    *,
    now: dt.datetime = NOW,
    timeout: float = 5.0,
    provider: Provider | None = None,
    limiter: RateLimiter | None = None,
    campaigns: dict[str, CampaignFile] = CAMPAIGNS,
    consent_fresh_s: float = batch.CONSENT_FRESH_S,
    monotonic: Callable[[], float] = time.monotonic,
) -> batch.BatchResult:
    """The sender as a worker runs it, on the sandbox, at a fixed time."""
    sender = batch.Sender(
        engine,
        provider or TwilioProvider(settings, timeout=timeout),
        limiter or NoLimit(),
        campaigns,
        settings,
        clock=lambda: now,
        consent_fresh_s=consent_fresh_s,
        monotonic=monotonic,
    )
    return sender.send(ids)


def _rows(engine: Engine) -> dict[int, Message]:
    with session_scope(engine) as s:
        return {m.id: m for m in s.scalars(select(Message))}


def test_each_queued_row_is_sent_once_even_when_dispatched_twice(
    engine: Engine, session: Session, settings: Settings, sandbox: SandboxServer
) -> None:
    for i in range(3):
        add_patient(session, f"S{i}", phone=f"(617) 555-010{i}")
    session.commit()
    ids = _queue(engine)
    assert len(ids) == 3
    first = _send(engine, settings, ids)
    again = _send(engine, settings, ids)
    assert (first.sent, again.sent, again.skipped) == (3, 0, 3)
    accepted = sandbox.messages()
    assert sorted(m["to"] for m in accepted) == ["+16175550100", "+16175550101", "+16175550102"]
    rows = _rows(engine)
    assert {r.provider_sid for r in rows.values()} == {m["sid"] for m in accepted}
    assert all(r.status == MessageStatus.sent and r.sent_at == NOW for r in rows.values())


def test_number_opted_out_after_queueing_is_not_sent_to(
    engine: Engine, session: Session, settings: Settings, sandbox: SandboxServer
) -> None:
    add_patient(session, "O1")
    session.commit()
    [message_id] = _queue(engine)
    with session_scope(engine) as s:
        # Mark it queued again as if the STOP raced the claim (record_opt_out cancels pending rows).
        record_opt_out(s, "+16175550101", by="STOP", at=NOW)
        s.get(Message, message_id).status = MessageStatus.queued  # type: ignore[union-attr]
    result = _send(engine, settings, [message_id])
    assert result.canceled == 1
    assert sandbox.messages() == []
    assert _rows(engine)[message_id].cancel_reason == "opted out"


def test_row_due_at_2059_that_waits_past_2100_moves_to_the_next_morning(
    engine: Engine, session: Session, settings: Settings, sandbox: SandboxServer
) -> None:
    add_patient(session, "W1")
    session.commit()
    wide = campaign(
        send_window={"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "22:00"}
    )
    at_2059 = dt.datetime(2026, 11, 24, 1, 59)  # Monday 20:59 New York
    scheduler.tick(engine, {wide.id: wide}, settings=settings, now=at_2059)
    [message_id] = _ids(engine, "queued")
    at_2100 = at_2059 + dt.timedelta(minutes=1)
    result = _send(engine, settings, [message_id], now=at_2100, campaigns={wide.id: wide})
    assert result.rescheduled == 1
    row = _rows(engine)[message_id]
    assert (row.status, row.send_at) == (MessageStatus.planned, dt.datetime(2026, 11, 24, 13, 0))  # Tue 08:00
    assert sandbox.messages() == []


@pytest.mark.parametrize(("fault", "expected"), [({"p429": 1.0}, 20429), ({"p500": 1.0}, 20500)])
def test_retryable_errors_back_off_on_the_same_row_then_fail(
    engine: Engine, session: Session, settings: Settings, sandbox: SandboxServer, fault: dict, expected: int
) -> None:
    add_patient(session, "R1")
    session.commit()
    [message_id] = _queue(engine)
    sandbox.configure(**fault)
    now = NOW
    for attempt in range(1, batch.MAX_ATTEMPTS):
        assert _send(engine, settings, [message_id], now=now).retrying == 1
        row = _rows(engine)[message_id]
        assert (row.status, row.attempts, row.error_code) == (MessageStatus.planned, attempt, expected)
        assert row.send_at > now
        now = row.send_at
        assert scheduler.enqueue_due(engine, now, dispatch=None) == [message_id]
    assert _send(engine, settings, [message_id], now=now).failed == 1
    row = _rows(engine)[message_id]
    assert (row.status, row.error_code) == (MessageStatus.failed, expected)
    assert sandbox.messages() == []


@pytest.mark.parametrize("code", [21211, 21614, 21610])
def test_permanent_errors_fail_with_twilios_code(
    engine: Engine, session: Session, settings: Settings, sandbox: SandboxServer, code: int
) -> None:
    add_patient(session, "P1")
    session.commit()
    [message_id] = _queue(engine)
    other = _answer_row(engine, "answer:x", "b", MessageStatus.planned, send_at=NOW + dt.timedelta(hours=1))
    sandbox.configure(reject={"+16175550101": code})
    assert _send(engine, settings, [message_id]).failed == 1
    rows = _rows(engine)
    assert (rows[message_id].status, rows[message_id].error_code) == (MessageStatus.failed, code)
    with session_scope(engine) as s:
        assert is_opted_out(s, "+16175550101") is (code == 21610)
    assert rows[other.id].status == (MessageStatus.canceled if code == 21610 else MessageStatus.planned)


def test_ambiguous_timeout_is_reconciled_without_a_second_send(
    engine: Engine, session: Session, settings: Settings, sandbox: SandboxServer
) -> None:
    # The provider stamps messages with the real clock, so this row is an answer (no send window)
    # sent "now" for real; the lookup by recipient and time must find it.
    now = utcnow()
    row = _answer_row(engine, "answer:SMx", "Thanks!", MessageStatus.queued, send_at=now, queued_at=now)
    sandbox.configure(p_timeout=1.0, timeout_hold_s=5)
    assert _send(engine, settings, [row.id], now=now, timeout=0.5).unknown == 1
    assert _rows(engine)[row.id].status == MessageStatus.unknown
    sandbox.configure(p_timeout=0.0)
    result = sweeper.sweep(
        engine, provider=TwilioProvider(settings), dispatch=None, now=now + dt.timedelta(minutes=1)
    )
    assert result.found == 1
    [accepted] = sandbox.messages()
    settled = _rows(engine)[row.id]
    # Recorded with what the provider says now (it delivered it), not just `sent`.
    assert (settled.status, settled.provider_sid) == (MessageStatus.delivered, accepted["sid"])
    again = sweeper.sweep(
        engine, provider=TwilioProvider(settings), dispatch=None, now=now + dt.timedelta(minutes=2)
    )
    assert (again.found, again.requeued, again.failed) == (0, 0, 0)
    assert len(sandbox.messages()) == 1


def test_unknown_message_the_provider_never_got_is_failed_after_its_queue_time(
    engine: Engine, session: Session, settings: Settings, sandbox: SandboxServer
) -> None:
    add_patient(session, "T2")
    session.commit()
    [message_id] = _queue(engine)
    with session_scope(engine) as s:
        row = s.get(Message, message_id)
        assert row is not None
        row.status, row.sending_at = MessageStatus.unknown, NOW
    provider = TwilioProvider(settings)
    assert (
        sweeper.sweep(engine, provider=provider, dispatch=None, now=NOW + dt.timedelta(minutes=5)).failed == 0
    )
    assert (
        sweeper.sweep(engine, provider=provider, dispatch=None, now=NOW + dt.timedelta(minutes=11)).failed
        == 1
    )
    assert _rows(engine)[message_id].status == MessageStatus.failed
    assert sandbox.messages() == []


def test_lost_queue_and_dead_worker_are_recovered_by_the_sweeper(
    engine: Engine, session: Session, settings: Settings, sandbox: SandboxServer
) -> None:
    add_patient(session, "L1", phone="(617) 555-0101")
    add_patient(session, "L2", phone="(617) 555-0102")
    session.commit()
    lost, claimed = _queue(engine)
    with session_scope(engine) as s:  # a worker claimed this one and died before calling Twilio
        assert batch.claim(s, [claimed], NOW)
    dispatched: list[int] = []
    early = sweeper.sweep(  # within OUTREACH_SWEEP_SENDING_AFTER (40 s): the claimer may still send it
        engine,
        provider=TwilioProvider(settings),
        dispatch=dispatched.extend,
        now=NOW + dt.timedelta(seconds=30),
    )
    assert (early.redispatched, early.requeued, dispatched) == (0, 0, [])
    later = sweeper.sweep(
        engine,
        provider=TwilioProvider(settings),
        dispatch=dispatched.extend,
        now=NOW + dt.timedelta(minutes=6),
    )
    assert (later.redispatched, later.requeued) == (1, 1)
    assert sorted(dispatched) == [lost, claimed]
    assert _send(engine, settings, dispatched, now=NOW + dt.timedelta(minutes=6)).sent == 2
    assert len(sandbox.messages()) == 2


def test_reconcile_does_not_mistake_another_text_to_the_same_number_for_ours(
    engine: Engine, settings: Settings, sandbox: SandboxServer
) -> None:
    now = utcnow()
    TwilioProvider(settings).send(to="+16175550101", body="a different text")
    row = _answer_row(engine, "answer:SMy", "Thanks!", MessageStatus.unknown, send_at=now, sending_at=now)
    result = sweeper.sweep(
        engine, provider=TwilioProvider(settings), dispatch=None, now=now + dt.timedelta(minutes=1)
    )
    assert (result.found, result.failed) == (0, 0)
    assert _rows(engine)[row.id].status == MessageStatus.unknown


def test_a_row_that_gets_no_rate_token_in_time_goes_back_to_the_queue_unsent(
    engine: Engine, session: Session, settings: Settings, sandbox: SandboxServer
) -> None:
    ids = _queue_two(engine, session)
    starved = LocalRateLimiter(rate=0.001)  # one token now, the next in 1,000 s: past the wait bound
    result = _send(engine, settings, ids, limiter=starved)
    assert (result.sent, result.throttled) == (1, 1)
    rows = _rows(engine)
    waiting = [r for r in rows.values() if r.status == MessageStatus.queued]
    assert len(waiting) == 1 and waiting[0].attempts == 0 and waiting[0].sending_at is None
    assert len(sandbox.messages()) == 1


def test_a_batch_larger_than_a_claim_chunk_sends_each_row_once_and_records_every_sid(
    engine: Engine, session: Session, settings: Settings, sandbox: SandboxServer
) -> None:
    count = 2 * batch.CLAIM_CHUNK + 3
    for i in range(count):
        add_patient(session, f"C{i}", phone=f"(617) 555-{i:04d}")
    session.commit()
    ids = _queue(engine)
    assert len(ids) == count
    result = _send(engine, settings, ids + ids[:5])  # a repeated id in the same batch is skipped
    assert (result.sent, result.skipped) == (count, 0)
    accepted = sandbox.messages()
    assert len(accepted) == count and len({m["to"] for m in accepted}) == count
    rows = _rows(engine)
    assert {r.provider_sid for r in rows.values()} == {m["sid"] for m in accepted}
    assert all(r.status == MessageStatus.sent for r in rows.values())


class _AfterSend:
    """The real provider, plus something that happens elsewhere right after each accepted send
    (in another process, in its own transaction): the races the sender must survive."""

    def __init__(self, inner: TwilioProvider, engine: Engine) -> None:
        self.inner, self.engine = inner, engine

    def send(self, *, to: str, body: str, status_callback: str | None = None) -> ProviderMessage:
        sent = self.inner.send(to=to, body=body, status_callback=status_callback)
        with session_scope(self.engine) as s:
            self.meanwhile(s, sent)
        return sent

    def meanwhile(self, session: Session, sent: ProviderMessage) -> None:
        raise NotImplementedError

    def fetch(self, sid: str) -> ProviderMessage:
        return self.inner.fetch(sid)

    def list_to(self, to: str, *, since: dt.datetime) -> list[ProviderMessage]:
        return self.inner.list_to(to, since=since)


class _CallbackFirst(_AfterSend):
    """A delivery callback lands in the web process before the sender has recorded the SID."""

    def meanwhile(self, session: Session, sent: ProviderMessage) -> None:
        assert status.apply_status(session, sent.sid, "delivered", None, NOW) == status.Outcome.unmatched


def test_a_status_callback_that_beats_the_sender_is_applied_once_the_sid_is_recorded(
    engine: Engine, session: Session, settings: Settings, sandbox: SandboxServer
) -> None:
    ids = _queue_two(engine, session)
    result = _send(engine, settings, ids, provider=_CallbackFirst(TwilioProvider(settings), engine))
    assert result.sent == 2
    rows = _rows(engine)
    assert [r.status for r in rows.values()] == [MessageStatus.delivered] * 2


class _StopArrivesMidChunk(_AfterSend):
    """A STOP from another number of the chunk arrives right after the first send."""

    def __init__(self, inner: TwilioProvider, engine: Engine, stopping: str) -> None:
        super().__init__(inner, engine)
        self.stopping = stopping

    def meanwhile(self, session: Session, sent: ProviderMessage) -> None:
        record_opt_out(session, self.stopping, by="STOP", at=NOW)


@pytest.mark.parametrize(("fresh_s", "reached"), [(0.0, 1), (3600.0, 2)])
def test_a_stop_while_a_claimed_row_waits_for_its_token_cancels_it(
    engine: Engine, session: Session, settings: Settings, sandbox: SandboxServer, fresh_s: float, reached: int
) -> None:
    """Consent is checked again once a claimed row has waited longer than `consent_fresh_s`
    (here 0: always; the control, an hour, shows the re-check is what stops the second text)."""
    ids = _queue_two(engine, session)
    stop = _StopArrivesMidChunk(TwilioProvider(settings), engine, "+16175550102")
    result = _send(engine, settings, ids, provider=stop, consent_fresh_s=fresh_s)
    assert len(sandbox.messages()) == reached
    assert (result.sent, result.canceled) == (reached, 2 - reached)
    if reached == 1:
        assert _rows(engine)[ids[1]].cancel_reason == "opted out"


class _SlowClock:
    """Elapsed time that moves 11 s with every accepted send (a slow rate, without sleeping)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _ElevenSecondsPerSend(_AfterSend):
    def __init__(self, inner: TwilioProvider, engine: Engine, clock: _SlowClock) -> None:
        super().__init__(inner, engine)
        self.clock = clock

    def meanwhile(self, session: Session, sent: ProviderMessage) -> None:
        self.clock.now += 11


def test_a_chunk_waits_for_tokens_at_most_the_claim_lease_in_all(
    engine: Engine, session: Session, settings: Settings, sandbox: SandboxServer
) -> None:
    """Each row's token comes at once, but the chunk as a whole has used up its 20 s lease
    (batch.CLAIM_LEASE_S) after two sends: the other rows go back to the queue instead of
    outliving the sweeper's patience."""
    assert batch.CLAIM_LEASE_S == 20
    for i in range(4):
        add_patient(session, f"T{i}", phone=f"(617) 555-010{i}")
    session.commit()
    ids = _queue(engine)
    clock = _SlowClock()
    limiter = LocalRateLimiter(rate=0.1, clock=clock)  # one token per 10 s of that clock
    provider = _ElevenSecondsPerSend(TwilioProvider(settings), engine, clock)
    result = _send(engine, settings, ids, provider=provider, limiter=limiter, monotonic=clock)
    assert (result.sent, result.throttled) == (2, 2)
    assert len(sandbox.messages()) == 2
    assert [_rows(engine)[i].status for i in ids[2:]] == [MessageStatus.queued] * 2


class _BreaksAfterOne(_AfterSend):
    """Sends once, then fails the way a bug would (not a provider error the sender sorts)."""

    def send(self, *, to: str, body: str, status_callback: str | None = None) -> ProviderMessage:
        if self.inner.messages.list(limit=1):
            raise RuntimeError("boom")
        return self.inner.send(to=to, body=body, status_callback=status_callback)


def test_what_was_accepted_before_a_crash_of_the_batch_is_still_recorded(
    engine: Engine, session: Session, settings: Settings, sandbox: SandboxServer
) -> None:
    ids = _queue_two(engine, session)
    with pytest.raises(RuntimeError, match="boom"):
        _send(engine, settings, ids, provider=_BreaksAfterOne(TwilioProvider(settings), engine))
    [accepted] = sandbox.messages()
    rows = _rows(engine)
    assert (rows[ids[0]].status, rows[ids[0]].provider_sid) == (MessageStatus.sent, accepted["sid"])
    assert rows[ids[1]].status == MessageStatus.sending  # claimed, never sent: the sweeper's to settle
