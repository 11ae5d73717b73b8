"""Staff replies: a person's text to a patient, through the outbox as kind `staff` (DESIGN.md §12).

The same workers claim and send it through the same claim, consent, rate limit and provider path as
any text (outreach/send/batch.py). What differs, and why:

- Opt-out is refused here, before anything is stored, with the reason for the page; the worker
  checks again at claim time (a STOP can arrive in between).
- The frequency cap does not apply: the patient wrote first and a person is answering.
- The law's hours do: 08:00-21:00 patient-local (20:00 in FL, OK, MD), every day. Outside them the
  row is `planned` for the next morning, the scheduler queues it then, and the page says so.

Canned replies are the campaign's own reply answers (already validated, in the patient's language)
and a few shared ones below; both use only the whitelisted placeholders (campaigns/texts.py).
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from outreach.campaigns import CampaignFile
from outreach.campaigns.texts import render, template_problems
from outreach.config import Settings
from outreach.errors import UserError
from outreach.listen import consent
from outreach.phones import PhoneError, mask, parse_phone
from outreach.plan.pacing import recipient
from outreach.plan.windows import LAW_HOURS, next_opening
from outreach.segments import count_segments
from outreach.store.models import (
    Conversation,
    Enrollment,
    Message,
    MessageKind,
    MessageStatus,
    Patient,
    PhoneConsent,
)
from outreach.team.audit import audit

MAX_CHARACTERS = 1600  # Twilio's limit for one message body

SHARED: dict[str, dict[str, str]] = {
    "call-us": {
        "en": "Hi {first_name}, this is {clinic_name}. Please call us at {clinic_phone} when you can.",
        "es": "Hola {first_name}, le habla {clinic_name}. Llámenos al {clinic_phone} cuando pueda.",
    },
    "will-call": {
        "en": "Thanks {first_name}, someone from {clinic_name} will call you soon.",
        "es": "Gracias {first_name}, alguien de {clinic_name} le llamará pronto.",
    },
    "hours": {
        "en": "{clinic_name} is open Monday to Friday, 8am to 5pm. Call {clinic_phone} to book.",
        "es": "{clinic_name} abre de lunes a viernes, de 8 a 17 h. Llame al {clinic_phone} para una cita.",
    },
}


class Blocked(UserError):
    """A reply that must not go out; the message says why, for the page."""


@dataclass(frozen=True)
class Queued:
    message_id: int
    status: str  # queued (dispatch it now) or planned (the morning)
    send_at: dt.datetime
    segments: int


@dataclass(frozen=True)
class Patientish:
    """What the page and the window need about whoever is on the number."""

    first_name: str | None
    language: str
    timezone: str | None
    phone_zones: str | None
    postal_code: str | None


def who(session: Session, conversation: Conversation, settings: Settings) -> Patientish:
    patient = session.get(Patient, conversation.patient_id) if conversation.patient_id else None
    if patient is not None:
        return Patientish(
            patient.first_name, patient.language, patient.timezone, patient.phone_zones, patient.postal_code
        )
    try:
        zones = parse_phone(conversation.phone, settings.default_region).zones_text
    except PhoneError:
        zones = None
    return Patientish(None, "en", None, zones, None)


def opt_out_reason(session: Session, phone: str) -> str | None:
    """Why texts to `phone` are refused, in words for the page; None when it may be texted."""
    if not consent.is_opted_out(session, phone):
        return None
    row = session.get(PhoneConsent, phone)
    when = f" on {row.opted_out_at:%Y-%m-%d}" if row and row.opted_out_at else ""
    by = f" ({row.opted_out_by})" if row and row.opted_out_by else ""
    return (
        f"This number opted out{when}{by}. Texts to it are blocked for every campaign and for staff "
        "replies until the patient texts START; call the patient instead."
    )


def next_send_time(person: Patientish, phone: str, settings: Settings, now: dt.datetime) -> dt.datetime:
    """`now` when it is between 08:00 and 21:00 (20:00 strict) for the patient, else the next 08:00."""
    them = recipient(
        phone, person.timezone, person.phone_zones, person.postal_code, settings.default_timezone
    )
    return next_opening(now, window=LAW_HOURS, zones=them.zones, strict=them.strict)


def send_reply(
    session: Session,
    conversation: Conversation,
    body: str,
    *,
    author_id: int,
    author: str,
    settings: Settings,
    now: dt.datetime,
) -> Queued:
    """Put a staff reply in the outbox (queued now, or planned for the morning); Blocked when the
    number opted out, UserError for an empty or too long text. Audited without the text."""
    body = body.strip()
    if not body:
        raise UserError("write a reply first")
    if len(body) > MAX_CHARACTERS:
        raise UserError(f"a text holds at most {MAX_CHARACTERS} characters (this one has {len(body)})")
    reason = opt_out_reason(session, conversation.phone)
    if reason is not None:  # the caller audits the attempt: this transaction is rolled back
        raise Blocked(reason)
    person = who(session, conversation, settings)
    send_at = next_send_time(person, conversation.phone, settings, now)
    status = MessageStatus.queued if send_at <= now else MessageStatus.planned
    message = Message(
        enrollment_id=_enrollment(session, conversation),
        step_id=f"staff-{secrets.token_hex(8)}",
        kind=MessageKind.staff,
        phone=conversation.phone,
        body=body,
        segments=count_segments(body).segments,
        status=status,
        send_at=send_at,
        planned_at=now,
        queued_at=now if status == MessageStatus.queued else None,
        author_id=author_id,
        attempts=0,
    )
    session.add(message)
    session.flush()
    subject = f"conversation {conversation.public_id}"
    audit(
        session,
        author,
        "message_send",
        subject,
        now,
        f"message {message.id} to {mask(conversation.phone)}, {status}",
    )
    return Queued(message.id, status, send_at, message.segments)


def _enrollment(session: Session, conversation: Conversation) -> int | None:
    """The patient's latest enrollment in the conversation's campaign: the thread's context."""
    if conversation.patient_id is None:
        return None
    query = select(Enrollment.id).where(Enrollment.patient_id == conversation.patient_id)
    if conversation.campaign_id:
        query = query.where(Enrollment.campaign_id == conversation.campaign_id)
    return session.scalar(query.order_by(Enrollment.id.desc()).limit(1))


@dataclass(frozen=True)
class Canned:
    key: str  # "shared:call-us" or "<campaign>:<outcome>"
    title: str
    template: str


def canned_replies(campaign: CampaignFile | None, language: str) -> list[Canned]:
    """The campaign's reply answers, then the shared replies, in the patient's language (else the
    campaign's default, else English)."""
    found: list[Canned] = []
    if campaign is not None:
        for rule in campaign.replies:
            if rule.answer:
                text = rule.answer.get(language) or rule.answer.get(campaign.default_language)
                if text:
                    found.append(
                        Canned(f"{campaign.id}:{rule.outcome}", rule.outcome.replace("_", " "), text)
                    )
    for key, texts in SHARED.items():
        found.append(Canned(f"shared:{key}", key.replace("-", " "), texts.get(language) or texts["en"]))
    return found


def render_canned(canned: Canned, first_name: str | None, settings: Settings) -> str:
    problems = template_problems(canned.template)
    if problems:
        raise UserError(problems[0])
    return render(canned.template, first_name=first_name or "", settings=settings)


def pick(cans: list[Canned], key: str) -> Canned | None:
    return next((c for c in cans if c.key == key), None)


def campaign_of(campaigns: Mapping[str, CampaignFile], conversation: Conversation) -> CampaignFile | None:
    return campaigns.get(conversation.campaign_id) if conversation.campaign_id else None
