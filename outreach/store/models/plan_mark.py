"""`plan_marks`: what the last complete planning pass of a campaign over a bucket had seen.

A pass with nothing new must not re-derive "who is left to enroll, which step is left to plan"
from the whole roster and outbox (outreach/plan/marks.py). One row per campaign and phone-number
bucket (outreach/plan/shards.py), since Celery plans the buckets as separate tasks; written only
when the pass walked every chunk of that bucket.
"""

from __future__ import annotations

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from outreach.store.models.base import Base


class PlanMark(Base):
    __tablename__ = "plan_marks"

    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaigns.id"), primary_key=True)
    bucket: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The roster inputs (patients, events, consents, unreachable numbers), the planning day and
    # the campaign file's hash when the bucket's newly eligible patients were last all enrolled.
    enrolled_seen: Mapped[str | None] = mapped_column(String(200))
    # The planning day and the file's hash when every due step of the bucket was last planned.
    planned_seen: Mapped[str | None] = mapped_column(String(200))
