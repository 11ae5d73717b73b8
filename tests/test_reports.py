"""The funnel report on a hand-built history where every figure is known in advance.

Two campaigns (one active, one not yet), two languages, messages in every status (failures with
different codes, before and after the provider accepted them), cancellations with reasons, replies
credited to the step that prompted them, activations, outcomes, hand-offs and opt-outs credited to
the last message that reached the number.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console
from sqlalchemy import Engine

from outreach.apps.cli import main
from outreach.apps.report_table import print_report
from outreach.errors import UserError
from outreach.outcomes.funnel import funnel
from outreach.store.db import session_scope
from outreach.store.models import (
    Activation,
    Campaign,
    Enrollment,
    Handoff,
    InboundMessage,
    Message,
    MessageKind,
    MessageStatus,
    PhoneConsent,
)
from tests.factories import add_patient, campaign

ON = dt.date(2026, 11, 2)
ALPHA = campaign(id="alpha", name="Alpha")
BETA = campaign(id="beta", name="Beta", active={"from": dt.date(2027, 1, 1)})
FILES = {"alpha": ALPHA, "beta": BETA}


def at(month: int, day: int, hour: int = 14) -> dt.datetime:
    return dt.datetime(2026, month, day, hour)


class History:
    """Builds rows the way the engine leaves them, with only the columns the report reads."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sids = 0

    def message(self, session: Any, enrollment: Enrollment, step: str, status: str, **values: Any) -> None:
        phone = self.phones[enrollment.patient_id]
        if values.pop("accepted", False):
            self.sids += 1
            values["provider_sid"] = f"SM{self.sids:032d}"
        session.add(
            Message(
                enrollment_id=enrollment.id,
                step_id=step,
                phone=phone,
                body="text",
                status=status,
                send_at=values.get("sent_at") or values.get("sending_at") or at(10, 1),
                **values,
            )
        )

    def reply(
        self,
        session: Any,
        enrollment: Enrollment,
        when: dt.datetime,
        *,
        outcome: str | None = None,
        activated: bool = True,
        handoff: str | None = None,
    ) -> None:
        self.sids += 1
        inbound = InboundMessage(
            provider_sid=f"SM{self.sids:032d}",
            from_phone=self.phones[enrollment.patient_id],
            to_phone="+16175550100",
            body="reply",
            received_at=when,
            patient_id=enrollment.patient_id,
            enrollment_id=enrollment.id,
            classification="keyword" if outcome else "free_text",
        )
        session.add(inbound)
        session.flush()
        enrollment.replied_at = when
        if outcome:
            enrollment.outcome, enrollment.outcome_at = outcome, when
        if activated:
            session.add(
                Activation(
                    patient_id=enrollment.patient_id,
                    campaign_id=enrollment.campaign_id,
                    enrollment_id=enrollment.id,
                    inbound_id=inbound.id,
                    activated_at=when,
                    how=outcome or "free_text",
                )
            )
        if handoff:
            session.add(
                Handoff(
                    inbound_id=inbound.id,
                    patient_id=enrollment.patient_id,
                    enrollment_id=enrollment.id,
                    reason=outcome or "free_text",
                    status=handoff,
                    opened_at=when,
                    closed_at=when + dt.timedelta(hours=1) if handoff == "closed" else None,
                )
            )

    def build(self) -> None:
        with session_scope(self.engine) as s:
            s.add_all([Campaign(id=c.id, name=c.name, content_hash="x") for c in FILES.values()])
            p1 = add_patient(s, "p1", phone="(617) 555-0101")
            p2 = add_patient(s, "p2", phone="(617) 555-0102")
            p3 = add_patient(s, "p3", phone="(617) 555-0103", language="es")
            p4 = add_patient(s, "p4", phone="(617) 555-0104", language="es")
            p5 = add_patient(s, "p5", phone="(617) 555-0105")
            add_patient(s, "p6", phone="(617) 555-0106", birth_date=dt.date(1996, 1, 1))  # 30: too young
            p7 = add_patient(s, "p7", phone="(617) 555-0107")
            self.phones = {p.id: p.phone for p in (p1, p2, p3, p4, p5, p7)}

            def enroll(patient: Any, campaign_id: str, day: dt.date, language: str) -> Enrollment:
                e = Enrollment(
                    patient_id=patient.id, campaign_id=campaign_id, enrolled_on=day, language=language
                )
                s.add(e)
                s.flush()
                return e

            e1 = enroll(p1, "alpha", dt.date(2026, 10, 1), "en")
            e2 = enroll(p2, "alpha", dt.date(2026, 10, 1), "en")
            e3 = enroll(p3, "alpha", dt.date(2026, 10, 1), "es")
            e4 = enroll(p4, "alpha", dt.date(2026, 10, 10), "es")
            e5 = enroll(p5, "alpha", dt.date(2026, 10, 10), "en")
            e6 = enroll(p1, "beta", dt.date(2026, 10, 1), "en")
            e7 = enroll(p3, "beta", dt.date(2026, 10, 15), "es")
            e8 = enroll(p7, "beta", dt.date(2026, 9, 1), "en")

            m = self.message
            ok, gone = MessageStatus.delivered, MessageStatus.failed
            m(s, e1, "invite", ok, accepted=True, sent_at=at(10, 1), delivered_at=at(10, 1, 15))
            m(s, e1, "reminder", ok, accepted=True, sent_at=at(10, 8), delivered_at=at(10, 8, 15))
            m(s, e2, "invite", MessageStatus.undelivered, accepted=True, sent_at=at(10, 1), error_code=30003)
            m(s, e2, "reminder", gone, accepted=True, sent_at=at(10, 8), error_code=30008)  # after accept
            m(s, e3, "invite", ok, accepted=True, sent_at=at(10, 1, 15))
            m(s, e3, "reminder", MessageStatus.canceled, cancel_reason="replied", canceled_at=at(10, 2))
            m(s, e4, "invite", gone, sending_at=at(10, 10), error_code=21211)  # refused at create
            m(s, e4, "reminder", MessageStatus.planned)
            m(s, e5, "invite", MessageStatus.unknown, sending_at=at(10, 10))
            m(s, e5, "reminder", MessageStatus.canceled, cancel_reason="opted out", canceled_at=at(10, 11))
            m(s, e6, "invite", MessageStatus.sent, accepted=True, sent_at=at(10, 1, 16))
            m(s, e6, "reminder", MessageStatus.queued)
            m(s, e7, "invite", ok, accepted=True, sent_at=at(10, 15))
            m(s, e7, "reminder", gone, sending_at=at(10, 22), error_code=21610)
            m(s, e8, "invite", ok, accepted=True, sent_at=at(9, 1))
            m(
                s,
                e8,
                "reminder",
                MessageStatus.canceled,
                cancel_reason="campaign ended",
                canceled_at=at(9, 30),
            )
            # An answer to a reply is not a campaign step: it must not show up anywhere.
            m(s, e1, "answer:SMx", ok, accepted=True, kind=MessageKind.answer, sent_at=at(10, 9, 11))

            self.reply(s, e1, at(10, 9, 10), outcome="kit_requested")  # after the reminder
            self.reply(s, e3, at(10, 2), outcome="callback_requested", handoff="open")  # after the invite
            self.reply(s, e6, at(10, 2), handoff="closed")
            self.reply(s, e7, at(10, 16), outcome="kit_requested", handoff="closed")
            self.reply(s, e8, at(9, 2), outcome="not_interested", activated=False)
            # A hand-off from a number no campaign wrote to belongs to no campaign.
            stray = InboundMessage(provider_sid="SMstray", from_phone="+16175550199", to_phone="+1", body="?")
            s.add(stray)
            s.flush()
            s.add(Handoff(inbound_id=stray.id, reason="free_text", status="open"))

            # p5 texted STOP after an ambiguous invite; p3's number was refused with 21610 after
            # beta's invite, which is later than alpha's invite to the same number.
            s.add(PhoneConsent(phone=p5.phone, opted_out_at=at(10, 11), opted_out_by="STOP"))
            s.add(PhoneConsent(phone=p3.phone, opted_out_at=at(10, 22), opted_out_by="twilio:21610"))
            # A number that opted out before any message and came back: credited to nothing.
            s.add(PhoneConsent(phone="+16175550198", opted_out_at=at(8, 1), opted_in_at=at(8, 2)))


