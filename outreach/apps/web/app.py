"""The web service Twilio talks to: inbound replies, status callbacks, and a health check.

Webhooks answer within milliseconds: they store what arrived and decide in a short transaction,
shared with the other webhooks that arrived meanwhile (outreach/apps/web/commits.py), and answer only
after it is committed; anything slow (sending an answer) goes through the outbox and the injected
`dispatch` after the commit. With no dispatch the answers stay `queued` and the sweeper picks them up.

Twilio's form fields are read, and its TwiML written, in twilio_forms.py; the rules in
outreach/listen/ get plain values. The signature check is in security.py, /healthz's checks in
health.py, the OpenAPI description of the webhooks in openapi.py. The care-team workspace
(workspace/) is its own app mounted at /app: its middleware never sees a webhook.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.types import ASGIApp, Receive, Scope, Send

from outreach.apps.web import health, links
from outreach.apps.web.commits import GroupCommit
from outreach.apps.web.openapi import IDEMPOTENCY_HEADER, INBOUND_FORM, REJECTIONS, STATUS_FORM
from outreach.apps.web.security import (
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
from outreach.apps.web.workspace import create_workspace
from outreach.campaigns import CampaignFile
from outreach.clock import Clock, utcnow
from outreach.config import Settings, check_settings
from outreach.listen.status import apply_status
from outreach.providers.twilio import STATUS_PATH
from outreach.send.dispatch import Dispatch
from outreach.store.db import engine_for

log = logging.getLogger(__name__)
T = TypeVar("T")

INBOUND_PATH = "/twilio/inbound"
# What `outreach web` cannot start without (variable -> why); every one missing is named at once.
WEB_NEEDS = {
    "TWILIO_AUTH_TOKEN": "webhook signatures are keyed by it",
    "OUTREACH_PUBLIC_URL": "webhook signatures cover this URL",
    "OUTREACH_CLINIC_NAME": "HELP and STOP answers name the clinic",
    "OUTREACH_CLINIC_PHONE": "HELP answers give the clinic's number",
}
_SLASHES = re.compile(r"//+")


def routing_path(path: str) -> str:
    """The path a request is routed by: repeated slashes collapsed and a trailing slash dropped.

    Operators paste webhook URLs by hand: `https://host/` + `/twilio/inbound` makes Twilio call
    `//twilio/inbound`, and `/twilio/inbound/` is as likely. Both are served where they were sent,
    without a redirect (Twilio does not follow one with its POST); the signature is still checked
    against the path as requested, the one Twilio signed.
    """
    path = _SLASHES.sub("/", path)
    return path.rstrip("/") or "/"


class WebhookAPI(FastAPI):
    """The FastAPI app, serving its two webhook routes directly on the hot path.

    Status callbacks and replies are nearly all of the traffic, and the framework's per-request
    layers (middleware stack, routing, dependency solving, a thread hand-off) cost more CPU than the
    webhook's own work. A POST to exactly one of `fast_paths` therefore goes straight to its raw
    ASGI handler; everything else (health, the OpenAPI document, other methods, a path under a
    mount's root_path) goes through FastAPI, whose webhook routes document the operations and call
    the very same handlers. Middleware added to this app does not see the fast-path requests.
    A path with a doubled or trailing slash is routed as `routing_path` spells it.
    """

    fast_paths: dict[str, ASGIApp]
    link_route: ASGIApp | None = None  # GET and HEAD under /l/ (outreach/apps/web/links.py)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if "//" in path or (path.endswith("/") and path != "/"):
                scope = {**scope, "path": routing_path(path)}  # raw_path keeps what was requested
            if scope["method"] == "POST" and not scope.get("root_path"):
                handler = self.fast_paths.get(scope["path"])
                if handler is not None:
                    await handler(scope, receive, send)
                    return
            elif self.link_route is not None and _is_link(scope):
                await self.link_route(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _is_link(scope: Scope) -> bool:
    """A tracked link's GET or HEAD (/l/<token>, one segment), not under a mount's root_path."""
    path = scope["path"]
    return (
        scope["method"] in ("GET", "HEAD")
        and path.startswith(links.PREFIX)
        and "/" not in path[len(links.PREFIX) :]
        and not scope.get("root_path")
    )


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
    """Build the app; settings it cannot work without are one UserError naming every one of them.

    `settings` defaults to the environment (and .env); `campaigns` to the files in
    OUTREACH_CAMPAIGNS_DIR, read once here (restart to reload); `broker_check` raises when the
    broker is unreachable; `clock` returns naive UTC.
    """
    settings = web_settings(settings)
    public_url = (settings.public_url or "").rstrip("/")
    db = engine or engine_for(settings.database_url)
    if campaigns is None:
        from outreach.campaigns import load_campaigns

        campaigns = load_campaigns(settings.campaigns_dir, settings=settings)
    signer = Signer(settings.twilio_auth_token or "", public_url)
    commits = GroupCommit(db)
    hooks = _Webhooks(settings, signer, commits, health.SchemaWatch(db), campaigns, dispatch, clock)
    app = WebhookAPI(
        title="outreach webhooks",
        description="Twilio webhooks (inbound replies, status callbacks) and a health check.",
        version="1",
    )
    app.fast_paths = {INBOUND_PATH: hooks.inbound, STATUS_PATH: hooks.status}
    _webhook_routes(app, hooks)
    _health_route(app, _health_checks(settings, db, broker_check))
    app.link_route = links.register(app, settings, commits, campaigns, clock)  # tracked links: /l/<token>
    app.mount(
        "/app",
        create_workspace(
            settings, engine=db, campaigns=campaigns, dispatch=dispatch, clock=clock, public_url=public_url
        ),
    )
    return app


def web_settings(settings: Settings | None) -> Settings:
    """The settings (read now when not given), refused with every problem at once: each missing
    setting of WEB_NEEDS and each malformed value, in one line."""
    check = check_settings(WEB_NEEDS, settings)
    error = check.error()
    if error is not None:
        raise error
    return check.settings


def _health_checks(
    settings: Settings, db: Engine, broker_check: Callable[[], object] | None
) -> list[health.Check]:
    """/healthz's checks, in order; a new one is one more entry."""
    checks = [
        health.Check("database", lambda: health.database(db)),
        health.Check("schema", lambda: health.schema(db), needs="database"),
        health.Check("settings", lambda: health.sender(settings), critical=False),
    ]
    if broker_check is not None:
        checks.append(health.Check("broker", health.probe(broker_check), critical=False))
    checks.append(
        health.Check("sender_holds", lambda: health.sender_holds(db), critical=False, needs="schema")
    )
    return checks


def _webhook_routes(app: FastAPI, hooks: _Webhooks) -> None:
    """The documented webhook routes; they serve what the fast path does not (a mounted app)."""

    @app.post(
        INBOUND_PATH,
        summary="An inbound SMS reply",
        response_class=Response,
        responses={
            200: {"content": {"application/xml": {"schema": {"type": "string"}}}, "description": "TwiML"},
            **REJECTIONS,
        },
        openapi_extra=INBOUND_FORM,
    )
    async def inbound(request: Request) -> Response:
        return _Delegate(hooks.inbound)

    @app.post(
        STATUS_PATH,
        summary="A status callback for a message we sent",
        status_code=204,
        response_class=Response,
        responses={204: {"description": "recorded (or already known)"}, **REJECTIONS},
        openapi_extra=STATUS_FORM,
    )
    async def status_callback(request: Request) -> Response:
        return _Delegate(hooks.status)


def _health_route(app: FastAPI, checks: Sequence[health.Check]) -> None:
    @app.get(
        "/healthz",
        summary="Database reachable, schema current, settings complete (and broker reachable)",
        response_model=health.Health,
        responses={503: {"model": health.Health, "description": "a check failed: degraded or down"}},
    )
    def healthz() -> JSONResponse:
        status, report = health.evaluate(checks)
        return JSONResponse(report.model_dump(mode="json"), status_code=status)


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
        schema: health.SchemaWatch,
        campaigns: Mapping[str, CampaignFile],
        dispatch: Dispatch | None,
        clock: Clock,
    ) -> None:
        self._settings = settings
        self._signer = signer
        self._commits = commits
        self._schema = schema
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
        try:
            result = await self._commits.run(
                lambda session: store_reply(
                    session, reply, settings=self._settings, campaigns=self._campaigns, now=now
                )
            )
        except DBAPIError as exc:
            await self._unavailable(scope, send, exc)
            return
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
        try:
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
        except DBAPIError as exc:
            await self._unavailable(scope, send, exc)
            return
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

    async def _unavailable(self, scope: Scope, send: Send, exc: DBAPIError) -> None:
        """503 when the database cannot take the webhook now: its schema is missing or behind, or
        the server is unreachable. Nothing was stored (the transaction rolled back) and a 5xx is
        what tells Twilio to retry. Any other database error is a bug and stays a 500."""
        problem = await asyncio.get_running_loop().run_in_executor(None, self._schema.problem)
        if problem is None and not isinstance(exc, OperationalError | InterfaceError):
            raise exc
        detail = problem or f"database unavailable ({type(exc.orig).__name__}); retry later"
        await _reject(scope, send, Rejected(503, detail))


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


def _dispatch(dispatch: Dispatch, ids: Sequence[int]) -> None:
    """Hand committed answers to the workers; on failure they stay queued for the sweeper."""
    try:
        dispatch(list(ids))
    except Exception:
        log.exception("dispatch of %s answers failed; the sweeper will send them", len(ids))
