"""`web_sessions`: server-side sessions of the care-team workspace (DESIGN.md §12).

The browser holds only a random token; the row is keyed by its SHA-256, so a copy of the table
does not hand out live sessions. Ending a session (sign-out, timeout, a disabled account) is a
row change every web worker sees at once, which a signed cookie could not do.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, DateTime, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from outreach.store.models.base import Base


class WebSession(Base):
    __tablename__ = "web_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 hex of the cookie's token
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    mfa_passed: Mapped[bool] = mapped_column(Boolean, default=False)  # False: only the code pages
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    seen_at: Mapped[dt.datetime] = mapped_column(DateTime)
    ended_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    ended_why: Mapped[str | None] = mapped_column(String(20))
