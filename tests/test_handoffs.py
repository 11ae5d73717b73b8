"""The care team's hand-off queue: replies that reach it through the real inbound pipeline, listing,
closing once with an audit row, and the CLI's output and exit codes."""

from __future__ import annotations

import datetime as dt
import itertools
import json

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from outreach.apps.cli import main
from outreach.apps.web.twilio_forms import inbound_form, store_reply
from outreach.campaigns import CampaignFile, parse_campaign
from outreach.config import Settings, get_settings
from outreach.errors import UserError
from outreach.listen.handoffs import HandoffRefused, close_handoff, get_handoff, list_handoffs
from outreach.store.db import session_scope
from outreach.store.models import AuditEntry, Handoff
from tests.factories import seed_invite

PHONE = "+16175550123"
STRANGER = "+16175550188"
T0 = dt.datetime(2026, 3, 2, 15, 0)
CAMPAIGN_YAML = """
id: colorectal-screening
name: Colorectal cancer screening
active: {from: 2026-01-01}
audience: {age: {min: 45, max: 75}}
steps:
  - {id: invite, after: 0d, text: {en: "Hi {first_name}, reply YES or CALL. Reply STOP to opt out."}}
replies:
  - {keywords: [YES], outcome: kit_requested, answer: {en: "Thanks {first_name}, a kit is on its way."}}
  - {keywords: [CALL], outcome: callback_requested, handoff: true, answer: {en: "We will call you."}}
"""
_sids = itertools.count(1)


@pytest.fixture
def settings(engine: Engine) -> Settings:
    return get_settings()


@pytest.fixture
def campaigns(settings: Settings) -> dict[str, CampaignFile]:
    campaign = parse_campaign(CAMPAIGN_YAML, settings=settings)
    return {campaign.id: campaign}


@pytest.fixture
def enrolled(engine: Engine) -> int:
    """Ana, enrolled in colorectal screening, whose invite was delivered: replies belong to it."""
    return seed_invite(engine, phone=PHONE, at=T0)


def reply(
    engine: Engine,
    settings: Settings,
    campaigns: dict[str, CampaignFile],
    body: str,
    *,
    phone: str = PHONE,
    at: dt.datetime = T0,
) -> int | None:
    """A patient's text through the real webhook logic; the hand-off it opened, if any."""
    form = {"MessageSid": f"SM{next(_sids):032d}", "From": phone, "To": "+16175550100", "Body": body}
    with session_scope(engine) as session:
        reply = inbound_form(form, region=settings.default_region)
        result = store_reply(session, reply, settings=settings, campaigns=campaigns, now=at)
    return result.handoff_id


@pytest.fixture
def three(
    engine: Engine, settings: Settings, campaigns: dict[str, CampaignFile], enrolled: int
) -> tuple[int, int, int]:
    """A free-text question, a CALL keyword (handoff rule), and a text from an unknown number."""
    question = reply(engine, settings, campaigns, "Is the kit free? [asking for my mom]", at=T0)
    call = reply(engine, settings, campaigns, "CALL", at=T0 + dt.timedelta(minutes=5))
    stranger = reply(
        engine, settings, campaigns, "who is this", phone=STRANGER, at=T0 + dt.timedelta(minutes=9)
    )
    assert question is not None and call is not None and stranger is not None
    return question, call, stranger


def test_list_is_newest_first_with_patient_campaign_and_reply(
    session: Session, three: tuple[int, int, int]
) -> None:
    question, call, stranger = three

    rows = list_handoffs(session)

    assert [r.id for r in rows] == [stranger, call, question]
    by_id = {r.id: r for r in rows}
    assert (by_id[question].mrn, by_id[question].first_name, by_id[question].campaign) == (
        "m1",
        "Ana",
        "colorectal-screening",
    )
    assert by_id[question].text == "Is the kit free? [asking for my mom]"
    assert by_id[question].reason == "question"
    assert by_id[call].reason == "callback_requested"
    assert (by_id[stranger].mrn, by_id[stranger].campaign, by_id[stranger].phone) == (None, None, STRANGER)
    assert {r.status for r in rows} == {"open"}


def test_close_records_who_when_and_note_with_an_audit_row(
    session: Session, three: tuple[int, int, int]
) -> None:
    question, _call, _stranger = three
    at = T0 + dt.timedelta(hours=2)

    row = close_handoff(session, question, by=" Dana RN ", note="Called back: kit is free", at=at)

    assert (row.status, row.closed_by, row.closed_at, row.note) == (
        "closed",
        "Dana RN",
        at,
        "Called back: kit is free",
    )
    audit = session.scalars(select(AuditEntry).where(AuditEntry.action == "handoff_close")).all()
    assert [(a.actor, a.subject, a.detail, a.at) for a in audit] == [
        ("Dana RN", f"handoff {question}", "Called back: kit is free", at)
    ]
    assert [r.id for r in list_handoffs(session, open_only=True)] == [three[2], three[1]]


