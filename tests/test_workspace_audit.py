"""/app/audit over HTTP: admins only; filters by person, action and clinic-local dates; pages of
50, newest first; numbers masked (the consent writers name them in full)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from outreach.listen.consent import record_opt_out
from outreach.store.db import session_scope
from outreach.team.audit import audit, redact
from tests.workspace_support import Clock, full_sign_in, make_user, workspace_client

NOW = dt.datetime(2026, 11, 23, 15, 0)  # Monday 10:00 in New York (the tests' clinic zone)
ROW = re.compile(r'data-testid="audit-row" data-action="([^"]+)">\s*<td>([^<]*)</td><td>([^<]*)</td>')


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    with workspace_client(engine, Clock(NOW)) as test_client:
        yield test_client


@pytest.fixture
def admin(client: TestClient, engine: Engine) -> str:
    secret = make_user(engine, "admin@example.org", "admin", NOW)
    return full_sign_in(client, "admin@example.org", secret, NOW)


def _rows(client: TestClient, query: str) -> list[tuple[str, str, str]]:
    page = client.get(f"/app/audit?{query}")
    assert page.status_code == 200
    return ROW.findall(page.text)


def _seed(engine: Engine) -> None:
    with session_scope(engine) as session:
        audit(session, "ann@example.org", "close", "conversation a", dt.datetime(2026, 11, 20, 14, 0))
        audit(session, "Bob@example.org", "assign", "conversation b", dt.datetime(2026, 11, 21, 14, 0))
        # Sunday 23:30 in New York, although Monday in UTC
        audit(session, "ann@example.org", "assign", "conversation c", dt.datetime(2026, 11, 23, 4, 30))


def test_only_admins_see_the_log(client: TestClient, engine: Engine) -> None:
    secret = make_user(engine, "coord@example.org", "coordinator", NOW)
    full_sign_in(client, "coord@example.org", secret, NOW)
    refused = client.get("/app/audit")
    assert refused.status_code == 403 and "it needs admin" in refused.text
    assert 'href="/app/audit"' not in client.get("/app/inbox").text


def test_filters_by_user_action_and_local_dates(client: TestClient, engine: Engine, admin: str) -> None:
    _seed(engine)
    assert [r[0] for r in _rows(client, "actor=ann@example.org")] == ["assign", "close"]
    assert [r[2] for r in _rows(client, "actor=BOB@example.org")] == ["Bob@example.org"]
    assert [r[2] for r in _rows(client, "action=assign")] == ["ann@example.org", "Bob@example.org"]
    # the 23rd in New York starts at 05:00 UTC: the 04:30 UTC entry belongs to the 22nd
    assert [r[1] for r in _rows(client, "action=assign&from=2026-11-22&to=2026-11-22")] == [
        "2026-11-22 23:30:00"
    ]
    assert _rows(client, "action=assign&from=2026-11-23") == []
    assert len(_rows(client, "action=close&from=2026-11-20&to=2026-11-20")) == 1
    page = client.get("/app/audit?action=assign&from=not-a-date")
    assert page.status_code == 200 and len(ROW.findall(page.text)) == 2  # a bad date is dropped
    assert 'option value="user_add"' in page.text  # the action filter lists what the log holds


def test_pages_of_fifty_newest_first(client: TestClient, engine: Engine, admin: str) -> None:
    with session_scope(engine) as session:
        for i in range(55):
            audit(session, "ann@example.org", "close", f"conversation {i}", NOW - dt.timedelta(minutes=i))
    first = client.get("/app/audit?action=close")
    assert len(ROW.findall(first.text)) == 50
    assert "conversation 0<" in first.text and "conversation 49<" in first.text
    assert 'href="/app/audit?action=close&amp;page=2"' in first.text
    second = client.get("/app/audit?action=close&page=2")
    assert len(ROW.findall(second.text)) == 5 and "conversation 54<" in second.text
    assert 'data-testid="audit-older"' not in second.text and 'data-testid="audit-newer"' in second.text


def test_numbers_are_masked(client: TestClient, engine: Engine, admin: str) -> None:
    with session_scope(engine) as session:
        record_opt_out(session, "+16175550100", by="STOP", at=NOW)
        audit(session, "twilio", "status_unmatched", "SM1", NOW, '{"to": "+16175550123"}')
    page = client.get("/app/audit").text
    assert "+16175550100" not in page and "6175550123" not in page
    assert "+1********00" in page and "+1********23" in page
    assert redact("message 1234 to +1********00, queued") == "message 1234 to +1********00, queued"
    assert redact("called 6175550100 at 2026-11-23") == "called 61******00 at 2026-11-23"
