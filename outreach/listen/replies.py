"""Inbound replies (DESIGN.md §8): store once, classify, act.

Order of classification, first match wins: opt-out, opt-in, help, the campaign's own keywords for
the enrollment the reply belongs to, then free text for a person. The reserved words and their
order live in outreach/keywords.py, which campaign validation asks too. Choices made here:

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
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import (
    Connection,
    DateTime,
    String,
    bindparam,
    case,
    func,
    insert,
    literal_column,
    null,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.orm import Session

from outreach.campaigns import PLACEHOLDER_SETTINGS, CampaignFile, ReplyRule, render
from outreach.config import Settings
from outreach.keywords import Normalized, normalize, reserved
from outreach.listen import consent
from outreach.phones import mask
from outreach.segments import count_segments
from outreach.store import sql
from outreach.store.models import (
    Activation,
    Enrollment,
    Handoff,
    InboundMessage,
    Message,
    MessageKind,
    MessageStatus,
    Patient,
    PhoneConsent,
)
from outreach.store.statuses import WENT_OUT

log = logging.getLogger(__name__)


class Kind(enum.StrEnum):
    """Stored in inbound_messages.classification."""

    opt_out = "opt_out"
    opt_in = "opt_in"
    help = "help"
    keyword = "keyword"
    free_text = "free_text"
    question = "question"


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
    reply: str | None = None  # answered in the webhook's own response when set (the web side's TwiML)


@dataclass(frozen=True)
class _Person:
    """What a reply needs of a patient (plain values: no ORM identity to keep in step)."""

    id: int
    first_name: str
    language: str


@dataclass(frozen=True)
class _Enrolled:
    id: int
    patient_id: int
    campaign_id: str
    language: str


@dataclass(frozen=True)
class _Context:
    phone: str
    patients: tuple[_Person, ...]
    enrollment: _Enrolled | None
    campaign: CampaignFile | None
    opted_out: bool

    @property
    def patient(self) -> _Person | None:
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


def store_inbound(
    session: Session,
    *,
    sid: str,
    phone: str,
    to: str,
    body: str,
    settings: Settings,
    campaigns: Mapping[str, CampaignFile],
    now: dt.datetime,
    idempotency_token: str | None = None,
) -> InboundResult:
    """Store and act on one reply in the caller's transaction; the caller commits, then dispatches
    `answer_ids`, and answers the webhook with `reply`.

    `phone` is the patient's number and `to` ours, both E.164 (the web side checked them); `sid`
    is the provider's id of the reply and, with `idempotency_token`, what makes a replay change
    nothing.
    """
    # Every statement here is built once at import (below) and runs on the session's connection:
    # a reply is a handful of round trips with no ORM unit of work and no per-call SQL building.
    conn = sql.connection(session)
    dialect = conn.dialect.name
    ctx = _context(conn, phone, campaigns)
    text = normalize(body)
    kind, detail, rule = _classify(text, ctx)
    patient = ctx.patient
    patient_id = patient.id if patient else None
    enrollment_id = ctx.enrollment.id if ctx.enrollment else None
    # One statement stores the reply or finds it already stored (same MessageSid or idempotency
    # token, earlier or racing): no SELECT first, no SAVEPOINT around the INSERT.
    inbound_id = conn.scalar(
        _STORE_INBOUND[dialect],
        {
            "provider_sid": sid,
            "idempotency_token": idempotency_token,
            "from_phone": phone,
            "to_phone": to,
            "body": body,
            "received_at": now,
            "patient_id": patient_id,
            "enrollment_id": enrollment_id,
            "classification": kind.value,
        },
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
        change = consent.record_opt_out(session, phone, by=detail, at=now)
        result.canceled = change.canceled
        if answer_here:
            result.reply = _builtin(STOP_TEXT, ctx.language, first_name, settings)
    else:
        if kind is Kind.opt_in:
            consent.record_opt_in(session, phone, by=detail, at=now)
            if answer_here:
                _answer(conn, result, sid, ctx, _builtin(START_TEXT, ctx.language, first_name, settings), now)
        elif kind is Kind.help:
            if answer_here:
                result.reply = _builtin(HELP_TEXT, ctx.language, first_name, settings)
        elif kind is Kind.keyword:
            assert rule is not None and ctx.campaign is not None and ctx.enrollment is not None
            result.outcome = rule.outcome
            unanswered = False
            if rule.answer and not ctx.opted_out:
                _lang, template = ctx.campaign.text_for(rule.answer, ctx.language)
                unset = _unset_setting(template, settings)
                if unset is not None:
                    # A setting the answer needs is missing: keep the reply, let a person answer.
                    log.error("answer to %s not queued: %s is not set, but the answer uses it", sid, unset)
                    unanswered = True
                else:
                    answer = render(template, first_name=first_name, settings=settings)
                    _answer(conn, result, sid, ctx, answer, now)
            if rule.handoff or unanswered:
                result.handoff_id = _handoff(conn, inbound_id, patient_id, enrollment_id, rule.outcome, now)
        else:
            result.handoff_id = _handoff(conn, inbound_id, patient_id, enrollment_id, kind, now)
        if ctx.enrollment is not None:
            result.activated = _activate(conn, ctx.enrollment, inbound_id, result.outcome, kind, now)

    if log.isEnabledFor(logging.INFO):
        log.info(
            "inbound %s from %s: %s%s",
            sid,
            mask(phone),
            kind,
            f" (enrollment {ctx.enrollment.id})" if ctx.enrollment else " (no enrollment)",
        )
    return result


_NOW = bindparam("now", type_=DateTime())
_PHONE = bindparam("phone", type_=String())

# The enrollment of the latest outreach message that went to the number: what a reply answers.
_LATEST = (
    select(Enrollment.id, Enrollment.patient_id, Enrollment.campaign_id, Enrollment.language)
    .join(Message, Message.enrollment_id == Enrollment.id)
    .where(
        Message.phone == _PHONE,
        Message.kind == MessageKind.outreach,
        sql.in_constants(Message.status, WENT_OUT),
    )
    .order_by(Message.went_out_at.desc().nulls_last(), Message.id.desc())
    .limit(1)
)
_LATEST_CTE = _LATEST.cte("latest")
# Everything a reply is classified with, in one round trip: rows tagged "e" (the enrollment it
# answers), "p" (the patients on the number, and the enrollment's patient) and "o" (the number is
# opted out).
_CONTEXT = union_all(
    select(
        literal_column("'e'"),
        _LATEST_CTE.c.id,
        _LATEST_CTE.c.patient_id,
        _LATEST_CTE.c.campaign_id,
        _LATEST_CTE.c.language,
        null(),
    ),
    select(
        literal_column("'p'"), Patient.id, null(), Patient.first_name, Patient.language, Patient.phone
    ).where(or_(Patient.phone == _PHONE, Patient.id.in_(select(_LATEST_CTE.c.patient_id)))),
    select(literal_column("'o'"), null(), null(), null(), null(), null())
    .select_from(PhoneConsent)
    .where(PhoneConsent.phone == _PHONE, consent.opted_out()),
)
_STORE_INBOUND = sql.insert_or_skip(InboundMessage)
_QUEUE_ANSWER = sql.insert_or_skip(Message)  # the (enrollment, step) key: once per reply
_STORE_ACTIVATION = sql.insert_or_skip(Activation, index_elements=["patient_id", "campaign_id"])
_OPEN_HANDOFF = insert(Handoff).returning(Handoff.id)
_ENROLLMENT = Enrollment.id == bindparam("enrollment_id")
_MARK_REPLIED = (
    update(Enrollment).where(_ENROLLMENT).values(replied_at=func.coalesce(Enrollment.replied_at, _NOW))
)
# Latest keyword reply wins; a reply older than the recorded outcome (out of order) does not.
_NEWER_OUTCOME = or_(Enrollment.outcome_at.is_(None), Enrollment.outcome_at <= _NOW)
_MARK_REPLIED_WITH_OUTCOME = _MARK_REPLIED.values(
    outcome=case((_NEWER_OUTCOME, bindparam("new_outcome", type_=String())), else_=Enrollment.outcome),
    outcome_at=case((_NEWER_OUTCOME, _NOW), else_=Enrollment.outcome_at),
)


def latest_enrollment_id(session: Session, phone: str) -> int | None:
    """The enrollment of the latest outreach message that went to `phone`: what a reply answers."""
    row = sql.connection(session).execute(_LATEST, {"phone": phone}).first()
    return int(row.id) if row is not None else None


def _context(conn: Connection, phone: str, campaigns: Mapping[str, CampaignFile]) -> _Context:
    enrollment: _Enrolled | None = None
    found: list[tuple[bool, _Person]] = []
    opted_out = False
    for tag, id_, patient_id, text_a, text_b, text_c in conn.execute(_CONTEXT, {"phone": phone}):
        if tag == "e":
            enrollment = _Enrolled(id_, patient_id, text_a, text_b)
        elif tag == "p":
            found.append((text_c != phone, _Person(id_, text_a, text_b)))
        else:
            opted_out = True
    # The number's own patients by id, then the enrollment's patient if it is not one of them.
    patients = tuple(person for _other, person in sorted(found, key=lambda f: (f[0], f[1].id)))
    campaign = campaigns.get(enrollment.campaign_id) if enrollment is not None else None
    return _Context(phone, patients, enrollment, campaign, opted_out)


def _classify(text: Normalized, ctx: _Context) -> tuple[Kind, str, ReplyRule | None]:
    """The family of a reply, with the keyword or phrase that decided it."""
    found = reserved(text, opted_out=ctx.opted_out)
    if found is not None:
        return Kind(found.family), found.word, None
    if ctx.campaign is not None:
        rule = match_rule(text, ctx.campaign.replies)
        if rule is not None:
            return Kind.keyword, rule.outcome, rule
    return (Kind.question if text.question else Kind.free_text), "", None


_FORMATTER = string.Formatter()


def _unset_setting(template: str, settings: Settings) -> str | None:
    """The variable of a setting `template` needs that is unset, else None.

    Asked before rendering, so a reply never depends on render's UserError (a message for a person
    at a terminal) to find out. A placeholder that reads a setting is named after the Settings field
    (campaigns.PLACEHOLDER_SETTINGS)."""
    for _literal, name, _spec, _conversion in _FORMATTER.parse(template):
        if name in PLACEHOLDER_SETTINGS and getattr(settings, name) is None:
            return PLACEHOLDER_SETTINGS[name]
    return None


def _builtin(texts: Mapping[str, str], language: str, first_name: str, settings: Settings) -> str:
    return render(texts.get(language, texts["en"]), first_name=first_name, settings=settings)


def _answer(
    conn: Connection, result: InboundResult, sid: str, ctx: _Context, body: str, now: dt.datetime
) -> None:
    """Queue an answer in the outbox; `answer:{MessageSid}` makes it once per inbound message.

    The reply's own row was stored by this transaction (a replayed MessageSid never gets here), so
    no earlier answer to it can exist; the outbox's (enrollment, step) key refuses one all the same.
    """
    answer_id = conn.scalar(
        _QUEUE_ANSWER[conn.dialect.name],
        {
            "enrollment_id": ctx.enrollment.id if ctx.enrollment else None,
            "step_id": f"answer:{sid}",
            "kind": MessageKind.answer.value,
            "phone": ctx.phone,
            "body": body,
            "segments": count_segments(body).segments,
            "status": MessageStatus.queued.value,
            "send_at": now,
            "planned_at": now,
            "queued_at": now,
            "updated_at": now,
        },
    )
    if answer_id is not None:
        result.answer_ids.append(answer_id)


def _handoff(
    conn: Connection,
    inbound_id: int,
    patient_id: int | None,
    enrollment_id: int | None,
    reason: str,
    now: dt.datetime,
) -> int:
    handoff_id = conn.scalar(
        _OPEN_HANDOFF,
        {
            "inbound_id": inbound_id,
            "patient_id": patient_id,
            "enrollment_id": enrollment_id,
            "reason": reason[:64],
            "status": "open",
            "opened_at": now,
        },
    )
    assert handoff_id is not None
    return int(handoff_id)


def _activate(
    conn: Connection,
    enrollment: _Enrolled,
    inbound_id: int,
    outcome: str | None,
    kind: Kind,
    now: dt.datetime,
) -> bool:
    """Mark the enrollment replied (and record a keyword's outcome) in one UPDATE; the first reply
    activates it, atomically (ON CONFLICT DO NOTHING)."""
    if outcome is None:
        conn.execute(_MARK_REPLIED, {"enrollment_id": enrollment.id, "now": now})
    else:
        conn.execute(
            _MARK_REPLIED_WITH_OUTCOME, {"enrollment_id": enrollment.id, "now": now, "new_outcome": outcome}
        )
    activation_id = conn.scalar(
        _STORE_ACTIVATION[conn.dialect.name],
        {
            "patient_id": enrollment.patient_id,
            "campaign_id": enrollment.campaign_id,
            "enrollment_id": enrollment.id,
            "inbound_id": inbound_id,
            "activated_at": now,
            "how": (outcome or kind)[:64],
        },
    )
    return activation_id is not None
