"""The web service Twilio talks to: inbound replies, status callbacks, and a health check.

Webhooks answer within milliseconds: they store what arrived and decide, in one short transaction;
anything slow (sending an answer) goes through the outbox and the injected `dispatch` after the
commit. With no dispatch the answers stay `queued` and the sweeper picks them up.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import Engine, text

from outreach.campaigns import CampaignFile
from outreach.config import Settings, get_settings
from outreach.db import engine_for, session_scope
from outreach.errors import UserError
from outreach.models import utcnow
from outreach.web.security import FORM_TYPE, MAX_BODY, SIGNATURE_HEADER, signed_form

log = logging.getLogger(__name__)

Dispatch = Callable[[Sequence[int]], None]
Clock = Callable[[], dt.datetime]
IDEMPOTENCY_HEADER = "I-Twilio-Idempotency-Token"


class ErrorBody(BaseModel):
    detail: str


class Health(BaseModel):
    database: str
    broker: str | None = None


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


_INBOUND_FORM = _form_body(
    {
        "MessageSid": _field("the inbound message's SID (at most 64 characters)", "SM" + "0" * 32),
        "SmsMessageSid": _field("legacy alias of MessageSid"),
        "AccountSid": _field("the Twilio account"),
        "From": _field("the patient's number (E.164)", "+16175550123"),
        "To": _field("our number", "+16175550100"),
        "Body": _field("the text of the reply"),
        "NumMedia": _field("number of media attachments", "0"),
    },
    ["MessageSid", "From"],
)
_INBOUND_FORM["parameters"].append(
    {
        "name": IDEMPOTENCY_HEADER,
        "in": "header",
        "required": False,
        "description": "Twilio's retry token; a repeated token changes nothing",
        "schema": {"type": "string", "maxLength": 200},
    }
)
_STATUS_FORM = _form_body(
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
_REJECTIONS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "malformed fields (one-line reason)"},
    403: {"model": ErrorBody, "description": "missing or wrong X-Twilio-Signature; nothing stored"},
    413: {"model": ErrorBody, "description": f"request body over {MAX_BODY} bytes; nothing stored"},
}


def create_app(
    settings: Settings | None = None,
    *,
    dispatch: Dispatch | None = None,
    engine: Engine | None = None,
    campaigns: Mapping[str, CampaignFile] | None = None,
    broker_check: Callable[[], object] | None = None,
    clock: Clock = utcnow,
) -> FastAPI:
    """Build the app; a setting it cannot work without is a UserError naming the variable.

    `campaigns` defaults to the files in OUTREACH_CAMPAIGNS_DIR, read once here (restart to reload);
    `broker_check` raises when the broker is unreachable; `clock` returns naive UTC.
    """
    settings = settings or get_settings()
    auth_token = _required(
        settings.twilio_auth_token, "TWILIO_AUTH_TOKEN", "webhook signatures are keyed by it"
    )
    public_url = _required(settings.public_url, "OUTREACH_PUBLIC_URL", "webhook signatures cover this URL")
    if not public_url.startswith(("http://", "https://")):
        raise UserError(f"OUTREACH_PUBLIC_URL: must start with https:// or http:// (got {public_url!r})")
    public_url = public_url.rstrip("/")
    _required(settings.clinic_name, "OUTREACH_CLINIC_NAME", "HELP and STOP answers name the clinic")
    _required(settings.clinic_phone, "OUTREACH_CLINIC_PHONE", "HELP answers give the clinic's number")
    db = engine or engine_for(settings.database_url)
    if campaigns is None:
        from outreach.campaigns import load_campaigns

        campaigns = load_campaigns(settings.campaigns_dir)
    known: Mapping[str, CampaignFile] = campaigns

    app = FastAPI(
        title="outreach webhooks",
        description="Twilio webhooks (inbound replies, status callbacks) and a health check.",
        version="1",
    )

    @app.post(
        "/twilio/inbound",
        summary="An inbound SMS reply",
        response_class=Response,
        responses={
            200: {"content": {"application/xml": {"schema": {"type": "string"}}}, "description": "TwiML"},
            **_REJECTIONS,
        },
        openapi_extra=_INBOUND_FORM,
    )
    async def inbound(request: Request) -> Response:
        form = await signed_form(request, auth_token=auth_token, public_url=public_url)
        token = request.headers.get(IDEMPOTENCY_HEADER)
        twiml = await run_in_threadpool(_inbound, form, token)
        return Response(content=twiml, media_type="application/xml")

    def _inbound(form: Mapping[str, str], token: str | None) -> str:
        from outreach.replies import InboundError, handle_inbound

        try:
            with session_scope(db) as session:
                result = handle_inbound(
                    session, form, settings=settings, campaigns=known, now=clock(), idempotency_token=token
                )
        except InboundError as exc:
            raise HTTPException(400, str(exc)) from None
        if dispatch is not None and result.answer_ids:
            _dispatch(dispatch, result.answer_ids)
        return result.twiml()

    @app.post(
        "/twilio/status",
        summary="A status callback for a message we sent",
        status_code=204,
        response_class=Response,
        responses={204: {"description": "recorded (or already known)"}, **_REJECTIONS},
        openapi_extra=_STATUS_FORM,
    )
    async def status_callback(request: Request) -> Response:
        form = await signed_form(request, auth_token=auth_token, public_url=public_url)
        await run_in_threadpool(_status, form)
        return Response(status_code=204)

    def _status(form: Mapping[str, str]) -> None:
        from outreach.replies import webhook_number
        from outreach.status import apply_status

        sid = (form.get("MessageSid") or form.get("SmsSid") or "").strip()
        state = (form.get("MessageStatus") or form.get("SmsStatus") or "").strip()
        if not sid or len(sid) > 64:
            raise HTTPException(400, "missing MessageSid" if not sid else "MessageSid over 64 characters")
        if not state:
            raise HTTPException(400, "missing MessageStatus")
        raw_code = (form.get("ErrorCode") or "").strip()
        if raw_code and not (raw_code.isascii() and raw_code.isdigit() and len(raw_code) <= 9):
            raise HTTPException(400, "ErrorCode is not a number")
        to = webhook_number(form.get("To"), settings.default_region, "To", required=False)
        message = (form.get("ErrorMessage") or "").strip()[:500] or None
        with session_scope(db) as session:
            apply_status(
                session,
                sid,
                state,
                int(raw_code) if raw_code else None,
                clock(),
                error_message=message,
                to=to,
            )

    @app.get(
        "/healthz",
        summary="Database (and broker) reachable",
        response_model=Health,
        response_model_exclude_none=True,
        responses={503: {"model": Health, "description": "a dependency is unreachable"}},
    )
    def healthz() -> JSONResponse:
        report: dict[str, str] = {"database": _probe(lambda: _select_one(db))}
        if broker_check is not None:
            report["broker"] = _probe(broker_check)
        healthy = all(value == "ok" for value in report.values())
        return JSONResponse(report, status_code=200 if healthy else 503)

    return app


def _required(value: str | None, name: str, why: str) -> str:
    if not value or not value.strip():
        raise UserError(f"{name} is not set ({why})")
    return value.strip()


def _select_one(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def _probe(check: Callable[[], object]) -> str:
    try:
        check()
    except Exception as exc:
        log.warning("health check failed: %s", exc.__class__.__name__)
        return "unreachable"
    return "ok"


def _dispatch(dispatch: Dispatch, ids: Sequence[int]) -> None:
    """Hand committed answers to the workers; on failure they stay queued for the sweeper."""
    try:
        dispatch(list(ids))
    except Exception:
        log.exception("dispatch of %s answers failed; the sweeper will send them", len(ids))
