"""The sandbox's HTTP face: Twilio's Messages API (v2010) plus a small control API under /_sandbox.

Shapes follow Twilio's OpenAPI description (tests check them against it), so code that works
here sees the same JSON, error codes and paging as against the real service.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any
from urllib.parse import urlencode, urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException as StarletteHTTPException

from outreach.sandbox.callbacks import Lifecycle
from outreach.sandbox.state import API_VERSION, ERROR_MESSAGES, SandboxState, normalize_number
from outreach.segments import count_segments

MESSAGES = f"/{API_VERSION}/Accounts/{{account_sid}}/Messages.json"
MESSAGE = f"/{API_VERSION}/Accounts/{{account_sid}}/Messages/{{sid}}.json"
MAX_BODY = 1600
MAX_CALLBACK_URL = 4000
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 50, 1000
_SERVICE_SID = re.compile(r"^MG[0-9a-fA-F]{32}$")
_SHORT_CODE = re.compile(r"^\d{5,6}$")
_ALPHANUMERIC = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$")


class TwilioError(Exception):
    """An answer in Twilio's error shape: {"code", "message", "more_info", "status"}."""

    def __init__(self, http_status: int, code: int, **fill: str) -> None:
        super().__init__(code)
        self.http_status = http_status
        self.code = code
        self.message = ERROR_MESSAGES.get(code, "Error").format_map(_Blank(fill))


class _Blank(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""


def error_json(http_status: int, code: int, message: str) -> dict[str, Any]:
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": http_status,
    }


def create_app(state: SandboxState, *, stopping: asyncio.Event | None = None) -> FastAPI:
    """The app for `state`; `stopping`, when set, releases held "timeout" answers at shutdown."""
    lifecycle = Lifecycle(state)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await lifecycle.start()
        try:
            yield
        finally:
            await lifecycle.aclose()

    app = FastAPI(title="outreach Twilio sandbox", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.sandbox = state
    app.state.lifecycle = lifecycle
    _error_handlers(app)
    _message_routes(app, state, lifecycle, stopping)
    _control_routes(app, state)
    return app


def _error_handlers(app: FastAPI) -> None:
    """Every refusal in Twilio's error shape, framework errors (404, 405) included."""

    @app.exception_handler(TwilioError)
    async def _twilio_error(_request: Request, exc: TwilioError) -> JSONResponse:
        headers = {"WWW-Authenticate": 'Basic realm="Twilio API"'} if exc.http_status == 401 else None
        return JSONResponse(error_json(exc.http_status, exc.code, exc.message), exc.http_status, headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = 20404 if exc.status_code == 404 else 20000 + exc.status_code
        message = (
            f"The requested resource {request.url.path} was not found"
            if exc.status_code == 404
            else str(exc.detail)
        )
        return JSONResponse(error_json(exc.status_code, code, message), exc.status_code)


async def _api_request(state: SandboxState, request: Request, account_sid: str) -> None:
    """Authenticate like Twilio, then add the configured latency."""
    _authenticate(state, request.headers.get("authorization"))
    if account_sid != state.account_sid:
        raise TwilioError(404, 20404)
    latency = state.config.latency_ms
    if latency:
        await asyncio.sleep(latency / 1000)


def _message_routes(
    app: FastAPI, state: SandboxState, lifecycle: Lifecycle, stopping: asyncio.Event | None
) -> None:
    """Twilio's Messages resource: create, list, fetch."""

    @app.post(MESSAGES, status_code=201)
    async def create_message(request: Request, account_sid: str) -> JSONResponse:
        received_at = state.clock()  # before the simulated latency: the rate is counted on arrival
        await _api_request(state, request, account_sid)
        fault = state.draw_fault()
        if fault == "429":
            raise TwilioError(429, 20429)
        if fault == "500":
            raise TwilioError(500, 20500)
        form = await request.form()
        fields = {k: str(v) for k, v in form.items()}
        message = state.accept(
            **_validated(state, fields), timed_out=fault == "timeout", received_at=received_at
        )
        lifecycle.schedule(message)
        body = message.twilio_json()
        if fault == "timeout":
            # Recorded and on its way, but the answer comes too late for the client to see it.
            hold = state.config.timeout_hold_s
            if stopping is None:
                await asyncio.sleep(hold)
            else:
                with suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), hold)
        return JSONResponse(body, 201)

    @app.get(MESSAGES)
    async def list_messages(request: Request, account_sid: str) -> JSONResponse:
        await _api_request(state, request, account_sid)
        return JSONResponse(_message_page(state, request))

    @app.get(MESSAGE)
    async def fetch_message(request: Request, account_sid: str, sid: str) -> JSONResponse:
        await _api_request(state, request, account_sid)
        found = state.snapshot(sid)
        if found is None:
            raise TwilioError(404, 20404)
        return JSONResponse(found)


