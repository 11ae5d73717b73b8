"""The reports page (/app/reports) and its CSV (/app/reports.csv): the funnel per campaign as inline
SVG, daily sends and replies over the last 30 days, figures by language and by step, failure codes
and opt-outs.

One code path: the figures are `outreach.outcomes.funnel.funnel`'s `as_json()`, called exactly as
`outreach report` calls it (the loaded campaign files, `on` = the clinic's today), the figures that
`outreach report --json` prints; tests/test_workspace_reports.py compares them figure by figure.

The default view (and a campaign filter) reads the saved result of that call
(outreach/outcomes/snapshots.py) and says how old it is: the live pass takes seconds at a million
patients. A result older than OUTREACH_REPORT_REFRESH_EVERY (or counted for another day) is still
shown, and refreshed in a background thread of this process; with none saved yet the page computes
it once and saves it. A `since` filter, which the saved whole report cannot answer, is computed
live. Viewers, coordinators and admins may all read it; coordinators and admins may start a
refresh ("Refresh now").
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import RedirectResponse
from sqlalchemy import Engine

from outreach.apps.web.workspace import charts
from outreach.apps.web.workspace.auth import pages
from outreach.apps.web.workspace.guard import PREFIX, gate, need
from outreach.campaigns import CampaignFile
from outreach.clock import clinic_today
from outreach.config import Settings
from outreach.errors import UserError
from outreach.ingest.errorsfile import spreadsheet_safe
from outreach.outcomes import snapshots
from outreach.outcomes.funnel import funnel
from outreach.team import sessions
from outreach.team.accounts import Role, may

log = logging.getLogger(__name__)
router = APIRouter()
Viewer = Annotated[sessions.Current, Depends(need(Role.viewer))]
Coordinator = Annotated[sessions.Current, Depends(need(Role.coordinator))]

# The columns of the by-language and by-step tables (languages add "enrolled" in front).
COLUMNS = (
    ("sent", "Sent"),
    ("delivered", "Delivered"),
    ("undelivered", "Undelivered"),
    ("failed", "Failed"),
    ("engaged", "Engaged"),
    ("activated", "Activated"),
    ("clicked", "Clicked"),
    ("gap_closed", "Gap closed"),
    ("opted_out", "Opted out"),
)
RATES = ("delivered_pct", "engaged_pct", "activated_pct", "gap_closed_pct")
BREAKDOWNS = (
    ("failed_codes", "failed", "Failed (error code)"),
    ("undelivered_codes", "undelivered", "Undelivered (error code)"),
    ("opted_out_by", "opted_out", "Opted out (how)"),
)
CSV_HEADER = ("campaign", "section", "item", "figure", "value")


class Refresher:
    """This process's background refresh: at most one thread at a time (the engine's lock makes it
    one across processes too); `wait` lets a test see it finish."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(
        self, engine: Engine, campaigns: Mapping[str, CampaignFile], on: dt.date, now: dt.datetime
    ) -> None:
        with self._lock:
            if self.running:
                return
            args = (engine, dict(campaigns), on, now)
            self._thread = threading.Thread(target=_refresh, args=args, name="report-refresh", daemon=True)
            self._thread.start()

    def wait(self, timeout: float | None = None) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)


def _refresh(engine: Engine, campaigns: Mapping[str, CampaignFile], on: dt.date, now: dt.datetime) -> None:
    try:
        snapshots.refresh(engine, campaigns, on, now=now)
    except Exception:  # a thread's error would otherwise vanish; the page keeps the older result
        log.exception("refreshing the saved report failed; the page shows the previous one")


# One per process, whatever the number of apps in it (the workspace is a mounted sub-app, and
# tests build several): the engine's lock is per process too.
REFRESHER = Refresher()


def refresher(request: Request) -> Refresher:
    """The process's Refresher (a function, so a route names what it uses)."""
    return REFRESHER


@dataclass(frozen=True)
class View:
    """What the page shows: the report, and where it came from (`saved` None: computed now)."""

    report: dict[str, Any]
    saved: snapshots.Saved | None
    campaign: str | None
    since: str
    first: bool = False  # there was none saved: computed now, and saved
    refreshing: bool = False


def _report(request: Request) -> View:
    """The report for the query's filters (`campaign`, `since`), as `outreach report --json` has it:
    the saved one when it can answer, else computed now."""
    settings: Settings = request.app.state.settings
    door = gate(request)
    campaign = request.query_params.get("campaign") or None
    since_text = request.query_params.get("since", "").strip()
    try:
        since = dt.date.fromisoformat(since_text) if since_text else None
    except ValueError:
        raise UserError(f"'since' must be a date (YYYY-MM-DD), not {since_text[:20]!r}.") from None
    now = door.clock()
    on = clinic_today(settings.default_timezone, now)
    files: Mapping[str, CampaignFile] = request.app.state.campaigns
    if since is None:
        view = _from_saved(request, files, on, now, campaign)
        if view is not None:
            return view
    found = funnel(door.engine, campaign_id=campaign, since=since, campaigns=files, on=on)
    return View(found.as_json(), None, campaign, since_text)


