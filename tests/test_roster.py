"""Roster and events import: every rejected row names its physical line, good rows always load,
re-imports are idempotent, and the CLI's exit codes and --json shape hold."""

from __future__ import annotations

import csv
import datetime as dt
import importlib.util
import json
import tempfile
from pathlib import Path
from types import ModuleType

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, func, select, update

from outreach.apps.cli import main
from outreach.apps.progress import FileProgress
from outreach.config import get_settings
from outreach.errors import UserError
from outreach.ingest import csvfile
from outreach.ingest.roster import ImportResult, RowError, import_events, import_patients, write_errors_csv
from outreach.store.db import session_scope
from outreach.store.models import Patient, PatientEvent

ROOT = Path(__file__).resolve().parent.parent
TODAY = dt.date(2026, 11, 23)
HEADER = "mrn,first_name,last_name,birth_date,sex,phone,language,timezone,postal_code"


def _generate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("samples_generate", ROOT / "samples" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(path: Path, lines: list[str], newline: str = "\n", bom: bool = False) -> Path:
    text = newline.join(lines) + newline
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def _errors(result: ImportResult) -> list[tuple[int, str, str]]:
    return [(e.line, e.column, e.value) for e in result.errors]


def _patients(engine: Engine) -> dict[str, Patient]:
    from sqlalchemy.orm import Session

    with Session(engine) as session:
        return {p.mrn: p for p in session.scalars(select(Patient))}


# --- roster: every error class, with physical line numbers ------------------------------------


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_each_bad_row_is_reported_with_its_physical_line(
    engine: Engine, tmp_path: Path, newline: str
) -> None:
    lines = [
        HEADER,  # 1
        'A1,Ann,"Smith',  # 2: a quoted field spanning two lines
        'Jones, Jr.",1980-01-02,F,(617) 555-0101,en,,02115',  # 3
        "A2,Bob,Lee,1980-02-30,M,(617) 555-0102,en,,",  # 4  no such day
        "A3,Cy,Lee,2027-01-01,M,(617) 555-0103,en,,",  # 5  future birth date
        "A4,Di,Lee,1899-12-31,F,(617) 555-0104,en,,",  # 6  before 1900
        "A5,Ed,Lee,1970-05-05,X,(617) 555-0105,en,,",  # 7  unknown sex
        ",Flo,Lee,1970-05-05,F,(617) 555-0106,en,,",  # 8  missing mrn
        "A6,,Lee,1970-05-05,F,(617) 555-0107,en,,",  # 9  missing first_name
        "A1,Gus,Lee,1970-05-05,M,(617) 555-0108,en,,",  # 10 duplicate mrn
        "A7,Hal,Lee,1970-05-05,M,(617) 555-0109,en,Mars/Olympus_Mons,",  # 11 unknown time zone
        "A8,Ida,Lee,1970-05-05,F,(617) 555-0110,english,,",  # 12 bad language
        "A9,Jo,Lee,1970-05-05",  # 13 wrong column count
        "A10,Kim,Lee,1970-05-05,F,555-1234,en,,",  # 14 bad phone
        "A11,Lu,Lee,05/05/1970,F,(617) 555-0111,en,,",  # 15 not YYYY-MM-DD
        "",  # 16 blank: skipped, still counted as a line
        "A12,Mo,Lee,1970-05-05,male,+1 907 555 0112,ES,america/anchorage,99501",  # 17 good
        "A13,Ned,Lee,,M,(617) 555-0113,en,,",  # 18 missing birth date
    ]
    path = _write(tmp_path / "roster.csv", lines, newline)

    result = import_patients(engine, path, settings=get_settings(), today=TODAY)

    assert _errors(result) == [
        (4, "birth_date", "1980-02-30"),
        (5, "birth_date", "2027-01-01"),
        (6, "birth_date", "1899-12-31"),
        (7, "sex", "X"),
        (8, "mrn", ""),
        (9, "first_name", ""),
        (10, "mrn", "A1"),
        (11, "timezone", "Mars/Olympus_Mons"),
        (12, "language", "english"),
        (13, "", ""),
        (14, "phone", "555-1234"),
        (15, "birth_date", "05/05/1970"),
        (18, "birth_date", ""),
    ]
    reasons = {e.line: e.reason for e in result.errors}
    assert reasons[4] == "no such day in the calendar"
    assert reasons[5].startswith("in the future")
    assert "1900" in reasons[6]
    assert "female, male" in reasons[7]
    assert reasons[10] == "duplicate mrn (first on line 2)"
    assert "IANA" in reasons[11]
    assert "2 or 3 letter" in reasons[12]
    assert reasons[13] == "expected 9 fields as in the header, found 4"
    assert "invalid phone number" in reasons[14]
    assert "YYYY-MM-DD" in reasons[15]
    assert (result.accepted, result.rejected, result.inserted, result.updated) == (2, 13, 2, 0)

    stored = _patients(engine)
    assert set(stored) == {"A1", "A12"}
    assert stored["A1"].last_name == "Smith Jones, Jr."  # the line break inside the name is folded
    assert (stored["A1"].sex, stored["A1"].phone, stored["A1"].postal_code) == (
        "female",
        "+16175550101",
        "02115",
    )
    assert stored["A1"].phone_zones == "America/New_York"
    assert stored["A1"].language == "en" and stored["A1"].timezone is None
    a12 = stored["A12"]
    assert (a12.sex, a12.language, a12.timezone) == ("male", "es", "America/Anchorage")
    assert a12.phone == "+19075550112" and a12.phone_zones == "America/Adak America/Anchorage"


def test_one_row_with_several_problems_counts_once(engine: Engine, tmp_path: Path) -> None:
    path = _write(tmp_path / "r.csv", [HEADER, "B1,,,1980-01-01,Q,12,en,,"])
    result = import_patients(engine, path, settings=get_settings(), today=TODAY)
    assert result.rejected == 1 and result.accepted == 0
    assert [(e.line, e.column) for e in result.errors] == [(2, "first_name"), (2, "sex"), (2, "phone")]


def test_empty_sex_language_and_optional_columns_default(engine: Engine, tmp_path: Path) -> None:
    path = _write(tmp_path / "r.csv", ["phone,birth_date,first_name,mrn", "212-555-0150,1950-06-01,Zoe,C1"])
    result = import_patients(engine, path, settings=get_settings(), today=TODAY)
    assert (result.accepted, result.rejected) == (1, 0)
    patient = _patients(engine)["C1"]
    assert (patient.sex, patient.language, patient.last_name, patient.timezone, patient.active) == (
        "unknown",
        "en",
        None,
        None,
        True,
    )


def test_too_long_values_are_rejected_not_truncated(engine: Engine, tmp_path: Path) -> None:
    path = _write(tmp_path / "r.csv", [HEADER, f"D1,Al,Lee,1980-01-01,M,(617) 555-0101,en,,{'9' * 17}"])
    result = import_patients(engine, path, settings=get_settings(), today=TODAY)
    assert _errors(result) == [(2, "postal_code", "9" * 17)]
    assert result.errors[0].reason == "too long (at most 16 characters)"


# --- encodings, line endings and headers -------------------------------------------------------


def test_bom_crlf_any_column_order_and_header_spelling(engine: Engine, tmp_path: Path) -> None:
    lines = ["Phone, Birth Date ,MRN,First-Name,Sex", '"(303) 555-0120",1990-03-04,E1,"Ana, María",f']
    path = _write(tmp_path / "r.csv", lines, "\r\n", bom=True)
    result = import_patients(engine, path, settings=get_settings(), today=TODAY)
    assert (result.accepted, result.rejected, result.errors) == (1, 0, [])
    patient = _patients(engine)["E1"]
    assert (patient.first_name, patient.phone, patient.sex) == ("Ana, María", "+13035550120", "female")


def test_extra_columns_are_ignored_with_one_note(engine: Engine, tmp_path: Path) -> None:
    path = _write(
        tmp_path / "r.csv", [HEADER + ",notes,insurer", "F1,Al,Lee,1980-01-01,M,(617) 555-0101,en,,,x,y"]
    )
    result = import_patients(engine, path, settings=get_settings(), today=TODAY)
    assert result.accepted == 1
    assert result.notes == ["r.csv: ignored columns notes, insurer"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"mrn,first_name,phone\nX,Al,617-555-0101\n",
            "lacks required column birth_date; found columns: mrn",
        ),
        (b"mrn,name\n", "lacks required columns first_name, birth_date, phone; found columns: mrn, name"),
        (b"", "is empty"),
        (b"\xef\xbb\xbf\r\n\r\n", "is empty"),
        (b"G1,Al,1980-01-01,617-555-0101\n", "(the first line must be the header)"),
        ("mrn,first_name,birth_date,phone\nG1,Zoë,1980-01-01,617\n".encode("latin-1"), "not UTF-8"),
        ("mrn,first_name,birth_date,phone\n".encode("utf-16"), "UTF-16"),
        (b"mrn,mrn,first_name,birth_date,phone\n", "column 'mrn' appears twice"),
        (b"mrn,first_name,birth_date,phone\rG1,Al,1980-01-01,617-555-0101\r", "CR only (old Mac format)"),
    ],
)
def test_a_bad_file_is_one_user_error_before_anything_loads(
    engine: Engine, tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(UserError) as caught:
        import_patients(engine, path, settings=get_settings(), today=TODAY)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Patient)) == 0


