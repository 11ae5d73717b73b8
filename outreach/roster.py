"""CSV import of patients (upsert by mrn) and clinical events (DESIGN.md §5).

A roster is re-exported and re-imported every day, so an import must be idempotent and say
exactly what it changed: one upsert per batch whose UPDATE only fires for rows that differ, and
counts that distinguish new, changed and untouched patients. A bad row never stops the good ones.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import re
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

from sqlalchemy import (
    Boolean,
    Connection,
    Engine,
    Table,
    inspect,
    literal_column,
    or_,
    select,
)
from sqlalchemy import column as sa_column
from sqlalchemy import table as sa_table

from outreach.campaigns import EVENT_KINDS
from outreach.config import Settings, get_settings
from outreach.csvfile import CsvFile, RowError, write_errors_csv
from outreach.errors import UserError
from outreach.models import Patient, PatientEvent, utcnow
from outreach.phones import Phone, PhoneError, parse_phone

__all__ = [
    "EVENT_COLUMNS",
    "PATIENT_COLUMNS",
    "ImportResult",
    "RowError",
    "check_events_header",
    "import_events",
    "import_patients",
    "write_errors_csv",
]

PATIENT_REQUIRED = ("mrn", "first_name", "birth_date", "phone")
PATIENT_OPTIONAL = ("last_name", "sex", "language", "timezone", "postal_code")
PATIENT_COLUMNS = PATIENT_REQUIRED + PATIENT_OPTIONAL
EVENT_REQUIRED = ("mrn", "event", "date")
EVENT_OPTIONAL = ("code", "code_system")
EVENT_COLUMNS = EVENT_REQUIRED + EVENT_OPTIONAL

# Columns an import owns; a row is "unchanged" when all of these already hold the same values.
_DATA_COLUMNS = (
    "first_name",
    "last_name",
    "birth_date",
    "sex",
    "phone",
    "phone_zones",
    "language",
    "timezone",
    "postal_code",
)
_INSERT_COLUMNS = ("mrn", *_DATA_COLUMNS, "active", "created_at", "updated_at")
EVENT_COLUMNS_DB = ("mrn", "kind", "date", "code", "code_system")
_SEXES = {
    "": "unknown",
    "f": "female",
    "female": "female",
    "m": "male",
    "male": "male",
    "o": "other",
    "other": "other",
    "u": "unknown",
    "unknown": "unknown",
}
_BAD_ZONE = "unknown time zone; use an IANA name such as America/Chicago"
_LANGUAGE = re.compile(r"[a-z]{2,3}")
_EARLIEST = dt.date(1900, 1, 1)
# SQLite allows 32,766 bound parameters per statement; stay well below for the mrn pre-select.
_SELECT_CHUNK = 10_000


@dataclass
class ImportResult:
    accepted: int  # inserted + updated + unchanged
    rejected: int  # records with at least one error
    inserted: int
    updated: int
    errors: list[RowError]
    notes: list[str] = field(default_factory=list)  # file-level remarks, e.g. ignored columns

    @property
    def unchanged(self) -> int:
        return self.accepted - self.inserted - self.updated

    def summary(self) -> dict[str, int]:
        """The `--json` shape of DESIGN.md §5."""
        return {
            "accepted": self.accepted,
            "rejected": self.rejected,
            "inserted": self.inserted,
            "updated": self.updated,
        }


# --- field checks: each returns the clean value or raises ValueError with the reason ------------


def _date(text: str, today: dt.date) -> dt.date:
    if len(text) != 10 or text[4] != "-" or text[7] != "-":
        raise ValueError("not a date; write YYYY-MM-DD")
    digits = text[:4] + text[5:7] + text[8:]
    if not (digits.isascii() and digits.isdigit()):
        raise ValueError("not a date; write YYYY-MM-DD")
    try:
        day = dt.date(int(text[:4]), int(text[5:7]), int(text[8:]))
    except ValueError:
        raise ValueError("no such day in the calendar") from None
    if day > today:
        raise ValueError(f"in the future (after {today.isoformat()})")
    if day < _EARLIEST:
        raise ValueError("before 1900; check the year")
    return day


@lru_cache(maxsize=1)
def _zones() -> dict[str, str]:
    """Case-insensitive lookup of IANA names, so "america/chicago" is accepted as America/Chicago."""
    return {name.lower(): name for name in available_timezones()}


def _language(text: str) -> str:
    code = text.lower() or "en"
    if not _LANGUAGE.fullmatch(code):
        raise ValueError("not a language code; use a 2 or 3 letter code such as en or es")
    return code


# --- row parsing -------------------------------------------------------------------------------


class _PatientRows:
    """Turns raw records into insert parameters; keeps the first line of each mrn seen.

    This runs once per row of million-row files, so it avoids per-row closures and caches the
    parse of values that repeat (dates, languages); phone parsing dominates what remains."""

    def __init__(self, index: dict[str, int], region: str, today: dt.date, now: dt.datetime) -> None:
        # Absent optional columns read position -1: the "" appended to every record.
        self.positions = tuple(index.get(name, -1) for name in PATIENT_COLUMNS)
        self.region = region
        self.today = today
        self.now = now
        self.seen: dict[str, int] = {}
        self.dates: dict[str, dt.date] = {}
        self.languages: dict[str, str] = {}

    def parse(
        self, line: int, fields: list[str], errors: list[RowError], parsed: Phone | str | None = None
    ) -> dict[str, Any] | None:
        """One roster record to a row, or None with its problems added to `errors`; `parsed` is the
        phone already parsed in a helper process (a Phone, or the reason it is unusable)."""
        fields.append("")
        mrn, first_name, birth_raw, phone_raw, last_name, sex_raw, language_raw, zone_raw, postal_code = (
            fields[at].strip() for at in self.positions
        )
        # A name is text a patient will read: a line break or a run of spaces typed into a cell
        # must not reach a message.
        first_name, last_name = " ".join(first_name.split()), " ".join(last_name.split())
        bad: list[RowError] = []
        if not mrn:
            bad.append(RowError(line, "mrn", "", "missing mrn"))
        elif len(mrn) > 64:
            bad.append(RowError(line, "mrn", mrn, "too long (at most 64 characters)"))
        else:
            first = self.seen.setdefault(mrn, line)
            if first != line:
                bad.append(RowError(line, "mrn", mrn, f"duplicate mrn (first on line {first})"))
        if not first_name:
            bad.append(RowError(line, "first_name", "", "missing first_name"))
        elif len(first_name) > 100:
            bad.append(RowError(line, "first_name", first_name, "too long (at most 100 characters)"))
        if len(last_name) > 100:
            bad.append(RowError(line, "last_name", last_name, "too long (at most 100 characters)"))
        birth_date = self.dates.get(birth_raw)
        if birth_date is None:
            if not birth_raw:
                bad.append(RowError(line, "birth_date", "", "missing birth_date"))
            else:
                try:
                    birth_date = self.dates[birth_raw] = _date(birth_raw, self.today)
                except ValueError as exc:
                    bad.append(RowError(line, "birth_date", birth_raw, str(exc)))
        sex = _SEXES.get(sex_raw.lower())
        if sex is None:
            bad.append(RowError(line, "sex", sex_raw, "unknown sex; use female, male, other or unknown"))
        checked = parsed if parsed is not None else _parse_phone_or_reason(phone_raw, self.region)
        phone: Phone | None = None
        if isinstance(checked, str):
            bad.append(RowError(line, "phone", phone_raw, checked))
        else:
            phone = checked
        language = self.languages.get(language_raw)
        if language is None:
            try:
                language = self.languages[language_raw] = _language(language_raw)
            except ValueError as exc:
                bad.append(RowError(line, "language", language_raw, str(exc)))
        timezone = None
        if zone_raw:
            timezone = _zones().get(zone_raw.lower())
            if timezone is None:
                bad.append(RowError(line, "timezone", zone_raw, _BAD_ZONE))
        if len(postal_code) > 16:
            bad.append(RowError(line, "postal_code", postal_code, "too long (at most 16 characters)"))
        if bad or phone is None:
            errors.extend(bad)
            return None
        now = self.now
        return {
            "mrn": mrn,
            "first_name": first_name,
            "last_name": last_name or None,
            "birth_date": birth_date,
            "sex": sex,
            "phone": phone.e164,
            "phone_zones": phone.zones_text,
            "language": language,
            "timezone": timezone,
            "postal_code": postal_code or None,
            "active": True,
            "created_at": now,
            "updated_at": now,
        }


def _event_row(
    line: int, fields: list[str], index: dict[str, int], today: dt.date, errors: list[RowError]
) -> dict[str, Any] | None:
    def get(name: str) -> str:
        at = index.get(name)
        return "" if at is None else fields[at].strip()

    problems: list[RowError] = []
    mrn = get("mrn")
    if not mrn:
        problems.append(RowError(line, "mrn", "", "missing mrn"))
    elif len(mrn) > 64:
        problems.append(RowError(line, "mrn", mrn, "too long (at most 64 characters)"))
    raw_kind = get("event")
    kind = raw_kind.lower().replace(" ", "_")
    if kind not in EVENT_KINDS:
        reason = "missing event" if not raw_kind else f"unknown event; use one of {', '.join(EVENT_KINDS)}"
        problems.append(RowError(line, "event", raw_kind, reason))
    raw_date = get("date")
    day = None
    if not raw_date:
        problems.append(RowError(line, "date", "", "missing date"))
    else:
        try:
            day = _date(raw_date, today)
        except ValueError as exc:
            problems.append(RowError(line, "date", raw_date, str(exc)))
    code, system = get("code"), get("code_system")
    if len(code) > 40:
        problems.append(RowError(line, "code", code, "too long (at most 40 characters)"))
    if len(system) > 100:
        problems.append(RowError(line, "code_system", system, "too long (at most 100 characters)"))
    if problems:
        errors.extend(problems)
        return None
    return {"mrn": mrn, "kind": kind, "date": day, "code": code, "code_system": system}


# --- phones in helper processes --------------------------------------------------------------
# Parsing phone numbers is most of an import's CPU; a large roster parses them in other processes
# while this one validates the rest and writes to the database.

PARALLEL_FROM_BYTES = 4 * 1024 * 1024
_IN_FLIGHT = 4  # chunks submitted ahead: enough to keep every helper busy, bounded memory


def _parse_phone_or_reason(raw: str, region: str) -> Phone | str:
    try:
        return parse_phone(raw.strip(), region)
    except PhoneError as exc:
        return str(exc)


def _parse_phones(raws: list[str], region: str) -> list[Phone | str]:
    return [_parse_phone_or_reason(raw, region) for raw in raws]


def _phone_pool(path: Path) -> ProcessPoolExecutor | None:
    """Worker processes for a large file on a machine with cores to spare; None otherwise."""
    cores = os.cpu_count() or 1
    if cores < 2 or path.stat().st_size < PARALLEL_FROM_BYTES:
        return None
    # fork, not spawn: the helpers only run phonenumbers, and spawn would re-import the caller's
    # __main__ (impossible for `python -`, slow for the CLI).
    # One core stays with this process (validation, COPY) and the database; the rest parse phones.
    return ProcessPoolExecutor(max_workers=min(cores - 1, 4), mp_context=multiprocessing.get_context("fork"))


def _chunks(records: Iterator[tuple[int, list[str]]], size: int) -> Iterator[list[tuple[int, list[str]]]]:
    chunk: list[tuple[int, list[str]]] = []
    for record in records:
        chunk.append(record)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _with_phones(
    chunks: Iterator[list[tuple[int, list[str]]]], column: int, region: str, pool: ProcessPoolExecutor | None
) -> Iterator[tuple[list[tuple[int, list[str]]], list[Phone | str] | list[None]]]:
    """Each chunk with its phones parsed, keeping a few chunks in flight in the pool."""
    if pool is None:
        for chunk in chunks:
            yield chunk, [None] * len(chunk)
        return
    in_flight: deque[tuple[list[tuple[int, list[str]]], Future[list[Phone | str]]]] = deque()
    for chunk in chunks:
        raws = [fields[column] if column < len(fields) else "" for _, fields in chunk]
        in_flight.append((chunk, pool.submit(_parse_phones, raws, region)))
        if len(in_flight) > _IN_FLIGHT:
            done, future = in_flight.popleft()
            yield done, future.result()
    while in_flight:
        done, future = in_flight.popleft()
        yield done, future.result()


# --- writing -----------------------------------------------------------------------------------


def _upsert_source(engine: Engine, table: Table, columns: Sequence[str]) -> tuple[Any, Callable[..., Any]]:
    """An INSERT of a batch, and the function that loads the batch for it.

    PostgreSQL: the batch is COPYed into a temporary staging table (psycopg's COPY is the fastest
    way in, several times a multi-row VALUES list or array parameters) and inserted from there.
    SQLite: an executemany, which SQLAlchemy batches into VALUES pages. The loader takes the
    connection and the rows and returns the parameters for the statement.
    """
    name = engine.dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stage_name = f"{table.name}_stage"
        stage = sa_table(stage_name, *(sa_column(c) for c in columns))
        stmt = pg_insert(table).from_select(list(columns), select(*(stage.c[c] for c in columns)))
        names = ", ".join(columns)

        def load(conn: Connection, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
            conn.exec_driver_sql(
                f"CREATE TEMP TABLE IF NOT EXISTS {stage_name} ON COMMIT DELETE ROWS "
                f"AS SELECT {names} FROM {table.name} WITH NO DATA"
            )
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            with cursor.copy(f"COPY {stage_name} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row([row[c] for c in columns])
            return {}

        return stmt, load
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table), lambda _conn, rows: rows
    raise UserError(f"importing into {name} is not supported; use PostgreSQL or SQLite")


def _require_tables(engine: Engine, *names: str) -> None:
    found = inspect(engine)
    if not all(found.has_table(name) for name in names):
        raise UserError("the database has no outreach tables yet; run `outreach db upgrade` first")


class _PatientWriter:
    """One upsert per batch. The UPDATE has a WHERE so identical rows are left alone (updated_at
    does not move); inserted vs updated comes from `xmax = 0` on PostgreSQL, and on SQLite from a
    pre-select made while holding the write lock (SQLite writers are serialized, so it is exact)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.table: Table = Patient.__table__  # type: ignore[assignment]
        self.sqlite = engine.dialect.name == "sqlite"
        table = self.table
        stmt, self.params = _upsert_source(engine, table, _INSERT_COLUMNS)
        excluded = stmt.excluded
        changed = or_(*(table.c[name].is_distinct_from(excluded[name]) for name in _DATA_COLUMNS))
        values = {name: excluded[name] for name in _DATA_COLUMNS}
        values["updated_at"] = excluded.updated_at
        stmt = stmt.on_conflict_do_update(index_elements=[table.c.mrn], set_=values, where=changed)
        if self.sqlite:
            self.stmt = stmt.returning(table.c.mrn)
        else:
            self.stmt = stmt.returning(table.c.mrn, literal_column("(xmax = 0)", Boolean))
        self.inserted = 0
        self.updated = 0

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        with self.engine.connect() as conn:
            if self.sqlite:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                existing = self._existing(conn, [row["mrn"] for row in rows])
                touched = len(conn.execute(self.stmt, self.params(conn, rows)).all())
                inserted = len(rows) - existing
                self.inserted += inserted
                self.updated += touched - inserted
            else:
                result = conn.execute(self.stmt, self.params(conn, rows)).all()
                inserted = sum(1 for _mrn, fresh in result if fresh)
                self.inserted += inserted
                self.updated += len(result) - inserted
            conn.commit()

    def _existing(self, conn: Connection, mrns: list[str]) -> int:
        count = 0
        for start in range(0, len(mrns), _SELECT_CHUNK):
            chunk = mrns[start : start + _SELECT_CHUNK]
            count += len(conn.execute(select(self.table.c.mrn).where(self.table.c.mrn.in_(chunk))).all())
        return count


