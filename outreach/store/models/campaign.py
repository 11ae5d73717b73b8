"""`campaigns` (DESIGN.md §6): the campaign files the database has seen, referenced by enrollments,
and whether a coordinator has paused one."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from outreach.clock import utcnow
from outreach.store.models.base import Base


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    content_hash: Mapped[str] = mapped_column(String(64))
    loaded_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    # What the last search for closed gaps and exclusions saw (outreach/plan/endings.py): events
    # (highest id, count), the planning day and the file's hash; it runs again when any changes.
    endings_seen: Mapped[str | None] = mapped_column(String(120))
    # A coordinator's pause (outreach/send/pause.py): while set, nothing of the campaign is
    # planned, enqueued or claimed; who paused it is kept beside the audit entry for the page.
    paused_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    paused_by: Mapped[str | None] = mapped_column(String(100))
