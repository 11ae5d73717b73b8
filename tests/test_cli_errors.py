"""User errors end as one line, exit 2, never a traceback (DESIGN.md §3), for every command that
opens the database, a broker that refuses, a malformed setting under Celery, ports out of range,
and click's own usage errors (one `error:` prefix everywhere).

The faults are real: a closed port on 127.0.0.1, a folder that does not exist, a database file
opened read-only, a driver that is not installed, a database never migrated, and (when the
suite runs on PostgreSQL) a database name the server does not have.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, func, select, text
from sqlalchemy.engine import make_url

from outreach.apps.cli import main
from outreach.config import get_settings
from outreach.store import db as dbmod
from outreach.store.models import Message, MessageStatus

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SECRET = "s3cret-pw"
ROSTER = str(ROOT / "samples" / "roster.csv")

# Every command that opens the database, with arguments that get it that far.
COMMANDS = {
    "report": ["report"],
    "db upgrade": ["db", "upgrade"],
    "patients import": ["patients", "import", ROSTER],
    "optouts list": ["optouts", "list"],
    "handoffs list": ["handoffs", "list"],
    "tick": ["tick", "--no-dispatch", "--now", "2026-11-23T15:00:00Z"],
    "campaigns preview": ["campaigns", "preview", "flu-season", "--on", "2026-11-23"],
}
WRITERS = ("db upgrade", "patients import", "tick")  # the commands a read-only database stops


def one_error_line(result: Result) -> str:
    """The command failed as a user error: exit 2 and exactly one `error:` line on stderr."""
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def run(url: str, command: str) -> str:
    os.environ["OUTREACH_DATABASE_URL"] = url
    get_settings.cache_clear()
    return one_error_line(CliRunner().invoke(main, COMMANDS[command]))


@pytest.fixture(autouse=True)
def _restore_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTREACH_DATABASE_URL", "sqlite:///unused.db")  # restored after each test


@pytest.mark.parametrize("command", COMMANDS)
def test_no_server_on_the_port(command: str) -> None:
    line = run(f"postgresql+psycopg://outreach:{SECRET}@127.0.0.1:1/outreach", command)
    assert "OUTREACH_DATABASE_URL" in line and "cannot reach the database server" in line
    assert "start it, or fix the host and port" in line
    assert SECRET not in line and "***" in line


@pytest.mark.parametrize("command", COMMANDS)
def test_sqlite_folder_missing(command: str, tmp_path: Path) -> None:
    line = run(f"sqlite:///{tmp_path / 'no' / 'such' / 'outreach.db'}", command)
    assert f"the folder {tmp_path / 'no' / 'such'} does not exist" in line
    assert "OUTREACH_DATABASE_URL" in line


@pytest.mark.parametrize("command", COMMANDS)
def test_driver_not_installed(command: str) -> None:
    line = run(f"mysql://outreach:{SECRET}@127.0.0.1/outreach", command)
    assert line.startswith("error: OUTREACH_DATABASE_URL: mysql://outreach:***@127.0.0.1/outreach needs")
    assert "MySQLdb" in line and "postgresql+psycopg://" in line and SECRET not in line


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "db upgrade"])
def test_database_never_migrated_says_run_db_upgrade(command: str, tmp_path: Path) -> None:
    line = run(f"sqlite:///{tmp_path / 'empty.db'}", command)
    assert "has no outreach tables" in line and "run `outreach db upgrade`" in line


@pytest.mark.parametrize("command", WRITERS)
def test_read_only_database(command: str, tmp_path: Path) -> None:
    """Opened read-only (the tests run as root, for whom file modes do not count); migrated, so
    that the commands get as far as writing, but for `db upgrade`, which has a schema to write."""
    path = tmp_path / "outreach.db"
    if command == "db upgrade":
        path.write_bytes(b"")
    else:
        dbmod.upgrade(dbmod.engine_for(f"sqlite:///{path}"))
        dbmod.engine_for(f"sqlite:///{path}").dispose()
    line = run(f"sqlite:///file:{path}?mode=ro&uri=true", command)
    assert "is read-only for this user; give it write access" in line


@pytest.fixture
def postgres_base() -> str:
    base = os.environ.get("OUTREACH_TEST_DATABASE_URL")
    if not base:
        pytest.skip("needs PostgreSQL (OUTREACH_TEST_DATABASE_URL)")
    return base


@pytest.mark.postgres
@pytest.mark.parametrize("command", COMMANDS)
def test_postgres_database_missing(command: str, postgres_base: str) -> None:
    missing = make_url(postgres_base).set(database=f"missing_{uuid.uuid4().hex[:8]}")
    line = run(missing.render_as_string(hide_password=False), command)
    assert "does not exist on that server; create it (createdb NAME)" in line


@pytest.fixture
def empty_schema(postgres_base: str) -> Iterator[str]:
    schema = f"empty_{uuid.uuid4().hex[:10]}"
    admin = dbmod.engine_for(postgres_base)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    yield f"{postgres_base}{'&' if '?' in postgres_base else '?'}options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))


@pytest.mark.postgres
def test_postgres_database_never_migrated(empty_schema: str) -> None:
    for command in ("report", "handoffs list", "campaigns preview"):
        line = run(empty_schema, command)
        assert "has no outreach tables" in line and "run `outreach db upgrade`" in line


# --- the broker ---------------------------------------------------------------------------------


def test_tick_with_the_broker_refusing_keeps_the_rows_queued(engine: Engine, database_url: str) -> None:
    imported = CliRunner().invoke(main, ["patients", "import", ROSTER])
    assert imported.exit_code == 0, imported.output
    env = {
        **os.environ,
        "OUTREACH_DATABASE_URL": database_url,
        "OUTREACH_BROKER_URL": "redis://127.0.0.1:1/0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "outreach.apps.cli", "tick", "--now", "2026-11-23T15:00:00Z"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    with dbmod.session_scope(engine) as session:
        queued = session.scalar(
            select(func.count()).select_from(Message).where(Message.status == MessageStatus.queued)
        )
    assert queued and queued > 0
    assert line.startswith("error: OUTREACH_BROKER_URL: cannot reach the broker at redis://127.0.0.1:1/0")
    assert f"queued {queued}: {queued} rows wait as queued" in line
    assert "the sweeper hands them to the workers once the broker is back" in line


@pytest.mark.parametrize("program", ["worker", "beat"])
def test_celery_with_a_malformed_setting_is_one_line(program: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OUTREACH_", "TWILIO_"))}
    done = subprocess.run(
        [str(BIN / "celery"), "-A", "workers", program],
        env={**env, "OUTREACH_SEND_RATE": "fast", "PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: OUTREACH_SEND_RATE: Input should be a valid number, unable to parse string as a number "
        "(got 'fast')"
    ]


# --- options and usage --------------------------------------------------------------------------


@pytest.mark.parametrize("server", ["web", "sandbox"])
@pytest.mark.parametrize("port", ["99999", "0", "http"])
def test_ports_are_range_checked_the_same_way(server: str, port: str) -> None:
    line = one_error_line(CliRunner().invoke(main, [server, "--port", port]))
    if port == "http":
        assert line == "error: --port: 'http' is not a port number; use a whole number from 1 to 65535"
    else:
        assert line == f"error: --port: {port} is not a TCP port; use a number from 1 to 65535"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["nosuch"], "error: No such command 'nosuch'; see `outreach --help`"),
        (["--bogus"], "error: No such option '--bogus'; see `outreach --help`"),
        (["report", "--since", "last week"], "error: --since: 'last week' is not a date; write YYYY-MM-DD"),
        (["campaigns", "preview", "x", "--on", "2026-02-30"], "error: --on: '2026-02-30' is not a date"),
        (["tick", "--now", "soon"], "error: --now: 'soon' is not an ISO date-time"),
        (["handoffs", "close", "x", "--by", "D", "--note", "n"], "error: ID: 'x' is not a valid integer"),
        (
            ["optouts", "remove", "+16175550123", "--by", "D"],
            "error: Missing option '--reason'; see `outreach",
        ),
        (["patients", "import", "/no/such.csv"], "error: ROSTER: File '/no/such.csv' does not exist"),
    ],
)
def test_one_error_prefix_for_click_and_ours(args: list[str], expected: str) -> None:
    result = CliRunner().invoke(main, args, prog_name="outreach")
    line = one_error_line(result)
    assert line.startswith(expected), line
    assert "Usage:" not in result.output and "Error:" not in result.output
