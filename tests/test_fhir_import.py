"""`outreach fhir import`: FHIR Bundles and Bulk Data NDJSON load through the roster's own checks
and writers (same upsert, duplicate and phone rules), statuses that close no gap are skipped,
bad resources are reported with file and line or entry, and the Synthea sample bundles agree with
the Synthea CSV tables of the same patients."""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, select

from outreach.apps.cli import main
from outreach.campaigns import EVENT_KINDS
from outreach.config import Settings
from outreach.errors import UserError
from outreach.ingest.fhir.codemap import load_code_map
from outreach.ingest.fhir.files import WHOLE_BUNDLE_BYTES
from outreach.ingest.fhir.importer import import_fhir
from outreach.store.db import session_scope
from outreach.store.models import Patient, PatientEvent
from tests.fhir_builders import (
    condition,
    immunization,
    observation,
    patient,
    procedure,
    write_bundle,
    write_ndjson,
)

ROOT = Path(__file__).resolve().parent.parent
SYNTHEA = ROOT.parent / "shared" / "data" / "synthea" / "ma_mcode_2022"
TODAY = dt.date(2026, 11, 23)


def _import(engine: Engine, *paths: Path, settings: Settings | None = None):  # type: ignore[no-untyped-def]
    return import_fhir(engine, list(paths), settings=settings or Settings(), today=TODAY)


def _patients(engine: Engine) -> dict[str, Patient]:
    with session_scope(engine) as s:
        rows = s.scalars(select(Patient)).all()
        s.expunge_all()
    return {p.mrn: p for p in rows}


def _events(engine: Engine) -> set[tuple[str, str, str]]:
    with session_scope(engine) as s:
        return {(e.mrn, e.kind, e.date.isoformat()) for e in s.scalars(select(PatientEvent))}


# --- the shipped code map ---------------------------------------------------------------------------


_OID = re.compile(r"\b2\.16\.840\.1\.\d+(\.\d+)+\b")


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_every_shipped_code_maps_to_a_known_kind_and_cites_its_value_set() -> None:
    rows = _csv_rows(ROOT / "outreach" / "ingest" / "fhir" / "codemap.csv")
    assert {row["kind"] for row in rows} == set(EVENT_KINDS)  # every kind, exclusions included
    for row in rows:
        assert _OID.search(row["value_set"]), row
    shipped = load_code_map()
    assert shipped[("http://hl7.org/fhir/sid/cvx", "140")] == "flu_vaccine"
    hcpcs = "Medicare/Coding/HCPCSReleaseCodeSets"  # both spellings EHRs send
    assert shipped[(f"http://www.cms.gov/{hcpcs}", "G0105")] == "colonoscopy"
    assert shipped[(f"https://www.cms.gov/{hcpcs}", "G0105")] == "colonoscopy"


def test_every_shipped_row_is_in_the_published_expansion_it_cites() -> None:
    # The extract holds the codes of the published expansions (sources: codemap-sources.md).
    extract = _csv_rows(ROOT / "tests" / "fhir_valueset_extract.csv")
    published = {(row["value_set"], row["system"], row["code"]) for row in extract}
    rows = _csv_rows(ROOT / "outreach" / "ingest" / "fhir" / "codemap.csv")
    cited = {(_OID.search(row["value_set"]).group(), row["system"], row["code"]) for row in rows}  # type: ignore[union-attr]
    assert sorted(cited - published) == []  # a shipped row its value set does not contain
    assert sorted({(s, c) for _, s, c in published} - {(r["system"], r["code"]) for r in rows}) == []


def test_a_site_code_map_adds_codes_and_a_bad_one_is_one_user_error(tmp_path: Path) -> None:
    site = tmp_path / "local.csv"
    site.write_text("system,code,kind,value_set\nurn:oid:1.2.3,LOCAL-FIT,fit,local lab FIT order (our LIS)\n")
    assert load_code_map(site)[("urn:oid:1.2.3", "LOCAL-FIT")] == "fit"
    site.write_text("system,code,kind,value_set\nurn:oid:1.2.3,X,flu_shot,ours\n")
    with pytest.raises(UserError, match=r"local.csv, line 2, kind 'flu_shot': use one of colonoscopy"):
        load_code_map(site)
    site.write_text("system,code\nurn:oid:1.2.3,X\n")
    with pytest.raises(UserError, match="missing columns kind, value_set"):
        load_code_map(site)


