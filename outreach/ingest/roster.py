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
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from operator import itemgetter
from pathlib import Path
from typing import Any
from zoneinfo import available_timezones

from sqlalchemy import (
    Boolean,
    Connection,
    DateTime,
    Engine,
    Table,
    bindparam,
    func,
    inspect,
    literal_column,
    or_,
    select,
    true,
)

from outreach.campaigns import EVENT_KINDS
from outreach.clock import clinic_today, utcnow
from outreach.config import Settings
from outreach.errors import UserError
from outreach.ingest.csvfile import CsvFile, Progress, RowError, write_errors_csv
from outreach.phones import Phone, PhoneError, parse_phone
from outreach.store import sql
from outreach.store.models import Patient, PatientEvent

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


# --- row checks --------------------------------------------------------------------------------
# A large roster is read in this process and checked in helper processes (_helper_pool), so what
# crosses between them is kept cheap to pickle: a batch is its records' fields in one flat list,
# and a checked batch comes back as the COPY text of its good rows plus the problems found.


@dataclass
class _Batch:
    """Records of the roster, in file order: `fields` holds `width` values per record (the
    roster's columns that are present, in PATIENT_COLUMNS order) and `duplicates` maps a record's
    index in the batch to the line where its mrn first appeared."""

    lines: list[int]
    fields: list[str]
    width: int
    duplicates: dict[int, int]


@dataclass
class _Checked:
    """A checked batch: its good rows as COPY text (PostgreSQL) or as insert parameters."""

    accepted: int
    rejected: int
    errors: list[RowError]
    copy_text: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)


