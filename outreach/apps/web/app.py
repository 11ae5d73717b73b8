"""The web service Twilio talks to: inbound replies, status callbacks, and a health check.

Webhooks answer within milliseconds: they store what arrived and decide in a short transaction,
shared with the other webhooks that arrived meanwhile (outreach/apps/web/commits.py), and answer only
after it is committed; anything slow (sending an answer) goes through the outbox and the injected
`dispatch` after the commit. With no dispatch the answers stay `queued` and the sweeper picks them up.

Twilio's form fields are read, and its TwiML written, in twilio_forms.py; the rules in
outreach/listen/ get plain values.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import Engine, text
from starlette.types import ASGIApp, Receive, Scope, Send

from outreach.apps.web.commits import GroupCommit
from outreach.apps.web.security import (
    FORM_TYPE,
    MAX_BODY,
    SIGNATURE_HEADER,
    Disconnected,
    Rejected,
    Signer,
    header,
    read_body,
    signed_form,
)
from outreach.apps.web.twilio_forms import (
    BadWebhook,
    InboundForm,
    inbound_form,
    status_form,
    store_reply,
    twiml,
)
from outreach.campaigns import CampaignFile
from outreach.clock import Clock, utcnow
from outreach.config import Settings, get_settings
from outreach.errors import UserError
from outreach.listen.status import apply_status
from outreach.send.dispatch import Dispatch
from outreach.send.holds import active_holds
from outreach.store.db import engine_for, session_scope

log = logging.getLogger(__name__)
T = TypeVar("T")

IDEMPOTENCY_HEADER = "I-Twilio-Idempotency-Token"


class ErrorBody(BaseModel):
    detail: str


class Health(BaseModel):
    database: str
    broker: str | None = None
    # Present only while a sender is held (outreach.send.holds): "degraded", and why. Still 200:
    # the webhooks work (STOP must keep landing); only outgoing texts wait for the operator.
    status: str | None = None
    sender_holds: list[dict[str, Any]] | None = None


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
        "OptOutType": _field("Advanced Opt-Out's keyword family: STOP, START or HELP", "STOP"),
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


class WebhookAPI(FastAPI):
    """The FastAPI app, serving its two webhook routes directly on the hot path.

    Status callbacks and replies are nearly all of the traffic, and the framework's per-request
    layers (middleware stack, routing, dependency solving, a thread hand-off) cost more CPU than the
    webhook's own work. A POST to exactly one of `fast_paths` therefore goes straight to its raw
    ASGI handler; everything else (health, the OpenAPI document, other methods, a path under a
    mount's root_path) goes through FastAPI, whose webhook routes document the operations and call
    the very same handlers. Middleware added to this app does not see the fast-path requests.
    """

    fast_paths: dict[str, ASGIApp]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            handler = self.fast_paths.get(scope["path"])
            if handler is not None:
                await handler(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


class _Delegate(Response):
    """A route's response that hands the request to a raw ASGI handler (body not read yet)."""

    def __init__(self, handler: ASGIApp) -> None:
        super().__init__()
        self._handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._handler(scope, receive, send)


def create_app(
    settings: Settings | None = None,
    *,
    dispatch: Dispatch | None = None,
    engine: Engine | None = None,
    campaigns: Mapping[str, CampaignFile] | None = None,
    broker_check: Callable[[], object] | None = None,
    clock: Clock = utcnow,
) -> WebhookAPI:
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

        campaigns = load_campaigns(settings.campaigns_dir, settings=settings)
    hooks = _Webhooks(settings, Signer(auth_token, public_url), GroupCommit(db), campaigns, dispatch, clock)

    app = WebhookAPI(
        title="outreach webhooks",
        description="Twilio webhooks (inbound replies, status callbacks) and a health check.",
        version="1",
    )
    app.fast_paths = {"/twilio/inbound": hooks.inbound, "/twilio/status": hooks.status}

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
        return _Delegate(hooks.inbound)

    @app.post(
        "/twilio/status",
        summary="A status callback for a message we sent",
        status_code=204,
        response_class=Response,
        responses={204: {"description": "recorded (or already known)"}, **_REJECTIONS},
        openapi_extra=_STATUS_FORM,
    )
    async def status_callback(request: Request) -> Response:
        return _Delegate(hooks.status)

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
        held = _held(db) if report["database"] == "ok" else []
        body: dict[str, Any] = {**report, "status": "degraded", "sender_holds": held} if held else report
        return JSONResponse(body, status_code=200 if healthy else 503)

    return app


class _Webhooks:
    """The two webhooks as raw ASGI handlers: size limit, signature, fields, then the database.

    Fields are checked on the event loop (a 400 never reaches the database); the database work runs
    in the group-commit thread and the answer goes out only after its transaction is committed.
    """

    def __init__(
        self,
        settings: Settings,
        signer: Signer,
        commits: GroupCommit,
        campaigns: Mapping[str, CampaignFile],
        dispatch: Dispatch | None,
        clock: Clock,
    ) -> None:
        self._settings = settings
        self._signer = signer
        self._commits = commits
        self._campaigns = campaigns
        self._dispatch = dispatch
        self._clock = clock

    async def inbound(self, scope: Scope, receive: Receive, send: Send) -> None:
        def parse(form: Mapping[str, str]) -> InboundForm:
            raw_token = header(scope, _IDEMPOTENCY_KEY)
            token = raw_token.decode("latin-1") if raw_token is not None else None
            return inbound_form(form, region=self._settings.default_region, idempotency_token=token)

        reply = await self._accept(scope, receive, send, parse)
        if reply is None:
            return
        now = self._clock()
        result = await self._commits.run(
            lambda session: store_reply(
                session, reply, settings=self._settings, campaigns=self._campaigns, now=now
            )
        )
        if self._dispatch is not None and result.answer_ids:
            # Blocking (the broker's client): off the event loop, after the commit, before the answer.
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, _dispatch, self._dispatch, result.answer_ids)
        await _respond(send, 200, twiml(result.reply).encode(), _XML)

    async def status(self, scope: Scope, receive: Receive, send: Send) -> None:
        region = self._settings.default_region
        callback = await self._accept(scope, receive, send, lambda form: status_form(form, region=region))
        if callback is None:
            return
        now = self._clock()
        await self._commits.run(
            lambda session: apply_status(
                session,
                callback.sid,
                callback.status,
                callback.error_code,
                now,
                error_message=callback.error_message,
                to=callback.to,
            )
        )
        await _respond(send, 204, b"", None)

    async def _accept(
        self, scope: Scope, receive: Receive, send: Send, parse: Callable[[Mapping[str, str]], T]
    ) -> T | None:
        """The request's fields once its size, signature and fields pass; None when it was refused
        (answered here) or the client went away."""
        try:
            return parse(signed_form(scope, await read_body(scope, receive), self._signer))
        except BadWebhook as exc:
            await _reject(scope, send, Rejected(400, str(exc)))
        except Rejected as exc:
            await _reject(scope, send, exc)
        except Disconnected:
            pass
        return None


