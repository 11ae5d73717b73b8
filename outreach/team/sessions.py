"""Server-side sessions of the workspace: idle 15 minutes, absolute 12 hours (DESIGN.md §12,
HIPAA's automatic logoff), a CSRF token per session, a new token once the second factor passes.

The cookie carries a random 256-bit token; the table keeps its SHA-256 (outreach.store.models
.web_session). `current` is the one check every request of the workspace goes through: it ends a
session that is idle, too old, or whose account was disabled, and otherwise marks it seen.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import update
from sqlalchemy.orm import Session

from outreach.store.models import User, WebSession
from outreach.team.audit import audit

IDLE = dt.timedelta(minutes=15)
ABSOLUTE = dt.timedelta(hours=12)
# Marking a session seen is a write; within this long of the last mark it is skipped (an htmx poll
# every few seconds would otherwise write on every poll). Far below IDLE, so timing stays exact
# to within this slack.
SEEN_EVERY = dt.timedelta(seconds=30)


@dataclass(frozen=True)
class Current:
    """A live session and its account, as a request sees them."""

    session_id: str
    csrf_token: str
    mfa_passed: bool
    user_id: int
    email: str
    role: str
    enrolled: bool  # the TOTP secret was confirmed by a first code


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start(session: Session, user: User, now: dt.datetime, *, mfa_passed: bool) -> str:
    """A new session for `user`; returns the token for the cookie (never stored as such)."""
    token = secrets.token_urlsafe(32)
    session.add(
        WebSession(
            id=_digest(token),
            user_id=user.id,
            csrf_token=secrets.token_urlsafe(32),
            mfa_passed=mfa_passed,
            created_at=now,
            seen_at=now,
        )
    )
    return token


def upgrade(session: Session, token: str, user: User, now: dt.datetime) -> str:
    """After the second factor: end the half-signed-in session and start a full one with a new
    token and CSRF token, so a token seen before the code (fixation) is worth nothing."""
    end(session, token, now, why="upgraded")
    return start(session, user, now, mfa_passed=True)


def end(session: Session, token: str, now: dt.datetime, *, why: str) -> None:
    session.execute(
        update(WebSession)
        .where(WebSession.id == _digest(token), WebSession.ended_at.is_(None))
        .values(ended_at=now, ended_why=why)
    )


def current(session: Session, token: str | None, now: dt.datetime, *, touch: bool = True) -> Current | None:
    """The live session for `token`, or None (no cookie, unknown, ended, idle, too old, disabled).

    `touch=False` for a page's own background polls: they are not the person's activity, so a
    screen left open does not stay signed in (the idle timeout is HIPAA's automatic logoff)."""
    if not token:
        return None
    row = session.get(WebSession, _digest(token))
    if row is None or row.ended_at is not None:
        return None
    user = session.get(User, row.user_id)
    why = _expired(row, user, now)
    if why is not None:
        row.ended_at, row.ended_why = now, why
        if user is not None:
            audit(session, user.email, "session_end", f"user {user.email}", now, why)
        return None
    assert user is not None
    if touch and now - row.seen_at >= SEEN_EVERY:
        row.seen_at = now
    return Current(
        session_id=row.id,
        csrf_token=row.csrf_token,
        mfa_passed=row.mfa_passed,
        user_id=user.id,
        email=user.email,
        role=user.role,
        enrolled=user.totp_confirmed_at is not None,
    )


def _expired(row: WebSession, user: User | None, now: dt.datetime) -> str | None:
    if user is None or user.disabled:
        return "disabled"
    if now - row.seen_at >= IDLE:
        return "idle"
    if now - row.created_at >= ABSOLUTE:
        return "absolute"
    return None


def csrf_ok(current: Current, presented: str | None) -> bool:
    """Whether the request carries this session's CSRF token (constant-time compare)."""
    return presented is not None and hmac.compare_digest(current.csrf_token.encode(), presented.encode())