def figures(**values: Any) -> dict[str, Any]:
    """Expected FIGURES: zeros and empty breakdowns unless given."""
    out: dict[str, Any] = dict.fromkeys(
        [
            "planned",
            "pending",
            "sent",
            "delivered",
            "undelivered",
            "failed",
            "canceled",
            "unknown",
            "replied",
            "engaged",
            "activated",
            "clicked",
            "gap_closed",
            "opted_out",
        ],
        0,
    )
    out |= {"failed_codes": {}, "undelivered_codes": {}, "cancel_reasons": {}, "opted_out_by": {}}
    out |= {"delivered_pct": None, "replied_pct": None, "engaged_pct": None, "activated_pct": None}
    out |= {"gap_closed_pct": None}
    out.update(values)
    # Without clicks or closures in this history, engagement is exactly the replies (DESIGN.md §8).
    out["engaged"], out["engaged_pct"] = out["replied"], out["replied_pct"]
    if out["sent"] and "gap_closed_pct" not in values:
        out["gap_closed_pct"] = 0.0
    return out


def no_holdout(enrolled: int) -> dict[str, Any]:
    """A campaign without a holdout: everything treated, no lift, and no clicks or closures."""
    return {
        "treated": {"enrolled": enrolled, "gap_closed": 0, "gap_closed_pct": 0.0 if enrolled else None},
        "holdout": {"enrolled": 0, "gap_closed": 0, "gap_closed_pct": None},
        "lift": None,
        "lift_note": "no holdout: set holdout: N% in the campaign to measure lift",
        "days_to_close_median": None,
        "links": {"clicks": 0, "previews": 0},
    }


