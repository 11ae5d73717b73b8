"""/app/campaigns over HTTP: every campaign's state, its problems from the CLI's validator, the
audience today, the week's coming sends and sample texts (first names only); coordinators pause
and resume (CSRF, audited with the person), viewers read and are refused the buttons' POSTs."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape
from sqlalchemy import Engine, select

from outreach.campaigns import CampaignFile, load_campaigns, validate_files
from outreach.config import get_settings
from outreach.plan import scheduler
from outreach.store.db import session_scope
from outreach.store.models import AuditEntry, Message, MessageStatus
from tests.factories import add_patient, campaign
from tests.workspace_support import Clock, csrf_of, full_sign_in, make_user, sign_in

NOW = dt.datetime(2026, 11, 23, 15, 0)  # Monday 10:00 in New York
ROOT = Path(__file__).resolve().parent.parent
STATE = re.compile(r'data-testid="campaign" data-id="([\w-]+)" data-state="(\w+)"')


def _campaigns() -> dict[str, CampaignFile]:
    shipped = load_campaigns(ROOT / "campaigns", settings=get_settings())
    later = campaign(id="later-screening", active={"from": dt.date(2027, 1, 1)})
    over = campaign(id="over-screening", active={"from": dt.date(2026, 1, 1), "until": dt.date(2026, 6, 30)})
    return {**shipped, later.id: later, over.id: over}


@pytest.fixture
def dispatched() -> list[list[int]]:
    return []


@pytest.fixture
def client(engine: Engine, dispatched: list[list[int]]) -> Iterator[TestClient]:
    from outreach.apps.web.app import create_app

    settings = get_settings().model_copy(
        update={"twilio_auth_token": "t" * 32, "public_url": "http://127.0.0.1:8000"}
    )
    app = create_app(
        settings, engine=engine, campaigns=_campaigns(), clock=Clock(NOW), dispatch=dispatched.append
    )
    with TestClient(app) as test_client:
        yield test_client


def _user(client: TestClient, engine: Engine, role: str) -> str:
    email = f"{role}@example.org"
    secret = make_user(engine, email, role, NOW)
    if role == "viewer":  # no second factor for a read-only account
        return csrf_of(sign_in(client, email).text)
    return full_sign_in(client, email, secret, NOW)


@pytest.fixture
def queued(engine: Engine) -> list[int]:
    """Two colorectal-screening invites queued now, and one step planned for tomorrow."""
    crc = _campaigns()["colorectal-screening"]
    with session_scope(engine) as session:
        add_patient(session, "C1", first_name="Lucia", phone="(617) 555-0101", birth_date=dt.date(1960, 1, 1))
        add_patient(session, "C2", first_name="Tomas", phone="(617) 555-0102", birth_date=dt.date(1961, 1, 1))
    scheduler.tick(engine, {crc.id: crc}, settings=get_settings(), now=NOW)
    with session_scope(engine) as session:
        ids = list(session.scalars(select(Message.id).where(Message.status == MessageStatus.queued)))
        later = session.get(Message, ids[0])
        assert later is not None
        session.add(
            Message(
                enrollment_id=later.enrollment_id,
                step_id="reminder",
                phone=later.phone,
                body="x",
                status=MessageStatus.planned,
                send_at=NOW + dt.timedelta(days=1),
            )
        )
    assert len(ids) == 2
    return ids


def _audit(engine: Engine) -> list[tuple[str, str, str]]:
    with session_scope(engine) as session:
        rows = session.execute(
            select(AuditEntry.actor, AuditEntry.action, AuditEntry.subject)
            .where(AuditEntry.action.like("campaign_%"))
            .order_by(AuditEntry.id)
        )
        return [(r.actor, r.action, r.subject) for r in rows]


def test_a_viewer_sees_every_campaign_and_its_figures_but_no_buttons(
    client: TestClient, engine: Engine, queued: list[int]
) -> None:
    token = _user(client, engine, "viewer")
    page = client.get("/app/campaigns")
    assert page.status_code == 200
    states = dict(STATE.findall(page.text))
    assert states == {
        "breast-screening": "active",
        "cervical-screening": "active",
        "colorectal-screening": "active",
        "flu-season": "active",
        "later-screening": "scheduled",
        "over-screening": "ended",
    }
    assert 'data-testid="pause-' not in page.text and 'data-testid="resume-' not in page.text
    # The CLI's validator: each acknowledged warning of the shipped files, on its campaign.
    _, problems = validate_files(sorted((ROOT / "campaigns").glob("*.yaml")), settings=get_settings())
    assert problems and all(str(escape(p.message)) in page.text for p in problems)
    assert page.text.count("warning (acknowledged)") == len(problems)
    # The audience today (enrolled or not), and the outbox by day: 2 today, 1 tomorrow.
    assert 'data-testid="eligible-colorectal-screening">2<' in page.text
    week = re.search(r'data-testid="next-sends-colorectal-screening">(.*?)</tr>', page.text)
    assert week is not None
    assert re.findall(r"<td>([\d,]+)</td>", week.group(1)) == ["2", "1", "0", "0", "0", "0", "0"]
    # Texts per step and language, for eligible patients' first names, with segments.
    samples = re.findall(
        r'data-testid="sample-colorectal-screening"><td>([^<]+)</td><td>(\w+)</td><td>(\w+)</td><td>(\d+)</td>',
        page.text,
    )
    assert {(step.split(" ")[0], language) for step, language, _, _ in samples} >= {
        ("invite", "en"),
        ("invite", "es"),
        ("reminder", "en"),
    }
    assert {name for _, _, name, _ in samples} == {"Lucia", "Tomas"}
    assert all(int(segments) >= 1 for *_, segments in samples)
    refused = client.post("/app/campaigns/colorectal-screening/pause", data={"csrf_token": token})
    assert refused.status_code == 403
    assert _audit(engine) == []


def test_samples_use_eligible_first_names_only(client: TestClient, engine: Engine) -> None:
    with session_scope(engine) as session:
        add_patient(
            session, "MRN-77", first_name="Lucia", phone="(617) 555-0177", birth_date=dt.date(1960, 1, 1)
        )
    _user(client, engine, "viewer")
    page = client.get("/app/campaigns").text
    assert 'data-testid="eligible-colorectal-screening">1<' in page
    assert "<td>Lucia</td>" in page and "Hi Lucia" in page
    assert (
        "MRN-77" not in page and "555-0177" not in page and ">Test<" not in page
    )  # no mrn, number, last name


def test_a_coordinator_pauses_and_resumes_with_csrf_and_audit(
    client: TestClient, engine: Engine, queued: list[int], dispatched: list[list[int]]
) -> None:
    token = _user(client, engine, "coordinator")
    page = client.get("/app/campaigns").text
    assert 'data-testid="pause-colorectal-screening"' in page
    assert 'data-testid="pause-over-screening"' not in page  # an ended campaign has nothing to pause
    assert client.post("/app/campaigns/colorectal-screening/pause").status_code == 403  # no CSRF
    done = client.post("/app/campaigns/colorectal-screening/pause", data={"csrf_token": token})
    assert done.status_code == 200 and "notice=paused" in str(done.url)
    assert "Paused: nothing of this campaign" in done.text
    assert dict(STATE.findall(done.text))["colorectal-screening"] == "paused"
    assert 'data-testid="resume-colorectal-screening"' in done.text
    with session_scope(engine) as session:
        statuses = set(session.scalars(select(Message.status)))
    assert statuses == {MessageStatus.planned}  # held, not canceled
    assert dispatched == []
    resumed = client.post("/app/campaigns/colorectal-screening/resume", data={"csrf_token": token})
    assert "notice=resumed" in str(resumed.url)
    assert dict(STATE.findall(resumed.text))["colorectal-screening"] == "active"
    assert sorted(i for batch in dispatched for i in batch) == sorted(queued)  # handed over at once
    assert _audit(engine) == [
        ("coordinator@example.org", "campaign_pause", "colorectal-screening"),
        ("coordinator@example.org", "campaign_resume", "colorectal-screening"),
    ]


def test_an_empty_roster_shows_an_example_name_and_an_unknown_campaign_is_a_404(
    client: TestClient, engine: Engine
) -> None:
    token = _user(client, engine, "coordinator")
    page = client.get("/app/campaigns").text  # nobody on the roster: an example name, said so
    assert "with an example name: no patient is eligible today" in page and "<td>Maria</td>" in page
    missing = client.post("/app/campaigns/nope/pause", data={"csrf_token": token})
    assert missing.status_code == 404 and "No campaign" in missing.text
    assert _audit(engine) == []
