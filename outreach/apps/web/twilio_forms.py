"""Twilio's webhook forms in, TwiML out: the transport half of the webhooks.

Only this module knows Twilio's field names (MessageSid or its legacy SmsMessageSid, From, ErrorCode,
...) and its XML answer. It reads each webhook into one typed, frozen value (`InboundForm`,
`StatusForm`) and the web app hands plain values from it to the rules in outreach/listen/, which
know replies and statuses, not Twilio's forms.

Both webhooks are the hot path (about a thousand requests a second per process), so reading a form
is a few dict lookups and one small frozen object (about 1 µs, against some 750 µs of server CPU
per webhook in bench/README.md); no validation library runs per request, and a number already in
North American E.164, as Twilio sends nearly every one, skips phonenumbers.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass

import phonenumbers
from sqlalchemy.orm import Session
from twilio.twiml.messaging_response import MessagingResponse

from outreach.campaigns import CampaignFile
from outreach.config import Settings
from outreach.listen.replies import InboundResult, store_inbound

# A North American number in E.164: area code and exchange never start with 0 or 1, so it is
# possible and already in the form phonenumbers would give it.
_NANP_E164 = re.compile(r"\+1[2-9][0-9]{2}[2-9][0-9]{6}\Z")
# Most replies are answered through the outbox, or not at all: their response is built once.
_EMPTY_TWIML = str(MessagingResponse())


class BadWebhook(ValueError):
    """A webhook whose fields cannot be used; the web app answers 400 with this one line.

    Not a UserError: nobody at a terminal can fix it. The reason goes back to the poster (Twilio's
    debugger shows it) and to the log.
    """


@dataclass(frozen=True)
class InboundForm:
    """An inbound message (Twilio's incoming-message webhook), checked."""

    sid: str  # MessageSid: at most 64 characters
    phone: str  # From, in E.164: the patient who wrote
    to: str  # To: our number, E.164 when it parses ("" when absent)
    body: str
    idempotency_token: str | None = None  # I-Twilio-Idempotency-Token: the same on Twilio's retries
    opt_out_type: str | None = None  # OptOutType (Advanced Opt-Out): STOP, START or HELP, upper case


@dataclass(frozen=True)
class StatusForm:
    """A status callback for a message we sent, checked."""

    sid: str  # MessageSid of our message
    status: str  # Twilio's MessageStatus (outreach/listen/status.py maps it onto the outbox's)
    error_code: int | None  # ErrorCode, for undelivered and failed
    error_message: str | None  # ErrorMessage, at most 500 characters
    to: str | None  # To: the patient's number, E.164 when it parses


def inbound_form(
    form: Mapping[str, str], *, region: str, idempotency_token: str | None = None
) -> InboundForm:
    """Check an inbound webhook's fields without touching the database; BadWebhook if unusable."""
    sid = (form.get("MessageSid") or form.get("SmsMessageSid") or "").strip()
    if not sid:
        raise BadWebhook("missing MessageSid")
    if len(sid) > 64:
        raise BadWebhook("MessageSid is longer than 64 characters")
    if idempotency_token is not None and len(idempotency_token) > 200:
        raise BadWebhook("I-Twilio-Idempotency-Token is longer than 200 characters")
    phone = webhook_number(form.get("From"), region, "From", required=True)
    assert phone is not None
    to = webhook_number(form.get("To"), region, "To", required=False) or ""
    # Absent or empty unless Advanced Opt-Out matched one of its keywords; a value the rules do not
    # know is passed on and ignored there, so a new one from Twilio never costs a reply.
    opt_out_type = (form.get("OptOutType") or "").strip().upper()[:16] or None
    return InboundForm(sid, phone, to, form.get("Body") or "", idempotency_token, opt_out_type)


def status_form(form: Mapping[str, str], *, region: str) -> StatusForm:
    """Check a status callback's fields without touching the database; BadWebhook if unusable."""
    sid = (form.get("MessageSid") or form.get("SmsSid") or "").strip()
    status = (form.get("MessageStatus") or form.get("SmsStatus") or "").strip()
    if not sid or len(sid) > 64:
        raise BadWebhook("missing MessageSid" if not sid else "MessageSid over 64 characters")
    if not status:
        raise BadWebhook("missing MessageStatus")
    raw_code = (form.get("ErrorCode") or "").strip()
    if raw_code and not (raw_code.isascii() and raw_code.isdigit() and len(raw_code) <= 9):
        raise BadWebhook("ErrorCode is not a number")
    to = webhook_number(form.get("To"), region, "To", required=False)
    message = (form.get("ErrorMessage") or "").strip()[:500] or None
    return StatusForm(sid, status, int(raw_code) if raw_code else None, message, to)


def store_reply(
    session: Session,
    reply: InboundForm,
    *,
    settings: Settings,
    campaigns: Mapping[str, CampaignFile],
    now: dt.datetime,
) -> InboundResult:
    """Hand a checked reply to the rules (outreach/listen/replies.py) as plain values, in the
    caller's transaction; the caller commits, then dispatches `answer_ids` and answers `twiml(reply)`."""
    return store_inbound(
        session,
        sid=reply.sid,
        phone=reply.phone,
        to=reply.to,
        body=reply.body,
        idempotency_token=reply.idempotency_token,
        opt_out_type=reply.opt_out_type,
        settings=settings,
        campaigns=campaigns,
        now=now,
    )


def twiml(reply: str | None) -> str:
    """The inbound webhook's answer: `reply` as one message, or an empty response (answer nothing)."""
    if not reply:
        return _EMPTY_TWIML
    response = MessagingResponse()
    response.message(reply)
    return str(response)


def webhook_number(raw: str | None, region: str, name: str, *, required: bool) -> str | None:
    """Normalize a webhook number to E.164; Twilio sends E.164 already, so anything else is suspect.

    Looser than `phones.parse_phone`: a reply from a number we could never text (e.g. toll-free)
    is still a reply worth storing. A required number that does not parse is a BadWebhook.
    """
    text = (raw or "").strip()
    if not text:
        if required:
            raise BadWebhook(f"missing {name}")
        return None
    if _NANP_E164.match(text):
        return text  # what phonenumbers would return for it, for a fraction of the CPU
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        if required:
            raise BadWebhook(f"{name} is not a phone number") from None
        return text[:20]
    if not phonenumbers.is_possible_number(number):
        if required:
            raise BadWebhook(f"{name} is not a possible phone number")
        return text[:20]
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
