"""The roster page (/app/roster, coordinators): upload a patient roster or an events file and see
what the import did, with the rejected rows as a downloadable report.

- The same code path as `outreach patients import` / `outreach events import`: import_patients and
  import_events (outreach/ingest/roster.py) read the file from disk and write the report of its
  rejected rows as they go (`errors_to`: write_errors_csv, formula-safe, outreach/ingest/errorsfile.py),
  keeping only the first of them in memory, so a file rejected row by row stays within the web
  process's memory (bench/roster_upload.py --bad-every).
- Never held in memory: Starlette's multipart parser spools the upload to a temporary file (beyond
  1 MB), which is copied to disk in chunks under the file's own (cleaned) name, imported, and
  deleted, since a roster is patient data.
- Reports live in one folder under the system temp dir, so any web worker serves the download;
  each is named by a random token and the uploader's id (only they can fetch it) and kept an hour.
- Audited as `roster_upload` with the file's name, size and the counts.
- The form is sent by htmx so static/roster.js can draw the upload's progress bar; the answer is
  the same page either way (a plain POST without script).
"""

from __future__ import annotations

import re
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request, Response, UploadFile
from fastapi.responses import FileResponse

from outreach.apps.web.workspace.auth import pages
from outreach.apps.web.workspace.guard import Forbidden, gate, need
from outreach.config import Settings
from outreach.errors import UserError
from outreach.ingest.roster import ImportResult, import_events, import_patients
from outreach.store.db import session_scope
from outreach.team import sessions
from outreach.team.accounts import Role
from outreach.team.audit import audit

router = APIRouter()
Coordinator = Annotated[sessions.Current, Depends(need(Role.coordinator))]
KINDS = {"patients": "Patient roster", "events": "Clinical events"}
ERRORS_SHOWN = 20
REPORTS = Path(tempfile.gettempdir()) / "outreach-roster-reports"
KEEP_S = 3600
CHUNK = 1 << 20
_TOKEN = re.compile(r"[A-Za-z0-9_-]{22}")


def _page(request: Request, current: sessions.Current, status: int = 200, **extra: Any) -> Response:
    context: dict[str, Any] = {
        "me": current,
        "csrf": current.csrf_token,
        "kinds": KINDS,
        "kind": "patients",
        "result": None,
        "error": None,
    }
    context.update(extra)
    return pages(request).page("roster.html", status=status, **context)


@router.get("/roster")
def roster_page(request: Request, current: Coordinator) -> Response:
    return _page(request, current)


def _clean_name(name: str | None) -> str:
    """The upload's own file name, as the import's messages and the audit name it, without any
    folder part or character a path could misuse."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name or "").name)[:100].lstrip(".")
    return base or "upload.csv"


def _report_path(user_id: int) -> tuple[str, Path]:
    """A new report's token and file; reports over an hour old go first."""
    REPORTS.mkdir(mode=0o700, exist_ok=True)
    for old in REPORTS.glob("*.csv"):
        if old.stat().st_mtime < time.time() - KEEP_S:
            old.unlink(missing_ok=True)
    token = secrets.token_urlsafe(16)
    return token, REPORTS / f"{user_id}-{token}.csv"


def _import(request: Request, kind: str, path: Path, report: Path) -> ImportResult:
    """The import, its rejected rows written to `report` as it goes (write_errors_csv, formula-safe):
    a roster with a problem in every row must not hold them all in the web process."""
    settings: Settings = request.app.state.settings
    engine = gate(request).engine
    if kind == "events":
        return import_events(engine, path, settings=settings, errors_to=report)
    return import_patients(engine, path, settings=settings, errors_to=report)


@router.post("/roster")
def upload(
    request: Request,
    current: Coordinator,
    file: UploadFile,
    kind: Annotated[str, Form()] = "patients",
) -> Response:
    if kind not in KINDS:
        return _page(request, current, 400, error=f"Choose one of: {', '.join(KINDS.values())}.")
    name = _clean_name(file.filename)
    with tempfile.TemporaryDirectory(prefix="outreach-upload-") as folder:
        path = Path(folder) / name
        with path.open("wb") as disk:
            shutil.copyfileobj(file.file, disk, CHUNK)
        size = path.stat().st_size
        token: str | None
        token, report = _report_path(current.user_id)
        try:
            result = _import(request, kind, path, report)
        except UserError as exc:
            report.unlink(missing_ok=True)
            return _page(request, current, 400, kind=kind, error=str(exc))
    if not result.problems:
        report.unlink(missing_ok=True)
        token = None
    door = gate(request)
    counts = ", ".join(f"{key} {value}" for key, value in result.summary().items())
    with session_scope(door.engine) as db:
        audit(
            db,
            current.email,
            "roster_upload",
            f"file {name}",
            door.clock(),
            f"{kind}; {size} bytes; {counts}",
        )
    return _page(
        request,
        current,
        kind=kind,
        file_name=name,
        result=result,
        errors=result.errors[:ERRORS_SHOWN],
        report=token,
    )


@router.get("/roster/errors/{token}")
def errors_report(token: str, current: Coordinator) -> Response:
    """The rejected rows of the uploader's import, as CSV (formula-safe, write_errors_csv)."""
    path = REPORTS / f"{current.user_id}-{token}.csv"
    if not _TOKEN.fullmatch(token) or not path.is_file():
        raise Forbidden("No such report (reports are kept an hour, for the person who uploaded).")
    return FileResponse(path, media_type="text/csv", filename="import-errors.csv")
