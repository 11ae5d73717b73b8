"""`outreach report`: the funnel per campaign and step (outreach/outcomes/funnel.py)."""

from __future__ import annotations

import datetime as dt
import json

import click

from outreach.apps.cli.context import engine, settings, today
from outreach.apps.cli.options import DATE, json_option
from outreach.apps.cli.output import note, out
from outreach.errors import UserError


@click.command("report")
@click.argument("campaign_id", metavar="[ID]", required=False)
@json_option("Print JSON (the shape is documented in the README).")
@click.option("--since", type=DATE, metavar="DATE", help="Only enrollments from DATE (YYYY-MM-DD) on.")
@click.option(
    "--on", type=DATE, metavar="DATE", help="Count 'eligible' for DATE (default: today in the default zone)."
)
def report_command(campaign_id: str | None, as_json: bool, since: dt.date | None, on: dt.date | None) -> None:
    """The funnel per campaign and step: eligible, enrolled, sent, delivered, replied, activated."""
    from outreach.apps.report_table import print_report
    from outreach.campaigns import load_campaigns
    from outreach.outcomes.funnel import funnel

    try:
        files = load_campaigns(settings=settings())
    except UserError as exc:  # the history is still worth reporting; only 'eligible' needs the files
        note(f"note: campaign files not loaded, no eligible counts: {exc}")
        files = {}
    result = funnel(engine(), campaign_id=campaign_id, since=since, campaigns=files, on=on or today())
    if as_json:
        click.echo(json.dumps(result.as_json(), ensure_ascii=False, indent=2))
    else:
        print_report(result, out)
