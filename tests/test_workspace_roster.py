"""/app/roster over HTTP: coordinators only, CSRF on the multipart form, the same import as
`outreach patients import` / `events import` (the figures are the CLI's --json), run in the
background: the POST answers with the upload's page at once, whose status fragment is polled until
the counts appear. A formula-safe error report only the uploader can fetch, the upload audited with
name, size and counts, and an upload whose web process went away shown failed."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from outreach.apps.cli import main
from outreach.store.db import session_scope
from outreach.store.models import AuditEntry, Patient, PatientEvent, RosterUpload, UploadStatus, User
from outreach.team import uploads
from tests.workspace_support import Clock, csrf_of, full_sign_in, make_user, sign_in, workspace_client

ROOT = Path(__file__).resolve().parent.parent
NOW = dt.datetime(2026, 11, 23, 15, 0)
FIGURE = re.compile(r'data-testid="roster-(accepted|rejected|inserted|updated)">(\d+)<')
STATE = re.compile(r'data-testid="roster-status" data-status="(\w+)"')
WAIT_S = 60.0  # not a speed check: how long a stuck import may take to fail the test
BAD = (
    "mrn,first_name,birth_date,sex,phone\n"
    "B1,Ana,1960-01-01,female,(617) 555-0100\n"
    'B2,Ben,1960-01-01,female,"=HYPERLINK(""http://x"")"\n'
    "B3,Cy,1960-13-01,female,(617) 555-0102\n"
)


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    with workspace_client(engine, Clock(NOW)) as test_client:
        yield test_client


@pytest.fixture
def coordinator(client: TestClient, engine: Engine) -> str:
    secret = make_user(engine, "coord@example.org", "coordinator", NOW)
    return full_sign_in(client, "coord@example.org", secret, NOW)


def _post(client: TestClient, token: str, name: str, content: bytes, kind: str = "patients") -> str:
    """The form as a browser without script posts it: 303 to the upload's page; returns its path."""
    answer = client.post(
        "/app/roster",
        data={"kind": kind, "csrf_token": token},
        files={"file": (name, io.BytesIO(content), "text/csv")},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text[-800:]
    location: str = answer.headers["location"]
    assert re.fullmatch(r"/app/roster/uploads/[A-Za-z0-9_-]{22}", location)
    return location


def _state(html: str) -> str:
    found = STATE.search(html)
    assert found is not None, html[-800:]
    return found.group(1)


def _wait(client: TestClient, location: str) -> str:
    """Poll the status fragment as the page does until the import has finished; the page then."""
    deadline = time.monotonic() + WAIT_S
    while True:
        fragment = client.get(f"{location}/status")
        assert fragment.status_code == 200
        if _state(fragment.text) in ("done", "failed"):
            assert "hx-trigger" not in fragment.text  # a finished upload stops the polling
            break
        assert 'hx-trigger="every 1s"' in fragment.text
        assert time.monotonic() < deadline, f"the import did not finish in {WAIT_S} s"
        time.sleep(0.05)
    page = client.get(location)
    assert page.status_code == 200
    html: str = page.text
    return html


def _upload(client: TestClient, token: str, name: str, content: bytes, kind: str = "patients") -> str:
    return _wait(client, _post(client, token, name, content, kind))


def _figures(html: str) -> dict[str, int]:
    return {key: int(value) for key, value in FIGURE.findall(html)}


def test_viewers_and_forms_without_csrf_are_refused(client: TestClient, engine: Engine) -> None:
    make_user(engine, "view@example.org", "viewer", NOW)
    token = csrf_of(sign_in(client, "view@example.org").text)
    assert client.get("/app/roster").status_code == 403
    refused = client.post(
        "/app/roster",
        data={"csrf_token": token},
        files={"file": ("r.csv", io.BytesIO(BAD.encode()), "text/csv")},
    )
    assert refused.status_code == 403
    client.cookies.clear()
    secret = make_user(engine, "coord@example.org", "coordinator", NOW)
    full_sign_in(client, "coord@example.org", secret, NOW)
    no_token = client.post("/app/roster", files={"file": ("r.csv", io.BytesIO(BAD.encode()), "text/csv")})
    assert no_token.status_code == 403
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(Patient)) == 0


