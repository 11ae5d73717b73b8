"""Inbound replies: normalization, keyword families, and the whole pipeline against a real database."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from outreach.apps.web.twilio_forms import BadWebhook, inbound_form, store_reply, twiml
from outreach.campaigns import CampaignFile, parse_campaign
from outreach.config import Settings, get_settings
from outreach.keywords import normalize, opt_out_request
from outreach.listen import consent
from outreach.listen.classify import Kind
from outreach.listen.replies import InboundResult
from outreach.store.models import (
    Activation,
    Campaign,
    Enrollment,
    Handoff,
    InboundMessage,
    Message,
    MessageKind,
    MessageStatus,
    Patient,
    PhoneConsent,
)

PHONE = "+16175550123"
T0 = dt.datetime(2026, 3, 2, 15, 0)
CAMPAIGN_YAML = """
id: colorectal-screening
name: Colorectal cancer screening
active: {from: 2026-01-01}
audience:
  age: {min: 45, max: 75}
steps:
  - id: invite
    after: 0d
    text:
      en: "Hi {first_name}, {clinic_name} here. Reply YES for a test kit or CALL. Reply STOP to opt out."
      es: "Hola {first_name}, le saluda {clinic_name}. Responda SI o LLAMAR. Responda STOP para salir."
replies:
  - keywords: [YES, Y, SI, "SÍ"]
    outcome: kit_requested
    answer:
      en: "Thanks {first_name}! Your kit is on its way."
      es: "¡Gracias {first_name}! Su prueba va en camino."
  - keywords: [CALL, LLAMAR]
    outcome: callback_requested
    handoff: true
    answer:
      en: "We will call you soon from {clinic_phone}."
  - keywords: [NO]
    outcome: declined
    activates: false