class _PatientCheck:
    """Checks roster records; one lives in each helper process and one in the importing process.

    This runs once per row of million-row files, so it avoids per-row closures and per-row
    objects beyond one tuple of clean values, and caches the parse of values that repeat (dates,
    languages); phone parsing dominates what remains. The duplicate-mrn check is not here: it
    needs the whole file, so the reading process does it and hands the answer over (_Batch).
    """

    def __init__(
        self, present: Sequence[str], region: str, today: dt.date, now: dt.datetime, *, copy: bool
    ) -> None:
        # Where each of PATIENT_COLUMNS sits in a record of `present` values; an absent optional
        # column reads the "" appended after them.
        self.positions = tuple(present.index(n) if n in present else len(present) for n in PATIENT_COLUMNS)
        self.complete = len(present) == len(PATIENT_COLUMNS)
        self.region = region
        self.today = today
        self.now = now
        self.copy = copy
        self.dates: dict[str, dt.date] = {}
        self.languages: dict[str, str] = {}

    def check(self, batch: _Batch) -> _Checked:
        errors: list[RowError] = []
        good: list[tuple[str, ...]] = []
        records: Iterable[tuple[str, ...]] = zip(*[iter(batch.fields)] * batch.width, strict=True)
        if not self.complete:
            pick = itemgetter(*self.positions)
            records = (pick((*record, "")) for record in records)
        duplicates = batch.duplicates
        dates, languages, today, region = self.dates, self.languages, self.today, self.region
        for at, (line, record) in enumerate(zip(batch.lines, records, strict=True)):
            mrn, first_name, birth_raw, phone_raw, last_name, sex_raw, language_raw, zone_raw, postal_code = (
                record
            )
            mrn = mrn.strip()
            # A name is text a patient will read: a line break or a run of spaces typed into a cell
            # must not reach a message.
            first_name, last_name = " ".join(first_name.split()), " ".join(last_name.split())
            bad: list[RowError] = []
            if not mrn:
                bad.append(RowError(line, "mrn", "", "missing mrn"))
            elif len(mrn) > 64:
                bad.append(RowError(line, "mrn", mrn, "too long (at most 64 characters)"))
            elif duplicates and at in duplicates:
                bad.append(RowError(line, "mrn", mrn, f"duplicate mrn (first on line {duplicates[at]})"))
            if not first_name:
                bad.append(RowError(line, "first_name", "", "missing first_name"))
            elif len(first_name) > 100:
                bad.append(RowError(line, "first_name", first_name, "too long (at most 100 characters)"))
            if len(last_name) > 100:
                bad.append(RowError(line, "last_name", last_name, "too long (at most 100 characters)"))
            birth_raw = birth_raw.strip()
            if birth_raw not in dates:
                if not birth_raw:
                    bad.append(RowError(line, "birth_date", "", "missing birth_date"))
                else:
                    try:
                        dates[birth_raw] = _date(birth_raw, today)
                    except ValueError as exc:
                        bad.append(RowError(line, "birth_date", birth_raw, str(exc)))
            sex_raw = sex_raw.strip()
            sex = _SEXES.get(sex_raw.lower())
            if sex is None:
                bad.append(RowError(line, "sex", sex_raw, "unknown sex; use female, male, other or unknown"))
            phone_raw = phone_raw.strip()
            try:
                phone: Phone | None = parse_phone(phone_raw, region)
            except PhoneError as exc:
                bad.append(RowError(line, "phone", phone_raw, str(exc)))
                phone = None
            language_raw = language_raw.strip()
            language = languages.get(language_raw)
            if language is None:
                try:
                    language = languages[language_raw] = _language(language_raw)
                except ValueError as exc:
                    bad.append(RowError(line, "language", language_raw, str(exc)))
            zone_raw = zone_raw.strip()
            timezone = ""
            if zone_raw:
                timezone = _zones().get(zone_raw.lower(), "")
                if not timezone:
                    bad.append(RowError(line, "timezone", zone_raw, _BAD_ZONE))
            postal_code = postal_code.strip()
            if len(postal_code) > 16:
                bad.append(RowError(line, "postal_code", postal_code, "too long (at most 16 characters)"))
            if bad or phone is None or sex is None or language is None:
                errors.extend(bad)
                continue
            # In _STAGE_COLUMNS order; "" is NULL (only optional values can be empty). The birth
            # date stays the text _date accepted: exactly YYYY-MM-DD, which PostgreSQL reads as is.
            good.append(
                (
                    mrn,
                    first_name,
                    last_name,
                    birth_raw,
                    sex,
                    phone.e164,
                    " ".join(phone.zones),
                    language,
                    timezone,
                    postal_code,
                )
            )
        checked = _Checked(accepted=len(good), rejected=len(batch.lines) - len(good), errors=errors)
        if self.copy:
            checked.copy_text = sql.copy_text(good)
        else:
            checked.rows = [self._params(values) for values in good]
        return checked

    def _params(self, values: tuple[str, ...]) -> dict[str, Any]:
        row: dict[str, Any] = {
            name: value or None for name, value in zip(_STAGE_COLUMNS, values, strict=True)
        }
        row["birth_date"] = self.dates[values[3]]
        row["active"] = True
        row["created_at"] = row["updated_at"] = self.now
        return row


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


# --- checking in helper processes ------------------------------------------------------------
# Checking rows (phone numbers above all) is most of an import's CPU; a large roster is checked in
# other processes while this one reads the file and, on PostgreSQL, a thread of it loads the
# checked batches, so reading, checking and loading overlap.

PARALLEL_FROM_BYTES = 4 * 1024 * 1024
_IN_FLIGHT = 4  # batches between reading and loading: enough to keep every helper busy, bounded memory

_HELPER_CHECK: _PatientCheck | None = None  # the checker of a helper process


def _start_helper(check: _PatientCheck) -> None:
    global _HELPER_CHECK
    _HELPER_CHECK = check


def _check_in_helper(batch: _Batch) -> _Checked:
    assert _HELPER_CHECK is not None
    return _HELPER_CHECK.check(batch)


def _helper_pool(path: Path, check: _PatientCheck) -> ProcessPoolExecutor | None:
    """Helper processes for a large file on a machine with cores to spare; None otherwise."""
    cores = os.cpu_count() or 1
    if cores < 2 or path.stat().st_size < PARALLEL_FROM_BYTES:
        return None
    # fork, not spawn: spawn would re-import the caller's __main__ (impossible for `python -`, slow
    # for the CLI). One core stays with this process (reading, loading) and the database; on 2
    # cores one helper beats two.
    return ProcessPoolExecutor(
        max_workers=min(cores - 1, 4),
        mp_context=multiprocessing.get_context("fork"),
        initializer=_start_helper,
        initargs=(check,),
    )