def _list_filters(query: QueryParams) -> dict[str, Any]:
    """The Messages list's filters (To, From, DateSent with its >= and <= forms) for `state.select`."""
    filters: dict[str, Any] = {}
    if "To" in query:
        filters["to"] = normalize_number(query["To"]) or query["To"]
    if "From" in query:
        filters["from_"] = normalize_number(query["From"]) or query["From"]
    if "DateSent" in query:
        filters["sent_on"] = _parse_when(query["DateSent"], "DateSent").date()
    if "DateSent>" in query:  # on the wire: DateSent>=VALUE
        filters["sent_from"] = _parse_when(query["DateSent>"], "DateSent>")
    if "DateSent<" in query:  # DateSent<=VALUE: a bare date includes that whole day
        value = query["DateSent<"]
        until = _parse_when(value, "DateSent<")
        filters["sent_until"] = until + dt.timedelta(days=1, microseconds=-1) if len(value) == 10 else until
    return filters


def _message_page(state: SandboxState, request: Request) -> dict[str, Any]:
    """One page of the filtered list, with Twilio's paging fields (PageToken continues after the
    last message of the previous page, even if new ones arrived since)."""
    query = request.query_params
    filters = _list_filters(query)  # a bad filter is refused before a bad paging parameter
    page_size = min(_int_param(query.get("PageSize"), DEFAULT_PAGE_SIZE, "PageSize"), MAX_PAGE_SIZE)
    page = _int_param(query.get("Page"), 0, "Page")
    found = state.select(**filters)
    start = page * page_size
    token = query.get("PageToken")
    if token and token.startswith("PA"):
        sids = [m["sid"] for m in found]
        if token[2:] in sids:
            start = sids.index(token[2:]) + 1
    chunk = found[start : start + page_size]
    keep = [(k, v) for k, v in query.multi_items() if k not in {"Page", "PageSize", "PageToken"}]
    path = request.url.path

    def page_uri(number: int, page_token: str | None = None) -> str:
        params = [*keep, ("PageSize", str(page_size)), ("Page", str(number))]
        if page_token:
            params.append(("PageToken", page_token))
        return f"{path}?{urlencode(params)}"

    has_next = start + page_size < len(found)
    return {
        "messages": chunk,
        "page": page,
        "page_size": page_size,
        "start": start,
        "end": start + max(len(chunk) - 1, 0),
        "uri": page_uri(page, token),
        "first_page_uri": page_uri(0),
        "next_page_uri": page_uri(page + 1, "PA" + chunk[-1]["sid"]) if has_next and chunk else None,
        "previous_page_uri": page_uri(page - 1) if page > 0 else None,
    }


