"""No full phone number in `audit_log` (README, "Audit"; DESIGN.md §7.7): every action that audits a
number, through the CLI, the workspace and the webhooks, is done, then the whole table is scanned.

The numbers are stored masked (outreach.phones.mask), so the scan looks for any E.164 number or bare
run of 10+ digits in any column, and for each number the test used in any format a person types.
What the entries are for keeps working: the opt-out list still names who opted each number out,
and the audit page still finds the consent entries by action and person.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from twilio.request_validator import RequestValidator

from outreach.apps.cli import main
from outreach.listen.optouts import list_opt_outs
from outreach.store.db import session_scope
from outreach.store.models import AuditEntry, Handoff
from tests.workspace_support import Clock, full_sign_in, make_user, patient, reply_from, workspace_client

NOW = dt.datetime(2026, 11, 23, 15, 0)  # Monday 10:00 in New York
TOKEN = "t" * 32  # workspace_client's Twilio auth token
PUBLIC = "http://127.0.0.1:8000"  # and its public URL
CLI_NUMBER = "+16175550123"  # opted out and back in with `outreach optouts`
WEB_NUMBER = "+16175550144"  # opted out and back in on /app/optouts; its conversation's number shown
STOP_NUMBER = "+16175550166"  # a patient texts STOP
CALLBACK_NUMBER = "+16175550188"  # an early status callback (21610) for a message not stored yet
HANDOFF_NUMBER = "+16175550199"  # a hand-off closed with `outreach handoffs close`, its note naming it
NUMBERS = (CLI_NUMBER, WEB_NUMBER, STOP_NUMBER, CALLBACK_NUMBER, HANDOFF_NUMBER)
ANY_NUMBER = re.compile(r"\+\d{8,15}|\b\d{10,15}\b")  # not inside a SID (SM + 32 hex digits)
ROW = re.compile(r'data-testid="inbox-row".*?href="/app/conversations/([^"]+)"', re.S)


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    with workspace_client(engine, Clock(NOW)) as test_client:
        yield test_client


def _signed_post(client: TestClient, path: str, form: dict[str, str]) -> int:
    signature = RequestValidator(TOKEN).compute_signature(PUBLIC + path, form)
    return int(client.post(path, data=form, headers={"X-Twilio-Signature": signature}).status_code)


def _typed_forms(e164: str) -> set[str]:
    """The number as the audit must not hold it: E.164, national digits, and as people type it."""
    digits = e164[2:]
    area, exchange, line = digits[:3], digits[3:6], digits[6:]
    return {e164, e164[1:], digits, f"({area}) {exchange}-{line}", f"{area}-{exchange}-{line}"}


def _cli(*args: str) -> None:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output


def _every_audit_action(client: TestClient, engine: Engine) -> None:
    # The CLI: `outreach optouts add` and `remove`, the number typed as staff type it.
    _cli("optouts", "add", "(617) 555-0123", "--by", "Dana", "--reason", "asked at the front desk")
    _cli("optouts", "add", "617.555.0123", "--by", "Dana")  # already out: nothing new to audit
    _cli("optouts", "remove", "6175550123", "--by", "Eve", "--reason", "signed consent form 2026-11-20")

    # The workspace: a conversation viewed, its number revealed, a text sent; opt-out added and removed.
    secret = make_user(engine, "coord@example.org", "coordinator", NOW)
    csrf = full_sign_in(client, "coord@example.org", secret, NOW)
    ana = patient(engine, "m-ana", WEB_NUMBER)
    reply_from(engine, WEB_NUMBER, f"call me at {WEB_NUMBER} after 5", NOW, sid="SMweb", patient_id=ana)
    public_id = ROW.findall(client.get("/app/inbox").text)[0]
    assert client.get(f"/app/conversations/{public_id}").status_code == 200
    shown = client.post(f"/app/conversations/{public_id}/number", data={"csrf_token": csrf})
    assert f">{WEB_NUMBER}<" in shown.text  # shown to the person who asked, and only audited as asked
    sent = client.post(
        f"/app/conversations/{public_id}/reply",
        data={"body": f"We will call {WEB_NUMBER} at 5", "csrf_token": csrf},
        follow_redirects=True,
    )
    assert sent.status_code == 200
    added = client.post(
        "/app/optouts/add",
        data={"number": "(617) 555-0144", "reason": "asked by phone", "csrf_token": csrf},
        follow_redirects=True,
    )
    assert added.status_code == 200 and "Opted out" in added.text
    blocked = client.post(
        f"/app/conversations/{public_id}/reply", data={"body": "Hello?", "csrf_token": csrf}
    )
    assert blocked.status_code == 409
    removed = client.post(
        "/app/optouts/remove",
        data={"mrn": "m-ana", "reason": "patient asked in clinic 11/23", "csrf_token": csrf},
        follow_redirects=True,
    )
    assert removed.status_code == 200

    # The webhooks: a patient's STOP, and a 21610 callback that arrives before its message is stored.
    stop = {"MessageSid": "SMstop", "AccountSid": "AC" + "0" * 32, "From": STOP_NUMBER, "To": "+16175550100"}
    assert _signed_post(client, "/twilio/inbound", {**stop, "Body": "STOP"}) == 200
    callback = {"MessageSid": "SM" + "0123456789abcdef" * 2, "MessageStatus": "failed", "ErrorCode": "21610"}
    assert _signed_post(client, "/twilio/status", {**callback, "To": CALLBACK_NUMBER}) == 204

    # A hand-off closed from the CLI with a note that names the number as stored (digits only).
    reply_from(engine, HANDOFF_NUMBER, "can someone call me", NOW, sid="SMhandoff", handoff=True)
    with session_scope(engine) as session:
        handoff = session.scalars(select(Handoff.id)).one()
    _cli("handoffs", "close", str(handoff), "--by", "Dana", "--note", "called back on 6175550199, kit mailed")


def test_the_audit_log_holds_no_full_number(client: TestClient, engine: Engine) -> None:
    _every_audit_action(client, engine)
    with session_scope(engine) as session:
        entries = list(session.scalars(select(AuditEntry).order_by(AuditEntry.id)))
    actions = {entry.action for entry in entries}
    expected = {"opt_out", "opt_in", "number_reveal", "message_send", "message_blocked", "status_unmatched"}
    expected |= {"handoff_close"}
    assert expected <= actions, actions  # the scan below covers every action that names a number
    for entry in entries:
        text = " | ".join(str(part) for part in (entry.actor, entry.subject, entry.detail))
        assert ANY_NUMBER.search(text) is None, (entry.action, text)
        for number in NUMBERS:
            assert not any(form in text for form in _typed_forms(number)), (entry.action, text)
    consent = [(e.actor, e.action, e.subject) for e in entries if e.action in ("opt_out", "opt_in")]
    assert consent == [
        ("Dana", "opt_out", "+1********23"),
        ("Eve", "opt_in", "+1********23"),
        ("coord@example.org", "opt_out", "+1********44"),
        ("coord@example.org", "opt_in", "+1********44"),
        ("patient", "opt_out", "+1********66"),
        ("twilio", "opt_out", "+1********88"),
    ]


def test_what_the_entries_are_for_still_works(client: TestClient, engine: Engine) -> None:
    """The opt-out list names who opted each number out (no longer joined from the audit log), and
    the audit page finds the consent entries by action and by person."""
    _every_audit_action(client, engine)
    _cli("optouts", "add", "(617) 555-0123", "--by", "Dana", "--reason", "asked again")
    with session_scope(engine) as session:
        listed = {row.phone: row.actor for row in list_opt_outs(session)}
    assert listed == {CLI_NUMBER: "Dana", STOP_NUMBER: "patient", CALLBACK_NUMBER: "twilio"}

    admin = make_user(engine, "admin@example.org", "admin", NOW)
    client.cookies.clear()
    full_sign_in(client, "admin@example.org", admin, NOW)
    page = client.get("/app/audit?action=opt_out&actor=dana").text
    assert page.count('data-testid="audit-row"') == 2
    assert "+1********23" in page and CLI_NUMBER not in page
