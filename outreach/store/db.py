"""Engines, sessions, schema migration, and the database faults a person can fix.

One engine per URL per process; SQLite gets WAL and a busy timeout so the embedded default
tolerates a web process and a worker writing at once. `database_problem` is the one place that
turns what a driver says about an operator's setup (no server on that port, no such database or
folder, a read-only file, a schema never created) into one line naming OUTREACH_DATABASE_URL and
the fix; the CLI's group applies it to every command.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from outreach.errors import UserError
from outreach.store import sql

MIGRATIONS = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
    # Reproducible assignment (holdout arms, text variants) in SQL: PostgreSQL hashes natively.
    dbapi_conn.create_function("outreach_bucket", 1, sql.sqlite_bucket, deterministic=True)


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    """Build (once) the engine for a database URL; a malformed URL, or one whose driver is not
    installed, is a UserError naming OUTREACH_DATABASE_URL (without the password)."""
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"timeout": 30})
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            # As many pooled connections as a worker has threads (workers/app.py: 32): with fewer,
            # every checkout beyond the pool opens and closes a connection of its own.
            engine = create_engine(
                url, pool_pre_ping=True, pool_size=32, max_overflow=8, connect_args=_connect_args(url)
            )
    except (ArgumentError, NoSuchModuleError) as exc:
        raise UserError(f"OUTREACH_DATABASE_URL: not a usable database URL ({exc})") from None
    except ImportError as exc:
        raise UserError(
            f"OUTREACH_DATABASE_URL: {safe_url(url)} needs the Python package {exc.name or exc}, which is "
            "not installed; use postgresql+psycopg://USER:PASSWORD@HOST/DB or sqlite:///FILE"
        ) from None
    return engine


CONNECT_TIMEOUT_S = 10


def _connect_args(url: str) -> dict[str, Any]:
    """PostgreSQL gives up on a host that does not answer after CONNECT_TIMEOUT_S (libpq waits
    for ever by default); a connect_timeout in the URL wins."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        return {"connect_timeout": CONNECT_TIMEOUT_S}
    return {}


def safe_url(url: str) -> str:
    """The URL as it may be printed: the password masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(not a URL)"


@lru_cache(maxsize=8)
def _factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A unit of work: commit on success, roll back on error."""
    session = _factory(engine)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(engine: Engine | None = None) -> Config:
    """Alembic's configuration for our migrations; `engine` is the database they run on."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Create or migrate the schema to `revision`."""
    command.upgrade(alembic_config(engine), revision)


@lru_cache(maxsize=1)
def head_revision() -> str:
    """The Alembic revision this code's schema is at (read from the migration scripts once)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    return str(head)


def schema_revision(engine: Engine) -> str | None:
    """The revision the database's schema is at; None when it has none (no tables: never upgraded).
    Raises the driver's error when the database cannot be reached."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def require_tables(bind: Engine | Connection, *names: str) -> None:
    """Refuse, before any work, a database that lacks the tables a command needs (never migrated):
    a roster is not read in vain, and the one line says the fix (the same words `database_problem`
    uses when a query meets the missing table instead)."""
    found = inspect(bind)
    if not all(found.has_table(name) for name in names):
        raise UserError(f"the database has no outreach tables; {_UPGRADE}")


# --- faults a person can fix ----------------------------------------------------------------------

_UPGRADE = "run `outreach db upgrade` first (it creates or migrates the schema)"


def database_problem(exc: BaseException, url: str) -> str | None:
    """One line naming OUTREACH_DATABASE_URL and the fix when `exc` comes from the operator's
    setup; None for anything else (a bug keeps its traceback). The password is never shown."""
    if not isinstance(exc, DBAPIError):
        return None
    said = str(exc.orig).strip()
    password = make_url(url).password if url else None
    if password:
        said = said.replace(str(password), "***")
    where = f"{safe_url(url)} (OUTREACH_DATABASE_URL)"
    lowered = said.lower()
    state = getattr(exc.orig, "sqlstate", None)
    if "no such table" in lowered or state == "42P01":
        return f"the database at {where} has no outreach tables; {_UPGRADE}"
    if "no such column" in lowered or state == "42703":
        return f"the database at {where} has an older schema than this version; {_UPGRADE}"
    if not isinstance(exc, OperationalError):
        return None
    if url.startswith("sqlite"):
        return _sqlite_problem(lowered, url, where, said)
    return _server_problem(lowered, where, said)


def _sqlite_problem(lowered: str, url: str, where: str, said: str) -> str:
    path = Path(make_url(url).database or "")
    if "unable to open database file" in lowered:
        if not path.parent.is_dir():
            return (
                f"cannot open the SQLite database {where}: the folder {path.parent} does not exist; "
                "create it or point OUTREACH_DATABASE_URL elsewhere"
            )
        return (
            f"cannot open the SQLite database {where}: no permission to create or open {path}; "
            "give this user write access to it and its folder, or point OUTREACH_DATABASE_URL elsewhere"
        )
    if "readonly" in lowered or "read-only" in lowered:
        return (
            f"the SQLite database {where} is read-only for this user; give it write access to {path} and "
            "its folder (SQLite writes -wal and -shm files beside it), or point OUTREACH_DATABASE_URL "
            "elsewhere"
        )
    if "not a database" in lowered:
        return f"{path} is not a SQLite database ({where}); point OUTREACH_DATABASE_URL at the right file"
    return f"the SQLite database {where} failed: {said.splitlines()[0]}; check the file and its folder"


def _server_problem(lowered: str, where: str, said: str) -> str:
    if "does not exist" in lowered and "database" in lowered:
        return (
            f"the database named in {where} does not exist on that server; create it "
            "(createdb NAME) or fix the name at the end of the URL"
        )
    if "password authentication failed" in lowered or "authentication failed" in lowered:
        return f"the database server refused the user name or password of {where}; fix them in the URL"
    unreachable = ("connection refused", "could not connect", "timeout expired", "translate host name")
    if any(phrase in lowered for phrase in (*unreachable, "resolve host", "no route to host")):
        return f"cannot reach the database server of {where}; start it, or fix the host and port in the URL"
    first = said.splitlines()[0] if said else "no detail"
    return f"the database at {where} failed: {first}; check that the server runs and the URL is right"
