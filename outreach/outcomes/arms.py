"""Treated vs holdout, per campaign (DESIGN.md §11): enrolled and closed in each arm, the lift with
its interval (outreach/outcomes/lift.py), and the median days from a patient's first text to the
closure of their gap. Two grouped queries per report, whatever the number of enrollments."""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.orm import Session

from outreach.outcomes.counts import went_out
from outreach.outcomes.lift import lift
from outreach.store import sql
from outreach.store.models import Arm, EndReason, Enrollment, Message, MessageKind


@dataclass
class ArmFigures:
    enrolled: int = 0
    gap_closed: int = 0

    def as_json(self) -> dict[str, Any]:
        rate = round(100 * self.gap_closed / self.enrolled, 1) if self.enrolled else None
        return {"enrolled": self.enrolled, "gap_closed": self.gap_closed, "gap_closed_pct": rate}


@dataclass
class Comparison:
    treated: ArmFigures = field(default_factory=ArmFigures)
    holdout: ArmFigures = field(default_factory=ArmFigures)
    days_to_close: Counter[int] = field(default_factory=Counter)  # treated, credited closures

    def as_json(self) -> dict[str, Any]:
        found, why = lift(
            (self.treated.gap_closed, self.treated.enrolled), (self.holdout.gap_closed, self.holdout.enrolled)
        )
        return {
            "treated": self.treated.as_json(),
            "holdout": self.holdout.as_json(),
            "lift": found.as_json() if found is not None else None,
            "lift_note": why,
            "days_to_close_median": median(self.days_to_close),
        }


def median(counts: Counter[int]) -> float | None:
    """The median of values given as {value: how many}; None when there are none."""
    total = sum(counts.values())
    if not total:
        return None
    ordered = sorted(counts.items())

    def nth(index: int) -> int:
        seen = 0
        for value, n in ordered:
            seen += n
            if index < seen:
                return value
        raise AssertionError(index)

    return (nth((total - 1) // 2) + nth(total // 2)) / 2


def compare_arms(session: Session, scope: list[ColumnElement[bool]]) -> dict[str, Comparison]:
    """Per campaign id, both arms' figures; `scope` selects enrollments (campaign, --since)."""
    found: dict[str, Comparison] = defaultdict(Comparison)
    closed = func.sum(case((Enrollment.end_reason == EndReason.gap_closed, 1), else_=0))
    arms = (
        select(Enrollment.campaign_id, Enrollment.arm, func.count(), closed)
        .where(*scope)
        .group_by(Enrollment.campaign_id, Enrollment.arm)
    )
    for campaign, arm, n, gap_closed in session.execute(arms):
        figures = found[campaign].holdout if arm == Arm.holdout else found[campaign].treated
        figures.enrolled += n
        figures.gap_closed += int(gap_closed or 0)
    for campaign, closed_on, first_day, n in session.execute(_first_text_to_closure(scope)):
        found[campaign].days_to_close[(_as_date(closed_on) - _as_date(first_day)).days] += n
    return dict(found)


def _first_text_to_closure(scope: list[ColumnElement[bool]]) -> Any:
    """(campaign, closure day, day of the first text, count) for closures credited to a text."""
    first = (
        select(func.min(Message.went_out_at))
        .where(Message.enrollment_id == Enrollment.id, Message.kind == MessageKind.outreach, went_out())
        .scalar_subquery()
    )
    rows = (
        select(Enrollment.campaign_id, Enrollment.closed_on, sql.day_of(first).label("first_day"))
        .where(
            Enrollment.end_reason == EndReason.gap_closed, Enrollment.credited_message_id.is_not(None), *scope
        )
        .subquery()
    )
    return select(rows.c.campaign_id, rows.c.closed_on, rows.c.first_day, func.count()).group_by(
        rows.c.campaign_id, rows.c.closed_on, rows.c.first_day
    )


def _as_date(value: dt.date | str) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(value)