def test_the_sample_roster_loads_with_the_clis_figures(
    client: TestClient, engine: Engine, coordinator: str, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    roster = (ROOT / "samples" / "roster.csv").read_bytes()
    page = _upload(client, coordinator, "roster.csv", roster)
    figures = _figures(page)
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(Patient)) == figures["inserted"] > 0
    monkeypatch.setenv("OUTREACH_DATABASE_URL", database_url)
    again = CliRunner().invoke(main, ["patients", "import", str(ROOT / "samples" / "roster.csv"), "--json"])
    cli_figures = json.loads(again.stdout.strip().splitlines()[-1])
    assert cli_figures == {**figures, "inserted": 0}  # the same database: every row known already
    assert _figures(_upload(client, coordinator, "roster.csv", roster)) == {**figures, "inserted": 0}
    events = _figures(
        _upload(client, coordinator, "events.csv", (ROOT / "samples" / "events.csv").read_bytes(), "events")
    )
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(PatientEvent)) == events["inserted"] > 0
        entries = list(session.scalars(select(AuditEntry).where(AuditEntry.action == "roster_upload")))
        assert [e.subject for e in entries] == ["file roster.csv", "file roster.csv", "file events.csv"]
        assert entries[0].actor == "coord@example.org"
        assert entries[0].detail == (
            f"patients; {len(roster)} bytes; accepted {figures['accepted']}, rejected {figures['rejected']}, "
            f"inserted {figures['inserted']}, updated {figures['updated']}"
        )


def test_a_bad_roster_has_a_formula_safe_report_for_the_uploader_only(
    client: TestClient, engine: Engine, coordinator: str
) -> None:
    page = _upload(client, coordinator, "../../etc/bad roster.csv", BAD.encode())
    assert _figures(page) == {"accepted": 1, "rejected": 2, "inserted": 1, "updated": 0}
    assert "bad_roster.csv: imported" in page
    link = re.search(r'href="(/app/roster/uploads/[^"]+/errors)"', page)
    assert link is not None
    report = client.get(link.group(1))
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(report.text)))
    assert rows[0] == ["line", "column", "value", "reason"] and [r[0] for r in rows[1:]] == ["3", "4"]
    assert rows[1][2] == '\'=HYPERLINK("http://x")'  # shown as text by a spreadsheet, never run
    assert not any(cell.startswith("=") for row in rows for cell in row)
    other = TestClient(client.app)
    secret = make_user(engine, "other@example.org", "coordinator", NOW)
    full_sign_in(other, "other@example.org", secret, NOW)
    assert other.get(link.group(1)).status_code == 403  # not theirs
    assert client.get("/app/roster/uploads/..%2F..%2Fetc%2Fpasswd/errors").status_code in (403, 404)
    assert other.get(link.group(1).removesuffix("/errors")).status_code == 403  # nor is the upload
    assert other.get(link.group(1).replace("/errors", "/status")).status_code == 403


def test_a_file_that_is_not_a_roster_is_one_error_and_loads_nothing(
    client: TestClient, engine: Engine, coordinator: str
) -> None:
    page = client.post(
        "/app/roster",
        data={"kind": "patients", "csrf_token": coordinator},
        files={"file": ("notes.csv", io.BytesIO(b"name,age\nAna,60\n"), "text/csv")},
    )
    assert page.status_code == 400 and 'data-testid="roster-error"' in page.text
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(Patient)) == 0
        assert session.scalar(select(AuditEntry).where(AuditEntry.action == "roster_upload")) is None


