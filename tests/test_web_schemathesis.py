"""Property-based tests of the webhook service from its own OpenAPI document (schemathesis).

Schemathesis generates requests for every documented operation, valid and invalid by the schema, and
sends them in-process through its ASGI transport to an app on the real test database. With the
signature check on, every generated request must get a clean, documented 4xx and leave the database
exactly as it was; with a correct signature added to each generated request, the app must still
never answer 5xx, and a refused request must still store nothing.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.schemas import APIOperation
from sqlalchemy import Engine, select
from twilio.request_validator import RequestValidator

from outreach.apps.web.app import create_app
from outreach.config import get_settings
from outreach.store.db import session_scope
from outreach.store.models import Base, MessageStatus
from tests.factories import seed_invite

TOKEN = "0123456789abcdef0123456789abcdef"
PUBLIC = "https://outreach.example.org"
PHONE = "+16175550123"  # the schema's example From: the examples phase reaches a real patient
SENT_SID = "SM" + "0" * 32  # the schema's example MessageSid: its status callback finds this row
NOW = dt.datetime(2026, 3, 2, 15, 0)
WEBHOOKS = ["/twilio/inbound", "/twilio/status"]
DOCUMENTED_REJECTIONS = {400, 403, 413}
FUZZ = settings(
    max_examples=50,
    deadline=None,
    database=None,
    derandomize=True,  # CI sees the same requests as the developer who last ran it
    suppress_health_check=list(HealthCheck),
)

Snapshot = dict[str, list[tuple[Any, ...]]]


@pytest.fixture
def app(engine: Engine) -> FastAPI:
    config = get_settings().model_copy(
        update={"twilio_auth_token": TOKEN, "public_url": PUBLIC, "twilio_from_number": "+16175550100"}
    )
    return create_app(config, engine=engine, clock=lambda: NOW)


@pytest.fixture
def seeded(engine: Engine) -> None:
    """A patient whose invite went out, so valid requests have something real to change."""
    seed_invite(engine, phone=PHONE, at=NOW, status=MessageStatus.sent, sid=SENT_SID)


def operation(app: FastAPI, method: str, path: str) -> APIOperation:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    found = [
        op.ok()
        for op in schema.get_all_operations()
        if (op.ok().method.upper(), op.ok().path) == (method, path)
    ]
    assert len(found) == 1, f"{method} {path} is not in the OpenAPI document"
    return found[0]


def generated(op: APIOperation, *, negative: bool = True) -> st.SearchStrategy[Any]:
    """The schema's own examples, requests valid by the schema, and (optionally) invalid ones."""
    schema = op.schema
    modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE] if negative else [GenerationMode.POSITIVE]
    return st.one_of(
        *schema.get_strategies_from_examples(op), *(op.as_strategy(generation_mode=mode) for mode in modes)
    )


def snapshot(engine: Engine) -> Snapshot:
    """Every row of every table: a rejected request must not insert, update or delete anything."""
    with session_scope(engine) as session:
        return {
            table.name: [tuple(row) for row in session.execute(select(table).order_by(*table.primary_key))]
            for table in Base.metadata.sorted_tables
        }


def as_form(body: Mapping[str, Any]) -> dict[str, str]:
    """Generated form fields as the exact strings sent, so the signature covers what arrives."""
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in body.items()}


def test_the_document_lists_every_route_the_fuzzing_covers(app: FastAPI) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)

    routes = {(op.ok().method.upper(), op.ok().path) for op in schema.get_all_operations()}

    assert routes == {("POST", "/twilio/inbound"), ("POST", "/twilio/status"), ("GET", "/healthz")}


@pytest.mark.parametrize("path", WEBHOOKS)
def test_generated_requests_without_a_valid_signature_get_a_clean_4xx_and_change_nothing(
    app: FastAPI, engine: Engine, seeded: None, path: str
) -> None:
    op = operation(app, "POST", path)
    before = snapshot(engine)
    seen: Counter[int] = Counter()

    @given(case=generated(op))
    @FUZZ
    def run(case: Any) -> None:
        response = case.call()
        seen[response.status_code] += 1
        assert response.status_code in DOCUMENTED_REJECTIONS, (response.status_code, response.text)
        assert set(response.json()) == {"detail"}
        assert snapshot(engine) == before

    run()
    assert seen[403] > 0, seen  # the signature check did the refusing


