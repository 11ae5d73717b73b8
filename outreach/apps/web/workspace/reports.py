"""The reports page (/app/reports) and its CSV (/app/reports.csv): the funnel per campaign as inline
SVG, daily sends and replies over the last 30 days, figures by language and by step, failure codes
and opt-outs.

One code path: both call `outreach.outcomes.funnel.funnel` exactly as `outreach report` does (the
loaded campaign files, `on` = the clinic's today) and show its `as_json()`, the figures that
`outreach report --json` prints; tests/test_workspace_reports.py compares them figure by figure.
Viewers, coordinators and admins may all read it; nothing here changes anything.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from outreach.apps.web.workspace import charts
from outreach.apps.web.workspace.auth import pages
from outreach.apps.web.workspace.guard import gate, need
from outreach.clock import clinic_today
from outreach.config import Settings
from outreach.errors import UserError
from outreach.ingest.errorsfile import spreadsheet_safe
from outreach.outcomes.funnel import funnel
from outreach.team import sessions
from outreach.team.accounts import Role

router = APIRouter()
Viewer = Annotated[sessions.Current, Depends(need(Role.viewer))]

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


def _report(request: Request) -> tuple[dict[str, Any], str | None, str]:
    """The report for the query's filters (`campaign`, `since`), as `outreach report --json` has it."""
    settings: Settings = request.app.state.settings
    door = gate(request)
    campaign = request.query_params.get("campaign") or None
    since_text = request.query_params.get("since", "").strip()
    try:
        since = dt.date.fromisoformat(since_text) if since_text else None
    except ValueError:
        raise UserError(f"'since' must be a date (YYYY-MM-DD), not {since_text[:20]!r}.") from None
    on = clinic_today(settings.default_timezone, door.clock())
    found = funnel(
        door.engine, campaign_id=campaign, since=since, campaigns=request.app.state.campaigns, on=on
    )
    return found.as_json(), campaign, since_text


@router.get("/reports")
def reports_page(request: Request, current: Viewer) -> Response:
    files = sorted(request.app.state.campaigns)
    context: dict[str, Any] = {"me": current, "csrf": current.csrf_token, "error": None}
    context |= {"columns": COLUMNS, "rates": RATES, "breakdowns": BREAKDOWNS, "charts": charts}
    try:
        report, campaign, since = _report(request)
    except UserError as exc:
        campaign, since = request.query_params.get("campaign", ""), request.query_params.get("since", "")
        context |= {"report": None, "error": str(exc), "choices": files, "campaign": campaign, "since": since}
        return pages(request).page("reports.html", status=400, **context)
    choices = sorted({*files, *(c["id"] for c in report["campaigns"])})
    context |= {"report": report, "choices": choices, "campaign": campaign or "", "since": since}
    return pages(request).page("reports.html", **context)


@router.get("/reports.csv")
def reports_csv(request: Request, current: Viewer) -> Response:
    """The page's figures as CSV, one figure a row; every cell spreadsheet-safe (campaign, step and
    reason names come from files and replies)."""
    try:
        report, _, _ = _report(request)
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
