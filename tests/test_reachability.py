"""Numbers that cannot receive texts are remembered per number (issue 10): set from the create
error (21211, 21614), a status callback or the sweeper's look-up (30005, 30006); left out of
planning for every campaign; re-checked at claim; cleared only by a different number.

Real parts: the sandbox through the official client, the scheduler, the roster importer and the
database.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from outreach.campaigns import CampaignFile
from outreach.config import Settings, get_settings
from outreach.ingest.roster import import_patients
from outreach.listen import status
from outreach.plan import scheduler
from outreach.providers.twilio import TwilioProvider
from outreach.sandbox.server import SandboxServer
from outreach.send import batch, reachability
from outreach.send.ratelimit import NoLimit
from outreach.store.db import session_scope
from outreach.store.models import Message, MessageStatus, Patient
from tests.factories import add_patient, campaign

NOW = dt.datetime(2026, 11, 23, 14, 0)  # Monday 09:00 in New York
FIRST = campaign(id="first-campaign")
SECOND = campaign(id="second-campaign")
LANDLINE = "+16175550101"
MOBILE = "+16175550102"


@pytest.fixture
def settings(twilio_env: SandboxServer, engine: Engine) -> Settings:
    """The shared sandbox (tests/sandbox_fixtures.py), answering at once."""
    twilio_env.configure(sent_after_s=0, delivered_after_s=0)
    return get_settings()


def _tick(engine: Engine, campaigns: list[CampaignFile], now: dt.datetime = NOW) -> list[int]:
    scheduler.tick(engine, {c.id: c for c in campaigns}, settings=get_settings(), now=now)
    with session_scope(engine) as s:
        return list(s.scalars(select(Message.id).where(Message.status == MessageStatus.queued)))


def _send(
    engine: Engine, settings: Settings, ids: list[int], campaigns: list[CampaignFile]
) -> batch.BatchResult:
    provider = TwilioProvider(settings, timeout=5)
    files = {c.id: c for c in campaigns}
    return batch.Sender(engine, provider, NoLimit(), files, settings, lambda: NOW).send(ids)


def _invites(engine: Engine) -> dict[str, list[tuple[str, str]]]:
    """{phone: [(status, cancel reason or "")]} of invites, for every campaign."""
    found: dict[str, list[tuple[str, str]]] = {}
    with session_scope(engine) as s:
        for row in s.scalars(select(Message).where(Message.step_id == "invite").order_by(Message.id)):
            found.setdefault(row.phone, []).append((row.status, row.cancel_reason or ""))
    return found


def _two_patients(session: Session) -> None:
    add_patient(session, "L1", phone="(617) 555-0101")  # a landline on the roster
    add_patient(session, "M1", phone="(617) 555-0102")
    session.commit()


def test_after_21614_on_one_campaign_a_second_campaign_does_not_plan_the_number(
    engine: Engine, session: Session, settings: Settings, sandbox: SandboxServer
) -> None:
    _two_patients(session)
    sandbox.configure(reject={LANDLINE: 21614})
    ids = _tick(engine, [FIRST])
    assert (_send(engine, settings, ids, [FIRST]).failed, len(sandbox.messages())) == (1, 1)
    with session_scope(engine) as s:
        assert reachability.unreachable_among(s, [LANDLINE, MOBILE]) == {LANDLINE}

    sandbox.configure(reject={})  # even if Twilio would now take it: the mark decides, not luck
    ids = _tick(engine, [FIRST, SECOND], NOW + dt.timedelta(days=1))
    assert _send(engine, settings, ids, [FIRST, SECOND]).sent == 1
    assert _invites(engine) == {
        LANDLINE: [(MessageStatus.failed, "")],  # the first campaign's refused invite, nothing more
        MOBILE: [(MessageStatus.sent, ""), (MessageStatus.sent, "")],
    }
    assert [m["to"] for m in sandbox.messages()] == [MOBILE, MOBILE]


def test_a_landline_callback_marks_the_number_and_the_claim_cancels_what_was_planned_before(
    engine: Engine, session: Session, settings: Settings, sandbox: SandboxServer
) -> None:
    _two_patients(session)
    ids = _tick(engine, [FIRST])  # the landline's invite planned and queued
    with session_scope(engine) as s:  # an earlier text's delivery receipt: 30006, landline
        s.add(
            Message(
                step_id="answer:x",
                kind="answer",
                phone=LANDLINE,
                body="x",
                status=MessageStatus.sent,
                send_at=NOW,
                provider_sid="SM" + "6" * 32,
            )
        )
    with session_scope(engine) as s:
        assert status.apply_status(s, "SM" + "6" * 32, "undelivered", 30006, NOW) == status.Outcome.applied
        assert reachability.unreachable_among(s, [LANDLINE]) == {LANDLINE}

    result = _send(engine, settings, ids, [FIRST])
    assert (result.sent, result.canceled) == (1, 1)
    assert _invites(engine)[LANDLINE] == [(MessageStatus.canceled, reachability.CANCEL_REASON)]
    assert [m["to"] for m in sandbox.messages()] == [MOBILE]


def test_the_same_number_imported_again_keeps_its_mark_a_new_number_is_texted(
    engine: Engine, session: Session, settings: Settings, sandbox: SandboxServer, tmp_path: Path
) -> None:
    roster = tmp_path / "roster.csv"
    header = "mrn,first_name,last_name,birth_date,sex,phone\n"
    roster.write_text(header + "L1,Lee,Test,1970-05-01,F,(617) 555-0101\n")
    import_patients(engine, roster, settings=get_settings(), today=NOW.date())
    with session_scope(engine) as s:
        reachability.record(s, LANDLINE, code=30006, at=NOW)

    import_patients(engine, roster, settings=get_settings(), today=NOW.date())  # tonight's export
    assert _tick(engine, [FIRST]) == []

    roster.write_text(header + "L1,Lee,Test,1970-05-01,F,(617) 555-0102\n")  # the patient's mobile
    import_patients(engine, roster, settings=get_settings(), today=NOW.date())
    ids = _tick(engine, [SECOND])
    assert _send(engine, settings, ids, [SECOND]).sent == 1
    assert [m["to"] for m in sandbox.messages()] == [MOBILE]
    with session_scope(engine) as s:
        assert s.scalar(select(Patient.phone)) == MOBILE
        assert reachability.unreachable_among(s, [LANDLINE, MOBILE]) == {LANDLINE}  # still true of it


def test_only_the_codes_about_the_number_mark_it(session: Session) -> None:
    for code in (21211, 21614, 30005, 30006):
        assert reachability.record(session, f"+1617555{code % 10000:04d}", code=code, at=NOW)
    for code in (None, 30003, 30007, 21610, 21606):  # off or out of coverage, filtered, STOP, sender
        assert not reachability.record(session, "+16175559999", code=code, at=NOW)
    assert reachability.unreachable_among(session, ["+16175559999"]) == set()
