"""The conversation page (/app/conversations/{opaque id}): the thread, the reply box with its
segment count, canned replies, assign, close with an outcome, reopen, and the full number on
request. The rules are outreach/team/ (conversations, thread, staff); this is HTTP.

Every change is a POST answered with a redirect back to the page (a reload never resends), with a
notice key in the query; the notices' words are fixed here, so a URL can carry nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session

from outreach.apps.web.workspace.auth import pages
from outreach.apps.web.workspace.guard import PREFIX, Forbidden, gate, need
from outreach.campaigns import CampaignFile
from outreach.config import Settings
from outreach.errors import UserError
from outreach.phones import mask
from outreach.send.dispatch import Dispatch
from outreach.store.db import session_scope
from outreach.store.models import Conversation, User
from outreach.team import conversations, sessions, staff, thread
from outreach.team.accounts import Role, may
from outreach.team.audit import audit

log = logging.getLogger(__name__)
router = APIRouter()
Viewer = Annotated[sessions.Current, Depends(need(Role.viewer))]
Coordinator = Annotated[sessions.Current, Depends(need(Role.coordinator))]
Polling = Annotated[sessions.Current, Depends(need(Role.viewer, poll=True))]
POLL_S = 3
NOTICES = {
    "sent": "Reply queued: it goes out now; its status updates below.",
    "morning": "It is outside 08:00–21:00 for the patient: your reply waits for their morning "
    "(08:00 patient-local) and goes out then. The thread shows it as waiting.",
    "assigned": "Assignment saved.",
    "closed": "Conversation closed.",
    "reopened": "Conversation reopened.",
}


def _found(db: Session, public_id: str) -> Conversation:
    conversation = conversations.by_public_id(db, public_id)
    if conversation is None:
        raise Forbidden("No such conversation (or it is not yours to see).")
    return conversation


def _settings(request: Request) -> Settings:
    found: Settings = request.app.state.settings
    return found


def _campaigns(request: Request) -> Mapping[str, CampaignFile]:
    found: Mapping[str, CampaignFile] = request.app.state.campaigns
    return found


def _context(
    request: Request, db: Session, current: sessions.Current, conversation: Conversation
) -> dict[str, Any]:
    settings = _settings(request)
    person = staff.who(db, conversation, settings)
    campaign = staff.campaign_of(_campaigns(request), conversation)
    outcomes = [r.outcome for r in campaign.replies] if campaign else []
    assignee = db.get(User, conversation.assignee_id) if conversation.assignee_id else None
    return {
        "me": current,
        "csrf": current.csrf_token,
        "c": conversation,
        "person": person,
        "campaign": campaign,
        "masked": mask(conversation.phone),
        "full_number": None,
        "blocked": staff.opt_out_reason(db, conversation.phone),
        "items": thread.thread(db, conversation),
        "canned": staff.canned_replies(campaign, person.language),
        "people": conversations.colleagues(db),
        "assignee": assignee.email if assignee else None,
        "outcomes": list(dict.fromkeys([*outcomes, *conversations.GENERAL_OUTCOMES])),
        "can_write": may(current.role, Role.coordinator),
        "notice": NOTICES.get(request.query_params.get("notice", "")),
        "error": None,
        "body": "",
        "segments": thread.segments_label(""),
        "poll_s": POLL_S,
    }


@router.get("/conversations/{public_id}")
def conversation_page(request: Request, public_id: str, current: Viewer) -> Response:
    door = gate(request)
    with session_scope(door.engine) as db:
        now = door.clock()
        conversations.sync(db)
        conversation = _found(db, public_id)
        conversations.mark_read(db, conversation, current.user_id, now)
        audit(db, current.email, "conversation_view", f"conversation {public_id}", now)
        context = _context(request, db, current, conversation)
        key = request.query_params.get("canned")
        if key and context["can_write"]:
            chosen = staff.pick(context["canned"], key)
            if chosen is not None:
                context["body"] = staff.render_canned(
                    chosen, context["person"].first_name, _settings(request)
                )
                context["segments"] = thread.segments_label(context["body"])
    return pages(request).page("conversation.html", **context)


@router.get("/conversations/{public_id}/thread")
def thread_fragment(request: Request, public_id: str, current: Polling) -> Response:
    """The thread alone, for the page's poll: new replies and delivery statuses without a reload."""
    door = gate(request)
    with session_scope(door.engine) as db:
        conversations.sync(db)
        conversation = _found(db, public_id)
        conversations.mark_read(db, conversation, current.user_id, door.clock())
        items = thread.thread(db, conversation)
    return pages(request).page("thread.html", items=items, c=conversation, poll_s=POLL_S)


