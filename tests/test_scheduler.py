"""The scheduler pass: enrollment, planning in the patient's window, the frequency cap, enqueueing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from outreach.config import get_settings
from outreach.plan import scheduler
from outreach.store.db import session_scope
from outreach.store.models import Enrollment, Message, MessageStatus, PhoneConsent
from tests.factories import add_patient, campaign

# Monday 2026-11-23, 14:00 UTC = 09:00 in New York, 06:00 in Los Angeles.
NOW = dt.datetime(2026, 11, 23, 14, 0)


def _tick(engine: Engine, campaigns: dict, now: dt.datetime = NOW, sink: list[int] | None = None):
    def dispatch(ids: Sequence[int]) -> None:
        if sink is not None:
            sink.extend(ids)

    return scheduler.tick(engine, campaigns, settings=get_settings(), now=now, dispatch=dispatch)


def _messages(engine: Engine) -> list[Message]:
    with session_scope(engine) as s:
        return list(s.scalars(select(Message).order_by(Message.id)))


def test_enrolls_eligible_once_and_a_second_tick_enrolls_nobody(engine: Engine, session: Session) -> None:
    add_patient(session, "A1")
    add_patient(session, "A2", birth_date=dt.date(2000, 1, 1))  # 26: too young
    session.commit()
    c = campaign()
    first = _tick(engine, {c.id: c})
    second = _tick(engine, {c.id: c})
    assert first.enrolled == {c.id: 1}
    assert second.enrolled == {c.id: 0}
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Enrollment)) == 1


def test_plans_the_first_step_rendered_in_the_patients_language(engine: Engine, session: Session) -> None:
    add_patient(session, "EN", first_name="Ann")
    add_patient(session, "ES", first_name="Lucía", language="es", phone="(617) 555-0102")
    add_patient(session, "FR", first_name="Zoé", language="fr", phone="(617) 555-0103")
    session.commit()
    c = campaign()
    _tick(engine, {c.id: c})
    bodies = {m.phone[-2:]: m for m in _messages(engine)}
    assert bodies["01"].body.startswith("Hi Ann, Riverside Health here.")
    assert bodies["02"].body.startswith("Hola Lucía, le saluda Riverside Health.")
    assert bodies["03"].body.startswith("Hi Zoé,")  # no French text: the default language
    assert all(m.step_id == "invite" for m in bodies.values())
    assert bodies["02"].segments == 2  # 'í' forces UCS-2: 70 characters per segment


def test_send_time_is_the_patients_local_window(engine: Engine, session: Session) -> None:
    add_patient(session, "LA", phone="(415) 555-0101")  # Pacific: 06:00 local at NOW
    add_patient(session, "NY", phone="(212) 555-0101")  # Eastern: 09:00 local at NOW, window open
    session.commit()
    c = campaign()
    sink: list[int] = []
    result = _tick(engine, {c.id: c}, sink=sink)
    by_area = {m.phone[2:5]: m for m in _messages(engine)}
    assert by_area["415"].send_at == dt.datetime(2026, 11, 23, 17, 0)  # 09:00 PST
    assert by_area["415"].status == MessageStatus.planned
    assert by_area["212"].send_at == NOW
    assert by_area["212"].status == MessageStatus.queued
    assert result.queued == 1 and sink == [by_area["212"].id]
    later = _tick(engine, {c.id: c}, now=dt.datetime(2026, 11, 23, 17, 0), sink=sink)
    assert later.queued == 1 and sink == [by_area["212"].id, by_area["415"].id]


def test_hard_hours_clip_a_wide_campaign_window_and_florida_stops_at_eight(
    engine: Engine, session: Session
) -> None:
    add_patient(session, "FL", phone="(305) 555-0101")
    add_patient(session, "MA", phone="(617) 555-0101")
    session.commit()
    c = campaign(
        send_window={
            "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
            "start": "06:00",
            "end": "23:00",
        }
    )
    evening = dt.datetime(2026, 11, 24, 1, 30)  # Monday 20:30 in New York
    _tick(engine, {c.id: c}, now=evening)
    by_area = {m.phone[2:5]: m for m in _messages(engine)}
    assert by_area["617"].send_at == evening  # before 21:00: open
    assert by_area["305"].send_at == dt.datetime(2026, 11, 24, 13, 0)  # Florida: next day 08:00


def test_frequency_cap_spreads_three_campaigns_over_three_days(engine: Engine, session: Session) -> None:
    add_patient(session, "P1")
    session.commit()
    campaigns = {f"c{i}": campaign(id=f"c{i}", name=f"C{i}") for i in range(3)}
    _tick(engine, campaigns)
    days = sorted(m.send_at.date() for m in _messages(engine))
    assert days == [dt.date(2026, 11, 23), dt.date(2026, 11, 24), dt.date(2026, 11, 25)]


def test_weekly_cap_holds_across_campaigns(engine: Engine, session: Session) -> None:
    add_patient(session, "P1")
    session.commit()
    campaigns = {f"c{i}": campaign(id=f"c{i}", name=f"C{i}") for i in range(5)}
    _tick(engine, campaigns)
    times = sorted(m.send_at for m in _messages(engine))
    assert len(times) == 5
    for start in times:
        assert sum(1 for t in times if start <= t < start + dt.timedelta(days=7)) <= 3
    assert len({t.date() for t in times}) == 5


def test_reminder_is_planned_after_its_offset_and_canceled_when_the_patient_replied(
    engine: Engine, session: Session
) -> None:
    add_patient(session, "R1", phone="(617) 555-0101")
    add_patient(session, "R2", phone="(617) 555-0102")
    session.commit()
    c = campaign()
    _tick(engine, {c.id: c})
    _tick(engine, {c.id: c}, now=NOW + dt.timedelta(days=6))
    assert {m.step_id for m in _messages(engine)} == {"invite"}
    with session_scope(engine) as s:
        s.execute(
            update(Enrollment)
            .where(Enrollment.patient_id == select(Enrollment.patient_id).limit(1).scalar_subquery())
            .values(replied_at=NOW + dt.timedelta(days=1))
        )
    _tick(engine, {c.id: c}, now=NOW + dt.timedelta(days=7))
    reminders = [m for m in _messages(engine) if m.step_id == "reminder"]
    assert sorted(m.status for m in reminders) == [MessageStatus.canceled, MessageStatus.queued]
    assert [m.cancel_reason for m in reminders if m.status == MessageStatus.canceled] == ["replied"]


def test_opted_out_number_is_not_enrolled_and_is_canceled_for_later_steps(
    engine: Engine, session: Session
) -> None:
    add_patient(session, "O1")
    session.commit()
    c = campaign()
    _tick(engine, {c.id: c})
    with session_scope(engine) as s:
        s.add(PhoneConsent(phone="+16175550101", opted_out_at=NOW, opted_out_by="STOP"))
    _tick(engine, {c.id: c}, now=NOW + dt.timedelta(days=7))
    reminder = [m for m in _messages(engine) if m.step_id == "reminder"]
    assert [(m.status, m.cancel_reason) for m in reminder] == [(MessageStatus.canceled, "opted out")]


def test_ended_campaign_cancels_pending_rows(engine: Engine, session: Session) -> None:
    add_patient(session, "E1", phone="(415) 555-0101")  # planned for later today
    session.commit()
    c = campaign()
    _tick(engine, {c.id: c})
    ended = campaign(active={"from": dt.date(2026, 1, 1), "until": dt.date(2026, 11, 22)})
    result = _tick(engine, {c.id: ended})
    assert result.canceled == 1
    assert [(m.status, m.cancel_reason) for m in _messages(engine)] == [
        (MessageStatus.canceled, "campaign ended")
    ]


def test_re_enrollment_waits_for_the_cool_down(engine: Engine, session: Session) -> None:
    add_patient(session, "C1")
    session.commit()
    c = campaign(
        re_enroll_after="30d", steps=[{"id": "invite", "after": "0d", "text": {"en": "Hi {first_name}"}}]
    )
    _tick(engine, {c.id: c})
    assert _tick(engine, {c.id: c}, now=NOW + dt.timedelta(days=29)).enrolled == {c.id: 0}
    assert _tick(engine, {c.id: c}, now=NOW + dt.timedelta(days=30)).enrolled == {c.id: 1}
    with session_scope(engine) as s:
        assert sorted(s.scalars(select(Enrollment.cycle))) == [1, 2]