_XML = b"application/xml"
_JSON = b"application/json"
_IDEMPOTENCY_KEY = IDEMPOTENCY_HEADER.lower().encode()


async def _respond(send: Send, status: int, body: bytes, content_type: bytes | None) -> None:
    headers = [] if content_type is None else [(b"content-type", content_type)]
    if status != 204:
        headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _reject(scope: Scope, send: Send, exc: Rejected) -> None:
    """The same answer FastAPI gives an HTTPException: {"detail": "..."} as compact JSON; logged,
    since a run of refusals usually means a wrong OUTREACH_PUBLIC_URL or auth token."""
    log.warning("%s refused with %s: %s", scope["path"], exc.status, exc.detail)
    body = json.dumps({"detail": exc.detail}, ensure_ascii=False, separators=(",", ":")).encode()
    await _respond(send, exc.status, body, _JSON)


def _required(value: str | None, name: str, why: str) -> str:
    if not value or not value.strip():
        raise UserError(f"{name} is not set ({why})")
    return value.strip()


def _select_one(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def _held(engine: Engine) -> list[dict[str, Any]]:
    """Senders paused for an account or configuration error, each with why (holds.Hold.as_json)."""
    try:
        with session_scope(engine) as session:
            return [{**hold.as_json(), "why": hold.describe()} for hold in active_holds(session)]
    except Exception as exc:  # a schema without the table: the database check speaks for it
        log.warning("health check could not read sender holds: %s", exc.__class__.__name__)
        return []


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
