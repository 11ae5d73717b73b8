"""The SQL idioms the engine shares, written once: INSERT … ON CONFLICT in the session's dialect,
statements prebuilt per dialect, the session's connection for Core statements, constant IN lists,
row counts, and the PostgreSQL COPY path through a staging table.

Each of these was built in the module that first needed it, and copies followed (the upsert five
ways); one home keeps the dialect switch, and its fallbacks, in a single place.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeAlias, TypeVar, cast

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    CursorResult,
    Date,
    Engine,
    Integer,
    Result,
    Select,
    String,
    Table,
    TextClause,
    func,
    literal,
    literal_column,
    select,
    text,
)
from sqlalchemy import cast as sa_cast
from sqlalchemy import column as sa_column
from sqlalchemy import table as sa_table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import BIT
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import ReturningInsert

from outreach.errors import UserError

T = TypeVar("T")
Upsert: TypeAlias = postgresql.Insert | sqlite.Insert

DIALECTS = ("postgresql", "sqlite")


def dialect_name(bind: Session | Connection | Engine) -> str:
    """The dialect a session, connection or engine talks to ("postgresql" or "sqlite")."""
    if isinstance(bind, Session):
        return bind.get_bind().dialect.name
    return bind.dialect.name


def upsert(target: Any, on: str | Session | Connection | Engine) -> Upsert:
    """INSERT into `target` (a model or table) that can take ON CONFLICT … DO NOTHING / DO UPDATE,
    in dialect `on` (a name, or what a session, connection or engine talks to), so "first one
    wins" and "once per key" are one atomic statement instead of a read-then-write race."""
    name = on if isinstance(on, str) else dialect_name(on)
    if name == "postgresql":
        return postgresql.insert(target)
    if name == "sqlite":
        return sqlite.insert(target)
    raise UserError(f"{name} is not supported; use PostgreSQL or SQLite")


def per_dialect(build: Callable[[str], T]) -> dict[str, T]:
    """`build(name)` for every supported dialect: hot statements are built once at import and
    picked by `conn.dialect.name` when they run, since building one per call costs more CPU than
    its round trip."""
    return {name: build(name) for name in DIALECTS}


def insert_or_skip(model: Any, **target: Any) -> dict[str, ReturningInsert[Any]]:
    """`INSERT … ON CONFLICT DO NOTHING RETURNING id` for `model`, per dialect: the new id when
    this statement stored the row, nothing when the key was already there (replays, races)."""
    return per_dialect(lambda name: upsert(model, name).on_conflict_do_nothing(**target).returning(model.id))


def connection(session: Session) -> Connection:
    """The session's connection for prebuilt Core statements, after flushing pending ORM changes
    (as `Session.execute` would autoflush) so the statements see them and do not race them."""
    session.flush()
    return session.connection()


def in_constants(column: Any, values: Iterable[str]) -> ColumnElement[bool]:
    """`column IN ('a', 'b')` with the values written into the SQL, for fixed sets of our own
    status names: a list of bound values is expanded into parameters on every execution, which
    costs a prebuilt hot-path statement more than its round trip."""
    names = [str(value) for value in values]
    assert all(_SQL_NAME.fullmatch(name) for name in names), names
    return column.in_([literal_column(f"'{name}'") for name in names])  # type: ignore[no-any-return]


_SQL_NAME = re.compile(r"[a-z_]+")


def jit_off(bind: Session | Connection) -> None:
    """Turn PostgreSQL's JIT off for the current transaction (a no-op elsewhere): statements over
    large tables are estimated costly enough to be compiled to machine code, which takes longer
    (~100 ms and more a statement) than running them; the planner's chunks and the report pay it."""
    if dialect_name(bind) == "postgresql":
        bind.execute(text("SET LOCAL jit = off"))


