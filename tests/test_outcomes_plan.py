"""Issue #13 on the planning side: denominator exclusions, closed care gaps, the holdout arm and
text variants, each checked against an independent reading of DESIGN.md §5/§11 (plain Python
and hashlib here, never the code under test's helpers)."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from outreach.campaigns import CampaignFile, render
from outreach.config import get_settings
from outreach.plan import scheduler
from outreach.plan.eligibility import count_eligible, eligible_patients
from outreach.store.db import session_scope
from outreach.store.models import Enrollment, Message, MessageStatus, Patient
from tests.factories import add_event, add_patient, campaign

D = dt.date(2026, 3, 2)  # a Monday; 12:00 UTC is 07:00 in New York, before the 09:00 window
MORNING = dt.datetime(2026, 3, 2, 12, 0)
GAP = [{"event": "fit", "within": "1y"}]


def _day(days: int, hour: int = 12) -> dt.datetime:
    return MORNING + dt.timedelta(days=days, hours=hour - 12)


def _tick(engine: Engine, c: CampaignFile, now: dt.datetime) -> scheduler.TickResult:
    return scheduler.tick(engine, {c.id: c}, settings=get_settings(), now=now)


def _md5_bucket(key: str) -> int:
    return int(hashlib.md5(key.encode()).hexdigest()[:8], 16) % 10_000


def _phone(i: int) -> str:
    return f"+1617{2000000 + i:07d}"


def _rows(engine: Engine, *columns: Any) -> list[Any]:
    with session_scope(engine) as s:
        return list(s.execute(select(*columns)).all())


# --- exclusions --------------------------------------------------------------------------------


def test_an_exclusion_on_record_ever_or_inside_its_look_back_keeps_a_patient_out(session: Session) -> None:
    c = campaign(
        audience={
            "age": {"min": 40, "max": 75},
            "care_gap": GAP,
            "exclude": [{"event": "total_colectomy"}, {"event": "hospice", "within": "1y"}],
        }
    )
    for mrn, phone in (("ever", 1), ("old-hospice", 2), ("recent-hospice", 3), ("none", 4), ("later", 5)):
        add_patient(session, mrn, phone=_phone(phone))
    add_event(session, "ever", "total_colectomy", dt.date(2001, 5, 1))
    add_event(session, "old-hospice", "hospice", D - dt.timedelta(days=400))
    add_event(session, "recent-hospice", "hospice", D - dt.timedelta(days=30))
    add_event(session, "later", "total_colectomy", D + dt.timedelta(days=1))  # after the day: not yet

    mrns = {row.mrn for row in session.execute(eligible_patients(c, D))}

    assert mrns == {"old-hospice", "none", "later"}
    assert count_eligible(session, c, D) == 3


def test_an_enrolled_patient_who_becomes_excluded_is_never_texted(engine: Engine) -> None:
    c = campaign(audience={"age": {"min": 40, "max": 75}, "care_gap": GAP, "exclude": [{"event": "hospice"}]})
    with session_scope(engine) as s:
        add_patient(s, "a", phone=_phone(1))
        add_patient(s, "b", phone=_phone(2))
    assert _tick(engine, c, MORNING).enrolled == {c.id: 2}
    with session_scope(engine) as s:
        add_event(s, "a", "hospice", D)

    result = _tick(engine, c, _day(0, 13))

    assert (result.excluded, result.canceled) == (1, 1)
    with session_scope(engine) as s:
        found = s.execute(
            select(Patient.mrn, Enrollment.end_reason, Message.status, Message.cancel_reason)
            .join(Enrollment, Enrollment.patient_id == Patient.id)
            .join(Message, Message.enrollment_id == Enrollment.id)
        ).all()
    by_mrn = {mrn: (reason, status, why) for mrn, reason, status, why in found}
    assert by_mrn == {"a": ("excluded", "canceled", "excluded"), "b": (None, "planned", None)}
    for days in (0, 7, 8):  # the rest of the campaign: nothing more is planned for "a"
        _tick(engine, c, _day(days, 15))
    with session_scope(engine) as s:
        for_a = s.scalars(
            select(Message.status).join(Enrollment).join(Patient).where(Patient.mrn == "a")
        ).all()
    assert for_a == ["canceled"]


# --- closed care gaps --------------------------------------------------------------------------


def _deliver(engine: Engine, mrn: str, at: dt.datetime, status: str = MessageStatus.delivered) -> None:
    with session_scope(engine) as s:
        enrollment = s.scalar(select(Enrollment.id).join(Patient).where(Patient.mrn == mrn))
        s.execute(
            update(Message)
            .where(Message.enrollment_id == enrollment, Message.step_id == "invite")
            .values(status=status, sent_at=at, delivered_at=at, provider_sid=f"SM{mrn:0>32}")
        )


def test_a_gap_closed_inside_the_attribution_window_ends_the_enrollment_and_credits_the_last_text(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OUTREACH_ATTRIBUTION_DAYS", "5")
    get_settings.cache_clear()
    c = campaign(audience={"age": {"min": 40, "max": 75}, "care_gap": GAP})
    mrns = ["inside", "outside", "before", "open", "unreached"]
    with session_scope(engine) as s:
        for i, mrn in enumerate(mrns):
            add_patient(s, mrn, phone=_phone(i))
    _tick(engine, c, MORNING)
    for mrn in mrns:
        _deliver(engine, mrn, _day(0, 14), MessageStatus.failed if mrn == "unreached" else "delivered")
    _tick(engine, c, _day(8))  # reminders planned for 09:00 local
    with session_scope(engine) as s:
        add_event(s, "inside", "fit", D + dt.timedelta(days=3))
        add_event(s, "outside", "fit", D + dt.timedelta(days=6))  # the window is days 0-4
        add_event(s, "before", "fit", D - dt.timedelta(days=1))
        add_event(s, "unreached", "fit", D + dt.timedelta(days=4))

    result = _tick(engine, c, _day(8, 13))

    assert result.gap_closed == 2
    with session_scope(engine) as s:
        rows = s.execute(
            select(Patient.mrn, Enrollment).join(Enrollment, Enrollment.patient_id == Patient.id)
        ).all()
        ended = {mrn: (e.end_reason, e.closed_on, e.credited_message_id) for mrn, e in rows}
        invite = {
            mrn: s.scalar(
                select(Message.id).where(Message.enrollment_id == e.id, Message.step_id == "invite")
            )
            for mrn, e in rows
        }
        reminders = dict(
            s.execute(
                select(Patient.mrn, Message.cancel_reason)
                .join(Enrollment, Enrollment.patient_id == Patient.id)
                .join(Message, Message.enrollment_id == Enrollment.id)
                .where(Message.step_id == "reminder")
            ).all()
        )
    assert ended["inside"] == ("gap_closed", D + dt.timedelta(days=3), invite["inside"])
    assert ended["unreached"] == ("gap_closed", D + dt.timedelta(days=4), None)  # no text reached them
    assert {mrn: ended[mrn][0] for mrn in ("outside", "before", "open")} == dict.fromkeys(
        ("outside", "before", "open")
    )
    assert reminders["inside"] == "gap closed"
    assert reminders["open"] is None


# --- holdout -----------------------------------------------------------------------------------


def test_the_holdout_is_a_reproducible_random_share_never_texted_and_followed_for_closure(
    engine: Engine,
) -> None:
    c = campaign(audience={"age": {"min": 40, "max": 75}, "care_gap": GAP}, holdout="25%")
    n = 400
    with session_scope(engine) as s:
        for i in range(n):
            add_patient(s, f"p{i}", phone=_phone(i))
    _tick(engine, c, MORNING)

    enrollments = _rows(engine, Enrollment.id, Enrollment.patient_id, Enrollment.arm)
    expected = {
        pid: "holdout" if _md5_bucket(f"holdout|{c.id}|1|{pid}") < 2500 else "treated"
        for _, pid, _ in enrollments
    }
    assert {pid: arm for _, pid, arm in enrollments} == expected
    held = sum(arm == "holdout" for arm in expected.values())
    assert abs(held - n * 0.25) < 4 * (n * 0.25 * 0.75) ** 0.5  # four standard deviations
    texted = {enrollment for (enrollment,) in _rows(engine, Message.enrollment_id)}
    assert texted == {eid for eid, pid, _ in enrollments if expected[pid] == "treated"}

    control = next(pid for pid, arm in expected.items() if arm == "holdout")
    with session_scope(engine) as s:
        mrn = s.get_one(Patient, control).mrn
        add_event(s, mrn, "fit", D + dt.timedelta(days=2))
    assert _tick(engine, c, _day(3)).gap_closed == 1
    with session_scope(engine) as s:
        closed = s.execute(select(Enrollment).where(Enrollment.end_reason == "gap_closed")).scalar_one()
        assert (closed.patient_id, closed.arm, closed.credited_message_id) == (control, "holdout", None)
    for days in (7, 8, 21):  # the holdout stays untexted through every later step
        _tick(engine, c, _day(days, 15))
    texted_later = {enrollment for (enrollment,) in _rows(engine, Message.enrollment_id)}
    assert texted_later == texted


# --- variants ----------------------------------------------------------------------------------


def test_variants_split_by_weight_reproducibly_and_each_row_carries_its_wording(engine: Engine) -> None:
    a = {"en": "Hi {first_name}, {clinic_name}: wording A. Reply STOP to opt out."}
    b = {"en": "{first_name}, {clinic_name} here, wording B. Reply STOP to opt out."}
    invite = {
        "id": "invite",
        "after": "0d",
        "variants": [{"id": "a", "weight": 70, "text": a}, {"id": "b", "weight": 30, "text": b}],
    }
    c = campaign(audience={"age": {"min": 40, "max": 75}, "care_gap": GAP}, steps=[invite])
    n = 400
    with session_scope(engine) as s:
        for i in range(n):
            add_patient(s, f"p{i}", phone=_phone(i), first_name=f"N{i}")
    _tick(engine, c, MORNING)

    with session_scope(engine) as s:
        rows = s.execute(
            select(Message.enrollment_id, Message.variant, Message.body, Patient.first_name)
            .join(Enrollment, Enrollment.id == Message.enrollment_id)
            .join(Patient, Patient.id == Enrollment.patient_id)
        ).all()
    assert len(rows) == n
    settings = get_settings()
    for enrollment_id, variant, body, first_name in rows:
        expected = "a" if _md5_bucket(f"variant|{enrollment_id}|invite") * 100 < 70 * 10_000 else "b"
        assert variant == expected
        assert body == render((a if expected == "a" else b)["en"], first_name=first_name, settings=settings)
    share_a = sum(variant == "a" for _, variant, _, _ in rows)
    assert abs(share_a - n * 0.7) < 4 * (n * 0.7 * 0.3) ** 0.5
