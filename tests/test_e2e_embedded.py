"""The embedded loop, as the demo runs it: the shipped sample roster and campaigns, a real Celery
worker in this process on the in-memory broker, the twilio client, the sandbox, and a simulated
clock. Every text the sandbox receives must be the right step, in the right words, for a patient
an independent reading of the campaign rules says is eligible; and nobody else gets one."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from celery.contrib.testing.worker import start_worker
from sqlalchemy import Engine, select

from outreach.campaigns import CampaignFile, Step, add_months, load_campaigns, render
from outreach.config import get_settings
from outreach.ingest import roster
from outreach.plan import scheduler
from outreach.runtime import get_runtime, reset_runtime
from outreach.sandbox.server import SandboxServer
from outreach.sandbox.state import SandboxConfig
from outreach.store.db import session_scope
from outreach.store.models import Enrollment, Message, MessageStatus, Patient, PatientEvent
from workers import tasks
from workers.app import app

ROOT = Path(__file__).resolve().parent.parent
START = dt.datetime(2026, 11, 23, 12, 0)  # Monday, 07:00 in New York
NEW_YORK = ZoneInfo("America/New_York")


@pytest.fixture
def embedded(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxServer]:
    with SandboxServer(
        "AC" + "3" * 32, "embedded", config=SandboxConfig(sent_after_s=0, delivered_after_s=0)
    ) as sb:
        for key, value in {
            "TWILIO_ACCOUNT_SID": sb.account_sid,
            "TWILIO_AUTH_TOKEN": sb.auth_token,
            "TWILIO_FROM_NUMBER": "+16175550000",
            "OUTREACH_TWILIO_API_URL": sb.url,
            "OUTREACH_BROKER_URL": "memory://",
            "OUTREACH_SEND_RATE": "1000",
        }.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        reset_runtime()
        app.conf.broker_url = "memory://"
        with start_worker(app, pool="threads", concurrency=4, perform_ping_check=False, shutdown_timeout=10):
            yield sb
        reset_runtime()


def _age(birth: dt.date, on: dt.date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def oracle(
    campaign: CampaignFile, patients: list[Patient], events: list[PatientEvent], on: dt.date
) -> set[str]:
    """The campaign's audience read straight from DESIGN.md §5, patient by patient."""
    chosen = set()
    audience = campaign.audience
    for p in patients:
        if not (audience.age.min <= _age(p.birth_date, on) <= audience.age.max):
            continue
        if audience.sex != "any" and p.sex != audience.sex:
            continue
        closed = False
        for gap in audience.care_gap:
            if gap.within is not None:
                months = gap.within.amount * {"y": 12, "m": 1}.get(gap.within.unit, 0)
                days = gap.within.amount * {"w": 7, "d": 1}.get(gap.within.unit, 0)
                after = add_months(on, -months) - dt.timedelta(days=days)  # counts if after < date <= on
            else:
                assert gap.since is not None
                month, day = map(int, gap.since.split("-"))
                start = dt.date(on.year, month, day)
                after = (start if start <= on else dt.date(on.year - 1, month, day)) - dt.timedelta(days=1)
            closed |= any(e.mrn == p.mrn and e.kind == gap.event and after < e.date <= on for e in events)
        if not closed and not _excluded(campaign, p, events, on):
            chosen.add(p.mrn)
    return chosen


def _excluded(campaign: CampaignFile, p: Patient, events: list[PatientEvent], on: dt.date) -> bool:
    """A denominator exclusion on record: ever, or inside its look-back (years or days only here)."""
    for exclusion in campaign.audience.exclude:
        after = dt.date.min
        if exclusion.within is not None:
            amount, unit = exclusion.within.amount, exclusion.within.unit
            after = add_months(on, -12 * amount) if unit == "y" else on - dt.timedelta(days=amount)
        if any(e.mrn == p.mrn and e.kind == exclusion.event and after < e.date <= on for e in events):
            return True
    return False


def _md5_bucket(key: str) -> int:
    return int(hashlib.md5(key.encode()).hexdigest()[:8], 16) % 10_000


def _holdout(campaign: CampaignFile, patient_id: int) -> bool:
    """The control arm as DESIGN.md §5 and outreach/plan/holdout.py describe it, first cycle."""
    return _md5_bucket(f"holdout|{campaign.id}|1|{patient_id}") < campaign.holdout * 100


def _wording(enrollment_id: int, step: Step) -> dict[str, str]:
    if step.text is not None:
        return step.text
    point = _md5_bucket(f"variant|{enrollment_id}|{step.id}") / 10_000 * sum(v.weight for v in step.variants)
    for variant in step.variants:
        if point < variant.weight:
            return variant.text
        point -= variant.weight
    raise AssertionError("no variant")


def _settle(engine: Engine) -> bool:
    with session_scope(engine) as s:
        return not s.scalars(
            select(Message.id).where(Message.status.in_((MessageStatus.queued, MessageStatus.sending)))
        ).first()


