"""What commands need from the settings: the entry point reads them, the engine is handed them."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from outreach.apps.cli.output import local

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from outreach.config import Settings


def settings() -> Settings:
    """The process's settings; a malformed one is a UserError naming the variable."""
    from outreach.config import get_settings

    return get_settings()


def database_url() -> str:
    return settings().database_url


def engine() -> Engine:
    """The database of OUTREACH_DATABASE_URL. A malformed URL or a missing driver is a UserError
    naming the variable; a server that does not answer is translated where commands run (group.py)."""
    from outreach.store.db import engine_for

    return engine_for(database_url())


def local_time(value: dt.datetime | None) -> str:
    """A stored naive-UTC time in OUTREACH_DEFAULT_TIMEZONE, for tables people read."""
    return local(settings().default_timezone, value)


def today() -> dt.date:
    """Today in OUTREACH_DEFAULT_TIMEZONE: the default planning day of `--on`."""
    from outreach.clock import clinic_today

    return clinic_today(settings().default_timezone)
