"""Operator errors pause the sender, not the campaign (issue 10): an account or configuration
error answered to a create keeps every row, holds the sender in the database, says so loudly
(one ERROR, /healthz, the report), and ends by itself once a probe is accepted.

Real parts: the sandbox over HTTP through the official client, told to refuse the from-number
with Twilio's 21606 (or a destination country with 21408), and the real database.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from outreach.apps.cli import main
from outreach.apps.web.app import create_app
from outreach.clock import clinic_today
from outreach.config import Settings, get_settings
from outreach.outcomes.funnel import funnel
from outreach.plan import scheduler
from outreach.providers.twilio import TwilioProvider
from outreach.sandbox.server import SandboxServer
from outreach.sandbox.state import SandboxConfig
from outreach.send import batch, holds, sweeper
from outreach.send.ratelimit import NoLimit
from outreach.store.db import session_scope
from outreach.store.models import Message, MessageStatus, SenderHold
from tests.factories import add_patient, campaign

NOW = dt.datetime(2026, 11, 23, 14, 0)  # Monday 09:00 in New York
FROM = "+16175550000"
CAMPAIGN = campaign()
CAMPAIGNS = {CAMPAIGN.id: CAMPAIGN}
PROBE_AFTER = dt.timedelta(minutes=5)


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    config = SandboxConfig(sent_after_s=0, delivered_after_s=0)
    with SandboxServer("AC" + "3" * 32, "holds-token", config=config) as server:
        yield server


@pytest.fixture
def settings(sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch, engine: Engine) -> Settings:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", sandbox.account_sid)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", sandbox.auth_token)
    monkeypatch.setenv("TWILIO_FROM_NUMBER", FROM)
    monkeypatch.setenv("OUTREACH_TWILIO_API_URL", sandbox.url)
    get_settings.cache_clear()
    return get_settings()


def _send(engine: Engine, settings: Settings, ids: list[int], now: dt.datetime) -> batch.BatchResult:
    sender = batch.Sender(
        engine, TwilioProvider(settings, timeout=5), NoLimit(), CAMPAIGNS, settings, lambda: now
    )
    return sender.send(ids)


def _sweep(engine: Engine, settings: Settings, now: dt.datetime, *, probe_now: bool = False) -> list[int]:
    dispatched: list[int] = []
    sweeper.sweep(
        engine,
        provider=TwilioProvider(settings),
        dispatch=dispatched.extend,
        now=now,
        policy=sweeper.SweepPolicy.from_settings(settings, probe_now=probe_now),
    )
    return sorted(dispatched)


def _rows(engine: Engine) -> list[Message]:
    with session_scope(engine) as s:
        return list(s.scalars(select(Message).order_by(Message.id)))


def _holds(engine: Engine) -> list[holds.Hold]:
    with session_scope(engine) as s:
        return holds.active_holds(s)


def _three_invites(engine: Engine, session: Session) -> list[int]:
    for i in range(3):
        add_patient(session, f"H{i}", phone=f"(617) 555-010{i}")
    session.commit()
    scheduler.tick(engine, CAMPAIGNS, settings=get_settings(), now=NOW)
    return [row.id for row in _rows(engine)]


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_from_number_that_cannot_text_holds_the_sender_and_keeps_every_row(
    engine: Engine,
    session: Session,
    settings: Settings,
    sandbox: SandboxServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ids = _three_invites(engine, session)
    sandbox.configure(reject_from={FROM: 21606})

    first = _send(engine, settings, ids, NOW)
    assert (first.held, first.failed, first.sent) == (3, 0, 0)
    rows = _rows(engine)
    assert [(r.status, r.attempts, r.sending_at, r.error_code) for r in rows] == [
        (MessageStatus.queued, 0, None, None)
    ] * 3
    [hold] = _holds(engine)
    assert (hold.sender, hold.scope, hold.error_code, hold.http_status) == (FROM, "", 21606, 400)
    assert (hold.since, hold.probe_at) == (NOW, NOW + PROBE_AFTER)
    [error] = _errors(caplog)
    assert "sender +16175550000" in error and "21606" in error

    # While held, nothing is claimed and nothing reaches Twilio: the hold's last refusal stays put.
    again = _send(engine, settings, ids, NOW + dt.timedelta(minutes=1))
    assert (again.held, again.claimed) == (3, 0)
    assert _holds(engine)[0].seen_at == NOW
    assert [r.status for r in _rows(engine)] == [MessageStatus.queued] * 3
    assert len(_errors(caplog)) == 1  # once per hold, not per row or per batch


def test_the_same_error_renews_the_hold_and_a_fixed_setup_sends_everything_once(
    engine: Engine,
    session: Session,
    settings: Settings,
    sandbox: SandboxServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ids = _three_invites(engine, session)
    sandbox.configure(reject_from={FROM: 21606})
    _send(engine, settings, ids, NOW)

    # The probe is due after PROBE_AFTER: one row is tried, refused the same way, the hold renewed.
    probe_time = NOW + PROBE_AFTER
    renewed = _send(engine, settings, ids, probe_time)
    assert (renewed.held, renewed.claimed) == (3, 1)
    [hold] = _holds(engine)
    assert (hold.since, hold.seen_at, hold.probe_at) == (NOW, probe_time, probe_time + PROBE_AFTER)
    assert len(_errors(caplog)) == 1

    sandbox.configure(reject_from={})  # the operator fixes the number in the console
    fixed_at = probe_time + PROBE_AFTER
    probe = _send(engine, settings, ids, fixed_at)
    assert (probe.sent, probe.held) == (1, 2)
    assert _holds(engine) == []
    # The sweep hands the rows the hold kept back to the workers at once, not QUEUED_AFTER later.
    held_back = [r.id for r in _rows(engine) if r.status == MessageStatus.queued]
    assert len(held_back) == 2
    assert _sweep(engine, settings, fixed_at + dt.timedelta(seconds=15)) == held_back
    assert _send(engine, settings, held_back, fixed_at + dt.timedelta(seconds=16)).sent == 2

    # No row failed, and the next step is planned, not canceled as "previous step failed".
    week_later = NOW + dt.timedelta(days=7)
    scheduler.tick(engine, CAMPAIGNS, settings=get_settings(), now=week_later)
    reminders = [r.id for r in _rows(engine) if r.step_id == "reminder"]
    assert len(reminders) == 3
    assert _send(engine, settings, reminders, week_later).sent == 3
    assert {r.status for r in _rows(engine)} == {MessageStatus.sent}
    accepted = sandbox.messages()
    assert len(accepted) == 6 and len({(m["to"], m["body"]) for m in accepted}) == 6  # never twice


def test_a_region_permission_error_holds_only_that_country(
    engine: Engine, session: Session, settings: Settings, sandbox: SandboxServer
) -> None:
    add_patient(session, "US", phone="(617) 555-0101")
    add_patient(session, "UK", phone="+44 7911 123456", timezone="Europe/London")
    session.commit()
    scheduler.tick(engine, CAMPAIGNS, settings=get_settings(), now=NOW)
    ids = [row.id for row in _rows(engine)]
    sandbox.configure(reject={"+447911123456": 21408})

    result = _send(engine, settings, ids, NOW)
    assert (result.sent, result.held) == (1, 1)
    [hold] = _holds(engine)
    assert (hold.scope, hold.error_code) == ("+44", 21408)
    # Another domestic patient is not held back by the foreign one.
    add_patient(session, "US2", phone="(617) 555-0102")
    session.commit()
    scheduler.tick(engine, CAMPAIGNS, settings=get_settings(), now=NOW)
    new = [r.id for r in _rows(engine) if r.status == MessageStatus.queued and r.phone.startswith("+1")]
    assert _send(engine, settings, new, NOW).sent == 1
    assert [r.phone for r in _rows(engine) if r.status == MessageStatus.queued] == ["+447911123456"]


def test_outreach_sweep_probes_at_once_and_lifts_the_hold_of_a_former_sender(
    engine: Engine, session: Session, settings: Settings, sandbox: SandboxServer
) -> None:
    ids = _three_invites(engine, session)
    sandbox.configure(reject_from={FROM: 21606})
    _send(engine, settings, ids, NOW)
    with session_scope(engine) as s:  # a hold left by the sender this deployment used before
        s.add(
            SenderHold(
                sender="+16175559999",
                scope="",
                error_code=21606,
                message="x",
                since=NOW,
                seen_at=NOW,
                probe_at=NOW,
            )
        )
    sandbox.configure(reject_from={})

    soon = NOW + dt.timedelta(minutes=1)  # well before the probe would be due by itself
    assert _sweep(engine, settings, soon) == []
    assert {h.sender for h in _holds(engine)} == {FROM}  # the former sender's hold is gone
    [probe] = _sweep(engine, settings, soon, probe_now=True)
    assert probe == ids[0]  # the oldest held row
    assert _send(engine, settings, [probe], soon).sent == 1
    assert _holds(engine) == []
    rest = _sweep(engine, settings, soon + dt.timedelta(seconds=15))
    assert rest == ids[1:]
    assert _send(engine, settings, rest, soon + dt.timedelta(seconds=16)).sent == 2
    assert len(sandbox.messages()) == 3


def test_healthz_says_degraded_and_why_and_the_report_lists_the_hold(
    engine: Engine,
    session: Session,
    settings: Settings,
    sandbox: SandboxServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = _three_invites(engine, session)
    monkeypatch.setenv("OUTREACH_PUBLIC_URL", "https://outreach.example.org")
    get_settings.cache_clear()
    client = TestClient(create_app(get_settings(), engine=engine, campaigns=CAMPAIGNS, clock=lambda: NOW))
    before = client.get("/healthz").json()
    assert (before["status"], before["checks"]["sender_holds"]) == ("ok", {"ok": True, "detail": "none"})

    sandbox.configure(reject_from={FROM: 21606})
    _send(engine, settings, ids, NOW)
    health = client.get("/healthz")
    assert health.status_code == 200  # the webhooks still work: STOP must keep landing
    body = health.json()
    assert (body["checks"]["database"]["ok"], body["status"]) == (True, "degraded")
    held = body["checks"]["sender_holds"]
    assert held["ok"] is False and FROM in held["detail"]
    assert "21606" in held["detail"] and "held since" in held["detail"]

    report = funnel(engine, campaigns=CAMPAIGNS, on=clinic_today("America/New_York", NOW)).as_json()
    [listed] = report["sender_holds"]
    assert (listed["sender"], listed["error_code"], listed["since"]) == (FROM, 21606, NOW.isoformat())
    table = CliRunner().invoke(main, ["report"])
    assert table.exit_code == 0, table.output
    assert "sending paused: sender +16175550000" in table.output and "21606" in table.output
