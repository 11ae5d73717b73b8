"""What the OpenAPI document says about the webhooks: Twilio's form fields, the signature header,
and the refusals. Only documentation: the handlers never read it (schemathesis checks that the
served behaviour matches it)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from outreach.apps.web.security import FORM_TYPE, MAX_BODY, SIGNATURE_HEADER

IDEMPOTENCY_HEADER = "I-Twilio-Idempotency-Token"


class ErrorBody(BaseModel):
    detail: str


def _field(description: str, example: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "description": description}
    if example is not None:
        schema["example"] = example
    return schema


def _form_body(properties: dict[str, dict[str, Any]], required: list[str]) -> dict[str, Any]:
    """OpenAPI for a Twilio form post: documented fields, others allowed (Twilio adds fields)."""
    schema = {"type": "object", "properties": properties, "required": required, "additionalProperties": True}
    return {
        "parameters": [
            {
                "name": SIGNATURE_HEADER,
                "in": "header",
                "required": True,
                "description": "HMAC-SHA1 of the public URL and sorted form fields, keyed by the auth token",
                "schema": {"type": "string"},
            },
        ],
        "requestBody": {"required": True, "content": {FORM_TYPE: {"schema": schema}}},
    }


INBOUND_FORM = _form_body(
    {
        "MessageSid": _field("the inbound message's SID (at most 64 characters)", "SM" + "0" * 32),
        "SmsMessageSid": _field("legacy alias of MessageSid"),
        "AccountSid": _field("the Twilio account"),
        "From": _field("the patient's number (E.164)", "+16175550123"),
        "To": _field("our number", "+16175550100"),
        "Body": _field("the text of the reply"),
        "NumMedia": _field("number of media attachments", "0"),
        "OptOutType": _field("Advanced Opt-Out's keyword family: STOP, START or HELP", "STOP"),
    },
    ["MessageSid", "From"],
)
INBOUND_FORM["parameters"].append(
    {
        "name": IDEMPOTENCY_HEADER,
        "in": "header",
        "required": False,
        "description": "Twilio's retry token; a repeated token changes nothing",
        "schema": {"type": "string", "maxLength": 200},
    }
)
STATUS_FORM = _form_body(
    {
        "MessageSid": _field("the outbound message's SID", "SM" + "0" * 32),
        "SmsSid": _field("legacy alias of MessageSid"),
        "MessageStatus": _field(
            "accepted, scheduled, queued, sending, sent, delivered, read, undelivered or failed", "delivered"
        ),
        "SmsStatus": _field("legacy alias of MessageStatus"),
        "ErrorCode": _field("Twilio error code (an integer) for undelivered or failed", "30003"),
        "ErrorMessage": _field("Twilio's description of the error, when sent"),
        "AccountSid": _field("the Twilio account"),
        "From": _field("our number"),
        "To": _field("the patient's number (E.164)"),
    },
    ["MessageSid", "MessageStatus"],
)
REJECTIONS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "malformed fields (one-line reason)"},
    403: {"model": ErrorBody, "description": "missing or wrong X-Twilio-Signature; nothing stored"},
    413: {"model": ErrorBody, "description": f"request body over {MAX_BODY} bytes; nothing stored"},
    503: {
        "model": ErrorBody,
        "description": "the database is unavailable or its schema missing; nothing stored, retry later",
    },
}