@contextmanager
def no_bitmap_scans(bind: Session | Connection) -> Iterator[None]:
    """PostgreSQL's bitmap scans off for the statements inside (a no-op elsewhere). A planning
    chunk's enrollment reads its patients by id range, and the planner, misjudging how many the
    audience keeps, ANDs that range with a bitmap of a whole-table index (every birth date in the
    age band, half a million entries) that costs more than the chunk's own rows (EXPLAIN ANALYZE of
    one campaign's enrollment in one chunk at 1,000,000 patients: 19 ms building that bitmap; the
    statement ~110 ms with it, ~90 ms without)."""
    if dialect_name(bind) != "postgresql":
        yield
        return
    bind.execute(text("SET LOCAL enable_bitmapscan = off"))
    yield
    bind.execute(text("SET LOCAL enable_bitmapscan TO DEFAULT"))


class Lock(enum.IntEnum):
    """PostgreSQL advisory lock classes (the lock's first key), one per kind of work, so no two
    kinds ever wait on each other. The second key is the schema's hash (`advisory`), so tenants
    sharing a server do not either."""

    PREPARE = 4242001  # plan/scheduler.py: the short part of a pass that runs before the shards
    BUCKET = 4242002  # plan/shards.py: a phone-number bucket being planned (+ the bucket number)
    REPORT = 4242003  # outcomes/snapshots.py: one refresh of the saved report


def advisory(function: str, lock: Lock, *, plus: str = "") -> TextClause:
    """`SELECT <function>(<lock>, <schema's hash><plus>)`: e.g. `pg_try_advisory_lock` for
    `lock`, keyed by schema; `plus` adds to the second key (a bind parameter such as ` # :bucket`)."""
    return text(f"SELECT {function}({int(lock)}, hashtext(current_schema()){plus})")


def rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE or DELETE touched (typed: `Session.execute` promises only a Result)."""
    return int(cast(CursorResult[Any], result).rowcount)


def analyze(engine: Engine, *tables: Table) -> None:
    """Refresh PostgreSQL's planner statistics of `tables` after a bulk load (DESIGN.md §10).

    Until autovacuum gets to a table (a minute or more, never when it is off) the planner
    guesses its size and spread, and the next plan over a million fresh rows can run minutes
    instead of seconds. ANALYZE samples a fixed number of rows, so it costs well under a second
    at any size. SQLite plans well enough without statistics, so nothing is done there."""
    if engine.dialect.name != "postgresql":
        return
    with engine.begin() as conn:
        for table in tables:
            conn.exec_driver_sql(f"ANALYZE {table.name}")


# --- PostgreSQL COPY ---------------------------------------------------------------------------


class Staging:
    """A temporary table holding `columns` of `table`, loaded with PostgreSQL's COPY and moved
    into the table by one INSERT … SELECT (`select()`, with ON CONFLICT as the caller needs).

    COPY is the fastest way in, several times a multi-row VALUES list or array parameters. The
    table lives as long as the connection and empties at each commit, so `create` is cheap to
    repeat and a failed batch leaves nothing behind.
    """

    def __init__(self, table: Table, columns: Sequence[str]) -> None:
        self.name = f"{table.name}_stage"
        self.columns = tuple(columns)
        names = ", ".join(self.columns)
        self._create = (
            f"CREATE TEMP TABLE IF NOT EXISTS {self.name} ON COMMIT DELETE ROWS "
            f"AS SELECT {names} FROM {table.name} WITH NO DATA"
        )
        self._copy = f"COPY {self.name} ({names}) FROM STDIN"
        self._copy_table = f"COPY {table.name} ({names}) FROM STDIN (NULL '')"
        self._table = sa_table(self.name, *(sa_column(name) for name in self.columns))

    def create(self, conn: Connection) -> None:
        conn.exec_driver_sql(self._create)

    def select(self, *extra: Any) -> Select[Any]:
        """The staged rows, column by column, then `extra` values (for columns the file lacks)."""
        return select(*(self._table.c[name] for name in self.columns), *extra)

    def copy_text(self, conn: Connection, text: str) -> None:
        """Load rows already in COPY's text format with NULL as the empty string (`copy_text()`):
        text built in a helper process costs the loading process almost nothing."""
        with _cursor(conn).copy(f"{self._copy} (NULL '')") as copy:
            copy.write(text)

    def copy_text_into_table(self, conn: Connection, text: str) -> bool:
        """COPY rows (as `copy_text`) straight into the table, without the staging table's
        write and read, inside a savepoint: True when every row went in; False when one broke a
        unique key, in which case nothing of the batch was kept and the caller goes through the
        staging table with the ON CONFLICT it needs. For writers that expect no conflict (a
        planner under its bucket locks) but must stay idempotent if one comes."""
        from psycopg.errors import UniqueViolation

        try:
            with conn.begin_nested(), _cursor(conn).copy(self._copy_table) as copy:
                copy.write(text)
        except UniqueViolation:
            return False
        return True

    def copy_rows(self, conn: Connection, rows: Iterable[Sequence[Any]]) -> None:
        """Load rows of Python values (in `columns` order); psycopg formats each value."""
        with _cursor(conn).copy(self._copy) as copy:
            for row in rows:
                copy.write_row(row)


def _cursor(conn: Connection) -> Any:
    """psycopg's own cursor under the connection: SQLAlchemy has no COPY."""
    return conn.connection.driver_connection.cursor()  # type: ignore[union-attr]


