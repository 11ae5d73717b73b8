"""CSV import of patients (upsert by mrn) and clinical events (DESIGN.md §5): the public face.

A roster is re-exported and re-imported every day, so an import must be idempotent and say
exactly what it changed, and a bad row never stops the good ones. The jobs live next door:
reading CSV (csvfile), checking roster rows (patients) and event rows (events), batching with the
whole-file duplicate check (batches), helper processes (pool), and loading (load). This module
wires them into `import_patients` and `import_events` and keeps the names callers import.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from outreach.clock import clinic_today, utcnow
from outreach.config import Settings
from outreach.ingest import pool
from outreach.ingest.batches import read_batches
from outreach.ingest.csvfile import CsvFile, Progress, RowError
from outreach.ingest.errorsfile import (
    ErrorSpool,
    check_errors_path,
    errors_files,
    events_errors_path,
    write_errors_csv,
)
from outreach.ingest.events import EVENT_COLUMNS, EVENT_OPTIONAL, EVENT_REQUIRED, event_row
from outreach.ingest.load import EventWriter, PatientWriter
from outreach.ingest.patients import PATIENT_COLUMNS, PATIENT_OPTIONAL, PATIENT_REQUIRED, Batch, PatientCheck
from outreach.store import sql
from outreach.store.db import require_tables

__all__ = [
    "EVENT_COLUMNS",
    "PATIENT_COLUMNS",
    "ImportResult",
    "RowError",
    "check_errors_path",
    "check_events_header",
    "check_patients_header",
    "errors_files",
    "events_errors_path",
    "import_events",
    "import_patients",
    "write_errors_csv",
]


@dataclass
class ImportResult:
    accepted: int  # inserted + updated + unchanged
    rejected: int  # records with at least one error
    inserted: int
    updated: int
    errors: list[RowError]  # in line order; with `errors_to`, only the first ERRORS_KEPT of them
    notes: list[str] = field(default_factory=list)  # file-level remarks, e.g. ignored columns
    warnings: list[str] = field(default_factory=list)  # accepted, but a person should look
    unknown_mrns: int | None = None  # events only: accepted events whose mrn is no patient's
    problems: int | None = None  # how many errors in all, when `errors` holds only the first ones

    def __post_init__(self) -> None:
        if self.problems is None:
            self.problems = len(self.errors)

    @property
    def unchanged(self) -> int:
        return self.accepted - self.inserted - self.updated

    def summary(self) -> dict[str, int]:
        """The `--json` shape of DESIGN.md §5; an events import adds "unknown_mrns"."""
        shape = {
            "accepted": self.accepted,
            "rejected": self.rejected,
            "inserted": self.inserted,
            "updated": self.updated,
        }
        if self.unknown_mrns is not None:
            shape["unknown_mrns"] = self.unknown_mrns
        return shape


def _notes(csvfile: CsvFile) -> list[str]:
    if not csvfile.ignored:
        return []
    names = ", ".join(csvfile.ignored)
    return [f"{csvfile.path.name}: ignored column{'s' if len(csvfile.ignored) > 1 else ''} {names}"]


def _local_today(settings: Settings) -> dt.date:
    """Dates "in the future" are judged by the clinic's calendar, not the server's UTC one."""
    return clinic_today(settings.default_timezone)


def import_patients(
    engine: Engine,
    path: Path,
    *,
    settings: Settings,
    progress: Progress | None = None,
    today: dt.date | None = None,
    batch_size: int = 5000,
    errors_to: Path | None = None,
) -> ImportResult:
    """Upsert the roster at `path` by mrn; bad rows are reported, every good row loads.

    With `errors_to`, the report of every problem is written there as the import goes (memory
    stays flat however many rows are rejected) and the result keeps only the first ones."""
    today = today or _local_today(settings)
    errors = _problems(errors_to)
    try:
        with CsvFile(
            path, PATIENT_REQUIRED, PATIENT_OPTIONAL, label="roster", progress=progress, errors=errors
        ) as csvfile:
            require_tables(engine, "patients")
            present = [name for name in PATIENT_COLUMNS if name in csvfile.index]
            now = utcnow()
            writer = PatientWriter(engine, now, errors)
            check = PatientCheck(present, settings.default_region, today, now, copy=writer.copy)
            _load_patients(path, read_batches(csvfile, present, batch_size), check, writer)
            if writer.inserted or writer.updated:
                sql.analyze(engine, writer.table)
            first, count = _finish(errors)
            return ImportResult(
                accepted=writer.accepted,
                rejected=writer.rejected + csvfile.rejected,
                inserted=writer.inserted,
                updated=writer.updated,
                errors=first,
                notes=_notes(csvfile),
                problems=count,
            )
    finally:
        if isinstance(errors, ErrorSpool):
            errors.close()


def _problems(errors_to: Path | None) -> list[RowError] | ErrorSpool:
    return [] if errors_to is None else ErrorSpool(errors_to)


def _finish(errors: list[RowError] | ErrorSpool) -> tuple[list[RowError], int]:
    """The problems in line order (the first ERRORS_KEPT when they went to a report), and how many."""
    if isinstance(errors, ErrorSpool):
        return errors.finish(), errors.count
    return sorted(errors, key=lambda e: e.line), len(errors)


def _load_patients(path: Path, batches: Iterator[Batch], check: PatientCheck, writer: PatientWriter) -> None:
    """Check and load every batch: here for a small file, in helper processes for a large one."""
    helpers = pool.helper_pool(path, check)
    try:
        if helpers is None:
            for batch in batches:
                writer.write(check.check(batch))
        elif writer.copy:
            pool.load_in_parallel(batches, helpers, writer)
        else:
            # SQLite works in this process anyway, and a connection made in another thread
            # would not even see an in-memory database.
            for checked in pool.checked_in_order(batches, helpers):
                writer.write(checked)
    finally:
        if helpers is not None:
            helpers.shutdown(cancel_futures=True)
        writer.close()


def import_events(
    engine: Engine,
    path: Path,
    *,
    settings: Settings,
    progress: Progress | None = None,
    today: dt.date | None = None,
    batch_size: int = 5000,
    errors_to: Path | None = None,
) -> ImportResult:
    """Add the clinical events at `path`; events already known are left as they are. `errors_to`
    as for import_patients."""
    today = today or _local_today(settings)
    errors = _problems(errors_to)
    try:
        return _import_events(engine, path, errors, progress=progress, today=today, batch_size=batch_size)
    finally:
        if isinstance(errors, ErrorSpool):
            errors.close()


def _import_events(
    engine: Engine,
    path: Path,
    errors: list[RowError] | ErrorSpool,
    *,
    progress: Progress | None,
    today: dt.date,
    batch_size: int,
) -> ImportResult:
    with CsvFile(
        path, EVENT_REQUIRED, EVENT_OPTIONAL, label="events file", progress=progress, errors=errors
    ) as csvfile:
        require_tables(engine, "patient_events", "patients")
        writer = EventWriter(engine)
        index = csvfile.index
        batch: list[dict[str, Any]] = []
        lines: list[int] = []
        accepted = rejected = 0
        for line, fields in csvfile.records():
            row = event_row(line, fields, index, today, errors)
            if row is None:
                rejected += 1
                continue
            batch.append(row)
            lines.append(line)
            if len(batch) >= batch_size:
                writer.write(batch, lines)
                accepted += len(batch)
                batch, lines = [], []
        writer.write(batch, lines)
        accepted += len(batch)
        if writer.inserted:
            sql.analyze(engine, writer.table)
        first, count = _finish(errors)
        return ImportResult(
            accepted=accepted,
            rejected=rejected + csvfile.rejected,
            inserted=writer.inserted,
            updated=0,
            errors=first,
            notes=_notes(csvfile),
            warnings=_unknown_mrns_warning(csvfile, writer),
            unknown_mrns=writer.unknown_mrns,
            problems=count,
        )


def _unknown_mrns_warning(csvfile: CsvFile, writer: EventWriter) -> list[str]:
    """One line: how many events name an mrn no patient has, and where the first few are."""
    count = writer.unknown_mrns
    if not count:
        return []
    lines = ", ".join(map(str, writer.unknown_lines)) + (", …" if count > len(writer.unknown_lines) else "")
    some = "1 event names an mrn" if count == 1 else f"{count} events name mrns"
    where = f"line{'s' if count > 1 else ''} {lines}"
    return [
        f"{csvfile.path.name}: {some} that no patient has ({where}); kept, they count once those "
        "patients are imported: check those mrns for typos"
    ]


def check_patients_header(path: Path) -> None:
    """Fail now (UserError) if the roster cannot be imported, so the roster page can refuse a file
    that is not a roster in the request instead of in the import that runs after it."""
    with CsvFile(path, PATIENT_REQUIRED, PATIENT_OPTIONAL, label="roster"):
        pass


def check_events_header(path: Path) -> None:
    """Fail now (UserError) if the events file cannot be imported, so a combined
    `patients import --events` loads nothing when either header is wrong."""
    with CsvFile(path, EVENT_REQUIRED, EVENT_OPTIONAL, label="events file"):
        pass
