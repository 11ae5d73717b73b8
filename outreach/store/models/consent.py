"""`phone_consents` (DESIGN.md §6): opt-out and opt-in per phone number."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from outreach.clock import utcnow
from outreach.store.models.base import Base


class PhoneConsent(Base):
    """One row per number: opt-out is per number, across every campaign and patient sharing it."""

    __tablename__ = "phone_consents"

    phone: Mapped[str] = mapped_column(String(20), primary_key=True)
    opted_out_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    opted_out_by: Mapped[str | None] = mapped_column(String(100))  # keyword or provider error code
    # Who recorded the opt-out: patient, twilio, or the staff member's name. Kept here because the
    # audit log names the number only masked, so it cannot be joined back to this row.
    opted_out_actor: Mapped[str | None] = mapped_column(String(100))
    opted_in_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    opted_in_by: Mapped[str | None] = mapped_column(String(100))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
