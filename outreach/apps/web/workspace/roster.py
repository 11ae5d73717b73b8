"""The roster page (/app/roster, coordinators): upload a patient roster or an events file, follow its
import, and see what it did, with the rejected rows as a downloadable report.

- The request only receives the file: Starlette's multipart parser spools it to a temporary file
  (beyond 1 MB), which is copied in chunks to a private folder under the file's own (cleaned) name;
  a file the import would refuse at its header is refused here, at once (400, nothing recorded).
  Then the upload is recorded (`roster_uploads`) and imported in a thread of this process
  (outreach/team/uploads.py), and the answer is the upload's page, `/app/roster/uploads/<id>`
  (303, or the page itself to htmx, with its URL pushed): a 1,000,000-row roster no longer keeps a
  request open for the tens of seconds a proxy may cut.
- The upload's page polls a status fragment (htmx, every POLL_S) that reads the row, so any web
  worker answers: rows read so far, then the counts, or why it failed. An upload whose process
  went away is shown failed (uploads.fail_stale), with what to do: upload the file again.
- The same code path as `outreach patients import` / `outreach events import`: import_patients and
  import_events write the report of rejected rows as they go (`errors_to`, formula-safe).
- Only the uploader sees an upload and fetches its report (others get 403, as for an unknown id);
  reports are kept an hour. Audited as `roster_upload` with name, size and counts when the import
  ends.
- The form is sent by htmx so static/roster.js can draw the upload's progress bar; without script
  it posts as a plain form and follows the redirect.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request, Response, UploadFile
from fastapi.responses import FileResponse, RedirectResponse

from outreach.apps.web.workspace.auth import pages
from outreach.apps.web.workspace.guard import PREFIX, Forbidden, gate, need
from outreach.errors import UserError
from outreach.store.db import session_scope
from outreach.store.models import RosterUpload, UploadStatus
from outreach.team import sessions, uploads
from outreach.team.accounts import Role

router = APIRouter()
Coordinator = Annotated[sessions.Current, Depends(need(Role.coordinator))]
Polling = Annotated[sessions.Current, Depends(need(Role.coordinator, poll=True))]
ERRORS_SHOWN = 20
CHUNK = 1 << 20
POLL_S = 1
_ID = re.compile(r"[A-Za-z0-9_-]{22}")
_NO_SUCH = "No such upload (an upload and its report are shown only to the person who uploaded the file)."


def _page(request: Request, current: sessions.Current, status: int = 200, **extra: Any) -> Response:
    context: dict[str, Any] = {
        "me": current,
        "csrf": current.csrf_token,
        "kinds": uploads.KINDS,
        "kind": "patients",
        "error": None,
        "upload": None,
        "uploads": [],
        "poll_s": POLL_S,
    }
    context.update(extra)
    return pages(request).page("roster.html", status=status, **context)


@router.get("/roster")
def roster_page(request: Request, current: Coordinator) -> Response:
    door = gate(request)
    with session_scope(door.engine) as db:
        recent = uploads.recent(db, current.user_id, door.clock())
    return _page(request, current, uploads=recent)


def _clean_name(name: str | None) -> str:
    """The upload's own file name, as the import's messages and the audit name it, without any
    folder part or character a path could misuse."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name or "").name)[:100].lstrip(".")
    return base or "upload.csv"


def _spool(file: UploadFile, public_id: str, name: str) -> Path:
    """The upload on disk, in chunks (never held in memory), in its own private folder."""
    path = uploads.spool_folder(public_id) / name
    with path.open("wb") as disk:
        shutil.copyfileobj(file.file, disk, CHUNK)
    return path


@router.post("/roster")
def upload(
    request: Request,
    current: Coordinator,
    file: UploadFile,
    kind: Annotated[str, Form()] = "patients",
) -> Response:
    if kind not in uploads.KINDS:
        return _page(request, current, 400, error=f"Choose one of: {', '.join(uploads.KINDS.values())}.")
    name = _clean_name(file.filename)
    public_id = uploads.new_id()
    path = _spool(file, public_id, name)
    try:
        uploads.check_header(kind, path)
    except UserError as exc:
        shutil.rmtree(path.parent, ignore_errors=True)
        return _page(request, current, 400, kind=kind, error=str(exc))
    door = gate(request)
    job = uploads.Job(
        engine=door.engine,
        settings=request.app.state.settings,
        clock=door.clock,
        public_id=public_id,
        kind=kind,
        path=path,
        report=uploads.report_path(current.user_id, public_id),
        actor=current.email,
    )
    try:
        with session_scope(door.engine) as db:
            uploads.record(db, job, current.user_id, name, path.stat().st_size)
        uploads.start(job)
    except BaseException:
        shutil.rmtree(path.parent, ignore_errors=True)  # patient data: never left behind
        raise
    location = f"{PREFIX}/roster/uploads/{public_id}"
    if request.headers.get("hx-request"):
        response = upload_page(request, public_id, current)
        response.headers["HX-Push-Url"] = location
        return response
    return RedirectResponse(location, status_code=303)


def _status(request: Request, public_id: str, current: sessions.Current) -> dict[str, Any]:
    """The upload's view and its first rejected rows; Forbidden unless it is the user's own."""
    door = gate(request)
    with session_scope(door.engine) as db:
        row = uploads.find(db, public_id, current.user_id, door.clock()) if _ID.fullmatch(public_id) else None
        if row is None:
            raise Forbidden(_NO_SUCH)
        errors = uploads.first_errors(row, ERRORS_SHOWN) if row.status == UploadStatus.done else []
        return {"upload": uploads.view(row), "errors": errors, "kind": row.kind}


@router.get("/roster/uploads/{public_id}")
def upload_page(request: Request, public_id: str, current: Coordinator) -> Response:
    return _page(request, current, **_status(request, public_id, current))


@router.get("/roster/uploads/{public_id}/status")
def upload_status(request: Request, public_id: str, current: Polling) -> Response:
    """The fragment the upload's page polls; it stops polling once the import has finished."""
    context = _status(request, public_id, current)
    return pages(request).page("roster_status.html", poll_s=POLL_S, **context)


@router.get("/roster/uploads/{public_id}/errors")
def errors_report(request: Request, public_id: str, current: Coordinator) -> Response:
    """The rejected rows of the uploader's import, as CSV (formula-safe, write_errors_csv)."""
    door = gate(request)
    row: RosterUpload | None = None
    if _ID.fullmatch(public_id):
        with session_scope(door.engine) as db:
            row = uploads.find(db, public_id, current.user_id, door.clock())
    report = uploads.report_of(row) if row is not None else None
    if report is None:
        raise Forbidden("No such report (reports are kept an hour, for the person who uploaded).")
    return FileResponse(report, media_type="text/csv", filename="import-errors.csv")
