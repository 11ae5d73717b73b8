"""/app/roster over HTTP: coordinators only, CSRF on the multipart form, the same import as
`outreach patients import` / `events import` (the figures are the CLI's --json), a formula-safe
error report only the uploader can fetch, and the upload audited with name, size and counts."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from outreach.apps.cli import main
from outreach.store.db import session_scope
from outreach.store.models import AuditEntry, Patient, PatientEvent
from tests.workspace_support import Clock, csrf_of, full_sign_in, make_user, sign_in, workspace_client

ROOT = Path(__file__).resolve().parent.parent
NOW = dt.datetime(2026, 11, 23, 15, 0)
FIGURE = re.compile(r'data-testid="roster-(accepted|rejected|inserted|updated)">(\d+)<')
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


def _upload(client: TestClient, token: str, name: str, content: bytes, kind: str = "patients") -> str:
    page = client.post(
        "/app/roster",
        data={"kind": kind, "csrf_token": token},
        files={"file": (name, io.BytesIO(content), "text/csv")},
    )
    assert page.status_code == 200, page.text[-800:]
    return page.text


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
    link = re.search(r'href="(/app/roster/errors/[^"]+)"', page)
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
    assert client.get("/app/roster/errors/..%2F..%2Fetc%2Fpasswd").status_code in (403, 404)


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
    link = re.search(r'href="(/app/roster/errors/[^"]+)"', page)
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
    assert _figures(page)["accepted"] == 1 and "/app/roster/errors/" not in page
