"""What stands in front of every workspace page: security headers, the session, CSRF, the role.

- `SecurityHeaders` wraps only the workspace's own app (mounted at /app/), so the webhooks, served
  on the fast path before any routing (outreach/apps/web/app.py), never pass through it.
- `need(role)` is the one dependency a route names to be reached: a live, fully signed-in session
  (else a redirect to the sign-in page), the session's CSRF token on anything that changes state
  (else 403), and at least `role` (else 403). The control room reuses it.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from outreach.clock import Clock
from outreach.store.db import session_scope
from outreach.team import sessions
from outreach.team.accounts import Role, may

COOKIE = "outreach_session"
LOGIN_CSRF_COOKIE = "outreach_login_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PREFIX = "/app"

# No inline script or style anywhere: htmx is served from /app/static and configured by a <meta>.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)


class Redirect(Exception):
    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


class Forbidden(Exception):
    """403 with a sentence for the page."""


@dataclass
class Gate:
    """What the guard needs: the database, the clock, and whether cookies must be Secure."""

    engine: Engine
    clock: Clock
    secure: bool

    def current(self, token: str | None, touch: bool = True) -> sessions.Current | None:
        with session_scope(self.engine) as db:
            return sessions.current(db, token, self.clock(), touch=touch)

    def set_cookie(self, response: Any, name: str, value: str) -> None:
        response.set_cookie(name, value, httponly=True, samesite="lax", secure=self.secure, path=PREFIX)


def gate(request: Request) -> Gate:
    found: Gate = request.app.state.gate
    return found


async def presented_csrf(request: Request) -> str | None:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    if request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


async def signed_in(request: Request, *, half: bool = False, touch: bool = True) -> sessions.Current:
    """The request's live session (`half`: the second factor may still be pending; `touch=False`:
    a background poll, which does not count as activity), CSRF-checked when the method changes
    state."""
    current = await run_in_threadpool(gate(request).current, request.cookies.get(COOKIE), touch)
    if current is None:
        raise Redirect(f"{PREFIX}/login")
    if not current.mfa_passed and not half:
        raise Redirect(f"{PREFIX}/mfa")
    if request.method not in SAFE_METHODS and not sessions.csrf_ok(current, await presented_csrf(request)):
        raise Forbidden(
            "This form has expired or did not come from this site (missing CSRF token). Reload the page."
        )
    return current


def need(role: Role, *, poll: bool = False) -> Callable[[Request], Awaitable[sessions.Current]]:
    """The dependency for a page that `role` (or a higher one) may use; `poll` for the fragments a
    page fetches by itself, which must not keep an idle session alive."""

    async def dependency(request: Request) -> sessions.Current:
        current = await signed_in(request, touch=not poll)
        if not may(current.role, role):
            raise Forbidden(f"Your role ({current.role}) cannot do this; it needs {role}.")
        return current

    return dependency


async def half_signed_in(request: Request) -> sessions.Current:
    return await signed_in(request, half=True)


def login_csrf(request: Request) -> str:
    """The double-submit token of the sign-in form (there is no session yet to keep it in)."""
    return request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(32)


class SecurityHeaders:
    """Headers on every workspace response: CSP without inline script, no framing, no sniffing,
    no referrer (URLs carry conversation ids), and no-store on everything but the static files
    (pages show patients' names and messages)."""

    def __init__(self, app: ASGIApp, *, https: bool) -> None:
        self.app = app
        self.https = https

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith(f"{PREFIX}/static/") or scope["path"].startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-frame-options", b"DENY"),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
                ]
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                if self.https:
                    headers.append((b"strict-transport-security", b"max-age=31536000"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
