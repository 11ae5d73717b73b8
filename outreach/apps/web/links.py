"""`GET /l/<token>`: a tracked link's redirect (DESIGN.md §11), public and fast.

No login and no signature: the token (72 random bits) is the only key, and it reveals nothing
about the patient, neither in the redirect (the campaign's own page) nor in the page an unknown or
expired token gets (the clinic's name and phone only). The hit is recorded by
outreach/outcomes/links.py inside the webhooks' group commit, so a burst of clicks shares
transactions; the answer goes out after the commit, like every webhook's.

Like the webhooks, the route is served on the app's fast path (a raw ASGI handler for GET and
HEAD under /l/, before FastAPI's routing and middleware); the FastAPI route serves the same
answer where the fast path does not apply (a mounted app).
"""

from __future__ import annotations

import html
import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request, Response
from sqlalchemy.exc import DBAPIError
from starlette.types import Receive, Scope, Send

from outreach.apps.web.commits import GroupCommit
from outreach.campaigns import CampaignFile
from outreach.clock import Clock
from outreach.config import Settings
from outreach.outcomes import links
from outreach.store import sql

log = logging.getLogger(__name__)

PREFIX = links.PATH
# Never cached (each hit is counted), never indexed, and the patient's phone does not tell the
# campaign's site where it came from.
_HEADERS = {"cache-control": "no-store", "referrer-policy": "no-referrer", "x-robots-tag": "noindex"}
_RAW_HEADERS = [(name.encode(), value.encode()) for name, value in _HEADERS.items()]
_AGENT = b"user-agent"


class LinkRoute:
    """Answers a hit: 302 to the campaign's page, or the clinic's page (404)."""

    def __init__(
        self, settings: Settings, commits: GroupCommit, campaigns: Mapping[str, CampaignFile], clock: Clock
    ) -> None:
        self._settings = settings
        self._commits = commits
        self._campaigns = campaigns
        self._clock = clock
        self._page = _unknown_page(settings).encode()

    async def answer(self, token: str, method: str, agent: str) -> str | None:
        """The page to redirect to, or None for the clinic's page; the hit recorded first."""
        if not links.well_formed(token):
            return None
        now, ttl = self._clock(), self._settings.link_ttl_days
        try:
            hit = await self._commits.run(
                lambda session: links.follow(
                    sql.connection(session), token, method=method, user_agent=agent, now=now, ttl_days=ttl
                )
            )
        except DBAPIError:
            log.exception("a link hit could not be recorded")
            return None
        campaign = self._campaigns.get(hit.campaign_id) if hit is not None else None
        return campaign.link if campaign is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The fast path: a raw ASGI handler for GET and HEAD on /l/<token>."""
        agent = next((value for name, value in scope["headers"] if name == _AGENT), b"")
        token = scope["path"][len(PREFIX) :]
        target = await self.answer(token, scope["method"], agent.decode("latin-1"))
        if target is None:
            headers = [(b"content-type", b"text/html; charset=utf-8"), *_RAW_HEADERS]
            headers.append((b"content-length", str(len(self._page)).encode()))
            await send({"type": "http.response.start", "status": 404, "headers": headers})
            body = b"" if scope["method"] == "HEAD" else self._page
            await send({"type": "http.response.body", "body": body})
            return
        headers = [(b"location", target.encode()), (b"content-length", b"0"), *_RAW_HEADERS]
        await send({"type": "http.response.start", "status": 302, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    def response(self, target: str | None) -> Response:
        if target is None:
            return Response(self._page, 404, media_type="text/html; charset=utf-8", headers=_HEADERS)
        return Response(status_code=302, headers={"location": target, **_HEADERS})


def register(
    app: FastAPI,
    settings: Settings,
    commits: GroupCommit,
    campaigns: Mapping[str, CampaignFile],
    clock: Clock,
) -> LinkRoute:
    """Add the link route to `app`; returns the raw handler for the app's fast path."""
    route = LinkRoute(settings, commits, campaigns, clock)

    @app.api_route(f"{PREFIX}{{token}}", methods=["GET", "HEAD"], include_in_schema=False)
    async def follow_link(token: str, request: Request) -> Response:
        agent = request.headers.get("user-agent", "")
        return route.response(await route.answer(token, request.method, agent))

    return route


def _unknown_page(settings: Settings) -> str:
    """The friendly answer to a link that is unknown, expired or whose campaign has no page now."""
    name = html.escape(settings.clinic_name or "Your clinic")
    phone = html.escape(settings.clinic_phone or "")
    call = f' Please call us at <a href="tel:{phone}">{phone}</a>.' if phone else ""
    return (
        '<!doctype html><html lang="en"><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{name}</title><body><h1>{name}</h1>"
        f"<p>This link is no longer active.{call}</p></body></html>"
    )
