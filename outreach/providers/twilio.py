"""Twilio through its official client, with every failure sorted into retry, permanent or ambiguous.

The sort is the point of this module: a blind retry of a POST that Twilio did accept is a
duplicate text to a patient, so only failures that provably created nothing are retryable, and a
request that left without a readable answer is ambiguous and must be reconciled by looking it up.
Errors about the account or the sender (twilio_codes.OPERATOR_CODES) are the operator's to fix,
not the row's: they come back as OperatorError.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Callable
from typing import Any, TypeVar

from requests import exceptions as rq
from requests.adapters import HTTPAdapter
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client
from urllib3.exceptions import ClosedPoolError, ConnectTimeoutError, MaxRetryError, NewConnectionError
from urllib3.exceptions import SSLError as Urllib3SSLError
from urllib3.util.retry import Retry

from outreach.config import Settings
from outreach.errors import UserError
from outreach.phones import mask
from outreach.providers.base import (
    AmbiguousError,
    OperatorError,
    PermanentError,
    ProviderError,
    ProviderMessage,
    RetryableError,
)
from outreach.providers.twilio_codes import OPERATOR_CODES, OPERATOR_HTTP

log = logging.getLogger(__name__)

STATUS_PATH = "/twilio/status"
DEFAULT_TIMEOUT_S = 10.0
# A reminder that could not go out within 4 hours should not arrive late at night instead.
DEFAULT_VALIDITY_PERIOD_S = 4 * 3600

_RATE_LIMITED = 20429
# Answers from a gateway in front of Twilio's API (bad gateway, gateway timeout): the gateway may
# have forwarded the request, and the backend created the message, before it gave up. A 500 or a
# 503 comes from the API itself, which answers them only for requests it did not carry out.
_AMBIGUOUS_HTTP = {502, 504}
_PHONE_IN_TEXT = re.compile(r"(?<![\w/])\+?\d[\d\s().-]{6,}\d(?!\w)")

T = TypeVar("T")


class TwilioProvider:
    """Sends through `twilio.rest.Client`; point it at the sandbox with OUTREACH_TWILIO_API_URL.

    One instance can be shared by the threads of a worker: requests' pool is sized by `pool_size`.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        validity_period: int | None = DEFAULT_VALIDITY_PERIOD_S,
        pool_size: int = 32,
    ) -> None:
        if not settings.twilio_account_sid:
            raise UserError("TWILIO_ACCOUNT_SID is not set (the Twilio account that sends the messages)")
        if not settings.twilio_auth_token:
            raise UserError("TWILIO_AUTH_TOKEN is not set (the auth token of TWILIO_ACCOUNT_SID)")
        if not (settings.twilio_messaging_service_sid or settings.twilio_from_number):
            raise UserError(
                "set TWILIO_MESSAGING_SERVICE_SID (preferred) or TWILIO_FROM_NUMBER: there is no sender"
            )
        self.messaging_service_sid = settings.twilio_messaging_service_sid or None
        self.from_number = None if self.messaging_service_sid else settings.twilio_from_number
        self.validity_period = validity_period
        self.default_status_callback = (
            settings.public_url.rstrip("/") + STATUS_PATH if settings.public_url else None
        )
        self.client = Client(
            username=settings.twilio_account_sid,
            password=settings.twilio_auth_token,
            account_sid=settings.twilio_account_sid,
            http_client=_http_client(timeout, pool_size),
        )
        if settings.twilio_api_url:
            # Region and edge rewrite the host name; a Twilio-compatible server is reached as given.
            self.client.region = None
            self.client.edge = None
            self.client.api.base_url = settings.twilio_api_url.rstrip("/")
        # The client imports its resource modules on first use. Done here, not inside the first
        # send: that one holds a rate slot, and a cold import (under the import lock every thread
        # of a fresh worker queues on) would make it arrive late and bunch with the next slots.
        self.messages = self.client.messages

    def send(self, *, to: str, body: str, status_callback: str | None = None) -> ProviderMessage:
        params: dict[str, Any] = {"to": to, "body": body}
        if self.messaging_service_sid:
            params["messaging_service_sid"] = self.messaging_service_sid
        else:
            params["from_"] = self.from_number
        callback = status_callback if status_callback is not None else self.default_status_callback
        if callback:
            params["status_callback"] = callback
        if self.validity_period is not None:
            params["validity_period"] = self.validity_period
        message = _call(lambda: self.messages.create(**params), creates=True)
        if not isinstance(message.sid, str) or not message.sid:
            # A 2xx whose JSON has no sid (a proxy's own page, an empty object): something answered,
            # so the message may exist; never record a made-up sid.
            raise AmbiguousError("Twilio's answer has no message sid; the message may exist")
        log.debug("twilio accepted %s to %s (%s)", message.sid, mask(to), message.status)
        return _provider_message(message)

    def fetch(self, sid: str) -> ProviderMessage:
        return _provider_message(_call(lambda: self.messages(sid).fetch(), creates=False))

    def list_to(self, to: str, *, since: dt.datetime) -> list[ProviderMessage]:
        """Pages newest first and stops at `since`, so a message not yet sent (no date_sent) is found too."""
        since = since if since.tzinfo else since.replace(tzinfo=dt.UTC)
        # Twilio's dates are RFC 2822, whole seconds: a message from the same second must still match.
        since = since.replace(microsecond=0)

        def collect() -> list[ProviderMessage]:
            found: list[ProviderMessage] = []
            for instance in self.messages.stream(to=to, page_size=50):
                message = _provider_message(instance)
                if message.date_created is not None and message.date_created < since:
                    break
                found.append(message)
            return found

        return _call(collect, creates=False)


