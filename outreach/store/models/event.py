"""`patient_events` (DESIGN.md §6): the clinical events that close care gaps."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Date, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from outreach.store.models.base import Base


class PatientEvent(Base):
    """A clinical event (screening, vaccine) that closes a care gap; keyed by mrn so events may
    arrive before or after the patient row."""

    __tablename__ = "patient_events"
    __table_args__ = (
        UniqueConstraint("mrn", "kind", "date", "code", name="uq_patient_events_identity"),
        Index("ix_patient_events_kind_mrn_date", "kind", "mrn", "date"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mrn: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(40))
    date: Mapped[dt.date] = mapped_column(Date)
    # Empty string rather than NULL so the identity constraint also holds for code-less events.
    code: Mapped[str] = mapped_column(String(40), default="")
    code_system: Mapped[str] = mapped_column(String(100), default="")
