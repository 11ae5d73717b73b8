"""The sandbox's JSON against Twilio's own OpenAPI description, so it cannot drift into a shape
real Twilio never sends. Skipped only when the description is not beside the checkout."""

from __future__ import annotations

import copy
import json
import re
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from jsonschema import Draft7Validator, FormatChecker

from outreach.sandbox import SandboxServer
from outreach.sandbox.app import create_app

pytest_plugins = ["tests.sandbox_fixtures"]

ROOT = Path(__file__).resolve().parent.parent
OAI = ROOT.parent / "shared" / "data" / "twilio-oai" / "twilio_api_v2010.json"
MESSAGES_PATH = "/2010-04-01/Accounts/{AccountSid}/Messages.json"
MESSAGE_PATH = "/2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json"
PATIENT = "+16175550123"
SENDER = "+15005550006"

# Twilio's error body (documented at twilio.com/docs/usage/twilios-response; the description has none).
ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "code": {"type": "integer"},
        "message": {"type": "string", "minLength": 1},
        "more_info": {"type": "string", "pattern": r"^https://www\.twilio\.com/docs/errors/\d+$"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
    },
    "required": ["code", "message", "more_info", "status"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def oai() -> dict[str, Any]:
    if not OAI.exists():
        pytest.skip(f"Twilio's OpenAPI description is not at {OAI}")
    document: dict[str, Any] = json.loads(OAI.read_text(encoding="utf-8"))
    return document


def to_json_schema(node: Any, components: dict[str, Any], *, strict: bool = True) -> Any:
    """OpenAPI 3.0 -> JSON Schema: inline $refs, `nullable` as a null type, drop extensions.

    With `strict`, objects list every property as required and allow no others, so the sandbox
    neither omits a field Twilio sends nor invents one Twilio never sends.
    """
    if isinstance(node, list):
        return [to_json_schema(item, components, strict=strict) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].removeprefix("#/components/schemas/")
        return to_json_schema(copy.deepcopy(components[name]), components, strict=strict)
    out = {
        key: to_json_schema(value, components, strict=strict)
        for key, value in node.items()
        if not key.startswith("x-") and key not in {"nullable", "description", "example", "examples", "title"}
    }
    if node.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    if strict and out.get("type") == "object" and "properties" in out:
        out["required"] = sorted(out["properties"])
        out["additionalProperties"] = False
    return out


def _rfc2822(value: object) -> bool:
    return not isinstance(value, str) or parsedate_to_datetime(value).tzinfo is not None


def _e164(value: object) -> bool:
    return not isinstance(value, str) or re.fullmatch(r"\+[1-9]\d{6,14}", value) is not None


def _currency(value: object) -> bool:
    return not isinstance(value, str) or re.fullmatch(r"[A-Za-z]{3}", value) is not None


def _relative_uri(value: object) -> bool:
    """Twilio's `uri` fields are relative to https://api.twilio.com."""
    return not isinstance(value, str) or value.startswith("/2010-04-01/Accounts/")


def _uri_map(value: object) -> bool:
    return not isinstance(value, dict) or all(_relative_uri(v) for v in value.values())


formats = FormatChecker()
formats.checks("date-time-rfc-2822", raises=(TypeError, ValueError))(_rfc2822)
formats.checks("phone-number")(_e164)
formats.checks("currency")(_currency)
formats.checks("uri")(_relative_uri)
formats.checks("uri-map")(_uri_map)


def _validator(schema: dict[str, Any]) -> Draft7Validator:
    return Draft7Validator(schema, format_checker=formats)


def _errors(schema: dict[str, Any], instance: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in _validator(schema).iter_errors(instance)
    ]


def _response_schema(oai: dict[str, Any], path: str, method: str, status: str) -> dict[str, Any]:
    components = oai["components"]["schemas"]
    raw = oai["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
    schema: dict[str, Any] = to_json_schema(raw, components)
    return schema


def test_created_fetched_and_listed_messages_match_twilio(
    oai: dict[str, Any], sandbox: SandboxServer
) -> None:
    auth = (sandbox.account_sid, sandbox.auth_token)
    base = f"{sandbox.url}/2010-04-01/Accounts/{sandbox.account_sid}"
    created = requests.post(
        f"{base}/Messages.json",
        data={"To": PATIENT, "From": SENDER, "Body": "Hello 👋"},
        auth=auth,
        timeout=10,
    )
    service = requests.post(
        f"{base}/Messages.json",
        data={"To": PATIENT, "MessagingServiceSid": "MG" + "ab" * 16, "Body": "Hello"},
        auth=auth,
        timeout=10,
    )
    assert (created.status_code, service.status_code) == (201, 201)
    fetched = requests.get(f"{base}/Messages/{created.json()['sid']}.json", auth=auth, timeout=10)
    listed = requests.get(
        f"{base}/Messages.json", params={"To": PATIENT, "PageSize": "1"}, auth=auth, timeout=10
    )

    create_schema = _response_schema(oai, MESSAGES_PATH, "post", "201")
    assert _errors(create_schema, created.json()) == []
    assert _errors(create_schema, service.json()) == []
    assert _errors(_response_schema(oai, MESSAGE_PATH, "get", "200"), fetched.json()) == []
    list_schema = _response_schema(oai, MESSAGES_PATH, "get", "200")
    assert _errors(list_schema, listed.json()) == []
    assert listed.json()["next_page_uri"] is not None  # two messages, one per page

    # The schema is not a rubber stamp: Twilio's enums and types reject a drifted shape.
    drifted = dict(created.json(), status="pending", direction="outbound", num_segments=1, extra="x")
    drifted.update(date_created="2026-03-02T15:00:00Z", to="617-555-0123")
    assert len(_errors(create_schema, drifted)) == 5  # `to` has no format in Twilio's description


def test_error_answers_have_twilio_error_shape(oai: dict[str, Any], sandbox: SandboxServer) -> None:
    auth = (sandbox.account_sid, sandbox.auth_token)
    base = f"{sandbox.url}/2010-04-01/Accounts/{sandbox.account_sid}"
    bad_callback = {
        "To": PATIENT,
        "From": SENDER,
        "Body": "x",
        "StatusCallback": "https://web_1.example.org/s",
    }
    answers = [
        requests.post(f"{base}/Messages.json", data={"From": SENDER, "Body": "x"}, auth=auth, timeout=10),
        requests.post(f"{base}/Messages.json", data=bad_callback, auth=auth, timeout=10),
        requests.get(f"{base}/Messages/SM{'0' * 32}.json", auth=auth, timeout=10),
        requests.get(f"{base}/Messages.json", auth=(sandbox.account_sid, "wrong"), timeout=10),
    ]
    sandbox.configure(p429=1.0)
    answers.append(requests.post(f"{base}/Messages.json", data={"To": PATIENT}, auth=auth, timeout=10))
    for answer in answers:
        assert _errors(ERROR_SCHEMA, answer.json()) == []
        assert answer.json()["status"] == answer.status_code
    assert [(a.json()["code"], a.status_code) for a in answers] == [
        (21604, 400),
        (21609, 400),
        (20404, 404),
        (20003, 401),
        (20429, 429),
    ]


def test_the_status_callback_rule_is_twilios_own(oai: dict[str, Any]) -> None:
    """The sandbox refuses a StatusCallback host with "_" (21609) because Twilio's description says so."""
    form = oai["paths"][MESSAGES_PATH]["post"]["requestBody"]["content"]["application/x-www-form-urlencoded"]
    callback = form["schema"]["properties"]["StatusCallback"]
    assert callback["format"] == "uri"
    assert "underscores are not allowed" in callback["description"]


def test_served_paths_and_parameters_exist_in_twilio_api(oai: dict[str, Any], sandbox: SandboxServer) -> None:
    app = create_app(sandbox.state)
    routes: list[tuple[str, set[str]]] = [
        (getattr(r, "path", ""), getattr(r, "methods", set())) for r in app.routes
    ]
    served = {
        (path.replace("{account_sid}", "{AccountSid}").replace("{sid}", "{Sid}"), method.lower())
        for path, methods in routes
        if path.startswith("/2010-04-01/")
        for method in methods
    }
    assert served == {(MESSAGES_PATH, "post"), (MESSAGES_PATH, "get"), (MESSAGE_PATH, "get")}
    for path, method in served:
        assert method in oai["paths"][path]
    list_params = {p["name"] for p in oai["paths"][MESSAGES_PATH]["get"]["parameters"]}
    assert {
        "To",
        "From",
        "DateSent",
        "DateSent<",
        "DateSent>",
        "PageSize",
        "Page",
        "PageToken",
    } <= list_params
    form = oai["paths"][MESSAGES_PATH]["post"]["requestBody"]["content"]["application/x-www-form-urlencoded"]
    read = {
        "To",
        "From",
        "MessagingServiceSid",
        "Body",
        "StatusCallback",
        "ValidityPeriod",
        "MediaUrl",
        "ContentSid",
    }
    assert read <= set(form["schema"]["properties"])
    assert oai["components"]["securitySchemes"]["accountSid_authToken"] == {"scheme": "basic", "type": "http"}
