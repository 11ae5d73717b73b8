"""Geometry of the reports page's inline SVG charts (templates/reports.html draws them).

No charting library and no script: the server computes every bar's box from the report's figures
and the template writes `<rect>`s, so the chart is in the page itself (CSP `script-src 'self'`, no
CDN) and reads the same with JavaScript off. The numbers are on the page as text too; a chart only
shows their proportions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FUNNEL_STAGES = (
    ("eligible", "Eligible today"),
    ("enrolled", "Enrolled"),
    ("sent", "Sent"),
    ("delivered", "Delivered"),
    ("engaged", "Engaged"),
    ("activated", "Activated"),
    ("gap_closed", "Gap closed"),
)
LABEL_WIDTH = 120
FUNNEL_WIDTH = 560
ROW = 26
DAILY_WIDTH = 640
DAILY_HEIGHT = 160
AXIS = 18


@dataclass(frozen=True)
class Bar:
    """One bar: its figure, its label, and its box in the SVG's user units."""

    key: str
    label: str
    value: int | None
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    top: int  # the largest value, for the axis note


def funnel(campaign: dict[str, Any]) -> Chart:
    """Horizontal bars, one per funnel stage that the report has (eligible is null for a campaign
    that is not active or whose file is not loaded), scaled to the largest."""
    stages = [(key, label, campaign.get(key)) for key, label in FUNNEL_STAGES]
    top = max([value for _, _, value in stages if value] or [1])
    span = FUNNEL_WIDTH - LABEL_WIDTH - 70
    bars = [
        Bar(key, label, value, LABEL_WIDTH, i * ROW + 3, (value or 0) / top * span, ROW - 8)
        for i, (key, label, value) in enumerate(stages)
    ]
    return Chart(FUNNEL_WIDTH, len(stages) * ROW, bars, top)


def daily(days: list[dict[str, Any]]) -> Chart:
    """Vertical bars per day: sends, and replies beside them, on one scale."""
    top = max([d["sent"] for d in days] + [d["replies"] for d in days] + [1])
    slot = DAILY_WIDTH / max(len(days), 1)
    plot = DAILY_HEIGHT - AXIS
    bars: list[Bar] = []
    for i, day in enumerate(days):
        for j, key in enumerate(("sent", "replies")):
            height = day[key] / top * (plot - 4)
            x = i * slot + 1 + j * (slot - 2) / 2
            bars.append(Bar(key, day["date"], day[key], x, plot - height, (slot - 2) / 2 - 0.5, height))
    return Chart(DAILY_WIDTH, DAILY_HEIGHT, bars, top)
