"""`unreachable_numbers`: numbers the provider said cannot receive texts (not mobile, invalid,
unknown handset, landline).

Per number, like `phone_consents`, because the fact belongs to the number: every patient and
campaign sharing it would fail the same way. A roster that brings a different number for a
patient brings a number without a mark; the same number imported again keeps its mark (a nightly
roster export would otherwise wipe it every day). Kept apart from consent: the patient did not
refuse anything, and the report counts the two differently.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from outreach.store.models.base import Base


class UnreachableNumber(Base):
    __tablename__ = "unreachable_numbers"

    phone: Mapped[str] = mapped_column(String(20), primary_key=True)
    error_code: Mapped[int] = mapped_column(Integer)  # the provider's code (twilio_codes.UNREACHABLE_CODES)
    marked_at: Mapped[dt.datetime] = mapped_column(DateTime)  # first time the provider said so
    seen_at: Mapped[dt.datetime] = mapped_column(DateTime)  # latest time