def days(**active: tuple[int, int]) -> list[dict[str, Any]]:
    """The 30 days up to ON, zeros but for `active` (`oct08=(sent, replies)`)."""
    out = []
    for back in range(29, -1, -1):
        day = ON - dt.timedelta(days=back)
        sent, replies = active.get(day.strftime("%b%d").lower(), (0, 0))
        out.append({"date": day.isoformat(), "sent": sent, "replies": replies})
    return out


def summary(
    enrolled: int, outcomes: dict[str, int], open_: int, closed: int, **values: Any
) -> dict[str, Any]:
    return {
        "enrolled": enrolled,
        **figures(**values),
        "outcomes": outcomes,
        "ended": {},
        "handoffs": {"open": open_, "closed": closed},
    }


ALPHA_INVITE = figures(
    planned=5,
    sent=3,
    delivered=2,
    undelivered=1,
    failed=1,
    unknown=1,
    replied=1,
    activated=1,
    opted_out=1,
    opted_out_by={"STOP": 1},
    failed_codes={"21211": 1},
    undelivered_codes={"30003": 1},
    delivered_pct=66.7,
    replied_pct=33.3,
    activated_pct=33.3,
)
ALPHA_REMINDER = figures(
    planned=5,
    pending=1,
    sent=2,
    delivered=1,
    failed=1,
    canceled=2,
    replied=1,
    activated=1,
    failed_codes={"30008": 1},
    cancel_reasons={"opted out": 1, "replied": 1},
    delivered_pct=50.0,
    replied_pct=50.0,
    activated_pct=50.0,
)
ALPHA_EN = summary(
    3,
    {"kit_requested": 1},
    0,
    0,
    planned=6,
    sent=4,
    delivered=2,
    undelivered=1,
    failed=1,
    canceled=1,
    unknown=1,
    replied=1,
    activated=1,
    opted_out=1,
    opted_out_by={"STOP": 1},
    failed_codes={"30008": 1},
    undelivered_codes={"30003": 1},
    cancel_reasons={"opted out": 1},
    delivered_pct=50.0,
    replied_pct=25.0,
    activated_pct=25.0,
)
ALPHA_ES = summary(
    2,
    {"callback_requested": 1},
    1,
    0,
    planned=4,
    pending=1,
    sent=1,
    delivered=1,
    failed=1,
    canceled=1,
    replied=1,
    activated=1,
    failed_codes={"21211": 1},
    cancel_reasons={"replied": 1},
    delivered_pct=100.0,
    replied_pct=100.0,
    activated_pct=100.0,
)
ALPHA_ALL = summary(
    5,
    {"callback_requested": 1, "kit_requested": 1},
    1,
    0,
    planned=10,
    pending=1,
    sent=5,
    delivered=3,
    undelivered=1,
    failed=2,
    canceled=2,
    unknown=1,
    replied=2,
    activated=2,
    opted_out=1,
    opted_out_by={"STOP": 1},
    failed_codes={"21211": 1, "30008": 1},
    undelivered_codes={"30003": 1},
    cancel_reasons={"opted out": 1, "replied": 1},
    delivered_pct=60.0,
    replied_pct=40.0,
    activated_pct=40.0,
)
BETA_INVITE = figures(
    planned=3,
    sent=3,
    delivered=2,
    replied=3,
    activated=2,
    opted_out=1,
    opted_out_by={"twilio:21610": 1},
    delivered_pct=66.7,
    replied_pct=100.0,
    activated_pct=66.7,
)
BETA_REMINDER = figures(
    planned=3,
    pending=1,
    failed=1,
    canceled=1,
    failed_codes={"21610": 1},
    cancel_reasons={"campaign ended": 1},
)
BETA_EN = summary(
    2,
    {"not_interested": 1},
    0,
    1,
    planned=4,
    pending=1,
    sent=2,
    delivered=1,
    canceled=1,
    replied=2,
    activated=1,
    cancel_reasons={"campaign ended": 1},
    delivered_pct=50.0,
    replied_pct=100.0,
    activated_pct=50.0,
)
BETA_ES = summary(
    1,
    {"kit_requested": 1},
    0,
    1,
    planned=2,
    sent=1,
    delivered=1,
    failed=1,
    replied=1,
    activated=1,
    opted_out=1,
    opted_out_by={"twilio:21610": 1},
    failed_codes={"21610": 1},
    delivered_pct=100.0,
    replied_pct=100.0,
    activated_pct=100.0,
)
BETA_ALL = summary(
    3,
    {"kit_requested": 1, "not_interested": 1},
    0,
    2,
    planned=6,
    pending=1,
    sent=3,
    delivered=2,
    failed=1,
    canceled=1,
    replied=3,
    activated=2,
    opted_out=1,
    opted_out_by={"twilio:21610": 1},
    failed_codes={"21610": 1},
    cancel_reasons={"campaign ended": 1},
    delivered_pct=66.7,
    replied_pct=100.0,
    activated_pct=66.7,
)
EXPECTED_ALPHA = {
    "id": "alpha",
    "name": "Alpha",
    "active": True,
    "eligible": 4,  # p1, p2, p4, p7: p3 and p5 opted out, p6 is too young
    **ALPHA_ALL,
    "steps": [{"step": "invite", **ALPHA_INVITE}, {"step": "reminder", **ALPHA_REMINDER}],
    "languages": [{"language": "en", **ALPHA_EN}, {"language": "es", **ALPHA_ES}],
    **no_holdout(5),
    # In the 30 days to Nov 2: e1's and e2's reminders (Oct 8), e1's reply (Oct 9); the rest is older.
    "daily": days(oct08=(2, 0), oct09=(0, 1)),
}
EXPECTED_BETA = {
    "id": "beta",
    "name": "Beta",
    "active": False,
    "eligible": None,
    **BETA_ALL,
    "steps": [{"step": "invite", **BETA_INVITE}, {"step": "reminder", **BETA_REMINDER}],
    "languages": [{"language": "en", **BETA_EN}, {"language": "es", **BETA_ES}],
    **no_holdout(3),
    "daily": days(oct15=(1, 0), oct16=(0, 1)),  # e7's invite and reply (its reminder was refused)
}
EXPECTED_TOTALS = {
    "campaigns": 2,
    "eligible": 4,
    **summary(
        8,
        {"callback_requested": 1, "kit_requested": 2, "not_interested": 1},
        1,
        2,
        planned=16,
        pending=2,
        sent=8,
        delivered=5,
        undelivered=1,
        failed=3,
        canceled=3,
        unknown=1,
        replied=5,
        activated=4,
        opted_out=2,
        opted_out_by={"STOP": 1, "twilio:21610": 1},
        failed_codes={"21211": 1, "21610": 1, "30008": 1},
        undelivered_codes={"30003": 1},
        cancel_reasons={"campaign ended": 1, "opted out": 1, "replied": 1},
        delivered_pct=62.5,
        replied_pct=62.5,
        activated_pct=50.0,
    ),
    "languages": [
        {
            "language": "en",
            **summary(
                5,
                {"kit_requested": 1, "not_interested": 1},
                0,
                1,
                planned=10,
                pending=1,
                sent=6,
                delivered=3,
                undelivered=1,
                failed=1,
                canceled=2,
                unknown=1,
                replied=3,
                activated=2,
                opted_out=1,
                opted_out_by={"STOP": 1},
                failed_codes={"30008": 1},
                undelivered_codes={"30003": 1},
                cancel_reasons={"campaign ended": 1, "opted out": 1},
                delivered_pct=50.0,
                replied_pct=50.0,
                activated_pct=33.3,
            ),
        },
        {
            "language": "es",
            **summary(
                3,
                {"callback_requested": 1, "kit_requested": 1},
                1,
                1,
                planned=6,
                pending=1,
                sent=2,
                delivered=2,
                failed=2,
                canceled=1,
                replied=2,
                activated=2,
                opted_out=1,
                opted_out_by={"twilio:21610": 1},
                failed_codes={"21211": 1, "21610": 1},
                cancel_reasons={"replied": 1},
                delivered_pct=100.0,
                replied_pct=100.0,
                activated_pct=100.0,
            ),
        },
    ],
    "daily": days(oct08=(2, 0), oct09=(0, 1), oct15=(1, 0), oct16=(0, 1)),
}