def _batches(csvfile: CsvFile, present: Sequence[str], size: int) -> Iterator[_Batch]:
    """The roster's records in batches, each repeated mrn marked with the line of its first
    occurrence (remembered for every well-formed mrn, whether its row is valid or not)."""
    pick = itemgetter(*(csvfile.index[name] for name in present))
    at_mrn = csvfile.index["mrn"]
    seen = _FirstLines()
    lines: list[int] = []
    values: list[str] = []
    duplicates: dict[int, int] = {}
    for line, fields in csvfile.records():
        mrn = fields[at_mrn].strip()
        if mrn and len(mrn) <= 64:
            first = seen.first(mrn, line)
            if first != line:
                duplicates[len(lines)] = first
        lines.append(line)
        values += pick(fields)
        if len(lines) >= size:
            yield _Batch(lines, values, len(present), duplicates)
            lines, values, duplicates = [], [], {}
    if lines:
        yield _Batch(lines, values, len(present), duplicates)


class _FirstLines:
    """The line each mrn of the file first appeared on: the one check that needs the whole file.

    A dict would cost ~120 bytes an mrn (the str, the int, the slot), 120 MB for a million-row
    roster. This is an open-addressing hash table over arrays instead: each mrn's UTF-8 bytes are
    appended to one bytearray, its hash, line and end offset to three arrays of machine integers,
    and the table's slots hold entry numbers; about 45 bytes an mrn. A lookup compares the hash,
    then the bytes, so mrns whose hashes collide are still told apart exactly.
    """

    def __init__(self, hasher: Callable[[str], int] = hash) -> None:
        self._hash = hasher
        self._slots = array("i", [0]) * 1024  # entry number + 1; 0 is a free slot
        self._mask = len(self._slots) - 1
        self._hashes = array("q")
        self._lines = array("q")
        self._ends = array("q")  # entry i's bytes are _data[_ends[i - 1]:_ends[i]]
        self._data = bytearray()

    def __len__(self) -> int:
        return len(self._lines)

    def first(self, mrn: str, line: int) -> int:
        """The line `mrn` first appeared on; `line` itself, now remembered, when it is new."""
        digest = self._hash(mrn)
        slots, hashes, mask = self._slots, self._hashes, self._mask
        at = digest & mask
        key = None
        while entry := slots[at]:
            entry -= 1
            if hashes[entry] == digest:
                if key is None:
                    key = mrn.encode("utf-8", "surrogatepass")
                ends = self._ends
                if self._data[ends[entry - 1] if entry else 0 : ends[entry]] == key:
                    return self._lines[entry]
            at = (at + 1) & mask
        self._data += mrn.encode("utf-8", "surrogatepass") if key is None else key
        self._ends.append(len(self._data))
        hashes.append(digest)
        self._lines.append(line)
        slots[at] = len(hashes)
        if 2 * len(hashes) > len(slots):  # at most half full, so probe runs stay short
            self._grow()
        return line

    def _grow(self) -> None:
        slots = array("i", [0]) * (2 * len(self._slots))
        mask = len(slots) - 1
        for entry, digest in enumerate(self._hashes, 1):
            at = digest & mask
            while slots[at]:
                at = (at + 1) & mask
            slots[at] = entry
        self._slots, self._mask = slots, mask


def _checked_in_order(batches: Iterator[_Batch], pool: ProcessPoolExecutor) -> Iterator[_Checked]:
    """Each batch checked by the pool, in file order, a few batches in flight."""
    in_flight: deque[Future[_Checked]] = deque()
    for batch in batches:
        in_flight.append(pool.submit(_check_in_helper, batch))
        if len(in_flight) > _IN_FLIGHT:
            yield in_flight.popleft().result()
    while in_flight:
        yield in_flight.popleft().result()


