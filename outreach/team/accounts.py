"""Care-team accounts: roles, argon2 passwords, TOTP second factor, lockout (DESIGN.md §12).

- Passwords are hashed with argon2id (argon2-cffi's defaults, RFC 9106's recommended profile);
  a hash made with older parameters is re-hashed at the next good sign-in.
- The TOTP secret is made with the account and shown once (`outreach users add --json`), and again
  only on the enrolment page before the first code is accepted; admins and coordinators must enrol,
  a viewer may. A code is accepted once: the last accepted time step is stored, so a code seen over
  a shoulder cannot be replayed within its 30 seconds.
- Five failures in a row (wrong password or wrong code) lock the account for 15 minutes. The count
  lives on the row, so it holds across web workers and restarts.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
from dataclasses import dataclass

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from outreach.errors import UserError
from outreach.store.models import User, WebSession
from outreach.team.audit import audit

MAX_FAILURES = 5
LOCKOUT = dt.timedelta(minutes=15)
PASSWORD_MIN = 12
ISSUER = "outreach"
_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the email is unknown, so a wrong email costs as long as a wrong
    password. Made on first use, not at import: an argon2 hash takes about half a second and
    64 MiB, which every web worker, CLI run and Celery worker importing this module would pay."""
    return _hasher.hash("outreach-no-such-account")


class Role(enum.StrEnum):
    admin = "admin"
    coordinator = "coordinator"
    viewer = "viewer"


RANK = {Role.viewer: 0, Role.coordinator: 1, Role.admin: 2}


def may(role: str, needed: Role) -> bool:
    """Whether `role` includes what `needed` may do (admin ⊇ coordinator ⊇ viewer)."""
    try:
        return RANK[Role(role)] >= RANK[needed]
    except ValueError:  # a role this version does not know grants nothing
        return False


def needs_mfa(role: str) -> bool:
    """Admins and coordinators must use a second factor; they can send texts and change settings."""
    return role in (Role.admin, Role.coordinator)


def normalize_email(email: str) -> str:
    cleaned = email.strip().lower()
    if "@" not in cleaned or cleaned.startswith("@") or cleaned.endswith("@") or len(cleaned) > 254:
        raise UserError(f"EMAIL: {email!r} is not an email address")
    return cleaned


def totp_uri(user: User) -> str:
    """The otpauth:// URI an authenticator app reads (as text or as the QR code of it)."""
    assert user.totp_secret is not None
    return pyotp.TOTP(user.totp_secret).provisioning_uri(name=user.email, issuer_name=ISSUER)


def add_user(session: Session, email: str, role: str, password: str, *, by: str, at: dt.datetime) -> User:
    """A new account with its TOTP secret; UserError for a taken email, a bad role or a short password."""
    email = normalize_email(email)
    if role not in Role.__members__:
        raise UserError(f"--role: one of {', '.join(Role)} (got {role!r})")
    if len(password) < PASSWORD_MIN:
        raise UserError(f"the password must have at least {PASSWORD_MIN} characters")
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise UserError(f"{email} already has an account; `outreach users list` shows it")
    user = User(
        email=email,
        role=role,
        password_hash=_hasher.hash(password),
        totp_secret=pyotp.random_base32(),
        created_at=at,
        failed_logins=0,
        disabled=False,
    )
    session.add(user)
    session.flush()
    audit(session, by, "user_add", f"user {email}", at, f"role {role}")
    return user


def find_user(session: Session, email: str) -> User:
    user = session.scalar(select(User).where(User.email == normalize_email(email)))
    if user is None:
        raise UserError(f"no account {email.strip()!r}; `outreach users list` shows the accounts")
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.email)))


def disable_user(session: Session, email: str, *, by: str, at: dt.datetime) -> User:
    """Disable an account and end its sessions at once (every web worker sees the rows)."""
    user = find_user(session, email)
    user.disabled = True
    end_sessions(session, user.id, at, why="disabled")
    audit(session, by, "user_disable", f"user {user.email}", at)
    return user