def test_a_stray_non_utf8_line_deep_in_the_file_rejects_only_that_row(engine: Engine, tmp_path: Path) -> None:
    good = [f"H{i},Al,Lee,1980-01-01,M,(617) 555-{i % 100 + 100:04d},en,,02115" for i in range(1500)]
    path = tmp_path / "r.csv"
    body = "\n".join([HEADER, *good]).encode() + b"\nH-bad,Jos\xe9,Lee,1980-01-01,M,(617) 555-0100,en,,\n"
    path.write_bytes(body + b"H-last,Al,Lee,1980-01-01,M,(617) 555-0100,en,,\n")
    assert len(body) > 64 * 1024  # beyond the part checked up front
    result = import_patients(engine, path, settings=get_settings(), today=TODAY)
    assert _errors(result) == [(1502, "", "")]
    assert "UTF-8" in result.errors[0].reason
    assert (result.accepted, result.rejected) == (1501, 1)


def test_a_nul_byte_rejects_its_row(engine: Engine, tmp_path: Path) -> None:
    rows = ["W1,A\x00l,Lee,1980-01-01,M,(617) 555-0101,en,,", "W2,Al,Lee,1980-01-01,M,(617) 555-0102,en,,"]
    path = _write(tmp_path / "r.csv", [HEADER, *rows])
    result = import_patients(engine, path, settings=get_settings(), today=TODAY)
    assert _errors(result) == [(2, "", "")]
    assert "NUL" in result.errors[0].reason
    assert set(_patients(engine)) == {"W2"}