def _http_client(timeout: float, pool_size: int) -> TwilioHttpClient:
    """The client's own retries stay off: a resent POST is a second text."""
    # Proxies from the environment are read once here: with trust_env on, requests re-reads all of
    # os.environ on every request, a measurable share of a worker's CPU per message.
    http = TwilioHttpClient(timeout=timeout, proxy=_environment_proxies())
    assert http.session is not None
    http.session.trust_env = False
    adapter = HTTPAdapter(pool_maxsize=pool_size, max_retries=Retry(total=0, read=False, redirect=False))
    http.session.mount("https://", adapter)
    http.session.mount("http://", adapter)
    return http


def _environment_proxies() -> dict[str, str]:
    from urllib.request import getproxies

    return {scheme: url for scheme, url in getproxies().items() if scheme in ("http", "https", "all")}


def _provider_message(instance: Any) -> ProviderMessage:
    segments = int(instance.num_segments) if instance.num_segments not in (None, "") else None
    return ProviderMessage(
        sid=str(instance.sid),
        to=str(instance.to),
        status=str(instance.status),
        error_code=int(instance.error_code) if instance.error_code is not None else None,
        date_created=instance.date_created if isinstance(instance.date_created, dt.datetime) else None,
        # Twilio reports 0 segments until a Messaging Service has picked a sender.
        num_segments=segments or None,
        body=instance.body,
        date_updated=instance.date_updated if isinstance(instance.date_updated, dt.datetime) else None,
    )


def _call(action: Callable[[], T], *, creates: bool) -> T:
    try:
        return action()
    except ProviderError:
        raise
    except (TwilioRestException, TwilioServiceException) as exc:
        raise classify_http(exc.status, exc.code, _clean(_message_of(exc)), creates=creates) from exc
    except rq.RequestException as exc:
        raise classify_transport(exc, creates=creates) from exc
    except json.JSONDecodeError as exc:
        # A 2xx whose body is not JSON (a proxy's HTML page, a truncated answer): the client's
        # json.loads raises it straight through. Something accepted the request.
        raise _unsure(f"Twilio's answer is not JSON ({exc.msg}); the message may exist", creates) from exc
    except TwilioException as exc:
        # The client could not read the answer otherwise.
        raise _unsure(f"unreadable answer from Twilio: {_clean(str(exc))}", creates) from exc


def classify_http(http_status: int, code: int | None, message: str, *, creates: bool = True) -> ProviderError:
    """An HTTP error answer -> retry (429, 500, 503: nothing created), ambiguous (502, 504 on a
    create: a gateway may have forwarded it), operator (the account or sender is misconfigured,
    on a create) or permanent (the rest of 4xx: this message is refused)."""
    if http_status == 429 or code == _RATE_LIMITED:
        return RetryableError(code, http_status, message)
    if http_status in _AMBIGUOUS_HTTP:
        return _unsure(f"HTTP {http_status}: {message}", creates)
    if http_status >= 500:
        return RetryableError(code, http_status, message)
    if not creates:
        # A lookup that fails for the account (401/403) is simply postponed; 20404 on a lookup
        # means "no such message", which reconciliation relies on.
        if http_status in OPERATOR_HTTP:
            return RetryableError(code, http_status, message)
        return PermanentError(code, message, http_status)
    if http_status in OPERATOR_HTTP or code in OPERATOR_CODES:
        # Wrong credentials or a broken sender fail every message alike; fixing them must let the
        # same rows go out, so no row is failed for it.
        return OperatorError(code, http_status, message)
    return PermanentError(code, message, http_status)


def classify_transport(exc: rq.RequestException, *, creates: bool) -> ProviderError:
    """No HTTP answer: retryable only when the request provably never reached the server."""
    if isinstance(exc, rq.ConnectTimeout):
        return RetryableError(None, None, "connect timeout: the request was not sent")
    if isinstance(exc, rq.ConnectionError) and _never_connected(exc):
        return RetryableError(None, None, f"cannot connect: {_clean(_reason(exc))}")
    if isinstance(exc, rq.ReadTimeout):
        return _unsure("no answer before the timeout; the message may exist", creates)
    return _unsure(f"connection lost after the request was sent: {_clean(_reason(exc))}", creates)


def _unsure(message: str, creates: bool) -> ProviderError:
    # Reads create nothing, so for them a lost answer is simply worth another try.
    return AmbiguousError(message) if creates else RetryableError(None, None, message)


def _never_connected(exc: rq.ConnectionError) -> bool:
    cause = exc.args[0] if exc.args else None
    if isinstance(cause, MaxRetryError):
        cause = cause.reason
    # NewConnectionError covers refused connections and DNS failures (NameResolutionError).
    return isinstance(cause, NewConnectionError | ConnectTimeoutError | Urllib3SSLError | ClosedPoolError)


def _reason(exc: rq.RequestException) -> str:
    cause = exc.args[0] if exc.args else exc
    if isinstance(cause, MaxRetryError) and cause.reason is not None:
        cause = cause.reason
    return f"{type(cause).__name__}: {cause}"


def _message_of(exc: TwilioRestException | TwilioServiceException) -> str:
    if isinstance(exc, TwilioServiceException):
        return str(exc.detail or exc.title)
    return str(exc.msg)


def _clean(text: str) -> str:
    """Twilio's messages quote the number ("The 'To' number +1... is not valid"); logs must not."""
    return _PHONE_IN_TEXT.sub(lambda m: mask(re.sub(r"[^\d+]", "", m.group())), text)
