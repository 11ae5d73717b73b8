"""The webhook service over HTTP: signatures, limits, bad fields, and what reaches the database."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Callable, Iterator, Sequence

import pytest
from click.testing import CliRunner
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.routing import Mount
from twilio.request_validator import RequestValidator

from outreach.apps.cli import main
from outreach.apps.web.app import create_app
from outreach.apps.web.commits import GroupCommit
from outreach.campaigns import CampaignFile, parse_campaign
from outreach.config import Settings, get_settings
from outreach.errors import UserError
from outreach.listen import consent
from outreach.store.db import engine_for, session_scope
from outreach.store.models import AuditEntry, InboundMessage, Message, MessageKind, MessageStatus
from tests.factories import seed_invite

TOKEN = "0123456789abcdef0123456789abcdef"
PUBLIC = "https://outreach.example.org"
PHONE = "+16175550123"
SID = "SM" + "1" * 32
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


@pytest.fixture
def settings(engine: Engine) -> Settings:
    return get_settings().model_copy(
        update={"twilio_auth_token": TOKEN, "public_url": PUBLIC, "twilio_from_number": "+16175550100"}
    )


@pytest.fixture
def campaigns(settings: Settings) -> dict[str, CampaignFile]:
    campaign = parse_campaign(CAMPAIGN_YAML, settings=settings)
    return {campaign.id: campaign}


AppFactory = Callable[..., TestClient]


@pytest.fixture
def make_client(
    engine: Engine, settings: Settings, campaigns: dict[str, CampaignFile]
) -> Iterator[AppFactory]:
    def build(**kwargs: object) -> TestClient:
        options: dict[str, object] = {"engine": engine, "campaigns": campaigns, "clock": lambda: NOW}
        options.update(kwargs)
        app: FastAPI = create_app(settings, **options)  # type: ignore[arg-type]
        return TestClient(app)

    yield build


@pytest.fixture
def client(make_client: AppFactory) -> TestClient:
    return make_client()


def sign(url: str, form: dict[str, str], token: str = TOKEN) -> str:
    return str(RequestValidator(token).compute_signature(url, form))


def post(
    client: TestClient, path: str, form: dict[str, str], *, signature: str | None = None, **headers: str
) -> Response:
    signature = sign(PUBLIC + path, form) if signature is None else signature
    if signature:
        headers["X-Twilio-Signature"] = signature
    response: Response = client.post(path, data=form, headers=headers)
    return response


def inbound_form(body: str = "STOP", sid: str = SID) -> dict[str, str]:
    return {
        "MessageSid": sid,
        "AccountSid": "AC" + "0" * 32,
        "From": PHONE,
        "To": "+16175550100",
        "Body": body,
    }


def stored(engine: Engine) -> int:
    with session_scope(engine) as session:
        return int(session.scalar(select(func.count()).select_from(InboundMessage)) or 0)


def opted_out(engine: Engine) -> bool:
    with session_scope(engine) as session:
        return consent.is_opted_out(session, PHONE)


def seed_enrollment(engine: Engine) -> int:
    return seed_invite(engine, phone=PHONE, at=NOW)


# --- signatures -----------------------------------------------------------------------------------


def test_a_correctly_signed_stop_is_stored_and_confirmed_in_twiml(client: TestClient, engine: Engine) -> None:
    response = post(client, "/twilio/inbound", inbound_form("STOP"))

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/xml")
    assert "<Response><Message>Riverside Health: You are unsubscribed" in response.text
    assert stored(engine) == 1 and opted_out(engine)


def test_the_query_string_is_part_of_the_signed_url(client: TestClient, engine: Engine) -> None:
    form = inbound_form("hello")
    path = "/twilio/inbound?source=main"

    response = post(client, path, form)

    assert response.status_code == 200 and stored(engine) == 1


@pytest.mark.parametrize(
    "case",
    ["wrong token", "changed parameter", "different url", "missing header", "empty header", "garbage"],
)
def test_a_bad_or_missing_signature_is_refused_and_nothing_is_stored(
    client: TestClient, engine: Engine, case: str
) -> None:
    form = inbound_form("STOP")
    url = PUBLIC + "/twilio/inbound"
    signature = {
        "wrong token": sign(url, form, token="f" * 32),
        "changed parameter": sign(url, {**form, "Body": "hello"}),
        "different url": sign("https://attacker.example.com/twilio/inbound", form),
        "missing header": "",
        "empty header": "",
        "garbage": "bm90IGEgc2lnbmF0dXJl",
    }[case]
    headers = {"X-Twilio-Signature": ""} if case == "empty header" else {}

    response = post(client, "/twilio/inbound", form, signature=signature, **headers)

    assert response.status_code == 403
    assert "X-Twilio-Signature" in response.json()["detail"]
    assert stored(engine) == 0 and not opted_out(engine)


def test_the_url_with_its_default_port_is_accepted_as_twilio_may_sign_it(
    client: TestClient, engine: Engine
) -> None:
    form = inbound_form("hello")

    response = post(client, "/twilio/inbound", form, signature=sign(PUBLIC + ":443/twilio/inbound", form))

    assert response.status_code == 200 and stored(engine) == 1


def test_a_repeated_field_is_signed_with_every_value(client: TestClient, engine: Engine) -> None:
    """Twilio signs each value of a repeated field; the last one is the field's value."""
    url = PUBLIC + "/twilio/inbound"
    form = inbound_form("hello")
    body = "&".join(f"{k}={v}" for k, v in form.items()).replace("+", "%2B") + "&Body=again"
    signature = str(RequestValidator(TOKEN).compute_signature(url, {**form, "Body": "again"}))
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature}

    refused = client.post("/twilio/inbound", content=body, headers=headers)
    assert refused.status_code == 403 and stored(engine) == 0

    validator = RequestValidator(TOKEN)
    both = validator.compute_signature(url, _MultiForm([*form.items(), ("Body", "again")]))
    response = client.post("/twilio/inbound", content=body, headers={**headers, "X-Twilio-Signature": both})
    assert response.status_code == 200
    with session_scope(engine) as session:
        assert session.scalars(select(InboundMessage.body)).one() == "again"


