"""Inbound replies (DESIGN.md §8): store once, then act on what the reply means.

What a reply belongs to is read in outreach/listen/context.py and what it means decided in
outreach/listen/classify.py; here it is stored and acted on, one short action per kind (`_ACT`).
The webhook path serves about a thousand replies a second, so a reply costs one SELECT for its
context, one INSERT that stores it or finds it a replay, and then only the statements its kind
needs. Choices made here:

- STOP and HELP are answered in the webhook's own response (TwiML). CTIA requires a HELP answer
  whether or not the number is opted in, and the outbox's send-time consent check would drop it
  for an opted-out number; the STOP confirmation likewise goes to a number that just opted out.
  START and campaign answers go through the outbox (kind `answer`) like any other text. With Twilio
  Advanced Opt-Out (OUTREACH_TWILIO_ADVANCED_OPT_OUT), Twilio confirms STOP, START and HELP itself
  and we send no confirmation of our own; campaign answers are still ours.
- An opt-out is engagement, but not the kind a care team counts: it neither activates the
  enrollment nor sets `replied_at`. Every other reply sets `replied_at` (engagement); only a reply
  whose campaign rule activates (the default; a decline says `activates: false`) is an activation,
  once per patient and campaign, the first positive action winning (a tracked-link click is the
  other kind: outreach/outcomes/links.py).
- A campaign outcome follows the patient's LATEST keyword reply (YES, then CALL -> callback):
  the care team acts on the current intent; the activation keeps the first engagement.
- A replayed webhook (same MessageSid or I-Twilio-Idempotency-Token) changes nothing and is
  answered with an empty response.
"""

from __future__ import annotations

import datetime as dt
import logging
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sqlalchemy import (
    Connection,
    DateTime,
    String,
    bindparam,
    case,
    func,
    insert,
    or_,
    update,
)
from sqlalchemy.orm import Session

from outreach.campaigns import PLACEHOLDER_SETTINGS, CampaignFile, render
from outreach.config import Settings
from outreach.keywords import normalize
from outreach.listen import consent
from outreach.listen.classify import Kind, Meaning, classify
from outreach.listen.context import Enrolled, ReplyContext, load_context
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
)

log = logging.getLogger(__name__)


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
    opt_out_type: str | None = None,
) -> InboundResult:
    """Store and act on one reply in the caller's transaction; the caller commits, then dispatches
    `answer_ids`, and answers the webhook with `reply`.

    `phone` is the patient's number and `to` ours, both E.164 (the web side checked them); `sid`
    is the provider's id of the reply and, with `idempotency_token`, what makes a replay change
    nothing; `opt_out_type` is Twilio Advanced Opt-Out's STOP, START or HELP (classify.py).
    """
    # Every statement here is built once at import (below) and runs on the session's connection:
    # a reply is a handful of round trips with no ORM unit of work and no per-call SQL building.
    conn = sql.connection(session)
    ctx = load_context(conn, phone, campaigns)
    rules = ctx.campaign.replies if ctx.campaign is not None else ()
    meaning = classify(normalize(body), opted_out=ctx.opted_out, rules=rules, opt_out_type=opt_out_type)
    inbound_id = _store(conn, ctx, meaning.kind, sid, to, body, now, idempotency_token)
    if inbound_id is None:
        return InboundResult(duplicate=True)
    result = InboundResult(
        duplicate=False,
        inbound_id=inbound_id,
        classification=meaning.kind,
        phone=phone,
        patient_ids=tuple(p.id for p in ctx.patients),
        enrollment_id=ctx.enrollment.id if ctx.enrollment else None,
    )
    reply = _Reply(session, conn, ctx, meaning, sid, inbound_id, settings, now, result)
    _ACT[meaning.kind](reply)
    if meaning.kind.engages and ctx.enrollment is not None:
        activates = meaning.rule is not None and meaning.rule.activates
        result.activated = _activate(
            conn, ctx.enrollment, inbound_id, result.outcome, meaning.kind, now, activates=activates
        )
    if log.isEnabledFor(logging.INFO):
        about = f" (enrollment {ctx.enrollment.id})" if ctx.enrollment else " (no enrollment)"
        log.info("inbound %s from %s: %s%s", sid, mask(phone), meaning.kind, about)
    return result


@dataclass(frozen=True)
class _Reply:
    """One stored reply being acted on: what every action reads, and the result it fills in."""

    session: Session
    conn: Connection
    ctx: ReplyContext
    meaning: Meaning
    sid: str
    inbound_id: int
    settings: Settings
    now: dt.datetime
    result: InboundResult

    @property
    def answer_here(self) -> bool:
        """With Twilio Advanced Opt-Out, Twilio answers STOP, START and HELP itself."""
        return not self.settings.twilio_advanced_opt_out

    @property
    def first_name(self) -> str:
        return self.ctx.patient.first_name if self.ctx.patient else ""

    def builtin(self, texts: Mapping[str, str]) -> str:
        """One of our own answers, in the patient's language (English when it has none)."""
        template = texts.get(self.ctx.language, texts["en"])
        return render(template, first_name=self.first_name, settings=self.settings)


