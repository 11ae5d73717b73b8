"""The audit page (/app/audit, admins only): the log filtered by person, action and dates, newest
first, a page at a time. outreach/team/audit.py reads it and masks every number; the page only
turns the clinic-local dates people type into the UTC the log keeps."""

from __future__ import annotations

import datetime as dt
from typing import Annotated
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request, Response

from outreach.apps.web.workspace.auth import pages
from outreach.apps.web.workspace.guard import gate, need
from outreach.store.db import session_scope
from outreach.team import audit, sessions
from outreach.team.accounts import Role

router = APIRouter()
Admin = Annotated[sessions.Current, Depends(need(Role.admin))]


def _day(value: str | None) -> dt.date | None:
    try:
        return dt.date.fromisoformat(value) if value else None
    except ValueError:  # a hand-edited URL: the filter is dropped, as the form shows
        return None


def _utc_start(day: dt.date, zone: ZoneInfo) -> dt.datetime:
    """Local midnight starting `day`, as the naive UTC the log keeps."""
    local = dt.datetime.combine(day, dt.time(), tzinfo=zone)
    return local.astimezone(dt.UTC).replace(tzinfo=None)


def _filters(request: Request, zone: ZoneInfo) -> tuple[audit.Filters, dict[str, str]]:
    """The filters, and the query as the form shows it (bad dates left out)."""
    query = request.query_params
    since, until = _day(query.get("from")), _day(query.get("to"))
    page = query.get("page", "1")
    filters = audit.Filters(
        actor=query.get("actor") or None,
        action=query.get("action") or None,
        since=_utc_start(since, zone) if since else None,
        until=_utc_start(until + dt.timedelta(days=1), zone) if until else None,  # `to` is inclusive
        page=int(page) if page.isdigit() else 1,
    )
    shown = {
        "actor": filters.actor or "",
        "action": filters.action or "",
        "from": since.isoformat() if since else "",
        "to": until.isoformat() if until else "",
    }
    return filters, shown


@router.get("/audit")
def audit_page(request: Request, current: Admin) -> Response:
    shown_pages = pages(request)
    filters, shown = _filters(request, shown_pages.zone)
    with session_scope(gate(request).engine) as db:
        found = audit.search(db, filters)
        known = audit.actions(db)
    return shown_pages.page(
        "audit.html",
        me=current,
        csrf=current.csrf_token,
        found=found,
        actions=known,
        shown=shown,
        query=urlencode({k: v for k, v in shown.items() if v}),
    )