def test_unterminated_quote_is_reported_not_raised(engine: Engine, tmp_path: Path) -> None:
    path = _write(tmp_path / "r.csv", [HEADER, "I1,Al,Lee,1980-01-01,M,(617) 555-0101,en,,", 'I2,"Al,Lee'])
    result = import_patients(engine, path, settings=get_settings(), today=TODAY)
    assert result.accepted == 1 and result.rejected == 1
    assert result.errors[0].line == 3


# --- idempotency and updates -------------------------------------------------------------------


def test_reimport_changes_nothing_and_a_changed_row_is_updated(engine: Engine, tmp_path: Path) -> None:
    rows = [f"J{i},Al{i},Lee,1980-01-{i + 1:02d},M,(617) 555-{100 + i:04d},en,,02115" for i in range(12)]
    path = _write(tmp_path / "r.csv", [HEADER, *rows])
    first = import_patients(engine, path, settings=get_settings(), today=TODAY, batch_size=5)
    assert (first.accepted, first.inserted, first.updated, first.unchanged) == (12, 12, 0, 0)
    # Age every row so a later update is visible whatever the clock resolution.
    old = dt.datetime(2020, 1, 1)
    with engine.begin() as conn:
        conn.execute(update(Patient).values(updated_at=old))

    again = import_patients(engine, path, settings=get_settings(), today=TODAY, batch_size=5)
    assert (again.accepted, again.rejected, again.inserted, again.updated, again.unchanged) == (
        12,
        0,
        0,
        0,
        12,
    )
    assert {p.updated_at for p in _patients(engine).values()} == {old}

    rows[3] = "J3,Al3,Lee,1980-01-04,M,(212) 555-0199,es,,10027"  # new number, language and postal code
    rows.append("J99,New,Lee,1980-02-01,F,(617) 555-0199,en,,")
    changed = import_patients(
        engine,
        _write(tmp_path / "r2.csv", [HEADER, *rows]),
        settings=get_settings(),
        today=TODAY,
        batch_size=5,
    )
    assert (changed.accepted, changed.inserted, changed.updated, changed.unchanged) == (13, 1, 1, 11)
    stored = _patients(engine)
    assert (stored["J3"].phone, stored["J3"].language, stored["J3"].postal_code) == (
        "+12125550199",
        "es",
        "10027",
    )
    assert stored["J3"].updated_at > old
    assert stored["J3"].created_at == stored["J0"].created_at  # still the first import's
    assert {mrn for mrn, p in stored.items() if p.updated_at == old} == {f"J{i}" for i in range(12)} - {"J3"}