def test_site_codes_become_events(engine: Engine, tmp_path: Path) -> None:
    site = tmp_path / "local.csv"
    site.write_text("system,code,kind,value_set\nurn:oid:1.2.3,LOCAL-FIT,fit,local lab FIT order\n")
    obs = observation("p1", "LOCAL-FIT", "2026-02-02")
    obs["code"]["coding"][0]["system"] = "urn:oid:1.2.3"
    path = write_ndjson(tmp_path / "all.ndjson", [patient("p1"), obs])
    _import(engine, path, settings=Settings().model_copy(update={"code_map": str(site)}))
    assert _events(engine) == {("p1", "fit", "2026-02-02")}


# --- what is read from each resource ----------------------------------------------------------------


def test_patient_fields_follow_design_13(engine: Engine, tmp_path: Path) -> None:
    chosen = patient(
        "id-1",
        mrn="MRN-1",
        name=[
            {"use": "old", "family": "Old", "given": ["Was"]},
            {"use": "usual", "family": "Usual", "given": ["Annie"]},
            {"use": "official", "family": "García", "given": ["Ana", "María"]},
        ],
        telecom=[
            {"system": "phone", "value": "(617) 555-0111", "use": "home", "rank": 1},
            {"system": "phone", "value": "(617) 555-0122", "use": "mobile", "period": {"end": "2020-01-01"}},
            {"system": "phone", "value": "(617) 555-0133", "use": "mobile", "rank": 2},
            {"system": "email", "value": "a@example.org"},
        ],
        communication=[
            {"language": {"coding": [{"code": "en"}]}},
            {"language": {"coding": [{"code": "es-MX"}]}, "preferred": True},
        ],
    )
    dead = patient("id-2", phone="(617) 555-0144", deceasedDateTime="2025-01-01")
    inactive = patient("id-3", phone="(617) 555-0155", active=False)
    result = _import(engine, write_ndjson(tmp_path / "Patient.ndjson", [chosen, dead, inactive]))
    assert result.summary()["accepted"] == 3
    rows = _patients(engine)
    ana = rows["MRN-1"]
    assert (ana.first_name, ana.last_name, ana.birth_date, ana.sex) == (
        "Ana",
        "García",
        dt.date(1970, 5, 5),
        "female",
    )
    assert (ana.phone, ana.language, ana.postal_code, ana.active) == ("+16175550133", "es", "02139", True)
    assert not rows["id-2"].active and not rows["id-3"].active
    assert result.deactivated == 2


def test_events_close_gaps_only_when_completed_or_final(engine: Engine, tmp_path: Path) -> None:
    resources = [
        patient("p1", mrn="M1"),
        procedure("p1", "73761001", "2024-03-01"),  # colonoscopy
        procedure("p1", "73761001", "2024-04-01", status="entered-in-error"),
        immunization("p1", "140", "2025-10-01"),
        immunization("p1", "140", "2025-11-01", status="not-done"),
        observation("p1", "29771-3", "2025-06-01"),  # FIT
        observation("p1", "29771-3", "2025-07-01", status="preliminary"),
        observation("p1", "8302-2", "2025-06-01"),  # body height: not an event
        condition("p1", "C18.7", "2019-01-01"),  # colorectal cancer: an exclusion
        condition("p1", "Z90.710", "2018-01-01", verification="refuted"),
        {"resourceType": "Encounter", "id": "e1"},
    ]
    result = _import(engine, write_ndjson(tmp_path / "everything.ndjson", resources))
    assert _events(engine) == {
        ("M1", "colonoscopy", "2024-03-01"),
        ("M1", "flu_vaccine", "2025-10-01"),
        ("M1", "fit", "2025-06-01"),
        ("M1", "colorectal_cancer", "2019-01-01"),
    }
    events = result.summary()["events"]
    assert events == {"accepted": 4, "rejected": 0, "inserted": 4, "unknown_mrns": 0}
    assert (result.skipped_status, result.skipped_unmapped, result.skipped_type) == (4, 1, 1)


