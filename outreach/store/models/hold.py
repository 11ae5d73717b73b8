"""`sender_holds`: a sender paused because the account or its setup refuses every message.

A row exists while the hold is on and is deleted when a probe succeeds (the audit log keeps both
moments). Stored in the database, not in a worker's memory, so every worker process stops
claiming for the sender at once, a restarted worker still knows, and /healthz and the report can
say why nothing goes out.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from outreach.store.models.base import Base


class SenderHold(Base):
    """One hold per sender and scope; `scope` is "" for the whole sender, or a destination
    prefix ("+44") when only one country is refused (Twilio 21408, a region permission)."""

    __tablename__ = "sender_holds"
    __table_args__ = (UniqueConstraint("sender", "scope", name="uq_sender_holds_sender_scope"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sender: Mapped[str] = mapped_column(String(64))  # Messaging Service SID or from-number
    scope: Mapped[str] = mapped_column(String(8), default="")
    error_code: Mapped[int | None] = mapped_column(Integer)
    http_status: Mapped[int | None] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(Text)  # the provider's words, numbers masked
    since: Mapped[dt.datetime] = mapped_column(DateTime)
    seen_at: Mapped[dt.datetime] = mapped_column(DateTime)  # the latest refusal
    probe_at: Mapped[dt.datetime] = mapped_column(DateTime)  # one row may be tried from then on
