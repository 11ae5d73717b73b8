"""`enrollments` (DESIGN.md §6): patient x campaign x cycle, with the outcome."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Date, DateTime, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from outreach.clock import utcnow
from outreach.store.models.base import Base


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
    replied_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    outcome: Mapped[str | None] = mapped_column(String(64))
    outcome_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    ended_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
