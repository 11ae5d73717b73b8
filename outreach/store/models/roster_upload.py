"""`roster_uploads`: one row per file uploaded on the roster page (DESIGN.md §12), and its import.

The import runs in a thread of the web process that received the file (outreach/team/uploads.py),
while the page polls this row: the row, not that process's memory, is the status, so any web
worker answers the poll. `pid`, `host` and `heartbeat_at` tell whether the importing process is
still alive; an upload whose process is gone is marked failed (the import upserts, so uploading
the file again finishes the job).
"""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from outreach.store.models.base import Base


class UploadStatus(enum.StrEnum):
    queued = "queued"  # spooled and recorded; the import thread has not begun
    running = "running"
    done = "done"  # imported (rejected rows are still `done`: they are in the counts and the report)
    failed = "failed"  # the file could not be imported, or the process importing it went away


# Still in the hands of a process: what the stale-import sweep looks at.
UNFINISHED = (UploadStatus.queued, UploadStatus.running)


class RosterUpload(Base):
    __tablename__ = "roster_uploads"
    __table_args__ = (Index("ix_roster_uploads_user_created", "user_id", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)  # what URLs carry
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))  # the uploader: only they see it
    kind: Mapped[str] = mapped_column(String(16))  # patients | events
    file_name: Mapped[str] = mapped_column(String(100))  # cleaned: no folder part
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(10), default=UploadStatus.queued)
    rows_read: Mapped[int] = mapped_column(Integer, default=0)  # lines of the file read so far
    bytes_read: Mapped[int] = mapped_column(BigInteger, default=0)
    accepted: Mapped[int | None] = mapped_column(Integer)  # the counts, once done
    rejected: Mapped[int | None] = mapped_column(Integer)
    inserted: Mapped[int | None] = mapped_column(Integer)
    updated: Mapped[int | None] = mapped_column(Integer)
    unknown_mrns: Mapped[int | None] = mapped_column(Integer)  # events only
    problems: Mapped[int | None] = mapped_column(Integer)  # rows of the error report
    notes: Mapped[str | None] = mapped_column(Text)  # the import's notes and warnings, one a line
    message: Mapped[str | None] = mapped_column(Text)  # why it failed
    report_path: Mapped[str | None] = mapped_column(Text)  # the error report, while it has rows
    pid: Mapped[int] = mapped_column(Integer)  # the web process that imports it
    host: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    heartbeat_at: Mapped[dt.datetime] = mapped_column(DateTime)  # the importing thread was alive
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