def test_a_roster_rejected_row_by_row_reports_every_row_and_shows_the_first(
    client: TestClient, engine: Engine, coordinator: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page's import writes its report as it goes and keeps only the first problems in memory
    (outreach/ingest/errorsfile.ErrorSpool); the page still counts them all."""
    from outreach.ingest import errorsfile

    monkeypatch.setattr(errorsfile, "ERRORS_KEPT", 30)
    lines = ["mrn,first_name,birth_date,sex,phone"]
    lines += [f"R{i},Ana,1960-13-{i % 28 + 1:02d},female,(617) 555-{i:04d}" for i in range(45)]
    page = _upload(client, coordinator, "roster.csv", ("\n".join(lines) + "\n").encode())
    assert _figures(page) == {"accepted": 0, "rejected": 45, "inserted": 0, "updated": 0}
    assert "Rejected rows (the first 20 of 45)" in page
    link = re.search(r'href="(/app/roster/uploads/[^"]+/errors)"', page)
    assert link is not None
    rows = list(csv.reader(io.StringIO(client.get(link.group(1)).text)))
    assert [int(r[0]) for r in rows[1:]] == list(range(2, 47))


def test_a_clean_roster_leaves_no_report(client: TestClient, coordinator: str) -> None:
    page = _upload(
        client,
        coordinator,
        "roster.csv",
        b"mrn,first_name,birth_date,sex,phone\nC1,Ana,1960-01-01,f,(617) 555-0100\n",
    )
    assert _figures(page)["accepted"] == 1 and "/errors" not in page


def test_an_htmx_upload_answers_with_the_upload_page_and_its_address(
    client: TestClient, engine: Engine, coordinator: str
) -> None:
    """htmx swaps the answer into the same document (static/roster.js draws the upload's bar), so
    the answer is the page itself and its address is pushed, not a redirect the script would follow."""
    answer = client.post(
        "/app/roster",
        data={"kind": "patients", "csrf_token": coordinator},
        files={"file": ("roster.csv", io.BytesIO(BAD.encode()), "text/csv")},
        headers={"HX-Request": "true"},
        follow_redirects=False,
    )
    assert answer.status_code == 200
    location = answer.headers["hx-push-url"]
    assert f'href="{location}"' in answer.text or _state(answer.text) in ("done", "failed")
    assert _figures(_wait(client, location)) == {"accepted": 1, "rejected": 2, "inserted": 1, "updated": 0}
    with session_scope(engine) as session:
        upload = session.scalar(select(RosterUpload))
        assert upload is not None and upload.status == UploadStatus.done
        assert (upload.file_name, upload.size_bytes, upload.kind) == ("roster.csv", len(BAD), "patients")
        assert (upload.accepted, upload.rejected, upload.problems) == (1, 2, 2)
        assert location.endswith(upload.public_id) and upload.finished_at is not None
    listed = client.get("/app/roster").text  # the roster page lists the user's uploads
    assert f'href="{location}"' in listed and 'data-status="done"' in listed


def _unfinished(engine: Engine, email: str, **values: object) -> str:
    """A `running` upload of `email`'s, as a web process leaves it; returns its page's path."""
    public_id = uploads.new_id()
    row = {
        "status": UploadStatus.running,
        "pid": os.getpid(),
        "host": uploads.HOST,
        "heartbeat_at": NOW,
        "rows_read": 300_000,
        "bytes_read": 16 * 2**20,
        **values,
    }
    with session_scope(engine) as session:
        user = session.scalar(select(User).where(User.email == email))
        assert user is not None
        session.add(
            RosterUpload(
                public_id=public_id,
                user_id=user.id,
                kind="patients",
                file_name="big.csv",
                size_bytes=64 * 2**20,
                created_at=NOW - dt.timedelta(minutes=5),
                started_at=NOW - dt.timedelta(minutes=5),
                **row,
            )
        )
    return f"/app/roster/uploads/{public_id}"


def test_a_running_upload_shows_the_rows_read_and_keeps_polling(
    client: TestClient, engine: Engine, coordinator: str
) -> None:
    location = _unfinished(engine, "coord@example.org")  # this process, beating now: alive
    fragment = client.get(f"{location}/status").text
    assert _state(fragment) == "running" and 'hx-trigger="every 1s"' in fragment
    assert "300,000 rows read so far (25% of 64.0 MB)" in fragment
    assert 'value="25"' in fragment and "hx-get" in fragment
    assert "300,000 rows read so far" in client.get(location).text


@pytest.mark.parametrize(
    "gone",
    [
        {"heartbeat_at": NOW - uploads.STALE_AFTER - dt.timedelta(seconds=1), "host": "another-host"},
        {"pid": 2**22 + 1},  # this host, no such process (above Linux's largest pid)
    ],
    ids=["stale heartbeat", "process gone"],
)
def test_an_upload_whose_process_went_away_is_shown_failed_and_audited(
    client: TestClient, engine: Engine, coordinator: str, gone: dict[str, object]
) -> None:
    location = _unfinished(engine, "coord@example.org", **gone)
    fragment = client.get(f"{location}/status").text
    assert _state(fragment) == "failed" and "hx-trigger" not in fragment
    assert "went away" in fragment and "upload the file again" in fragment
    with session_scope(engine) as session:
        upload = session.scalar(select(RosterUpload))
        assert upload is not None and upload.status == UploadStatus.failed and upload.finished_at == NOW
        entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "roster_upload"))
        assert entry is not None and entry.actor == "coord@example.org" and entry.subject == "file big.csv"
        assert entry.detail == f"patients; {64 * 2**20} bytes; failed: interrupted"
    client.get(location)  # read again: failed once, audited once
    with session_scope(engine) as session:
        assert len(list(session.scalars(select(AuditEntry).where(AuditEntry.action == "roster_upload")))) == 1


def test_a_live_upload_with_a_fresh_heartbeat_elsewhere_is_not_failed(
    client: TestClient, engine: Engine, coordinator: str
) -> None:
    """Another host's pid means nothing here: only its heartbeat tells."""
    location = _unfinished(engine, "coord@example.org", host="another-host", pid=2**22 + 1)
    assert _state(client.get(f"{location}/status").text) == "running"


def test_the_import_reports_the_lines_it_read_to_the_upload_row(
    engine: Engine, coordinator: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine's progress callback (csvfile.Progress) carries lines read to the row that the
    page polls. Reports are made for every line here (rosters under 4 MB make none)."""
    from outreach.config import get_settings
    from outreach.ingest import csvfile
    from outreach.ingest.roster import import_patients

    monkeypatch.setattr(csvfile, "PROGRESS_MIN_BYTES", 0)
    monkeypatch.setattr(csvfile, "_PROGRESS_EVERY", 1)
    location = _unfinished(engine, "coord@example.org", rows_read=0, bytes_read=0)
    public_id = location.rsplit("/", 1)[1]
    roster = tmp_path / "roster.csv"
    roster.write_bytes(BAD.encode())
    reporter = uploads.Reporter(engine, public_id, Clock(NOW + dt.timedelta(seconds=3)))
    result = import_patients(engine, roster, settings=get_settings(), progress=reporter)
    assert (result.accepted, result.rejected) == (1, 2)
    reporter.write()  # what the ticker does every second
    with session_scope(engine) as session:
        upload = session.scalar(select(RosterUpload).where(RosterUpload.public_id == public_id))
        assert upload is not None
        assert (upload.rows_read, upload.bytes_read) == (4, len(BAD))  # the header and 3 rows
        assert upload.heartbeat_at == NOW + dt.timedelta(seconds=3)


def test_an_import_that_fails_in_the_background_is_shown_failed_with_its_reason(
    client: TestClient, engine: Engine, coordinator: str
) -> None:
    """The thread's own failure (here the spooled file is gone before the import opens it): the
    row is failed with the import's one-line reason, naming the file and not its spooled path, the
    failure is audited, and the page says so."""
    from outreach.config import get_settings

    public_id = uploads.new_id()
    folder = uploads.spool_folder(public_id)
    job = uploads.Job(
        engine=engine,
        settings=get_settings(),
        clock=Clock(NOW),
        public_id=public_id,
        kind="patients",
        path=folder / "gone.csv",
        report=uploads.report_path(1, public_id),
        actor="coord@example.org",
    )
    with session_scope(engine) as session:
        user = session.scalar(select(User).where(User.email == "coord@example.org"))
        assert user is not None
        uploads.record(session, job, user.id, "gone.csv", 10)
    uploads.run(job)
    assert not folder.exists()  # the spool folder goes whatever happens
    fragment = client.get(f"/app/roster/uploads/{public_id}/status").text
    assert _state(fragment) == "failed" and "hx-trigger" not in fragment
    assert "gone.csv: cannot read the roster" in fragment and str(folder) not in fragment
    with session_scope(engine) as session:
        entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "roster_upload"))
        assert entry is not None and entry.detail is not None
        assert entry.detail.startswith("patients; 10 bytes; failed: gone.csv: cannot read the roster")


def test_another_web_worker_answers_the_poll_from_the_database(
    client: TestClient, engine: Engine, coordinator: str
) -> None:
    """Uploaded to one app, polled through another built on the same database (as a second uvicorn
    worker is): the status lives in `roster_uploads`, not in the importing app's memory."""
    location = _post(client, coordinator, "roster.csv", BAD.encode())
    with workspace_client(engine, Clock(NOW)) as other_worker:
        other_worker.cookies.update(client.cookies)
        page = _wait(other_worker, location)
    assert _figures(page) == {"accepted": 1, "rejected": 2, "inserted": 1, "updated": 0}
