"""The `outreach` command (DESIGN.md §3).

Commands parse arguments and call the engine modules; every user error ends as one line on
stderr with a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.console import Console

from outreach.errors import UserError

err_console = Console(stderr=True, highlight=False)
out = Console(highlight=False)


class _Group(click.Group):
    """Turns UserError (bad input, bad settings) into one readable line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            err_console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(package_name="outreach")
def main() -> None:
    """SMS-first patient outreach: campaigns, roster, sending, replies, reports."""


# --- db ------------------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the schema (Alembic)."""
    from outreach import db as dbmod
    from outreach.config import get_settings

    dbmod.upgrade()
    out.print(f"schema is up to date ({_safe_url(get_settings().database_url)})")


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# --- patients and events (outreach/roster.py) ---------------------------------------------------

# --- campaigns (outreach/campaigns.py, outreach/eligibility.py) ---------------------------------

# --- scheduler and sending (outreach/scheduler.py, outreach/sending.py) -------------------------

# --- sandbox (outreach/providers/sandbox.py) -----------------------------------------------------


if __name__ == "__main__":  # pragma: no cover
    main()
