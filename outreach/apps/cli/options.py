"""Option types and options that several commands share, each defined once.

A value click refuses becomes `error: --on: ...` through the group (group.py), so each type's
message is `problem; fix` like every other user error.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from outreach.clock import naive_utc

F = TypeVar("F", bound=Callable[..., Any])

if TYPE_CHECKING:  # click 8.2+ declares ParamType generic; older versions cannot be subscripted
    _DateBase = click.ParamType[dt.date, Any]
    _InstantBase = click.ParamType[dt.datetime, Any]
    _PortBase = click.ParamType[int, Any]
else:
    _DateBase = _InstantBase = _PortBase = click.ParamType


class DateType(_DateBase):
    """A calendar day, YYYY-MM-DD: every `--on` and `--since`."""

    name = "date"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> dt.date:
        if isinstance(value, dt.date):
            return value
        try:
            return dt.date.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{value!r} is not a date; write YYYY-MM-DD, e.g. 2026-10-01", param, ctx)


class InstantType(_InstantBase):
    """An ISO 8601 date-time (`tick --now`), as naive UTC like everything stored."""

    name = "instant"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> dt.datetime:
        if isinstance(value, dt.datetime):
            return naive_utc(value)
        try:
            return naive_utc(dt.datetime.fromisoformat(str(value)))
        except ValueError:
            self.fail(f"{value!r} is not an ISO date-time (e.g. 2026-11-23T14:00:00Z)", param, ctx)


class PortType(_PortBase):
    """A TCP port to listen on (`web --port`, `sandbox --port`)."""

    name = "port"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            port = int(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a port number; use a whole number from 1 to 65535", param, ctx)
        if not 1 <= port <= 65535:
            self.fail(f"{port} is not a TCP port; use a number from 1 to 65535", param, ctx)
        return port


DATE = DateType()
INSTANT = InstantType()
PORT = PortType()


def port_option(default: int) -> Callable[[F], F]:
    """`--port`, range-checked the same way wherever a server listens."""
    return click.option("--port", default=default, show_default=True, type=PORT, help="TCP port.")


def errors_option(what: str, columns: str) -> Callable[[F], F]:
    """`--errors FILE`: every rejected `what` as CSV with `columns` (the path is checked before
    anything is read, so a bad one costs no import)."""
    return click.option(
        "--errors",
        "errors_path",
        type=click.Path(dir_okay=False, writable=True),
        metavar="FILE",
        help=f"Write every rejected {what} to FILE as CSV ({columns}).",
    )


def json_option(help_text: str) -> Callable[[F], F]:
    """`--json`: the documented machine-readable output instead of text for people."""
    return click.option("--json", "as_json", is_flag=True, help=help_text)


by_option = click.option(
    "--by", "by", required=True, metavar="NAME", help="Who is making the change (audited)."
)
show_numbers_option = click.option(
    "--show-numbers", is_flag=True, help="Print phone numbers in full (default: masked, +1******23)."
)
