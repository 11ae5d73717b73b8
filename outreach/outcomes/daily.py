"""Daily sends and replies per campaign over the last 30 days (`outreach report`, /app/reports).

Two grouped queries per report (one over the outbox, one over the replies), whatever the number of
enrollments; Python only fills the days that had nothing with zeros. Days are UTC calendar days
(`outreach.store.sql.day_of`, the same day the closure attribution uses), the last one being the
report's `on` day.

- ``sent``: campaign texts the provider accepted (a provider id; the funnel's ``sent``), on the day
  they went out (`Message.went_out_at`).
- ``replies``: replies matched to an enrollment of the campaign, on the day they arrived; opt-outs
  are not replies (as in the funnel's ``replied``), but every other reply counts, not only the first.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from outreach.listen.classify import Kind
from outreach.outcomes.counts import grouped
from outreach.store import sql
from outreach.store.models import Enrollment, InboundMessage, Message, MessageKind

DAYS = 30


@dataclass
class Day:
    """One day's activity of a campaign (or of all of them)."""

    day: dt.date
    sent: int = 0
    replies: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"date": self.day.isoformat(), "sent": self.sent, "replies": self.replies}


def window(on: dt.date, days: int = DAYS) -> list[dt.date]:
    """The days a report covers, oldest first, ending with `on`."""
    return [on - dt.timedelta(days=back) for back in range(days - 1, -1, -1)]


def empty(on: dt.date) -> list[Day]:
    return [Day(day) for day in window(on)]


def daily(session: Session, scope: list[ColumnElement[bool]], on: dt.date) -> dict[str, list[Day]]:
    """Per campaign, the window's days (all of them, zeros included) with their sends and replies."""
    first = window(on)[0]
    start = dt.datetime.combine(first, dt.time())
    end = dt.datetime.combine(on + dt.timedelta(days=1), dt.time())
    found: dict[str, dict[dt.date, Day]] = defaultdict(dict)

    def day_of(campaign: str, day: Any) -> Day:
        day = day if isinstance(day, dt.date) else dt.date.fromisoformat(str(day))
        return found[campaign].setdefault(day, Day(day))

    went = Message.went_out_at
    sends = (
        select(Enrollment.campaign_id, sql.day_of(went).label("day"))
        .select_from(Message)
        .join(Enrollment, Message.enrollment_id == Enrollment.id)
        .where(
            Message.kind == MessageKind.outreach,
            Message.provider_sid.is_not(None),
            went >= start,
            went < end,
            *scope,
        )
    )
    for campaign, day, n in session.execute(grouped(sends)):
        day_of(campaign, day).sent += n

    replies = (
        select(Enrollment.campaign_id, sql.day_of(InboundMessage.received_at).label("day"))
        .select_from(InboundMessage)
        .join(Enrollment, InboundMessage.enrollment_id == Enrollment.id)
        .where(
            or_(InboundMessage.classification.is_(None), InboundMessage.classification != Kind.opt_out),
            InboundMessage.received_at >= start,
            InboundMessage.received_at < end,
            *scope,
        )
    )
    for campaign, day, n in session.execute(grouped(replies)):
        day_of(campaign, day).replies += n

    return {campaign: [days.get(day, Day(day)) for day in window(on)] for campaign, days in found.items()}


def add_up(into: list[Day], other: list[Day]) -> None:
    """Add `other`'s days to `into`'s (the same window)."""
    for mine, theirs in zip(into, other, strict=True):
        mine.sent += theirs.sent
        mine.replies += theirs.replies
