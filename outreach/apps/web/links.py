"""`GET /l/<token>`: a tracked link's redirect (DESIGN.md §11), public and fast.

No login and no signature: the token (72 random bits) is the only key, and it reveals nothing
about the patient, neither in the redirect (the campaign's own page) nor in the page an unknown or
expired token gets (the clinic's name and phone only). The hit is recorded by
outreach/outcomes/links.py inside the webhooks' group commit, so a burst of clicks shares
transactions; the answer goes out after the commit, like every webhook's.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request, Response
from sqlalchemy.exc import DBAPIError

from outreach.apps.web.commits import GroupCommit
from outreach.campaigns import CampaignFile
from outreach.clock import Clock
from outreach.config import Settings
from outreach.outcomes import links
from outreach.store import sql

log = logging.getLogger(__name__)

# Never cached (each hit is counted), never indexed, and the patient's phone does not tell the
# campaign's site where it came from.
_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex"}


def register(
    app: FastAPI,
    settings: Settings,
    commits: GroupCommit,
    campaigns: Mapping[str, CampaignFile],
    clock: Clock,
) -> None:
    """Add the link route to `app`."""
    page = _unknown_page(settings)

    @app.api_route(f"{links.PATH}{{token}}", methods=["GET", "HEAD"], include_in_schema=False)
    async def follow_link(token: str, request: Request) -> Response:
        if not links.well_formed(token):
            return page
        now = clock()
        agent = request.headers.get("user-agent", "")
        try:
            hit = await commits.run(
                lambda session: links.follow(
                    sql.connection(session),
                    token,
                    method=request.method,
                    user_agent=agent,
                    now=now,
                    ttl_days=settings.link_ttl_days,
                )
            )
        except DBAPIError:
            log.exception("a link hit could not be recorded")
            hit = None
        campaign = campaigns.get(hit.campaign_id) if hit is not None else None
        if campaign is None or campaign.link is None:
            return page
        return Response(status_code=302, headers={"Location": campaign.link, **_HEADERS})


def _unknown_page(settings: Settings) -> Response:
    """The friendly answer to a link that is unknown, expired or whose campaign has no page now."""
    name = html.escape(settings.clinic_name or "Your clinic")
    phone = html.escape(settings.clinic_phone or "")
    call = f' Please call us at <a href="tel:{phone}">{phone}</a>.' if phone else ""
    body = (
        '<!doctype html><html lang="en"><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{name}</title><body><h1>{name}</h1>"
        f"<p>This link is no longer active.{call}</p></body></html>"
    )
    return Response(body, status_code=404, media_type="text/html; charset=utf-8", headers=_HEADERS)
