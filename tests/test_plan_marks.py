"""Issue 11: a pass with nothing new skips the whole-roster searches (outreach/plan/marks.py),
and that skip never costs an enrollment. Each test plans once, changes one input that makes a
patient eligible (a new roster row, an updated row, a birthday, an event leaving its look-back,
an opt-in) and checks the next pass enrolls that patient and plans the first step."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from outreach.campaigns import CampaignFile
from outreach.config import get_settings
from outreach.plan import scheduler
from outreach.plan.marks import Marks
from outreach.plan.shards import EVERY_BUCKET
from outreach.store.db import session_scope
from outreach.store.models import Enrollment, Message, Patient, PhoneConsent
from tests.factories import add_event, add_patient, campaign

NOW = dt.datetime(2026, 11, 23, 14, 0)  # Monday, 09:00 in New York
DAY = dt.date(2026, 11, 23)


def _tick(engine: Engine, c: CampaignFile, now: dt.datetime = NOW) -> scheduler.TickResult:
    return scheduler.tick(engine, {c.id: c}, settings=get_settings(), now=now)


def _enrolled(engine: Engine, mrn: str) -> int:
    with session_scope(engine) as s:
        query = select(func.count()).select_from(Enrollment).join(Patient).where(Patient.mrn == mrn)
        return s.scalar(query) or 0


def _planned(engine: Engine, mrn: str) -> list[str]:
    with session_scope(engine) as s:
        query = select(Message.step_id).join(Enrollment).join(Patient).where(Patient.mrn == mrn)
        return list(s.scalars(query))


def _marks(engine: Engine, c: CampaignFile, on: dt.date = DAY) -> Marks:
    with engine.connect() as conn:
        return Marks.read(conn, [c], EVERY_BUCKET, on)


def test_a_quiet_pass_skips_both_searches_and_a_new_day_does_not(engine: Engine, session: Session) -> None:
    add_patient(session, "A")
    session.commit()
    c = campaign()
    assert _marks(engine, c).must_enroll(c.id) and _marks(engine, c).must_plan(c.id)
    _tick(engine, c)
    assert not _marks(engine, c).must_enroll(c.id)
    assert not _marks(engine, c).must_plan(c.id)
    tomorrow = _marks(engine, c, DAY + dt.timedelta(days=1))
    assert tomorrow.must_enroll(c.id) and tomorrow.must_plan(c.id)
    edited = campaign(name="Renamed")  # the file changed: search again
    assert _marks(engine, edited).must_enroll(edited.id) and _marks(engine, edited).must_plan(edited.id)


def test_a_new_roster_row_the_same_day_is_enrolled(engine: Engine, session: Session) -> None:
    add_patient(session, "A", phone="(617) 555-0101")
    session.commit()
    c = campaign()
    assert _tick(engine, c).enrolled == {c.id: 1}
    assert _tick(engine, c).enrolled == {c.id: 0}
    with session_scope(engine) as s:
        add_patient(s, "NEW", phone="(617) 555-0102")
    assert _tick(engine, c, NOW + dt.timedelta(minutes=1)).enrolled == {c.id: 1}
    assert _planned(engine, "NEW") == ["invite"]


def test_an_updated_roster_row_the_same_day_is_enrolled(engine: Engine, session: Session) -> None:
    """A birth date corrected by a re-import: no new row, no new id, only the row's update."""
    add_patient(session, "YOUNG", birth_date=dt.date(2000, 1, 1))  # 26: too young
    session.commit()
    c = campaign()
    assert _tick(engine, c).enrolled == {c.id: 0}
    with session_scope(engine) as s:
        s.execute(update(Patient).where(Patient.mrn == "YOUNG").values(birth_date=dt.date(1970, 1, 1)))
    assert _tick(engine, c, NOW + dt.timedelta(minutes=1)).enrolled == {c.id: 1}
    assert _planned(engine, "YOUNG") == ["invite"]


def test_a_birthday_the_next_day_is_enrolled(engine: Engine, session: Session) -> None:
    add_patient(session, "B", birth_date=dt.date(1986, 11, 24))  # 40 on 2026-11-24
    session.commit()
    c = campaign()  # ages 40-75
    assert _tick(engine, c).enrolled == {c.id: 0}
    assert _tick(engine, c, NOW + dt.timedelta(hours=2)).enrolled == {c.id: 0}
    assert _tick(engine, c, NOW + dt.timedelta(days=1)).enrolled == {c.id: 1}
    assert _planned(engine, "B") == ["invite"]


def test_an_event_leaving_its_look_back_enrolls_the_patient(engine: Engine, session: Session) -> None:
    add_patient(session, "S")
    add_event(session, "S", "fit", dt.date(2025, 11, 24))  # inside 1y on 2026-11-23, not on 11-24
    session.commit()
    c = campaign(audience={"age": {"min": 40, "max": 75}, "care_gap": [{"event": "fit", "within": "1y"}]})
    assert _tick(engine, c).enrolled == {c.id: 0}
    assert _tick(engine, c, NOW + dt.timedelta(hours=1)).enrolled == {c.id: 0}
    assert _tick(engine, c, NOW + dt.timedelta(days=1)).enrolled == {c.id: 1}
    assert _planned(engine, "S") == ["invite"]


def test_an_opt_in_the_same_day_is_enrolled(engine: Engine, session: Session) -> None:
    add_patient(session, "O")
    session.add(PhoneConsent(phone="+16175550101", opted_out_at=NOW - dt.timedelta(days=3)))
    session.commit()
    c = campaign()
    assert _tick(engine, c).enrolled == {c.id: 0}
    with session_scope(engine) as s:
        s.execute(
            update(PhoneConsent)
            .where(PhoneConsent.phone == "+16175550101")
            .values(opted_in_at=NOW, updated_at=NOW)
        )
    assert _tick(engine, c, NOW + dt.timedelta(minutes=1)).enrolled == {c.id: 1}


def test_a_due_reminder_is_planned_the_day_it_comes_due(engine: Engine, session: Session) -> None:
    add_patient(session, "R")
    session.commit()
    c = campaign()
    _tick(engine, c)
    reminder = c.steps[1].after.after(DAY)
    _tick(engine, c, dt.datetime.combine(reminder - dt.timedelta(days=1), NOW.time()))
    assert _planned(engine, "R") == ["invite"]
    _tick(engine, c, dt.datetime.combine(reminder, NOW.time()))
    assert sorted(_planned(engine, "R")) == ["invite", "reminder"]