def test_bad_resources_are_reported_with_file_and_line_and_the_rest_loads(
    engine: Engine, tmp_path: Path
) -> None:
    no_subject = procedure("p1", "73761001", "2024-03-01")
    del no_subject["subject"]
    future = immunization("p1", "140", "2030-01-01")
    path = write_ndjson(
        tmp_path / "mixed.ndjson.gz",
        [
            patient("p1"),
            "{not json",
            patient("p1"),
            no_subject,
            future,
            '["x"]',
            immunization("ghost", "140", "2025-10-01"),
        ],
    )
    result = _import(engine, path)
    found = [(e.line, e.field, e.reason) for e in result.errors]
    assert found[0][:2] == (2, "") and found[0][2].startswith("not JSON (")
    assert found[1:] == [
        (3, "Patient.identifier (MR) / Patient.id", "duplicate mrn (first on line 1)"),
        (4, "subject", "no subject.reference; the event cannot be tied to a patient"),
        (5, "date", "in the future (after 2026-11-23)"),
        (6, "", "not a FHIR resource (no resourceType)"),
    ]
    assert set(_patients(engine)) == {"p1"}
    assert _events(engine) == {("ghost", "flu_vaccine", "2025-10-01")}
    assert (
        result.unknown_mrns == 1
        and "refer to patients not on the roster (mixed.ndjson.gz line 7)" in result.warnings()[0]
    )


def test_bundle_references_by_urn_uuid_resolve_to_the_mrn_and_reimport_changes_nothing(
    engine: Engine, tmp_path: Path
) -> None:
    shot = immunization("x", "140", "2025-10-01")
    shot["patient"] = {"reference": "urn:uuid:uuid-7"}
    path = write_bundle(tmp_path / "b.json", [patient("uuid-7", mrn="MRN-7"), shot], kind="transaction")
    first = _import(engine, path)
    assert first.summary()["inserted"] == 1
    assert _events(engine) == {("MRN-7", "flu_vaccine", "2025-10-01")}
    again = _import(engine, path).summary()
    assert (again["inserted"], again["updated"], again["events"]["inserted"]) == (0, 0, 0)  # type: ignore[index]


def _events_first_bundle(path: Path, padding: int) -> Path:
    """A Bundle listing its events before their Patients (whose mrns are not their ids), with an
    entry without a resource, and a Binary of `padding` bytes to make it as large as wanted."""
    entries: list[object] = [
        {"fullUrl": "urn:uuid:shot", "resource": immunization("id-1", "140", "2025-10-01")},
        {"fullUrl": "urn:uuid:scope", "resource": procedure("id-2", "73761001", "2024-03-01")},
        {"fullUrl": "urn:uuid:empty"},
        {"resource": {"resourceType": "Binary", "id": "pad", "data": "A" * padding}},
        {"fullUrl": "urn:uuid:id-1", "resource": patient("id-1", mrn="MRN-1")},
        {"fullUrl": "urn:uuid:id-2", "resource": patient("id-2", mrn="MRN-2")},
    ]
    path.write_text(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries}))
    return path


@pytest.mark.parametrize("padding", [0, WHOLE_BUNDLE_BYTES], ids=["read-whole", "streamed"])
def test_a_bundle_whose_events_precede_their_patients_resolves_them(
    engine: Engine, tmp_path: Path, padding: int
) -> None:
    path = _events_first_bundle(tmp_path / "b.json", padding)
    assert (path.stat().st_size > WHOLE_BUNDLE_BYTES) is (padding > 0)
    # Batches of one: each event is written before the next entry is read, as in a large Bundle.
    result = import_fhir(engine, [path], settings=Settings(), today=TODAY, batch_size=1)
    assert (result.unknown_mrns, result.unknown_at) == (0, [])
    assert _events(engine) == {("MRN-1", "flu_vaccine", "2025-10-01"), ("MRN-2", "colonoscopy", "2024-03-01")}
    assert [(e.entry, e.line, e.reason) for e in result.errors] == [(2, None, "entry without a resource")]
    assert (result.resources, result.patients.accepted, result.skipped_type) == (6, 2, 1)