@router.post("/conversations/{public_id}/segments")
def segments(current: Coordinator, body: Annotated[str, Form()] = "") -> Response:
    return Response(thread.segments_label(body), media_type="text/plain; charset=utf-8")


@router.post("/conversations/{public_id}/reply")
def reply(
    request: Request, public_id: str, current: Coordinator, body: Annotated[str, Form()] = ""
) -> Response:
    door = gate(request)
    try:
        with session_scope(door.engine) as db:
            conversation = _found(db, public_id)
            queued = staff.send_reply(
                db,
                conversation,
                body,
                author_id=current.user_id,
                author=current.email,
                settings=_settings(request),
                now=door.clock(),
            )
    except UserError as exc:
        return _refused(request, current, public_id, body, str(exc))
    dispatch: Dispatch | None = request.app.state.dispatch
    if queued.status == "queued" and dispatch is not None:
        try:
            dispatch([queued.message_id])
        except Exception:  # the sweeper hands queued rows to the workers again
            log.exception("dispatch of staff message %s failed; the sweeper will send it", queued.message_id)
    notice = "sent" if queued.status == "queued" else "morning"
    return RedirectResponse(f"{PREFIX}/conversations/{public_id}?notice={notice}", status_code=303)


def _refused(request: Request, current: sessions.Current, public_id: str, body: str, why: str) -> Response:
    """The page again, with the text kept and the reason it was not sent (409: nothing changed,
    except the audit entry of a blocked attempt, committed separately)."""
    with session_scope(gate(request).engine) as db:
        context = _context(request, db, current, _found(db, public_id))
        if context["blocked"]:
            audit(
                db,
                current.email,
                "message_blocked",
                f"conversation {public_id}",
                gate(request).clock(),
                "opted out",
            )
    context.update(error=why, body=body, segments=thread.segments_label(body))
    return pages(request).page("conversation.html", status=409, **context)


@router.post("/conversations/{public_id}/assign")
def assign(
    request: Request, public_id: str, current: Coordinator, assignee: Annotated[str, Form()] = "me"
) -> Response:
    door = gate(request)
    target = current.user_id if assignee == "me" else (int(assignee) if assignee.isdigit() else None)
    try:
        with session_scope(door.engine) as db:
            conversations.assign(db, _found(db, public_id), target, actor=current.email, now=door.clock())
    except UserError as exc:
        return _refused(request, current, public_id, "", str(exc))
    return RedirectResponse(f"{PREFIX}/conversations/{public_id}?notice=assigned", status_code=303)


@router.post("/conversations/{public_id}/close")
def close(
    request: Request, public_id: str, current: Coordinator, outcome: Annotated[str, Form()] = ""
) -> Response:
    door = gate(request)
    try:
        with session_scope(door.engine) as db:
            conversations.close(
                db,
                _found(db, public_id),
                outcome,
                actor=current.email,
                actor_id=current.user_id,
                now=door.clock(),
            )
    except UserError as exc:
        return _refused(request, current, public_id, "", str(exc))
    return RedirectResponse(f"{PREFIX}/conversations/{public_id}?notice=closed", status_code=303)


@router.post("/conversations/{public_id}/reopen")
def reopen(request: Request, public_id: str, current: Coordinator) -> Response:
    door = gate(request)
    try:
        with session_scope(door.engine) as db:
            conversations.reopen(db, _found(db, public_id), actor=current.email, now=door.clock())
    except UserError as exc:
        return _refused(request, current, public_id, "", str(exc))
    return RedirectResponse(f"{PREFIX}/conversations/{public_id}?notice=reopened", status_code=303)


@router.post("/conversations/{public_id}/number")
def reveal(request: Request, public_id: str, current: Coordinator) -> Response:
    """The full number, on request and audited; shown in this response only (never in a URL)."""
    door = gate(request)
    with session_scope(door.engine) as db:
        conversation = _found(db, public_id)
        audit(db, current.email, "number_reveal", f"conversation {public_id}", door.clock())
        context = _context(request, db, current, conversation)
        context["full_number"] = conversation.phone
    return pages(request).page("conversation.html", **context)
