"""The opt-outs page (/app/optouts): numbers opted out now, a search by name, mrn or the last four
digits, and, for coordinators, opting a number out or releasing it.

The rules are outreach/listen/optouts.py, the functions behind `outreach optouts add|remove`: a
release needs the patient's recorded consent (the TCPA rule), pending messages are canceled by an
opt-out, and both are audited there with the person's email. The page adds one rule of its own: a
reason for an opt-out too, so the log says how the patient asked.

Numbers are shown masked and never travel in a URL: the search is a POST (names, mrns and digits
stay out of URLs and access logs), and a form names a number by the patient's mrn, or as the list
masks it when no patient has it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session

from outreach.apps.web.workspace.auth import pages
from outreach.apps.web.workspace.guard import PREFIX, gate, need
from outreach.config import Settings
from outreach.errors import UserError
from outreach.listen import optouts
from outreach.phones import mask
from outreach.store.db import session_scope
from outreach.team import sessions
from outreach.team.accounts import Role, may

router = APIRouter()
Viewer = Annotated[sessions.Current, Depends(need(Role.viewer))]
Coordinator = Annotated[sessions.Current, Depends(need(Role.coordinator))]
NOTICES = {
    "added": "Opted out: nothing more will be sent to this number; pending messages are canceled.",
    "already": "This number was already opted out; anything planned since is canceled.",
    "removed": "Opt-out removed with the patient's consent: texts to this number may resume.",
    "provider": "Opt-out removed here, but Twilio keeps refusing texts to this number until the patient "
    "texts START (they opted out with a carrier keyword).",
}


def _page(
    request: Request, current: sessions.Current, status: int = 200, query: str = "", **extra: Any
) -> Response:
    with session_scope(gate(request).engine) as db:
        listed = optouts.list_opt_outs(db)
        found = optouts.search(db, query) if query.strip() else None
    context: dict[str, Any] = {
        "me": current,
        "csrf": current.csrf_token,
        "listed": listed,
        "found": found,
        "query": query,
        "mask": mask,
        "can_write": may(current.role, Role.coordinator),
        "notice": NOTICES.get(request.query_params.get("notice", "")),
        "error": None,
        "number": "",
    }
    context.update(extra)
    return pages(request).page("optouts.html", status=status, **context)


@router.get("/optouts")
def optouts_page(request: Request, current: Viewer) -> Response:
    return _page(request, current)


@router.post("/optouts/search")
def search(request: Request, current: Viewer, q: Annotated[str, Form()] = "") -> Response:
    return _page(request, current, query=q[:100])


def _region(request: Request) -> str:
    settings: Settings = request.app.state.settings
    return settings.default_region


def _number(db: Session, mrn: str, listed: str, typed: str) -> str:
    """The number a form names: by the patient's mrn, as the list masks it, or typed in full."""
    if mrn:
        phone = optouts.patient_number(db, mrn)
        if phone is None:
            raise UserError(f"No patient with mrn {mrn!r}.")
        return phone
    if listed:
        matches = optouts.shown_as(db, listed)
        if len(matches) != 1:
            raise UserError(
                f"{len(matches) or 'No'} opted-out numbers show as {listed}; search for the patient "
                "by name or mrn and act from the result."
            )
        return matches[0].phone
    if not typed.strip():
        raise UserError("Give the number to opt out.")
    return typed


@router.post("/optouts/add")
def add(
    request: Request,
    current: Coordinator,
    reason: Annotated[str, Form()] = "",
    mrn: Annotated[str, Form()] = "",
    number: Annotated[str, Form()] = "",
) -> Response:
    door = gate(request)
    try:
        if not reason.strip():
            raise UserError("Give the reason: how and when the patient asked to stop.")
        with session_scope(door.engine) as db:
            change = optouts.add_opt_out(
                db,
                _number(db, mrn, "", number),
                by=current.email,
                reason=reason,
                at=door.clock(),
                default_region=_region(request),
            )
    except UserError as exc:
        return _page(request, current, 400, error=str(exc), number=number)
    notice = "added" if change.changed else "already"
    return RedirectResponse(f"{PREFIX}/optouts?notice={notice}", status_code=303)


@router.post("/optouts/remove")
def remove(
    request: Request,
    current: Coordinator,
    reason: Annotated[str, Form()] = "",
    mrn: Annotated[str, Form()] = "",
    listed: Annotated[str, Form()] = "",
) -> Response:
    """Release a number: remove_opt_out refuses without a consent reason (the same rule as the CLI)."""
    door = gate(request)
    try:
        with session_scope(door.engine) as db:
            change = optouts.remove_opt_out(
                db,
                _number(db, mrn, listed, ""),
                by=current.email,
                reason=reason,
                at=door.clock(),
                default_region=_region(request),
            )
    except optouts.OptOutRefused as exc:
        return _page(request, current, 409, error=str(exc))
    except UserError as exc:
        return _page(request, current, 400, error=str(exc))
    provider = change.previous is not None and change.previous.blocked_at_provider
    return RedirectResponse(
        f"{PREFIX}/optouts?notice={'provider' if provider else 'removed'}", status_code=303
    )