def _control_routes(app: FastAPI, state: SandboxState) -> None:
    """The control API under /_sandbox (local use: no credentials)."""

    @app.get("/_sandbox/config")
    async def get_config() -> dict[str, Any]:
        return state.config.model_dump(mode="json")

    @app.post("/_sandbox/config")
    async def set_config(request: Request) -> Response:
        changes = await request.json()
        if not isinstance(changes, dict):
            return JSONResponse({"error": "expected a JSON object of settings"}, 422)
        try:
            return JSONResponse(state.configure(**changes).model_dump(mode="json"))
        except ValidationError as exc:
            return JSONResponse({"error": exc.errors(include_url=False, include_context=False)}, 422)

    @app.get("/_sandbox/messages")
    async def get_messages() -> list[dict[str, Any]]:
        return state.messages()

    @app.get("/_sandbox/inbound")
    async def get_inbound() -> list[dict[str, str]]:
        return state.inbound()

    @app.get("/_sandbox/stats")
    async def get_stats() -> dict[str, Any]:
        return state.stats()

    @app.post("/_sandbox/reset")
    async def reset() -> dict[str, bool]:
        state.reset()
        return {"reset": True}


def _authenticate(state: SandboxState, header: str | None) -> None:
    scheme, _, encoded = (header or "").partition(" ")
    try:
        user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        user = password = ""
    ok_user = secrets.compare_digest(user.encode(), state.account_sid.encode())
    ok_password = secrets.compare_digest(password.encode(), state.auth_token.encode())
    if scheme.lower() != "basic" or not (ok_user and ok_password):
        raise TwilioError(401, 20003)


def _validated(state: SandboxState, form: dict[str, str]) -> dict[str, Any]:
    """Twilio's checks on a create, in Twilio's order of precedence, with Twilio's codes."""
    raw_to = form.get("To", "").strip()
    body = form.get("Body", "")
    raw_from = form.get("From", "").strip()
    service = form.get("MessagingServiceSid", "").strip()
    if not raw_to:
        raise TwilioError(400, 21604)
    if not body and not form.get("MediaUrl") and not form.get("ContentSid"):
        raise TwilioError(400, 21602)
    if not raw_from and not service:
        raise TwilioError(400, 21603)
    if service and not _SERVICE_SID.match(service):
        raise TwilioError(400, 21701, service=service)
    from_ = None
    if raw_from:
        from_ = normalize_number(raw_from)
        if from_ is None and (_SHORT_CODE.match(raw_from) or _ALPHANUMERIC.match(raw_from)):
            from_ = raw_from
        if from_ is None:
            raise TwilioError(400, 21212, from_=raw_from)
    refused = state.config.reject_from.get(from_ or service)
    if refused is not None:  # the sender's own setup is refused (an operator error, e.g. 21606)
        raise TwilioError(400, refused, from_=raw_from, service=service)
    rule_key = normalize_number(raw_to) or raw_to
    rejected = state.config.reject.get(rule_key)
    if rejected is not None:
        raise TwilioError(400, rejected, to=raw_to, from_=raw_from)
    to = normalize_number(raw_to)
    if to is None:
        raise TwilioError(400, 21211, to=raw_to)
    if len(body) > MAX_BODY:
        raise TwilioError(400, 21617)
    validity: int | None = None
    if form.get("ValidityPeriod"):
        try:
            validity = int(form["ValidityPeriod"])
        except ValueError:
            raise TwilioError(400, 21624) from None
        if not 1 <= validity <= 36000:
            raise TwilioError(400, 21624)
    callback = form.get("StatusCallback") or None
    if callback and not _valid_callback_url(callback):
        raise TwilioError(400, 21609)
    return {
        "to": to,
        "from_": from_,
        "messaging_service_sid": service or None,
        "body": body,
        "segments": count_segments(body).segments,
        "status_callback": callback,
        "validity_period": validity,
    }


def _valid_callback_url(url: str) -> bool:
    """Twilio's rule for StatusCallback: an http(s) URL of at most 4,000 characters with a valid
    hostname, and underscores are not allowed in it (its OpenAPI description and error 21609)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    return (
        len(url) <= MAX_CALLBACK_URL
        and parts.scheme in {"http", "https"}
        and bool(host)
        and "_" not in (host or "")
    )


def _parse_when(value: str, name: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise TwilioError(400, 20001, name=name) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _int_param(value: str | None, default: int, name: str) -> int:
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise TwilioError(400, 20001, name=name) from None
    if number < 0 or (name == "PageSize" and number == 0):
        raise TwilioError(400, 20001, name=name)
    return number
