"""`outreach db upgrade`: create or migrate the schema, and say which of the two it did."""

from __future__ import annotations

import click

from outreach.apps.cli.context import database_url, engine
from outreach.apps.cli.output import say


@click.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the schema (Alembic)."""
    from outreach.store.db import safe_url, schema_revision, upgrade

    target = engine()
    before = schema_revision(target)
    upgrade(target)
    after = schema_revision(target)
    where = safe_url(database_url())
    if before is None:
        say(f"created the schema (revision {after}) in {where}")
    elif before != after:
        say(f"upgraded the schema from revision {before} to {after} in {where}")
    else:
        say(f"the schema is already up to date (revision {after}) in {where}")
