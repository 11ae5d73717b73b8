"""Roster uploads imported in the background of the web process (DESIGN.md §12, issue 15).

A 1,000,000-row roster takes tens of seconds to import, close to the 60 s after which a reverse
proxy cuts a request. So the roster page's request only spools the file and records it (`record`),
and `start` runs the import in a thread of the same process; the page polls the upload's row.

- The import is `import_patients` / `import_events`, the call `outreach patients import` makes,
  with a `Reporter` as its progress: the import only adds to counters in memory; a ticker thread
  writes them with a heartbeat to the row every WRITE_EVERY_S, so the import never waits on those
  writes and the heartbeat goes on through the import's last phases (which read no more lines).
- The row is the status, so any web worker process answers the poll.
- A process that dies mid-import leaves its row unfinished: `fail_stale` (run whenever the page
  reads uploads) marks it failed when its process is gone (same host, pid not alive) or its
  heartbeat is older than STALE_AFTER. Nothing is lost silently: the import upserts, so uploading
  the file again completes it, and the page says so.
- Audited as `roster_upload` (file name, size, counts or why it failed) when the import ends.
- The spooled file lives in UPLOADS/<public id>/ (a roster is patient data: deleted when the import
  ends, or when a stale upload is failed); error reports in REPORTS, kept REPORT_KEEP_S.
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
import os
import secrets
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from outreach.clock import Clock
from outreach.config import Settings
from outreach.errors import UserError
from outreach.ingest.roster import (
    ImportResult,
    RowError,
    check_events_header,
    check_patients_header,
    import_events,
    import_patients,
)
from outreach.store.db import session_scope
from outreach.store.models import RosterUpload, UploadStatus, User
from outreach.store.models.roster_upload import UNFINISHED
from outreach.team.audit import audit

log = logging.getLogger(__name__)

KINDS = {"patients": "Patient roster", "events": "Clinical events"}  # the files a page may upload
UPLOADS = Path(tempfile.gettempdir()) / "outreach-roster-uploads"
REPORTS = Path(tempfile.gettempdir()) / "outreach-roster-reports"
REPORT_KEEP_S = 3600
WRITE_EVERY_S = 1.0
# A heartbeat older than this means the importing process is gone: far above WRITE_EVERY_S, and
# above SQLite's 30 s busy timeout, so a beat that waited for a lock is not taken for a death.
STALE_AFTER = dt.timedelta(seconds=60)
HOST = socket.gethostname()[:255]
INTERRUPTED = (
    "The import stopped: the web server process importing this file went away (restarted or "
    "crashed). Rows read until then may have loaded; upload the file again to finish (the import "
    "updates patients by mrn, so nothing is loaded twice)."
)
INTERNAL = (
    "The import stopped on an unexpected error (details in the server's log). Rows read until "
    "then may have loaded; upload the file again (nothing is loaded twice)."
)


@dataclass(frozen=True)
class Job:
    """One upload's import, as the background thread runs it."""

    engine: Engine
    settings: Settings
    clock: Clock
    public_id: str
    kind: str  # a key of KINDS
    path: Path  # the spooled file, in spool_folder(public_id)
    report: Path  # where the import writes its rejected rows
    actor: str  # the uploader's email, for the audit entry


def new_id() -> str:
    return secrets.token_urlsafe(16)


def spool_folder(public_id: str) -> Path:
    """A new private folder for the upload's file (UPLOADS/<public id>)."""
    UPLOADS.mkdir(mode=0o700, exist_ok=True)
    folder = UPLOADS / public_id
    folder.mkdir(mode=0o700)
    return folder


def report_path(user_id: int, public_id: str) -> Path:
    """Where the upload's error report goes; reports over REPORT_KEEP_S old are deleted first."""
    REPORTS.mkdir(mode=0o700, exist_ok=True)
    for old in REPORTS.glob("*.csv"):
        try:
            if old.stat().st_mtime < time.time() - REPORT_KEEP_S:
                old.unlink(missing_ok=True)
        except FileNotFoundError:
            continue  # another worker deleted it meanwhile
    return REPORTS / f"{user_id}-{public_id}.csv"


def check_header(kind: str, path: Path) -> None:
    """Refuse now (UserError, naming the file, not its spooled path) a file the import would
    refuse at its first line, so the page says why at once and nothing is recorded."""
    try:
        (check_events_header if kind == "events" else check_patients_header)(path)
    except UserError as exc:
        raise UserError(str(exc).replace(str(path), path.name)) from None


def record(session: Session, job: Job, user_id: int, file_name: str, size: int) -> RosterUpload:
    """The upload's row, queued, owned by this process."""
    now = job.clock()
    row = RosterUpload(
        public_id=job.public_id,
        user_id=user_id,
        kind=job.kind,
        file_name=file_name,
        size_bytes=size,
        status=UploadStatus.queued,
        rows_read=0,
        bytes_read=0,
        report_path=str(job.report),
        pid=os.getpid(),
        host=HOST,
        created_at=now,
        heartbeat_at=now,
    )
    session.add(row)
    return row


