"""Denominator exclusions found after enrollment (DESIGN.md §5, issue #13).

The audience query already keeps excluded patients out of new enrollments. A patient enrolled
before the exclusion reached us (a hospice admission, a colectomy recorded last week) must stop
getting texts too: their open enrollments end as `excluded` and every step still waiting is
canceled with the reason "excluded". Both are one set-based UPDATE, whatever the roster's size.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, or_, select, update
from sqlalchemy.orm import Session

from outreach.campaigns import CampaignFile
from outreach.store import sql
from outreach.store.models import EndReason, Enrollment, Message, MessageStatus, Patient, PatientEvent
from outreach.store.statuses import WAITING


def excluded_patients(campaign: CampaignFile, on: dt.date) -> Select[Any]:
    """Ids of patients with one of the campaign's exclusions on record on `on`, driven from the
    (few) exclusion events through `ix_patient_events_kind_mrn_date`, not from the patients."""
    matches: list[ColumnElement[bool]] = []
    for exclusion in campaign.audience.exclude:
        condition = [PatientEvent.kind == exclusion.event, PatientEvent.date <= on]
        start = exclusion.window_start(on)
        if start is not None:
            condition.append(PatientEvent.date >= start)
        matches.append(and_(*condition))
    return select(Patient.id).join(PatientEvent, PatientEvent.mrn == Patient.mrn).where(or_(*matches))


def end_excluded(session: Session, campaign: CampaignFile, on: dt.date, now: dt.datetime) -> tuple[int, int]:
    """End the open enrollments of excluded patients and cancel their waiting steps; returns
    (enrollments ended, messages canceled)."""
    if not campaign.audience.exclude:
        return 0, 0
    ended = session.execute(
        update(Enrollment)
        .where(
            Enrollment.campaign_id == campaign.id,
            Enrollment.ended_at.is_(None),
            Enrollment.patient_id.in_(excluded_patients(campaign, on)),
        )
        .values(ended_at=now, end_reason=EndReason.excluded)
    )
    count = sql.rowcount(ended)
    return count, cancel_ended(session, campaign.id, EndReason.excluded, "excluded", now) if count else 0


def cancel_ended(session: Session, campaign_id: str, reason: EndReason, why: str, now: dt.datetime) -> int:
    """Cancel (`why`) the waiting steps of the campaign's enrollments that ended for `reason` at
    `now`, i.e. in this pass: one UPDATE, through the outbox's (enrollment, step) key."""
    just_ended = select(Enrollment.id).where(
        Enrollment.campaign_id == campaign_id, Enrollment.end_reason == reason, Enrollment.ended_at == now
    )
    result = session.execute(
        update(Message)
        .where(Message.enrollment_id.in_(just_ended), Message.status.in_(WAITING))
        .values(status=MessageStatus.canceled, canceled_at=now, cancel_reason=why, updated_at=now)
    )
    return sql.rowcount(result)
