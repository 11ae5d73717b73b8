"""Campaign pause and resume (outreach/send/pause.py) with the real scheduler, sender, sweeper and
the Twilio sandbox: a paused campaign's queued rows are claimed by no worker, nothing new is
planned or enqueued, nothing is canceled, and after a resume every row goes out exactly once,
re-checked at claim time like any other."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from outreach.apps.cli import main
from outreach.config import Settings, get_settings
from outreach.plan import scheduler
from outreach.providers.twilio import TwilioProvider
from outreach.sandbox.server import SandboxServer
from outreach.send import batch, pause, sweeper
from outreach.send.ratelimit import NoLimit
from outreach.store.db import session_scope
from outreach.store.models import AuditEntry, Campaign, Enrollment, Message, MessageStatus
from tests.factories import add_patient, campaign

NOW = dt.datetime(2026, 11, 23, 14, 0)  # Monday 09:00 in New York
CAMPAIGN = campaign()
CAMPAIGNS = {CAMPAIGN.id: CAMPAIGN}


@pytest.fixture
def settings(twilio_env: SandboxServer, engine: Engine) -> Settings:
    twilio_env.configure(sent_after_s=0, delivered_after_s=0)
    return get_settings()


def _send(engine: Engine, settings: Settings, ids: list[int], now: dt.datetime = NOW) -> batch.BatchResult:
    sender = batch.Sender(
        engine, TwilioProvider(settings, timeout=5.0), NoLimit(), CAMPAIGNS, settings, clock=lambda: now
    )
    return sender.send(ids)


def _statuses(engine: Engine) -> dict[int, str]:
    with session_scope(engine) as s:
        return {row.id: row.status for row in s.execute(select(Message.id, Message.status))}


def _three_queued(engine: Engine, session: Session) -> list[int]:
    for i in range(3):
        add_patient(session, f"P{i}", phone=f"(617) 555-010{i}")
    session.commit()
    scheduler.tick(engine, CAMPAIGNS, settings=get_settings(), now=NOW)
    ids = sorted(i for i, status in _statuses(engine).items() if status == MessageStatus.queued)
    assert len(ids) == 3
    return ids


def _pause(engine: Engine, at: dt.datetime = NOW) -> pause.PauseChange:
    with session_scope(engine) as s:
        return pause.pause(s, CAMPAIGN.id, CAMPAIGN.name, by="coord@example.org", at=at)


def _resume(engine: Engine, at: dt.datetime = NOW) -> pause.PauseChange:
    with session_scope(engine) as s:
        return pause.resume(s, CAMPAIGN.id, by="coord@example.org", at=at)


def test_a_pause_holds_queued_rows_from_every_claim_until_resume_then_each_goes_once(
    engine: Engine, session: Session, settings: Settings, sandbox: SandboxServer
) -> None:
    ids = _three_queued(engine, session)  # their tasks are already in the broker
    change = _pause(engine)
    assert (change.changed, change.waiting) == (True, 3)
    assert set(_statuses(engine).values()) == {MessageStatus.planned}  # back from the queue, not canceled
    assert _send(engine, settings, ids).skipped == 3  # the tasks the broker still held
    # A row an enqueue raced into `queued` as the pause committed: the claim still refuses it.
    with session_scope(engine) as s:
        raced = update(Message).where(Message.id == ids[0])
        s.execute(raced.values(status=MessageStatus.queued, queued_at=NOW))
    later = NOW + dt.timedelta(minutes=30)
    assert _send(engine, settings, ids, now=later).skipped == 3
    assert scheduler.enqueue_due(engine, later, dispatch=None) == []
    swept = sweeper.sweep(engine, provider=None, dispatch=lambda ids: None, now=later)
    assert swept.redispatched == 0  # left alone, not re-dispatched every pass
    assert sandbox.messages() == []

    change = _resume(engine, later)
    assert (change.changed, change.waiting) == (True, 3)
    queued = scheduler.enqueue_due(engine, later, dispatch=None)
    assert sorted(queued) == ids[1:]  # the raced row is still queued: the sweeper's, later
    redispatched = sweeper.redispatch_stale_queued(engine, later)
    assert redispatched == [ids[0]]
    first, again = _send(engine, settings, ids, now=later), _send(engine, settings, ids, now=later)
    assert (first.sent, again.sent, again.skipped) == (3, 0, 3)
    assert sorted(m["to"] for m in sandbox.messages()) == ["+16175550100", "+16175550101", "+16175550102"]


def test_a_paused_campaign_plans_and_enrolls_no_one_and_resumes_where_it_stopped(
    engine: Engine, session: Session, settings: Settings
) -> None:
    _pause(engine)
    add_patient(session, "N1")
    session.commit()
    result = scheduler.tick(engine, CAMPAIGNS, settings=settings, now=NOW)
    assert (sum(result.enrolled.values()), result.planned, result.queued) == (0, 0, 0)
    with session_scope(engine) as s:
        assert s.scalar(select(Enrollment)) is None
    _resume(engine)
    result = scheduler.tick(engine, CAMPAIGNS, settings=settings, now=NOW + dt.timedelta(minutes=1))
    assert (sum(result.enrolled.values()), result.planned, result.queued) == (1, 1, 1)


def test_resume_respects_the_window_at_claim_time(
    engine: Engine, session: Session, settings: Settings, sandbox: SandboxServer
) -> None:
    ids = _three_queued(engine, session)
    _pause(engine)
    night = dt.datetime(2026, 11, 24, 2, 0)  # Monday 21:00 New York: the window (09-18) is shut
    _resume(engine, night)
    assert sorted(scheduler.enqueue_due(engine, night, dispatch=None)) == ids
    assert _send(engine, settings, ids, now=night).rescheduled == 3
    assert sandbox.messages() == []
    with session_scope(engine) as s:
        times = set(s.scalars(select(Message.send_at)))
    assert times == {dt.datetime(2026, 11, 24, 14, 0)}  # Tuesday 09:00 New York


def test_staff_and_answer_rows_are_never_paused(
    engine: Engine, session: Session, settings: Settings, sandbox: SandboxServer
) -> None:
    [first, *_] = _three_queued(engine, session)
    with session_scope(engine) as s:
        enrollment_id = s.scalar(select(Message.enrollment_id).where(Message.id == first))
        answer = Message(
            enrollment_id=enrollment_id,
            step_id="answer:SM1",
            kind="answer",
            phone="+16175550100",
            body="Thanks!",
            status=MessageStatus.queued,
            send_at=NOW,
            queued_at=NOW,
        )
        s.add(answer)
        s.flush()
        answer_id = answer.id
    _pause(engine)
    assert _statuses(engine)[answer_id] == MessageStatus.queued
    assert _send(engine, settings, [answer_id]).sent == 1
    assert [m["body"] for m in sandbox.messages()] == ["Thanks!"]


def test_pause_and_resume_are_audited_idempotent_and_cancel_nothing(engine: Engine, session: Session) -> None:
    _three_queued(engine, session)
    assert _pause(engine).changed
    again = _pause(engine, NOW + dt.timedelta(minutes=1))
    assert (again.changed, again.waiting) == (False, 3)
    with session_scope(engine) as s:
        assert pause.pause_states(s) == {CAMPAIGN.id: pause.PauseState(NOW, "coord@example.org")}
    assert _resume(engine).changed and not _resume(engine).changed
    with session_scope(engine) as s:
        entries = s.execute(
            select(AuditEntry.actor, AuditEntry.action, AuditEntry.subject, AuditEntry.detail)
        )
        assert sorted(tuple(e) for e in entries) == [
            ("coord@example.org", "campaign_pause", CAMPAIGN.id, "3 planned or queued messages held"),
            ("coord@example.org", "campaign_resume", CAMPAIGN.id, "3 planned or queued messages released"),
        ]
        assert pause.paused_ids(s) == set()
    assert MessageStatus.canceled not in _statuses(engine).values()


def test_a_campaign_no_pass_has_seen_can_be_paused_and_an_ended_one_still_cancels(
    engine: Engine, session: Session, settings: Settings
) -> None:
    _pause(engine)  # no row yet: made by the pause
    with session_scope(engine) as s:
        row = s.get(Campaign, CAMPAIGN.id)
        assert row is not None and row.paused_at == NOW and row.name == CAMPAIGN.name
    _resume(engine)
    _three_queued(engine, session)
    _pause(engine)
    ended = campaign(active={"from": dt.date(2026, 1, 1), "until": dt.date(2026, 11, 22)})
    result = scheduler.tick(engine, {ended.id: ended}, settings=settings, now=NOW)
    assert result.canceled == 3  # "campaign ended" still applies to a paused campaign
    with session_scope(engine) as s:
        assert not pause.resume(s, "no-such-campaign", by="x", at=NOW).changed


# --- `outreach campaigns pause|resume ID` ------------------------------------------------------


def test_cli_pause_list_and_resume(engine: Engine, session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTREACH_BROKER_URL", "redis://127.0.0.1:1/0")  # no broker: resume still works
    get_settings.cache_clear()
    paused = CliRunner().invoke(main, ["campaigns", "pause", "flu-season"])
    assert paused.exit_code == 0, paused.output
    assert paused.output.startswith("paused flu-season: 0 queued/planned messages held;")
    again = CliRunner().invoke(main, ["campaigns", "pause", "flu-season"])
    assert again.output.startswith("flu-season was already paused")
    listed = CliRunner().invoke(main, ["campaigns", "list"])
    assert "flu-season  Flu vaccine, 2026-2027 season\n  PAUSED     since " in listed.output
    assert listed.output.count("PAUSED") == 1
    rows = {
        row["id"]: row
        for row in json.loads(CliRunner().invoke(main, ["campaigns", "list", "--json"]).output)["campaigns"]
    }
    assert rows["flu-season"]["paused"]["by"].startswith("cli")
    assert rows["colorectal-screening"]["paused"] is None
    resumed = CliRunner().invoke(main, ["campaigns", "resume", "flu-season"])
    assert resumed.exit_code == 0, resumed.output
    assert resumed.output.startswith("resumed flu-season: 0 queued/planned messages go out as due")
    assert (
        CliRunner().invoke(main, ["campaigns", "resume", "flu-season"]).output == "flu-season is not paused\n"
    )
    with session_scope(engine) as s:
        actions = list(s.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))
        actors = set(s.scalars(select(AuditEntry.actor)))
    assert actions == ["campaign_pause", "campaign_resume"]
    assert all(actor.startswith("cli") for actor in actors)


def test_cli_pause_of_an_unknown_id_is_one_line() -> None:
    result = CliRunner().invoke(main, ["campaigns", "pause", "nope"])
    assert result.exit_code == 2
    assert result.output.startswith("error: no campaign 'nope' in ")
    assert (
        "known ids: breast-screening, cervical-screening, colorectal-screening, flu-season" in result.output
    )
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
