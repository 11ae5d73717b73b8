"""`link_clicks` (DESIGN.md §6, §11): what happened to a message's tracked link.

One row per message whose link was opened at all, so the report counts clicks with a join and the
link route records a hit with one upsert. Previews (HEAD, link-preview fetchers, a hit within
seconds of delivery) are counted apart: they show the link was unfurled, not that the patient
opened it.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, ForeignKey, Integer
from sqlalchemy.orm import Mapped, mapped_column

from outreach.store.models.base import Base


class LinkClick(Base):
    __tablename__ = "link_clicks"

    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), primary_key=True)
    enrollment_id: Mapped[int] = mapped_column(ForeignKey("enrollments.id"), index=True)
    clicks: Mapped[int] = mapped_column(Integer, default=0)
    previews: Mapped[int] = mapped_column(Integer, default=0)
    first_click_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    first_preview_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    last_at: Mapped[dt.datetime] = mapped_column(DateTime)
