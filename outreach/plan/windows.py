"""Patient-local send windows (DESIGN.md §7.3): when a message may go out, in the patient's zone.

Everything here is a pure function of naive UTC datetimes (what the database stores) and IANA zone
names, so the scheduler (plan time) and the worker (claim time) reach the same answer.

Rules, in order of authority:

* The hard limit: never before 08:00 or from 21:00 local (20:00 in Florida, Oklahoma and Maryland),
  whatever the campaign says. These are the quiet hours of the TCPA and of those states' laws.
* The campaign's `send_window` (days of the week and hours, patient-local, end exclusive).
* A number whose area code spans several zones (phonenumbers lists them) might be in any of
  them, so the message waits for the overlap: every zone inside its window at once.

When the zones have no overlap (a one-hour window on a number spanning two zones), the campaign
window cannot hold everywhere, but the law and sleep still can: the fallback is the first instant
at which *every* zone is inside the hard limit and *at least one* zone is inside the campaign
window. Nobody is texted at night, and the message goes out in campaign hours for one of the places
the patient may be, rather than waiting forever. Only when even the hard limits never overlap
(zones exactly 12 hours apart with the strict 08:00-20:00 limit; no real number spans that) the
first-listed zone alone decides, so the message is still never dropped.

Local times that do not exist (the hour skipped at a spring-forward) are read as PEP 495 fold=0
does: shifted forward by the gap. With the hard limit at 08:00-21:00 no window bound falls in a gap
in any zone that changes clocks at night, which is every US zone.
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_right
from collections.abc import Sequence
from functools import lru_cache, reduce
from zoneinfo import ZoneInfo

from outreach.campaigns import QUIET_AFTER, QUIET_BEFORE, WEEKDAYS, SendWindow
from outreach.plan.states import STRICT_STATES, area_code_state, postal_code_state

HARD_START, HARD_END = QUIET_BEFORE, QUIET_AFTER  # whatever a campaign says
# Every day, hours wider than the law's: openings are the hard limit alone. Staff replies use it
# (the patient wrote first, so no campaign window, but still nobody is texted at night).
LAW_HOURS = SendWindow(days=list(WEEKDAYS), start=dt.time(0), end=dt.time(23, 59))
STRICT_END = dt.time(20)
SEARCH_DAYS = 14

_UNKNOWN_ZONE = "Etc/Unknown"
_UTC = dt.UTC

Interval = tuple[dt.datetime, dt.datetime]  # naive UTC, half-open [start, end)


def patient_zones(timezone: str | None, phone_zones: str | None, default: str) -> tuple[str, ...]:
    """The zones a patient may be in: the known zone, else the zones the number's prefix spans
    (patients.phone_zones, space-separated), else the clinic's default zone."""
    if timezone:
        return (timezone,)
    zones = tuple(dict.fromkeys(z for z in (phone_zones or "").split() if z != _UNKNOWN_ZONE))
    return zones or (default,)


def strict_hours(phone_e164: str, postal_code: str | None) -> bool:
    """True when the number's area code or the address is in a state whose law ends texting at 20:00."""
    return (area_code_state(phone_e164) in STRICT_STATES) or (postal_code_state(postal_code) in STRICT_STATES)


def effective_hours(window: SendWindow, strict: bool) -> tuple[dt.time, dt.time] | None:
    """The campaign's hours clipped to the hard limit; None when nothing is left (a 06:00-07:30
    window), which campaign validation can report before anything is planned."""
    start = max(window.start, HARD_START)
    end = min(window.end, STRICT_END if strict else HARD_END)
    return (start, end) if start < end else None


def next_opening(
    earliest: dt.datetime, *, window: SendWindow, zones: Sequence[str], strict: bool
) -> dt.datetime:
    """The first instant >= `earliest` at which a message may be sent (naive UTC)."""
    return _opening(earliest, window, zones, strict)[0]


def is_open(at: dt.datetime, *, window: SendWindow, zones: Sequence[str], strict: bool) -> bool:
    """Whether a message may be sent at `at` (naive UTC)."""
    return next_opening(at, window=window, zones=zones, strict=strict) == _naive_utc(at)


