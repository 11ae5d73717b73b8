"""Simulated patients: signed replies through the real sandbox, scripts in order, a reproducible mix,
the reply language read from the text, silence where a patient would not answer."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests
from click.testing import CliRunner
from twilio.request_validator import RequestValidator

from outreach.apps.cli import main
from outreach.campaigns import load_campaigns
from outreach.config import get_settings
from outreach.errors import UserError
from outreach.keywords import normalize, opt_out_request
from outreach.listen.classify import match_rule
from outreach.sandbox import SandboxMessage, SandboxServer
from outreach.sandbox.patients import (
    PHRASES,
    PatientsConfig,
    ReplyMix,
    SimulatedPatients,
    language_of,
    load_replies,
)
from tests.workers_harness import wait_until

if TYPE_CHECKING:
    from tests.sandbox_fixtures import WebhookReceiver

ROOT = Path(__file__).resolve().parent.parent
PATIENT = "+16175550123"
SENDER = "+15005550006"
INVITE_EN = "Hi Ana, this is Riverside Health. Reply YES for a free kit. Reply STOP to opt out."
INVITE_ES = "Hola Ana, le escribe Riverside Health. Responda SÍ para un kit gratis."
REMINDER_ES = "Ana, le recuerda Riverside Health: puede hacerse la prueba en casa. Responda SÍ o LLAMAR."
ANSWER_EN = "Thank you, Ana! We will mail your free test kit within a week."
ONLY_YES = ReplyMix(yes=1, call=0, done=0, no=0, stop=0, help=0, question=0, emoji=0, empty=0, silent=0)
ONLY_SILENT = ReplyMix(yes=0, call=0, done=0, no=0, stop=0, help=0, question=0, emoji=0, empty=0, silent=1)


def message(body: str, to: str = PATIENT, sid: str = "SM" + "0" * 32) -> SandboxMessage:
    now = dt.datetime(2026, 11, 23, 15, 0, tzinfo=dt.UTC)
    return SandboxMessage(
        sid=sid,
        account_sid="AC" + "1" * 32,
        to=to,
        from_=SENDER,
        messaging_service_sid=None,
        body=body,
        segments=1,
        status="delivered",
        status_callback=None,
        validity_period=None,
        date_created=now,
        date_updated=now,
    )


def bodies(planner: SimulatedPatients, *texts: str, to: str = PATIENT) -> list[str | None]:
    """What `to` answers to each text in turn (None: no reply)."""
    answers: list[str | None] = []
    for text in texts:
        replies = planner(message(text, to))
        assert len(replies) <= 1
        answers.append(replies[0].body if replies else None)
    return answers


# --- through the sandbox -----------------------------------------------------------------------


def test_a_reply_is_posted_as_a_signed_inbound_webhook_from_the_patient(
    sandbox: SandboxServer, webhook_receiver: WebhookReceiver
) -> None:
    inbound_url = webhook_receiver.url("/twilio/inbound")
    sandbox.configure(inbound_url=inbound_url, sent_after_s=0, delivered_after_s=0)
    sandbox.state.replies = SimulatedPatients(script={PATIENT: ["Sí, gracias"]}, delay_s=(0, 0))
    created = requests.post(
        f"{sandbox.url}/2010-04-01/Accounts/{sandbox.account_sid}/Messages.json",
        data={"To": PATIENT, "From": SENDER, "Body": INVITE_ES},
        auth=(sandbox.account_sid, sandbox.auth_token),
        timeout=10,
    )
    assert created.status_code == 201

    (request,) = webhook_receiver.wait(1)
    params = request.params
    assert request.url == inbound_url
    assert RequestValidator(sandbox.auth_token).validate(
        request.url, params, request.headers["x-twilio-signature"]
    )
    assert not RequestValidator("another-token").validate(
        request.url, params, request.headers["x-twilio-signature"]
    )
    assert params["From"] == PATIENT and params["To"] == SENDER
    assert params["Body"] == "Sí, gracias"
    assert params["AccountSid"] == sandbox.account_sid
    assert params["MessageSid"].startswith("SM") and len(params["MessageSid"]) == 34
    assert params["MessageSid"] != created.json()["sid"]
    assert sandbox.inbound() == [params]


def test_sandbox_messages_that_ask_nothing_draw_no_reply(
    sandbox: SandboxServer, webhook_receiver: WebhookReceiver
) -> None:
    sandbox.configure(
        inbound_url=webhook_receiver.url("/twilio/inbound"), sent_after_s=0, delivered_after_s=0
    )
    planner = SimulatedPatients(mix=ONLY_YES, delay_s=(0, 0))
    sandbox.state.replies = planner
    for body in (ANSWER_EN, INVITE_EN):
        answer = requests.post(
            f"{sandbox.url}/2010-04-01/Accounts/{sandbox.account_sid}/Messages.json",
            data={"To": PATIENT, "From": SENDER, "Body": body},
            auth=(sandbox.account_sid, sandbox.auth_token),
            timeout=10,
        )
        assert answer.status_code == 201
    (request,) = webhook_receiver.wait(1)
    assert request.params["Body"] in PHRASES["yes"]["en"]
    assert wait_until(lambda: all(planner.seen(m["sid"]) for m in sandbox.messages()), timeout=15)
    assert planner.planned == 1
    assert webhook_receiver.received.empty()


# --- scripts -------------------------------------------------------------------------------------


def test_a_script_answers_each_prompting_text_in_order_then_falls_silent() -> None:
    planner = SimulatedPatients(script={"(617) 555-0123": ["YES", None, "STOP"]})
    texts = [INVITE_EN, ANSWER_EN, INVITE_EN, INVITE_EN, INVITE_EN]
    # The clinic's answer asks nothing, so it does not use up a script entry.
    assert bodies(planner, *texts) == ["YES", None, None, "STOP", None]
    assert planner.planned == 2


def test_scripted_numbers_keep_their_script_and_the_others_follow_the_mix() -> None:
    planner = SimulatedPatients(script={PATIENT: ["CALL"]}, mix=ONLY_YES, seed=1)
    assert bodies(planner, INVITE_EN) == ["CALL"]
    assert bodies(planner, INVITE_EN, to="+13055550102")[0] in PHRASES["yes"]["en"]


def test_a_reply_comes_within_the_configured_delay() -> None:
    planner = SimulatedPatients(mix=ONLY_YES, delay_s=(2.0, 3.0), seed=5)
    delays = [planner(message(INVITE_EN, f"+1617555{n:04d}"))[0].after_s for n in range(100, 150)]
    assert all(2.0 <= d <= 3.0 for d in delays)
    assert len(set(delays)) > 1


# --- the mix ---------------------------------------------------------------------------------------


NUMBERS = [f"+1{area}555{line:04d}" for area in (212, 305, 312, 415, 617) for line in range(100, 200)]


def draws(
    planner: SimulatedPatients, numbers: list[str], rounds: int = 3
) -> dict[tuple[str, int], str | None]:
    out: dict[tuple[str, int], str | None] = {}
    for index in range(rounds):
        for number in numbers:
            replies = planner(message(INVITE_EN, number))
            out[(number, index)] = replies[0].body if replies else None
    return out


def test_the_mix_is_reproducible_with_a_seed_whatever_the_order_of_deliveries() -> None:
    first = draws(SimulatedPatients(seed=42), NUMBERS)
    again = draws(SimulatedPatients(seed=42), list(reversed(NUMBERS)))
    other = draws(SimulatedPatients(seed=43), NUMBERS)
    assert first == again
    assert first != other


def test_the_mix_has_every_kind_of_reply_in_about_its_share() -> None:
    planner = SimulatedPatients(seed=7)
    draws(planner, NUMBERS, rounds=4)  # 2,000 draws
    kinds = planner.kinds()
    weights = ReplyMix().weights()
    total = sum(kinds.values())
    assert total == 2000 and set(kinds) == set(weights)
    for kind, weight in weights.items():
        share = weight / sum(weights.values())
        assert abs(kinds[kind] / total - share) < 0.04, (kind, kinds[kind])
    assert planner.planned == total - kinds["silent"]


def test_the_mix_includes_the_awkward_replies() -> None:
    seen = set(draws(SimulatedPatients(seed=3), NUMBERS, rounds=4).values())
    assert {None, "", "👍"} <= seen  # silence, an empty body, an emoji
    assert any(b and b != b.upper() and b != b.lower() for b in seen)  # mixed case
    assert any(b and len(b.split()) > 1 and normalize(b).first in {"yes", "no", "stop"} for b in seen)
    assert any(b and b.endswith("?") for b in seen)  # a question


def test_phrases_mean_what_their_kind_says_to_the_classifier() -> None:
    """Only the STOP kind opts out; keyword kinds hit the campaign rule the kind stands for."""
    campaign = load_campaigns(ROOT / "campaigns", settings=get_settings())["colorectal-screening"]
    outcomes = {
        "yes": "kit_requested",
        "call": "callback_requested",
        "done": "already_screened",
        "no": "declined",
    }
    for kind, languages in PHRASES.items():
        for text in (t for texts in languages.values() for t in texts):
            opted_out = opt_out_request(normalize(text)) is not None
            assert opted_out == (kind == "stop"), text
            if kind in outcomes:
                rule = match_rule(normalize(text), campaign.replies)
                assert rule is not None and rule.outcome == outcomes[kind], text


# --- language ------------------------------------------------------------------------------------


def test_the_reply_language_is_read_from_the_shipped_campaign_texts() -> None:
    checked = 0
    for campaign in load_campaigns(ROOT / "campaigns", settings=get_settings()).values():
        for step in campaign.steps:
            for _variant, _weight, texts in step.wordings():
                for language, text in texts.items():
                    assert language_of(text) == language, text
                    checked += 1
    assert checked >= 16


def test_spanish_texts_get_spanish_replies() -> None:
    planner = SimulatedPatients(mix=ONLY_YES, seed=9)
    assert language_of(REMINDER_ES) == "es"  # no "Hola": read from its words
    for index, body in enumerate(bodies(planner, *[INVITE_ES, REMINDER_ES] * 5)):
        assert body in PHRASES["yes"]["es"], (index, body)
    assert bodies(planner, INVITE_EN, to="+13055550102")[0] in PHRASES["yes"]["en"]
    assert language_of("¿Cuándo?") == "es" and language_of("") == "en"


# --- silence -------------------------------------------------------------------------------------


def test_no_reply_when_the_mix_is_silent_or_absent() -> None:
    assert bodies(SimulatedPatients(mix=ONLY_SILENT, seed=1), INVITE_EN, INVITE_ES) == [None, None]
    assert bodies(SimulatedPatients(mix=None), INVITE_EN) == [None]


def test_a_staff_question_is_answered_and_a_question_inside_an_answer_is_not() -> None:
    planner = SimulatedPatients(mix=ONLY_YES, seed=3)
    question = "Hi Ana, this is Riverside Health. Can you come in on Tuesday at 10?"
    answer = "Thank you! We will mail your kit. Questions? Call (617) 555-0199."
    assert [b is not None for b in bodies(planner, question, answer)] == [True, False]


def test_without_a_prompt_pattern_every_text_is_answered() -> None:
    planner = SimulatedPatients(mix=ONLY_YES, prompt=None, seed=2)
    assert all(b is not None for b in bodies(planner, ANSWER_EN, INVITE_EN))


# --- configuration -------------------------------------------------------------------------------


def test_load_replies_reads_probabilities_a_script_or_a_whole_config(tmp_path: Path) -> None:
    mix = load_replies("probabilities", seed=11)
    assert mix.config.seed == 11 and mix.config.mix == ReplyMix()

    script = tmp_path / "script.json"
    script.write_text(json.dumps({"617-555-0123": ["YES", None]}), encoding="utf-8")
    scripted = load_replies(str(script), seed=4)
    assert scripted.config.script == {PATIENT: ["YES", None]} and scripted.config.mix is None
    assert bodies(scripted, INVITE_EN, INVITE_EN) == ["YES", None]
    assert bodies(scripted, INVITE_EN, to="+13055550102") == [None]

    config = tmp_path / "config.json"
    config.write_text(
        json.dumps({"seed": 5, "delay_s": [0, 1], "mix": {"yes": 1, "silent": 1}}), encoding="utf-8"
    )
    loaded = load_replies(str(config), seed=99)
    assert loaded.config == PatientsConfig(seed=5, delay_s=(0, 1), mix=ReplyMix(yes=1, silent=1))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "neither 'probabilities' nor an existing JSON file"),
        ("{not json", "cannot read"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"12": ["YES"]}', "is not a valid phone number"),
        ('{"delay_s": [3, 1]}', "delay_s"),
        ('{"mix": {"yes": -1}}', "mix.yes"),
    ],
)
def test_bad_reply_files_are_one_clear_error(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "replies.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=message):
        load_replies(str(path))


def test_the_sandbox_command_rejects_a_bad_replies_file_in_one_line(tmp_path: Path) -> None:
    # The file is read before the server binds, so the port is never opened.
    result = CliRunner().invoke(main, ["sandbox", "--port", "8765", "--replies", str(tmp_path / "nope.json")])
    assert result.exit_code == 2
    assert "--replies" in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_keyword_settings_and_a_config_do_not_mix() -> None:
    with pytest.raises(TypeError):
        SimulatedPatients(PatientsConfig(), seed=1)
