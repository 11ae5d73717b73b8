"""`users` (DESIGN.md §6, §12): the care team's accounts for the workspace under /app/.

The password is an argon2 hash (outreach/team/accounts.py), never the password; the TOTP secret is
kept because the server must compute the expected code. Failed sign-ins are counted on the row so a
lockout holds across every web worker process and survives a restart.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, DateTime, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from outreach.clock import utcnow
from outreach.store.models.base import Base


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)  # stored lower case
    role: Mapped[str] = mapped_column(String(20))  # admin | coordinator | viewer
    password_hash: Mapped[str] = mapped_column(String(200))
    totp_secret: Mapped[str | None] = mapped_column(String(64))
    totp_confirmed_at: Mapped[dt.datetime | None] = mapped_column(DateTime)  # None: enroll at next sign-in
    totp_last_step: Mapped[int | None] = mapped_column(Integer)  # a code is accepted once (no replay)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[dt.datetime | None] = mapped_column(DateTime)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
