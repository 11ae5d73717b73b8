"""The `outreach` command (DESIGN.md §3): one module per command group, registered below.

- group.py: the click group every command runs in; every user error becomes one `error:` line
- output.py: the consoles and the error line; options.py: the option types (dates, ports, ...)
- context.py: what commands read from the settings (the database, today in the clinic's zone)
- db, imports (patients, events), campaigns, tick, report, care_team (handoffs, optouts), users,
  web, sandbox, demo: the commands

Command modules import the engine inside their functions, so `outreach --help` and a typo in a
command name answer without loading SQLAlchemy models, Celery or uvicorn.
"""

from __future__ import annotations

import importlib

import click

from outreach.apps.cli.group import OutreachGroup


@click.group(cls=OutreachGroup)
@click.version_option(package_name="outreach")
def main() -> None:
    """SMS-first patient outreach: campaigns, roster, sending, replies, reports."""


def register(target: str) -> None:
    """Add the click command at "package.module:name" to `outreach`: one line per command below."""
    module, _, name = target.partition(":")
    main.add_command(getattr(importlib.import_module(module), name))


register("outreach.apps.cli.db:db")
register("outreach.apps.cli.imports:patients")
register("outreach.apps.cli.imports:events")
register("outreach.apps.cli.campaigns:campaigns")
register("outreach.apps.cli.tick:tick_command")
register("outreach.apps.cli.web:web_command")
register("outreach.apps.cli.care_team:handoffs")
register("outreach.apps.cli.care_team:optouts")
register("outreach.apps.cli.report:report_command")
register("outreach.apps.cli.demo:demo_command")
register("outreach.apps.cli.sandbox:sandbox")
register("outreach.apps.cli.sweep:sweep_command")
register("outreach.apps.cli.fhir:fhir")
register("outreach.apps.cli.users:users")
