"""`import_fhir`: FHIR files → patients and events, through the CSV import's own checks and writers.

A roster from an EHR must obey the same rules as one from a spreadsheet, so nothing here decides
what a good patient or event is: Patient resources become roster records checked by PatientCheck
and upserted by PatientWriter (same duplicate rule, same phone check, same COPY path), and mapped
resources become events checked by `event_row` and written by EventWriter (same unknown-mrn
count). What is FHIR's own is here: which resources count (codemap, resources), where a problem
sits (file, NDJSON line or Bundle entry), the patient's active flag (deceased, inactive), and which
mrn an event's patient reference stands for.

Memory stays flat whatever the export's size: resources are handled a batch at a time, and the two
facts kept about every patient (its mrn's first line, for the duplicate rule, and the mrn its
reference keys stand for) are kept on disk (ingest/spill.py). An event's reference is resolved
when its batch is written, after the Patients read before it, in one lookup for the batch.
"""

from __future__ import annotations

import datetime as dt
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, update

from outreach.clock import clinic_today, utcnow
from outreach.config import Settings
from outreach.ingest.batches import well_formed
from outreach.ingest.csvfile import Progress, RowError
from outreach.ingest.events import EVENT_COLUMNS, event_row
from outreach.ingest.fhir.codemap import CodeMap, load_code_map
from outreach.ingest.fhir.files import Item, fhir_files, is_ndjson, read_items
from outreach.ingest.fhir.report import FhirError, FhirResult
from outreach.ingest.fhir.resources import (
    EventFacts,
    PatientFacts,
    Unusable,
    event_facts,
    patient_facts,
    patient_keys,
    reference_key,
)
from outreach.ingest.load import EventWriter, PatientWriter
from outreach.ingest.patients import PATIENT_COLUMNS, Batch, PatientCheck
from outreach.ingest.spill import FirstLines, KeyMap, Spill
from outreach.store import sql
from outreach.store.db import require_tables
from outreach.store.models import Patient

_EVENT_INDEX = {name: at for at, name in enumerate(EVENT_COLUMNS)}
_CHUNK = 5_000


def import_fhir(
    engine: Engine,
    paths: list[Path],
    *,
    settings: Settings,
    progress: Progress | None = None,
    today: dt.date | None = None,
    batch_size: int = 5000,
) -> FhirResult:
    """Load every FHIR file under `paths`; bad resources are reported, the rest loads."""
    files = fhir_files(paths)
    kind_of = load_code_map(settings.code_map)
    require_tables(engine, "patients", "patient_events")
    run = _Run(engine, settings, kind_of, today or clinic_today(settings.default_timezone), batch_size)
    try:
        for path in files:
            run.read_file(path, progress)
    except BaseException:
        run.close()
        raise
    return run.finish()