class _EventWriter:
    """Events are facts: an identical (mrn, kind, date, code) is already known, so do nothing."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        table: Table = PatientEvent.__table__  # type: ignore[assignment]
        stmt, self.params = _upsert_source(engine, table, EVENT_COLUMNS_DB)
        self.stmt = stmt.on_conflict_do_nothing(
            index_elements=[table.c.mrn, table.c.kind, table.c.date, table.c.code]
        ).returning(table.c.id)
        self.inserted = 0

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        with self.engine.connect() as conn:
            self.inserted += len(conn.execute(self.stmt, self.params(conn, rows)).all())
            conn.commit()


# --- public API --------------------------------------------------------------------------------


def _notes(csvfile: CsvFile) -> list[str]:
    if not csvfile.ignored:
        return []
    names = ", ".join(csvfile.ignored)
    return [f"{csvfile.path.name}: ignored column{'s' if len(csvfile.ignored) > 1 else ''} {names}"]


def _local_today(settings: Settings) -> dt.date:
    """Dates "in the future" are judged by the clinic's calendar, not the server's UTC one."""
    return dt.datetime.now(ZoneInfo(settings.default_timezone)).date()


def import_patients(
    engine: Engine,
    path: Path,
    *,
    settings: Settings | None = None,
    progress: bool = False,
    today: dt.date | None = None,
    batch_size: int = 5000,
) -> ImportResult:
    """Upsert the roster at `path` by mrn; bad rows are reported, every good row loads."""
    settings = settings or get_settings()
    today = today or _local_today(settings)
    errors: list[RowError] = []
    with CsvFile(
        path, PATIENT_REQUIRED, PATIENT_OPTIONAL, label="roster", progress=progress, errors=errors
    ) as csvfile:
        _require_tables(engine, "patients")
        parser = _PatientRows(csvfile.index, settings.default_region, today, utcnow())
        writer = _PatientWriter(engine)
        accepted = rejected = 0
        pool = _phone_pool(path)
        try:
            chunks = _chunks(csvfile.records(), batch_size)
            for chunk, phones in _with_phones(chunks, csvfile.index["phone"], settings.default_region, pool):
                batch = []
                for (line, fields), parsed in zip(chunk, phones, strict=True):
                    row = parser.parse(line, fields, errors, parsed)
                    if row is None:
                        rejected += 1
                    else:
                        batch.append(row)
                writer.write(batch)
                accepted += len(batch)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        return ImportResult(
            accepted=accepted,
            rejected=rejected + csvfile.rejected,
            inserted=writer.inserted,
            updated=writer.updated,
            errors=sorted(errors, key=lambda e: e.line),
            notes=_notes(csvfile),
        )


def import_events(
    engine: Engine,
    path: Path,
    *,
    progress: bool = False,
    today: dt.date | None = None,
    batch_size: int = 5000,
) -> ImportResult:
    """Add the clinical events at `path`; events already known are left as they are."""
    today = today or _local_today(get_settings())
    errors: list[RowError] = []
    with CsvFile(
        path, EVENT_REQUIRED, EVENT_OPTIONAL, label="events file", progress=progress, errors=errors
    ) as csvfile:
        _require_tables(engine, "patient_events")
        writer = _EventWriter(engine)
        index = csvfile.index
        batch: list[dict[str, Any]] = []
        accepted = rejected = 0
        for line, fields in csvfile.records():
            row = _event_row(line, fields, index, today, errors)
            if row is None:
                rejected += 1
                continue
            batch.append(row)
            if len(batch) >= batch_size:
                writer.write(batch)
                accepted += len(batch)
                batch = []
        writer.write(batch)
        accepted += len(batch)
        return ImportResult(
            accepted=accepted,
            rejected=rejected + csvfile.rejected,
            inserted=writer.inserted,
            updated=0,
            errors=sorted(errors, key=lambda e: e.line),
            notes=_notes(csvfile),
        )


def check_events_header(path: Path) -> None:
    """Fail now (UserError) if the events file cannot be imported, so a combined
    `patients import --events` loads nothing when either header is wrong."""
    with CsvFile(path, EVENT_REQUIRED, EVENT_OPTIONAL, label="events file"):
        pass