def test_duplicates_are_caught_across_batches(engine: Engine, tmp_path: Path) -> None:
    rows = [f"K{i},Al,Lee,1980-01-01,M,(617) 555-{100 + i:04d},en,," for i in range(7)]
    rows.append("K1,Al,Lee,1980-01-01,M,(617) 555-0150,en,,")  # line 9; K1 was on line 3
    result = import_patients(
        engine,
        _write(tmp_path / "r.csv", [HEADER, *rows]),
        settings=get_settings(),
        today=TODAY,
        batch_size=2,
    )
    assert _errors(result) == [(9, "mrn", "K1")]
    assert result.errors[0].reason == "duplicate mrn (first on line 3)"
    assert _patients(engine)["K1"].phone == "+16175550101"


def test_missing_tables_say_to_run_db_upgrade(tmp_path: Path) -> None:
    from outreach.store.db import engine_for

    bare = engine_for(f"sqlite:///{tmp_path / 'bare.db'}")
    path = _write(tmp_path / "r.csv", [HEADER, "L1,Al,Lee,1980-01-01,M,(617) 555-0101,en,,"])
    with pytest.raises(UserError, match="run `outreach db upgrade`"):
        import_patients(bare, path, settings=get_settings(), today=TODAY)


# --- events ------------------------------------------------------------------------------------


