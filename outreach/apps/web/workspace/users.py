"""The users page (/app/users, admins only): list, add, disable, reset the second factor.

The rules are outreach/team/accounts.py, the same functions `outreach users add|disable|reset-mfa`
call, so the page and the CLI cannot disagree on what a valid account is; each change is audited
there with the admin's email as the actor. The admin sets the first password (as `users add` asks
for one); the new person enrols an authenticator with a QR code at the first sign-in, so the TOTP
secret is never shown to the admin on this page.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import RedirectResponse

from outreach.apps.web.workspace.auth import pages
from outreach.apps.web.workspace.guard import PREFIX, gate, need
from outreach.errors import UserError
from outreach.store.db import session_scope
from outreach.team import sessions
from outreach.team.accounts import Role, disable_user, list_users, reset_mfa
from outreach.team.accounts import add_user as add_account

router = APIRouter()
Admin = Annotated[sessions.Current, Depends(need(Role.admin))]
NOTICES = {
    "added": "Account added. They sign in with the password you set; admins and coordinators enrol "
    "an authenticator from a QR code at the first sign-in.",
    "disabled": "Account disabled; its sessions have ended.",
    "mfa_reset": "Second factor reset; the next sign-in enrols a new authenticator.",
}


def _rows(now: dt.datetime, request: Request) -> list[dict[str, Any]]:
    with session_scope(gate(request).engine) as db:
        return [
            {
                "email": u.email,
                "role": u.role,
                "mfa": u.totp_confirmed_at is not None,
                "state": "disabled"
                if u.disabled
                else ("locked" if u.locked_until and u.locked_until > now else "active"),
                "last_login_at": u.last_login_at,
            }
            for u in list_users(db)
        ]


def _page(request: Request, current: sessions.Current, status: int = 200, **extra: Any) -> Response:
    context: dict[str, Any] = {
        "me": current,
        "csrf": current.csrf_token,
        "users": _rows(gate(request).clock(), request),
        "roles": list(Role),
        "notice": NOTICES.get(request.query_params.get("notice", "")),
        "error": None,
        "form": {"email": "", "role": Role.coordinator.value},
    }
    context.update(extra)
    return pages(request).page("users.html", status=status, **context)


@router.get("/users")
def users_page(request: Request, current: Admin) -> Response:
    return _page(request, current)


@router.post("/users/add")
def add_user(
    request: Request,
    current: Admin,
    email: Annotated[str, Form()] = "",
    role: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
) -> Response:
    door = gate(request)
    try:
        with session_scope(door.engine) as db:
            add_account(db, email, role, password, by=current.email, at=door.clock())
    except UserError as exc:  # the form again, the email and role kept, the password not
        return _page(request, current, 400, error=str(exc), form={"email": email, "role": role})
    return RedirectResponse(f"{PREFIX}/users?notice=added", status_code=303)


@router.post("/users/disable")
def disable(request: Request, current: Admin, email: Annotated[str, Form()] = "") -> Response:
    return _change(request, current, email, "disabled")


@router.post("/users/reset-mfa")
def reset(request: Request, current: Admin, email: Annotated[str, Form()] = "") -> Response:
    return _change(request, current, email, "mfa_reset")


def _change(request: Request, current: sessions.Current, email: str, done: str) -> Response:
    door = gate(request)
    change = disable_user if done == "disabled" else reset_mfa
    try:
        with session_scope(door.engine) as db:
            change(db, email, by=current.email, at=door.clock())
    except UserError as exc:
        return _page(request, current, 400, error=str(exc))
    return RedirectResponse(f"{PREFIX}/users?notice={done}", status_code=303)