def _load_in_parallel(batches: Iterator[_Batch], pool: ProcessPoolExecutor, writer: _PatientWriter) -> None:
    """Read, check and load at once: the pool checks batches while one thread loads each checked
    batch in file order (the database works in its own process, so the thread mostly waits and
    leaves this one free to read). At most _IN_FLIGHT batches are past reading and not loaded."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="roster-load") as loader:
        pending: deque[Future[None]] = deque()
        try:
            for batch in batches:
                checked = pool.submit(_check_in_helper, batch)
                pending.append(loader.submit(_load_when_checked, writer, checked))
                if len(pending) > _IN_FLIGHT:
                    pending.popleft().result()
            while pending:
                pending.popleft().result()
        except BaseException:
            for future in pending:
                future.cancel()
            raise


def _load_when_checked(writer: _PatientWriter, checked: Future[_Checked]) -> None:
    # Once a batch fails nothing after it loads, as when batches load one after the other; the
    # import then raises the first failure.
    if writer.failed:
        raise RuntimeError("not loaded: an earlier batch failed")
    try:
        writer.write(checked.result())
    except BaseException:
        writer.failed = True
        raise


# --- writing -----------------------------------------------------------------------------------


def _require_tables(engine: Engine, *names: str) -> None:
    found = inspect(engine)
    if not all(found.has_table(name) for name in names):
        raise UserError("the database has no outreach tables yet; run `outreach db upgrade` first")


class _PatientWriter:
    """One upsert per batch on one connection. The UPDATE has a WHERE so identical rows are left
    alone (updated_at does not move); inserted vs updated comes from `xmax = 0` on PostgreSQL, and
    on SQLite from a pre-select made while holding the write lock (SQLite writers are serialized,
    so it is exact). Also adds up what the checked batches report.

    PostgreSQL: each batch arrives as COPY text (built in the helper process, so it costs this one
    almost nothing) and goes through a staging table (`sql.Staging`) that holds only what the file
    gives; the upsert adds active and the timestamps and returns only the two counts.
    """

    def __init__(self, engine: Engine, now: dt.datetime) -> None:
        self.engine = engine
        self.now = now
        self.table: Table = Patient.__table__  # type: ignore[assignment]
        self.stage = sql.Staging(self.table, _STAGE_COLUMNS) if engine.dialect.name == "postgresql" else None
        self.copy = self.stage is not None
        self.stmt = _patient_upsert(engine, self.table, self.stage)
        self.conn: Connection | None = None
        self.failed = False
        self.accepted = self.rejected = self.inserted = self.updated = 0
        self.errors: list[RowError] = []

    def write(self, checked: _Checked) -> None:
        self.accepted += checked.accepted
        self.rejected += checked.rejected
        self.errors.extend(checked.errors)
        if not checked.accepted:
            return
        if self.conn is None:
            self.conn = self.engine.connect()
            if self.stage is not None:
                self.stage.create(self.conn)
        conn = self.conn
        if self.stage is not None:
            self.stage.copy_text(conn, checked.copy_text)
            inserted, touched = conn.execute(self.stmt, {"now": self.now}).one()
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            existing = self._existing(conn, [row["mrn"] for row in checked.rows])
            touched = len(conn.execute(self.stmt, checked.rows).all())
            inserted = len(checked.rows) - existing
        conn.commit()
        self.inserted += inserted
        self.updated += touched - inserted

    def _existing(self, conn: Connection, mrns: list[str]) -> int:
        count = 0
        for start in range(0, len(mrns), _SELECT_CHUNK):
            chunk = mrns[start : start + _SELECT_CHUNK]
            count += len(conn.execute(select(self.table.c.mrn).where(self.table.c.mrn.in_(chunk))).all())
        return count

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


_STAGE_COLUMNS = ("mrn", *_DATA_COLUMNS)


def _patient_upsert(engine: Engine, table: Table, stage: sql.Staging | None) -> Any:
    """The upsert by mrn whose UPDATE fires only for rows that differ, built once per import.

    SQLite: an executemany of the checked rows, returning a row per insert or update. PostgreSQL:
    from the staging table, returning only (inserted, inserted or updated); a row this statement
    inserted has `xmax = 0`."""
    stmt = sql.upsert(table, engine)
    if stage is not None:
        now = bindparam("now", type_=DateTime())
        stmt = stmt.from_select(list(_INSERT_COLUMNS), stage.select(true(), now, now))
    excluded = stmt.excluded
    changed = or_(*(table.c[name].is_distinct_from(excluded[name]) for name in _DATA_COLUMNS))
    values = {name: excluded[name] for name in (*_DATA_COLUMNS, "updated_at")}
    stmt = stmt.on_conflict_do_update(index_elements=[table.c.mrn], set_=values, where=changed)
    if stage is None:
        return stmt.returning(table.c.mrn)
    upserted = stmt.returning(literal_column("xmax = 0", Boolean).label("fresh")).cte("upserted")
    return select(func.count().filter(upserted.c.fresh), func.count()).select_from(upserted)


class _EventWriter:
    """Events are facts: an identical (mrn, kind, date, code) is already known, so do nothing.

    PostgreSQL: each batch is COPYed into a staging table and inserted from there; SQLite: an
    executemany, which SQLAlchemy batches into VALUES pages."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        table: Table = PatientEvent.__table__  # type: ignore[assignment]
        self.stage = sql.Staging(table, EVENT_COLUMNS_DB) if engine.dialect.name == "postgresql" else None
        stmt = sql.upsert(table, engine)
        if self.stage is not None:
            stmt = stmt.from_select(list(EVENT_COLUMNS_DB), self.stage.select())
        self.stmt = stmt.on_conflict_do_nothing(
            index_elements=[table.c.mrn, table.c.kind, table.c.date, table.c.code]
        ).returning(table.c.id)
        self.inserted = 0

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        with self.engine.connect() as conn:
            if self.stage is None:
                found = conn.execute(self.stmt, rows)
            else:
                self.stage.create(conn)
                self.stage.copy_rows(conn, ([row[c] for c in EVENT_COLUMNS_DB] for row in rows))
                found = conn.execute(self.stmt)
            self.inserted += len(found.all())
            conn.commit()


