"""The care-team workspace (DESIGN.md §12), served by `outreach web` under /app/ beside the webhooks.

- guard.py: security headers, the session, CSRF, role checks (`need(role)`)
- auth.py: sign-in, TOTP enrolment and codes, sign-out
- inbox.py, conversation.py: the inbox; users.py, audit_log.py, optouts.py, roster.py, campaigns.py,
  reports.py (charts.py): the control room
- render.py: Jinja2; templates/ and static/ (htmx, CSS)

The rules live in outreach/team/ (no HTTP there). The workspace is its own FastAPI app mounted at
/app, so its middleware (the security headers) wraps only its own pages: the webhooks never pass
through it (they are served before routing, outreach/apps/web/app.py).
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import FastAPI, Request, Response
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine
from starlette.types import ASGIApp

from outreach.apps.web.workspace import audit_log, auth, conversation, inbox, optouts, reports, roster, users
from outreach.apps.web.workspace import campaigns as campaigns_page
from outreach.apps.web.workspace.guard import Forbidden, Gate, Redirect, SecurityHeaders
from outreach.apps.web.workspace.render import STATIC, Pages
from outreach.campaigns import CampaignFile
from outreach.clock import Clock
from outreach.config import Settings
from outreach.send.dispatch import Dispatch

PREFIX = "/app"


def create_workspace(
    settings: Settings,
    *,
    engine: Engine,
    campaigns: Mapping[str, CampaignFile],
    dispatch: Dispatch | None,
    clock: Clock,
    public_url: str,
) -> ASGIApp:
    """The workspace's ASGI app, to mount at /app."""
    https = public_url.startswith("https://")
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.gate = Gate(engine, clock, secure=https)
    app.state.pages = Pages(settings.default_timezone)
    app.state.settings = settings
    app.state.campaigns = campaigns
    app.state.dispatch = dispatch
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for router in (
        auth.router,
        inbox.router,
        conversation.router,
        users.router,
        audit_log.router,
        optouts.router,
        roster.router,
        campaigns_page.router,
        reports.router,
    ):
        app.include_router(router)

    @app.exception_handler(Redirect)
    async def redirect(request: Request, exc: Redirect) -> Response:
        if request.headers.get("hx-request"):
            return Response(status_code=200, headers={"HX-Redirect": exc.location})
        return RedirectResponse(exc.location, status_code=303)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        return app.state.pages.page("forbidden.html", status=403, reason=str(exc))  # type: ignore[no-any-return]

    return SecurityHeaders(app, https=https)
