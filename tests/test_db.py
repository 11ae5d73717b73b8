from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import Engine, inspect

from outreach.apps.cli import main
from outreach.config import get_settings
from outreach.store import db as dbmod
from outreach.store.models import Base


def test_migrations_create_every_model_table(engine: Engine) -> None:
    names = set(inspect(engine).get_table_names())
    assert {t.name for t in Base.metadata.sorted_tables} <= names


def test_migrations_match_models(engine: Engine) -> None:
    """A model change without a migration would pass on create_all but break `outreach db upgrade`."""
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_db_upgrade_says_whether_it_created_or_found_the_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`db upgrade` on a new database says it created the schema, and on an up-to-date one that
    there was nothing to do; either way with the revision and the URL, its password masked."""
    url = f"sqlite:///{tmp_path / 'new.db'}"
    monkeypatch.setenv("OUTREACH_DATABASE_URL", url)
    get_settings.cache_clear()
    head = dbmod.head_revision()
    first = CliRunner().invoke(main, ["db", "upgrade"])
    assert first.exit_code == 0, first.output
    assert first.stdout.strip() == f"created the schema (revision {head}) in {url}"
    again = CliRunner().invoke(main, ["db", "upgrade"])
    assert again.stdout.strip() == f"the schema is already up to date (revision {head}) in {url}"
    assert dbmod.schema_revision(dbmod.engine_for(url)) == head and inspect(dbmod.engine_for(url)).has_table(
        "alembic_version"
    )


def test_a_new_database_has_no_revision_and_no_schema(tmp_path: Path) -> None:
    engine = dbmod.engine_for(f"sqlite:///{tmp_path / 'empty.db'}")
    assert dbmod.schema_revision(engine) is None and not inspect(engine).has_table("alembic_version")


def test_the_printable_url_masks_the_password() -> None:
    assert dbmod.safe_url("postgresql+psycopg://u:secret@h/db") == "postgresql+psycopg://u:***@h/db"
    assert dbmod.safe_url("not a url") == "(not a URL)"