def window_close(at: dt.datetime, *, window: SendWindow, zones: Sequence[str], strict: bool) -> dt.datetime:
    """When the opening that `at` is in ends (exclusive, naive UTC); for an `at` outside every
    opening, the end of the next one. A row planned inside an opening but still waiting at its
    close must be moved to the next opening rather than sent late."""
    return _opening(at, window, zones, strict)[1]


def _opening(earliest: dt.datetime, window: SendWindow, zones: Sequence[str], strict: bool) -> Interval:
    if not window.days:
        raise ValueError("the send window has no days")
    hours = effective_hours(window, strict)
    if hours is None:
        last = STRICT_END if strict else HARD_END
        raise ValueError(f"the send window has no hours between {HARD_START:%H:%M} and {last:%H:%M}")
    if not zones:
        raise ValueError("no time zone to evaluate the send window in")
    earliest = _naive_utc(earliest)
    limit = earliest + dt.timedelta(days=SEARCH_DAYS)
    days = tuple(sorted({WEEKDAYS.index(d) for d in window.days}))
    for tier in _tiers(earliest.date(), days, hours[0], hours[1], tuple(zones), strict):
        index = bisect_right(tier, earliest, key=lambda interval: interval[1])
        if index < len(tier) and tier[index][0] <= limit:
            start, end = tier[index]
            return max(start, earliest), end
    raise ValueError(f"no opening within {SEARCH_DAYS} days")  # pragma: no cover - tier 3 always has one


@lru_cache(maxsize=4096)
def _tiers(
    utc_day: dt.date,
    days: tuple[int, ...],
    start: dt.time,
    end: dt.time,
    zones: tuple[str, ...],
    strict: bool,
) -> tuple[tuple[Interval, ...], ...]:
    """The openings from `utc_day` on, for at least SEARCH_DAYS days, under each rule of the
    module docstring in turn: the overlap, the fallback, the first zone alone. Cached because a
    planning pass asks the same question for thousands of patients sharing a campaign and zone."""
    first = utc_day - dt.timedelta(days=2)  # a local date lags UTC by at most 12 hours; keep margin
    count = SEARCH_DAYS + 4
    every_day = tuple(range(7))
    hard_end = STRICT_END if strict else HARD_END
    campaign = [_zone_intervals(ZoneInfo(z), days, start, end, first, count) for z in zones]
    hard = [_zone_intervals(ZoneInfo(z), every_day, HARD_START, hard_end, first, count) for z in zones]
    overlap = reduce(_intersect, campaign)
    fallback = _intersect(_union(campaign), reduce(_intersect, hard))
    return tuple(overlap), tuple(fallback), tuple(campaign[0])


def _zone_intervals(
    zone: ZoneInfo, days: tuple[int, ...], start: dt.time, end: dt.time, first: dt.date, count: int
) -> list[Interval]:
    """One zone's openings; merged because a skipped local date (Samoa dropped 2011-12-30) maps
    onto the next day's opening."""
    intervals = []
    for offset in range(count):
        day = first + dt.timedelta(days=offset)
        if day.weekday() in days:
            interval = (_to_utc(day, start, zone), _to_utc(day, end, zone))
            if interval[0] < interval[1]:
                intervals.append(interval)
    return _union([intervals])


def _to_utc(day: dt.date, local: dt.time, zone: ZoneInfo) -> dt.datetime:
    return dt.datetime.combine(day, local, tzinfo=zone).astimezone(_UTC).replace(tzinfo=None)


def _intersect(a: list[Interval], b: list[Interval]) -> list[Interval]:
    """Intersection of two sorted lists of disjoint half-open intervals."""
    result = []
    i = j = 0
    while i < len(a) and j < len(b):
        start = max(a[i][0], b[j][0])
        end = min(a[i][1], b[j][1])
        if start < end:
            result.append((start, end))
        if a[i][1] <= b[j][1]:
            i += 1
        else:
            j += 1
    return result


def _union(lists: list[list[Interval]]) -> list[Interval]:
    """Union of interval lists, merged so that touching intervals make one opening."""
    merged: list[Interval] = []
    for start, end in sorted(interval for intervals in lists for interval in intervals):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def _naive_utc(value: dt.datetime) -> dt.datetime:
    """Naive values are UTC by contract; an aware one is converted rather than misread."""
    return value if value.tzinfo is None else value.astimezone(_UTC).replace(tzinfo=None)
