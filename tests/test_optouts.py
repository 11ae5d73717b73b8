"""Staff changes to opt-outs: any number format, pending messages canceled, a named person and an
audit row for every change, and no removal without the patient's recorded consent."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from outreach.apps.cli import main
from outreach.errors import UserError
from outreach.listen import consent
from outreach.listen.optouts import OptOutRefused, add_opt_out, list_opt_outs, remove_opt_out
from outreach.store.db import session_scope
from outreach.store.models import AuditEntry, Message, MessageKind, MessageStatus, Patient

PHONE = "+16175550123"
OTHER = "+16175550124"
T0 = dt.datetime(2026, 3, 2, 15, 0)


def _patient(session: Session, mrn: str, phone: str = PHONE) -> None:
    session.add(Patient(mrn=mrn, first_name="Ana", birth_date=dt.date(1960, 1, 1), sex="female", phone=phone))
    session.flush()


def _message(session: Session, step: str, status: MessageStatus, phone: str = PHONE) -> None:
    session.add(
        Message(step_id=step, kind=MessageKind.outreach, phone=phone, body="x", status=status, send_at=T0)
    )
    session.flush()


def _statuses(engine: Engine) -> dict[str, str]:
    with session_scope(engine) as session:
        return {step: status for step, status in session.execute(select(Message.step_id, Message.status))}


def _audit(engine: Engine) -> list[tuple[str, str, str, str | None]]:
    with session_scope(engine) as session:
        rows = session.execute(
            select(AuditEntry.actor, AuditEntry.action, AuditEntry.subject, AuditEntry.detail).order_by(
                AuditEntry.id
            )
        )
        return [(actor, action, subject, detail) for actor, action, subject, detail in rows]


@pytest.mark.parametrize("typed", ["(617) 555-0123", "617.555.0123", "+1 617 555 0123", "1-617-555-0123"])
def test_add_parses_any_human_format_and_cancels_pending(engine: Engine, typed: str) -> None:
    with session_scope(engine) as session:
        _message(session, "queued", MessageStatus.queued)
        _message(session, "planned", MessageStatus.planned)
        _message(session, "sent", MessageStatus.sent)
        _message(session, "other", MessageStatus.queued, phone=OTHER)

    with session_scope(engine) as session:
        change = add_opt_out(
            session, typed, by="Dana", reason="asked at the front desk", at=T0, default_region="US"
        )

    assert (change.phone, change.changed, change.canceled, change.previous) == (PHONE, True, 2, None)
    assert _statuses(engine) == {
        "queued": "canceled",
        "planned": "canceled",
        "sent": "sent",
        "other": "queued",
    }
    assert _audit(engine) == [
        ("Dana", "opt_out", "+1********23", "by staff: asked at the front desk; canceled 2"),
    ]
    with session_scope(engine) as session:
        assert consent.is_opted_out(session, PHONE) and not consent.is_opted_out(session, OTHER)


def test_list_shows_when_by_what_who_and_the_patients_on_the_number(engine: Engine) -> None:
    with session_scope(engine) as session:
        _patient(session, "m2")
        _patient(session, "m1")
        _patient(session, "m3", phone=OTHER)
        consent.record_opt_out(session, PHONE, by="STOP", at=T0)
        add_opt_out(
            session, OTHER, by="Dana", reason=None, at=T0 + dt.timedelta(hours=1), default_region="US"
        )

    with session_scope(engine) as session:
        rows = list_opt_outs(session)

    assert [(r.phone, r.opted_out_at, r.by, r.actor, r.patients) for r in rows] == [
        (OTHER, T0 + dt.timedelta(hours=1), "staff", "Dana", ("m3",)),
        (PHONE, T0, "STOP", "patient", ("m1", "m2")),
    ]


def test_opted_back_in_numbers_are_not_listed(engine: Engine) -> None:
    with session_scope(engine) as session:
        consent.record_opt_out(session, PHONE, by="STOP", at=T0)
        consent.record_opt_in(session, PHONE, by="START", at=T0 + dt.timedelta(minutes=1))

    with session_scope(engine) as session:
        assert list_opt_outs(session) == []


def test_adding_an_existing_opt_out_keeps_the_original_and_audits_late_cancels(engine: Engine) -> None:
    with session_scope(engine) as session:
        consent.record_opt_out(session, PHONE, by="STOP", at=T0)
        _message(session, "late", MessageStatus.queued)

    with session_scope(engine) as session:
        change = add_opt_out(
            session, PHONE, by="Dana", reason=None, at=T0 + dt.timedelta(days=1), default_region="US"
        )

    assert (change.changed, change.canceled) == (False, 1)
    assert change.previous is not None and (change.previous.by, change.previous.opted_out_at) == ("STOP", T0)
    assert _statuses(engine) == {"late": "canceled"}
    late = ("Dana", "cancel_pending", "+1********23", "canceled 1 (already opted out)")
    assert _audit(engine)[1:] == [late]


def test_remove_records_consent_and_who(engine: Engine) -> None:
    with session_scope(engine) as session:
        consent.record_opt_out(session, PHONE, by="staff", at=T0, actor="Dana")

    with session_scope(engine) as session:
        change = remove_opt_out(
            session,
            "617-555-0123",
            by="Eve",
            reason="patient asked by phone 2026-03-05 to resume",
            at=T0 + dt.timedelta(days=3),
            default_region="US",
        )

    assert change.changed and change.previous is not None and not change.previous.blocked_at_provider
    assert _audit(engine)[-1] == (
        "Eve",
        "opt_in",
        "+1********23",
        "by staff: patient asked by phone 2026-03-05 to resume",
    )
    with session_scope(engine) as session:
        assert not consent.is_opted_out(session, PHONE)


def test_remove_refuses_without_a_reason_and_changes_nothing(engine: Engine) -> None:
    with session_scope(engine) as session:
        consent.record_opt_out(session, PHONE, by="STOP", at=T0)

    with pytest.raises(UserError, match="--reason"), session_scope(engine) as session:
        remove_opt_out(session, PHONE, by="Eve", reason="   ", at=T0, default_region="US")

    with session_scope(engine) as session:
        assert consent.is_opted_out(session, PHONE)
    assert [action for _, action, _, _ in _audit(engine)] == ["opt_out"]


def test_remove_of_a_number_not_opted_out_is_refused(engine: Engine) -> None:
    with pytest.raises(OptOutRefused, match=r"\+1\*+23 is not opted out"), session_scope(engine) as session:
        remove_opt_out(session, PHONE, by="Eve", reason="consent on file", at=T0, default_region="US")

    assert _audit(engine) == []


@pytest.mark.parametrize(
    ("number", "by", "message"),
    [("555-0123", "Dana", "NUMBER '555-0123'"), ("not a number", "Dana", "NUMBER"), (PHONE, " ", "--by")],
)
def test_bad_input_is_a_user_error(engine: Engine, number: str, by: str, message: str) -> None:
    with pytest.raises(UserError, match=message), session_scope(engine) as session:
        add_opt_out(session, number, by=by, reason=None, at=T0, default_region="US")

    assert _audit(engine) == []


# --- CLI ------------------------------------------------------------------------------------------


def test_cli_add_list_remove_round_trip(engine: Engine) -> None:
    with session_scope(engine) as session:
        _patient(session, "m1")
        _message(session, "queued", MessageStatus.queued)
    runner = CliRunner()

    added = runner.invoke(
        main, ["optouts", "add", "(617) 555-0123", "--by", "Dana", "--reason", "asked in clinic"]
    )
    masked = runner.invoke(main, ["optouts", "list", "--json"])
    full = runner.invoke(main, ["optouts", "list", "--json", "--show-numbers"])
    removed = runner.invoke(
        main, ["optouts", "remove", "6175550123", "--by", "Eve", "--reason", "signed consent form 2026-03-05"]
    )
    after = runner.invoke(main, ["optouts", "list", "--json"])

    assert added.exit_code == 0, added.output
    assert "+1********23 opted out; 1 pending message canceled" in added.stdout
    row = json.loads(masked.stdout)["optouts"][0]
    assert set(row) == {"phone", "opted_out_at", "by", "actor", "patients"}
    assert (row["phone"], row["by"], row["actor"], row["patients"]) == (
        "+1********23",
        "staff: asked in clinic",
        "Dana",
        ["m1"],
    )
    assert PHONE not in masked.stdout
    assert json.loads(full.stdout)["optouts"][0]["phone"] == PHONE
    assert removed.exit_code == 0, removed.output
    assert "may be texted again" in removed.stdout and removed.stderr == ""
    assert json.loads(after.stdout) == {"optouts": []}
    assert [(actor, action) for actor, action, _, _ in _audit(engine)] == [
        ("Dana", "opt_out"),
        ("Eve", "opt_in"),
    ]


def test_cli_remove_without_reason_is_refused_by_click(engine: Engine) -> None:
    with session_scope(engine) as session:
        consent.record_opt_out(session, PHONE, by="STOP", at=T0)

    result = CliRunner().invoke(main, ["optouts", "remove", PHONE, "--by", "Eve"])

    assert result.exit_code == 2 and "--reason" in result.stderr
    with session_scope(engine) as session:
        assert consent.is_opted_out(session, PHONE)


def test_cli_remove_warns_that_twilio_still_blocks_after_stop(engine: Engine) -> None:
    with session_scope(engine) as session:
        consent.record_opt_out(session, PHONE, by="STOP", at=T0)

    result = CliRunner().invoke(main, ["optouts", "remove", PHONE, "--by", "Eve", "--reason", "verbal, 3/5"])

    assert result.exit_code == 0, result.output
    assert "until the patient texts START" in result.stderr


def test_cli_remove_of_a_number_not_opted_out_exits_1_in_one_line(engine: Engine) -> None:
    result = CliRunner().invoke(main, ["optouts", "remove", PHONE, "--by", "Eve", "--reason", "consent"])

    assert result.exit_code == 1
    assert result.stderr.strip() == "error: +1********23 is not opted out; nothing to remove"


def test_cli_bad_number_is_one_line(engine: Engine) -> None:
    result = CliRunner().invoke(main, ["optouts", "add", "12", "--by", "Dana"])

    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "NUMBER '12'" in result.stderr
    assert "Traceback" not in result.output


def test_cli_list_table_masks_numbers(engine: Engine) -> None:
    with session_scope(engine) as session:
        consent.record_opt_out(session, PHONE, by="stop texting", at=T0)

    result = CliRunner().invoke(main, ["optouts", "list"], env={"COLUMNS": "200"})

    assert result.exit_code == 0, result.output
    assert "+1********23" in result.stdout and PHONE not in result.stdout
    assert "stop texting" in result.stdout and "1 number opted out" in result.stdout


@pytest.mark.parametrize(
    ("by", "blocked"),
    [("STOP", True), ("twilio:21610", True), ("twilio:STOP", True), ("please stop", False), ("staff", False)],
)
def test_an_opt_out_twilio_enforces_is_flagged_so_staff_learn_only_start_lifts_it(
    engine: Engine, by: str, blocked: bool
) -> None:
    """`twilio:STOP` is an opt-out Advanced Opt-Out decided (a custom word such as REMOVE): Twilio
    refuses texts to the number whatever our record says, like after its own STOP."""
    with session_scope(engine) as session:
        consent.record_opt_out(session, PHONE, by=by, at=T0)
        [row] = list_opt_outs(session)

    assert row.blocked_at_provider is blocked
