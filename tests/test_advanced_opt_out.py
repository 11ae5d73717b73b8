"""Twilio Advanced Opt-Out through the real webhook: its OptOutType (STOP, START, HELP) decides
before our own keywords (DESIGN.md §8), and with OUTREACH_TWILIO_ADVANCED_OPT_OUT on we send no
confirmation of our own. Signed requests to the app (as tests/test_web.py), then the sandbox posting
its own replies, with Advanced Opt-Out switched on, to `outreach web` served over real HTTP."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import threading
import time
from collections.abc import Iterator, Sequence

import pytest
import requests
import uvicorn
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import Engine, func, select
from twilio.request_validator import RequestValidator

from outreach.apps.web.app import create_app
from outreach.campaigns import CampaignFile, parse_campaign
from outreach.clock import utcnow
from outreach.config import Settings, get_settings
from outreach.listen import consent
from outreach.sandbox import PlannedReply, SandboxMessage, SandboxServer
from outreach.store.db import session_scope
from outreach.store.models import Activation, Enrollment, Handoff, InboundMessage, Message, PhoneConsent
from tests.factories import seed_invite
from tests.workers_harness import wait_until

TOKEN = "0123456789abcdef0123456789abcdef"
PUBLIC = "https://outreach.example.org"
PHONE = "+16175550123"
NOW = dt.datetime(2026, 3, 2, 15, 0)
CAMPAIGN_YAML = """
id: colorectal-screening
name: Colorectal cancer screening
active: {from: 2026-01-01}
audience: {age: {min: 45, max: 75}}
steps:
  - {id: invite, after: 0d, text: {en: "Hi {first_name}, reply YES for a kit. Reply STOP to opt out."}}
replies:
  - {keywords: [YES], outcome: kit_requested, answer: {en: "Thanks {first_name}, a kit is on its way."}}
