"""Where a message may go out: the patient-local send window and the per-number frequency cap.

The scheduler places new steps with it and the sender re-places a row it found outside its window,
so both honour the same rule: at most `daily_cap` outreach texts per local day and `weekly_cap` in
any 7 consecutive days per number, across every campaign (answers to a patient's own reply do not
count). A number is planned by one planner at a time (its bucket's lock, see shards.py), so two
passes cannot both fill the same slot. (The sender's re-placement of a row found outside its window
takes no such lock; a collision there needs a planner and a sender placing texts to the same number
at the same instant.)
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Subquery, func, select, true
from sqlalchemy.orm import Session

from outreach.campaigns import SendWindow
from outreach.plan.windows import next_opening
from outreach.store.models import Message, MessageKind, MessageStatus

WEEK = dt.timedelta(days=7)
# Statuses that never reached (and never will reach) the patient do not use up the cap.
_NOT_COUNTED = (MessageStatus.canceled, MessageStatus.failed)
_MAX_DAYS_AHEAD = 120


class Recipient(NamedTuple):
    """A number and its window rules (a tuple: planning builds one per row, ~1 µs cheaper than a
    frozen dataclass)."""

    phone: str
    zones: tuple[str, ...]
    strict: bool


class Pacer:
    """Knows the outreach already placed for a set of numbers and finds the next slot that fits."""

    def __init__(self, daily_cap: int, weekly_cap: int) -> None:
        self.daily_cap = daily_cap
        self.weekly_cap = weekly_cap
        self._times: dict[str, list[dt.datetime]] = defaultdict(list)
        # Openings already worked out: a planning pass asks the same question (this window, these
        # zones, from this instant) for thousands of patients.
        self._openings: dict[tuple[object, ...], tuple[dt.datetime, SendWindow]] = {}

    def load(
        self, session: Session, phones: Iterable[str], since: dt.datetime, *, exclude_id: int | None = None
    ) -> None:
        """Read the outreach already placed for `phones` from `since - 7 days` on (one query per chunk)."""
        wanted = sorted(set(phones) - set(self._times))
        when = func.coalesce(Message.sent_at, Message.send_at)
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            query = select(Message.phone, when).where(
                Message.phone.in_(chunk),
                Message.kind == MessageKind.outreach,
                Message.status.not_in(_NOT_COUNTED),
                when > since - WEEK,
            )
            if exclude_id is not None:
                query = query.where(Message.id != exclude_id)
            for phone, at in session.execute(query):
                self._times[phone].append(at)
            for phone in chunk:
                self._times.setdefault(phone, [])

    def load_where(self, session: Session, numbers: ColumnElement[bool], since: dt.datetime) -> None:
        """Read the outreach already placed from `since - 7 days` on to every number `numbers`
        selects (a condition on `Message.phone`, such as "a number of this chunk's patients"), in
        one query: planning a chunk reads its cap state by a join, not number by number."""
        when = func.coalesce(Message.sent_at, Message.send_at)
        query = select(Message.phone, when).where(
            numbers,
            Message.kind == MessageKind.outreach,
            Message.status.not_in(_NOT_COUNTED),
            when > since - WEEK,
        )
        for phone, at in session.execute(query):
            self._times[phone].append(at)

    def load_lateral(self, session: Session, numbers: Subquery, since: dt.datetime) -> None:
        """`load_where` for the numbers in `numbers` (a subquery with a `phone` column), as one
        LATERAL join (PostgreSQL): an index probe per number, whatever the statistics say."""
        when = func.coalesce(Message.sent_at, Message.send_at)
        placed = (
            select(when.label("at"))
            .where(
                Message.phone == numbers.c.phone,
                Message.kind == MessageKind.outreach,
                Message.status.not_in(_NOT_COUNTED),
                when > since - WEEK,
            )
            .lateral()
        )
        for phone, at in session.execute(select(numbers.c.phone, placed.c.at).join(placed, true())):
            self._times[phone].append(at)

    def place(self, who: Recipient, earliest: dt.datetime, window: SendWindow) -> dt.datetime:
        """The first instant >= `earliest` inside the window whose day and week still have room."""
        candidate = self._next_opening(earliest, window, who)
        if not self._times.get(who.phone):  # nothing placed to the number yet: any slot has room
            return candidate
        zone = ZoneInfo(who.zones[0])
        for _ in range(_MAX_DAYS_AHEAD):
            if self._fits(who.phone, candidate, zone):
                return candidate
            local_next_day = candidate.replace(tzinfo=dt.UTC).astimezone(zone).date() + dt.timedelta(days=1)
            midnight = dt.datetime.combine(local_next_day, dt.time(0), zone).astimezone(dt.UTC)
            candidate = self._next_opening(midnight.replace(tzinfo=None), window, who)
        raise RuntimeError(
            f"no send slot within {_MAX_DAYS_AHEAD} days"
        )  # cap settings make this unreachable

    def _next_opening(self, earliest: dt.datetime, window: SendWindow, who: Recipient) -> dt.datetime:
        key = (id(window), who.zones, who.strict, earliest)
        found = self._openings.get(key)
        if found is None or found[1] is not window:
            found = (next_opening(earliest, window=window, zones=who.zones, strict=who.strict), window)
            self._openings[key] = found
        return found[0]

    def record(self, phone: str, at: dt.datetime) -> None:
        self._times[phone].append(at)

    def _fits(self, phone: str, at: dt.datetime, zone: ZoneInfo) -> bool:
        times = self._times.get(phone, [])
        day = _local_day(at, zone)
        if sum(1 for t in times if _local_day(t, zone) == day) >= self.daily_cap:
            return False
        # Every 7-day window that would contain `at` must keep room for it.
        starts: Sequence[dt.datetime] = [t for t in times if at - WEEK < t <= at] + [at]
        return all(sum(1 for t in times if s <= t < s + WEEK) < self.weekly_cap for s in starts)


@lru_cache(maxsize=65_536)
def _local_day(at: dt.datetime, zone: ZoneInfo) -> dt.date:
    """Remembered: a pass asks it for the same few instants (openings, `now`) row after row."""
    return at.replace(tzinfo=dt.UTC).astimezone(zone).date()


def recipient(
    phone: str, timezone: str | None, phone_zones: str | None, postal_code: str | None, default_zone: str
) -> Recipient:
    """The zones and hour rules that apply to one patient's number."""
    from outreach.plan.windows import patient_zones, strict_hours

    return Recipient(
        phone=phone,
        zones=patient_zones(timezone, phone_zones, default_zone),
        strict=strict_hours(phone, postal_code),
    )
