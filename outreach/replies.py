"""Inbound replies (DESIGN.md §8): store once, classify, act.

Order of classification, first match wins: opt-out, opt-in, help, the campaign's own keywords for
the enrollment the reply belongs to, then free text for a person. Choices made here:

- Opt-out is honored for any reasonable request (FCC 2024): a reserved keyword as the FIRST word,
  or one of the explicit English/Spanish phrases anywhere, or a short whole-message request
  ("please stop", "para"). STOP in the middle of a sentence ("I can't stop by today") only counts
  inside an explicit phrase, so ordinary replies do not silence a patient by accident.
- STOP and HELP are answered in the webhook's own response (TwiML). CTIA requires a HELP answer
  whether or not the number is opted in, and the outbox's send-time consent check would drop it
  for an opted-out number; the STOP confirmation likewise goes to a number that just opted out.
  With Twilio Advanced Opt-Out configured, Twilio answers both itself and we stay silent.
  START and campaign answers go through the outbox (kind `answer`) like any other text.
- An opt-out is engagement, but not the kind a care team counts: it neither activates the
  enrollment nor sets `replied_at`. Every other reply does both (activation once, first reply wins).
- A campaign outcome follows the patient's LATEST keyword reply (YES, then CALL -> callback):
  the care team acts on the current intent; the activation keeps the first engagement.
- A replayed webhook (same MessageSid or I-Twilio-Idempotency-Token) changes nothing and is
  answered with an empty response.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import phonenumbers
from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.orm import Session
from twilio.twiml.messaging_response import MessagingResponse

from outreach import consent, db
from outreach.campaigns import CampaignFile, ReplyRule, render
from outreach.config import Settings
from outreach.errors import UserError
from outreach.models import (
    Activation,
    Enrollment,
    Handoff,
    InboundMessage,
    Message,
    MessageKind,
    MessageStatus,
    Patient,
)
from outreach.phones import mask
from outreach.segments import count_segments

log = logging.getLogger(__name__)


class Kind(enum.StrEnum):
    """Stored in inbound_messages.classification."""

    opt_out = "opt_out"
    opt_in = "opt_in"
    help = "help"
    keyword = "keyword"
    free_text = "free_text"
    question = "question"


OPT_OUT_WORDS = frozenset(
    {"stop", "stopall", "unsubscribe", "cancel", "end", "quit", "revoke", "optout", "basta", "parar", "alto"}
)
OPT_IN_WORDS = frozenset({"start", "unstop"})
OPT_IN_IF_OPTED_OUT = frozenset({"yes", "si"})  # accent-folded: SÍ is si
HELP_WORDS = frozenset({"help", "info", "ayuda"})

# Explicit requests matched anywhere in the normalized text (accent-folded, apostrophes dropped).
OPT_OUT_PHRASES = (
    # English
    "stop texting",
    "stop sending",
    "stop messaging",
    "stop contacting",
    "stop the texts",
    "stop the messages",
    "stop these texts",
    "stop these messages",
    "no more texts",
    "no more text",
    "no more texting",
    "no more messages",
    "no more msgs",
    "dont text me",
    "do not text me",
    "dont message me",
    "do not message me",
    "dont contact me",
    "do not contact me",
    "dont send me",
    "do not send me",
    "remove me",
    "take me off",
    "unsubscribe",
    "opt out",
    "opt me out",
    # Spanish
    "para de enviar",
    "pare de enviar",
    "paren de enviar",
    "deja de enviar",
    "deje de enviar",
    "dejen de enviar",
    "deja de mandar",
    "dejen de mandar",
    "dejen de mandarme",
    "deja de escribirme",
    "deje de escribirme",
    "dejen de escribirme",
    "no mas mensajes",
    "no mas textos",
    "no me envien mas",
    "no me envies mas",
    "no me manden mas",
    "no me mandes mas",
    "no me escriban mas",
    "no me escribas mas",
    "no quiero mas mensajes",
    "ya no quiero mensajes",
    "no me contacten",
    "borrame",
    "eliminame",
    "sacame de la lista",
    "dar de baja",
    "darme de baja",
    "dame de baja",
    "denme de baja",
    "cancelar suscripcion",
)
# Short requests that count only as the whole message ("please stop by" is not an opt-out).
OPT_OUT_WHOLE = frozenset(
    {
        "please stop",
        "stop please",
        "stop it",
        "stop now",
        "para",
        "pare",
        "paren",
        "ya basta",
        "cancelar",
        "baja",
        "no mas",
        "por favor para",
        "por favor pare",
        "por favor paren",
    }
)

# Built-in answers (placeholders as in campaign files); English is the fallback language.
STOP_TEXT = {
    "en": "{clinic_name}: You are unsubscribed and will get no more texts from us. "
    "Reply START to resubscribe. Questions? Call {clinic_phone}.",
    "es": "{clinic_name}: Se ha dado de baja y no recibirá más mensajes. "
    "Responda START para volver a suscribirse. ¿Preguntas? Llame al {clinic_phone}.",
}
HELP_TEXT = {
    "en": "{clinic_name} patient reminders. For help call {clinic_phone}. "
    "Msg&data rates may apply. Reply STOP to opt out.",
    "es": "{clinic_name}: recordatorios para pacientes. Para ayuda llame al {clinic_phone}. "
    "Pueden aplicarse tarifas de mensajes y datos. Responda STOP para no recibir más mensajes.",
}
START_TEXT = {
    "en": "{clinic_name}: You are subscribed again to patient reminders. "
    "Reply HELP for help, STOP to opt out.",
    "es": "{clinic_name}: Se ha suscrito de nuevo a los recordatorios para pacientes. "
    "Responda AYUDA para ayuda, STOP para darse de baja.",
}

# Outreach rows that actually went (or may have gone) out: a reply belongs to the latest of them.
_SENT_LIKE = (
    MessageStatus.sending,
    MessageStatus.unknown,
    MessageStatus.sent,
    MessageStatus.delivered,
    MessageStatus.undelivered,
)
_WORD = re.compile(r"[^\W_]+")


class InboundError(ValueError):
    """A webhook whose fields cannot be used (the web layer answers 400 with this one line)."""


@dataclass(frozen=True)
class Normalized:
    text: str  # accent-folded, case-folded words joined by single spaces
    words: tuple[str, ...]
    question: bool  # the raw text asked something (? or ¿)

    @property
    def first(self) -> str:
        return self.words[0] if self.words else ""


def normalize(body: str) -> Normalized:
    """Trim, case-fold, fold accents, drop punctuation, symbols and emoji; contractions lose their
    apostrophe ("don't" -> "dont") so phrases match however the phone typed it."""
    folded = "".join(c for c in unicodedata.normalize("NFKD", body) if not unicodedata.combining(c))
    folded = folded.casefold().replace("'", "").replace("\u2019", "")
    words = tuple(_WORD.findall(folded))
    return Normalized(text=" ".join(words), words=words, question="?" in body or "¿" in body)


def opt_out_request(text: Normalized) -> str | None:
    """The keyword or phrase that makes this an opt-out request, else None."""
    if text.first in OPT_OUT_WORDS:
        return text.first.upper()
    if text.text in OPT_OUT_WHOLE:
        return text.text
    padded = f" {text.text} "
    for phrase in OPT_OUT_PHRASES:
        if f" {phrase} " in padded:
            return phrase
    return None


def match_rule(text: Normalized, rules: Sequence[ReplyRule]) -> ReplyRule | None:
    """The first rule with a keyword the reply starts with ("Sí!", "SI 👍", "yes please" -> YES/SI/SÍ)."""
    for rule in rules:
        for keyword in rule.keywords:
            words = normalize(keyword).words
            if words and text.words[: len(words)] == words:
                return rule
    return None


@dataclass
class InboundResult:
    duplicate: bool
    inbound_id: int | None = None
    classification: str | None = None
    phone: str | None = None
    patient_ids: tuple[int, ...] = ()
    enrollment_id: int | None = None
    outcome: str | None = None
    canceled: int = 0
    handoff_id: int | None = None
    activated: bool = False
    answer_ids: list[int] = field(default_factory=list)  # outbox rows to dispatch after commit
    reply: str | None = None  # answered in the webhook response (TwiML) when set

    def twiml(self) -> str:
        response = MessagingResponse()
        if self.reply:
            response.message(self.reply)
        return str(response)


@dataclass(frozen=True)
class _Context:
    phone: str
    patients: tuple[Patient, ...]
    enrollment: Enrollment | None
    campaign: CampaignFile | None
    opted_out: bool

    @property
    def patient(self) -> Patient | None:
        """The reply's patient: the enrollment's, else the only one on the number (shared: unknown)."""
        if self.enrollment is not None:
            return next((p for p in self.patients if p.id == self.enrollment.patient_id), None)
        return self.patients[0] if len(self.patients) == 1 else None

    @property
    def language(self) -> str:
        if self.enrollment is not None:
            return self.enrollment.language
        patient = self.patient or (self.patients[0] if self.patients else None)
        return patient.language if patient is not None else "en"


def handle_inbound(
    session: Session,
    form: Mapping[str, str],
    *,
    settings: Settings,
    campaigns: Mapping[str, CampaignFile],
    now: dt.datetime,
    idempotency_token: str | None = None,
) -> InboundResult:
    """Store and act on one inbound webhook (Twilio's form fields) in the caller's transaction.

    Raises InboundError for unusable fields. The caller commits, then dispatches `answer_ids`.
    """
    sid = (form.get("MessageSid") or form.get("SmsMessageSid") or "").strip()
    if not sid:
        raise InboundError("missing MessageSid")
    if len(sid) > 64:
        raise InboundError("MessageSid is longer than 64 characters")
    if idempotency_token is not None and len(idempotency_token) > 200:
        raise InboundError("I-Twilio-Idempotency-Token is longer than 200 characters")
    phone = webhook_number(form.get("From"), settings.default_region, "From", required=True)
    assert phone is not None
    to = webhook_number(form.get("To"), settings.default_region, "To", required=False) or ""
    body = form.get("Body") or ""

    ctx = _context(session, phone, campaigns)
    text = normalize(body)
    kind, detail, rule = _classify(text, ctx)
    patient = ctx.patient
    patient_id = patient.id if patient else None
    enrollment_id = ctx.enrollment.id if ctx.enrollment else None
    # One statement stores the reply or finds it already stored (same MessageSid or idempotency
    # token, earlier or racing): no SELECT first, no SAVEPOINT around the INSERT.
    inbound_id = session.scalar(
        db.insert_for(session, InboundMessage)
        .values(
            provider_sid=sid,
            idempotency_token=idempotency_token,
            from_phone=phone,
            to_phone=to,
            body=body,
            received_at=now,
            patient_id=patient_id,
            enrollment_id=enrollment_id,
            classification=kind,
        )
        .on_conflict_do_nothing()
        .returning(InboundMessage.id)
    )
    if inbound_id is None:
        return InboundResult(duplicate=True)

    result = InboundResult(
        duplicate=False,
        inbound_id=inbound_id,
        classification=kind,
        phone=phone,
        patient_ids=tuple(p.id for p in ctx.patients),
        enrollment_id=enrollment_id,
    )
    first_name = patient.first_name if patient else ""
    answer_here = not settings.twilio_advanced_opt_out

    if kind is Kind.opt_out:
        result.canceled = consent.record_opt_out(session, phone, by=detail, at=now).canceled
        if answer_here:
            result.reply = _builtin(STOP_TEXT, ctx.language, first_name, settings)
    else:
        if kind is Kind.opt_in:
            consent.record_opt_in(session, phone, by=detail, at=now)
            if answer_here:
                _answer(
                    session, result, sid, ctx, _builtin(START_TEXT, ctx.language, first_name, settings), now
                )
        elif kind is Kind.help:
            if answer_here:
                result.reply = _builtin(HELP_TEXT, ctx.language, first_name, settings)
        elif kind is Kind.keyword:
            assert rule is not None and ctx.campaign is not None and ctx.enrollment is not None
            _record_outcome(session, ctx.enrollment.id, rule.outcome, now)
            result.outcome = rule.outcome
            unanswered = False
            if rule.answer and not ctx.opted_out:
                _lang, template = ctx.campaign.text_for(rule.answer, ctx.language)
                try:
                    answer = render(template, first_name=first_name, settings=settings)
                except UserError as exc:
                    # A setting the answer needs is missing: keep the reply, let a person answer.
                    log.error("answer to %s not queued: %s", sid, exc)
                    unanswered = True
                else:
                    _answer(session, result, sid, ctx, answer, now)
            if rule.handoff or unanswered:
                result.handoff_id = _handoff(
                    session, inbound_id, patient_id, enrollment_id, rule.outcome, now
                )
        else:
            result.handoff_id = _handoff(session, inbound_id, patient_id, enrollment_id, kind, now)
        if ctx.enrollment is not None:
            result.activated = _activate(session, ctx.enrollment, inbound_id, result.outcome or kind, now)

    log.info(
        "inbound %s from %s: %s%s",
        sid,
        mask(phone),
        kind,
        f" (enrollment {ctx.enrollment.id})" if ctx.enrollment else " (no enrollment)",
    )
    return result


def latest_enrollment_id(session: Session, phone: str) -> int | None:
    """The enrollment of the latest outreach message that went to `phone`: what a reply answers."""
    return session.scalar(
        select(Message.enrollment_id)
        .where(
            Message.phone == phone,
            Message.kind == MessageKind.outreach,
            Message.enrollment_id.is_not(None),
            Message.status.in_(_SENT_LIKE),
        )
        .order_by(func.coalesce(Message.sent_at, Message.sending_at).desc().nulls_last(), Message.id.desc())
        .limit(1)
    )


def _context(session: Session, phone: str, campaigns: Mapping[str, CampaignFile]) -> _Context:
    patients = tuple(session.scalars(select(Patient).where(Patient.phone == phone).order_by(Patient.id)))
    enrollment_id = latest_enrollment_id(session, phone)
    enrollment = session.get(Enrollment, enrollment_id) if enrollment_id is not None else None
    campaign = campaigns.get(enrollment.campaign_id) if enrollment is not None else None
    if enrollment is not None and not any(p.id == enrollment.patient_id for p in patients):
        patients += tuple(session.scalars(select(Patient).where(Patient.id == enrollment.patient_id)))
    return _Context(phone, patients, enrollment, campaign, consent.is_opted_out(session, phone))


def _classify(text: Normalized, ctx: _Context) -> tuple[Kind, str, ReplyRule | None]:
    """The family of a reply, with the keyword or phrase that decided it."""
    stop = opt_out_request(text)
    if stop is not None:
        return Kind.opt_out, stop, None
    if text.first in OPT_IN_WORDS or (ctx.opted_out and text.first in OPT_IN_IF_OPTED_OUT):
        return Kind.opt_in, text.first.upper(), None
    if text.first in HELP_WORDS:
        return Kind.help, text.first.upper(), None
    if ctx.campaign is not None:
        rule = match_rule(text, ctx.campaign.replies)
        if rule is not None:
            return Kind.keyword, rule.outcome, rule
    return (Kind.question if text.question else Kind.free_text), "", None


def _builtin(texts: Mapping[str, str], language: str, first_name: str, settings: Settings) -> str:
    return render(texts.get(language, texts["en"]), first_name=first_name, settings=settings)


def _answer(
    session: Session, result: InboundResult, sid: str, ctx: _Context, body: str, now: dt.datetime
) -> None:
    """Queue an answer in the outbox; `answer:{MessageSid}` makes it once per inbound message."""
    step_id = f"answer:{sid}"
    exists = session.scalar(select(Message.id).where(Message.step_id == step_id, Message.phone == ctx.phone))
    if exists is not None:
        return
    message = Message(
        enrollment_id=ctx.enrollment.id if ctx.enrollment else None,
        step_id=step_id,
        kind=MessageKind.answer,
        phone=ctx.phone,
        body=body,
        segments=count_segments(body).segments,
        status=MessageStatus.queued,
        send_at=now,
        planned_at=now,
        queued_at=now,
        updated_at=now,
    )
    session.add(message)
    session.flush()
    result.answer_ids.append(message.id)


def _record_outcome(session: Session, enrollment_id: int, outcome: str, now: dt.datetime) -> None:
    """Latest keyword reply wins; a reply older than the recorded outcome (out of order) does not."""
    session.execute(
        update(Enrollment)
        .where(
            Enrollment.id == enrollment_id,
            or_(Enrollment.outcome_at.is_(None), Enrollment.outcome_at <= now),
        )
        .values(outcome=outcome, outcome_at=now)
        .execution_options(synchronize_session=False)
    )


def _handoff(
    session: Session,
    inbound_id: int,
    patient_id: int | None,
    enrollment_id: int | None,
    reason: str,
    now: dt.datetime,
) -> int:
    return session.execute(
        insert(Handoff)
        .values(
            inbound_id=inbound_id,
            patient_id=patient_id,
            enrollment_id=enrollment_id,
            reason=reason[:64],
            status="open",
            opened_at=now,
        )
        .returning(Handoff.id)
    ).scalar_one()


def _activate(session: Session, enrollment: Enrollment, inbound_id: int, how: str, now: dt.datetime) -> bool:
    """First reply wins, atomically (ON CONFLICT DO NOTHING); also marks the enrollment replied."""
    session.execute(
        update(Enrollment)
        .where(Enrollment.id == enrollment.id, Enrollment.replied_at.is_(None))
        .values(replied_at=now)
        .execution_options(synchronize_session=False)
    )
    stmt = (
        db.insert_for(session, Activation)
        .values(
            patient_id=enrollment.patient_id,
            campaign_id=enrollment.campaign_id,
            enrollment_id=enrollment.id,
            inbound_id=inbound_id,
            activated_at=now,
            how=how[:64],
        )
        .on_conflict_do_nothing(index_elements=["patient_id", "campaign_id"])
        .returning(Activation.id)
    )
    return session.scalar(stmt) is not None


def webhook_number(raw: str | None, region: str, name: str, *, required: bool) -> str | None:
    """Normalize a webhook number to E.164; Twilio sends E.164 already, so anything else is suspect.

    Looser than `phones.parse_phone`: a reply from a number we could never text (e.g. toll-free)
    is still a reply worth storing.
    """
    text = (raw or "").strip()
    if not text:
        if required:
            raise InboundError(f"missing {name}")
        return None
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        if required:
            raise InboundError(f"{name} is not a phone number") from None
        return text[:20]
    if not phonenumbers.is_possible_number(number):
        if required:
            raise InboundError(f"{name} is not a possible phone number")
        return text[:20]
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
