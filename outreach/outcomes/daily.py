"""Daily sends and replies per campaign over the last 30 days (`outreach report`, /app/reports).

Sends are grouped by day in the funnel's own pass over the outbox (`sent_day`, used by
outreach/outcomes/counts.py), replies by one grouped query; Python only fills the days that had
nothing with zeros. Days are UTC calendar days
(`outreach.store.sql.day_of`, the same day the closure attribution uses), the last one being the
report's `on` day.

- ``sent``: campaign texts the provider accepted (a provider id; the funnel's ``sent``), on the day
  they went out (`Message.went_out_at`).
- ``replies``: replies matched to an enrollment of the campaign, on the day they arrived; opt-outs
  are not replies (as in the funnel's ``replied``), but every other reply counts, not only the first.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, case, or_, select
from sqlalchemy.orm import Session

from outreach.listen.classify import Kind
from outreach.outcomes.counts import grouped
from outreach.store import sql
from outreach.store.models import Enrollment, InboundMessage, Message

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


def _bounds(on: dt.date) -> tuple[dt.datetime, dt.datetime]:
    first = window(on)[0]
    return dt.datetime.combine(first, dt.time()), dt.datetime.combine(on + dt.timedelta(days=1), dt.time())


def sent_day(on: dt.date) -> ColumnElement[Any]:
    """The day a text counts for among the window's sends, NULL when it does not (not accepted by
    the provider, or outside the window). counts.count_all groups the outbox by it in its one pass
    over the outbox, instead of a second scan of the report's largest table."""
    start, end = _bounds(on)
    went = Message.went_out_at
    accepted_in_window = and_(Message.provider_sid.is_not(None), went >= start, went < end)
    return case((accepted_in_window, sql.day_of(went)), else_=None)


def daily_replies(
    session: Session, scope: list[ColumnElement[bool]], on: dt.date
) -> dict[str, Counter[dt.date]]:
    """Per campaign, the replies (not opt-outs) that arrived on each day of the window."""
    start, end = _bounds(on)
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
    found: dict[str, Counter[dt.date]] = defaultdict(Counter)
    for campaign, day, n in session.execute(grouped(replies)):
        found[campaign][_date(day)] += n
    return dict(found)


def days(on: dt.date, sent: Counter[Any], replies: Counter[dt.date]) -> list[Day]:
    """The window's days, zeros included, from a campaign's sends (counts' `sent_days`) and replies."""
    sends: Counter[dt.date] = Counter()
    for day, n in sent.items():
        sends[_date(day)] += n
    return [Day(day, sends[day], replies[day]) for day in window(on)]


def _date(day: Any) -> dt.date:
    """SQLite's date() is text; PostgreSQL's is a date."""
    return day if isinstance(day, dt.date) else dt.date.fromisoformat(str(day))


def add_up(into: list[Day], other: list[Day]) -> None:
    """Add `other`'s days to `into`'s (the same window)."""
    for mine, theirs in zip(into, other, strict=True):
        mine.sent += theirs.sent
        mine.replies += theirs.replies
