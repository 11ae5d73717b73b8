"""Campaign files: the schema a care team writes (DESIGN.md §5), loading, and validation messages.

SKELETON: the public names below are a contract other modules build on (eligibility, scheduler,
replies). Validation messages, segment counting and rendering are filled in by the campaigns work.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

EVENT_KINDS = (
    "colonoscopy",
    "fit",
    "fit_dna",
    "ct_colonography",
    "flexible_sigmoidoscopy",
    "mammogram",
    "cervical_cytology",
    "hpv_test",
    "flu_vaccine",
)
PLACEHOLDERS = ("first_name", "clinic_name", "clinic_phone", "link")
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_DURATION = re.compile(r"^(\d+)([dwmy])$")


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
        return cls(amount=int(match.group(1)), unit=match.group(2))  # type: ignore[arg-type]

    def months(self) -> int:
        return self.amount * 12 if self.unit == "y" else self.amount if self.unit == "m" else 0

    def days(self) -> int:
        return self.amount * 7 if self.unit == "w" else self.amount if self.unit == "d" else 0

    def before(self, day: dt.date) -> dt.date:
        """`day` minus this duration (Feb 29 minus 1y is Feb 28)."""
        return add_months(day, -self.months()) - dt.timedelta(days=self.days())

    def after(self, day: dt.date) -> dt.date:
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
    if not isinstance(value, str):
        raise ValueError("write a duration as text such as 10y, 6m, 2w or 7d")
    return Duration.parse(value)


DurationField = Annotated[
    Duration,
    Field(),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ActiveDates(_Strict):
    from_: dt.date = Field(alias="from")
    until: dt.date | None = None


class AgeRange(_Strict):
    min: int = Field(ge=0, le=130)
    max: int = Field(ge=0, le=130)


class CareGap(_Strict):
    """Eligible only when no `event` happened in the look-back: `within` (planning day - within <
    date <= planning day) or `since` a month-day ("07-01": since the latest July 1 on or before
    the planning day)."""

    event: str
    within: Duration | None = None
    since: str | None = None

    _within = field_validator("within", mode="before")(lambda v: None if v is None else _duration(v))

    def window_start(self, on: dt.date) -> dt.date:
        """The first day the event must *not* fall on or after (exclusive lower bound is
        `window_start - 1 day` for `within`); both forms return the earliest qualifying date."""
        if self.within is not None:
            return self.within.before(on) + dt.timedelta(days=1)
        assert self.since is not None
        month, day = (int(part) for part in self.since.split("-"))
        start = dt.date(on.year, month, day)
        return start if start <= on else dt.date(on.year - 1, month, day)


class Audience(_Strict):
    age: AgeRange
    sex: Literal["any", "female", "male"] = "any"
    care_gap: list[CareGap] = Field(default_factory=list)


class SendWindow(_Strict):
    days: list[Weekday] = Field(default_factory=lambda: ["mon", "tue", "wed", "thu", "fri"])
    start: dt.time = dt.time(9, 0)
    end: dt.time = dt.time(18, 0)


class Step(_Strict):
    id: str
    after: Duration
    only_if: Literal["no_reply"] | None = None
    text: dict[str, str]

    _after = field_validator("after", mode="before")(lambda v: _duration(v))


class ReplyRule(_Strict):
    keywords: list[str]
    outcome: str
    handoff: bool = False
    answer: dict[str, str] | None = None


class CampaignFile(_Strict):
    id: str = Field(pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$")
    name: str
    source: str | None = None
    active: ActiveDates
    audience: Audience
    send_window: SendWindow = SendWindow()
    re_enroll_after: Duration | None = None
    default_language: str = "en"
    steps: list[Step] = Field(min_length=1)
    replies: list[ReplyRule] = Field(default_factory=list)

    _re_enroll = field_validator("re_enroll_after", mode="before")(
        lambda v: None if v is None else _duration(v)
    )

    def is_active(self, on: dt.date) -> bool:
        return self.active.from_ <= on and (self.active.until is None or on <= self.active.until)

    def text_for(self, texts: dict[str, str], language: str) -> tuple[str, str]:
        """The text in `language`, else in the default language; returns (language, text)."""
        if language in texts:
            return language, texts[language]
        return self.default_language, texts[self.default_language]