def test_closing_twice_is_refused_and_keeps_the_first_close(
    session: Session, three: tuple[int, int, int]
) -> None:
    question = three[0]
    close_handoff(session, question, by="Dana", note="done", at=T0)

    with pytest.raises(HandoffRefused, match=r"already closed \(by Dana, 2026-03-02 15:00 UTC\)"):
        close_handoff(session, question, by="Eve", note="also done", at=T0 + dt.timedelta(hours=1))

    row = get_handoff(session, question)
    assert row is not None and (row.closed_by, row.note) == ("Dana", "done")
    assert len(session.scalars(select(AuditEntry).where(AuditEntry.action == "handoff_close")).all()) == 1


def test_an_unknown_id_is_refused(session: Session) -> None:
    with pytest.raises(HandoffRefused, match="no hand-off 404"):
        close_handoff(session, 404, by="Dana", note="done", at=T0)


@pytest.mark.parametrize(
    ("by", "note", "message"), [("  ", "done", "--by"), ("Dana", " ", "--note"), ("x" * 101, "n", "--by")]
)
def test_a_name_and_a_note_are_required(
    session: Session, three: tuple[int, int, int], by: str, note: str, message: str
) -> None:
    with pytest.raises(UserError, match=message):
        close_handoff(session, three[0], by=by, note=note, at=T0)

    session.rollback()
    assert session.scalar(select(Handoff.status).where(Handoff.id == three[0])) == "open"


# --- CLI ------------------------------------------------------------------------------------------


def test_cli_list_json_shape_masks_numbers_unless_asked(three: tuple[int, int, int]) -> None:
    question, _call, stranger = three

    masked = CliRunner().invoke(main, ["handoffs", "list", "--json"])
    full = CliRunner().invoke(main, ["handoffs", "list", "--json", "--show-numbers"])

    assert masked.exit_code == 0, masked.output
    rows = json.loads(masked.stdout)["handoffs"]
    assert [r["id"] for r in rows][::2] == [stranger, question]
    assert rows[2] == {
        "id": question,
        "opened_at": "2026-03-02T15:00:00+00:00",
        "status": "open",
        "reason": "question",
        "phone": "+1********23",
        "mrn": "m1",
        "first_name": "Ana",
        "campaign": "colorectal-screening",
        "text": "Is the kit free? [asking for my mom]",
        "closed_at": None,
        "closed_by": None,
        "note": None,
    }
    assert PHONE not in masked.stdout
    assert json.loads(full.stdout)["handoffs"][2]["phone"] == PHONE


def test_cli_close_then_list_open(three: tuple[int, int, int], engine: Engine) -> None:
    question, call, stranger = three

    closed = CliRunner().invoke(
        main, ["handoffs", "close", str(question), "--by", "Dana", "--note", "called"]
    )
    listed = CliRunner().invoke(main, ["handoffs", "list", "--open", "--json"])

    assert closed.exit_code == 0, closed.output
    assert f"hand-off {question} closed by Dana" in closed.stdout
    assert [r["id"] for r in json.loads(listed.stdout)["handoffs"]] == [stranger, call]
    with session_scope(engine) as session:
        assert session.scalar(select(AuditEntry.actor).where(AuditEntry.action == "handoff_close")) == "Dana"


@pytest.mark.parametrize("which", ["unknown", "closed"])
def test_cli_close_refusal_is_one_line_and_exit_1(three: tuple[int, int, int], which: str) -> None:
    handoff_id = 999 if which == "unknown" else three[0]
    if which == "closed":
        CliRunner().invoke(main, ["handoffs", "close", str(handoff_id), "--by", "Dana", "--note", "called"])

    result = CliRunner().invoke(
        main, ["handoffs", "close", str(handoff_id), "--by", "Eve", "--note", "again"]
    )

    assert result.exit_code == 1
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert ("no hand-off 999" if which == "unknown" else "already closed (by Dana") in result.stderr
    assert "Traceback" not in result.output


def test_cli_table_shows_replies_as_text_not_markup(three: tuple[int, int, int]) -> None:
    result = CliRunner().invoke(main, ["handoffs", "list"], env={"COLUMNS": "250"})

    assert result.exit_code == 0, result.output
    assert "[asking for my mom]" in result.stdout
    assert "+1********88" in result.stdout and STRANGER not in result.stdout
    assert "3 hand-offs, 3 open" in result.stdout


def test_cli_list_empty(engine: Engine) -> None:
    result = CliRunner().invoke(main, ["handoffs", "list", "--open"])

    assert result.exit_code == 0 and "no open hand-offs" in result.stdout
