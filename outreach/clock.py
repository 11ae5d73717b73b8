"""Time as the engine counts it: one home for "now", stored times and the clinic's calendar day.

Stored timestamps are naive UTC so SQLite and PostgreSQL compare them the same way; campaign days
(ages, look-backs, step offsets, "in the future") are counted on the clinic's calendar, in
OUTREACH_DEFAULT_TIMEZONE, never on the server's UTC one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from zoneinfo import ZoneInfo

Clock = Callable[[], dt.datetime]
"""Returns the current time as naive UTC; tests and the demo inject a simulated one."""


def utcnow() -> dt.datetime:
    """The current time as naive UTC (the form every stored timestamp takes)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def naive_utc(value: dt.datetime) -> dt.datetime:
    """An aware datetime as naive UTC; a naive one is taken to be UTC already."""
    return value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo else value


def clinic_today(zone: str, now: dt.datetime | None = None) -> dt.date:
    """The clinic's calendar day at `now` (naive UTC; default: the current time) in the IANA `zone`."""
    at = now if now is not None else utcnow()
    return at.replace(tzinfo=dt.UTC).astimezone(ZoneInfo(zone)).date()


def clinic_time(zone: str, value: dt.datetime) -> dt.datetime:
    """A stored naive-UTC time as an aware time in the clinic's zone, for what people read."""
    return value.replace(tzinfo=dt.UTC).astimezone(ZoneInfo(zone))
