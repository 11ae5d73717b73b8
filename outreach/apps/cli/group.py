"""The `outreach` group: where every command runs, and so the one place user errors become lines.

DESIGN.md §3: a user error (bad input, a bad setting, a server that is not there) is one line
naming what is wrong and how to fix it, exit 2, never a traceback. Commands just raise:
`UserError` from the engine, click's own usage errors, and the database faults of an operator's
setup (`outreach.store.db.database_problem`: no server, no database, no folder, a read-only file,
no schema) all end here as `error: ...`, so no command needs its own try/except for them, and
click's "Error:" and ours cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn

import click

from outreach.apps.cli.output import error_line
from outreach.errors import UserError


class OutreachGroup(click.Group):
    """A click group that prints every error a user can cause as one `error:` line."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.ClickException as exc:  # `outreach --bogus`: the group's own options
            _usage_failed(exc)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:  # a subcommand's arguments, or a value a type refused
            _usage_failed(exc)
        except UserError as exc:
            _failed(str(exc))
        except Exception as exc:
            problem = _database_problem(exc)
            if problem is None:
                raise
            _failed(problem)


def _failed(message: str, status: int = 2) -> NoReturn:
    error_line(message)
    raise click.exceptions.Exit(status)


def _usage_failed(exc: click.ClickException) -> NoReturn:
    """click's message in our one line: `--port: ...` for a refused value, else the usage problem
    and where to read the command's usage."""
    missing = isinstance(exc, click.MissingParameter)  # a BadParameter too, but with no value
    if isinstance(exc, click.BadParameter) and not missing and exc.param is not None:
        _failed(f"{_param_name(exc.param)}: {exc.message}")
    if isinstance(exc, click.UsageError) and exc.ctx is not None:
        _failed(f"{exc.format_message().rstrip('.')}; see `{exc.ctx.command_path} --help`")
    _failed(exc.format_message())


def _param_name(param: click.Parameter) -> str:
    opts: Sequence[str] = param.opts if isinstance(param, click.Option) else []
    return "/".join(opts) if opts else param.human_readable_name


def _database_problem(exc: Exception) -> str | None:
    """The operator's fix for a database fault (store/db.py), read against the configured URL."""
    from outreach.config import get_settings
    from outreach.store.db import database_problem

    try:
        url = get_settings().database_url
    except UserError:
        return None
    return database_problem(exc, url)