def start(job: Job) -> threading.Thread:
    """Run the job in a thread of this process. A daemon: a server stopping mid-import does not
    wait for it, and the row is then failed by `fail_stale`."""
    thread = threading.Thread(target=run, args=(job,), name=f"roster-upload-{job.public_id}", daemon=True)
    thread.start()
    return thread


def run(job: Job) -> None:
    """Import the job's file, keeping its row up to date, then record the outcome and audit it."""
    reporter = Reporter(job.engine, job.public_id, job.clock)
    result: ImportResult | None = None
    failure: str | None = None
    try:
        _set_running(job)
        reporter.begin()
        result = _import(job, reporter)
    except UserError as exc:
        failure = str(exc).replace(str(job.path), job.path.name)
    except Exception:
        log.exception("roster upload %s: the import failed", job.public_id)
        failure = INTERNAL
    finally:
        reporter.end()
        shutil.rmtree(job.path.parent, ignore_errors=True)
    try:
        _finish(job, result, failure)
    except Exception:
        log.exception("roster upload %s: recording the outcome failed", job.public_id)


def _import(job: Job, reporter: Reporter) -> ImportResult:
    """The CLI's call (`outreach patients import` / `events import`), the report written as it goes."""
    importer = import_events if job.kind == "events" else import_patients
    return importer(job.engine, job.path, settings=job.settings, progress=reporter, errors_to=job.report)


def _set_running(job: Job) -> None:
    now = job.clock()
    with session_scope(job.engine) as db:
        db.execute(
            update(RosterUpload)
            .where(RosterUpload.public_id == job.public_id)
            .values(status=UploadStatus.running, started_at=now, heartbeat_at=now)
        )


def _finish(job: Job, result: ImportResult | None, failure: str | None) -> None:
    """The final state of the row and the audit entry, in one transaction."""
    now = job.clock()
    with session_scope(job.engine) as db:
        row = db.scalar(select(RosterUpload).where(RosterUpload.public_id == job.public_id))
        if row is None:  # deleted meanwhile (a test's cleanup): nothing to report to
            return
        row.finished_at = row.heartbeat_at = now
        if result is None:
            row.status = UploadStatus.failed
            row.message = failure or INTERNAL
            _drop_report(row)
            outcome = f"failed: {row.message}"
        else:
            _store_result(row, result)
            outcome = ", ".join(f"{key} {value}" for key, value in result.summary().items())
        audit(db, job.actor, "roster_upload", f"file {row.file_name}", now, _detail(row, outcome))


def _store_result(row: RosterUpload, result: ImportResult) -> None:
    row.status = UploadStatus.done
    row.accepted, row.rejected = result.accepted, result.rejected
    row.inserted, row.updated = result.inserted, result.updated
    row.unknown_mrns = result.unknown_mrns
    row.problems = result.problems
    row.rows_read = result.accepted + result.rejected
    row.bytes_read = row.size_bytes
    row.notes = "\n".join(result.notes + result.warnings) or None
    if not result.problems:
        _drop_report(row)


def _detail(row: RosterUpload, outcome: str) -> str:
    return f"{row.kind}; {row.size_bytes} bytes; {outcome}"


def _drop_report(row: RosterUpload) -> None:
    if row.report_path:
        Path(row.report_path).unlink(missing_ok=True)
    row.report_path = None


class Reporter:
    """The import's progress (outreach.ingest.csvfile.Progress): lines and bytes read, counted in
    memory by the importing thread; a ticker thread writes them and a heartbeat to the row every
    WRITE_EVERY_S while the import runs."""

    def __init__(self, engine: Engine, public_id: str, clock: Clock) -> None:
        self.engine = engine
        self.public_id = public_id
        self.clock = clock
        self.lines = 0
        self.bytes = 0
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name=f"upload-{public_id}-beat", daemon=True)

    # Progress, called by the import.
    def start(self, label: str, total: int) -> None:
        """A read begins (files too small to be worth reporting never call this)."""

    def advance(self, done: int, lines: int = 0) -> None:
        self.bytes += done
        self.lines += lines

    def stop(self) -> None:
        """The read ended; the row goes on beating until the import returns."""

    # The ticker.
    def begin(self) -> None:
        self._ticker.start()

    def end(self) -> None:
        self._stop.set()
        if self._ticker.is_alive():
            self._ticker.join()

    def _tick(self) -> None:
        while not self._stop.wait(WRITE_EVERY_S):
            self.write()

    def write(self) -> None:
        """One beat; a failed one is logged and the next tried (the row is only stale after
        STALE_AFTER without any)."""
        try:
            with session_scope(self.engine) as db:
                db.execute(
                    update(RosterUpload)
                    .where(RosterUpload.public_id == self.public_id)
                    .where(RosterUpload.status == UploadStatus.running)
                    .values(rows_read=self.lines, bytes_read=self.bytes, heartbeat_at=self.clock())
                )
        except SQLAlchemyError as exc:
            log.warning("roster upload %s: no progress beat (%s)", self.public_id, type(exc).__name__)