def test_a_streamed_bundle_that_breaks_loads_the_entries_before_and_names_the_entry(
    engine: Engine, tmp_path: Path
) -> None:
    path = _events_first_bundle(tmp_path / "b.json", WHOLE_BUNDLE_BYTES)
    text = path.read_text()
    path.write_text(text[: text.index('"MRN-2"')])  # cut inside entry 5
    result = _import(engine, path)
    # id-2's Patient is in the lost part: its event is kept under the id and warned about.
    assert _events(engine) == {("MRN-1", "flu_vaccine", "2025-10-01"), ("id-2", "colonoscopy", "2024-03-01")}
    assert result.unknown_mrns == 1
    assert [(e.entry, e.reason.split(" (")[0]) for e in result.errors] == [
        (2, "entry without a resource"),
        (5, "not JSON from here on"),
    ]


def test_ndjson_events_find_patients_from_another_file_by_id(engine: Engine, tmp_path: Path) -> None:
    # Bulk Data writes one file per type; the Patient file is read first whatever the names.
    write_ndjson(tmp_path / "Immunization.ndjson", [immunization("id-9", "140", "2025-10-01")])
    write_ndjson(tmp_path / "Patient.ndjson", [patient("id-9", mrn="MRN-9")])
    result = _import(engine, tmp_path)
    assert result.unknown_mrns == 0
    assert _events(engine) == {("MRN-9", "flu_vaccine", "2025-10-01")}


# --- the Synthea bundles against the Synthea CSVs -----------------------------------------------


def _synthea_csv(name: str, ids: set[str]) -> list[dict[str, str]]:
    with (SYNTHEA / name).open(encoding="utf-8") as handle:
        return [row for row in csv.DictReader(handle) if (row.get("Id") or row.get("PATIENT")) in ids]


def _synthea_ids() -> set[str]:
    return {p.stem.rsplit("_", 1)[1] for p in (SYNTHEA / "fhir_samples").glob("*.json")}


@pytest.mark.skipif(not SYNTHEA.is_dir(), reason="shared Synthea data not present")
def test_synthea_555_numbers_are_reported_invalid_and_their_events_kept(engine: Engine) -> None:
    result = _import(engine, SYNTHEA / "fhir_samples")
    assert result.patients.rejected == 2 and result.patients.accepted == 0
    assert {e.reason for e in result.errors} == {"invalid phone number (no such area code or exchange)"}
    assert all(e.value.startswith("555-") and e.entry == 0 for e in result.errors)
    assert result.unknown_mrns == result.events_accepted > 0


@pytest.mark.skipif(not SYNTHEA.is_dir(), reason="shared Synthea data not present")
def test_synthea_bundles_agree_with_the_synthea_csvs(engine: Engine, tmp_path: Path) -> None:
    # What a site does with test data: give the fictional 555 numbers a real area code.
    for source in (SYNTHEA / "fhir_samples").glob("*.json"):
        text = re.sub(r'"value": "555-(\d{3})-(\d{4})"', r'"value": "617-\1-\2"', source.read_text())
        (tmp_path / source.name).write_text(text)
    result = _import(engine, tmp_path)
    ids = _synthea_ids()
    assert result.patients.accepted == len(ids) == 2 and not result.errors
    rows = _patients(engine)
    for person in _synthea_csv("patients.csv", ids):
        stored = rows[person["Id"]]
        assert (stored.first_name, stored.last_name) == (person["FIRST"], person["LAST"])
        assert stored.birth_date.isoformat() == person["BIRTHDATE"]
        assert stored.sex == {"M": "male", "F": "female"}[person["GENDER"]]
    kind_of = load_code_map()
    systems = {
        "immunizations.csv": "http://hl7.org/fhir/sid/cvx",
        "procedures.csv": "http://snomed.info/sct",
        "conditions.csv": "http://snomed.info/sct",
    }
    expected = set()
    for name, system in systems.items():
        for row in _synthea_csv(name, ids):
            kind = kind_of.get((system, row["CODE"]))
            if kind:
                expected.add((row["PATIENT"], kind, (row.get("DATE") or row["START"])[:10]))
    assert expected and _events(engine) == expected
    assert {kind for _, kind, _ in expected} == {"flu_vaccine"}