@pytest.fixture
def history(engine: Engine) -> Engine:
    History(engine).build()
    return engine


def test_every_figure_of_the_full_report(history: Engine) -> None:
    report = funnel(history, campaigns=FILES, on=ON).as_json()
    assert report == {
        "on": "2026-11-02",
        "since": None,
        "campaigns": [EXPECTED_ALPHA, EXPECTED_BETA],
        "totals": EXPECTED_TOTALS,
        "sender_holds": [],
    }


def test_one_campaign_has_the_same_figures_as_in_the_full_report(history: Engine) -> None:
    report = funnel(history, campaign_id="beta", campaigns=FILES, on=ON).as_json()
    assert report["campaigns"] == [EXPECTED_BETA]
    assert report["totals"]["enrolled"] == 3
    assert report["totals"]["opted_out"] == 1


def test_since_keeps_enrollments_from_that_day(history: Engine) -> None:
    report = funnel(history, since=dt.date(2026, 10, 5), campaigns=FILES, on=ON).as_json()
    alpha, beta = report["campaigns"]
    assert report["since"] == "2026-10-05"
    # alpha: e4 (es) and e5 (en) from Oct 10; eligibility is about today and is not filtered.
    assert {k: alpha[k] for k in ("eligible", "enrolled", "planned", "pending", "sent", "failed")} == {
        "eligible": 4,
        "enrolled": 2,
        "planned": 4,
        "pending": 1,
        "sent": 0,
        "failed": 1,
    }
    assert (alpha["unknown"], alpha["opted_out"], alpha["replied"], alpha["cancel_reasons"]) == (
        1,
        1,
        0,
        {"opted out": 1},
    )
    assert [lang["language"] for lang in alpha["languages"]] == ["en", "es"]
    # beta: only e7 (es) from Oct 15.
    assert beta == {
        "id": "beta",
        "name": "Beta",
        "active": False,
        "eligible": None,
        **BETA_ES,
        "steps": [
            {
                "step": "invite",
                **figures(
                    planned=1,
                    sent=1,
                    delivered=1,
                    replied=1,
                    activated=1,
                    opted_out=1,
                    opted_out_by={"twilio:21610": 1},
                    delivered_pct=100.0,
                    replied_pct=100.0,
                    activated_pct=100.0,
                ),
            },
            {"step": "reminder", **figures(planned=1, failed=1, failed_codes={"21610": 1})},
        ],
        "languages": [{"language": "es", **BETA_ES}],
        **no_holdout(1),
        "daily": days(oct15=(1, 0), oct16=(0, 1)),
    }


