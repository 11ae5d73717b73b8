"""Calendar arithmetic and the date, time and duration fields of a campaign file.

Look-backs and re-enrollment are written as durations (`10y`, `6m`, `2w`, `7d`); months and
years are calendar months and years, clamped to the month's last day, because "a mammogram
within 2 years" means the same day two years ago, not 730 days. Eligibility SQL and the
scheduler depend on this arithmetic, so it lives here once.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict

from outreach.campaigns._wording import fail, show

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_DURATION = re.compile(r"^(\d+)([dwmy])$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_MONTH_DAY = re.compile(r"^(\d{2})-(\d{2})$")


class Duration(BaseModel):
    """`Nd`, `Nw`, `Nm` or `Ny`; months and years are calendar months and years."""

    model_config = ConfigDict(frozen=True)
    amount: int
    unit: Literal["d", "w", "m", "y"]

    @classmethod
    def parse(cls, text: str) -> Duration:
        match = _DURATION.match(text.strip())
        if not match:
            raise ValueError(f"{text!r} is not a duration; write a number and d, w, m or y (e.g. 10y, 7d)")
        return cls(amount=int(match.group(1)), unit=match.group(2))

    def months(self) -> int:
        return self.amount * 12 if self.unit == "y" else self.amount if self.unit == "m" else 0

    def days(self) -> int:
        return self.amount * 7 if self.unit == "w" else self.amount if self.unit == "d" else 0

    def before(self, day: dt.date) -> dt.date:
        """`day` minus this duration (Feb 29 minus 1y is Feb 28)."""
        return add_months(day, -self.months()) - dt.timedelta(days=self.days())

    def after(self, day: dt.date) -> dt.date:
        """`day` plus this duration (Jan 31 plus 1m is the last day of February)."""
        return add_months(day, self.months()) + dt.timedelta(days=self.days())

    def __str__(self) -> str:
        return f"{self.amount}{self.unit}"


def add_months(day: dt.date, months: int) -> dt.date:
    """Calendar month arithmetic clamped to the month's last day."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    month += 1
    for last in (31, 30, 29, 28):
        try:
            return day.replace(year=year, month=month, day=min(day.day, last))
        except ValueError:
            continue
    raise AssertionError("unreachable")


def _duration(value: object) -> Duration:
    if isinstance(value, Duration):
        return value
    if isinstance(value, str):
        try:
            return Duration.parse(value)
        except ValueError:
            pass
    raise fail(
        "duration",
        f"{show(value)} is not a duration; write a whole number and d, w, m or y, such as 7d, 2w, 6m or 10y",
    )


def _optional_duration(value: object) -> Duration | None:
    return None if value is None else _duration(value)


def _date(value: object) -> dt.date:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, str) and _DATE.match(value.strip()):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            raise fail(
                "date", f"{show(value)} is not a day of the calendar; check the month and day (YYYY-MM-DD)"
            ) from None
    raise fail("date", f"{show(value)} is not a date; write YYYY-MM-DD, such as 2026-09-01")


def _optional_date(value: object) -> dt.date | None:
    return None if value is None else _date(value)


def time_of_day(value: object) -> dt.time:
    """A send-window bound, "HH:MM" (24-hour); also read by the checks that warn about quiet hours."""
    if isinstance(value, dt.time):
        return value
    match = _TIME.match(value.strip()) if isinstance(value, str) else None
    if not match:
        raise fail(
            "time", f'{show(value)} is not a time of day; write 24-hour "HH:MM" in quotes, such as "09:00"'
        )
    return dt.time(int(match.group(1)), int(match.group(2)))


def _month_day(value: str) -> str:
    match = _MONTH_DAY.match(value)
    try:
        if not match:
            raise ValueError
        dt.date(2001, int(match.group(1)), int(match.group(2)))  # 2001: Feb 29 must not pass
    except ValueError:
        raise fail(
            "month_day",
            f'{show(value)} is not a month and day that occurs every year; write "MM-DD" in quotes, '
            'such as "07-01"',
        ) from None
    return value


def _optional_month_day(value: str | None) -> str | None:
    return None if value is None else _month_day(value)


def _weekday(value: object) -> object:
    if isinstance(value, str) and value not in WEEKDAYS:
        guess = value.strip().lower()[:3]
        hint = f"did you mean {guess}? " if guess in WEEKDAYS else ""
        raise fail("weekday", f"unknown weekday {show(value)}; {hint}use {', '.join(WEEKDAYS)}")
    return value


DurationField = Annotated[Duration, BeforeValidator(_duration)]
OptionalDuration = Annotated[Duration | None, BeforeValidator(_optional_duration)]
DateField = Annotated[dt.date, BeforeValidator(_date)]
OptionalDate = Annotated[dt.date | None, BeforeValidator(_optional_date)]
TimeField = Annotated[dt.time, BeforeValidator(time_of_day)]
OptionalMonthDay = Annotated[str | None, AfterValidator(_optional_month_day)]
WeekdayField = Annotated[Weekday, BeforeValidator(_weekday)]
