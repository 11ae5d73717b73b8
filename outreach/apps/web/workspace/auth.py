"""Sign-in pages: email and password, then the TOTP code (enrolled with a QR code at the first
sign-in), and sign-out. The rules are outreach/team/accounts.py and sessions.py; this is HTTP.

The sign-in form has no session to keep a CSRF token in, so it uses a double-submit cookie: a
random token in an HttpOnly cookie and in the form, which another site can neither read nor set.
"""

from __future__ import annotations

import hmac
import io
from typing import Annotated

import segno
from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool

from outreach.apps.web.workspace.guard import (
    COOKIE,
    LOGIN_CSRF_COOKIE,
    PREFIX,
    Forbidden,
    gate,
    half_signed_in,
    login_csrf,
)
from outreach.apps.web.workspace.render import Pages
from outreach.store.db import session_scope
from outreach.store.models import User
from outreach.team import accounts, sessions
from outreach.team.accounts import Refusal, SignIn
from outreach.team.audit import audit

router = APIRouter()
Current = Annotated[sessions.Current, Depends(half_signed_in)]


def pages(request: Request) -> Pages:
    found: Pages = request.app.state.pages
    return found


def _refusal_text(result: SignIn, page: Pages) -> str:
    if result.refusal == Refusal.locked:
        until = page.local(result.locked_until, "%H:%M")
        return f"Too many failed attempts: this account is locked until {until}. Try again then."
    if result.refusal == Refusal.disabled:
        return "This account is disabled. Ask an administrator."
    return "The email or password is not right."


@router.get("/login")
def login_form(request: Request) -> Response:
    token = login_csrf(request)
    response = pages(request).page("login.html", csrf=token, error=None, email="")
    gate(request).set_cookie(response, LOGIN_CSRF_COOKIE, token)
    return response


@router.post("/login")
def login(
    request: Request,
    email: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not cookie or not hmac.compare_digest(cookie.encode(), csrf_token.encode()):
        raise Forbidden("This sign-in form has expired. Reload the page and sign in again.")
    door = gate(request)
    with session_scope(door.engine) as db:
        now = door.clock()
        result = accounts.check_password(db, email, password, now)
        token = None
        if result.user is not None:
            full = not accounts.needs_second_factor(result.user)
            token = sessions.start(db, result.user, now, mfa_passed=full)
    if token is None:
        page = pages(request)
        return page.page(
            "login.html", status=401, csrf=cookie, error=_refusal_text(result, page), email=email
        )
    response = RedirectResponse(f"{PREFIX}/inbox" if full else f"{PREFIX}/mfa", status_code=303)
    door.set_cookie(response, COOKIE, token)
    return response


@router.get("/mfa")
def code_form(request: Request, current: Current) -> Response:
    if current.mfa_passed:
        return RedirectResponse(f"{PREFIX}/inbox", status_code=303)
    secret = None
    if not current.enrolled:
        secret = _secret(request, current)
    return pages(request).page("mfa.html", csrf=current.csrf_token, secret=secret, error=None)


def _secret(request: Request, current: sessions.Current) -> str:
    """The secret, grouped by four for typing, while the account has not enrolled yet."""
    with session_scope(gate(request).engine) as db:
        user = db.get(User, current.user_id)
        assert user is not None and user.totp_secret is not None
        raw = user.totp_secret
    return " ".join(raw[i : i + 4] for i in range(0, len(raw), 4))


@router.get("/mfa/qr.svg")
def enrolment_qr(request: Request, current: Current) -> Response:
    """The otpauth:// URI as a QR code, drawn here (segno): the secret never leaves for a
    third-party QR service. Only before enrolment is confirmed."""
    if current.enrolled:
        raise Forbidden("This account has enrolled its authenticator already.")
    with session_scope(gate(request).engine) as db:
        user = db.get(User, current.user_id)
        assert user is not None
        uri = accounts.totp_uri(user)
    drawn = io.BytesIO()
    segno.make(uri, error="m").save(drawn, kind="svg", scale=5, title="Authenticator enrolment code")
    return Response(drawn.getvalue(), media_type="image/svg+xml")


@router.post("/mfa")
def check_code(request: Request, current: Current, code: Annotated[str, Form()] = "") -> Response:
    door = gate(request)
    token = request.cookies.get(COOKIE, "")
    with session_scope(door.engine) as db:
        now = door.clock()
        user = db.get(User, current.user_id)
        assert user is not None
        result = accounts.check_code(db, user, code, now)
        new_token = sessions.upgrade(db, token, user, now) if result.user is not None else None
        if result.refusal == Refusal.locked:
            sessions.end(db, token, now, why="locked")
    if new_token is not None:
        response = RedirectResponse(f"{PREFIX}/inbox", status_code=303)
        door.set_cookie(response, COOKIE, new_token)
        return response
    if result.refusal == Refusal.locked:
        page = pages(request)
        return page.page(
            "login.html", status=401, csrf=login_csrf(request), error=_refusal_text(result, page), email=""
        )
    secret = None if current.enrolled else _secret(request, current)
    error = "That code is not right (or was used already). Enter the current 6-digit code."
    return pages(request).page("mfa.html", status=401, csrf=current.csrf_token, secret=secret, error=error)


@router.post("/logout")
async def logout(request: Request, current: Current) -> Response:
    door = gate(request)

    def end() -> None:
        with session_scope(door.engine) as db:
            now = door.clock()
            sessions.end(db, request.cookies.get(COOKIE, ""), now, why="signed_out")
            audit(db, current.email, "sign_out", f"user {current.email}", now)

    await run_in_threadpool(end)
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    response.delete_cookie(COOKIE, path=PREFIX)
    return response
