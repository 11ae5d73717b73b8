"""What every command prints with: the two consoles, the one error line, counts and local times.

One home for the look of the CLI: every error goes through `error_line` (one prefix, `error:`,
for our errors and click's own usage errors alike); tables go through outreach/apps/tables.py.
"""

from __future__ import annotations

import datetime as dt

from rich.console import Console
from rich.text import Text

from outreach.clock import clinic_time

err_console = Console(stderr=True, highlight=False)
out = Console(highlight=False)


def error_line(message: str) -> None:
    """`error: message` on stderr; the message is data, never rich markup (names may hold [...])."""
    err_console.print(Text.assemble(("error:", "red"), f" {message}"), soft_wrap=True)


def note(message: str) -> None:
    """A remark on stderr that does not change the outcome (stdout stays the command's result)."""
    err_console.print(message, soft_wrap=True, markup=False)


def say(message: str, style: str | None = None) -> None:
    """One plain line of the command's result on stdout, never wrapped or read as markup."""
    out.print(Text(message, style=style or ""), soft_wrap=True)


def count(n: int, noun: str) -> str:
    """`1 file`, `2 files`."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def local(zone: str, value: dt.datetime | None) -> str:
    """A stored naive-UTC time in the clinic's zone, for tables people read."""
    if value is None:
        return "-"
    return clinic_time(zone, value).strftime("%Y-%m-%d %H:%M %Z")
