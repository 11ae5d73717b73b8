"""/app/reports and /app/reports.csv over HTTP: every figure on the page and in the CSV equals the
one `outreach report --json` prints for the same database and day (one code path, compared here
figure by figure from the CLI's JSON); viewers may read it; filters; formula-safe CSV.

The page reads the saved report (outreach/outcomes/snapshots.py): the first read computes and
saves it; a change in the database shows only after a refresh; a stale result is shown with its
age and refreshed in the background; coordinators may press "Refresh now"."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import Engine, update

from outreach.apps.cli import main
from outreach.apps.web.workspace.reports import REFRESHER
from outreach.config import get_settings
from outreach.outcomes import snapshots
from outreach.store.db import session_scope
from outreach.store.models import Campaign, Message
from tests.report_population import FILES, ON, TEXTS, build
from tests.workspace_support import Clock, csrf_of, full_sign_in, make_user, sign_in, workspace_client

NOW = dt.datetime.combine(ON, dt.time(17))  # noon in New York: the clinic's day is ON
FIGURE = re.compile(r'<td data-fig="([^"]+)">([^<]*)</td>')
STAGES = ("eligible", "enrolled", "sent", "delivered", "engaged", "activated", "gap_closed")
RATES = ("delivered_pct", "engaged_pct", "activated_pct", "gap_closed_pct")
COLUMNS: tuple[str, ...] = (
    "sent",
    "delivered",
    "undelivered",
    "failed",
    "engaged",
    "activated",
    "clicked",
    "gap_closed",
)
COLUMNS += ("opted_out",)
CODES = {"failed_codes": "failed", "undelivered_codes": "undelivered", "opted_out_by": "opted_out"}


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def client(engine: Engine, clock: Clock) -> Iterator[TestClient]:
    build(engine)
    with workspace_client(engine, clock, campaigns=FILES) as test_client:
        make_user(engine, "view@example.org", "viewer", NOW)
        assert str(sign_in(test_client, "view@example.org").url).endswith("/app/inbox")
        yield test_client
    REFRESHER.wait()  # a background refresh must not outlive the test's database


def cli_report(monkeypatch: pytest.MonkeyPatch, tmp_path: Any, *args: str) -> dict[str, Any]:
    """`outreach report --json` over the same database, with the same campaign files."""
    for cid, text in TEXTS.items():
        (tmp_path / f"{cid}.yaml").write_text(text, encoding="utf-8")
    monkeypatch.setenv("OUTREACH_CAMPAIGNS_DIR", str(tmp_path))
    get_settings.cache_clear()
    result = CliRunner().invoke(main, ["report", "--json", "--on", ON.isoformat(), *args])
    assert result.exit_code == 0 and not result.stderr, result.output
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def expected(report: dict[str, Any]) -> dict[str, Any]:
    """Every figure the page should show, keyed campaign|section|item|figure, from the CLI's JSON."""
    out: dict[str, Any] = {}
    for c in report["campaigns"]:
        cid = c["id"]
        out |= {f"{cid}|funnel|{k}|count": c[k] for k in STAGES}
        out |= {f"{cid}|funnel|{k}|percent_of_sent": c[k] for k in RATES}
        for d in c["daily"]:
            out |= {
                f"{cid}|daily|{d['date']}|sent": d["sent"],
                f"{cid}|daily|{d['date']}|replies": d["replies"],
            }
        for lang in c["languages"]:
            out |= {f"{cid}|language|{lang['language']}|{k}": lang[k] for k in ("enrolled", *COLUMNS)}
        for step in c["steps"]:
            out |= {f"{cid}|step|{step['step']}|{k}": step[k] for k in COLUMNS}
        for field, figure in CODES.items():
            out |= {f"{cid}|{field}|{item}|{figure}": n for item, n in c[field].items()}
    return out


def number(text: str) -> Any:
    if text in ("–", ""):
        return None
    return float(text) if "." in text else int(text)


def on_page(html: str) -> dict[str, Any]:
    found = FIGURE.findall(html)
    assert len(found) == len(dict(found)), "a figure shown twice"
    return {key: number(value) for key, value in found}