def reset_mfa(session: Session, email: str, *, by: str, at: dt.datetime) -> User:
    """A new TOTP secret, to enrol at the next sign-in (a lost phone); ends the account's sessions."""
    user = find_user(session, email)
    user.totp_secret = pyotp.random_base32()
    user.totp_confirmed_at = None
    user.totp_last_step = None
    end_sessions(session, user.id, at, why="mfa_reset")
    audit(session, by, "user_reset_mfa", f"user {user.email}", at)
    return user


def end_sessions(session: Session, user_id: int, at: dt.datetime, *, why: str) -> None:
    session.execute(
        update(WebSession)
        .where(WebSession.user_id == user_id, WebSession.ended_at.is_(None))
        .values(ended_at=at, ended_why=why)
    )


class Refusal(enum.StrEnum):
    wrong = "wrong"  # unknown email or wrong password: the page says the same for both
    locked = "locked"
    disabled = "disabled"


@dataclass(frozen=True)
class SignIn:
    user: User | None
    refusal: Refusal | None = None
    locked_until: dt.datetime | None = None


def check_password(session: Session, email: str, password: str, now: dt.datetime) -> SignIn:
    """The first factor, audited either way; a failure counts toward the lockout."""
    try:
        address = normalize_email(email)
    except UserError:
        address = email.strip().lower()[:254]
    user = session.scalar(select(User).where(User.email == address).with_for_update())
    if user is None:
        _verify(_dummy_hash(), password)
        audit(session, address or "-", "sign_in_failed", "unknown account", now)
        return SignIn(None, Refusal.wrong)
    if user.locked_until is not None and user.locked_until > now:
        audit(session, user.email, "sign_in_locked", f"user {user.email}", now)
        return SignIn(None, Refusal.locked, user.locked_until)
    if not _verify(user.password_hash, password):
        return _failed(session, user, now, "wrong password")
    if user.disabled:
        audit(session, user.email, "sign_in_failed", f"user {user.email}", now, "account disabled")
        return SignIn(None, Refusal.disabled)
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    if not needs_second_factor(user):
        signed_in(session, user, now)
    return SignIn(user)


def needs_second_factor(user: User) -> bool:
    """A code is asked when the role requires one or the person has enrolled anyway."""
    return needs_mfa(user.role) or user.totp_confirmed_at is not None


def check_code(session: Session, user: User, code: str, now: dt.datetime) -> SignIn:
    """The second factor (enrolment confirms it): a current code not used before, else a failure
    that counts toward the same lockout as passwords."""
    if user.locked_until is not None and user.locked_until > now:
        return SignIn(None, Refusal.locked, user.locked_until)
    step = _accepted_step(user, code.strip().replace(" ", ""), now)
    if step is None:
        return _failed(session, user, now, "wrong code")
    user.totp_last_step = step
    if user.totp_confirmed_at is None:
        user.totp_confirmed_at = now
        audit(session, user.email, "mfa_enrolled", f"user {user.email}", now)
    signed_in(session, user, now)
    return SignIn(user)


def signed_in(session: Session, user: User, now: dt.datetime) -> None:
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = now
    audit(session, user.email, "sign_in", f"user {user.email}", now)


def _accepted_step(user: User, code: str, now: dt.datetime) -> int | None:
    """The time step `code` belongs to (now, or one step either side for clock drift), unless it
    is not newer than the last accepted one."""
    if user.totp_secret is None or not code.isdigit():
        return None
    totp = pyotp.TOTP(user.totp_secret)
    moment = now.replace(tzinfo=dt.UTC)
    for drift in (0, -1, 1):
        at = moment + dt.timedelta(seconds=drift * totp.interval)
        if totp.verify(code, for_time=at, valid_window=0):
            step = totp.timecode(at)
            if user.totp_last_step is not None and step <= user.totp_last_step:
                return None
            return step
    return None


def _failed(session: Session, user: User, now: dt.datetime, why: str) -> SignIn:
    user.failed_logins = (user.failed_logins or 0) + 1
    if user.failed_logins >= MAX_FAILURES:
        user.locked_until = now + LOCKOUT
        user.failed_logins = 0
        audit(session, user.email, "account_locked", f"user {user.email}", now, f"{MAX_FAILURES} failures")
        return SignIn(None, Refusal.locked, user.locked_until)
    audit(session, user.email, "sign_in_failed", f"user {user.email}", now, why)
    return SignIn(None, Refusal.wrong)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