def fail_stale(session: Session, now: dt.datetime) -> int:
    """Mark failed every unfinished upload whose importing process is gone, audit it and delete its
    spooled file; returns how many. Run before any upload is shown, by any web worker."""
    found = session.execute(
        select(RosterUpload, User.email)
        .join(User, User.id == RosterUpload.user_id)
        .where(RosterUpload.status.in_(UNFINISHED))
    ).all()
    failed = 0
    for row, email in found:
        if not _gone(row, now):
            continue
        row.status = UploadStatus.failed
        row.message = INTERRUPTED
        row.finished_at = now
        _drop_report(row)
        shutil.rmtree(UPLOADS / row.public_id, ignore_errors=True)
        detail = _detail(row, "failed: interrupted")
        audit(session, email, "roster_upload", f"file {row.file_name}", now, detail)
        failed += 1
    return failed


def _gone(row: RosterUpload, now: dt.datetime) -> bool:
    """Whether the process importing `row` is no more: its heartbeat is stale, or it ran on this
    host and its pid is not alive (a hostname is a container's own, so a pid is only checked
    where it means the same process)."""
    if row.heartbeat_at < now - STALE_AFTER:
        return True
    return row.host == HOST and not _alive(row.pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, another user's
    return True


@dataclass(frozen=True)
class View:
    """An upload as its page shows it."""

    public_id: str
    kind: str
    file_name: str
    size_bytes: int
    status: str
    rows_read: int
    bytes_read: int
    counts: dict[str, int] | None  # the `--json` figures once done
    unchanged: int | None
    problems: int
    notes: list[str]
    message: str | None
    has_report: bool
    created_at: dt.datetime
    finished_at: dt.datetime | None

    @property
    def finished(self) -> bool:
        return self.status in (UploadStatus.done, UploadStatus.failed)

    @property
    def percent(self) -> int:
        """How much of the file was read, for the progress bar."""
        if self.status == UploadStatus.done:
            return 100
        return min(100, round(100 * self.bytes_read / self.size_bytes)) if self.size_bytes else 0


def view(row: RosterUpload) -> View:
    counts = None
    unchanged = None
    if row.status == UploadStatus.done and row.accepted is not None:
        counts = {
            "accepted": row.accepted,
            "rejected": row.rejected or 0,
            "inserted": row.inserted or 0,
            "updated": row.updated or 0,
        }
        if row.unknown_mrns is not None:
            counts["unknown_mrns"] = row.unknown_mrns
        unchanged = row.accepted - counts["inserted"] - counts["updated"]
    return View(
        public_id=row.public_id,
        kind=row.kind,
        file_name=row.file_name,
        size_bytes=row.size_bytes,
        status=row.status,
        rows_read=row.rows_read,
        bytes_read=row.bytes_read,
        counts=counts,
        unchanged=unchanged,
        problems=row.problems or 0,
        notes=(row.notes or "").splitlines(),
        message=row.message,
        has_report=report_of(row) is not None,
        created_at=row.created_at,
        finished_at=row.finished_at,
    )


def find(session: Session, public_id: str, user_id: int, now: dt.datetime) -> RosterUpload | None:
    """The user's upload by its public id (None for anyone else's), stale ones failed first."""
    fail_stale(session, now)
    return session.scalar(
        select(RosterUpload).where(RosterUpload.public_id == public_id, RosterUpload.user_id == user_id)
    )


def recent(session: Session, user_id: int, now: dt.datetime, limit: int = 5) -> list[View]:
    """The user's latest uploads, newest first."""
    fail_stale(session, now)
    rows = session.scalars(
        select(RosterUpload)
        .where(RosterUpload.user_id == user_id)
        .order_by(RosterUpload.created_at.desc(), RosterUpload.id.desc())
        .limit(limit)
    )
    return [view(row) for row in rows]


def report_of(row: RosterUpload) -> Path | None:
    """The error report of a finished import, while it is kept."""
    if row.status != UploadStatus.done or not row.report_path:
        return None
    path = Path(row.report_path)
    return path if path.is_file() else None


def first_errors(row: RosterUpload, limit: int) -> list[RowError]:
    """The first rejected rows, read back from the error report (values as the report has them:
    formula-safe); [] once the report is gone."""
    if not row.report_path:
        return []
    try:
        with Path(row.report_path).open(encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            next(reader, None)  # the header
            return [
                RowError(int(line), column, value, reason)
                for line, column, value, reason in (r for _, r in zip(range(limit), reader, strict=False))
            ]
    except (OSError, ValueError):
        return []
