"""Eligibility: a campaign's audience as one SQL query, checked at every boundary a care team
relies on (age birthdays, look-back edges, the flu season start, sex, activity, consent)."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.orm import Session

from outreach.campaigns import CampaignFile, CareGap
from outreach.plan.eligibility import (
    age_on,
    birth_date_bounds,
    count_eligible,
    eligible_patients,
    years_before,
)
from outreach.store.models import Patient, PatientEvent, PhoneConsent

D = dt.date
_serial = itertools.count(1)


def campaign(**audience: Any) -> CampaignFile:
    """A minimal campaign around an audience, so the query logic is tested apart from the shipped files."""
    return CampaignFile.model_validate(
        {
            "id": "test-campaign",
            "name": "Test",
            "active": {"from": "2026-01-01"},
            "audience": {"age": {"min": 50, "max": 75}, **audience},
            "steps": [{"id": "invite", "after": "0d", "text": {"en": "Hi {first_name}"}}],
        }
    )


def add_patient(
    session: Session,
    mrn: str,
    birth_date: dt.date,
    *,
    sex: str = "female",
    active: bool = True,
    phone: str | None = None,
) -> str:
    number = next(_serial)
    session.execute(
        insert(Patient),
        [
            {
                "mrn": mrn,
                "first_name": f"P{number}",
                "birth_date": birth_date,
                "sex": sex,
                "phone": phone or f"+1617555{number:04d}",
                "language": "en",
                "active": active,
            }
        ],
    )
    return mrn


def add_event(session: Session, mrn: str, kind: str, day: dt.date) -> None:
    session.execute(insert(PatientEvent), [{"mrn": mrn, "kind": kind, "date": day}])


def eligible(session: Session, camp: CampaignFile, on: dt.date) -> set[str]:
    rows = session.execute(eligible_patients(camp, on)).all()
    assert count_eligible(session, camp, on) == len(rows)
    return {row.mrn for row in rows}


# --- age arithmetic ------------------------------------------------------------------------------


def test_birth_date_bound_agrees_with_completed_years_around_leap_days() -> None:
    """The SQL bound must match the textbook age, including Feb 29 births and Feb 29 planning days."""
    days = [D(2000, 2, 20) + dt.timedelta(days=i) for i in range(14)]
    planning = [d.replace(year=y) for y in range(2024, 2030) for d in days if (d.month, d.day) != (2, 29)]
    planning += [D(2024, 2, 29), D(2028, 2, 29)]
    births = [d.replace(year=y) for y in range(1972, 1981) for d in days if (d.month, d.day) != (2, 29)]
    births += [D(1972, 2, 29), D(1976, 2, 29), D(1980, 2, 29)]
    mismatches = [
        (birth, on, n)
        for on in planning
        for birth in births
        for n in range(43, 58)
        if (age_on(birth, on) >= n) != (birth <= years_before(on, n))
    ]
    assert mismatches == []


def test_leap_day_birth_turns_a_year_older_on_march_first_in_common_years(session: Session) -> None:
    add_patient(session, "leap", D(1976, 2, 29))
    camp = campaign(age={"min": 49, "max": 75})
    assert eligible(session, camp, D(2025, 2, 28)) == set()
    assert eligible(session, camp, D(2025, 3, 1)) == {"leap"}
    # In a leap year the birthday itself exists.
    assert eligible(session, campaign(age={"min": 48, "max": 75}), D(2024, 2, 28)) == set()
    assert eligible(session, campaign(age={"min": 48, "max": 75}), D(2024, 2, 29)) == {"leap"}


def test_planning_on_a_leap_day_clamps_the_bound_to_february_28(session: Session) -> None:
    add_patient(session, "feb28", D(1978, 2, 28))  # turned 50 the day before
    add_patient(session, "mar01", D(1978, 3, 1))  # turns 50 tomorrow
    assert birth_date_bounds(campaign(), D(2028, 2, 29))[1] == D(1978, 2, 28)
    assert eligible(session, campaign(), D(2028, 2, 29)) == {"feb28"}


def test_age_range_is_inclusive_at_both_ends(session: Session) -> None:
    on = D(2026, 5, 15)
    add_patient(session, "49-turns-50-tomorrow", D(1976, 5, 16))
    add_patient(session, "turns-50-today", D(1976, 5, 15))
    add_patient(session, "50-and-a-day", D(1976, 5, 14))
    add_patient(session, "75-last-day", D(1950, 5, 16))
    add_patient(session, "turns-76-today", D(1950, 5, 15))
    assert eligible(session, campaign(), on) == {"turns-50-today", "50-and-a-day", "75-last-day"}


# --- care gaps -----------------------------------------------------------------------------------

ON = D(2026, 5, 15)
ADULT = D(1960, 1, 1)


def test_lookback_edges_follow_design(session: Session) -> None:
    """Counts if planning day - 10y < event date <= planning day."""
    camp = campaign(care_gap=[{"event": "colonoscopy", "within": "10y"}])
    cases = {
        "exactly-10y-ago": (D(2016, 5, 15), True),
        "a-day-inside": (D(2016, 5, 16), False),
        "on-planning-day": (ON, False),
        "after-planning-day": (D(2026, 5, 16), True),
        "no-event": (None, True),
    }
    for mrn, (day, _) in cases.items():
        add_patient(session, mrn, ADULT)
        if day is not None:
            add_event(session, mrn, "colonoscopy", day)
    assert eligible(session, camp, ON) == {mrn for mrn, (_, ok) in cases.items() if ok}


def test_window_start_is_the_earliest_counted_day() -> None:
    gap = CareGap.model_validate({"event": "fit", "within": "1y"})
    assert gap.window_start(D(2026, 5, 15)) == D(2025, 5, 16)
    # Feb 29 minus a year is Feb 28; that day itself is exactly a year ago, so not counted.
    assert gap.window_start(D(2028, 2, 29)) == D(2027, 3, 1)
    weeks = CareGap.model_validate({"event": "fit", "within": "2w"})
    assert weeks.window_start(D(2026, 5, 15)) == D(2026, 5, 2)


def test_any_one_gap_event_closes_the_gap_and_other_kinds_or_patients_do_not(session: Session) -> None:
    camp = campaign(
        care_gap=[{"event": "colonoscopy", "within": "10y"}, {"event": "fit", "within": "1y"}],
    )
    add_patient(session, "recent-fit", ADULT)
    add_event(session, "recent-fit", "fit", D(2026, 1, 1))
    add_patient(session, "old-fit", ADULT)
    add_event(session, "old-fit", "fit", D(2025, 5, 15))
    add_patient(session, "recent-colonoscopy", ADULT)
    add_event(session, "recent-colonoscopy", "colonoscopy", D(2020, 1, 1))
    add_patient(session, "mammogram-only", ADULT)
    add_event(session, "mammogram-only", "mammogram", D(2026, 1, 1))
    add_event(session, "someone-else", "colonoscopy", D(2026, 1, 1))  # events may precede the patient row
    assert eligible(session, camp, ON) == {"old-fit", "mammogram-only"}


@pytest.mark.parametrize(
    ("vaccinated", "on", "is_eligible"),
    [
        (D(2026, 6, 30), D(2026, 10, 15), True),  # last season's shot
        (D(2026, 7, 1), D(2026, 10, 15), False),  # this season's first day
        (D(2026, 7, 1), D(2027, 2, 10), False),  # planning in February of the next year
        (D(2026, 6, 30), D(2027, 2, 10), True),
        (D(2026, 6, 30), D(2026, 7, 1), True),  # a new season starts on July 1
        (D(2025, 7, 1), D(2026, 6, 30), False),  # the old season runs through June 30
        (D(2026, 10, 16), D(2026, 10, 15), True),  # not yet happened on the planning day
    ],
)
def test_seasonal_flu_gap(session: Session, vaccinated: dt.date, on: dt.date, is_eligible: bool) -> None:
    camp = campaign(age={"min": 6, "max": 130}, care_gap=[{"event": "flu_vaccine", "since": "07-01"}])
    add_patient(session, "p", ADULT)
    add_event(session, "p", "flu_vaccine", vaccinated)
    assert eligible(session, camp, on) == ({"p"} if is_eligible else set())


# --- sex, activity, consent ----------------------------------------------------------------------


def test_sex_filter(session: Session) -> None:
    for sex in ("female", "male", "other", "unknown"):
        add_patient(session, sex, ADULT, sex=sex)
    assert eligible(session, campaign(sex="female"), ON) == {"female"}
    assert eligible(session, campaign(sex="male"), ON) == {"male"}
    assert eligible(session, campaign(sex="any"), ON) == {"female", "male", "other", "unknown"}


def test_inactive_patients_are_never_eligible(session: Session) -> None:
    add_patient(session, "active", ADULT)
    add_patient(session, "inactive", ADULT, active=False)
    assert eligible(session, campaign(), ON) == {"active"}


def test_opt_out_is_per_number_and_a_later_opt_in_restores(session: Session) -> None:
    t = dt.datetime(2026, 3, 1, 12, 0)
    add_patient(session, "stopped", ADULT, phone="+16175550001")
    add_patient(session, "same-number", ADULT, phone="+16175550001")
    add_patient(session, "restarted", ADULT, phone="+16175550002")
    add_patient(session, "stopped-again", ADULT, phone="+16175550003")
    add_patient(session, "opted-in-only", ADULT, phone="+16175550004")
    add_patient(session, "never", ADULT, phone="+16175550005")
    session.execute(
        insert(PhoneConsent),
        [
            {"phone": "+16175550001", "opted_out_at": t, "opted_in_at": None},
            {"phone": "+16175550002", "opted_out_at": t, "opted_in_at": t + dt.timedelta(hours=1)},
            {"phone": "+16175550003", "opted_out_at": t, "opted_in_at": t - dt.timedelta(days=1)},
            {"phone": "+16175550004", "opted_out_at": None, "opted_in_at": t},
        ],
    )
    assert eligible(session, campaign(), ON) == {"restarted", "opted-in-only", "never"}


def test_selects_what_planning_needs_and_no_clinical_details(session: Session) -> None:
    add_patient(session, "p", ADULT)
    row = session.execute(eligible_patients(campaign(), ON)).one()
    assert set(row._fields) == {
        "id",
        "mrn",
        "first_name",
        "phone",
        "phone_zones",
        "language",
        "timezone",
        "postal_code",
    }


def test_compiles_to_one_statement_with_anti_joins() -> None:
    camp = campaign(care_gap=[{"event": "colonoscopy", "within": "10y"}, {"event": "fit", "within": "1y"}])
    sql = str(eligible_patients(camp, ON)).upper()
    assert sql.count("NOT (EXISTS") == 4  # two gaps, the opt-out check and the unreachable-number check
    assert "BIRTH_DATE >" in sql and "BIRTH_DATE <=" in sql


# --- the shipped campaign files ------------------------------------------------------------------


def _shipped() -> dict[str, CampaignFile]:
    from outreach.campaigns import load_campaigns
    from outreach.config import get_settings

    return load_campaigns(settings=get_settings())


def test_campaigns_ship_with_the_product() -> None:
    shipped = _shipped()
    assert {"colorectal-screening"} <= set(shipped)
    colorectal = shipped["colorectal-screening"].audience
    assert (colorectal.age.min, colorectal.age.max) == (45, 75)


SHIPPED_IDS = ["colorectal-screening", "breast-screening", "cervical-screening", "flu-season"]


@pytest.mark.parametrize("campaign_id", SHIPPED_IDS)
def test_shipped_campaign_boundaries(session: Session, campaign_id: str) -> None:
    """Each shipped file, on hand-built patients at its own age, sex and look-back edges."""
    shipped = _shipped()
    if campaign_id not in shipped:
        pytest.fail(f"{campaign_id} is not among the shipped campaigns {sorted(shipped)}")
    camp = shipped[campaign_id]
    audience = camp.audience
    on = max(camp.active.from_, D(2026, 5, 15))
    sex = "male" if audience.sex == "male" else "female"
    expected: set[str] = set()

    def person(mrn: str, birth: dt.date, ok: bool, **kw: Any) -> str:
        add_patient(session, mrn, birth, sex=kw.pop("sex", sex), **kw)
        if ok:
            expected.add(mrn)
        return mrn

    youngest = years_before(on, audience.age.min)
    oldest = years_before(on, audience.age.max + 1)
    person("min-age-birthday", youngest, True)
    person("day-before-min-age", youngest + dt.timedelta(days=1), False)
    person("max-age-last-day", oldest + dt.timedelta(days=1), True)
    person("max-age-exceeded", oldest, False)
    person("inactive", youngest, False, active=False)
    if audience.sex != "any":
        person("other-sex", youngest, False, sex="female" if sex == "male" else "male")
    # A middle age that is inside the range for every campaign.
    middle = years_before(on, (audience.age.min + audience.age.max) // 2)

    def closes_a_gap(kind: str, day: dt.date) -> bool:
        return any(g.event == kind and g.window_start(on) <= day <= on for g in audience.care_gap)

    for i, gap in enumerate(audience.care_gap):
        start = gap.window_start(on)
        edges = {"first-day": start, "day-before": start - dt.timedelta(days=1), "planning-day": on}
        edges["future"] = on + dt.timedelta(days=1)
        for name, day in edges.items():
            add_event(
                session, person(f"gap{i}-{name}", middle, not closes_a_gap(gap.event, day)), gap.event, day
            )
    assert any(mrn.endswith("day-before") for mrn in expected) or not audience.care_gap
    assert eligible(session, camp, on) == expected