def test_shipped_campaigns_deliver_the_right_text_to_the_right_patients(
    engine: Engine, embedded: SandboxServer
) -> None:
    from tests.workers_harness import wait_until

    settings = get_settings()
    samples = ROOT / "samples"
    assert (
        roster.import_patients(engine, samples / "roster.csv", settings=settings, today=START.date()).rejected
        == 0
    )
    assert (
        roster.import_events(engine, samples / "events.csv", settings=settings, today=START.date()).rejected
        == 0
    )
    campaigns = load_campaigns(ROOT / "campaigns", settings=settings)
    clock = [START]
    get_runtime().clock = lambda: clock[0]
    for hours in range(0, 4 * 24, 2):  # four simulated days, a pass every two hours
        clock[0] = START + dt.timedelta(hours=hours)
        scheduler.tick(engine, campaigns, settings=settings, now=clock[0], dispatch=tasks.dispatch)
        assert wait_until(lambda: _settle(engine), timeout=30)

    with session_scope(engine) as s:
        patients = list(s.scalars(select(Patient)))
        events = list(s.scalars(select(PatientEvent)))
        rows = s.execute(
            select(Message, Enrollment.campaign_id, Patient)
            .join(Enrollment, Enrollment.id == Message.enrollment_id)
            .join(Patient, Patient.id == Enrollment.patient_id)
        ).all()
    accepted = {m["sid"]: m for m in embedded.messages()}
    assert accepted, "nothing was sent"
    by_sid = {message.provider_sid: (message, campaign_id, patient) for message, campaign_id, patient in rows}
    assert set(accepted) <= set(by_sid), "the sandbox received a text the outbox does not know"

    on = START.replace(tzinfo=dt.UTC).astimezone(NEW_YORK).date()
    expected = {cid: oracle(c, patients, events, on) for cid, c in campaigns.items()}
    assert all(expected.values()), "the sample roster should give every shipped campaign an audience"
    # The sample's exclusions matter: without them the oracle would text more patients.
    for cid in ("colorectal-screening", "breast-screening", "cervical-screening"):
        loose = campaigns[cid].audience.model_copy(update={"exclude": []})
        assert (
            oracle(campaigns[cid].model_copy(update={"audience": loose}), patients, events, on)
            > expected[cid]
        )
    with session_scope(engine) as s:
        arms = {(e.campaign_id, e.patient_id): e.arm for e in s.scalars(select(Enrollment))}
    by_mrn = {p.mrn: p for p in patients}
    expected_arms = {
        (cid, by_mrn[mrn].id): "holdout" if _holdout(campaigns[cid], by_mrn[mrn].id) else "treated"
        for cid, mrns in expected.items()
        for mrn in mrns
    }
    assert arms == expected_arms
    assert "holdout" in arms.values(), "the sample roster should put someone in colorectal's holdout"
    texted = {(campaign_id, patient.mrn) for _, campaign_id, patient in rows}
    assert texted == {
        (cid, mrn)
        for cid, mrns in expected.items()
        for mrn in mrns
        if not _holdout(campaigns[cid], by_mrn[mrn].id)
    }
    # Holdouts are never texted, checked at the sandbox: no text a holdout's number received is any
    # wording of that campaign for that patient (the number may get other campaigns' texts).
    holdouts = [
        (campaigns[cid], by_mrn[mrn])
        for cid, mrns in expected.items()
        for mrn in mrns
        if _holdout(campaigns[cid], by_mrn[mrn].id)
    ]
    assert holdouts
    received = Counter((m["to"], m["body"]) for m in embedded.messages())
    for campaign, patient in holdouts:
        for step in campaign.steps:
            for _, _, texts in step.wordings():
                _, template = campaign.text_for(texts, patient.language)
                body = render(template, first_name=patient.first_name, settings=settings, link=campaign.link)
                assert received[(patient.phone, body)] == 0

    for sid, sent in accepted.items():
        message, campaign_id, patient = by_sid[sid]
        campaign = campaigns[campaign_id]
        step = next(step for step in campaign.steps if step.id == message.step_id)
        _, template = campaign.text_for(_wording(message.enrollment_id, step), patient.language)
        # No OUTREACH_PUBLIC_URL here: {link} is the campaign's page itself, untracked.
        expected_body = render(template, first_name=patient.first_name, settings=settings, link=campaign.link)
        assert sent["body"] == expected_body
        assert sent["to"] == patient.phone
    # The promises, on the outbox's own clock: once per step, 1 a day per number, within the window.
    assert len({(m.enrollment_id, m.step_id) for m, _, _ in rows}) == len(rows)
    per_day = Counter(
        (m.phone, m.sent_at.replace(tzinfo=dt.UTC).astimezone(NEW_YORK).date())
        for m, _, _ in rows
        if m.sent_at is not None
    )
    assert max(per_day.values()) == 1
    assert all(
        8 <= m.sent_at.replace(tzinfo=dt.UTC).astimezone(NEW_YORK).hour < 21
        for m, _, p in rows
        if m.sent_at is not None and p.timezone is None and p.phone_zones == "America/New_York"
    )
