"""Imports never lose or endanger data (issue 10, "Data loss and unsafe output"): the errors report
never overwrites an input and is checked before anything loads, its cells never run as formulas,
an unclosed quote is named with the lines it joined and the rows after it still load, events for
unknown mrns are kept but counted, numbers with an extension are refused, and PostgreSQL gets
fresh statistics for what was loaded."""

from __future__ import annotations

import csv
import datetime as dt
import os
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from outreach.config import get_settings
from outreach.errors import UserError
from outreach.ingest.errorsfile import check_errors_path, errors_files, spreadsheet_safe
from outreach.ingest.roster import RowError, import_events, import_patients, write_errors_csv
from outreach.store.models import Patient, PatientEvent

TODAY = dt.date(2026, 11, 23)
HEADER = "mrn,first_name,last_name,birth_date,sex,phone,language,timezone,postal_code"


def _row(mrn: str, phone_tail: int, first_name: str = "Al") -> str:
    return f"{mrn},{first_name},Lee,1980-01-01,M,(617) 555-{phone_tail:04d},en,,"


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _stored(engine: Engine) -> dict[str, Patient]:
    with Session(engine) as session:
        return {p.mrn: p for p in session.scalars(select(Patient))}


# --- the --errors path -------------------------------------------------------------------------


@pytest.fixture
def roster(tmp_path: Path) -> Path:
    return _write(tmp_path / "roster.csv", [HEADER, _row("A1", 101)])


def _spellings(roster: Path) -> list[Path]:
    """The roster under other names: relative, with `..`, through a symlink, as a hard link."""
    (roster.parent / "sub").mkdir()
    (roster.parent / "link.csv").symlink_to(roster)
    (roster.parent / "linked-folder").symlink_to(roster.parent)
    os.link(roster, roster.parent / "hard.csv")
    return [
        roster,
        Path(os.path.relpath(roster)),  # the tests run in tmp_path (conftest)
        Path("sub/../roster.csv"),
        roster.parent / "sub" / ".." / "roster.csv",
        roster.parent / "link.csv",
        roster.parent / "linked-folder" / "roster.csv",
        roster.parent / "hard.csv",
    ]


def test_an_errors_path_that_is_an_input_is_refused_by_any_spelling(roster: Path) -> None:
    before = roster.read_bytes()
    for spelling in _spellings(roster):
        with pytest.raises(UserError) as refused:
            check_errors_path(spelling, roster)
        message = str(refused.value)
        assert message == (
            f"--errors {spelling} is the input file {roster}; the report would overwrite it, "
            "so give --errors another file name"
        ), spelling
    assert roster.read_bytes() == before


def test_the_sqlite_database_is_protected_like_an_input(roster: Path, tmp_path: Path) -> None:
    from outreach.store.db import engine_for

    database = tmp_path / "outreach.db"
    database.write_bytes(b"SQLite format 3\x00")
    engine = engine_for(f"sqlite:///{database}")
    with pytest.raises(UserError) as refused:
        errors_files(Path("outreach.db"), roster, engine=engine)
    assert str(refused.value) == (
        f"--errors outreach.db is the database file {database}; the report would overwrite it, "
        "so give --errors another file name"
    )
    assert errors_files(tmp_path / "e.csv", roster, engine=engine) == [tmp_path / "e.csv"]
    assert errors_files(Path("x.csv"), roster, engine=engine_for("sqlite://")) == [Path("x.csv")]


def test_the_events_input_is_protected_too_including_the_derived_events_report(tmp_path: Path) -> None:
    roster = _write(tmp_path / "r.csv", [HEADER])
    events = _write(tmp_path / "e.csv", ["mrn,event,date"])
    with pytest.raises(UserError, match=r"is the input file .*e\.csv"):
        errors_files(events, roster, events)
    # errors.csv is free, but the events report beside it would be errors.events.csv: the events file.
    named_like_the_report = _write(tmp_path / "errors.events.csv", ["mrn,event,date"])
    with pytest.raises(UserError, match=r"errors\.events\.csv is the input file"):
        errors_files(tmp_path / "errors.csv", roster, named_like_the_report)
    assert errors_files(tmp_path / "out.csv", roster, events) == [
        tmp_path / "out.csv",
        tmp_path / "out.events.csv",
    ]
    assert errors_files(tmp_path / "out.csv", events) == [tmp_path / "out.csv"]
    assert errors_files(None, roster, events) == [None, None]


