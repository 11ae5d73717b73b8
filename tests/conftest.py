"""Shared fixtures: a real database (SQLite by default, PostgreSQL when OUTREACH_TEST_DATABASE_URL
is set), a real Redis when one answers, and settings isolated per test.

CI sets OUTREACH_TEST_REQUIRE_SERVICES=1 so a missing Redis or PostgreSQL fails the run instead of
skipping tests.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from outreach.config import get_settings
from outreach.store import db as dbmod
from outreach.store.models import Base

pytest_plugins = ["tests.sandbox_fixtures"]

REQUIRE_SERVICES = os.environ.get("OUTREACH_TEST_REQUIRE_SERVICES") == "1"
ROOT = Path(__file__).resolve().parent.parent


def _unavailable(what: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"{what} is required (OUTREACH_TEST_REQUIRE_SERVICES=1) but unreachable")
    pytest.skip(f"{what} not reachable")


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One database per test session; on PostgreSQL a private schema so runs never collide."""
    base = os.environ.get("OUTREACH_TEST_DATABASE_URL")
    if not base:
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = dbmod.engine_for(base)
    try:
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
    except Exception as exc:  # pragma: no cover - only when the server is missing
        _unavailable(f"PostgreSQL at {base} ({exc.__class__.__name__})")
    sep = "&" if "?" in base else "?"
    yield f"{base}{sep}options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))


@pytest.fixture(scope="session")
def migrated_engine(database_url: str) -> Engine:
    engine = dbmod.engine_for(database_url)
    dbmod.upgrade(engine)
    return engine


@pytest.fixture
def engine(migrated_engine: Engine, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """An empty, migrated database, also set as OUTREACH_DATABASE_URL for code under test."""
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with migrated_engine.begin() as conn:
        if migrated_engine.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for name in tables:
                conn.execute(text(f"DELETE FROM {name}"))
    monkeypatch.setenv("OUTREACH_DATABASE_URL", database_url)
    get_settings.cache_clear()
    yield migrated_engine
    get_settings.cache_clear()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with dbmod.session_scope(engine) as s:
        yield s


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Tests never read a developer's .env or environment; each starts from the documented defaults."""
    for name in list(os.environ):
        if (name.startswith("OUTREACH_") and not name.startswith("OUTREACH_TEST_")) or name.startswith(
            "TWILIO_"
        ):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OUTREACH_CAMPAIGNS_DIR", str(ROOT / "campaigns"))
    monkeypatch.setenv("OUTREACH_CLINIC_NAME", "Riverside Health")
    monkeypatch.setenv("OUTREACH_CLINIC_PHONE", "(617) 555-0100")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A real Redis (db 15 by default, flushed by the tests that use it)."""
    import redis

    url = os.environ.get("OUTREACH_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        _unavailable(f"Redis at {url} ({exc.__class__.__name__})")
    return url
