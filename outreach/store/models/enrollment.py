"""`enrollments` (DESIGN.md §6): patient x campaign x cycle, with the outcome and how it ended."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import Date, DateTime, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from outreach.clock import utcnow
from outreach.store.models.base import Base


class Arm(enum.StrEnum):
    """Which side of the holdout comparison an enrollment is on (outreach/plan/holdout.py)."""

    treated = "treated"  # texted as the campaign says
    holdout = "holdout"  # enrolled as control: never texted, followed for gap closure the same way


class EndReason(enum.StrEnum):
    """Why an enrollment ended (`ended_at` set): the care gap closed, or the measure excludes the
    patient now. A reply's outcome (kit_requested, declined) is `outcome`, which does not end it."""

    gap_closed = "gap_closed"
    excluded = "excluded"


class Enrollment(Base):
    """A patient's pass through one campaign; `cycle` grows with each re-enrollment."""

    __tablename__ = "enrollments"
    __table_args__ = (
        UniqueConstraint("patient_id", "campaign_id", "cycle", name="uq_enrollments_identity"),
        Index("ix_enrollments_campaign_patient", "campaign_id", "patient_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaigns.id"))
    cycle: Mapped[int] = mapped_column(Integer, default=1)
    enrolled_on: Mapped[dt.date] = mapped_column(Date)
    enrolled_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    language: Mapped[str] = mapped_column(String(10), default="en")
    arm: Mapped[str] = mapped_column(String(8), default=Arm.treated, server_default=Arm.treated.value)
    replied_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    outcome: Mapped[str | None] = mapped_column(String(64))
    outcome_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    ended_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    end_reason: Mapped[str | None] = mapped_column(String(20))
    # The gap closure (outreach/outcomes/closure.py): the qualifying event, its date, and the
    # message credited with it (the last one that reached the patient before it, inside the
    # attribution window; None when no text reached the patient, as for every holdout).
    closed_event_id: Mapped[int | None] = mapped_column(ForeignKey("patient_events.id"))
    closed_on: Mapped[dt.date | None] = mapped_column(Date)
    credited_message_id: Mapped[int | None] = mapped_column(Integer)
