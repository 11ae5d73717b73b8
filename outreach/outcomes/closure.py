"""Closed care gaps (DESIGN.md §11): the outcome a health system pays outreach for.

A gap closes when a qualifying event (any of the campaign's `care_gap` kinds) is dated on or after
the enrollment day and inside the attribution window (OUTREACH_ATTRIBUTION_DAYS from the
enrollment day, the same for both arms so the holdout comparison is fair). The enrollment then
ends as `gap_closed` with the closing event, its waiting steps are canceled ("gap closed"), and
the closure is credited to the last message that reached the patient on or before the event's
day (none for a holdout, who was never texted). All of it is three UPDATEs per campaign, the
work done by the database over `ix_patient_events_kind_mrn_date` and the outbox's key.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from outreach.campaigns import CampaignFile
from outreach.plan.exclusions import cancel_ended
from outreach.store import sql
from outreach.store.models import EndReason, Enrollment, Message, MessageKind, Patient, PatientEvent
from outreach.store.statuses import REACHED


def _closing_events(campaign: CampaignFile, on: dt.date, window_days: int, dialect: str) -> Any:
    """The enrollment's qualifying events: a care-gap kind, dated from the enrollment day to the
    end of the attribution window, and not after `on` (correlated with the UPDATE's row)."""
    kinds = sorted({gap.event for gap in campaign.audience.care_gap})
    mrn = (
        select(Patient.mrn).where(Patient.id == Enrollment.patient_id).correlate(Enrollment).scalar_subquery()
    )
    return (
        select(PatientEvent.id, PatientEvent.date)
        .where(
            PatientEvent.mrn == mrn,
            PatientEvent.kind.in_(kinds),
            PatientEvent.date >= Enrollment.enrolled_on,
            PatientEvent.date < sql.add_days(Enrollment.enrolled_on, window_days, dialect),
            PatientEvent.date <= on,
        )
        .order_by(PatientEvent.date, PatientEvent.id)
        .limit(1)
        .correlate(Enrollment)
    )


def credited_message(enrollment_id: Any, day: Any) -> Any:
    """The last outreach message of the enrollment that reached the patient on or before `day`."""
    return (
        select(Message.id)
        .where(
            Message.enrollment_id == enrollment_id,
            Message.kind == MessageKind.outreach,
            Message.status.in_(REACHED),
            sql.day_of(Message.went_out_at) <= day,
        )
        .order_by(Message.went_out_at.desc(), Message.id.desc())
        .limit(1)
        .scalar_subquery()
    )


def close_gaps(
    session: Session, campaign: CampaignFile, on: dt.date, now: dt.datetime, window_days: int
) -> tuple[int, int]:
    """End the campaign's open enrollments whose gap closed; returns (closed, messages canceled)."""
    kinds = {gap.event for gap in campaign.audience.care_gap}
    if not kinds:
        return 0, 0
    dialect = sql.dialect_name(session)
    first = _closing_events(campaign, on, window_days, dialect)
    closed = session.execute(
        update(Enrollment)
        .where(Enrollment.campaign_id == campaign.id, Enrollment.ended_at.is_(None), exists(first))
        .values(
            ended_at=now,
            end_reason=EndReason.gap_closed,
            closed_event_id=first.with_only_columns(PatientEvent.id).scalar_subquery(),
            closed_on=first.with_only_columns(PatientEvent.date).scalar_subquery(),
        )
    )
    count = sql.rowcount(closed)
    if not count:
        return 0, 0
    session.execute(
        update(Enrollment)
        .where(
            Enrollment.campaign_id == campaign.id,
            Enrollment.end_reason == EndReason.gap_closed,
            Enrollment.ended_at == now,
        )
        .values(credited_message_id=credited_message(Enrollment.id, Enrollment.closed_on))
    )
    return count, cancel_ended(session, campaign.id, EndReason.gap_closed, "gap closed", now)