def test_events_import_reports_bad_rows_and_is_idempotent(engine: Engine, tmp_path: Path) -> None:
    lines = [
        "mrn,event,date,code,code_system",  # 1
        "M1,colonoscopy,2020-05-01,45378,CPT",  # 2
        'M1,fit,2026-01-10,82274,"CPT, 2026',  # 3-4: quoted newline
        'edition"',
        "M1,Flu Vaccine,2026-10-01,,",  # 5: spelled loosely, no code
        "M2,xray,2026-01-01,,",  # 6: unknown kind
        "M2,mammogram,2026-12-01,,",  # 7: future
        ",mammogram,2026-01-01,,",  # 8: missing mrn
        "M2,mammogram,2026/01/01,,",  # 9: not a date
        "M1,colonoscopy,2020-05-01,45378,CPT",  # 10: same as line 2 (accepted, not inserted)
        "M3,hpv_test",  # 11: wrong column count
    ]
    path = _write(tmp_path / "events.csv", lines, "\r\n")
    result = import_events(engine, path, settings=get_settings(), today=TODAY)
    assert _errors(result) == [
        (6, "event", "xray"),
        (7, "date", "2026-12-01"),
        (8, "mrn", ""),
        (9, "date", "2026/01/01"),
        (11, "", ""),
    ]
    assert "colonoscopy" in result.errors[0].reason
    assert (result.accepted, result.rejected, result.inserted, result.updated) == (4, 5, 3, 0)
    with engine.connect() as conn:
        stored = conn.execute(select(PatientEvent.kind, PatientEvent.code, PatientEvent.code_system)).all()
    assert sorted(stored) == [
        ("colonoscopy", "45378", "CPT"),
        ("fit", "82274", "CPT, 2026\r\nedition"),
        ("flu_vaccine", "", ""),
    ]

    again = import_events(engine, path, settings=get_settings(), today=TODAY)
    assert (again.accepted, again.inserted, again.updated, again.unchanged) == (4, 0, 0, 4)
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(PatientEvent)) == 3


def test_events_header_must_have_mrn_event_and_date(engine: Engine, tmp_path: Path) -> None:
    path = _write(tmp_path / "e.csv", ["mrn,kind,date", "N1,fit,2026-01-01"])
    with pytest.raises(UserError, match="lacks required column event; found columns: mrn, kind, date"):
        import_events(engine, path, settings=get_settings(), today=TODAY)


# --- errors file -------------------------------------------------------------------------------


def test_errors_csv_has_line_column_value_reason(tmp_path: Path) -> None:
    errors = [RowError(7, "phone", "555-1234", "invalid, really"), RowError(9, "", "", "expected 9 fields")]
    target = tmp_path / "errors.csv"
    write_errors_csv(target, errors)
    with target.open(encoding="utf-8", newline="") as handle:
        assert list(csv.reader(handle)) == [
            ["line", "column", "value", "reason"],
            ["7", "phone", "555-1234", "invalid, really"],
            ["9", "", "", "expected 9 fields"],
        ]
    assert errors[0].describe() == "line 7, phone '555-1234': invalid, really"
    assert errors[1].describe() == "line 9: expected 9 fields"


# --- CLI ---------------------------------------------------------------------------------------


def test_cli_clean_import_exits_0_with_json(engine: Engine, tmp_path: Path) -> None:
    path = _write(tmp_path / "r.csv", [HEADER, "P1,Al,Lee,1980-01-01,M,(617) 555-0101,en,,"])
    result = CliRunner().invoke(main, ["patients", "import", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"accepted": 1, "rejected": 0, "inserted": 1, "updated": 0}

    result = CliRunner().invoke(main, ["patients", "import", str(path)])
    assert result.exit_code == 0
    assert "1 accepted (0 inserted, 0 updated, 1 unchanged), 0 rejected" in result.stdout


def test_cli_rejections_exit_1_list_rows_and_write_errors(engine: Engine, tmp_path: Path) -> None:
    rows = [f"Q{i},Al,Lee,1980-01-01,M,555-{i:04d},en,," for i in range(55)]
    rows.append("Q99,Al,Lee,1980-01-01,M,(617) 555-0101,en,,")
    path = _write(tmp_path / "r.csv", [HEADER, *rows])
    errors = tmp_path / "errors.csv"
    result = CliRunner().invoke(main, ["patients", "import", str(path), "--errors", str(errors)])
    assert result.exit_code == 1
    assert "line 2, phone '555-0000': invalid phone number (no such area code or exchange)\n" in result.stderr
    assert f"... and 5 more (see {errors})" in result.stderr
    assert "1 accepted (1 inserted, 0 updated, 0 unchanged), 55 rejected" in result.stdout
    with errors.open(encoding="utf-8") as handle:
        written = list(csv.DictReader(handle))
    assert len(written) == 55
    assert written[0] == {
        "line": "2",
        "column": "phone",
        "value": "555-0000",
        "reason": "invalid phone number (no such area code or exchange)",
    }

    as_json = CliRunner().invoke(main, ["patients", "import", str(path), "--json"])
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout) == {"accepted": 1, "rejected": 55, "inserted": 0, "updated": 0}


