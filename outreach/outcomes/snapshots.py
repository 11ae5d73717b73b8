"""Saved reports: the funnel of every campaign, computed in the background and read by the page.

At a million patients the report's live pass takes seconds (bench/README.md, `reports.py`), so the
reports page does what dashboards do: it shows the saved result of the same engine call and says
how old it is. `refresh` runs `funnel(...)` exactly as `outreach report --json` does for the whole
report (every campaign, no `since`, `on` = the clinic's day) and stores its `as_json()` in
`report_snapshots` (one row per kind, replaced in one transaction); `latest` reads it back. One code
path: the saved JSON is what `report --json` prints for the same database and day, and a
campaign's part of it (`Saved.only`) is what `report --json ID` prints.

Who refreshes: Celery beat every OUTREACH_REPORT_REFRESH_EVERY (workers/tasks.py), and the web
process in a background thread when a page read finds the result older than that (the embedded
default has no beat). At most one refresh runs at a time: a lock in this process, and on
PostgreSQL a session-level advisory lock keyed by schema, so other processes skip rather than
repeat the same seconds-long pass.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, delete, select

from outreach.campaigns import CampaignFile
from outreach.outcomes.funnel import funnel
from outreach.store import sql
from outreach.store.db import session_scope
from outreach.store.models import ReportSnapshot

KIND = "funnel"  # the whole `outreach report --json`

# PostgreSQL: one refresher per schema across processes.
TRY_LOCK = sql.advisory("pg_try_advisory_lock", sql.Lock.REPORT)
UNLOCK = sql.advisory("pg_advisory_unlock", sql.Lock.REPORT)
_IN_PROCESS = threading.Lock()


@dataclass(frozen=True)
class Saved:
    """A saved report: its JSON, when its computation started (naive UTC) and how long it took."""

    report: dict[str, Any]
    computed_at: dt.datetime
    seconds: float

    @property
    def on(self) -> dt.date:
        return dt.date.fromisoformat(self.report["on"])

    def age(self, now: dt.datetime) -> dt.timedelta:
        return max(now - self.computed_at, dt.timedelta(0))

    def stale(self, now: dt.datetime, every: dt.timedelta, on: dt.date) -> bool:
        """Older than the refresh interval, or counted for another day than the clinic's today."""
        return self.on != on or self.age(now) >= every

    def only(self, campaign_id: str) -> dict[str, Any] | None:
        """The report `outreach report --json ID` prints, from this whole one: the campaign's part,
        and totals that are that campaign's figures. None when the campaign is not in it."""
        found = [c for c in self.report["campaigns"] if c["id"] == campaign_id]
        if not found:
            return None
        mine = found[0]
        totals = {key: 1 if key == "campaigns" else mine[key] for key in self.report["totals"]}
        return {**self.report, "campaigns": [mine], "totals": totals}


def refresh(
    engine: Engine, campaigns: Mapping[str, CampaignFile], on: dt.date, *, now: dt.datetime
) -> Saved | None:
    """Compute the whole report for `on` and save it as of `now`; None (nothing done) when another
    refresh is running, here or in another process."""
    with one_at_a_time(engine) as mine:
        if not mine:
            return None
        started = time.perf_counter()
        body = json.dumps(funnel(engine, campaigns=campaigns, on=on).as_json(), ensure_ascii=False)
        with session_scope(engine) as session:
            session.execute(delete(ReportSnapshot).where(ReportSnapshot.kind == KIND))
            seconds = round(time.perf_counter() - started, 3)
            session.add(ReportSnapshot(kind=KIND, on_day=on, computed_at=now, seconds=seconds, body=body))
        return Saved(json.loads(body), now, seconds)


def latest(engine: Engine) -> Saved | None:
    """The saved report, or None before the first refresh."""
    with session_scope(engine) as session:
        row = session.execute(
            select(ReportSnapshot.body, ReportSnapshot.computed_at, ReportSnapshot.seconds).where(
                ReportSnapshot.kind == KIND
            )
        ).first()
    return None if row is None else Saved(json.loads(row.body), row.computed_at, row.seconds)


@contextmanager
def one_at_a_time(engine: Engine) -> Iterator[bool]:
    """True inside when this caller is the only refresher (this process's lock, and on PostgreSQL
    the schema's advisory lock, held by a connection of its own for the whole run)."""
    if not _IN_PROCESS.acquire(blocking=False):
        yield False
        return
    try:
        if engine.dialect.name != "postgresql":
            yield True
            return
        with engine.connect() as conn:
            claimed = bool(conn.execute(TRY_LOCK).scalar_one())
            conn.commit()
            try:
                yield claimed
            finally:
                if claimed:
                    conn.execute(UNLOCK)
                    conn.commit()
    finally:
        _IN_PROCESS.release()
