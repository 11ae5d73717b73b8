"""A campaign's audience compiled into one SQL SELECT over `patients`.

Planning must scale to millions of patients, so the whole audience is a single set-based query:
age becomes a range on the indexed `birth_date`, each care gap and each exclusion (the eCQM
denominator exclusions of `audience.exclude`) an anti-join (NOT EXISTS) on `patient_events` served
by `ix_patient_events_kind_mrn_date`, and opted-out numbers an anti-join on
`phone_consents` (numbers that cannot receive texts, one on `unreachable_numbers`). Nothing here
loops over patients in Python.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, TypeAlias

from sqlalchemy import ColumnElement, Select, and_, exists, false, func, or_, select
from sqlalchemy.orm import Session

from outreach.campaigns import CampaignFile, CareGap, Exclusion, add_months
from outreach.listen.consent import number_opted_out
from outreach.send.reachability import number_unreachable
from outreach.store.models import Patient, PatientEvent

# What planning and preview need about each eligible patient (no birth date, no last name).
ELIGIBLE_COLUMNS = (
    Patient.id,
    Patient.mrn,
    Patient.first_name,
    Patient.phone,
    Patient.phone_zones,
    Patient.language,
    Patient.timezone,
    Patient.postal_code,
)
# id, mrn, first_name, phone, phone_zones, language, timezone, postal_code
EligibleSelect: TypeAlias = "Select[int, str, str, str, str | None, str, str | None, str | None]"


def years_before(on: dt.date, years: int) -> dt.date:
    """`on` minus whole calendar years, Feb 29 clamped to Feb 28.

    With this single rule, "age in completed years on `on` >= N" is exactly
    `birth_date <= years_before(on, N)`, and it gives the common legal convention for leap-day
    births: someone born on Feb 29 turns N on Mar 1 in a non-leap year (on Feb 28 the bound is
    Feb 28, so the Feb 29 birthday is still ahead). Planning *on* a Feb 29 clamps the bound to
    Feb 28 of a non-leap year, which is right too: nobody was born on that year's Feb 29.
    """
    return add_months(on, -12 * years)


def age_on(birth_date: dt.date, on: dt.date) -> int:
    """Completed years; the reference the SQL bounds are tested against."""
    return on.year - birth_date.year - ((on.month, on.day) < (birth_date.month, birth_date.day))


def birth_date_bounds(campaign: CampaignFile, on: dt.date) -> tuple[dt.date, dt.date]:
    """(oldest exclusive, youngest inclusive): eligible when `oldest < birth_date <= youngest`.

    Age <= max is "not yet max + 1", hence the exclusive lower bound.
    """
    age = campaign.audience.age
    return years_before(on, age.max + 1), years_before(on, age.min)


def _gap_closed(gap: CareGap, on: dt.date) -> ColumnElement[bool]:
    """An event of the gap's kind inside its look-back, on or before the planning day.

    Later events (a date after `on`) do not count: planning for a past day must see the past.
    """
    return exists().where(
        PatientEvent.kind == gap.event,
        PatientEvent.mrn == Patient.mrn,
        PatientEvent.date >= gap.window_start(on),
        PatientEvent.date <= on,
    )


def excluded(exclusion: Exclusion, on: dt.date, mrn: Any) -> ColumnElement[bool]:
    """An event of the exclusion's kind on record for `mrn` on `on`: ever (any date up to `on`),
    or inside its look-back. Events dated after `on` do not count, as for care gaps."""
    conditions = [PatientEvent.kind == exclusion.event, PatientEvent.mrn == mrn, PatientEvent.date <= on]
    start = exclusion.window_start(on)
    if start is not None:
        conditions.append(PatientEvent.date >= start)
    return exists().where(*conditions)


def any_exclusion(campaign: CampaignFile, on: dt.date, mrn: Any) -> ColumnElement[bool]:
    """Whether any of the campaign's exclusions holds for `mrn` on `on` (False when it has none)."""
    found = [excluded(exclusion, on, mrn) for exclusion in campaign.audience.exclude]
    return or_(*found) if found else false()


def eligible_patients(campaign: CampaignFile, on: dt.date) -> EligibleSelect:
    """The campaign's audience on `on` as one SELECT of `ELIGIBLE_COLUMNS` (unordered).

    Whether the campaign itself is active on `on` is the caller's concern (preview shows an
    inactive campaign's audience; the scheduler does not enroll into it).
    """
    audience = campaign.audience
    oldest, youngest = birth_date_bounds(campaign, on)
    conditions: list[ColumnElement[bool]] = [
        Patient.active.is_(True),
        Patient.birth_date > oldest,
        Patient.birth_date <= youngest,
    ]
    if audience.sex != "any":
        conditions.append(Patient.sex == audience.sex)
    conditions.extend(~_gap_closed(gap, on) for gap in audience.care_gap)
    conditions.extend(~excluded(exclusion, on, Patient.mrn) for exclusion in audience.exclude)
    conditions.append(~number_opted_out(Patient.phone))
    conditions.append(~number_unreachable(Patient.phone))  # not mobile, invalid, landline (per number)
    return select(*ELIGIBLE_COLUMNS).where(and_(*conditions))


def count_eligible(session: Session, campaign: CampaignFile, on: dt.date) -> int:
    """How many patients the campaign would reach on `on`, counted in the database."""
    audience = eligible_patients(campaign, on).subquery()
    return session.execute(select(func.count()).select_from(audience)).scalar_one()
