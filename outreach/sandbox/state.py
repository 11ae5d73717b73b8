"""The sandbox's memory: its fault settings, every message it accepted, and the figures tests read.

Everything here is shared between the server's event loop and the test (or benchmark) thread, so
each read and write holds one lock; nothing in here awaits.
"""

from __future__ import annotations

import datetime as dt
import random
import secrets
import string
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.utils import format_datetime
from typing import Any, Literal, Protocol

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

API_VERSION = "2010-04-01"
DEFAULT_ACCOUNT_SID = "AC" + "5a" * 16
DEFAULT_AUTH_TOKEN = "sandbox-auth-token"  # a demo credential for a local server

# Twilio's documented magic test numbers, so code written against test credentials behaves alike.
MAGIC_REJECTS: dict[str, int] = {
    "+15005550001": 21211,  # invalid number
    "+15005550002": 21612,  # cannot route to this number
    "+15005550003": 21408,  # no international permission
    "+15005550004": 21610,  # opted out (STOP)
    "+15005550009": 21614,  # not a mobile number
}

Fault = Literal["429", "500", "timeout"]
OptOutType = Literal["STOP", "START", "HELP"]

# Twilio's default Advanced Opt-Out keyword families, plus one custom opt-out word of the kind a
# clinic configures in the Messaging Service (REMOVE), so tests meet a word only Twilio knows.
ADVANCED_OPT_OUT_KEYWORDS: dict[str, OptOutType] = {
    **dict.fromkeys(
        ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT", "REMOVE"), "STOP"
    ),
    **dict.fromkeys(("START", "YES", "UNSTOP"), "START"),
    **dict.fromkeys(("HELP", "INFO"), "HELP"),
}
# Status only moves forward, as on Twilio: a late step never overwrites a final one.
_ORDER = {"accepted": 0, "queued": 1, "sending": 2, "sent": 3, "delivered": 4, "undelivered": 4, "failed": 4}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def normalize_number(raw: str, default_region: str = "US") -> str | None:
    """E.164 for a valid number, None otherwise (Twilio's 21211)."""
    try:
        number = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


class DeliveryOutcome(BaseModel):
    """How a number's messages end: `undelivered` after `sent`, or `failed` without ever being sent."""

    model_config = ConfigDict(extra="forbid")
    status: Literal["undelivered", "failed"] = "undelivered"
    error_code: int = Field(30003, ge=30000, le=30999)