"""
_sids = itertools.count(1)


@pytest.fixture
def settings(engine: object) -> Settings:
    return get_settings()


@pytest.fixture
def campaigns(settings: Settings) -> dict[str, CampaignFile]:
    campaign = parse_campaign(CAMPAIGN_YAML, settings=settings)
    flu = parse_campaign(CAMPAIGN_YAML.replace("colorectal-screening", "flu-season"), settings=settings)
    return {campaign.id: campaign, flu.id: flu}


def patient(
    session: Session, mrn: str, *, phone: str = PHONE, language: str = "en", name: str = "Ana"
) -> Patient:
    row = Patient(
        mrn=mrn,
        first_name=name,
        birth_date=dt.date(1960, 5, 1),
        sex="female",
        phone=phone,
        language=language,
    )
    session.add(row)
    session.flush()
    return row


def enroll(session: Session, who: Patient, campaign_id: str = "colorectal-screening") -> Enrollment:
    if session.get(Campaign, campaign_id) is None:
        session.add(Campaign(id=campaign_id, name=campaign_id, content_hash="x"))
    row = Enrollment(patient_id=who.id, campaign_id=campaign_id, enrolled_on=T0.date(), language=who.language)
    session.add(row)
    session.flush()
    return row


def message(
    session: Session,
    enrollment: Enrollment | None,
    *,
    step: str = "invite",
    phone: str = PHONE,
    status: MessageStatus = MessageStatus.delivered,
    sent_at: dt.datetime | None = T0,
) -> Message:
    row = Message(
        enrollment_id=enrollment.id if enrollment else None,
        step_id=step,
        kind=MessageKind.outreach,
        phone=phone,
        body="outreach text",
        status=status,
        send_at=T0,
        sent_at=sent_at,
    )
    session.add(row)
    session.flush()
    return row


def reply(
    session: Session,
    body: str,
    settings: Settings,
    campaigns: dict[str, CampaignFile],
    *,
    phone: str = PHONE,
    sid: str | None = None,
    token: str | None = None,
    minutes: int = 5,
    opt_out_type: str | None = None,
) -> InboundResult:
    form = {"MessageSid": sid or f"SM{next(_sids):032x}", "From": phone, "To": "+16175550100", "Body": body}
    if opt_out_type is not None:
        form["OptOutType"] = opt_out_type
    return store_reply(
        session,
        inbound_form(form, region=settings.default_region, idempotency_token=token),
        settings=settings,
        campaigns=campaigns,
        now=result_now(minutes),
    )


def result_now(minutes: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def count(session: Session, model: type[object]) -> int:
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


def answers(session: Session) -> list[Message]:
    return list(
        session.scalars(select(Message).where(Message.kind == MessageKind.answer).order_by(Message.id))
    )


# --- normalization and keyword families ---------------------------------------------------------


def test_normalize_folds_case_accents_punctuation_and_emoji() -> None:
    text = normalize("  ¡Sí!! 👍  Don’t   TEXT me… ")
    assert text.words == ("si", "dont", "text", "me")
    assert text.first == "si"
    assert text.text == "si dont text me"
    assert normalize("").words == ()
    assert normalize("¿Cuándo?").question and not normalize("when").question


@pytest.mark.parametrize(
    "body",
    [
        "STOP",
        "stop",
        "Stop.",
        "STOP!!!",
        "🛑 stop",
        "stop 🙏",
        "Stop please",
        "stop texting me",
        "STOPALL",
        "Unsubscribe",
        "cancel",
        "End",
        "quit",
        "REVOKE",
        "optout",
        "Opt-out",
        "please stop texting me",
        "Please stop.",
        "no more texts please",
        "Don't text me again",
        "do not contact me",
        "remove me from your list",
        "I want to unsubscribe",
        "How do I opt out?",
        "Basta",
        "basta ya!",
        "PARAR",
        "Alto",
        "para",
        "Por favor, paren",
        "para de enviar mensajes",
        "No más mensajes",
        "no mas mensajes por favor",
        "No me envíen más",
        "dejen de escribirme",
        "Bórrame de la lista",
        "quiero darme de baja",
    ],
)
def test_opt_out_requests_in_english_and_spanish(body: str) -> None:
    assert opt_out_request(normalize(body)) is not None


@pytest.mark.parametrize(
    "body",
    [
        "I can't stop by today",
        "Can I stop by tomorrow morning?",
        "I won't stop taking my meds",
        "The pain doesn't end",
        "Yes, don't stop",
        "Can I cancel my appointment?",
        "Para cuando es la cita?",
        "Para mi mamá",
        "Es muy alto el precio?",
        "no",
        "Hola",
        "",
    ],
)
def test_stop_in_the_middle_of_a_sentence_is_not_an_opt_out(body: str) -> None:
    assert opt_out_request(normalize(body)) is None


@pytest.mark.parametrize(
    ("body", "kind", "outcome"),
    [
        ("STOP", Kind.opt_out, None),
        ("no más mensajes", Kind.opt_out, None),
        ("START", Kind.opt_in, None),
        ("unstop", Kind.opt_in, None),
        ("HELP", Kind.help, None),
        ("info?", Kind.help, None),
        ("Ayuda", Kind.help, None),
        ("YES", Kind.keyword, "kit_requested"),
        ("yes please", Kind.keyword, "kit_requested"),
        ("Sí!", Kind.keyword, "kit_requested"),
        ("si", Kind.keyword, "kit_requested"),
        ("SI 👍", Kind.keyword, "kit_requested"),
        ("y", Kind.keyword, "kit_requested"),
        ("Call me", Kind.keyword, "callback_requested"),
        ("llamar por favor", Kind.keyword, "callback_requested"),
        ("What is this about?", Kind.question, None),
        ("I already did it last year", Kind.free_text, None),
        ("", Kind.free_text, None),
    ],
)
def test_each_family_is_recognized_in_order(
    session: Session,
    settings: Settings,
    campaigns: dict[str, CampaignFile],
    body: str,
    kind: Kind,
    outcome: str | None,
) -> None:
    message(session, enroll(session, patient(session, "m1")))

    result = reply(session, body, settings, campaigns)

    assert (result.classification, result.outcome) == (kind, outcome)
    stored = session.scalars(select(InboundMessage)).one()
    assert (stored.classification, stored.body, stored.from_phone) == (kind, body, PHONE)


# --- opt-out and opt-in ---------------------------------------------------------------------------


def test_stop_cancels_all_three_queued_messages_and_confirms_in_twiml(
    session: Session, settings: Settings, campaigns: dict[str, CampaignFile]
) -> None:
    enrollment = enroll(session, patient(session, "m1"))
    message(session, enrollment)
    for step in ("reminder", "second", "third"):
        message(session, enrollment, step=step, status=MessageStatus.queued, sent_at=None)

    result = reply(session, "Stop", settings, campaigns)

    assert result.canceled == 3
    assert consent.is_opted_out(session, PHONE)
    statuses = session.scalars(select(Message.status).where(Message.step_id != "invite")).all()
    assert statuses == ["canceled"] * 3
    assert result.reply is not None and "Riverside Health" in result.reply and "START" in result.reply
    assert "<Response><Message>Riverside Health" in twiml(result.reply)
    assert answers(session) == []  # the confirmation goes in the response, not the outbox


def test_one_stop_on_a_shared_number_opts_out_every_patient_and_cancels_all_their_messages(
    session: Session, settings: Settings, campaigns: dict[str, CampaignFile]
) -> None:
    mother, son = patient(session, "m1", name="Ana"), patient(session, "m2", name="Luis")
    first, second = enroll(session, mother), enroll(session, son, "flu-season")
    message(session, first, sent_at=T0)
    message(session, first, step="reminder", status=MessageStatus.queued, sent_at=None)
    message(session, second, step="reminder", status=MessageStatus.planned, sent_at=None)

    result = reply(session, "STOP", settings, campaigns)

    assert result.patient_ids == (mother.id, son.id)
    assert result.canceled == 2
    pending = session.scalars(select(Message.status).where(Message.step_id == "reminder")).all()
    assert pending == ["canceled", "canceled"]


def test_an_opt_out_neither_activates_nor_counts_as_a_reply(
    session: Session, settings: Settings, campaigns: dict[str, CampaignFile]
) -> None:
    enrollment = enroll(session, patient(session, "m1"))
    message(session, enrollment)

    reply(session, "STOP", settings, campaigns)

    session.refresh(enrollment)
    assert enrollment.replied_at is None
    assert count(session, Activation) == 0


def test_start_after_stop_opts_back_in_and_queues_the_confirmation(
    session: Session, settings: Settings, campaigns: dict[str, CampaignFile]
) -> None:
    enrollment = enroll(session, patient(session, "m1"))
    message(session, enrollment)
    reply(session, "STOP", settings, campaigns, minutes=1)

    result = reply(session, "START", settings, campaigns, sid="SM" + "5" * 32, minutes=2)

    assert result.classification == Kind.opt_in and result.reply is None
    assert not consent.is_opted_out(session, PHONE)
    [answer] = answers(session)
    assert result.answer_ids == [answer.id]
    assert (answer.status, answer.step_id, answer.enrollment_id) == (
        "queued",
        "answer:SM" + "5" * 32,
        enrollment.id,
    )
    assert "subscribed again" in answer.body and answer.segments >= 1


def test_yes_opts_in_an_opted_out_number_but_is_a_campaign_keyword_otherwise(
    session: Session, settings: Settings, campaigns: dict[str, CampaignFile]
) -> None:
    enrollment = enroll(session, patient(session, "m1"))
    message(session, enrollment)
    consent.record_opt_out(session, PHONE, by="STOP", at=T0)

    first = reply(session, "Yes", settings, campaigns, minutes=1)
    assert first.classification == Kind.opt_in
    assert not consent.is_opted_out(session, PHONE)
    session.refresh(enrollment)
    assert enrollment.outcome is None

    second = reply(session, "Yes", settings, campaigns, minutes=2)
    assert (second.classification, second.outcome) == (Kind.keyword, "kit_requested")
    session.refresh(enrollment)
    assert enrollment.outcome == "kit_requested"


# --- help -----------------------------------------------------------------------------------------


def test_help_is_answered_in_the_patients_language_even_when_opted_out(
    session: Session, settings: Settings, campaigns: dict[str, CampaignFile]
) -> None:
    patient(session, "m1", language="es")
    consent.record_opt_out(session, PHONE, by="STOP", at=T0)

    result = reply(session, "AYUDA", settings, campaigns)

    assert result.classification == Kind.help
    assert result.reply is not None
    assert "Riverside Health" in result.reply and "(617) 555-0100" in result.reply and "STOP" in result.reply
    assert "llame" in result.reply
    assert consent.is_opted_out(session, PHONE)  # HELP informs; it does not opt in


def test_with_advanced_opt_out_twilio_answers_stop_start_and_help_itself(
    session: Session, settings: Settings, campaigns: dict[str, CampaignFile]
) -> None:
    advanced = settings.model_copy(update={"twilio_advanced_opt_out": True})
    message(session, enroll(session, patient(session, "m1")))

    stop = reply(session, "STOP", advanced, campaigns, minutes=1)
    start = reply(session, "START", advanced, campaigns, minutes=2)
    help_ = reply(session, "HELP", advanced, campaigns, minutes=3)

    assert [stop.reply, start.reply, help_.reply] == [None, None, None]
    assert twiml(stop.reply).endswith("<Response />")
    assert answers(session) == []
    assert not consent.is_opted_out(session, PHONE)  # we still record both moves ourselves
    assert session.scalars(select(InboundMessage.classification).order_by(InboundMessage.id)).all() == [
        "opt_out",
        "opt_in",
        "help",
    ]


# --- Twilio Advanced Opt-Out: OptOutType decides first ----------------------------------------------


def opted_out_by(session: Session) -> str | None:
    return session.scalar(select(PhoneConsent.opted_out_by).where(PhoneConsent.phone == PHONE))


@pytest.mark.parametrize(
    ("body", "by"),
    [
        ("REMOVE", "twilio:STOP"),  # a custom word configured in Twilio: ours would hand it off
        ("Basta", "twilio:STOP"),  # ours call it an opt-out too, but only Twilio's words say it blocks
        ("stop", "STOP"),  # Twilio's own word: recorded as before
        ("Unsubscribe.", "UNSUBSCRIBE"),
    ],
)
def test_opt_out_type_stop_records_an_opt_out_whatever_the_word(
    session: Session, settings: Settings, campaigns: dict[str, CampaignFile], body: str, by: str
) -> None:
    enrollment = enroll(session, patient(session, "m1"))
    message(session, enrollment)
    message(session, enrollment, step="reminder", status=MessageStatus.queued, sent_at=None)

    result = reply(session, body, settings, campaigns, opt_out_type="STOP")

    assert (result.classification, result.canceled, result.handoff_id) == (Kind.opt_out, 1, None)
    assert consent.is_opted_out(session, PHONE) and opted_out_by(session) == by
    session.refresh(enrollment)
    assert enrollment.replied_at is None and count(session, Activation) == 0


def test_without_opt_out_type_a_custom_word_is_only_free_text(
    session: Session, settings: Settings, campaigns: dict[str, CampaignFile]
) -> None:
    """The contrast that makes the test above mean something: REMOVE is no word of ours."""
    message(session, enroll(session, patient(session, "m1")))

    result = reply(session, "REMOVE", settings, campaigns)

    assert result.classification == Kind.free_text and not consent.is_opted_out(session, PHONE)


def test_opt_out_type_start_opts_in_an_opted_out_number_whatever_the_word(
    session: Session, settings: Settings, campaigns: dict[str, CampaignFile]
) -> None:
    enrollment = enroll(session, patient(session, "m1"))
    message(session, enrollment)
    consent.record_opt_out(session, PHONE, by="STOP", at=T0)

    result = reply(session, "RESUME", settings, campaigns, opt_out_type="START")

    assert result.classification == Kind.opt_in and not consent.is_opted_out(session, PHONE)
    by = session.scalar(select(PhoneConsent.opted_in_by).where(PhoneConsent.phone == PHONE))
    assert by == "twilio:START"
    session.refresh(enrollment)
    assert enrollment.outcome is None


@pytest.mark.parametrize("advanced", [False, True])
def test_yes_with_opt_out_type_start_from_a_number_not_opted_out_is_the_campaigns_answer(
    session: Session, settings: Settings, campaigns: dict[str, CampaignFile], advanced: bool
) -> None:
    """Twilio's opt-in family includes YES: as an opt-in, the campaign's YES would never fire."""
    enrollment = enroll(session, patient(session, "m1"))
    message(session, enrollment)
    chosen = settings.model_copy(update={"twilio_advanced_opt_out": advanced})

    result = reply(session, "Yes", chosen, campaigns, opt_out_type="START")

    assert (result.classification, result.outcome, result.activated) == (Kind.keyword, "kit_requested", True)
    session.refresh(enrollment)
    assert enrollment.outcome == "kit_requested"
    [answer] = answers(session)  # the campaign's answer is ours to send, Advanced Opt-Out or not
    assert answer.body == "Thanks Ana! Your kit is on its way."


def test_opt_out_type_help_is_help_and_an_unknown_type_changes_nothing(
    session: Session, settings: Settings, campaigns: dict[str, CampaignFile]
) -> None:
    message(session, enroll(session, patient(session, "m1")))

    help_ = reply(session, "SOPORTE", settings, campaigns, opt_out_type="HELP", minutes=1)
    unknown = reply(session, "STOP", settings, campaigns, opt_out_type="PAUSE", minutes=2)

    assert help_.classification == Kind.help and help_.reply is not None and "(617) 555-0100" in help_.reply
    assert help_.handoff_id is None
    assert unknown.classification == Kind.opt_out and opted_out_by(session) == "STOP"


def test_the_webhook_form_reads_opt_out_type_and_empty_is_none(settings: Settings) -> None:
    base = {"MessageSid": "SM" + "4" * 32, "From": PHONE, "Body": "Remove"}

    def read(**extra: str) -> str | None:
        return inbound_form({**base, **extra}, region=settings.default_region).opt_out_type

    assert [read(), read(OptOutType=""), read(OptOutType="  "), read(OptOutType=" stop ")] == [
        None,
        None,
        None,
        "STOP",
    ]


# --- campaign keywords, hand-offs, activations ------------------------------------------------------


def test_a_campaign_keyword_records_the_outcome_and_answers_in_the_patients_language(
    session: Session, settings: Settings, campaigns: dict[str, CampaignFile]
) -> None:
    enrollment = enroll(session, patient(session, "m1", language="es", name="María"))
    message(session, enrollment)

    result = reply(session, "Sí!", settings, campaigns)

    session.refresh(enrollment)
    assert (enrollment.outcome, enrollment.outcome_at) == ("kit_requested", T0 + dt.timedelta(minutes=5))
    [answer] = answers(session)
    assert answer.body == "¡Gracias María! Su prueba va en camino."
    assert (answer.kind, answer.status, answer.send_at, answer.phone) == (
        "answer",
        "queued",
        result_now(5),
        PHONE,
    )
    assert result.handoff_id is None and count(session, Handoff) == 0


def test_a_missing_translation_falls_back_to_the_default_language(
    session: Session, settings: Settings, campaigns: dict[str, CampaignFile]
) -> None:
    message(session, enroll(session, patient(session, "m1", language="es")))

    reply(session, "llamar", settings, campaigns)

    [answer] = answers(session)
    assert answer.body == "We will call you soon from (617) 555-0100."


def test_a_handoff_keyword_opens_a_handoff_with_the_outcome_as_reason(
    session: Session, settings: Settings, campaigns: dict[str, CampaignFile]
) -> None:
    who = patient(session, "m1")
    enrollment = enroll(session, who)
    message(session, enrollment)

    result = reply(session, "CALL", settings, campaigns)

    handoff = session.get(Handoff, result.handoff_id)
    assert handoff is not None
    assert (handoff.reason, handoff.status, handoff.patient_id, handoff.enrollment_id) == (
        "callback_requested",
        "open",
        who.id,
        enrollment.id,
    )


def test_free_text_and_questions_go_to_the_care_team(
    session: Session, settings: Settings, campaigns: dict[str, CampaignFile]
) -> None:
    message(session, enroll(session, patient(session, "m1")))

    reply(session, "I had one in 2022", settings, campaigns, minutes=1)
    reply(session, "Is it covered by insurance?", settings, campaigns, minutes=2)

    reasons = session.scalars(select(Handoff.reason).order_by(Handoff.id)).all()
    assert reasons == ["free_text", "question"]
    assert answers(session) == []


def test_a_keyword_without_an_enrollment_is_a_handoff(
    session: Session, settings: Settings, campaigns: dict[str, CampaignFile]
) -> None:
    who = patient(session, "m1")  # known patient, but nothing was ever sent to the number

    result = reply(session, "YES", settings, campaigns)

    assert (result.classification, result.enrollment_id) == (Kind.free_text, None)
    handoff = session.get(Handoff, result.handoff_id)
    assert handoff is not None and handoff.patient_id == who.id


def test_the_first_activating_reply_activates_once_and_the_latest_keyword_sets_the_outcome(
    session: Session, settings: Settings, campaigns: dict[str, CampaignFile]
) -> None:
    """A question is engagement (replied_at), not activation (DESIGN.md §8): YES activates."""
    enrollment = enroll(session, patient(session, "m1"))
    message(session, enrollment)

    first = reply(session, "what kit?", settings, campaigns, minutes=1)
    second = reply(session, "YES", settings, campaigns, minutes=2)
    third = reply(session, "call", settings, campaigns, minutes=3)

    assert [first.activated, second.activated, third.activated] == [False, True, False]
    activation = session.scalars(select(Activation)).one()
    assert (activation.inbound_id, activation.how, activation.enrollment_id) == (
        second.inbound_id,
        "kit_requested",
        enrollment.id,
    )
    session.refresh(enrollment)
    assert enrollment.replied_at == result_now(1)
    assert (enrollment.outcome, enrollment.outcome_at) == ("callback_requested", result_now(3))


def test_a_decline_is_engagement_not_activation_and_a_later_yes_still_activates(
    session: Session, settings: Settings, campaigns: dict[str, CampaignFile]
) -> None:
    enrollment = enroll(session, patient(session, "m1"))
    message(session, enrollment)

    declined = reply(session, "No thanks", settings, campaigns, minutes=1)
    assert (declined.outcome, declined.activated) == ("declined", False)
    session.refresh(enrollment)
    assert enrollment.replied_at == result_now(1)
    assert session.scalars(select(Activation)).all() == []

    changed_mind = reply(session, "yes", settings, campaigns, minutes=2)
    assert changed_mind.activated is True
    assert session.scalars(select(Activation.how)).one() == "kit_requested"


def test_a_reply_belongs_to_the_enrollment_of_the_latest_message_sent_to_the_number(
    session: Session, settings: Settings, campaigns: dict[str, CampaignFile]
) -> None:
    who = patient(session, "m1")
    colorectal, flu = enroll(session, who), enroll(session, who, "flu-season")
    message(session, colorectal, sent_at=T0 - dt.timedelta(days=2))
    message(session, flu, sent_at=T0 - dt.timedelta(days=1))
    message(session, colorectal, step="reminder", status=MessageStatus.queued, sent_at=None)  # not sent

    result = reply(session, "yes", settings, campaigns)

    assert result.enrollment_id == flu.id
    session.refresh(flu)
    session.refresh(colorectal)
    assert (flu.outcome, colorectal.outcome) == ("kit_requested", None)


def test_an_opted_out_number_gets_its_outcome_recorded_but_no_answer_queued(
    session: Session, settings: Settings, campaigns: dict[str, CampaignFile]
) -> None:
    message(session, enroll(session, patient(session, "m1")))
    consent.record_opt_out(session, PHONE, by="STOP", at=T0)

    result = reply(session, "CALL", settings, campaigns)

    assert (result.outcome, result.answer_ids) == ("callback_requested", [])
    assert result.handoff_id is not None


# --- storage --------------------------------------------------------------------------------------


def test_a_replayed_message_sid_stores_one_row_and_queues_one_answer(
    session: Session, settings: Settings, campaigns: dict[str, CampaignFile]
) -> None:
    message(session, enroll(session, patient(session, "m1")))
    sid = "SM" + "7" * 32

    first = reply(session, "yes", settings, campaigns, sid=sid)
    again = reply(session, "yes", settings, campaigns, sid=sid, minutes=9)

    assert not first.duplicate and again.duplicate
    assert again.answer_ids == [] and again.reply is None
    assert count(session, InboundMessage) == 1
    assert len(answers(session)) == 1
    assert count(session, Activation) == 1


def test_a_repeated_idempotency_token_is_a_replay_even_with_another_sid(
    session: Session, settings: Settings, campaigns: dict[str, CampaignFile]
) -> None:
    patient(session, "m1")

    reply(session, "hello", settings, campaigns, token="tok-1")
    again = reply(session, "hello", settings, campaigns, token="tok-1")

    assert again.duplicate
    assert count(session, InboundMessage) == 1 and count(session, Handoff) == 1


def test_a_reply_from_an_unknown_number_is_stored_and_handed_off(
    session: Session, settings: Settings, campaigns: dict[str, CampaignFile]
) -> None:
    result = reply(session, "who is this?", settings, campaigns, phone="(617) 555-0199")

    stored = session.get(InboundMessage, result.inbound_id)
    assert stored is not None
    assert (stored.from_phone, stored.patient_id, stored.enrollment_id, stored.classification) == (
        "+16175550199",
        None,
        None,
        "question",
    )
    handoff = session.get(Handoff, result.handoff_id)
    assert handoff is not None and handoff.patient_id is None


def test_a_shared_number_without_an_enrollment_does_not_guess_the_patient(
    session: Session, settings: Settings, campaigns: dict[str, CampaignFile]
) -> None:
    patient(session, "m1")
    patient(session, "m2")

    result = reply(session, "hi", settings, campaigns)

    stored = session.get(InboundMessage, result.inbound_id)
    assert stored is not None and stored.patient_id is None
    assert len(result.patient_ids) == 2


@pytest.mark.parametrize(
    ("form", "reason"),
    [
        ({"From": PHONE, "Body": "x"}, "missing MessageSid"),
        ({"MessageSid": "SM1", "Body": "x"}, "missing From"),
        ({"MessageSid": "SM1", "From": "not a number"}, "From is not a phone number"),
        ({"MessageSid": "SM1", "From": "+1 617"}, "From is not a possible phone number"),
        ({"MessageSid": "S" * 65, "From": PHONE}, "MessageSid is longer than 64 characters"),
    ],
)
def test_unusable_fields_are_refused_with_one_line(
    session: Session,
    settings: Settings,
    campaigns: dict[str, CampaignFile],
    form: dict[str, str],
    reason: str,
) -> None:
    with pytest.raises(BadWebhook) as excinfo:
        inbound_form(form, region=settings.default_region)
    assert str(excinfo.value) == reason
    assert count(session, InboundMessage) == 0


def test_an_answer_that_cannot_be_rendered_leaves_the_reply_with_the_care_team(
    session: Session, settings: Settings, campaigns: dict[str, CampaignFile]
) -> None:
    """{clinic_phone} unset: the reply is kept and handed off instead of failing the webhook."""
    message(session, enroll(session, patient(session, "m1")))
    unset = settings.model_copy(update={"clinic_phone": None})

    result = reply(session, "call", unset, campaigns)

    assert (result.outcome, result.answer_ids) == ("callback_requested", [])
    handoff = session.get(Handoff, result.handoff_id)
    assert handoff is not None and handoff.reason == "callback_requested"
    assert count(session, InboundMessage) == 1