class _MultiForm(dict[str, str]):
    """The shape Twilio's validator reads repeated fields from (`getlist`)."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        super().__init__(pairs)
        self._pairs = pairs

    def getlist(self, name: str) -> list[str]:
        return [value for key, value in self._pairs if key == name]


def test_a_status_callback_needs_a_signature_too(client: TestClient, engine: Engine) -> None:
    seed_enrollment(engine)
    form = {"MessageSid": "SM" + "9" * 32, "MessageStatus": "failed", "ErrorCode": "21610", "To": PHONE}

    response = post(client, "/twilio/status", form, signature="")

    assert response.status_code == 403
    assert not opted_out(engine)
    with session_scope(engine) as session:
        assert session.scalars(select(Message.status)).one() == "delivered"


# --- limits and malformed requests ------------------------------------------------------------------


def test_a_body_over_64_kib_is_refused_from_its_content_length(client: TestClient, engine: Engine) -> None:
    form = inbound_form("x" * (64 * 1024))

    response = post(client, "/twilio/inbound", form)

    assert response.status_code == 413 and stored(engine) == 0


def test_a_body_over_64_kib_is_refused_while_reading_when_no_length_is_declared(
    client: TestClient, engine: Engine
) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"MessageSid=SM1&From=%2B16175550123&Body="
        for _ in range(70):
            yield b"x" * 1024

    response = client.post(
        "/twilio/inbound",
        content=chunks(),
        headers={"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "x"},
    )

    assert response.status_code == 413 and stored(engine) == 0


@pytest.mark.parametrize(
    ("form", "detail"),
    [
        ({"From": PHONE, "Body": "hi"}, "missing MessageSid"),
        ({"MessageSid": SID, "Body": "hi"}, "missing From"),
        ({"MessageSid": SID, "From": "call me maybe", "Body": "hi"}, "From is not a phone number"),
    ],
)
def test_malformed_inbound_fields_are_a_400_with_one_line(
    client: TestClient, engine: Engine, form: dict[str, str], detail: str
) -> None:
    response = post(client, "/twilio/inbound", form)

    assert response.status_code == 400
    assert response.json() == {"detail": detail}
    assert stored(engine) == 0


def test_a_signed_request_that_is_not_form_encoded_is_a_400(client: TestClient, engine: Engine) -> None:
    signature = sign(PUBLIC + "/twilio/inbound", {})
    response = client.post(
        "/twilio/inbound",
        content=b'{"MessageSid": "SM1"}',
        headers={"Content-Type": "application/json", "X-Twilio-Signature": signature},
    )

    assert response.status_code == 400 and stored(engine) == 0


@pytest.mark.parametrize(
    ("form", "detail"),
    [
        ({"MessageStatus": "sent"}, "missing MessageSid"),
        ({"MessageSid": SID}, "missing MessageStatus"),
        ({"MessageSid": SID, "MessageStatus": "failed", "ErrorCode": "abc"}, "ErrorCode is not a number"),
    ],
)
def test_malformed_status_fields_are_a_400(client: TestClient, form: dict[str, str], detail: str) -> None:
    response = post(client, "/twilio/status", form)

    assert (response.status_code, response.json()) == (400, {"detail": detail})


# --- what the endpoints do ------------------------------------------------------------------------


def test_status_callbacks_update_the_message_and_21610_opts_the_number_out(
    client: TestClient, engine: Engine
) -> None:
    seed_enrollment(engine)
    with session_scope(engine) as session:
        session.execute(
            Message.__table__.update().values(status=MessageStatus.sent, delivered_at=None)  # type: ignore[attr-defined]
        )
    form = {"MessageSid": "SM" + "9" * 32, "MessageStatus": "failed", "ErrorCode": "21610", "To": PHONE}

    first = post(client, "/twilio/status", form)
    replay = post(client, "/twilio/status", form)

    assert (first.status_code, replay.status_code) == (204, 204)
    with session_scope(engine) as session:
        row = session.scalars(select(Message)).one()
        assert (row.status, row.error_code, row.failed_at) == ("failed", 21610, NOW)
    assert opted_out(engine)


def test_a_replayed_inbound_webhook_stores_one_row_and_answers_once(
    client: TestClient, engine: Engine
) -> None:
    form = inbound_form("HELP")

    first = post(client, "/twilio/inbound", form)
    again = post(client, "/twilio/inbound", form)

    assert "<Message>" in first.text
    assert again.status_code == 200 and "<Message>" not in again.text
    assert stored(engine) == 1


def test_the_idempotency_header_is_honored(client: TestClient, engine: Engine) -> None:
    headers = {"I-Twilio-Idempotency-Token": "abc-123"}

    post(client, "/twilio/inbound", inbound_form("hello", sid="SM" + "2" * 32), **headers)
    post(client, "/twilio/inbound", inbound_form("hello", sid="SM" + "3" * 32), **headers)

    assert stored(engine) == 1


def test_answers_are_dispatched_after_they_are_committed(make_client: AppFactory, engine: Engine) -> None:
    seed_enrollment(engine)
    seen: list[tuple[list[int], list[str]]] = []

    def dispatch(ids: Sequence[int]) -> None:
        # A separate connection: the rows must already be committed when dispatch runs.
        with Session(engine) as other:
            statuses = other.scalars(select(Message.status).where(Message.id.in_(ids))).all()
        seen.append((list(ids), list(statuses)))

    response = post(make_client(dispatch=dispatch), "/twilio/inbound", inbound_form("yes"))

    assert response.status_code == 200 and "<Message>" not in response.text
    with session_scope(engine) as session:
        answer = session.scalars(select(Message).where(Message.kind == MessageKind.answer)).one()
    assert seen == [([answer.id], ["queued"])]
    assert answer.body == "Thanks Ana, a kit is on its way."


def test_a_failing_dispatch_leaves_the_answer_queued_for_the_sweeper(
    make_client: AppFactory, engine: Engine
) -> None:
    seed_enrollment(engine)

    def broken(_ids: Sequence[int]) -> None:
        raise ConnectionError("broker down")

    response = post(make_client(dispatch=broken), "/twilio/inbound", inbound_form("yes"))

    assert response.status_code == 200
    with session_scope(engine) as session:
        assert (
            session.scalars(select(Message.status).where(Message.kind == MessageKind.answer)).one()
            == "queued"
        )


# --- serving: the framework's routes and group commit ------------------------------------------------


def test_under_a_mount_the_webhooks_go_through_the_documented_routes_with_the_same_checks(
    make_client: AppFactory, engine: Engine
) -> None:
    """Under a root_path the fast path steps aside; the FastAPI routes run the same handlers."""
    outer = TestClient(Starlette(routes=[Mount("/hooks", app=make_client().app)]))
    form = inbound_form("STOP")
    url = PUBLIC + "/hooks/twilio/inbound"
    headers = {"X-Twilio-Signature": sign(url, form)}

    forged = outer.post("/hooks/twilio/inbound", data=form, headers={"X-Twilio-Signature": "forged"})
    assert (forged.status_code, stored(engine)) == (403, 0)
    assert forged.json() == {"detail": "X-Twilio-Signature does not match this request"}

    response = outer.post("/hooks/twilio/inbound", data=form, headers=headers)
    assert response.status_code == 200 and "You are unsubscribed" in response.text
    assert stored(engine) == 1 and opted_out(engine)


def test_webhooks_waiting_together_share_one_transaction(engine: Engine) -> None:
    commits = GroupCommit(engine, threads=1)
    started, gate = threading.Event(), threading.Event()

    def first(session: Session) -> Session:
        started.set()
        gate.wait(timeout=30)  # holds the only thread while the others queue up
        return session

    async def scenario() -> list[Session]:
        loop = asyncio.get_running_loop()
        head = asyncio.ensure_future(commits.run(first))
        await loop.run_in_executor(None, started.wait)
        rest = [asyncio.ensure_future(commits.run(lambda session: session)) for _ in range(5)]
        await asyncio.sleep(0)  # let them queue before the gate opens
        gate.set()
        return [await head, *await asyncio.gather(*rest)]

    sessions = asyncio.run(scenario())

    assert sessions[0] is not sessions[1]
    assert all(session is sessions[1] for session in sessions[1:])


def test_a_failing_webhook_in_a_batch_fails_alone_and_the_others_are_stored_once(engine: Engine) -> None:
    commits = GroupCommit(engine, threads=1)
    started, gate = threading.Event(), threading.Event()

    def audit(subject: str) -> Callable[[Session], str]:
        def work(session: Session) -> str:
            session.execute(insert(AuditEntry).values(at=NOW, actor="t", action="test", subject=subject))
            return subject

        return work

    def broken(session: Session) -> str:
        audit("broken")(session)
        raise RuntimeError("this request's bug")

    def hold(session: Session) -> str:
        started.set()
        gate.wait(timeout=30)
        return "held"

    async def scenario() -> list[object]:
        loop = asyncio.get_running_loop()
        head = asyncio.ensure_future(commits.run(hold))
        await loop.run_in_executor(None, started.wait)
        batch = [asyncio.ensure_future(commits.run(w)) for w in (audit("a"), broken, audit("b"))]
        await asyncio.sleep(0)
        gate.set()
        return [await head, *await asyncio.gather(*batch, return_exceptions=True)]

    results = asyncio.run(scenario())

    assert results[:2] == ["held", "a"] and results[3] == "b"
    assert isinstance(results[2], RuntimeError)
    with session_scope(engine) as session:
        assert sorted(session.scalars(select(AuditEntry.subject).where(AuditEntry.action == "test"))) == [
            "a",
            "b",
        ]


# --- health ---------------------------------------------------------------------------------------


def checks(response: Response) -> dict[str, bool]:
    return {name: check["ok"] for name, check in response.json()["checks"].items()}


def test_healthz_reports_each_check_and_an_injected_broker_check(make_client: AppFactory) -> None:
    response = make_client().get("/healthz")
    assert (response.status_code, response.json()["status"]) == (200, "ok")
    assert checks(response) == {"database": True, "schema": True, "settings": True, "sender_holds": True}

    calls: list[int] = []
    healthy = make_client(broker_check=lambda: calls.append(1)).get("/healthz")
    assert (healthy.status_code, healthy.json()["status"]) == (200, "ok")
    assert checks(healthy) == {
        "database": True,
        "schema": True,
        "settings": True,
        "broker": True,
        "sender_holds": True,
    }
    assert calls

    def down() -> None:
        raise ConnectionRefusedError("no broker")

    response = make_client(broker_check=down).get("/healthz")
    # degraded still answers 200: a load balancer must keep routing webhooks (STOP must land)
    assert (response.status_code, response.json()["status"]) == (200, "degraded")
    assert response.json()["checks"]["broker"] == {
        "ok": False,
        "detail": "unreachable (ConnectionRefusedError)",
    }


def test_healthz_is_503_when_the_database_is_unreachable(make_client: AppFactory) -> None:
    dead = engine_for("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")

    response = make_client(engine=dead).get("/healthz")

    assert (response.status_code, response.json()["status"]) == (503, "down")
    assert response.json()["checks"]["database"] == {"ok": False, "detail": "unreachable (OperationalError)"}
    assert response.json()["checks"]["schema"] == {"ok": False, "detail": "not checked: database failed"}


# --- start-up and documentation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("missing", "variable"),
    [
        ({"twilio_auth_token": None}, "TWILIO_AUTH_TOKEN"),
        ({"public_url": None}, "OUTREACH_PUBLIC_URL"),
        ({"public_url": "outreach.example.org"}, "OUTREACH_PUBLIC_URL"),
        ({"clinic_name": None}, "OUTREACH_CLINIC_NAME"),
    ],
)
def test_a_missing_setting_stops_the_start_naming_the_variable(
    settings: Settings, campaigns: dict[str, CampaignFile], missing: dict[str, object], variable: str
) -> None:
    with pytest.raises(UserError, match=variable):
        create_app(settings.model_copy(update=missing), campaigns=campaigns)


def test_the_start_names_every_missing_or_malformed_setting_at_once(
    settings: Settings, campaigns: dict[str, CampaignFile]
) -> None:
    broken = {"twilio_auth_token": None, "clinic_name": "  ", "public_url": "http://outreach_web:8000"}

    with pytest.raises(UserError) as caught:
        create_app(settings.model_copy(update=broken), campaigns=campaigns)

    message = str(caught.value)
    assert message.startswith("missing settings: TWILIO_AUTH_TOKEN (webhook signatures are keyed by it), ")
    assert "OUTREACH_CLINIC_NAME (HELP and STOP answers name the clinic)" in message
    assert "malformed settings: OUTREACH_PUBLIC_URL: its host has an underscore" in message


def test_without_a_sender_webhooks_are_served_and_health_says_degraded(
    engine: Engine, settings: Settings, campaigns: dict[str, CampaignFile]
) -> None:
    """Opt-outs must be recorded even then; only the answers wait (queued) for a sender."""
    app = create_app(
        settings.model_copy(update={"twilio_from_number": None}), engine=engine, campaigns=campaigns
    )
    client = TestClient(app)

    response = client.get("/healthz")
    stop = post(client, "/twilio/inbound", inbound_form("STOP"))

    assert (response.status_code, response.json()["status"]) == (200, "degraded")
    assert response.json()["checks"]["settings"] == {
        "ok": False,
        "detail": "missing TWILIO_MESSAGING_SERVICE_SID or TWILIO_FROM_NUMBER: answers stay queued",
    }
    assert stop.status_code == 200 and opted_out(engine)


def test_the_cli_reports_every_missing_setting_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OUTREACH_CLINIC_PHONE")
    monkeypatch.setenv("OUTREACH_DEFAULT_REGION", "XX")

    result = CliRunner().invoke(main, ["web", "--port", "8123"])

    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: missing settings: TWILIO_AUTH_TOKEN (webhook signatures are keyed by it), "
        "OUTREACH_PUBLIC_URL (webhook signatures cover this URL), "
        "OUTREACH_CLINIC_PHONE (HELP answers give the clinic's number); "
        "malformed settings: OUTREACH_DEFAULT_REGION: not a region phonenumbers knows (use a two-letter "
        "code such as US) (got 'XX'); set them in the environment or .env"
    ]


def test_the_openapi_document_describes_forms_signatures_and_rejections(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()

    for path, required in (
        ("/twilio/inbound", ["MessageSid", "From"]),
        ("/twilio/status", ["MessageSid", "MessageStatus"]),
    ):
        operation = doc["paths"][path]["post"]
        schema = operation["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
        assert schema["required"] == required
        assert {"400", "403", "413"} <= set(operation["responses"])
        assert any(p["name"] == "X-Twilio-Signature" and p["in"] == "header" for p in operation["parameters"])
    assert "application/xml" in doc["paths"]["/twilio/inbound"]["post"]["responses"]["200"]["content"]
    assert {"200", "503"} <= set(doc["paths"]["/healthz"]["get"]["responses"])