def test_without_campaign_files_the_history_is_still_reported(history: Engine) -> None:
    report = funnel(history, on=ON).as_json()
    alpha = report["campaigns"][0]
    assert (alpha["active"], alpha["eligible"], report["totals"]["eligible"]) == (None, None, None)
    assert [step["step"] for step in alpha["steps"]] == ["invite", "reminder"]
    assert alpha["planned"] == ALPHA_ALL["planned"]


def test_a_campaign_with_no_history_shows_its_steps_at_zero(engine: Engine) -> None:
    report = funnel(engine, campaigns={"alpha": ALPHA}, on=ON).as_json()
    (alpha,) = report["campaigns"]
    assert alpha["eligible"] == 0
    assert alpha["steps"] == [{"step": "invite", **figures()}, {"step": "reminder", **figures()}]
    assert alpha["languages"] == []


def test_unknown_campaign_is_a_user_error(history: Engine) -> None:
    with pytest.raises(UserError, match=r"no campaign 'nope'.*alpha, beta"):
        funnel(history, campaign_id="nope", campaigns=FILES, on=ON)


def test_printed_report_shows_tables_and_breakdowns(history: Engine) -> None:
    console = Console(record=True, width=160)
    print_report(funnel(history, campaigns=FILES, on=ON), console)
    text = console.export_text()
    assert "alpha: Alpha (4 eligible on 2026-11-02, 5 enrolled)" in text
    assert "beta: Beta (not active on 2026-11-02, 3 enrolled)" in text
    assert "All campaigns (4 eligible, 8 enrolled)" in text
    assert "failed by code: 21211 1, 30008 1" in text
    assert "canceled by reason: opted out 1, replied 1" in text
    assert "outcomes: callback_requested 1, kit_requested 2, not_interested 1" in text
    assert "hand-offs: 1 open, 2 closed" in text
    rows = [line.split() for line in text.splitlines()]
    assert ["invite", "5", "0", "3", "2", "1", "1", "0", "1"] in rows  # alpha's delivery row
    assert ["all", "steps", "5", "2", "2", "1", "60.0", "40.0", "40.0"] in rows  # alpha's engagement


