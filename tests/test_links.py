"""Tracked links (DESIGN.md §11, issue #13): the token in the text, the redirect, clicks vs
previews, the first click as an activation, and the friendly page for anything else."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, update

from outreach.apps.web.app import create_app
from outreach.campaigns import CampaignFile
from outreach.config import Settings, get_settings
from outreach.plan import scheduler
from outreach.segments import count_segments
from outreach.store.db import session_scope
from outreach.store.models import Activation, LinkClick, Message, MessageStatus
from tests.factories import add_patient, campaign

PUBLIC = "https://outreach.example.org"
PAGE = "https://clinic.example.org/book-a-screening"
PLANNED = dt.datetime(2026, 3, 2, 15, 0)  # 10:00 in New York: the invite goes at once
DELIVERED = dt.datetime(2026, 3, 2, 15, 1)
BROWSER = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"
LINK_STEP = {
    "id": "invite",
    "after": "0d",
    "text": {"en": "Hi {first_name}, {clinic_name}: book your screening at {link} Reply STOP to opt out."},
}


@pytest.fixture
def settings(engine: Engine) -> Settings:
    return get_settings().model_copy(
        update={"twilio_auth_token": "t" * 32, "public_url": PUBLIC, "twilio_from_number": "+16175550100"}
    )


@pytest.fixture
def linked() -> CampaignFile:
    return campaign(link=PAGE, steps=[LINK_STEP])


def _plan(engine: Engine, settings: Settings, c: CampaignFile, patients: int = 1) -> list[Message]:
    with session_scope(engine) as s:
        for i in range(patients):
            add_patient(s, f"m{i}", phone=f"+1617{2000000 + i:07d}", first_name="Ana")
    scheduler.tick(engine, {c.id: c}, settings=settings, now=PLANNED)
    with session_scope(engine) as s:
        s.execute(
            update(Message).values(
                status=MessageStatus.delivered,
                sent_at=PLANNED,
                delivered_at=DELIVERED,
                provider_sid=Message.id.cast(Message.body.type).concat("SM"),
            )
        )
        rows = list(s.scalars(select(Message).order_by(Message.id)))
        s.expunge_all()
        return rows


class Clock:
    def __init__(self) -> None:
        self.now = DELIVERED + dt.timedelta(minutes=5)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(engine: Engine, settings: Settings, linked: CampaignFile, clock: Clock) -> Iterator[TestClient]:
    app = create_app(settings, engine=engine, campaigns={linked.id: linked}, clock=clock)
    with TestClient(app) as client:
        yield client


def test_each_message_gets_its_own_unguessable_short_link_and_honest_segments(
    engine: Engine, settings: Settings, linked: CampaignFile
) -> None:
    rows = _plan(engine, settings, linked, patients=50)

    tokens = [row.link_token for row in rows]
    assert len(set(tokens)) == 50 and all(t is not None and len(t) >= 11 for t in tokens)
    for row in rows:
        urls = re.findall(r"https://\S+", row.body)
        assert urls == [f"{PUBLIC}/l/{row.link_token}"]
        assert row.segments == count_segments(row.body).segments
    # base64url of at least 64 random bits: 11 characters or more from a 64-letter alphabet
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{11,}", t or "") for t in tokens)


def test_a_browser_click_redirects_records_a_click_and_activates_once(
    engine: Engine, settings: Settings, linked: CampaignFile, client: TestClient
) -> None:
    [row] = _plan(engine, settings, linked)

    first = client.get(f"/l/{row.link_token}", headers={"User-Agent": BROWSER}, follow_redirects=False)
    again = client.get(f"/l/{row.link_token}", headers={"User-Agent": BROWSER}, follow_redirects=False)

    assert (first.status_code, first.headers["location"]) == (302, PAGE)
    assert first.headers["cache-control"] == "no-store" and again.status_code == 302
    with session_scope(engine) as s:
        click = s.get_one(LinkClick, row.id)
        assert (click.clicks, click.previews, click.first_click_at) == (
            2,
            0,
            DELIVERED + dt.timedelta(minutes=5),
        )
        activation = s.scalars(select(Activation)).one()
        assert (activation.enrollment_id, activation.how, activation.inbound_id) == (
            row.enrollment_id,
            "link_click",
            None,
        )


@pytest.mark.parametrize(
    ("method", "agent", "seconds_after_delivery"),
    [
        ("HEAD", BROWSER, 300),
        ("GET", "facebookexternalhit/1.1 Facebot Twitterbot/1.0", 300),  # iMessage's preview
        ("GET", "WhatsApp/2.23.20.0", 300),
        ("GET", "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", 300),
        ("GET", "Twitterbot/1.0", 300),
        ("GET", "Mozilla/5.0 (compatible; Google-PageRenderer; +https://developers.google.com/)", 300),
        ("GET", BROWSER, 1),  # a phone unfurling the link as the text arrives
    ],
)
def test_previews_are_recorded_but_are_not_clicks(
    engine: Engine,
    settings: Settings,
    linked: CampaignFile,
    client: TestClient,
    clock: Clock,
    method: str,
    agent: str,
    seconds_after_delivery: int,
) -> None:
    [row] = _plan(engine, settings, linked)
    clock.now = DELIVERED + dt.timedelta(seconds=seconds_after_delivery)

    response = client.request(
        method, f"/l/{row.link_token}", headers={"User-Agent": agent}, follow_redirects=False
    )

    assert response.status_code == 302
    with session_scope(engine) as s:
        click = s.get_one(LinkClick, row.id)
        assert (click.clicks, click.previews) == (0, 1)
        assert s.scalars(select(Activation)).all() == []


@pytest.mark.parametrize("token", ["AAAAAAAAAAAA", "short", "x" * 40, "abc.def~ghi!"])
def test_an_unknown_token_gets_the_clinic_page_and_nothing_is_recorded(
    engine: Engine, client: TestClient, token: str
) -> None:
    response = client.get(f"/l/{token}", follow_redirects=False)

    assert response.status_code == 404
    assert "(617) 555-0100" in response.text and "Riverside Health" in response.text
    with session_scope(engine) as s:
        assert s.scalars(select(LinkClick)).all() == []


def test_an_expired_link_gets_the_clinic_page_and_never_names_the_patient(
    engine: Engine, settings: Settings, linked: CampaignFile, client: TestClient, clock: Clock
) -> None:
    [row] = _plan(engine, settings, linked)
    clock.now = PLANNED + dt.timedelta(days=settings.link_ttl_days, minutes=1)

    response = client.get(f"/l/{row.link_token}", headers={"User-Agent": BROWSER}, follow_redirects=False)

    assert response.status_code == 404 and "location" not in response.headers
    assert "Ana" not in response.text and "(617) 555-0100" in response.text
    with session_scope(engine) as s:
        assert s.scalars(select(LinkClick)).all() == []


def test_without_a_public_url_the_campaign_page_is_sent_untracked(
    engine: Engine, linked: CampaignFile
) -> None:
    settings = get_settings()
    assert settings.public_url is None
    [row] = _plan(engine, settings, linked)
    assert row.link_token is None and PAGE in row.body