def test_cli_header_error_exits_2_in_one_line(engine: Engine, tmp_path: Path) -> None:
    path = _write(tmp_path / "r.csv", ["mrn,first_name", "R1,Al"])
    result = CliRunner().invoke(main, ["patients", "import", str(path), "--json"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.strip().count("\n") == 0
    assert "lacks required columns birth_date, phone" in result.stderr


def test_cli_patients_with_events_checks_both_headers_first(engine: Engine, tmp_path: Path) -> None:
    roster = _write(tmp_path / "r.csv", [HEADER, "S1,Al,Lee,1980-01-01,M,(617) 555-0101,en,,"])
    bad_events = _write(tmp_path / "e.csv", ["mrn,date", "S1,2026-01-01"])
    result = CliRunner().invoke(main, ["patients", "import", str(roster), "--events", str(bad_events)])
    assert result.exit_code == 2
    assert _patients(engine) == {}

    events = _write(tmp_path / "e2.csv", ["mrn,event,date", "S1,fit,2026-01-01", "S1,fit,someday"])
    errors = tmp_path / "errors.csv"
    args = ["patients", "import", str(roster), "--events", str(events), "--json", "--errors", str(errors)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {
        "accepted": 1,
        "rejected": 0,
        "inserted": 1,
        "updated": 0,
        "events": {"accepted": 1, "rejected": 1, "inserted": 1, "updated": 0, "unknown_mrns": 0},
    }
    assert errors.read_text(encoding="utf-8").splitlines() == ["line,column,value,reason"]
    assert "e2.csv: line 3, date 'someday': not a date" in result.stderr
    events_errors = (tmp_path / "errors.events.csv").read_text(encoding="utf-8").splitlines()
    assert events_errors[1].startswith("3,date,someday,")


def test_cli_events_import(engine: Engine, tmp_path: Path) -> None:
    events = _write(tmp_path / "e.csv", ["mrn,event,date", "T1,fit,2020-01-01"])
    result = CliRunner().invoke(main, ["events", "import", str(events), "--json"])
    assert result.exit_code == 0, result.output
    # T1 is no patient's mrn: kept, and counted (issue 10).
    expected = {"accepted": 1, "rejected": 0, "inserted": 1, "updated": 0, "unknown_mrns": 1}
    assert json.loads(result.stdout) == expected


def test_cli_without_tables_says_run_db_upgrade(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTREACH_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    path = _write(tmp_path / "r.csv", [HEADER, "U1,Al,Lee,1980-01-01,M,(617) 555-0101,en,,"])
    result = CliRunner().invoke(main, ["patients", "import", str(path)])
    assert result.exit_code == 2
    assert "run `outreach db upgrade` first" in result.stderr


@pytest.mark.parametrize("terminal", [False, True])
def test_progress_bar_only_when_asked_on_a_terminal(
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    terminal: bool,
) -> None:
    monkeypatch.setattr(csvfile, "PROGRESS_MIN_BYTES", 0)  # treat this small file as large
    if terminal:
        monkeypatch.setenv("FORCE_COLOR", "1")  # rich then treats stderr as a terminal
    path = _write(tmp_path / "r.csv", [HEADER, "V1,Al,Lee,1980-01-01,M,(617) 555-0101,en,,"])
    quiet = import_patients(engine, path, settings=get_settings(), today=TODAY, progress=None)
    assert capsys.readouterr().err == ""
    shown = import_patients(engine, path, settings=get_settings(), today=TODAY, progress=FileProgress())
    assert (quiet.inserted, shown.accepted) == (1, 1)
    drawn = capsys.readouterr().err
    assert ("importing r.csv" in drawn) is terminal


# --- shipped samples and the generator ---------------------------------------------------------


def test_shipped_samples_import_without_rejections(engine: Engine) -> None:
    patients = import_patients(engine, ROOT / "samples" / "roster.csv", settings=get_settings(), today=TODAY)
    events = import_events(engine, ROOT / "samples" / "events.csv", settings=get_settings(), today=TODAY)
    assert (patients.rejected, patients.errors, patients.notes) == (0, [], [])
    assert (events.rejected, events.errors) == (0, [])
    assert 55 <= patients.inserted <= 65
    assert events.inserted > 40
    stored = list(_patients(engine).values())
    ages = [(TODAY - p.birth_date).days // 365 for p in stored]
    assert min(ages) <= 19 and max(ages) >= 84
    assert 0.25 <= sum(p.language == "es" for p in stored) / len(stored) <= 0.35
    phones = [p.phone for p in stored]
    assert len(phones) - len(set(phones)) == 1  # one family shares a number
    assert {p.sex for p in stored} == {"female", "male", "other", "unknown"}
    assert {p.phone[2:5] for p in stored} == {
        "617",
        "212",
        "305",
        "405",
        "410",
        "312",
        "303",
        "415",
        "602",
        "907",
    }
    assert all(p.phone[5:9] == "5550" and 100 <= int(p.phone[8:]) <= 199 for p in stored)


def test_shipped_samples_are_what_the_generator_writes(tmp_path: Path) -> None:
    _generate().write_samples(tmp_path)
    for name in ("roster.csv", "events.csv"):
        assert (tmp_path / name).read_bytes() == (ROOT / "samples" / name).read_bytes(), name


def test_large_generator_is_deterministic_distinct_and_clean(engine: Engine, tmp_path: Path) -> None:
    generate = _generate()
    generate.write_roster(tmp_path / "a.csv", 3000, seed=5)
    generate.write_roster(tmp_path / "b.csv", 3000, seed=5)
    generate.write_events(tmp_path / "e.csv", 3000, seed=5)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    patients = import_patients(engine, tmp_path / "a.csv", settings=get_settings(), today=TODAY)
    events = import_events(engine, tmp_path / "e.csv", settings=get_settings(), today=TODAY)
    assert (patients.accepted, patients.rejected) == (3000, 0)
    assert events.rejected == 0 and events.accepted > 3000
    with engine.connect() as conn:
        assert conn.scalar(select(func.count(func.distinct(Patient.phone)))) == 3000


def test_whitespace_inside_names_is_collapsed(engine: Engine, tmp_path: Path) -> None:
    roster_file = tmp_path / "names.csv"
    roster_file.write_text(
        "mrn,first_name,last_name,birth_date,phone\n"
        'N1,"Mary\n  Ann","de  la Cruz",1970-01-01,(617) 555-0101\n'
    )
    assert import_patients(engine, roster_file, settings=get_settings()).rejected == 0
    with session_scope(engine) as s:
        patient = s.scalars(select(Patient)).one()
        assert (patient.first_name, patient.last_name) == ("Mary Ann", "de la Cruz")


def test_large_files_are_checked_in_helper_processes_with_the_same_result(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from outreach.ingest import pool

    rows = ["mrn,first_name,birth_date,phone,postal_code"]
    rows += [f"M{i},Ann,1970-01-01,(617) 555-{i:04d},{i:05d}" for i in range(1200)]
    rows[301] = "M300,Ann,1970-01-01,555-283-2805,"  # line 302: a number that does not exist
    rows[950] = "M3,Ann,1970-01-01,(617) 555-0003,"  # line 951: M3 is on line 5
    rows[1100] = "M1099,,1970-02-30,(617) 555-1099,"  # line 1101: no first name, no such day
    path = tmp_path / "big.csv"
    path.write_text("\n".join(rows) + "\n")
    monkeypatch.setattr(pool, "PARALLEL_FROM_BYTES", 0)
    result = import_patients(engine, path, settings=get_settings(), batch_size=100)
    assert (result.accepted, result.rejected, result.inserted) == (1197, 3, 1197)
    assert [(e.line, e.column, e.value) for e in result.errors] == [
        (302, "phone", "555-283-2805"),
        (951, "mrn", "M3"),
        (1101, "first_name", ""),
        (1101, "birth_date", "1970-02-30"),
    ]
    with session_scope(engine) as s:
        assert s.scalar(select(Patient.phone).where(Patient.mrn == "M1199")) == "+16175551199"
        assert s.scalar(select(Patient.postal_code).where(Patient.mrn == "M1199")) == "01199"

    # The same file checked in this process finds every row already stored as it would store it.
    monkeypatch.setattr(pool, "PARALLEL_FROM_BYTES", 1 << 40)
    again = import_patients(engine, path, settings=get_settings(), batch_size=100)
    assert (again.accepted, again.rejected, again.inserted, again.updated) == (1197, 3, 0, 0)
    assert again.errors == result.errors


def test_a_number_spanning_many_time_zones_loads_with_all_of_them(engine: Engine, tmp_path: Path) -> None:
    """A valid +7 mobile spans Russia's and Kazakhstan's zones (16, over 200 characters): stored
    whole, on PostgreSQL as on SQLite, rather than failing the import."""
    path = _write(tmp_path / "roster.csv", [HEADER, "R1,Ivan,Petrov,1970-05-05,M,+7 912 345 67 89,ru,,"])
    result = import_patients(engine, path, settings=get_settings(), today=TODAY)
    assert (result.accepted, result.rejected) == (1, 0)
    zones = _patients(engine)["R1"].phone_zones or ""
    assert len(zones.split()) > 10 and len(zones) > 200
    assert "Europe/Moscow" in zones.split()


def _many_problems(path: Path, rows: int) -> Path:
    """A roster whose every other row has a bad birth date, every fifth a bad phone as well, and
    every seventh too few fields (a malformed record, found by the reader, not the row check)."""
    lines = ["mrn,first_name,birth_date,sex,phone"]
    for i in range(rows):
        birth = "1960-13-01" if i % 2 else "1960-01-01"
        phone = "not a phone" if i % 5 == 0 else f"(617) 555-{i % 10_000:04d}"
        lines.append(f"M{i}" if i % 7 == 6 else f"M{i},Ana,{birth},female,{phone}")
    return _write(path, lines)


@pytest.mark.parametrize("kind", ["patients", "events"])
def test_a_report_written_as_it_goes_holds_every_problem_and_memory_only_the_first(
    engine: Engine, tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`errors_to` (the web page's import): the report is the one the whole list gives, in line
    order, while the result keeps only the first ERRORS_KEPT and counts them all."""
    from outreach.ingest import errorsfile

    monkeypatch.setattr(errorsfile, "ERRORS_KEPT", 50)
    monkeypatch.setattr(errorsfile, "_FLUSH_EVERY", 7)  # many flushes
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the spill's SQLite file goes
    importer = import_patients if kind == "patients" else import_events
    if kind == "patients":
        source = _many_problems(tmp_path / "roster.csv", 400)
    else:
        dates = ["2020-01-01", "2020-02-30"]
        rows = [f"M{i},{'fit' if i % 3 else 'zzz'},{dates[i % 4 == 0]}" for i in range(400)]
        source = _write(tmp_path / "events.csv", ["mrn,event,date", *rows, "M9,fit"])
    whole = importer(engine, source, settings=get_settings(), today=TODAY)
    expected = tmp_path / "expected.csv"
    write_errors_csv(expected, whole.errors)
    report = tmp_path / "report.csv"

    spooled = importer(engine, source, settings=get_settings(), today=TODAY, errors_to=report)

    assert len(whole.errors) > 100 and whole.problems == len(whole.errors)
    assert report.read_text() == expected.read_text()
    assert spooled.errors == whole.errors[:50] and spooled.problems == len(whole.errors)
    assert spooled.rejected == whole.rejected
    assert list(scratch.iterdir()) == []  # the scratch files are gone