# --- public API --------------------------------------------------------------------------------


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
) -> ImportResult:
    """Upsert the roster at `path` by mrn; bad rows are reported, every good row loads."""
    today = today or _local_today(settings)
    errors: list[RowError] = []
    with CsvFile(
        path, PATIENT_REQUIRED, PATIENT_OPTIONAL, label="roster", progress=progress, errors=errors
    ) as csvfile:
        _require_tables(engine, "patients")
        present = [name for name in PATIENT_COLUMNS if name in csvfile.index]
        now = utcnow()
        writer = _PatientWriter(engine, now)
        check = _PatientCheck(present, settings.default_region, today, now, copy=writer.copy)
        batches = _batches(csvfile, present, batch_size)
        pool = _helper_pool(path, check)
        try:
            if pool is None:
                for batch in batches:
                    writer.write(check.check(batch))
            elif writer.copy:
                _load_in_parallel(batches, pool, writer)
            else:
                # SQLite works in this process anyway, and a connection made in another thread
                # would not even see an in-memory database.
                for checked in _checked_in_order(batches, pool):
                    writer.write(checked)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
            writer.close()
        errors.extend(writer.errors)
        return ImportResult(
            accepted=writer.accepted,
            rejected=writer.rejected + csvfile.rejected,
            inserted=writer.inserted,
            updated=writer.updated,
            errors=sorted(errors, key=lambda e: e.line),
            notes=_notes(csvfile),
        )


def import_events(
    engine: Engine,
    path: Path,
    *,
    settings: Settings,
    progress: Progress | None = None,
    today: dt.date | None = None,
    batch_size: int = 5000,
) -> ImportResult:
    """Add the clinical events at `path`; events already known are left as they are."""
    today = today or _local_today(settings)
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