class SandboxConfig(BaseModel):
    """Fault injection and timing; settable at start and at runtime (POST /_sandbox/config)."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: float = Field(0, ge=0, description="added to every API request")
    p429: float = Field(0, ge=0, le=1, description="probability a create answers 429 (code 20429)")
    p500: float = Field(0, ge=0, le=1, description="probability a create answers 500 (code 20500)")
    p_timeout: float = Field(0, ge=0, le=1, description="probability a create is recorded but not answered")
    timeout_hold_s: float = Field(30, gt=0, description="how long such an answer is held back")
    reject: dict[str, int] = Field(default_factory=lambda: dict(MAGIC_REJECTS))
    reject_from: dict[str, int] = Field(
        default_factory=dict,
        description="sender (From number or MessagingServiceSid) -> error code answered to every "
        "create from it, e.g. 21606 for a number that cannot text: an operator's misconfiguration",
    )
    outcomes: dict[str, DeliveryOutcome] = Field(default_factory=dict)
    queued_after_s: float = Field(0, ge=0, description="accepted -> queued (Messaging Service)")
    sent_after_s: float = Field(0.05, ge=0, description="queued -> sent")
    delivered_after_s: float = Field(0.05, ge=0, description="sent -> delivered/undelivered")
    service_from: str = "+15005550006"
    inbound_url: str | None = Field(None, description="where simulated replies are posted")
    advanced_opt_out: bool = Field(
        False, description="Advanced Opt-Out on: replies that are one keyword carry OptOutType"
    )
    opt_out_keywords: dict[str, OptOutType] = Field(
        default_factory=lambda: dict(ADVANCED_OPT_OUT_KEYWORDS),
        description="keyword -> OptOutType (STOP, START or HELP) when advanced_opt_out is on",
    )
    seed: int | None = None

    @field_validator("reject", "reject_from", "outcomes", mode="before")
    @classmethod
    def _e164_keys(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {normalize_number(str(k)) or str(k): v for k, v in value.items()}

    @field_validator("opt_out_keywords", mode="before")
    @classmethod
    def _keywords(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        keywords = {}
        for word, kind in value.items():
            key = str(word).strip().upper()
            if not key or any(c.isspace() for c in key):
                raise ValueError(f"{word!r}: a keyword is one word")
            keywords[key] = str(kind).upper() if isinstance(kind, str) else kind
        return keywords

    def opt_out_type(self, body: str) -> OptOutType | None:
        """Twilio's OptOutType for an inbound `body`: only a message that is one keyword (any case,
        surrounding spaces and punctuation ignored) counts, and only with Advanced Opt-Out on."""
        if not self.advanced_opt_out:
            return None
        word = body.strip().strip(string.punctuation + " ").upper()
        return self.opt_out_keywords.get(word)

    @model_validator(mode="after")
    def _probabilities(self) -> SandboxConfig:
        if self.p429 + self.p500 + self.p_timeout > 1:
            raise ValueError("p429 + p500 + p_timeout must not exceed 1")
        return self


@dataclass
class SandboxMessage:
    """One accepted outbound message, as stored and as rendered in Twilio's JSON."""

    sid: str
    account_sid: str
    to: str
    from_: str | None
    messaging_service_sid: str | None
    body: str
    segments: int
    status: str
    status_callback: str | None
    validity_period: int | None
    date_created: dt.datetime
    date_updated: dt.datetime
    date_sent: dt.datetime | None = None
    error_code: int | None = None
    error_message: str | None = None
    timed_out: bool = False
    history: list[str] = field(default_factory=list)

    @property
    def uri(self) -> str:
        return f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{self.sid}.json"

    def twilio_json(self) -> dict[str, Any]:
        base = self.uri.removesuffix(".json")
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": self.body,
            "date_created": format_datetime(self.date_created),
            "date_sent": format_datetime(self.date_sent) if self.date_sent else None,
            "date_updated": format_datetime(self.date_updated),
            "direction": "outbound-api",
            "error_code": self.error_code,
            "error_message": self.error_message,
            "from": self.from_,
            "messaging_service_sid": self.messaging_service_sid,
            "num_media": "0",
            # Twilio reports 0 until a Messaging Service has picked the sender.
            "num_segments": str(self.segments if self.status != "accepted" else 0),
            "price": None,
            "price_unit": "USD",
            "sid": self.sid,
            "status": self.status,
            "subresource_uris": {"media": f"{base}/Media.json", "feedback": f"{base}/Feedback.json"},
            "to": self.to,
            "uri": self.uri,
        }

    def record_json(self) -> dict[str, Any]:
        """The sandbox's own view (GET /_sandbox/messages): what was accepted, when, and how it ended."""
        return {
            "sid": self.sid,
            "to": self.to,
            "from": self.from_,
            "messaging_service_sid": self.messaging_service_sid,
            "body": self.body,
            "segments": self.segments,
            "status": self.status,
            "error_code": self.error_code,
            "accepted_at": self.date_created.isoformat(),
            "timed_out": self.timed_out,
            "status_callback": self.status_callback,
            "validity_period": self.validity_period,
            "history": list(self.history),
        }


@dataclass(frozen=True)
class PlannedReply:
    """A simulated patient answer: `body` is posted as a signed inbound webhook `after_s` after delivery."""

    after_s: float
    body: str


class ReplyPlanner(Protocol):
    """Extension point for simulated replies: decides, per delivered message, what the patient answers."""

    def __call__(self, message: SandboxMessage) -> Sequence[PlannedReply]: ...


def new_sid(prefix: str = "SM") -> str:
    return prefix + secrets.token_hex(16)


