"""The inbox page (/app/inbox) and the rows fragment its htmx poll swaps in, so new replies appear
without a reload. The rules are outreach/team/conversations.py."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import RedirectResponse

from outreach.apps.web.workspace.auth import pages
from outreach.apps.web.workspace.guard import PREFIX, gate, need
from outreach.campaigns import CampaignFile
from outreach.store.db import session_scope
from outreach.team import conversations, sessions
from outreach.team.accounts import Role

router = APIRouter()
Viewer = Annotated[sessions.Current, Depends(need(Role.viewer))]
Polling = Annotated[sessions.Current, Depends(need(Role.viewer, poll=True))]
POLL_S = 5


def _filters(request: Request) -> conversations.Filters:
    query = request.query_params
    page = query.get("page", "1")
    return conversations.Filters(
        campaign=query.get("campaign") or None,
        assignee=query.get("assignee") or None,
        status=query.get("status") or conversations.OPEN,
        page=int(page) if page.isdigit() else 1,
    )


def _context(request: Request, current: sessions.Current) -> dict[str, Any]:
    filters = _filters(request)
    with session_scope(gate(request).engine) as db:
        conversations.sync(db)
        found = conversations.inbox(db, filters, current.user_id)
        people = conversations.colleagues(db)
    campaigns: Mapping[str, CampaignFile] = request.app.state.campaigns
    kept = {k: v for k, v in request.query_params.items() if k != "page" and v}
    return {
        "me": current,
        "csrf": current.csrf_token,
        "inbox": found,
        "filters": filters,
        "campaigns": sorted(campaigns),
        "people": people,
        "query": urlencode(kept),
        "poll_s": POLL_S,
    }


@router.get("/")
def home() -> Response:
    return RedirectResponse(f"{PREFIX}/inbox", status_code=303)


@router.get("/inbox")
def inbox_page(request: Request, current: Viewer) -> Response:
    return pages(request).page("inbox.html", **_context(request, current))


@router.get("/inbox/rows")
def inbox_rows(request: Request, current: Polling) -> Response:
    return pages(request).page("inbox_rows.html", **_context(request, current))
