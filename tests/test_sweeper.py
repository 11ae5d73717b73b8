"""The sweeper's delivery-status truth and its settings (issue 10): a row settled from the
provider records the provider's real status; `sent` rows whose callbacks were lost are fetched,
oldest first and rate-bounded; the sweeper's patience comes from settings; `outreach sweep` runs
one pass and prints its figures.

Real parts: the sandbox through the official client, with no status callback configured (so every
callback is "lost"), the real database, the CLI through click's runner.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from outreach.apps.cli import main
from outreach.clock import utcnow
from outreach.config import Settings, get_settings, load_settings
from outreach.errors import UserError
from outreach.plan import scheduler
from outreach.providers.twilio import TwilioProvider
from outreach.sandbox.server import SandboxServer
from outreach.sandbox.state import DeliveryOutcome
from outreach.send import batch, reachability, sweeper
from outreach.send.ratelimit import NoLimit
from outreach.store.db import session_scope
from outreach.store.models import Message, MessageStatus
from tests.conftest import ROOT
from tests.factories import add_patient, campaign

NOW = dt.datetime(2026, 11, 23, 14, 0)  # Monday 09:00 in New York
CAMPAIGN = campaign()
LATER = NOW + dt.timedelta(minutes=16)  # past OUTREACH_SWEEP_STATUS_AFTER (15 min)


@pytest.fixture
def settings(twilio_env: SandboxServer, engine: Engine) -> Settings:
    """The shared sandbox (tests/sandbox_fixtures.py), answering at once."""
    twilio_env.configure(sent_after_s=0, delivered_after_s=0)
    return get_settings()  # no OUTREACH_PUBLIC_URL: no status callback ever reaches us


def _sent_rows(
    engine: Engine,
    session: Session,
    settings: Settings,
    sandbox: SandboxServer,
    count: int,
    until: frozenset[str] = frozenset({"delivered", "undelivered", "failed"}),
) -> list[int]:
    """`count` invites sent through the sandbox, each a minute apart in `send_at` (oldest first)."""
    for i in range(count):
        add_patient(session, f"S{i}", phone=f"(617) 555-01{i:02d}")
    session.commit()
    scheduler.tick(engine, {CAMPAIGN.id: CAMPAIGN}, settings=settings, now=NOW)
    with session_scope(engine) as s:
        ids = list(s.scalars(select(Message.id).order_by(Message.id)))
        for position, message_id in enumerate(ids):
            at = NOW + dt.timedelta(minutes=position - count)
            s.execute(update(Message).where(Message.id == message_id).values(send_at=at))
    sender = batch.Sender(
        engine, TwilioProvider(settings, timeout=5), NoLimit(), {CAMPAIGN.id: CAMPAIGN}, settings, lambda: NOW
    )
    assert sender.send(ids).sent == count
    assert _wait(lambda: {m["status"] for m in sandbox.messages()} <= until)
    return ids


def _statuses(engine: Engine) -> list[tuple[str, int | None]]:
    with session_scope(engine) as s:
        return [(m.status, m.error_code) for m in s.scalars(select(Message).order_by(Message.id))]


def _policy(**changes: object) -> sweeper.SweepPolicy:
    return sweeper.SweepPolicy(**changes)  # type: ignore[arg-type]


def test_lost_callbacks_are_fetched_oldest_first_within_the_budget(
    engine: Engine, session: Session, settings: Settings, sandbox: SandboxServer
) -> None:
    _sent_rows(engine, session, settings, sandbox, 5)
    assert [s for s, _ in _statuses(engine)] == [MessageStatus.sent] * 5  # no callback came
    provider = TwilioProvider(settings)

    early = sweeper.sweep(engine, provider=provider, dispatch=None, now=NOW + dt.timedelta(minutes=5))
    assert early.statuses_fetched == 0  # callbacks may still come: not yet
    first = sweeper.sweep(
        engine, provider=provider, dispatch=None, now=LATER, policy=_policy(status_fetches=2)
    )
    assert (first.statuses_fetched, first.statuses_moved) == (2, 2)
    assert [s for s, _ in _statuses(engine)] == [MessageStatus.delivered] * 2 + [MessageStatus.sent] * 3
    second = sweeper.sweep(
        engine, provider=provider, dispatch=None, now=LATER, policy=_policy(status_fetches=10)
    )
    assert (second.statuses_fetched, second.statuses_moved) == (3, 3)
    with session_scope(engine) as s:
        rows = list(s.scalars(select(Message)))
    assert {r.status for r in rows} == {MessageStatus.delivered}
    assert all(r.delivered_at is not None and r.provider_status == "delivered" for r in rows)
    assert len(sandbox.messages()) == 5  # looked up, never sent again


def test_an_undelivered_status_is_recorded_with_its_code_and_marks_the_number(
    engine: Engine, session: Session, settings: Settings, sandbox: SandboxServer
) -> None:
    sandbox.configure(outcomes={"+16175550101": DeliveryOutcome(status="undelivered", error_code=30006)})
    _sent_rows(engine, session, settings, sandbox, 2)
    sweeper.sweep(engine, provider=TwilioProvider(settings), dispatch=None, now=LATER)
    assert _statuses(engine) == [(MessageStatus.delivered, None), (MessageStatus.undelivered, 30006)]
    with session_scope(engine) as s:
        assert reachability.unreachable_among(s, ["+16175550100", "+16175550101"]) == {"+16175550101"}


def test_a_message_the_provider_still_calls_sent_is_asked_again_only_later(
    engine: Engine, session: Session, settings: Settings, sandbox: SandboxServer
) -> None:
    sandbox.configure(delivered_after_s=3600)  # a carrier that sends no delivery receipt
    _sent_rows(engine, session, settings, sandbox, 1, until=frozenset({"sent"}))
    provider = TwilioProvider(settings)
    assert sweeper.sweep(engine, provider=provider, dispatch=None, now=LATER).statuses_fetched == 1
    soon = sweeper.sweep(engine, provider=provider, dispatch=None, now=LATER + dt.timedelta(minutes=1))
    assert soon.statuses_fetched == 0  # not every pass: it would starve the rows behind it
    again = sweeper.sweep(engine, provider=provider, dispatch=None, now=LATER + dt.timedelta(minutes=16))
    assert again.statuses_fetched == 1
    assert _statuses(engine) == [(MessageStatus.sent, None)]
    gave_up = sweeper.sweep(engine, provider=provider, dispatch=None, now=NOW + dt.timedelta(days=3))
    assert gave_up.statuses_fetched == 0


def test_the_sweepers_patience_comes_from_settings(
    engine: Engine, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    with session_scope(engine) as s:
        s.add(Message(step_id="answer:q", kind="answer", phone="+16175550101", body="b", status="queued",
                      send_at=NOW, queued_at=NOW))  # fmt: skip
    three_minutes = NOW + dt.timedelta(minutes=3)
    assert (
        sweeper.sweep(engine, provider=None, dispatch=None, now=three_minutes).redispatched == 0
    )  # default 5 min
    monkeypatch.setenv("OUTREACH_SWEEP_QUEUED_AFTER", "2m")
    monkeypatch.setenv("OUTREACH_SWEEP_SENDING_AFTER", "PT90S")
    policy = sweeper.SweepPolicy.from_settings(load_settings())
    assert (policy.queued_after, policy.sending_after) == (dt.timedelta(minutes=2), dt.timedelta(seconds=90))
    assert (
        sweeper.sweep(engine, provider=None, dispatch=None, now=three_minutes, policy=policy).redispatched
        == 1
    )

    monkeypatch.setenv("OUTREACH_SWEEP_SENDING_AFTER", "10")  # shorter than a claim's lease + timeout
    with pytest.raises(UserError, match="OUTREACH_SWEEP_SENDING_AFTER"):
        load_settings()
    monkeypatch.setenv("OUTREACH_SWEEP_SENDING_AFTER", "soon")
    with pytest.raises(UserError, match="OUTREACH_SWEEP_SENDING_AFTER"):
        load_settings()


def test_the_sending_patience_outlasts_a_claims_lease_and_the_http_timeout() -> None:
    """The rule behind the 40 s floor of OUTREACH_SWEEP_SENDING_AFTER (outreach/config.py)."""
    from outreach.providers.twilio import DEFAULT_TIMEOUT_S

    floor = Settings.model_fields["sweep_sending_after"].metadata[0].ge
    assert floor.total_seconds() >= batch.CLAIM_LEASE_S + DEFAULT_TIMEOUT_S + 10


def test_outreach_sweep_runs_one_pass_and_prints_its_figures(
    engine: Engine, twilio_env: SandboxServer
) -> None:
    sid = TwilioProvider(get_settings()).send(to="+16175550101", body="Hi").sid
    assert _wait(lambda: twilio_env.messages()[0]["status"] == "delivered")
    long_ago = utcnow() - dt.timedelta(minutes=20)
    with session_scope(engine) as s:
        s.add(Message(step_id="answer:s", kind="answer", phone="+16175550101", body="Hi", status="sent",
                      send_at=long_ago, sent_at=long_ago, updated_at=long_ago, provider_sid=sid))  # fmt: skip

    result = CliRunner().invoke(main, ["sweep", "--json", "--no-dispatch"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert (figures["statuses_fetched"], figures["statuses_moved"], figures["holds"]) == (1, 1, [])
    assert set(figures) >= {"found", "requeued", "failed", "redispatched", "late_callbacks", "probes"}
    assert _statuses(engine) == [(MessageStatus.delivered, None)]

    text = CliRunner().invoke(main, ["sweep", "--no-dispatch"])
    assert text.exit_code == 0, text.output
    assert text.output.startswith("found at the provider 0, queued again 0, failed 0, statuses fetched 0")


def test_outreach_sweep_with_the_broker_down_says_so_in_one_line(
    engine: Engine, twilio_env: SandboxServer
) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    long_ago = utcnow() - dt.timedelta(minutes=10)
    with session_scope(engine) as s:  # a queued row the broker lost: the sweep hands it over
        s.add(Message(step_id="answer:q", kind="answer", phone="+16175550101", body="b", status="queued",
                      send_at=long_ago, queued_at=long_ago))  # fmt: skip
    # In a process of its own: Celery keeps the first broker it connects to for the process.
    env = {k: v for k, v in os.environ.items() if k != "OUTREACH_BROKER_URL"}
    env |= {"OUTREACH_BROKER_URL": f"redis://127.0.0.1:{port}/0", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", "from outreach.apps.cli import main; main()", "sweep"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "OUTREACH_BROKER_URL" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def _wait(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