def _opt_out(reply: _Reply) -> None:
    """Record the opt-out (cancelling what waits for the number) and confirm it in the response:
    the outbox would not send to a number that just opted out."""
    change = consent.record_opt_out(reply.session, reply.ctx.phone, by=reply.meaning.detail, at=reply.now)
    reply.result.canceled = change.canceled
    if reply.answer_here:
        reply.result.reply = reply.builtin(STOP_TEXT)


def _opt_in(reply: _Reply) -> None:
    consent.record_opt_in(reply.session, reply.ctx.phone, by=reply.meaning.detail, at=reply.now)
    if reply.answer_here:
        _queue_answer(reply, reply.builtin(START_TEXT))


def _help(reply: _Reply) -> None:
    """Answered in the response: CTIA requires it even for an opted-out number, which the outbox's
    send-time consent check would drop."""
    if reply.answer_here:
        reply.result.reply = reply.builtin(HELP_TEXT)


def _campaign_rule(reply: _Reply) -> None:
    """Record the rule's outcome, queue its answer (not to an opted-out number), and open a
    hand-off when the rule asks for a person or its answer cannot be written."""
    rule, ctx = reply.meaning.rule, reply.ctx
    assert rule is not None and ctx.campaign is not None
    reply.result.outcome = rule.outcome
    unanswered = False
    if rule.answer and not ctx.opted_out:
        _lang, template = ctx.campaign.text_for(rule.answer, ctx.language)
        unset = _unset_setting(template, reply.settings)
        if unset is None:
            _queue_answer(reply, render(template, first_name=reply.first_name, settings=reply.settings))
        else:  # a setting the answer needs is missing: keep the reply, let a person answer
            log.error("answer to %s not queued: %s is not set, but the answer uses it", reply.sid, unset)
            unanswered = True
    if rule.handoff or unanswered:
        _hand_off(reply, rule.outcome)


def _hand_off(reply: _Reply, reason: str | None = None) -> None:
    """Open a hand-off for the care team; the reason is the reply's kind unless a rule names one."""
    patient, enrollment = reply.ctx.patient, reply.ctx.enrollment
    handoff_id = reply.conn.scalar(
        _OPEN_HANDOFF,
        {
            "inbound_id": reply.inbound_id,
            "patient_id": patient.id if patient else None,
            "enrollment_id": enrollment.id if enrollment else None,
            "reason": (reason or reply.meaning.kind)[:64],
            "status": "open",
            "opened_at": reply.now,
        },
    )
    assert handoff_id is not None
    reply.result.handoff_id = int(handoff_id)


# One action per kind of reply; free text and questions go to a person.
_ACT: Mapping[Kind, Callable[[_Reply], None]] = {
    Kind.opt_out: _opt_out,
    Kind.opt_in: _opt_in,
    Kind.help: _help,
    Kind.keyword: _campaign_rule,
    Kind.free_text: _hand_off,
    Kind.question: _hand_off,
}


_NOW = bindparam("now", type_=DateTime())
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


def _store(
    conn: Connection,
    ctx: ReplyContext,
    kind: Kind,
    sid: str,
    to: str,
    body: str,
    now: dt.datetime,
    idempotency_token: str | None,
) -> int | None:
    """Store the reply; None when it is already stored (same MessageSid or idempotency token,
    earlier or racing). One statement: no SELECT first, no SAVEPOINT around the INSERT."""
    patient = ctx.patient
    inbound_id = conn.scalar(
        _STORE_INBOUND[conn.dialect.name],
        {
            "provider_sid": sid,
            "idempotency_token": idempotency_token,
            "from_phone": ctx.phone,
            "to_phone": to,
            "body": body,
            "received_at": now,
            "patient_id": patient.id if patient else None,
            "enrollment_id": ctx.enrollment.id if ctx.enrollment else None,
            "classification": kind.value,
        },
    )
    return int(inbound_id) if inbound_id is not None else None


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


def _queue_answer(reply: _Reply, body: str) -> None:
    """Queue an answer in the outbox; `answer:{MessageSid}` makes it once per inbound message.

    The reply's own row was stored by this transaction (a replayed MessageSid never gets here), so
    no earlier answer to it can exist; the outbox's (enrollment, step) key refuses one all the same.
    """
    ctx, now = reply.ctx, reply.now
    answer_id = reply.conn.scalar(
        _QUEUE_ANSWER[reply.conn.dialect.name],
        {
            "enrollment_id": ctx.enrollment.id if ctx.enrollment else None,
            "step_id": f"answer:{reply.sid}",
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
        reply.result.answer_ids.append(answer_id)


def _activate(
    conn: Connection,
    enrollment: Enrolled,
    inbound_id: int,
    outcome: str | None,
    kind: Kind,
    now: dt.datetime,
    *,
    activates: bool,
) -> bool:
    """Mark the enrollment replied (and record a keyword's outcome) in one UPDATE; the first
    activating reply activates it, atomically (ON CONFLICT DO NOTHING)."""
    if outcome is None:
        conn.execute(_MARK_REPLIED, {"enrollment_id": enrollment.id, "now": now})
    else:
        conn.execute(
            _MARK_REPLIED_WITH_OUTCOME, {"enrollment_id": enrollment.id, "now": now, "new_outcome": outcome}
        )
    if not activates:
        return False
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