class _Run:
    """One import: the writers, the pending batches and what has been counted so far."""

    def __init__(
        self, engine: Engine, settings: Settings, kind_of: CodeMap, today: dt.date, size: int
    ) -> None:
        self.engine = engine
        self.kind_of = kind_of
        self.today = today
        self.size = size
        self.patients = PatientWriter(engine, utcnow())
        self.check = PatientCheck(
            PATIENT_COLUMNS, settings.default_region, today, self.patients.now, copy=self.patients.copy
        )
        self.events = EventWriter(engine)
        self.result = FhirResult()
        self.loader = ThreadPoolExecutor(1, "fhir-events") if engine.dialect.name == "postgresql" else None
        self.in_flight: Future[None] | None = None
        self.spill = Spill()
        self.mrn_of = KeyMap(self.spill)  # reference keys whose mrn is not the key itself
        self.seen = FirstLines(self.spill)
        self.path = Path()
        self._start_file(self.path)

    def _start_file(self, path: Path) -> None:
        self.path = path
        self.seen.drop()
        self.seen = FirstLines(self.spill)  # duplicates are a file's, as for the CSV roster
        self.lines: list[int] = []
        self.values: list[str] = []
        self.mrns: list[str] = []  # parallel to self.lines: the mrn whose repeats are looked for
        self.keys: list[tuple[str, str]] = []  # (reference key, mrn) of the pending Patients
        self.flags: list[tuple[str, bool]] = []  # (mrn, active), parallel to self.lines
        self.pending: list[tuple[int, EventFacts]] = []  # events whose patient is not resolved yet

    def read_file(self, path: Path, progress: Progress | None) -> None:
        self._start_file(path)
        self.events.unknown_lines = []
        unknown_before = self.events.unknown_mrns
        errors_before = len(self.result.errors)
        for item in read_items(path, progress):
            self._item(item)
        self._flush_events()
        # A file's problems in file order (the roster check reports its own after the fact).
        mine = self.result.errors[errors_before:]
        mine.sort(key=lambda e: e.line if e.line is not None else e.entry or 0)
        self.result.errors[errors_before:] = mine
        unknown = self.events.unknown_mrns - unknown_before
        if unknown:
            self.result.unknown_at.append((path, unknown, list(self.events.unknown_lines)))
        self.result.files += 1

    def _item(self, item: Item) -> None:
        self.result.resources += 1
        resource = item.resource
        if resource is None:
            self._error(item.at, "", "", item.problem)
            self.result.unreadable += 1
            return
        is_patient = resource["resourceType"] == "Patient"
        try:
            # Only the reading is guarded: an element of an unexpected JSON type (a string where
            # FHIR has a list) is that resource's problem, never the import's.
            facts = patient_facts(resource, self.today) if is_patient else event_facts(resource, self.kind_of)
            keys = patient_keys(resource, item.full_url) if is_patient else []
        except Unusable as exc:
            self._reject(item.at, is_patient, exc.field, exc.value, exc.reason)
            return
        except (TypeError, AttributeError, KeyError, IndexError, ValueError) as exc:
            self._reject(item.at, is_patient, "", "", f"not a valid {resource['resourceType']} ({exc})")
            return
        if isinstance(facts, PatientFacts):
            self._patient(item.at, facts, keys)
        else:
            self._event(item.at, facts)

    def _reject(self, at: int, is_patient: bool, field: str, value: str, reason: str) -> None:
        self._error(at, field, value, reason)
        if is_patient:
            self.result.patients.rejected += 1
        else:
            self.result.events_rejected += 1

    def _patient(self, at: int, facts: PatientFacts, keys: list[str]) -> None:
        mrn = facts.values[0].strip()
        self.keys += [(key, mrn) for key in keys if key != mrn]
        self.mrns.append(well_formed(mrn))
        self.lines.append(at)
        self.values += facts.values
        self.flags.append((mrn, facts.active))
        if len(self.lines) >= self.size:
            self._flush_patients()

    def _event(self, at: int, facts: EventFacts | str) -> None:
        if isinstance(facts, str):
            setattr(self.result, f"skipped_{facts}", getattr(self.result, f"skipped_{facts}") + 1)
            return
        self.pending.append((at, facts))
        if len(self.pending) >= self.size:
            self._flush_events(wait=False)

    def _flush_patients(self) -> None:
        """Upsert the pending Patients; then set `active` from deceased/active (the roster's upsert
        leaves `active` alone, and only FHIR says a patient died)."""
        if not self.lines:
            return
        self.mrn_of.add(self.keys)
        duplicates = self.seen.repeats(self.mrns, self.lines)
        checked = self.check.check(Batch(self.lines, self.values, len(PATIENT_COLUMNS), duplicates))
        self.patients.write(checked)
        rejected = {e.line for e in checked.errors}
        for error in checked.errors:
            self._error(
                error.line, _PATIENT_FIELDS.get(error.column, error.column), error.value, error.reason
            )
        kept = {
            mrn: active
            for at, (mrn, active) in zip(self.lines, self.flags, strict=True)
            if at not in rejected
        }
        self._set_active(kept)
        self.lines, self.values, self.mrns, self.keys, self.flags = [], [], [], [], []

    def _set_active(self, active: dict[str, bool]) -> None:
        table: Table = Patient.__table__  # type: ignore[assignment]
        with self.engine.begin() as conn:
            for flag in (False, True):
                mrns = [mrn for mrn, value in active.items() if value is flag]
                for start in range(0, len(mrns), _CHUNK):
                    chunk = mrns[start : start + _CHUNK]
                    stmt = (
                        update(table)
                        .where(table.c.mrn.in_(chunk), table.c.active.is_not(flag))
                        .values(active=flag)
                    )
                    self.result.deactivated += conn.execute(stmt).rowcount if not flag else 0

    def _flush_events(self, *, wait: bool = True) -> None:
        """Patients first, so an event of a patient in the same file finds it on the roster.

        On PostgreSQL the batch is written by a thread while this one parses the next (the
        driver waits on the server without the GIL), one batch in flight; SQLite has one writer
        at a time anyway, so it writes here."""
        self._flush_patients()
        rows, at = self._event_rows(self.pending)
        self.pending = []
        self._wait_for_events()
        self.result.events_accepted += len(rows)
        if self.loader is None or wait:
            self.events.write(rows, at)
        else:
            self.in_flight = self.loader.submit(self.events.write, rows, at)

    def _event_rows(self, pending: list[tuple[int, EventFacts]]) -> tuple[list[dict[str, Any]], list[int]]:
        """The events as rows checked like the events CSV's, each patient reference resolved to
        its mrn (a reference no Patient with another mrn had is taken as the mrn itself: the
        writer then counts it as unknown if no patient has it)."""
        keys = [reference_key(facts.patient) for _, facts in pending]
        mrn_of = self.mrn_of.get(keys)
        rows: list[dict[str, Any]] = []
        lines: list[int] = []
        for (at, facts), key in zip(pending, keys, strict=True):
            errors: list[RowError] = []
            values = [mrn_of.get(key, key), facts.kind, facts.date, facts.code, facts.system]
            row = event_row(at, values, _EVENT_INDEX, self.today, errors)
            if row is None:
                for error in errors:
                    self._error(at, _EVENT_FIELDS.get(error.column, error.column), error.value, error.reason)
                self.result.events_rejected += 1
            else:
                rows.append(row)
                lines.append(at)
        return rows, lines

    def _wait_for_events(self) -> None:
        if self.in_flight is not None:
            in_flight, self.in_flight = self.in_flight, None
            in_flight.result()

    def _error(self, at: int, field: str, value: str, reason: str) -> None:
        ndjson = is_ndjson(self.path)
        self.result.errors.append(
            FhirError(self.path, at if ndjson else None, None if ndjson else at, field, value, reason)
        )

    def close(self) -> None:
        """Wait for (or, after a failure, drop) the batch in flight and release the connections."""
        try:
            self._wait_for_events()
        finally:
            if self.loader is not None:
                self.loader.shutdown(wait=True)
            self.patients.close()
            self.spill.close()

    def finish(self) -> FhirResult:
        self.close()
        result = self.result
        writer = self.patients
        result.patients.accepted, result.patients.inserted, result.patients.updated = (
            writer.accepted,
            writer.inserted,
            writer.updated,
        )
        result.patients.rejected += writer.rejected
        result.events_inserted = self.events.inserted
        result.unknown_mrns = self.events.unknown_mrns
        if writer.inserted or writer.updated or result.deactivated:
            sql.analyze(self.engine, writer.table)
        if self.events.inserted:
            sql.analyze(self.engine, self.events.table)
        return result


# The roster column a check names, as the FHIR element it came from.
_PATIENT_FIELDS = {
    "mrn": "Patient.identifier (MR) / Patient.id",
    "first_name": "Patient.name.given",
    "last_name": "Patient.name.family",
    "birth_date": "Patient.birthDate",
    "sex": "Patient.gender",
    "phone": "Patient.telecom (phone)",
    "language": "Patient.communication.language",
    "postal_code": "Patient.address.postalCode",
}
_EVENT_FIELDS = {"mrn": "subject.reference", "date": "date", "code": "code", "code_system": "code.system"}
