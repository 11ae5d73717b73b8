"""Production packaging, checked without a Docker engine.

The compose file and Dockerfile are read as data (services, health checks, start order, users);
then every command compose would run is started here, from this checkout's installed console
scripts, against the real PostgreSQL and Redis: migrate, worker, beat and web.
"""

from __future__ import annotations

import json
import os
import re
import shelve
import shlex
import signal
import socket
import subprocess
import sys
import threading
import tomllib
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from celery import Celery
from sqlalchemy import Engine, inspect, text
from sqlalchemy.engine import make_url

from outreach.config import Settings
from outreach.store import db as dbmod
from tests.workers_harness import wait_until

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
OURS = ("migrate", "web", "worker", "scheduler", "cli")  # the services that run this project's image


def command(service: str) -> list[str]:
    """The service's command with its executable resolved to this environment's console script."""
    argv = list(SERVICES[service]["command"])
    script = BIN / argv[0]
    assert script.is_file(), f"{service}: {argv[0]} is not an installed console script"
    return [str(script), *argv[1:]]


# --- the files -----------------------------------------------------------------------------------


def test_compose_has_the_services_health_checks_and_start_order() -> None:
    assert set(SERVICES) == {"postgres", "redis", "migrate", "web", "worker", "scheduler", "cli", "flower"}

    postgres, redis_ = SERVICES["postgres"], SERVICES["redis"]
    assert postgres["image"].startswith("postgres:16")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    assert redis_["command"] == ["redis-server", "--appendonly", "yes"]
    assert redis_["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert any(v.endswith(":/data") for v in redis_["volumes"])
    assert set(COMPOSE["volumes"]) == {v.split(":")[0] for v in (*postgres["volumes"], *redis_["volumes"])}

    migrate = SERVICES["migrate"]
    assert migrate["command"] == ["outreach", "db", "upgrade"]
    assert migrate["restart"] == "no"  # a one-shot: it must not be restarted after it succeeds
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("web", "worker", "scheduler"):
        depends = SERVICES[name]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}, name
        assert depends["redis"] == {"condition": "service_healthy"}, name

    web = SERVICES["web"]
    assert web["command"] == ["outreach", "web", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
    assert "http://127.0.0.1:8000/healthz" in " ".join(web["healthcheck"]["test"])
    worker = SERVICES["worker"]
    assert worker["command"][:4] == ["celery", "-A", "workers", "worker"]
    assert worker["command"][4:8] == ["--pool", "threads", "--concurrency", "32"]
    # --scale worker=N needs no fixed name and no host port.
    assert "container_name" not in worker and "ports" not in worker
    assert SERVICES["scheduler"]["command"] == ["celery", "-A", "workers", "beat", "--loglevel", "INFO"]
    assert SERVICES["flower"]["profiles"] == ["monitoring"]
    # One-off commands: never started by `up`, started on demand with the schema in place; the
    # import folder is mounted read-only there and nowhere else.
    cli = SERVICES["cli"]
    assert cli["profiles"] == ["tools"] and cli["restart"] == "no"
    assert cli["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert "./data:/data:ro" in cli["volumes"]
    assert "data" in (ROOT / ".dockerignore").read_text().splitlines()  # patient files never in an image
    assert "/data/" in (ROOT / ".gitignore").read_text().splitlines()  # nor in a commit
    assert not any(
        str(v).startswith("./data:") for name in OURS if name != "cli" for v in SERVICES[name]["volumes"]
    )


def test_our_services_read_dot_env_and_point_at_the_compose_services() -> None:
    for name in OURS:
        service = SERVICES[name]
        assert service["build"] == "." and service["env_file"] == ".env", name
        env = service["environment"]
        database = make_url(env["OUTREACH_DATABASE_URL"].replace("${POSTGRES_PASSWORD:-outreach}", "pw"))
        assert (database.drivername, database.host, database.database) == (
            "postgresql+psycopg",
            "postgres",
            SERVICES["postgres"]["environment"]["POSTGRES_DB"],
        ), name
        assert database.username == SERVICES["postgres"]["environment"]["POSTGRES_USER"], name
        assert env["OUTREACH_BROKER_URL"] == "redis://redis:6379/0", name
        assert "./campaigns:/app/campaigns:ro" in service["volumes"], name
        command(name)  # the executable exists here


def _env_example() -> list[tuple[str, bool]]:
    """(name, set) for `NAME=value` (set) and `#NAME=value` (documented but off) lines."""
    found = []
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.match(r"^(#?)([A-Z][A-Z0-9_]*)=", line)
        if match:
            found.append((match.group(2), not match.group(1)))
    return found


def compose_variables() -> dict[str, str | None]:
    """`${NAME}` / `${NAME:-default}` that compose substitutes from the environment or .env."""
    found: dict[str, str | None] = {}
    for name, default in re.findall(
        r"\$\{([A-Z_][A-Z0-9_]*)(?::?-([^}]*))?\}", (ROOT / "docker-compose.yml").read_text()
    ):
        found[name] = default or None
    return found


def test_env_example_lists_exactly_the_settings_each_with_a_comment() -> None:
    aliases = {f.alias for f in Settings.model_fields.values()}
    names = [name for name, _ in _env_example()]
    assert len(names) == len(set(names))
    assert set(names) == aliases | set(compose_variables())
    lines = (ROOT / ".env.example").read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^#?[A-Z][A-Z0-9_]*=", line):
            assert lines[i - 1].startswith("# "), f"{line}: no comment above it"


def test_every_variable_compose_reads_is_in_env_example_with_its_default() -> None:
    variables = compose_variables()
    assert set(variables) == {"POSTGRES_PASSWORD", "WEB_PORT"}
    example = (ROOT / ".env.example").read_text()
    for name, default in variables.items():
        # optional, so commented out, showing the value compose uses when it is unset
        assert re.search(rf"^#{name}={re.escape(default or '')}$", example, re.M), name


def test_env_example_as_dot_env_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OUTREACH_CAMPAIGNS_DIR", "OUTREACH_CLINIC_NAME", "OUTREACH_CLINIC_PHONE"):
        monkeypatch.delenv(name)
    (tmp_path / ".env").write_text((ROOT / ".env.example").read_text())
    settings = Settings()  # reads ./.env: the example must parse as it is
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert (settings.send_rate, settings.daily_cap, settings.weekly_cap) == (1.0, 1, 3)
    assert settings.twilio_api_url is None  # off unless uncommented: real Twilio by default
    assert not settings.twilio_auth_token  # to be filled in: services needing it refuse to start


def test_dockerfile_installs_the_package_as_a_non_root_user() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    assert instructions[0] == "FROM python:3.11-slim"
    install = next(line for line in instructions if "pip install" in line)
    assert "[" not in install and " -e " not in install  # the package itself, no extras, not editable
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    cmd = next(line for line in instructions if line.startswith("CMD "))
    assert not any(line.startswith("ENTRYPOINT") for line in instructions)
    argv = yaml.safe_load(cmd.removeprefix("CMD "))  # exec form, a JSON array
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert argv[0] in scripts and (BIN / argv[0]).is_file()
    assert argv == SERVICES["web"]["command"]
    # Everything the Dockerfile copies exists and is not excluded from the build context.
    ignored = set((ROOT / ".dockerignore").read_text().split())
    for line in instructions:
        if line.startswith("COPY ") and "--from" not in line:
            sources = [part for part in line.split()[1:-1] if not part.startswith("--")]
            for source in sources:
                assert (ROOT / source).exists() and source not in ignored, source


def test_the_image_build_gets_what_the_wheel_ships_as_package_data() -> None:
    """The Dockerfile copies every folder pyproject.toml maps into the package (the demo's data)."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    copied = set()
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        parts = line.split()
        if parts[:1] == ["COPY"] and parts[-1].startswith("/tmp/src"):
            copied.update(part for part in parts[1:-1] if not part.startswith("--"))
    ignored = set((ROOT / ".dockerignore").read_text().split())
    for folder in setuptools["package-dir"].values():
        assert folder in copied and folder not in ignored, folder
    assert {"outreach", "workers", "pyproject.toml", "README.md"} <= copied


# --- the README's docker compose commands ------------------------------------------------------

# `docker compose run` options that take a value (the rest are flags).
RUN_VALUE_OPTIONS = {
    "-v",
    "--volume",
    "-e",
    "--env",
    "--name",
    "-w",
    "--workdir",
    "-u",
    "--user",
    "-p",
    "--publish",
}


def compose_commands(markdown: str) -> list[list[str]]:
    """Every `docker compose …` command in a text: in code blocks, code spans and comments."""
    commands = []
    for match in re.finditer(r"docker compose [^`\n]*", markdown):
        line = match.group(0).split(" #")[0].split("&&")[0].strip().rstrip(",.")
        commands.append(shlex.split(line)[2:])
    return commands


def mounts(service: dict[str, Any], extra: list[str]) -> list[str]:
    """The container paths a service's volumes (and `run -v`) mount."""
    return [str(volume).split(":")[1] for volume in [*service.get("volumes", []), *extra]]


def check_compose_command(argv: list[str]) -> None:
    args = list(argv)
    while args and args[0].startswith("-"):  # global options: --profile NAME, -f FILE
        args = args[2:] if args[0] in ("--profile", "-f", "--file", "--env-file") else args[1:]
    sub, *args = args
    assert sub in {"up", "run", "build", "down", "logs", "ps", "exec", "restart", "stop", "pull"}, argv
    positional: list[str] = []
    volumes: list[str] = []
    while args:
        arg = args.pop(0)
        if sub == "run" and positional:  # the command in the container starts here
            positional.extend([arg, *args])
            break
        if arg == "--scale":
            service, _, count = args.pop(0).partition("=")
            assert service in SERVICES and count.isdigit(), argv
        elif sub == "run" and arg in RUN_VALUE_OPTIONS:
            value = args.pop(0)
            if arg in ("-v", "--volume"):
                volumes.append(value)
        elif not arg.startswith("-"):
            positional.append(arg)
    if sub in ("run", "exec"):
        service, *command = positional
        assert service in SERVICES, f"{argv}: no service {service!r}"
        assert command and (BIN / command[0]).is_file(), f"{argv}: {command[:1]} is not a console script here"
        targets = mounts(SERVICES[service], volumes)
        for value in command[1:]:
            for path in (part for part in value.split("=") if part.startswith("/")):
                assert any(path == t or path.startswith(t.rstrip("/") + "/") for t in targets), (
                    f"{argv}: {path} is not mounted in {service} (mounts: {targets})"
                )
    else:
        for service in positional:
            assert service in SERVICES, f"{argv}: no service {service!r}"


def test_readme_docker_compose_commands_name_real_services_and_mounted_paths() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = compose_commands(readme)
    assert ["up", "-d", "--build"] in commands  # the README's start command is the compose file's
    assert any(argv[:3] == ["run", "--rm", "cli"] and "/data/roster.csv" in argv for argv in commands)
    for argv in commands:
        check_compose_command(argv)
    # The commands the compose file itself suggests are the README's, word for word.
    header = (ROOT / "docker-compose.yml").read_text()
    for argv in compose_commands(header):
        check_compose_command(argv)
        assert argv in commands, f"docker compose {' '.join(argv)}: in docker-compose.yml, not in the README"


def test_the_compose_command_check_catches_what_the_issue_found() -> None:
    """The README's old import command: nothing was mounted at /data."""
    with pytest.raises(AssertionError, match="not mounted"):
        check_compose_command(["run", "--rm", "web", "outreach", "patients", "import", "/data/roster.csv"])
    with pytest.raises(AssertionError, match="no service"):
        check_compose_command(["up", "-d", "webb"])
    check_compose_command(
        ["run", "--rm", "-v", "/srv/in:/in:ro", "web", "outreach", "patients", "import", "/in/r.csv"]
    )


# --- the commands, started for real ------------------------------------------------------------


class Started:
    """A service command running as a child process; its output is kept for assertions."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def saw(self, fragment: str) -> bool:
        return any(fragment in line for line in self.lines)

    def wait_for(self, fragment: str, timeout: float = 30) -> bool:
        """Until `fragment` is printed; False at once if the process exits first."""
        wait_until(lambda: self.saw(fragment) or self.proc.poll() is not None, timeout=timeout)
        return self.saw(fragment)

    def output(self) -> str:
        return "".join(self.lines[-60:])

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


@contextmanager
def started(argv: list[str], env: dict[str, str], cwd: Path) -> Iterator[Started]:
    service = Started(argv, env, cwd)
    try:
        yield service
    finally:
        service.stop()


def test_migrate_command_creates_the_schema(tmp_path: Path) -> None:
    """On a fresh PostgreSQL schema when the suite runs on PostgreSQL, else on a new SQLite file."""
    base = os.environ.get("OUTREACH_TEST_DATABASE_URL")
    schema = f"deploy_{uuid.uuid4().hex[:10]}"
    if base:
        with dbmod.engine_for(base).begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        url = f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    else:
        url = f"sqlite:///{tmp_path / 'fresh.db'}"
    try:
        done = subprocess.run(
            command("migrate"),
            env={**os.environ, "OUTREACH_DATABASE_URL": url},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("created the schema (revision ")
        tables = set(inspect(dbmod.engine_for(url)).get_table_names())
        assert {"alembic_version", "patients", "enrollments", "messages", "handoffs"} <= tables
    finally:
        if base:
            dbmod.engine_for(url).dispose()
            with dbmod.engine_for(base).begin() as conn:
                conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))


@pytest.fixture
def broker(redis_url: str) -> Iterator[str]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield redis_url
    client.flushdb()


@pytest.mark.redis
def test_worker_command_starts_and_answers_a_ping(broker: str, tmp_path: Path) -> None:
    name = f"deploy-{uuid.uuid4().hex[:8]}@test"
    env = {"OUTREACH_BROKER_URL": broker, "OUTREACH_DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}"}
    with started([*command("worker"), "-n", name], env, tmp_path) as worker:
        assert worker.wait_for(" ready."), worker.output()
        assert worker.saw("concurrency: 32 (thread)"), worker.output()
        control = Celery(broker=broker)
        try:
            replies = control.control.ping(destination=[name], timeout=5)
        finally:
            control.close()
        assert replies == [{name: {"ok": "pong"}}]
    assert worker.proc.returncode == 0, worker.output()


@pytest.mark.redis
def test_beat_command_starts_and_schedules_tick_and_sweep(broker: str, tmp_path: Path) -> None:
    schedule = tmp_path / "celerybeat-schedule"  # compose's beat keeps it in its working directory
    env = {"OUTREACH_BROKER_URL": broker}
    with started([*command("scheduler"), "--schedule", str(schedule)], env, tmp_path) as beat:
        assert beat.wait_for("beat: Starting..."), beat.output()
        assert wait_until(lambda: any(tmp_path.glob("celerybeat-schedule*")), timeout=15), beat.output()
    assert beat.proc.returncode == 0, beat.output()
    with shelve.open(str(schedule), flag="r") as store:
        entries = store["entries"]
    assert {name: entries[name].task for name in ("tick-every-minute", "sweep")} == {
        "tick-every-minute": "outreach.tick",
        "sweep": "outreach.sweep",
    }
    assert entries["tick-every-minute"].schedule.run_every.total_seconds() == 60
    assert entries["sweep"].schedule.run_every.total_seconds() == 15  # OUTREACH_SWEEP_EVERY


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.redis
def test_web_command_starts_and_its_health_check_passes(
    engine: Engine, database_url: str, redis_url: str, tmp_path: Path
) -> None:
    port = _free_port()
    argv = command("web")
    argv[argv.index("--port") + 1] = str(port)
    env = {
        "OUTREACH_DATABASE_URL": database_url,
        "OUTREACH_BROKER_URL": redis_url,
        "TWILIO_AUTH_TOKEN": "deploy-test-token",
        "OUTREACH_PUBLIC_URL": "https://outreach.example.org",
        "TWILIO_FROM_NUMBER": "+16175550100",
    }
    url = f"http://127.0.0.1:{port}/healthz"

    def answers() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except OSError:
            return False

    with started(argv, env, tmp_path) as web:
        assert wait_until(lambda: answers() or web.proc.poll() is not None, timeout=30), web.output()
        assert web.proc.poll() is None, web.output()
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200
            report = json.loads(response.read())
            assert report["status"] == "ok"
            assert set(report["checks"]) == {"database", "schema", "settings", "broker", "sender_holds"}
        # compose's own health check, pointed at this port
        check = [part.replace(":8000/", f":{port}/") for part in SERVICES["web"]["healthcheck"]["test"][1:]]
        assert check[0] == "python"
        done = subprocess.run([sys.executable, *check[1:]], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
