"""`activations` (DESIGN.md §6): the first engagement per patient x campaign."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from outreach.clock import utcnow
from outreach.store.models.base import Base


class Activation(Base):
    """First engagement per patient x campaign; the unique key makes 'first reply wins' atomic."""

    __tablename__ = "activations"
    __table_args__ = (UniqueConstraint("patient_id", "campaign_id", name="uq_activations_identity"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaigns.id"))
    enrollment_id: Mapped[int] = mapped_column(ForeignKey("enrollments.id"))
    inbound_id: Mapped[int | None] = mapped_column(ForeignKey("inbound_messages.id"))
    activated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    how: Mapped[str] = mapped_column(String(64))