def in_csv(body: str) -> dict[str, Any]:
    rows = list(csv.reader(io.StringIO(body)))
    assert rows[0] == ["campaign", "section", "item", "figure", "value"]
    return {"|".join(row[:4]): number(row[4]) for row in rows[1:]}


def test_page_and_csv_equal_report_json(
    client: TestClient, engine: Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    report = cli_report(monkeypatch, tmp_path)
    want = expected(report)
    assert report["campaigns"][0]["eligible"] is not None and want["alpha|funnel|sent|count"] > 0
    page = client.get("/app/reports")
    assert page.status_code == 200
    assert on_page(page.text) == want
    assert "Figures as of 17:00 UTC (0 min ago; refreshed every 5 minutes); computed now" in page.text
    saved = snapshots.latest(engine)
    assert saved is not None and saved.report == report  # the saved JSON is `report --json`'s
    again = client.get("/app/reports")  # now read from the saved result
    assert on_page(again.text) == want and "computed now" not in again.text
    for cid in FILES:
        assert f'data-testid="funnel-{cid}" role="img"' in page.text
        assert f'data-testid="daily-{cid}" role="img"' in page.text
    exported = client.get("/app/reports.csv")
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    assert "attachment" in exported.headers["content-disposition"]
    assert in_csv(exported.text) == want


def test_filters_are_the_cli_options(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    since = (ON - dt.timedelta(days=10)).isoformat()
    report = cli_report(monkeypatch, tmp_path, "beta", "--since", since)
    want = expected(report)
    assert [c["id"] for c in report["campaigns"]] == ["beta"]
    page = client.get("/app/reports", params={"campaign": "beta", "since": since})
    assert page.status_code == 200 and on_page(page.text) == want
    assert 'data-testid="funnel-alpha"' not in page.text
    assert "Figures computed now for this filter" in page.text  # the saved report has no `since`
    assert in_csv(client.get("/app/reports.csv", params={"campaign": "beta", "since": since}).text) == want


def test_a_campaign_filter_reads_its_part_of_the_saved_report(
    client: TestClient, engine: Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    client.get("/app/reports")  # saves the whole report
    report = cli_report(monkeypatch, tmp_path, "beta")
    saved = snapshots.latest(engine)
    assert saved is not None and saved.only("beta") == report  # exactly `report --json beta`
    page = client.get("/app/reports", params={"campaign": "beta"})
    assert on_page(page.text) == expected(report) and "Figures as of 17:00 UTC" in page.text
    assert 'data-testid="funnel-alpha"' not in page.text
    assert in_csv(client.get("/app/reports.csv", params={"campaign": "beta"}).text) == expected(report)


def test_a_change_shows_after_a_refresh_not_before(
    client: TestClient, engine: Engine, clock: Clock, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    before = client.get("/app/reports").text
    with session_scope(engine) as session:
        session.add(Campaign(id="gamma", name="Gamma", content_hash="x"))
        session.execute(update(Message).where(Message.id == 1).values(step_id="moved"))
    clock.now = NOW + dt.timedelta(minutes=4)  # younger than the interval: the saved result stands
    unchanged = client.get("/app/reports")
    assert on_page(unchanged.text) == on_page(before) and 'data-testid="funnel-gamma"' not in unchanged.text
    assert "Figures as of 17:00 UTC (4 min ago; refreshed every 5 minutes)." in unchanged.text
    assert in_csv(client.get("/app/reports.csv").text) == on_page(before)
    assert snapshots.refresh(engine, FILES, ON, now=clock.now) is not None
    after = client.get("/app/reports")
    want = expected(cli_report(monkeypatch, tmp_path))
    assert on_page(after.text) == want != on_page(before)
    assert 'data-testid="funnel-gamma"' in after.text
    assert any("|step|moved|" in key for key in want)
    assert "Figures as of 17:04 UTC (0 min ago" in after.text


def test_a_stale_result_is_shown_with_its_age_and_refreshed(
    client: TestClient, engine: Engine, clock: Clock
) -> None:
    first = client.get("/app/reports").text
    with session_scope(engine) as session:
        session.add(Campaign(id="gamma", name="Gamma", content_hash="x"))
    clock.now = NOW + dt.timedelta(minutes=7)
    stale = client.get("/app/reports")
    assert "Figures as of 17:00 UTC (7 min ago; refreshed every 5 minutes)." in stale.text
    assert on_page(stale.text) == on_page(first)  # answered from the saved result...
    REFRESHER.wait()  # ...while a background thread refreshed it
    saved = snapshots.latest(engine)
    assert saved is not None and saved.computed_at == clock.now
    fresh = client.get("/app/reports").text
    assert "Figures as of 17:07 UTC (0 min ago" in fresh and 'data-testid="funnel-gamma"' in fresh


def test_a_coordinator_refreshes_now(engine: Engine, clock: Clock) -> None:
    build(engine)
    with workspace_client(engine, clock, campaigns=FILES) as coordinator:
        secret = make_user(engine, "coord@example.org", "coordinator", NOW)
        full_sign_in(coordinator, "coord@example.org", secret, NOW)
        page = coordinator.get("/app/reports")
        assert 'data-testid="report-refresh"' in page.text
        with session_scope(engine) as session:
            session.add(Campaign(id="gamma", name="Gamma", content_hash="x"))
        clock.now = NOW + dt.timedelta(minutes=1)
        assert coordinator.post("/app/reports/refresh", follow_redirects=False).status_code == 403  # no CSRF
        answer = coordinator.post(
            "/app/reports/refresh", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False
        )
        assert answer.status_code == 303 and answer.headers["location"] == "/app/reports"
        REFRESHER.wait()
        saved = snapshots.latest(engine)
        assert saved is not None and [c["id"] for c in saved.report["campaigns"]] == [
            "alpha",
            "beta",
            "gamma",
        ]
        status = coordinator.get("/app/reports/status")
        assert 'data-testid="report-refreshed"' in status.text and "hx-get" not in status.text


def test_a_viewer_may_not_refresh(client: TestClient, engine: Engine) -> None:
    page = client.get("/app/reports")
    assert 'data-testid="report-refresh"' not in page.text
    answer = client.post(
        "/app/reports/refresh", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False
    )
    assert answer.status_code == 403


def test_a_viewer_reads_it_with_no_pause_button(client: TestClient) -> None:
    page = client.get("/app/reports")
    assert 'href="/app/reports"' in page.text  # the nav link
    assert "pause-" not in page.text and '<form method="post"' not in page.text.split("</header>")[1]


def test_bad_filters_are_a_sentence(client: TestClient) -> None:
    page = client.get("/app/reports", params={"since": "last week"})
    assert page.status_code == 400 and "must be a date" in page.text and "Traceback" not in page.text
    page = client.get("/app/reports", params={"campaign": "nope"})
    assert page.status_code == 400 and "no campaign &#39;nope&#39;" in page.text
    assert client.get("/app/reports.csv", params={"campaign": "nope"}).status_code == 400


def test_csv_cells_are_spreadsheet_safe(client: TestClient, engine: Engine) -> None:
    with session_scope(engine) as session:
        session.add(Campaign(id="=cmd", name="Evil", content_hash="x"))
        session.execute(update(Message).where(Message.id == 1).values(step_id="+SUM(A1)"))
    rows = list(csv.reader(io.StringIO(client.get("/app/reports.csv").text)))
    cells = [cell for row in rows for cell in row]
    assert "'=cmd" in cells and "'+SUM(A1)" in cells
    assert not any(cell.startswith(("=", "+", "@")) for cell in cells)


def test_signed_out_is_sent_to_sign_in(engine: Engine) -> None:
    with workspace_client(engine, Clock(NOW)) as anonymous:
        for path in ("/app/reports", "/app/reports.csv"):
            answer = anonymous.get(path, follow_redirects=False)
            assert answer.status_code == 303 and answer.headers["location"] == "/app/login"