# --- the command ---------------------------------------------------------------------------------


def test_cli_json_exit_codes_and_errors_file(engine: Engine, tmp_path: Path) -> None:
    good = write_ndjson(tmp_path / "Patient.ndjson", [patient("p1"), patient("p2", phone="555-0000")])
    errors = tmp_path / "errors.csv"
    result = CliRunner().invoke(main, ["fhir", "import", str(good), "--json", "--errors", str(errors)])
    assert result.exit_code == 1, result.output
    shape = json.loads(result.stdout)
    assert {k: shape[k] for k in ("accepted", "rejected", "inserted", "updated")} == {
        "accepted": 1,
        "rejected": 1,
        "inserted": 1,
        "updated": 0,
    }
    assert shape["events"] == {"accepted": 0, "rejected": 0, "inserted": 0, "unknown_mrns": 0}
    with errors.open(encoding="utf-8") as handle:
        assert list(csv.DictReader(handle)) == [
            {
                "file": str(good),
                "line": "2",
                "entry": "",
                "field": "Patient.telecom (phone)",
                "value": "555-0000",
                "reason": "invalid phone number (no such area code or exchange)",
            }
        ]
    again = CliRunner().invoke(main, ["fhir", "import", str(tmp_path / "Patient.ndjson")])
    assert again.exit_code == 1 and "patients: 1 accepted (0 inserted, 0 updated), 1 rejected" in again.stdout


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: [str(d / "notes.txt")], "not a FHIR file; name Bundles .json"),
        (
            lambda d: [str(d / "Patient.ndjson"), "--errors", str(d / "Patient.ndjson")],
            "the report would overwrite it",
        ),
        (lambda d: [str(d / "empty")], "no .json, .ndjson or .ndjson.gz files in this folder"),
    ],
)
def test_cli_user_errors_are_one_line_exit_2(engine: Engine, tmp_path: Path, make, message) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "empty").mkdir()
    write_ndjson(tmp_path / "Patient.ndjson", [patient("p1")])
    result = CliRunner().invoke(main, ["fhir", "import", *make(tmp_path)])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and result.stderr.strip().count("\n") == 0


def test_resources_of_unexpected_shape_are_reported_not_raised(engine: Engine, tmp_path: Path) -> None:
    odd_patient = patient("p2", name="Ann Lee", telecom={"system": "phone"})
    odd_event = immunization("p1", "140", "2025-10-01")
    odd_event["occurrenceDateTime"] = 20251001
    odd_code = procedure("p1", "73761001", "2024-03-01")
    odd_code["code"] = ["73761001"]
    weird_subject = immunization("p1", "140", "2025-10-01")
    weird_subject["patient"] = {"reference": "Group/7"}
    result = _import(
        engine,
        write_ndjson(
            tmp_path / "odd.ndjson", [patient("p1"), odd_patient, odd_event, odd_code, weird_subject]
        ),
    )
    assert [(e.line, e.field) for e in result.errors] == [
        (2, "Patient.name.given"),
        (2, "Patient.telecom (phone)"),
        (3, "occurrenceDateTime"),
        (5, "patient.reference"),
    ]
    assert result.skipped_unmapped == 1 and set(_patients(engine)) == {"p1"}


def test_the_code_map_ships_in_the_wheel() -> None:
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "outreach.ingest.fhir" in setuptools["packages"]
    assert "ingest/fhir/codemap.csv" in setuptools["package-data"]["outreach"]
