"""`conversations`: one per phone number that has written to us, with the care team's state.

Per number, like consent: the patient answers from a number, and what was sent to it (every
campaign, every patient sharing it) is one thread on their phone. `public_id` is random and is what
URLs carry (DESIGN.md §12: never an mrn or a phone in a URL). Rows are made from inbound_messages
by outreach/team/conversations.py when the workspace reads them, so the webhooks do no extra work.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from outreach.store.models.base import Base


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_status_last", "status", "last_inbound_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    phone: Mapped[str] = mapped_column(String(20), unique=True)
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"))
    campaign_id: Mapped[str | None] = mapped_column(String(64))  # of the latest reply's enrollment
    status: Mapped[str] = mapped_column(String(10), default="open")  # open | closed
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    last_inbound_id: Mapped[int] = mapped_column(Integer)
    last_inbound_at: Mapped[dt.datetime] = mapped_column(DateTime)
    outcome: Mapped[str | None] = mapped_column(String(64))
    closed_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    closed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
