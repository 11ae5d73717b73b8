"""`optouts remove` without the full number nobody can see: by the patient's mrn, or by the
masked number exactly as `optouts list` shows it (when no other opted-out number looks the same)."""

from __future__ import annotations

import datetime as dt

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine

from outreach.apps.cli import main
from outreach.listen.optouts import list_opt_outs
from outreach.store.db import session_scope
from outreach.store.models import Patient

PHONE, LOOKALIKE, OTHER = "+16175550123", "+16175559923", "+16175550145"  # the first two mask alike


@pytest.fixture
def opted_out(engine: Engine) -> Engine:
    """Ana on PHONE and Ben on OTHER, both opted out by staff."""
    with session_scope(engine) as session:
        for mrn, phone in (("M-ANA", PHONE), ("M-BEN", OTHER)):
            session.add(
                Patient(mrn=mrn, first_name=mrn, birth_date=dt.date(1960, 1, 1), sex="female", phone=phone)
            )
    for phone in (PHONE, OTHER):
        added = invoke(["optouts", "add", phone, "--by", "Dana"])
        assert added.exit_code == 0, added.output
    return engine


def invoke(args: list[str]) -> Result:
    return CliRunner().invoke(main, args)


def still_opted_out(engine: Engine) -> set[str]:
    with session_scope(engine) as session:
        return {row.phone for row in list_opt_outs(session)}


def remove(*args: str) -> Result:
    return invoke(["optouts", "remove", *args, "--by", "Eve", "--reason", "asked at the front desk 3/5"])


def test_remove_by_mrn(opted_out: Engine) -> None:
    result = remove("--mrn", "M-ANA")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "+1********23 may be texted again"
    assert still_opted_out(opted_out) == {OTHER}


def test_remove_by_the_masked_number_the_list_shows(opted_out: Engine) -> None:
    listed = invoke(["optouts", "list"])
    assert "+1********45" in listed.stdout
    result = remove("+1********45")
    assert result.exit_code == 0, result.output
    assert still_opted_out(opted_out) == {PHONE}


def test_a_masked_number_two_opted_out_numbers_share_is_refused(opted_out: Engine) -> None:
    assert invoke(["optouts", "add", LOOKALIKE, "--by", "Dana"]).exit_code == 0
    result = remove("+1********23")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: NUMBER '+1********23': 2 opted-out numbers show as that; give the number in full or --mrn "
        "(patients on them: M-ANA)"
    )
    assert still_opted_out(opted_out) == {PHONE, LOOKALIKE, OTHER}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "error: optouts remove: give exactly one of NUMBER (as listed, or in full) and --mrn MRN"),
        ((PHONE, "--mrn", "M-ANA"), "error: optouts remove: give exactly one of NUMBER"),
        (("--mrn", "NOPE"), "error: --mrn: no patient with mrn 'NOPE'"),
        (("+1********99",), "error: NUMBER '+1********99': no opted-out number shows as that"),
    ],
)
def test_exactly_one_known_way_to_name_the_number(
    opted_out: Engine, args: tuple[str, ...], message: str
) -> None:
    result = remove(*args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(message) and len(result.stderr.strip().splitlines()) == 1
    assert still_opted_out(opted_out) == {PHONE, OTHER}


def test_a_patient_whose_number_is_not_opted_out_exits_1(opted_out: Engine) -> None:
    assert remove("--mrn", "M-BEN").exit_code == 0
    again = remove("--mrn", "M-BEN")
    assert again.exit_code == 1
    assert again.stderr.strip() == "error: +1********45 is not opted out; nothing to remove"
