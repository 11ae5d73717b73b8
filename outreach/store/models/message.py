"""`messages` (DESIGN.md §6): the outbox, one row per text, with a timestamp per transition."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    ColumnElement,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import Mapped, mapped_column

from outreach.clock import utcnow
from outreach.store.models.base import Base
from outreach.store.statuses import MessageKind, MessageStatus


class Message(Base):
    """The outbox. Unique on (enrollment, step): the first line of defence against sending twice."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("enrollment_id", "step_id", name="uq_messages_enrollment_step"),
        Index("ix_messages_status_send_at", "status", "send_at"),
        Index("ix_messages_phone_send_at", "phone", "send_at"),
        # Unique where set, and only where set: a planned row has neither yet, and an index entry
        # per NULL cost every planned row two index inserts for nothing (issue 11). Every lookup is
        # an equality, which implies NOT NULL, so the partial indexes serve them all.
        Index(
            "uq_messages_provider_sid",
            "provider_sid",
            unique=True,
            postgresql_where=text("provider_sid IS NOT NULL"),
            sqlite_where=text("provider_sid IS NOT NULL"),
        ),
        Index(
            "uq_messages_link_token",
            "link_token",
            unique=True,
            postgresql_where=text("link_token IS NOT NULL"),
            sqlite_where=text("link_token IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    enrollment_id: Mapped[int | None] = mapped_column(ForeignKey("enrollments.id"))
    step_id: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(10), default=MessageKind.outreach)
    phone: Mapped[str] = mapped_column(String(20))
    body: Mapped[str] = mapped_column(Text)
    segments: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(12), default=MessageStatus.planned)
    send_at: Mapped[dt.datetime] = mapped_column(DateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    provider_sid: Mapped[str | None] = mapped_column(String(64))
    provider_status: Mapped[str | None] = mapped_column(String(20))
    error_code: Mapped[int | None] = mapped_column(Integer)
    error_message: Mapped[str | None] = mapped_column(Text)
    planned_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    queued_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    sending_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    failed_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    canceled_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    cancel_reason: Mapped[str | None] = mapped_column(String(100))
    # The step's text variant this row was rendered from (campaign `variants`), else None.
    variant: Mapped[str | None] = mapped_column(String(40))
    # The tracked link's token when the text has {link} (outreach/outcomes/links.py): `/l/<token>`.
    link_token: Mapped[str | None] = mapped_column(String(24))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))  # kind `staff`: who wrote it

    @hybrid_property
    def went_out_at(self) -> dt.datetime | None:
        """When the row went (or may have gone) out: the provider's acceptance, else the claim.

        An `unknown` row has no `sent_at` yet but may have reached the patient; the report and the
        reply context both order by this, so they credit a reply to the same message."""
        return self.sent_at if self.sent_at is not None else self.sending_at

    @went_out_at.inplace.expression
    @classmethod
    def _went_out_at_sql(cls) -> ColumnElement[dt.datetime | None]:
        return func.coalesce(cls.sent_at, cls.sending_at)
