"""Each accepted message's life after the create call: status moves, signed status callbacks, replies.

It runs as asyncio tasks on the server's loop, so the create call answers at once and thousands of
messages can be in flight; callbacks for one message go out in order, signed exactly as Twilio
signs them, so the webhook's signature check is exercised for real.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid

import aiohttp
import phonenumbers
from phonenumbers import geocoder
from twilio.request_validator import RequestValidator

from outreach.phones import mask
from outreach.sandbox.state import API_VERSION, SandboxMessage, SandboxState, new_sid

log = logging.getLogger(__name__)

# Twilio's final outcomes: "failed" never left Twilio, "undelivered" was sent but not delivered.
_FAILED_BEFORE_SENDING = "failed"
# Outcomes a carrier reports in a delivery receipt (DLR): their callbacks carry RawDlrDoneDate.
_DLR_STATUSES = frozenset({"delivered", "undelivered"})


class Lifecycle:
    """Owns the HTTP session and the background tasks; `start`/`aclose` bracket the server's life."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def schedule(self, message: SandboxMessage) -> None:
        task = asyncio.get_running_loop().create_task(self._run(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, message: SandboxMessage) -> None:
        # No callback for the status a message is created with (queued, or accepted through a
        # Messaging Service): the create answer carries it. Every later change gets one.
        cfg = self.state.config
        outcome = cfg.outcomes.get(message.to)
        if message.status == "accepted":
            await asyncio.sleep(cfg.queued_after_s)
            await self._step(message, "queued")
        if message.validity_period is not None and cfg.sent_after_s > message.validity_period:
            await asyncio.sleep(message.validity_period)
            await self._step(message, "failed", 30036)
            return
        await asyncio.sleep(cfg.sent_after_s)
        if outcome is not None and outcome.status == _FAILED_BEFORE_SENDING:
            await self._step(message, "failed", outcome.error_code)
            return
        await self._step(message, "sent")
        await asyncio.sleep(cfg.delivered_after_s)
        if outcome is not None:
            await self._step(message, "undelivered", outcome.error_code)
            return
        await self._step(message, "delivered")
        await self._replies(message)

    async def _step(self, message: SandboxMessage, status: str, error_code: int | None = None) -> None:
        updated = self.state.advance(message.sid, status, error_code)
        if updated is None or not message.status_callback:
            return
        params = {
            "AccountSid": message.account_sid,
            "ApiVersion": API_VERSION,
            "From": message.from_ or "",
            "MessageSid": message.sid,
            "MessageStatus": status,
            "SmsSid": message.sid,
            "SmsStatus": status,
            "To": message.to,
        }
        if message.messaging_service_sid:
            params["MessagingServiceSid"] = message.messaging_service_sid
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        if status in _DLR_STATUSES:
            # The carrier's delivery receipt "done date", minute precision (YYMMDDhhmm); UTC here.
            params["RawDlrDoneDate"] = updated.date_updated.astimezone(dt.UTC).strftime("%y%m%d%H%M")
        await self.post_signed(message.status_callback, params, kind="status")

    async def _replies(self, message: SandboxMessage) -> None:
        """The extension point for simulated patients: a ReplyPlanner decides, this posts."""
        planner, url = self.state.replies, self.state.config.inbound_url
        if planner is None or not url:
            return
        for reply in planner(message):
            await asyncio.sleep(reply.after_s)
            sid = new_sid()
            params = {
                "AccountSid": message.account_sid,
                "ApiVersion": API_VERSION,
                "Body": reply.body,
                "From": message.to,
                "MessageSid": sid,
                "NumMedia": "0",
                "NumSegments": "1",
                "SmsMessageSid": sid,
                "SmsSid": sid,
                "SmsStatus": "received",
                "To": message.from_ or "",
            }
            if message.messaging_service_sid:
                params["MessagingServiceSid"] = message.messaging_service_sid
            params |= geography("From", message.to) | geography("To", message.from_ or "")
            opt_out_type = self.state.config.opt_out_type(reply.body)
            if opt_out_type is not None:  # Advanced Opt-Out on and the reply is one of its keywords
                params["OptOutType"] = opt_out_type
            self.state.record_inbound(params)
            await self.post_signed(url, params, kind="inbound")

    async def post_signed(self, url: str, params: dict[str, str], *, kind: str) -> bool:
        """POST form `params` to `url` with X-Twilio-Signature; Twilio does not retry, neither do we."""
        assert self._session is not None, "Lifecycle.start() was not awaited"
        signature = RequestValidator(self.state.auth_token).compute_signature(url, params)
        headers = {
            "X-Twilio-Signature": signature,
            # Unique per webhook request (a retry would repeat it); headers are not signed.
            "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
            "User-Agent": "TwilioProxy/1.1 (outreach sandbox)",
        }
        try:
            async with self._session.post(url, data=params, headers=headers) as response:
                await response.read()
                ok = 200 <= response.status < 300
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning(
                "%s callback for %s to %s failed: %s", kind, params["MessageSid"], mask(params["To"]), exc
            )
            ok = False
        self.state.count(f"{kind}_callbacks_{'ok' if ok else 'failed'}")
        return ok


def geography(side: str, number: str) -> dict[str, str]:
    """Twilio's look-up of where a number is, as `{side}City/State/Zip/Country` (side: From or To).

    Twilio sends all four, empty where it knows nothing. Here the country comes from the number and,
    for US numbers, the city and state from phonenumbers' area-code data ("New York, NY" gives both,
    "Massachusetts" only the state); the sandbox never knows a ZIP code.
    """
    city = state = country = ""
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        parsed = None
    if parsed is not None and phonenumbers.is_valid_number(parsed):
        country = phonenumbers.region_code_for_number(parsed) or ""
        if country == "US":
            place = geocoder.description_for_number(parsed, "en")
            named_city, _, abbreviation = place.rpartition(", ")
            if named_city and abbreviation in _US_STATE_CODES:
                city, state = named_city.upper(), abbreviation
            else:
                state = _US_STATES.get(place, "")
    return {f"{side}City": city, f"{side}State": state, f"{side}Zip": "", f"{side}Country": country}


_US_STATES = {
    "Alabama": "AL", "Alaska": "AK", "Arizona": "AZ", "Arkansas": "AR", "California": "CA",
    "Colorado": "CO", "Connecticut": "CT", "Delaware": "DE", "Florida": "FL", "Georgia": "GA",
    "Hawaii": "HI", "Idaho": "ID", "Illinois": "IL", "Indiana": "IN", "Iowa": "IA", "Kansas": "KS",
    "Kentucky": "KY", "Louisiana": "LA", "Maine": "ME", "Maryland": "MD", "Massachusetts": "MA",
    "Michigan": "MI", "Minnesota": "MN", "Mississippi": "MS", "Missouri": "MO", "Montana": "MT",
    "Nebraska": "NE", "Nevada": "NV", "New Hampshire": "NH", "New Jersey": "NJ", "New Mexico": "NM",
    "New York": "NY", "North Carolina": "NC", "North Dakota": "ND", "Ohio": "OH", "Oklahoma": "OK",
    "Oregon": "OR", "Pennsylvania": "PA", "Rhode Island": "RI", "South Carolina": "SC",
    "South Dakota": "SD", "Tennessee": "TN", "Texas": "TX", "Utah": "UT", "Vermont": "VT",
    "Virginia": "VA", "Washington": "WA", "West Virginia": "WV", "Wisconsin": "WI", "Wyoming": "WY",
    "Washington State": "WA", "Washington D.C.": "DC", "Washington DC": "DC", "District of Columbia": "DC",
}  # fmt: skip
_US_STATE_CODES = frozenset(_US_STATES.values())