"""
_EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response />'


@pytest.fixture
def campaigns(engine: Engine) -> dict[str, CampaignFile]:
    campaign = parse_campaign(CAMPAIGN_YAML, settings=get_settings())
    return {campaign.id: campaign}


def advanced_settings(token: str, public_url: str) -> Settings:
    return get_settings().model_copy(
        update={"twilio_auth_token": token, "public_url": public_url, "twilio_advanced_opt_out": True}
    )


def facts(engine: Engine) -> dict[str, object]:
    """What a reply changed: the number's consent, the enrollment's outcome, activations, hand-offs,
    answers queued, and how each stored reply was classified."""
    with session_scope(engine) as session:
        row = session.get(PhoneConsent, PHONE)

        def count(model: type[object]) -> int:
            return int(session.scalar(select(func.count()).select_from(model)) or 0)

        return {
            "opted_out": consent.is_opted_out(session, PHONE),
            "opted_out_by": row.opted_out_by if row else None,
            "opted_in_by": row.opted_in_by if row else None,
            "outcome": session.scalars(select(Enrollment.outcome)).one(),
            "activations": count(Activation),
            "handoffs": count(Handoff),
            "answers": session.scalars(select(Message.body).where(Message.kind == "answer")).all(),
            "classified": session.scalars(
                select(InboundMessage.classification).order_by(InboundMessage.id)
            ).all(),
        }


# --- signed requests to the app ---------------------------------------------------------------------


@pytest.fixture
def client(engine: Engine, campaigns: dict[str, CampaignFile]) -> TestClient:
    app = create_app(advanced_settings(TOKEN, PUBLIC), engine=engine, campaigns=campaigns, clock=lambda: NOW)
    return TestClient(app)


def post_reply(client: TestClient, body: str, opt_out_type: str, sid: str) -> Response:
    form = {"MessageSid": sid, "From": PHONE, "To": "+16175550100", "Body": body, "OptOutType": opt_out_type}
    signature = RequestValidator(TOKEN).compute_signature(PUBLIC + "/twilio/inbound", form)
    response: Response = client.post("/twilio/inbound", data=form, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 200
    return response


def test_a_custom_stop_word_opts_out_and_twilio_alone_confirms_it(client: TestClient, engine: Engine) -> None:
    seed_invite(engine, phone=PHONE, at=NOW)

    response = post_reply(client, "REMOVE", "STOP", "SM" + "1" * 32)

    assert response.text == _EMPTY_TWIML  # Twilio sends the confirmation; a second one would be ours
    assert facts(engine) | {"answers": []} == {
        "opted_out": True,
        "opted_out_by": "twilio:STOP",
        "opted_in_by": None,
        "outcome": None,
        "activations": 0,
        "handoffs": 0,
        "answers": [],
        "classified": ["opt_out"],
    }


def test_start_opts_in_only_an_opted_out_number_and_yes_stays_the_campaigns(
    client: TestClient, engine: Engine
) -> None:
    seed_invite(engine, phone=PHONE, at=NOW)
    with session_scope(engine) as session:
        consent.record_opt_out(session, PHONE, by="STOP", at=NOW)

    start = post_reply(client, "START", "START", "SM" + "2" * 32)
    yes = post_reply(client, "YES", "START", "SM" + "3" * 32)

    assert (start.text, yes.text) == (_EMPTY_TWIML, _EMPTY_TWIML)
    assert facts(engine) == {
        "opted_out": False,
        "opted_out_by": "STOP",
        "opted_in_by": "START",
        "outcome": "kit_requested",  # the second START (YES, not opted out) was the campaign's answer
        "activations": 1,
        "handoffs": 0,
        "answers": ["Thanks Ana, a kit is on its way."],  # no START confirmation of ours, only the rule's
        "classified": ["opt_in", "keyword"],
    }


def test_help_from_twilio_is_help_and_sends_nothing_of_ours(client: TestClient, engine: Engine) -> None:
    seed_invite(engine, phone=PHONE, at=NOW)

    response = post_reply(client, "SUPPORT", "HELP", "SM" + "4" * 32)

    assert response.text == _EMPTY_TWIML
    observed = facts(engine)
    assert (observed["classified"], observed["handoffs"], observed["opted_out"]) == (["help"], 0, False)


# --- the sandbox, Advanced Opt-Out on, posting to `outreach web` over HTTP -------------------------------


@pytest.fixture
def served(engine: Engine, campaigns: dict[str, CampaignFile], sandbox: SandboxServer) -> Iterator[str]:
    """`outreach web` on a free port, keyed by the sandbox's auth token (it signs what it posts),
    with Advanced Opt-Out on; yields its URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    app = create_app(
        advanced_settings(sandbox.auth_token, url), engine=engine, campaigns=campaigns, clock=utcnow
    )
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "outreach web did not start"
        time.sleep(0.01)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def test_the_sandboxs_opt_out_types_reach_the_rules_through_the_real_webhook(
    engine: Engine, sandbox: SandboxServer, served: str
) -> None:
    """One patient answers three texts in turn: REMOVE (a custom STOP word only Twilio knows),
    START (back in), then YES (Twilio's opt-in family, but the campaign's answer)."""
    seed_invite(engine, phone=PHONE, at=NOW)
    script = ["REMOVE", "START", "YES"]

    def patient(message: SandboxMessage) -> Sequence[PlannedReply]:
        return [PlannedReply(after_s=0, body=script.pop(0))] if message.to == PHONE and script else []

    sandbox.state.replies = patient
    turned_on = requests.post(
        f"{sandbox.url}/_sandbox/config",
        json={"advanced_opt_out": True, "inbound_url": f"{served}/twilio/inbound", "delivered_after_s": 0},
        timeout=10,
    )
    assert turned_on.status_code == 200

    seen = []
    for expected in (1, 2, 3):
        created = requests.post(
            f"{sandbox.url}/2010-04-01/Accounts/{sandbox.account_sid}/Messages.json",
            data={"To": PHONE, "From": "+15005550006", "Body": "Reply YES for a kit"},
            auth=(sandbox.account_sid, sandbox.auth_token),
            timeout=10,
        )
        assert created.status_code == 201
        assert wait_until(lambda n=expected: len(facts(engine)["classified"]) == n, timeout=15)  # type: ignore[arg-type]
        seen.append(facts(engine))

    assert [reply.get("OptOutType") for reply in sandbox.inbound()] == ["STOP", "START", "START"]
    assert sandbox.stats()["counters"].get("inbound_callbacks_ok") == 3  # all signed right, answered 2xx
    removed, restarted, answered = seen
    assert (removed["opted_out"], removed["opted_out_by"]) == (True, "twilio:STOP")
    assert (restarted["opted_out"], restarted["opted_in_by"]) == (False, "START")
    assert (answered["outcome"], answered["activations"], answered["classified"]) == (
        "kit_requested",
        1,
        ["opt_out", "opt_in", "keyword"],
    )
    assert answered["handoffs"] == 0
