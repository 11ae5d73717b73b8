"""The sandbox itself: Twilio's validation and paging, signed status callbacks in order, runtime
fault settings, the record of accepted messages and the per-second figures benchmarks read."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pytest
import requests
from click.testing import CliRunner
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from outreach.apps.cli import main
from outreach.sandbox import PlannedReply, SandboxConfig, SandboxMessage, SandboxServer, SandboxState
from outreach.sandbox.app import _valid_callback_url

if TYPE_CHECKING:
    from tests.sandbox_fixtures import Received, WebhookReceiver

pytest_plugins = ["tests.sandbox_fixtures"]

PATIENT = "+16175550123"
SENDER = "+15005550006"
SERVICE_SID = "MG" + "fedcba9876543210" * 2


def _api(sandbox: SandboxServer, path: str = "Messages.json") -> str:
    return f"{sandbox.url}/2010-04-01/Accounts/{sandbox.account_sid}/{path}"


def _create(sandbox: SandboxServer, **form: str) -> requests.Response:
    return requests.post(_api(sandbox), data=form, auth=(sandbox.account_sid, sandbox.auth_token), timeout=10)


def _client(sandbox: SandboxServer) -> Client:
    client = Client(sandbox.account_sid, sandbox.auth_token)
    client.api.base_url = sandbox.url
    return client


def _assert_signed(sandbox: SandboxServer, received: Sequence[Received]) -> None:
    validator = RequestValidator(sandbox.auth_token)
    for request in received:
        assert validator.validate(request.url, request.params, request.headers["x-twilio-signature"])
    forged = dict(received[0].params, MessageStatus="delivered", SmsStatus="delivered")
    if forged != received[0].params:
        assert not validator.validate(received[0].url, forged, received[0].headers["x-twilio-signature"])


def test_status_callbacks_are_signed_and_in_order(
    sandbox: SandboxServer, webhook_receiver: WebhookReceiver
) -> None:
    answer = _create(sandbox, To=PATIENT, From=SENDER, Body="hello", StatusCallback=webhook_receiver.url())
    assert answer.status_code == 201
    assert answer.json()["status"] == "queued"
    sid = answer.json()["sid"]

    # No callback for the status the message was created with: the create answer carried it.
    received = webhook_receiver.wait(2)
    _assert_signed(sandbox, received)
    assert [r.params["MessageStatus"] for r in received] == ["sent", "delivered"]
    fetched = _client(sandbox).messages(sid).fetch()
    assert received[-1].params == {
        "AccountSid": sandbox.account_sid,
        "ApiVersion": "2010-04-01",
        "From": SENDER,
        "MessageSid": sid,
        "MessageStatus": "delivered",
        "RawDlrDoneDate": fetched.date_updated.astimezone(dt.UTC).strftime("%y%m%d%H%M"),
        "SmsSid": sid,
        "SmsStatus": "delivered",
        "To": PATIENT,
    }
    assert "RawDlrDoneDate" not in received[0].params  # a "sent" has no delivery receipt yet
    assert (fetched.status, fetched.error_code, fetched.date_sent is not None) == ("delivered", None, True)
    assert sandbox.stats()["counters"]["status_callbacks_ok"] == 2
    assert webhook_receiver.received.empty()


def test_raw_dlr_done_date_is_twilios_minute_stamp_in_utc(
    sandbox: SandboxServer, webhook_receiver: WebhookReceiver
) -> None:
    before = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    _create(sandbox, To=PATIENT, From=SENDER, Body="hello", StatusCallback=webhook_receiver.url())
    stamp = webhook_receiver.wait(2)[-1].params["RawDlrDoneDate"]
    after = dt.datetime.now(dt.UTC)
    assert re.fullmatch(r"\d{10}", stamp)  # YYMMDDhhmm
    assert before <= dt.datetime.strptime(stamp, "%y%m%d%H%M").replace(tzinfo=dt.UTC) <= after


def test_undelivered_and_failed_outcomes_carry_real_error_codes(
    sandbox: SandboxServer, webhook_receiver: WebhookReceiver
) -> None:
    landline, filtered = "+16175550111", "+16175550122"
    sandbox.configure(
        outcomes={landline: {"error_code": 30006}, filtered: {"status": "failed", "error_code": 30007}}
    )
    first = _create(sandbox, To=landline, From=SENDER, Body="a", StatusCallback=webhook_receiver.url("/one"))
    received = webhook_receiver.wait(2)
    assert [(r.params["MessageStatus"], r.params.get("ErrorCode")) for r in received] == [
        ("sent", None),
        ("undelivered", "30006"),
    ]
    assert re.fullmatch(r"\d{10}", received[-1].params["RawDlrDoneDate"])  # the carrier's receipt
    _assert_signed(sandbox, received)

    second = _create(sandbox, To=filtered, From=SENDER, Body="b", StatusCallback=webhook_receiver.url("/two"))
    [failed_callback] = webhook_receiver.wait(1)
    assert (failed_callback.params["MessageStatus"], failed_callback.params["ErrorCode"]) == (
        "failed",
        "30007",
    )
    assert "RawDlrDoneDate" not in failed_callback.params  # never reached a carrier
    client = _client(sandbox)
    assert client.messages(first.json()["sid"]).fetch().error_code == 30006
    failed = client.messages(second.json()["sid"]).fetch()
    assert (failed.status, failed.error_code, failed.error_message) == ("failed", 30007, "Message filtered")
    assert webhook_receiver.received.empty()


def test_messaging_service_message_is_accepted_then_gets_a_sender(
    sandbox: SandboxServer, webhook_receiver: WebhookReceiver
) -> None:
    answer = _create(
        sandbox,
        To=PATIENT,
        MessagingServiceSid=SERVICE_SID,
        Body="hello",
        StatusCallback=webhook_receiver.url(),
    )
    created = answer.json()
    assert (created["status"], created["from"], created["num_segments"]) == ("accepted", None, "0")
    # Created "accepted" (no callback for that); the move to "queued" is a change, so it gets one.
    received = webhook_receiver.wait(3)
    assert [r.params["MessageStatus"] for r in received] == ["queued", "sent", "delivered"]
    assert {r.params["MessagingServiceSid"] for r in received} == {SERVICE_SID}
    assert {r.params["From"] for r in received} == {SENDER}
    assert sandbox.messages()[0]["history"] == ["accepted", "queued", "sent", "delivered"]


def test_an_expired_validity_period_fails_the_message(
    sandbox: SandboxServer, webhook_receiver: WebhookReceiver
) -> None:
    sandbox.configure(sent_after_s=30)
    _create(
        sandbox, To=PATIENT, From=SENDER, Body="a", ValidityPeriod="1", StatusCallback=webhook_receiver.url()
    )
    [received] = webhook_receiver.wait(1)
    assert (received.params["MessageStatus"], received.params["ErrorCode"]) == ("failed", "30036")
    assert sandbox.messages()[0]["history"] == ["queued", "failed"]


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ({"From": SENDER, "Body": "x"}, 21604),
        ({"To": PATIENT, "From": SENDER}, 21602),
        ({"To": PATIENT, "Body": "x"}, 21603),
        ({"To": PATIENT, "From": "not a number!", "Body": "x"}, 21212),
        ({"To": PATIENT, "MessagingServiceSid": "MG123", "Body": "x"}, 21701),
        ({"To": "+1555", "From": SENDER, "Body": "x"}, 21211),
        ({"To": PATIENT, "From": SENDER, "Body": "x" * 1601}, 21617),
        ({"To": PATIENT, "From": SENDER, "Body": "x", "ValidityPeriod": "36001"}, 21624),
        ({"To": PATIENT, "From": SENDER, "Body": "x", "StatusCallback": "ftp://example.org"}, 21609),
        *[
            ({"To": PATIENT, "From": SENDER, "Body": "x", "StatusCallback": url}, 21609)
            for url in (
                "https://outreach_web.example.org/twilio/status",  # underscores are not allowed
                "http://outreach_web:8000/twilio/status",  # a compose service name
                "https:///twilio/status",
                "https://example.org/" + "x" * 4000,
            )
        ],
    ],
)
def test_creates_are_validated_like_twilio(sandbox: SandboxServer, form: dict[str, str], code: int) -> None:
    answer = _create(sandbox, **form)
    assert answer.status_code == 400
    assert answer.json()["code"] == code
    assert answer.json()["more_info"] == f"https://www.twilio.com/docs/errors/{code}"
    assert sandbox.messages() == []


def test_a_status_callback_host_with_an_underscore_is_refused_through_the_client(
    sandbox: SandboxServer, webhook_receiver: WebhookReceiver
) -> None:
    with pytest.raises(TwilioRestException) as refused:
        _client(sandbox).messages.create(
            to=PATIENT, from_=SENDER, body="x", status_callback="https://clinic_a.example.org/twilio/status"
        )
    assert (refused.value.status, refused.value.code) == (400, 21609)
    assert sandbox.messages() == []

    # The underscore rule is the host's alone: paths and query strings may have them.
    url = webhook_receiver.url("/twilio_status?site=north_1")
    assert _create(sandbox, To=PATIENT, From=SENDER, Body="x", StatusCallback=url).status_code == 201
    assert [r.url for r in webhook_receiver.wait(2)] == [url, url]
    assert _valid_callback_url("https://clinic-a.example.org:8443/twilio/status")  # hyphens, ports


def test_numbers_are_normalized_and_segments_counted(sandbox: SandboxServer) -> None:
    created = _create(sandbox, To="(617) 555-0123", From=SENDER, Body="é" + "a" * 160).json()
    assert (created["to"], created["num_segments"]) == (PATIENT, "2")
    emoji = _create(sandbox, To=PATIENT, From=SENDER, Body="Hi 👋").json()
    assert emoji["num_segments"] == "1"
    assert [m["segments"] for m in sandbox.messages()] == [2, 1]


def test_list_filters_and_pages_like_twilio(sandbox: SandboxServer) -> None:
    sids = [_create(sandbox, To=PATIENT, From=SENDER, Body=f"m{i}").json()["sid"] for i in range(5)]
    _create(sandbox, To="+16175550124", From=SENDER, Body="other")
    client = _client(sandbox)

    listed = client.messages.list(to=PATIENT, page_size=2)
    assert [m.sid for m in listed] == sids[::-1]
    page = client.messages.page(to=PATIENT, page_size=2)
    assert page.next_page_url is not None and "PageToken=PA" in page.next_page_url
    assert len(client.messages.list(page_size=50)) == 6
    now = dt.datetime.now(dt.UTC)
    assert client.messages.list(to=PATIENT, date_sent_after=now + dt.timedelta(hours=1)) == []
    assert len(client.messages.list(to=PATIENT, date_sent_before=now + dt.timedelta(hours=1))) == 5
    assert len(client.messages.list(date_sent=now.date())) == 6


def test_unknown_message_and_unknown_path_answer_twilio_404(sandbox: SandboxServer) -> None:
    auth = (sandbox.account_sid, sandbox.auth_token)
    missing = requests.get(_api(sandbox, f"Messages/SM{'0' * 32}.json"), auth=auth, timeout=10)
    other_account = requests.get(
        f"{sandbox.url}/2010-04-01/Accounts/AC{'0' * 32}/Messages.json", auth=auth, timeout=10
    )
    nowhere = requests.get(f"{sandbox.url}/2010-04-01/Nowhere.json", auth=auth, timeout=10)
    for answer in (missing, other_account, nowhere):
        assert (answer.status_code, answer.json()["code"], answer.json()["status"]) == (404, 20404, 404)


def test_bad_or_missing_credentials_get_401(sandbox: SandboxServer) -> None:
    for auth in [(sandbox.account_sid, "wrong"), ("AC" + "0" * 32, sandbox.auth_token), None]:
        answer = requests.post(
            _api(sandbox), data={"To": PATIENT, "From": SENDER, "Body": "x"}, auth=auth, timeout=10
        )
        assert (answer.status_code, answer.json()["code"]) == (401, 20003)
        assert answer.headers["www-authenticate"].startswith("Basic")
    assert sandbox.messages() == []


def test_faults_can_be_changed_at_runtime_over_http(sandbox: SandboxServer) -> None:
    changed = requests.post(f"{sandbox.url}/_sandbox/config", json={"p429": 1.0, "seed": 7}, timeout=10)
    assert changed.status_code == 200 and changed.json()["p429"] == 1.0
    assert _create(sandbox, To=PATIENT, From=SENDER, Body="x").status_code == 429
    assert requests.get(f"{sandbox.url}/_sandbox/config", timeout=10).json()["seed"] == 7

    refused = requests.post(f"{sandbox.url}/_sandbox/config", json={"p429": 0.7, "p500": 0.7}, timeout=10)
    assert refused.status_code == 422
    assert requests.post(f"{sandbox.url}/_sandbox/config", json={"p4299": 1}, timeout=10).status_code == 422
    assert sandbox.state.config.p429 == 1.0  # a rejected change changes nothing

    requests.post(
        f"{sandbox.url}/_sandbox/config", json={"p429": 0, "reject": {"(617) 555-0123": 21610}}, timeout=10
    )
    assert _create(sandbox, To=PATIENT, From=SENDER, Body="x").json()["code"] == 21610


def test_record_and_reset_over_http(sandbox: SandboxServer) -> None:
    sid = _create(sandbox, To=PATIENT, From=SENDER, Body="hello there").json()["sid"]
    [record] = requests.get(f"{sandbox.url}/_sandbox/messages", timeout=10).json()
    assert (record["sid"], record["to"], record["body"], record["segments"]) == (
        sid,
        PATIENT,
        "hello there",
        1,
    )
    assert requests.get(f"{sandbox.url}/_sandbox/stats", timeout=10).json()["total"] == 1
    assert requests.post(f"{sandbox.url}/_sandbox/reset", timeout=10).json() == {"reset": True}
    assert sandbox.messages() == [] and sandbox.stats()["total"] == 0


def test_same_seed_same_faults() -> None:
    def faults(seed: int) -> list[str | None]:
        state = SandboxState(
            "AC" + "1" * 32, "t", SandboxConfig(p429=0.3, p500=0.2, p_timeout=0.1, seed=seed)
        )
        return [state.draw_fault() for _ in range(200)]

    first = faults(11)
    assert first == faults(11)
    assert first != faults(12)
    assert {"429", "500", "timeout", None} == set(first)


def test_stats_count_messages_and_segments_per_second() -> None:
    start = dt.datetime(2026, 3, 2, 15, 0, 0, 500000, tzinfo=dt.UTC)
    offsets = iter([0.0, 0.2, 0.4, 0.9, 1.3, 3.0])
    times: list[dt.datetime] = []

    def clock() -> dt.datetime:
        when = start + dt.timedelta(seconds=next(offsets))
        times.append(when)
        return when

    state = SandboxState("AC" + "1" * 32, "t", clock=clock)
    for segments in [1, 2, 1, 3, 1, 2]:
        state.accept(
            to=PATIENT,
            from_=SENDER,
            messaging_service_sid=None,
            body="x",
            segments=segments,
            status_callback=None,
            validity_period=None,
        )
    stats = state.stats()
    assert (stats["total"], stats["segments"]) == (6, 10)
    assert stats["per_second"] == {
        "2026-03-02T15:00:00Z": 3,
        "2026-03-02T15:00:01Z": 2,
        "2026-03-02T15:00:03Z": 1,
    }
    assert stats["segments_per_second"] == {
        "2026-03-02T15:00:00Z": 4,
        "2026-03-02T15:00:01Z": 4,
        "2026-03-02T15:00:03Z": 2,
    }
    # Sliding windows: [0.0, 1.0) holds 4 messages of 1 + 2 + 1 + 3 segments; no window holds more.
    assert (stats["max_per_second"], stats["max_segments_per_second"]) == (4, 7)
    assert [m["accepted_at"] for m in state.messages()] == [t.isoformat() for t in times]


def test_concurrent_creates_are_each_recorded_once(sandbox: SandboxServer) -> None:
    sandbox.configure(latency_ms=20)
    numbers = [f"+161755501{i:02d}" for i in range(100)]

    def send(number: str) -> dict[str, Any]:
        answer = _create(sandbox, To=number, From=SENDER, Body="hello")
        assert answer.status_code == 201
        result: dict[str, Any] = answer.json()
        return result

    with ThreadPoolExecutor(max_workers=20) as pool:
        created = list(pool.map(send, numbers))
    records = sandbox.messages()
    assert sorted(m["to"] for m in records) == sorted(numbers)
    assert len({m["sid"] for m in records}) == 100
    assert {m["sid"] for m in records} == {c["sid"] for c in created}
    assert sandbox.stats()["total"] == 100


def test_reply_planner_posts_signed_inbound_webhooks(
    sandbox: SandboxServer, webhook_receiver: WebhookReceiver
) -> None:
    def planner(message: SandboxMessage) -> Sequence[PlannedReply]:
        return [PlannedReply(after_s=0, body="YES")] if message.to == PATIENT else []

    sandbox.state.replies = planner
    sandbox.configure(inbound_url=webhook_receiver.url("/twilio/inbound"))
    sid = _create(sandbox, To=PATIENT, From=SENDER, Body="Reply YES for a kit").json()["sid"]
    [reply] = webhook_receiver.wait(1)

    assert reply.url.endswith("/twilio/inbound")
    assert (reply.params["From"], reply.params["To"], reply.params["Body"]) == (PATIENT, SENDER, "YES")
    assert re.match(r"^SM[0-9a-f]{32}$", reply.params["MessageSid"]) and reply.params["MessageSid"] != sid
    _assert_signed(sandbox, [reply])
    assert sandbox.inbound() == [reply.params]
    assert "OptOutType" not in reply.params  # Advanced Opt-Out is off by default


def test_inbound_webhooks_carry_twilios_geographic_fields(
    sandbox: SandboxServer, webhook_receiver: WebhookReceiver
) -> None:
    new_yorker, londoner = "+12125550143", "+442071838750"
    sandbox.state.replies = lambda message: [PlannedReply(after_s=0, body="YES")]
    sandbox.configure(inbound_url=webhook_receiver.url("/twilio/inbound"))
    for number in (PATIENT, new_yorker, londoner):
        _create(sandbox, To=number, From=SENDER, Body="Reply YES for a kit")
    received = webhook_receiver.wait(3)
    replies = {r.params["From"]: r.params for r in received}

    # All eight, always: empty where unknown (no ZIP; a 617 number names only its state), the
    # country from the number. Twilio's magic test sender is a US number in no particular place.
    geo = ("City", "State", "Zip", "Country")
    assert {f"From{k}": replies[PATIENT][f"From{k}"] for k in geo} == {
        "FromCity": "",
        "FromState": "MA",
        "FromZip": "",
        "FromCountry": "US",
    }
    assert {f"From{k}": replies[new_yorker][f"From{k}"] for k in geo} == {
        "FromCity": "NEW YORK",
        "FromState": "NY",
        "FromZip": "",
        "FromCountry": "US",
    }
    assert {f"From{k}": replies[londoner][f"From{k}"] for k in geo} == {
        "FromCity": "",
        "FromState": "",
        "FromZip": "",
        "FromCountry": "GB",
    }
    for params in replies.values():
        assert {f"To{k}": params[f"To{k}"] for k in geo} == {
            "ToCity": "",
            "ToState": "",
            "ToZip": "",
            "ToCountry": "US",
        }
    _assert_signed(sandbox, received)


def _replies_with_opt_out_type(
    sandbox: SandboxServer, webhook_receiver: WebhookReceiver, bodies: Sequence[str]
) -> dict[str, str | None]:
    """Each body in `bodies` sent back by its own patient; the OptOutType each reply carried."""
    numbers = {f"+161755502{i:02d}": body for i, body in enumerate(bodies)}
    sandbox.state.replies = lambda message: [PlannedReply(after_s=0, body=numbers[message.to])]
    sandbox.configure(inbound_url=webhook_receiver.url("/twilio/inbound"))
    for number in numbers:
        _create(sandbox, To=number, From=SENDER, Body="Reply YES for a kit")
    received = webhook_receiver.wait(len(numbers))
    _assert_signed(sandbox, received)  # OptOutType is signed like every other parameter
    return {r.params["Body"]: r.params.get("OptOutType") for r in received}


def test_advanced_opt_out_adds_opt_out_type_for_a_reply_that_is_one_keyword(
    sandbox: SandboxServer, webhook_receiver: WebhookReceiver
) -> None:
    turned_on = requests.post(f"{sandbox.url}/_sandbox/config", json={"advanced_opt_out": True}, timeout=10)
    assert turned_on.status_code == 200 and turned_on.json()["opt_out_keywords"]["REMOVE"] == "STOP"
    bodies = ["STOP", "stop", " Unsubscribe. ", "Remove", "start", "YES", "unstop", "HELP", "info"]
    bodies += ["STOP please", "please stop texting me", "Call me", "", "👍"]

    assert _replies_with_opt_out_type(sandbox, webhook_receiver, bodies) == {
        "STOP": "STOP",
        "stop": "STOP",
        " Unsubscribe. ": "STOP",
        "Remove": "STOP",  # the custom word: only Twilio knows it is an opt-out
        "start": "START",
        "YES": "START",
        "unstop": "START",
        "HELP": "HELP",
        "info": "HELP",
        "STOP please": None,  # a keyword among other words is not one (Twilio: single-word messages)
        "please stop texting me": None,
        "Call me": None,
        "": None,
        "👍": None,
    }


def test_advanced_opt_out_keywords_are_configurable_and_absent_when_it_is_off(
    sandbox: SandboxServer, webhook_receiver: WebhookReceiver
) -> None:
    assert _replies_with_opt_out_type(sandbox, webhook_receiver, ["STOP", "HELP"]) == {
        "STOP": None,
        "HELP": None,
    }
    sandbox.reset()
    changed = requests.post(
        f"{sandbox.url}/_sandbox/config",
        json={"advanced_opt_out": True, "opt_out_keywords": {"basta": "stop", "AYUDA": "help"}},
        timeout=10,
    )
    assert changed.json()["opt_out_keywords"] == {"BASTA": "STOP", "AYUDA": "HELP"}
    assert _replies_with_opt_out_type(sandbox, webhook_receiver, ["Basta", "ayuda", "STOP"]) == {
        "Basta": "STOP",
        "ayuda": "HELP",
        "STOP": None,  # the map replaces Twilio's defaults
    }
    for bad in ({"NO MORE": "STOP"}, {"QUIT": "MAYBE"}):
        refused = requests.post(f"{sandbox.url}/_sandbox/config", json={"opt_out_keywords": bad}, timeout=10)
        assert refused.status_code == 422
    assert sandbox.state.config.opt_out_keywords == {"BASTA": "STOP", "AYUDA": "HELP"}


def test_every_webhook_carries_its_own_idempotency_token_outside_the_signature(
    sandbox: SandboxServer, webhook_receiver: WebhookReceiver
) -> None:
    sandbox.state.replies = lambda message: [PlannedReply(after_s=0, body="YES")]
    sandbox.configure(inbound_url=webhook_receiver.url("/twilio/inbound"))
    _create(sandbox, To=PATIENT, From=SENDER, Body="Reply YES", StatusCallback=webhook_receiver.url())
    received = webhook_receiver.wait(3)  # sent, delivered, then the reply

    assert sorted(r.url.rsplit("/", 1)[1] for r in received) == ["inbound", "status", "status"]
    tokens = [r.headers["i-twilio-idempotency-token"] for r in received]
    assert all(tokens) and len(set(tokens)) == 3
    _assert_signed(sandbox, received)  # the header is not part of what Twilio signs


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--p429", "2"], "sandbox option p429: Input should be less than or equal to 1"),
        (["--p429", "0.6", "--p500", "0.6"], "p429 + p500 + p_timeout must not exceed 1"),
        (["--reject", "+16175550123"], "expected NUMBER=CODE"),
    ],
)
def test_sandbox_command_refuses_bad_options_in_one_line(args: list[str], says: str) -> None:
    result = CliRunner().invoke(main, ["sandbox", *args])
    assert result.exit_code == 2
    assert says in result.output
    assert "Traceback" not in result.output