class SandboxState:
    """Records, faults and counters behind one lock; `clock` is injectable so stats are testable."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        config: SandboxConfig | None = None,
        *,
        clock: Callable[[], dt.datetime] = utcnow,
        replies: ReplyPlanner | None = None,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.clock = clock
        self.replies = replies
        self._lock = threading.Lock()
        self._config = config or SandboxConfig()
        self._rng = random.Random(self._config.seed)
        self._messages: list[SandboxMessage] = []
        self._by_sid: dict[str, SandboxMessage] = {}
        self._inbound: list[dict[str, str]] = []
        self._counters: Counter[str] = Counter()

    # --- configuration ---------------------------------------------------------------------------

    @property
    def config(self) -> SandboxConfig:
        with self._lock:
            return self._config

    def configure(self, **changes: Any) -> SandboxConfig:
        """Merge `changes` into the settings (validated as a whole); a new seed restarts the dice."""
        with self._lock:
            merged = SandboxConfig.model_validate({**self._config.model_dump(), **changes})
            self._config = merged
            if "seed" in changes:
                self._rng = random.Random(merged.seed)
            return merged

    def draw_fault(self) -> Fault | None:
        """One roll per create: 429, 500, accepted-then-timeout, or nothing."""
        with self._lock:
            cfg = self._config
            roll = self._rng.random()
            fault: Fault | None = None
            if roll < cfg.p429:
                fault = "429"
            elif roll < cfg.p429 + cfg.p500:
                fault = "500"
            elif roll < cfg.p429 + cfg.p500 + cfg.p_timeout:
                fault = "timeout"
            if fault:
                self._counters[f"fault_{fault}"] += 1
            return fault

    # --- records ---------------------------------------------------------------------------------

    def accept(
        self,
        *,
        to: str,
        from_: str | None,
        messaging_service_sid: str | None,
        body: str,
        segments: int,
        status_callback: str | None,
        validity_period: int | None,
        timed_out: bool = False,
        received_at: dt.datetime | None = None,
    ) -> SandboxMessage:
        """Record a message; `received_at` (when the request arrived, before any simulated
        latency) is its creation time, the instant a real provider counts against the rate."""
        now = received_at or self.clock()
        status = "accepted" if messaging_service_sid else "queued"
        message = SandboxMessage(
            sid=new_sid(),
            account_sid=self.account_sid,
            to=to,
            from_=None if messaging_service_sid else from_,
            messaging_service_sid=messaging_service_sid,
            body=body,
            segments=segments,
            status=status,
            status_callback=status_callback,
            validity_period=validity_period,
            date_created=now,
            date_updated=now,
            timed_out=timed_out,
            history=[status],
        )
        with self._lock:
            self._messages.append(message)
            self._by_sid[message.sid] = message
        return message

    def advance(self, sid: str, status: str, error_code: int | None = None) -> SandboxMessage | None:
        """Move a message forward (never back); returns it, or None when the move was stale."""
        now = self.clock()
        with self._lock:
            message = self._by_sid.get(sid)
            if message is None or _ORDER[status] <= _ORDER[message.status]:
                return None
            message.status = status
            message.date_updated = now
            message.history.append(status)
            if status == "queued" and message.messaging_service_sid and message.from_ is None:
                message.from_ = self._config.service_from
            if status == "sent":
                message.date_sent = now
            if error_code is not None:
                message.error_code = error_code
                message.error_message = ERROR_MESSAGES.get(error_code, "Message delivery failed")
            return message

    def get(self, sid: str) -> SandboxMessage | None:
        with self._lock:
            return self._by_sid.get(sid)

    def snapshot(self, sid: str) -> dict[str, Any] | None:
        with self._lock:
            message = self._by_sid.get(sid)
            return message.twilio_json() if message else None

    def select(
        self,
        *,
        to: str | None = None,
        from_: str | None = None,
        sent_on: dt.date | None = None,
        sent_from: dt.datetime | None = None,
        sent_until: dt.datetime | None = None,
    ) -> list[dict[str, Any]]:
        """Twilio's list order (newest first) with its filters; an unsent message counts by creation."""
        with self._lock:
            found = []
            for message in reversed(self._messages):
                when = message.date_sent or message.date_created
                if to is not None and message.to != to:
                    continue
                if from_ is not None and message.from_ != from_:
                    continue
                if sent_on is not None and when.date() != sent_on:
                    continue
                if sent_from is not None and when < sent_from:
                    continue
                if sent_until is not None and when > sent_until:
                    continue
                found.append(message.twilio_json())
            return found

    def count(self, name: str) -> None:
        with self._lock:
            self._counters[name] += 1

    def record_inbound(self, params: dict[str, str]) -> None:
        with self._lock:
            self._inbound.append(dict(params))

    def messages(self) -> list[dict[str, Any]]:
        """Every accepted message in acceptance order, for "never twice" assertions."""
        with self._lock:
            return [m.record_json() for m in self._messages]

    def inbound(self) -> list[dict[str, str]]:
        with self._lock:
            return [dict(p) for p in self._inbound]

    def reset(self) -> None:
        """Forget records and counters (settings stay); the dice restart from the seed."""
        with self._lock:
            self._messages.clear()
            self._by_sid.clear()
            self._inbound.clear()
            self._counters.clear()
            self._rng = random.Random(self._config.seed)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            accepted = [(m.date_created, m.segments) for m in self._messages]
            statuses = Counter(m.status for m in self._messages)
            timeouts = sum(1 for m in self._messages if m.timed_out)
            counters = dict(self._counters)
        return {
            "total": len(accepted),
            "segments": sum(s for _, s in accepted),
            "per_second": _histogram(accepted, weight=False),
            "segments_per_second": _histogram(accepted, weight=True),
            "max_per_second": _max_in_window(accepted, weight=False),
            "max_segments_per_second": _max_in_window(accepted, weight=True),
            "span_seconds": _span(accepted),
            "by_status": dict(statuses),
            "timed_out": timeouts,
            "counters": counters,
        }


