"""The SQL idioms the engine shares, written once: INSERT … ON CONFLICT in the session's dialect,
statements prebuilt per dialect, the session's connection for Core statements, constant IN lists,
and row counts.

Each of these was built in the module that first needed it, and copies followed (the upsert five
ways); one home keeps the dialect switch, and its fallbacks, in a single place.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, TypeAlias, TypeVar, cast

from sqlalchemy import ColumnElement, Connection, CursorResult, Engine, Result, literal_column
from sqlalchemy.dialects import postgresql, sqlite
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


def rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE or DELETE touched (typed: `Session.execute` promises only a Result)."""
    return int(cast(CursorResult[Any], result).rowcount)
