"""`report_snapshots`: the saved result of a report, one row per kind of report.

The report engine's live pass over the outbox takes seconds at a million patients
(bench/README.md, `reports.py`), too long for a page. So a periodic job runs the very same call
(outreach/outcomes/snapshots.py) and stores its `as_json()` here; the reports page reads the row
and says how old it is. The row is replaced in one transaction, so a reader sees the old result or
the new one, never a mixture.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Date, DateTime, Float, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from outreach.store.models.base import Base


class ReportSnapshot(Base):
    """The latest result of one kind of report ("funnel": `outreach report --json`, all campaigns)."""

    __tablename__ = "report_snapshots"

    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    on_day: Mapped[dt.date] = mapped_column(Date)  # the day "eligible" was counted for
    computed_at: Mapped[dt.datetime] = mapped_column(DateTime)  # naive UTC, when the run started
    seconds: Mapped[float] = mapped_column(Float)  # how long the engine call and the save took
    body: Mapped[str] = mapped_column(Text)  # the report's JSON, exactly as `report --json` has it