def _from_saved(
    request: Request, files: Mapping[str, CampaignFile], on: dt.date, now: dt.datetime, campaign: str | None
) -> View | None:
    """The saved report (or the campaign's part of it): saved now if there was none, refreshed in the
    background if stale. None when it cannot answer (being saved elsewhere, a campaign not in it)."""
    settings: Settings = request.app.state.settings
    engine = gate(request).engine
    first = False
    saved = snapshots.latest(engine)
    if saved is None:
        saved, first = snapshots.refresh(engine, files, on, now=now), True
    elif saved.stale(now, settings.report_refresh_every, on):
        refresher(request).start(engine, files, on, now)
    if saved is None:
        return None
    part = saved.report if campaign is None else saved.only(campaign)
    if part is None:
        return None
    return View(part, saved, campaign, "", first=first, refreshing=refresher(request).running)


def freshness(view: View, now: dt.datetime, every: dt.timedelta) -> str:
    """ "Figures as of 14:05 UTC (3 min ago; refreshed every 5 minutes)", or why it is computed now."""
    if view.saved is None and view.since:
        return "Figures computed now for this filter (the saved report covers every enrollment)."
    if view.saved is None:  # nothing saved yet, and another process is saving it
        return "Figures computed now (the first saved report is being computed)."
    at = view.saved.computed_at
    when = at.strftime("%H:%M UTC") if at.date() == now.date() else at.strftime("%Y-%m-%d %H:%M UTC")
    minutes = int(view.saved.age(now).total_seconds() // 60)
    text = f"Figures as of {when} ({minutes} min ago; refreshed every {_duration(every)})"
    if view.first:
        text += "; computed now, as none was saved yet"
    return text + "."


def _duration(every: dt.timedelta) -> str:
    seconds = int(every.total_seconds())
    if seconds % 3600 == 0:
        return "hour" if seconds == 3600 else f"{seconds // 3600} hours"
    if seconds % 60 == 0:
        return "minute" if seconds == 60 else f"{seconds // 60} minutes"
    return f"{seconds} seconds"


@router.get("/reports")
def reports_page(request: Request, current: Viewer) -> Response:
    files = sorted(request.app.state.campaigns)
    context: dict[str, Any] = {"me": current, "csrf": current.csrf_token, "error": None}
    context |= {"columns": COLUMNS, "rates": RATES, "breakdowns": BREAKDOWNS, "charts": charts}
    context["can_refresh"] = may(current.role, Role.coordinator)
    try:
        view = _report(request)
    except UserError as exc:
        campaign, since = request.query_params.get("campaign", ""), request.query_params.get("since", "")
        context |= {"report": None, "error": str(exc), "choices": files, "campaign": campaign, "since": since}
        return pages(request).page("reports.html", status=400, **context)
    report = view.report
    choices = sorted({*files, *(c["id"] for c in report["campaigns"])})
    context |= {"report": report, "choices": choices, "campaign": view.campaign or "", "since": view.since}
    context |= {"view": view, "freshness": freshness(view, gate(request).clock(), _every(request))}
    return pages(request).page("reports.html", **context)


@router.get("/reports/status")
def reports_status(request: Request, current: Viewer) -> Response:
    """The "being refreshed" line, polled by htmx until the refresh is over."""
    return pages(request).page("reports_status.html", refreshing=refresher(request).running)


@router.post("/reports/refresh")
def refresh_now(request: Request, current: Coordinator) -> Response:
    """Start a refresh in the background; the page says it is being refreshed."""
    settings: Settings = request.app.state.settings
    door = gate(request)
    now = door.clock()
    on = clinic_today(settings.default_timezone, now)
    refresher(request).start(door.engine, request.app.state.campaigns, on, now)
    return RedirectResponse(f"{PREFIX}/reports", 303)


def _every(request: Request) -> dt.timedelta:
    settings: Settings = request.app.state.settings
    return settings.report_refresh_every


@router.get("/reports.csv")
def reports_csv(request: Request, current: Viewer) -> Response:
    """The page's figures as CSV, one figure a row; every cell spreadsheet-safe (campaign, step and
    reason names come from files and replies)."""
    try:
        report = _report(request).report
    except UserError as exc:
        return Response(str(exc) + "\n", status_code=400, media_type="text/plain")
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_HEADER)
    for row in rows(report):
        writer.writerow([spreadsheet_safe("" if cell is None else str(cell)) for cell in row])
    name = f"outreach-report-{report['on']}.csv"
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def rows(report: dict[str, Any]) -> Iterator[tuple[str, str, str, str, Any]]:
    """(campaign, section, item, figure, value): every figure the page shows, in its order."""
    for c in report["campaigns"]:
        cid = c["id"]
        for key, _ in charts.FUNNEL_STAGES:
            yield cid, "funnel", key, "count", c[key]
        for rate in RATES:
            yield cid, "funnel", rate, "percent_of_sent", c[rate]
        for day in c["daily"]:
            yield cid, "daily", day["date"], "sent", day["sent"]
            yield cid, "daily", day["date"], "replies", day["replies"]
        for lang in c["languages"]:
            yield cid, "language", lang["language"], "enrolled", lang["enrolled"]
            for key, _ in COLUMNS:
                yield cid, "language", lang["language"], key, lang[key]
        for step in c["steps"]:
            for key, _ in COLUMNS:
                yield cid, "step", step["step"], key, step[key]
        for field, figure, _ in BREAKDOWNS:
            for item, n in c[field].items():
                yield cid, field, item, figure, n