CAMPAIGN_YAML = """
id: alpha
name: Alpha
active: {from: 2026-01-01}
audience: {age: {min: 40, max: 75}, sex: any}
steps:
  - {id: invite, after: 0d, text: {en: "Hi {first_name}. Reply STOP to opt out."}}
  - {id: reminder, after: 7d, text: {en: "Hi again {first_name}. Reply STOP to opt out."}}
"""


def test_cli_json_and_errors(history: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "campaigns"
    folder.mkdir()
    (folder / "alpha.yaml").write_text(CAMPAIGN_YAML)
    monkeypatch.setenv("OUTREACH_CAMPAIGNS_DIR", str(folder))
    runner = CliRunner()

    result = runner.invoke(main, ["report", "alpha", "--json", "--on", "2026-11-02"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["campaigns"] == [EXPECTED_ALPHA]

    result = runner.invoke(main, ["report", "--since", "2026-10-05", "--on", "2026-11-02"])
    assert result.exit_code == 0, result.output
    assert "alpha: Alpha (4 eligible on 2026-11-02, 2 enrolled for enrollments since 2026-10-05)" in (
        " ".join(result.stdout.split())
    )
    assert "beta: Beta (campaign file not loaded, 1 enrolled" in " ".join(result.stdout.split())

    result = runner.invoke(main, ["report", "nope"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: no campaign 'nope' in the database or the campaign files; known: alpha, beta"
    ]

    result = runner.invoke(main, ["report", "--since", "last week"])
    assert result.exit_code == 2
    assert "--since: 'last week' is not a date" in result.stderr