NO_FOLDER = "does not exist; create it or choose another path"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (
            "missing/dir/e.csv",
            "--errors {errors}: the folder {tmp}/missing/dir " + NO_FOLDER,
        ),
        (
            "a-file.txt/e.csv",
            "--errors {errors}: {tmp}/a-file.txt is a file, not a folder; choose another path",
        ),
        ("a-folder", "--errors {errors} is a folder; give a file name such as {errors}/errors.csv"),
    ],
)
def test_an_errors_path_that_cannot_be_written_is_refused(
    roster: Path, tmp_path: Path, target: str, message: str
) -> None:
    (tmp_path / "a-file.txt").write_text("x")
    (tmp_path / "a-folder").mkdir()
    errors = tmp_path / target
    with pytest.raises(UserError) as refused:
        errors_files(errors, roster)
    assert str(refused.value) == message.format(errors=errors, tmp=tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_folder_is_refused(
    roster: Path, tmp_path: Path
) -> None:  # pragma: no cover - CI runs as root
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(UserError, match="cannot be written"):
            check_errors_path(locked / "e.csv", roster)
    finally:
        locked.chmod(0o700)


def test_a_writable_errors_path_passes_and_an_old_report_may_be_replaced(
    roster: Path, tmp_path: Path
) -> None:
    old_report = _write(tmp_path / "errors.csv", ["line,column,value,reason"])
    check_errors_path(old_report, roster)
    check_errors_path(tmp_path / "new.csv", roster)
    check_errors_path(Path("relative.csv"), roster)  # the current folder


# --- formula injection -------------------------------------------------------------------------

DANGEROUS = ['=HYPERLINK("http://evil.example","click")', "+1+1", "-2", "@SUM(A1)", "\t=1+1", "\r=1+1"]


@pytest.mark.parametrize("value", DANGEROUS)
def test_a_cell_a_spreadsheet_would_run_is_written_as_text(value: str) -> None:
    assert spreadsheet_safe(value) == "'" + value
    assert spreadsheet_safe("Ann") == "Ann" and spreadsheet_safe("") == ""
    assert spreadsheet_safe("a=b") == "a=b"  # only the first character makes a formula


def test_every_echoed_cell_of_the_errors_csv_is_neutralized(tmp_path: Path) -> None:
    errors = [RowError(2, value, value, value) for value in DANGEROUS]
    errors.append(RowError(9, "phone", "555-1234", "invalid, really"))
    target = tmp_path / "errors.csv"
    write_errors_csv(target, errors)
    with target.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["line", "column", "value", "reason"]
    for value, row in zip(DANGEROUS, rows[1:-1], strict=True):
        assert row == ["2", "'" + value, "'" + value, "'" + value]
    assert rows[-1] == ["9", "phone", "555-1234", "invalid, really"]  # ordinary cells untouched


def test_values_from_a_roster_reach_the_errors_csv_as_text(engine: Engine, tmp_path: Path) -> None:
    path = _write(
        tmp_path / "r.csv",
        [
            HEADER,
            "=1+1,Al,Lee,1980-01-01,@x,+1+1,-2,=cmd|' /C calc'!A0,",  # mrn is fine; four columns are not
            _row("B2", 102, first_name='"=HYPERLINK(""http://x"",""y"")' + "x" * 100 + '"'),
        ],
    )
    result = import_patients(engine, path, settings=get_settings(), today=TODAY)
    assert result.rejected == 2
    target = tmp_path / "errors.csv"
    write_errors_csv(target, result.errors)
    with target.open(encoding="utf-8", newline="") as handle:
        written = list(csv.DictReader(handle))
    values = {(row["line"], row["column"]): row["value"] for row in written}
    assert values == {
        ("2", "sex"): "'@x",
        ("2", "phone"): "'+1+1",
        ("2", "language"): "'-2",
        ("2", "timezone"): "'=cmd|' /C calc'!A0",
        ("3", "first_name"): "'" + '=HYPERLINK("http://x","y")' + "x" * 100,
    }
    assert all(
        not cell.startswith(("=", "+", "-", "@", "\t", "\r")) for row in written for cell in row.values()
    )


# --- an unclosed quote -------------------------------------------------------------------------


def test_an_unclosed_quote_names_the_lines_it_joined_and_the_rows_after_it_load(
    engine: Engine, tmp_path: Path
) -> None:
    lines = [
        HEADER,  # 1
        'A1,"Ann,Lee,1980-01-01,F,(617) 555-0101,en,,02115',  # 2: the quote is never closed
        _row("A2", 102),  # 3
        _row("A3", 103),  # 4
        _row("A4", 104),  # 5
    ]
    result = import_patients(engine, _write(tmp_path / "r.csv", lines), settings=get_settings(), today=TODAY)
    assert [e.describe() for e in result.errors] == [
        "line 2: an unclosed quote joins lines 2–5 into one value; close the quote"
    ]
    assert (result.accepted, result.rejected) == (3, 1)
    assert set(_stored(engine)) == {"A2", "A3", "A4"}


def test_rows_a_later_quote_closed_into_one_value_are_not_loaded_as_one_patient(
    engine: Engine, tmp_path: Path
) -> None:
    """Before, line 3's opening quote closed line 2's, the record came out with the header's four
    fields, and A1 loaded with the first name 'Ann,1980-01-01,(617) 555-0101 A2,Bob"' and A2's
    number while A2 was never seen."""
    lines = [
        "mrn,first_name,birth_date,phone",
        'A1,"Ann,1980-01-01,(617) 555-0101',  # 2
        'A2,"Bob",1980-01-01,(617) 555-0102',  # 3
        'A3,"Cy,1980-01-01,(617) 555-0103',  # 4: another one, to the end of the file
        "A4,Di,1980-01-01,(617) 555-0104",  # 5
    ]
    result = import_patients(engine, _write(tmp_path / "r.csv", lines), settings=get_settings(), today=TODAY)
    assert [e.describe() for e in result.errors] == [
        "line 2: an unclosed quote joins lines 2–3 into one value; close the quote",
        "line 4: an unclosed quote joins lines 4–5 into one value; close the quote",
    ]
    stored = _stored(engine)
    assert set(stored) == {"A2", "A4"}
    assert (stored["A2"].first_name, stored["A2"].phone) == ("Bob", "+16175550102")


def test_an_unclosed_quote_past_the_csv_field_limit_still_loads_every_later_row(
    engine: Engine, tmp_path: Path
) -> None:
    """The csv module stops a value at 131,072 characters; the lines it had swallowed by then are
    read again, and reading goes on after them."""
    rows = [_row(f"L{i}", 100 + i % 900) for i in range(4000)]  # ~180,000 characters
    lines = [HEADER, 'L-bad,"Ann,Lee,1980-01-01,F,(617) 555-0101,en,,', *rows]
    result = import_patients(engine, _write(tmp_path / "r.csv", lines), settings=get_settings(), today=TODAY)
    assert [(e.line, e.reason[:32]) for e in result.errors] == [(2, "an unclosed quote joins lines 2–")]
    joined_to = int(result.errors[0].reason.split("–")[1].split()[0])
    assert 2_000 < joined_to < len(lines)  # the limit, not the end of the file, ended the value
    assert (result.accepted, result.rejected) == (4000, 1)


def test_values_with_a_typed_line_break_still_load(engine: Engine, tmp_path: Path) -> None:
    """What spreadsheets write for a cell with a line break (quoted, closed) is not a mistake, in
    any column, even the first."""
    lines = [
        "first_name,mrn,birth_date,phone,last_name",
        '"Mary\n Ann",N1,1970-01-01,(617) 555-0101,"de la\nCruz, Jr."',
        'Bo,N2,1970-01-01,(617) 555-0102,"Lee\n"',
    ]
    path = tmp_path / "r.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = import_patients(engine, path, settings=get_settings(), today=TODAY)
    assert (result.accepted, result.errors) == (2, [])
    assert _stored(engine)["N1"].last_name == "de la Cruz, Jr."


def test_an_unclosed_quote_in_an_events_file(engine: Engine, tmp_path: Path) -> None:
    lines = [
        "mrn,event,date,code,code_system",
        'E1,fit,2026-01-10,82274,"CPT',  # 2
        "E2,fit,2026-01-11,82274,CPT",  # 3
        "E3,mammogram,2026-01-12,,",  # 4
    ]
    result = import_events(engine, _write(tmp_path / "e.csv", lines), settings=get_settings(), today=TODAY)
    assert [e.describe() for e in result.errors] == [
        "line 2: an unclosed quote joins lines 2–4 into one value; close the quote"
    ]
    with engine.connect() as conn:
        assert sorted(conn.scalars(select(PatientEvent.mrn))) == ["E2", "E3"]


# --- events for unknown mrns -------------------------------------------------------------------


def test_events_for_unknown_mrns_are_kept_counted_and_warned_about(engine: Engine, tmp_path: Path) -> None:
    roster = _write(tmp_path / "r.csv", [HEADER, _row("K1", 101), _row("K2", 102)])
    assert import_patients(engine, roster, settings=get_settings(), today=TODAY).accepted == 2
    lines = ["mrn,event,date"]
    lines += [f"{'K1' if i % 3 else 'X' + str(i)},fit,2026-01-{i % 28 + 1:02d}" for i in range(1, 21)]
    lines.append("K2,fit,someday")  # line 22: rejected, not counted as unknown
    events = _write(tmp_path / "e.csv", lines)

    result = import_events(engine, events, settings=get_settings(), today=TODAY, batch_size=4)
    # Lines 4, 7, 10, 13, 16 and 19 (i = 3, 6, … 18) name X3, X6, …: six events, none a patient's.
    assert result.unknown_mrns == 6
    assert result.warnings == [
        "e.csv: 6 events name mrns that no patient has (lines 4, 7, 10, 13, 16, …); kept, they count "
        "once those patients are imported: check those mrns for typos"
    ]
    assert (result.accepted, result.rejected, result.inserted) == (20, 1, 20)
    assert result.summary() == {
        "accepted": 20,
        "rejected": 1,
        "inserted": 20,
        "updated": 0,
        "unknown_mrns": 6,
    }
    with engine.connect() as conn:
        assert (
            conn.scalar(select(func.count()).select_from(PatientEvent).where(PatientEvent.mrn.like("X%")))
            == 6
        )

    # Counted again on a re-import (they are still unknown), even though nothing new is stored.
    again = import_events(engine, events, settings=get_settings(), today=TODAY)
    assert (again.inserted, again.unknown_mrns) == (0, 6)


def test_one_unknown_mrn_and_none(engine: Engine, tmp_path: Path) -> None:
    _write(tmp_path / "r.csv", [HEADER, _row("K1", 101)])
    import_patients(engine, tmp_path / "r.csv", settings=get_settings(), today=TODAY)
    one = import_events(
        engine,
        _write(tmp_path / "e.csv", ["mrn,event,date", "K1,fit,2026-01-01", "K9,fit,2026-01-01"]),
        settings=get_settings(),
        today=TODAY,
    )
    assert one.unknown_mrns == 1
    assert one.warnings[0].startswith("e.csv: 1 event names an mrn that no patient has (line 3);")
    none = import_events(
        engine,
        _write(tmp_path / "e2.csv", ["mrn,event,date", "K1,fit,2026-02-01"]),
        settings=get_settings(),
        today=TODAY,
    )
    assert (none.unknown_mrns, none.warnings) == (0, [])
    patients = import_patients(engine, tmp_path / "r.csv", settings=get_settings(), today=TODAY)
    assert patients.unknown_mrns is None and "unknown_mrns" not in patients.summary()


# --- phone extensions --------------------------------------------------------------------------


def test_a_roster_number_with_an_extension_rejects_its_row(engine: Engine, tmp_path: Path) -> None:
    lines = [HEADER, "X1,Al,Lee,1980-01-01,M,617-555-0100 ext. 12,en,,", _row("X2", 102)]
    result = import_patients(engine, _write(tmp_path / "r.csv", lines), settings=get_settings(), today=TODAY)
    assert [e.describe() for e in result.errors] == [
        "line 2, phone '617-555-0100 ext. 12': has an extension (12), so it is not a mobile number; "
        "give the patient's mobile number"
    ]
    assert set(_stored(engine)) == {"X2"}


# --- statistics after a bulk load (PostgreSQL) --------------------------------------------------


def _last_analyze(engine: Engine, table: str) -> dt.datetime | None:
    """pg_stat_user_tables for this test's schema; statistics reach other sessions within a second
    or so (each backend flushes its own), so look a few times in fresh transactions."""
    query = text(
        "SELECT last_analyze FROM pg_stat_user_tables WHERE schemaname = current_schema() AND relname = :t"
    )
    with engine.connect() as conn:
        found: dt.datetime | None = conn.execute(query, {"t": table}).scalar()
    return found


def test_imports_analyze_what_they_loaded_on_postgresql(engine: Engine, tmp_path: Path) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("ANALYZE after an import is for PostgreSQL's planner")
    with engine.connect() as conn:
        started = conn.execute(text("SELECT now()")).scalar_one()
    roster = _write(tmp_path / "r.csv", [HEADER, _row("S1", 101), _row("S2", 102)])
    events = _write(tmp_path / "e.csv", ["mrn,event,date", "S1,fit,2026-01-01"])
    import_patients(engine, roster, settings=get_settings(), today=TODAY)
    import_events(engine, events, settings=get_settings(), today=TODAY)
    deadline = time.monotonic() + 10
    fresh: dict[str, bool] = {}
    while time.monotonic() < deadline:
        analyzed = {table: _last_analyze(engine, table) for table in ("patients", "patient_events")}
        fresh = {table: at is not None and at >= started for table, at in analyzed.items()}
        if all(fresh.values()):
            break
        time.sleep(0.2)
    assert fresh == {"patients": True, "patient_events": True}


# --- through the CLI ---------------------------------------------------------------------------
# The commands call `errors_files(...)` before anything is read and print a `warning: …` line per
# `ImportResult.warnings` (outreach/apps/cli/imports.py).


@pytest.mark.parametrize("spelling", ["r.csv", "./r.csv", "sub/../r.csv", "link.csv"])
def test_cli_refuses_an_errors_path_that_is_the_roster(engine: Engine, tmp_path: Path, spelling: str) -> None:
    from click.testing import CliRunner

    from outreach.apps.cli import main

    roster = _write(tmp_path / "r.csv", [HEADER, _row("C1", 101), "C2,Al,Lee,1980-01-01,M,555-1234,en,,"])
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.csv").symlink_to(roster)
    before = roster.read_bytes()
    result = CliRunner().invoke(main, ["patients", "import", str(roster), "--errors", spelling])
    assert result.exit_code == 2, result.output
    assert "is the input file" in result.stderr and result.stderr.strip().count("\n") == 0
    assert roster.read_bytes() == before
    assert _stored(engine) == {}


def test_cli_refuses_the_sqlite_database_as_errors_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a database of its own: unwired, the CLI would write the report over it."""
    from click.testing import CliRunner

    from outreach.apps.cli import main
    from outreach.store.db import engine_for, upgrade

    database = tmp_path / "own.db"
    engine = engine_for(f"sqlite:///{database}")
    upgrade(engine)
    monkeypatch.setenv("OUTREACH_DATABASE_URL", f"sqlite:///{database}")
    before = database.read_bytes()
    roster = _write(tmp_path / "r.csv", [HEADER, _row("C1", 101)])
    result = CliRunner().invoke(main, ["patients", "import", str(roster), "--errors", str(database)])
    assert result.exit_code == 2, result.output
    assert "is the database file" in result.stderr
    assert database.read_bytes() == before


def test_cli_refuses_a_missing_errors_folder_before_importing(engine: Engine, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from outreach.apps.cli import main

    roster = _write(tmp_path / "r.csv", [HEADER, _row("C1", 101), "C2,Al,Lee,1980-01-01,M,555-1234,en,,"])
    result = CliRunner().invoke(main, ["patients", "import", str(roster), "--errors", "missing/dir/e.csv"])
    assert result.exit_code == 2, result.output
    assert f"the folder missing/dir {NO_FOLDER}" in result.stderr
    assert _stored(engine) == {}  # before: C1 was committed, then FileNotFoundError hid C2's reason


def test_cli_events_import_refuses_its_input_and_warns_about_unknown_mrns(
    engine: Engine, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from outreach.apps.cli import main

    events = _write(tmp_path / "e.csv", ["mrn,event,date", "Z1,fit,2026-01-01"])
    refused = CliRunner().invoke(main, ["events", "import", str(events), "--errors", str(events)])
    assert refused.exit_code == 2 and "is the input file" in refused.stderr
    accepted = CliRunner().invoke(main, ["events", "import", str(events)])
    assert accepted.exit_code == 0
    assert "warning: e.csv: 1 event names an mrn that no patient has (line 2);" in accepted.stderr


def test_cli_patients_with_events_checks_the_events_report_path_too(engine: Engine, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from outreach.apps.cli import main

    roster = _write(tmp_path / "r.csv", [HEADER, _row("C1", 101)])
    events = _write(tmp_path / "errors.events.csv", ["mrn,event,date", "C1,fit,2026-01-01"])
    args = [
        "patients",
        "import",
        str(roster),
        "--events",
        str(events),
        "--errors",
        str(tmp_path / "errors.csv"),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "errors.events.csv is the input file" in result.stderr
    assert _stored(engine) == {}