@pytest.mark.parametrize("path", WEBHOOKS)
def test_correctly_signed_generated_requests_never_get_a_5xx(
    app: FastAPI, engine: Engine, seeded: None, path: str
) -> None:
    op = operation(app, "POST", path)
    validator = RequestValidator(TOKEN)
    seen: Counter[int] = Counter()

    @given(case=generated(op), known=st.booleans())
    @FUZZ
    def run(case: Any, known: bool) -> None:
        assume(isinstance(case.body, Mapping))  # a form is what Twilio signs; other bodies get 403 above
        form = as_form(case.body)
        if known:  # random numbers rarely parse: half the time, reach the patient and the sent message
            form |= {"From": PHONE} if path.endswith("inbound") else {"MessageSid": SENT_SID}
        case.body = form
        signature = validator.compute_signature(PUBLIC + path, form)
        case.headers = {**(case.headers or {}), "X-Twilio-Signature": signature}
        before = snapshot(engine)
        response = case.call()
        seen[response.status_code] += 1
        assert response.status_code < 500, (response.status_code, response.text)
        assert response.status_code != 403, "the test's signature should be accepted"
        if response.status_code >= 400:
            assert response.status_code in DOCUMENTED_REJECTIONS
            assert snapshot(engine) == before

    run()
    assert sum(count for status, count in seen.items() if status < 300) > 0, seen


def test_generated_health_checks_answer_200(app: FastAPI, engine: Engine) -> None:
    op = operation(app, "GET", "/healthz")
    before = snapshot(engine)

    @given(case=generated(op, negative=False))
    @settings(FUZZ, max_examples=5)
    def run(case: Any) -> None:
        response = case.call()
        assert (response.status_code, response.json()["status"]) == (200, "ok")

    run()
    assert snapshot(engine) == before


# Values the generator rarely produces in the one field that matters; each was a 500 when found
# (a non-ASCII digit, a code too large for the column, a NUL byte PostgreSQL refuses).
EDGE_CASES = [
    pytest.param("/twilio/status", {"MessageStatus": "failed", "ErrorCode": "²"}, id="superscript-digit"),
    pytest.param(
        "/twilio/status",
        {"MessageStatus": "failed", "ErrorCode": "9" * 11},
        id="code-over-int32",
    ),
    pytest.param("/twilio/status", {"MessageStatus": "failed", "ErrorCode": "9" * 25}, id="code-over-int64"),
    pytest.param("/twilio/status", {"MessageStatus": "failed", "ErrorMessage": "a\x00b"}, id="nul-error"),
    pytest.param("/twilio/inbound", {"Body": "hi\x00there"}, id="nul-body"),
    pytest.param("/twilio/inbound", {"To": "+1617555\x000100"}, id="nul-to"),
    pytest.param("/twilio/inbound", {"Body": "x" * 60_000}, id="long-body"),
    pytest.param("/twilio/status", {"MessageStatus": "sent", "To": "x" * 300}, id="long-to"),
]


@pytest.mark.parametrize(("path", "fields"), EDGE_CASES)
def test_signed_edge_cases_never_get_a_5xx(
    app: FastAPI,
    engine: Engine,
    seeded: None,
    path: str,
    fields: dict[str, str],
) -> None:
    base = (
        {"From": PHONE, "MessageSid": "SM" + "7" * 32}
        if path.endswith("inbound")
        else {"MessageSid": SENT_SID}
    )
    form = base | fields
    client = TestClient(app, raise_server_exceptions=False)
    before = snapshot(engine)
    signature = RequestValidator(TOKEN).compute_signature(PUBLIC + path, form)

    response = client.post(path, data=form, headers={"X-Twilio-Signature": signature})

    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.status_code in DOCUMENTED_REJECTIONS and snapshot(engine) == before