def _histogram(accepted: list[tuple[dt.datetime, int]], *, weight: bool) -> dict[str, int]:
    """Counts per calendar second (UTC, ISO keys in time order)."""
    buckets: Counter[str] = Counter()
    for when, segments in accepted:
        key = when.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
        buckets[key] += segments if weight else 1
    return dict(sorted(buckets.items()))


def _span(accepted: list[tuple[dt.datetime, int]]) -> float:
    """Seconds from the first accepted message to the last (0 for fewer than two)."""
    if len(accepted) < 2:
        return 0.0
    times = [when.timestamp() for when, _ in accepted]
    return max(times) - min(times)


def _max_in_window(accepted: list[tuple[dt.datetime, int]], *, weight: bool) -> int:
    """The most messages (or segments) accepted in any sliding one-second window [t, t + 1 s)."""
    points = sorted((when.timestamp(), segments if weight else 1) for when, segments in accepted)
    best = total = 0
    start = 0
    for end_time, amount in points:
        total += amount
        while points[start][0] <= end_time - 1.0:
            total -= points[start][1]
            start += 1
        best = max(best, total)
    return best


# Twilio's wording for the codes the sandbox answers with (https://www.twilio.com/docs/api/errors).
ERROR_MESSAGES: dict[int, str] = {
    20001: "Invalid {name} parameter",
    20003: "Authenticate",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    20500: "Internal Server Error",
    21211: "The 'To' number {to} is not a valid phone number.",
    21212: "The 'From' number {from_} is not a valid phone number, shortcode, or alphanumeric sender ID.",
    21408: "Permission to send an SMS has not been enabled for the region indicated by the 'To' number.",
    21602: "Message body is required.",
    21603: "A 'From' phone number is required.",
    21604: "A 'To' phone number is required.",
    21606: "The 'From' phone number provided is not a valid message-capable Twilio phone number.",
    21609: "Invalid StatusCallback url",
    21610: "Attempt to send to unsubscribed recipient",
    21612: "The 'To' phone number: {to}, is not currently reachable via SMS.",
    21614: "'To' number is not a valid mobile number",
    21617: "The concatenated message body exceeds the 1600 character limit.",
    21624: "Invalid validity period value",
    21701: "The Messaging Service Sid {service} is invalid.",
    30003: "Unreachable destination handset",
    30005: "Unknown destination handset",
    30006: "Landline or unreachable carrier",
    30007: "Message filtered",
    30008: "Unknown error",
    30034: "Message from an Unregistered Number",
    30036: "Validity Period Expired",
}