def copy_text(rows: list[tuple[str, ...]]) -> str:
    """Rows in COPY's text format (tab between values, a line per row, NULL as the empty string).

    Checked once for the whole batch rather than per value: only free text can hold a backslash,
    tab, CR or newline, and then the counts give it away and the batch is written again with
    those characters escaped."""
    if not rows:
        return ""
    body = "\n".join(map("\t".join, rows)) + "\n"
    tabs = (len(rows[0]) - 1) * len(rows)
    if "\\" in body or "\r" in body or body.count("\t") != tabs or body.count("\n") != len(rows):
        body = "\n".join("\t".join(value.translate(_COPY_ESCAPES) for value in row) for row in rows) + "\n"
    return body


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


# --- Reproducible random assignment (holdout arms, text variants) ---------------------------------

BUCKETS = 10_000  # assignments are made in hundredths of a percent


def bucket_of(key: str) -> int:
    """A key's bucket in [0, BUCKETS): the first 32 bits of its MD5, modulo BUCKETS.

    MD5 is here a well-mixed, portable hash, not a secret: PostgreSQL computes it natively and
    SQLite through `sqlite_bucket` (registered on every connection by store/db.py), so the SQL and
    Python answers are the same number and an assignment can be made in an INSERT … SELECT (no
    row goes through Python) and re-checked in a test. Keys name what is being assigned (campaign,
    cycle, patient; or enrollment and step), so assignments are reproducible and independent of
    each other and of anything about the patient.
    """
    return int.from_bytes(hashlib.md5(key.encode(), usedforsecurity=False).digest()[:4], "big") % BUCKETS


def sqlite_bucket(key: str | None) -> int | None:
    """`bucket_of` as the SQLite function `outreach_bucket` (None in, None out, as SQL does)."""
    return None if key is None else bucket_of(key)


def bucket(key: ColumnElement[Any], dialect: str) -> ColumnElement[int]:
    """`bucket_of(key)` as an SQL expression of the text expression `key`."""
    if dialect == "postgresql":
        hexed = literal("x", String).concat(func.substr(func.md5(key), 1, 8))
        number: ColumnElement[int] = sa_cast(sa_cast(hexed, BIT(32)), BigInteger)
        return number % BUCKETS
    return func.outreach_bucket(key, type_=Integer)


def add_days(day: Any, days: int, dialect: str) -> ColumnElement[Any]:
    """A DATE column plus `days`, in the dialect's own date arithmetic (SQLite stores ISO text)."""
    if dialect == "postgresql":
        later: ColumnElement[Any] = day + days
        return later
    return func.date(day, f"{days:+d} days")


def day_of(moment: Any) -> ColumnElement[Any]:
    """The calendar day (UTC) of a DATETIME column, comparable with a DATE column in both dialects."""
    return func.date(moment, type_=Date)
