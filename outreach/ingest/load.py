"""Loading checked rows: one upsert per batch of patients, one insert-if-new per batch of events.

A roster is re-exported and re-imported every day, so loading must be idempotent and say exactly
what it changed: the patients' UPDATE only fires for rows that differ, and the counts tell new,
changed and untouched patients apart. On PostgreSQL every batch goes in through COPY and a
staging table (`sql.Staging`), several times faster than a VALUES list.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    Boolean,
    Connection,
    DateTime,
    Engine,
    Table,
    bindparam,
    exists,
    func,
    literal_column,
    or_,
    select,
    true,
)

from outreach.ingest.csvfile import Problems
from outreach.ingest.events import EVENT_COLUMNS_DB
from outreach.ingest.patients import DATA_COLUMNS, STAGE_COLUMNS, Checked
from outreach.store import sql
from outreach.store.models import Patient, PatientEvent

_INSERT_COLUMNS = ("mrn", *DATA_COLUMNS, "active", "created_at", "updated_at")
# SQLite allows 32,766 bound parameters per statement; stay well below for the mrn pre-select.
_SELECT_CHUNK = 10_000


class PatientWriter:
    """One upsert per batch on one connection. The UPDATE has a WHERE so identical rows are left
    alone (updated_at does not move); inserted vs updated comes from `xmax = 0` on PostgreSQL, and
    on SQLite from a pre-select made while holding the write lock (SQLite writers are serialized,
    so it is exact). Also adds up what the checked batches report.

    PostgreSQL: each batch arrives as COPY text (built in the helper process, so it costs this one
    almost nothing) and goes through a staging table that holds only what the file gives; the
    upsert adds active and the timestamps and returns only the two counts.
    """

    def __init__(self, engine: Engine, now: dt.datetime, errors: Problems | None = None) -> None:
        self.engine = engine
        self.now = now
        self.table: Table = Patient.__table__  # type: ignore[assignment]
        self.stage = sql.Staging(self.table, STAGE_COLUMNS) if engine.dialect.name == "postgresql" else None
        self.copy = self.stage is not None
        self.stmt = _patient_upsert(engine, self.table, self.stage)
        self.conn: Connection | None = None
        self.failed = False
        self.accepted = self.rejected = self.inserted = self.updated = 0
        self.errors: Problems = [] if errors is None else errors

    def write(self, checked: Checked) -> None:
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
    changed = or_(*(table.c[name].is_distinct_from(excluded[name]) for name in DATA_COLUMNS))
    values = {name: excluded[name] for name in (*DATA_COLUMNS, "updated_at")}
    stmt = stmt.on_conflict_do_update(index_elements=[table.c.mrn], set_=values, where=changed)
    if stage is None:
        return stmt.returning(table.c.mrn)
    upserted = stmt.returning(literal_column("xmax = 0", Boolean).label("fresh")).cte("upserted")
    return select(func.count().filter(upserted.c.fresh), func.count()).select_from(upserted)


class EventWriter:
    """Events are facts: an identical (mrn, kind, date, code) is already known, so do nothing.

    PostgreSQL: each batch is COPYed into a staging table and inserted from there; SQLite: an
    executemany, which SQLAlchemy batches into VALUES pages.

    An event whose mrn is not on the roster is kept (the roster may come later, DESIGN.md §5) but
    counted, with the first few lines, because a mistyped mrn otherwise leaves the care gap open
    and the patient texted about a screening they had.
    """

    EXAMPLES = 5  # lines of unknown mrns kept to show

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.table: Table = PatientEvent.__table__  # type: ignore[assignment]
        table = self.table
        self.stage = sql.Staging(table, EVENT_COLUMNS_DB) if engine.dialect.name == "postgresql" else None
        stmt = sql.upsert(table, engine)
        if self.stage is not None:
            stmt = stmt.from_select(list(EVENT_COLUMNS_DB), self.stage.select())
            # The staged batch's mrns that no patient has, each distinct mrn looked up once.
            staged = select(self.stage.select().subquery().c.mrn).distinct().subquery()
            self.unknown_staged = select(staged.c.mrn).where(~exists().where(Patient.mrn == staged.c.mrn))
        self.stmt = stmt.on_conflict_do_nothing(
            index_elements=[table.c.mrn, table.c.kind, table.c.date, table.c.code]
        ).returning(table.c.id)
        self.inserted = 0
        self.unknown_mrns = 0  # events (rows of the file) whose mrn is no patient's
        self.unknown_lines: list[int] = []  # the first EXAMPLES of their lines

    def write(self, rows: Sequence[dict[str, Any]], lines: Sequence[int]) -> None:
        """Store `rows` (read from `lines`), in one transaction."""
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
            unknown = self._unknown(conn, rows)
            conn.commit()
        if unknown:
            at = [line for row, line in zip(rows, lines, strict=True) if row["mrn"] in unknown]
            self.unknown_mrns += len(at)
            self.unknown_lines += at[: self.EXAMPLES - len(self.unknown_lines)]

    def _unknown(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> set[str]:
        """The mrns of `rows` that no patient has: PostgreSQL answers from the staged batch."""
        if self.stage is not None:
            return set(conn.scalars(self.unknown_staged))
        mrns = list({row["mrn"] for row in rows})
        known: set[str] = set()
        for start in range(0, len(mrns), _SELECT_CHUNK):
            chunk = mrns[start : start + _SELECT_CHUNK]
            known.update(conn.scalars(select(Patient.mrn).where(Patient.mrn.in_(chunk))))
        return set(mrns) - known
