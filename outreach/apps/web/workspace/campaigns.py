"""The campaigns page (/app/campaigns): each campaign's state, problems, audience today, the week's
coming sends and its texts rendered for a few patients; coordinators pause and resume it.

The figures are outreach/team/campaign_room.py's and the pause is outreach/send/pause.py's, the
functions behind `outreach campaigns validate|preview|pause|resume`, so the page and the CLI say
the same thing. Pause and resume are audited there with the person's email. A resume hands what is
due to the workers at once (beat's enqueue, every few seconds, would soon too); a broker that
refuses loses nothing: the rows wait as queued for the sweeper.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import RedirectResponse

from outreach.apps.web.workspace.auth import pages
from outreach.apps.web.workspace.guard import PREFIX, gate, need
from outreach.campaigns import CampaignFile
from outreach.config import Settings
from outreach.plan.enqueue import enqueue_due
from outreach.send import pause
from outreach.send.dispatch import Dispatch
from outreach.store.db import session_scope
from outreach.team import campaign_room, sessions
from outreach.team.accounts import Role, may

log = logging.getLogger(__name__)
router = APIRouter()
Viewer = Annotated[sessions.Current, Depends(need(Role.viewer))]
Coordinator = Annotated[sessions.Current, Depends(need(Role.coordinator))]
NOTICES = {
    "paused": "Paused: nothing of this campaign is planned, queued or sent until it is resumed. "
    "Nothing was canceled.",
    "resumed": "Resumed: its due messages go out now, each within the patient's window and the caps.",
    "unchanged": "Nothing changed: the campaign was already in that state.",
}


def _campaigns(request: Request) -> Mapping[str, CampaignFile]:
    found: Mapping[str, CampaignFile] = request.app.state.campaigns
    return found


@router.get("/campaigns")
def campaigns_page(request: Request, current: Viewer) -> Response:
    door = gate(request)
    settings: Settings = request.app.state.settings
    with session_scope(door.engine) as db:
        room = campaign_room.room(db, _campaigns(request), settings=settings, now=door.clock())
    return pages(request).page(
        "campaigns.html",
        me=current,
        csrf=current.csrf_token,
        room=room,
        can_pause=may(current.role, Role.coordinator),
        notice=NOTICES.get(request.query_params.get("notice", "")),
    )


def _known(request: Request, campaign_id: str) -> CampaignFile | Response:
    campaign = _campaigns(request).get(campaign_id)
    if campaign is None:
        return pages(request).page("forbidden.html", status=404, reason=f"No campaign {campaign_id!r} here.")
    return campaign


@router.post("/campaigns/{campaign_id}/pause")
def pause_campaign(request: Request, campaign_id: str, current: Coordinator) -> Response:
    campaign = _known(request, campaign_id)
    if isinstance(campaign, Response):
        return campaign
    door = gate(request)
    with session_scope(door.engine) as db:
        change = pause.pause(db, campaign.id, campaign.name, by=current.email, at=door.clock())
    return RedirectResponse(f"{PREFIX}/campaigns?notice={'paused' if change.changed else 'unchanged'}", 303)


@router.post("/campaigns/{campaign_id}/resume")
def resume_campaign(request: Request, campaign_id: str, current: Coordinator) -> Response:
    campaign = _known(request, campaign_id)
    if isinstance(campaign, Response):
        return campaign
    door = gate(request)
    now = door.clock()
    with session_scope(door.engine) as db:
        change = pause.resume(db, campaign.id, by=current.email, at=now)
    if change.changed:
        _hand_over(request, now)
    return RedirectResponse(f"{PREFIX}/campaigns?notice={'resumed' if change.changed else 'unchanged'}", 303)


def _hand_over(request: Request, now: dt.datetime) -> None:
    dispatch: Dispatch | None = request.app.state.dispatch
    try:
        enqueue_due(gate(request).engine, now, dispatch=dispatch)
    except Exception:  # the broker: the rows are committed as queued, the sweeper sends them
        log.exception("handing a resumed campaign's due messages to the workers failed; the sweeper will")
