"""`outreach demo`: the whole loop on embedded defaults (outreach/apps/demo.py)."""

from __future__ import annotations

from pathlib import Path

import click

from outreach.apps.cli.output import err_console, note, out, say


@click.command("demo")
@click.option(
    "--keep",
    "keep_dir",
    type=click.Path(file_okay=False, writable=True),
    metavar="DIR",
    help="Keep the SQLite database in DIR/outreach.db (default: a temporary directory, removed).",
)
@click.option("--days", type=click.IntRange(min=1), metavar="N", help="Simulated campaign days (default 10).")
@click.option("--fast", is_flag=True, help="A short run (3 days) for a quick look or a test suite.")
@click.option("--seed", type=int, default=2026, show_default=True, help="Seed of the simulated patients.")
def demo_command(keep_dir: str | None, days: int | None, fast: bool, seed: int) -> None:
    """Everything on embedded defaults with simulated patients, ending in the funnel report.

    The sample roster and campaigns, SQLite, an in-process worker and broker, the Twilio sandbox
    and the webhooks run over a simulated clock: days of a campaign in a minute or two."""
    from outreach.apps.demo import DEFAULT_DAYS, FAST_DAYS, run_demo
    from outreach.apps.report_table import print_report

    keep = Path(keep_dir).resolve() if keep_dir else None
    result = run_demo(
        keep=keep, days=days or (FAST_DAYS if fast else DEFAULT_DAYS), seed=seed, console=err_console
    )
    print_report(result.report, out)
    say(result.span())
    say(f"demo: {result.figures.line()}")
    say(f"  ({result.figures.legend()})")
    if result.unsettled:
        note(f"warning: {result.unsettled} simulated hours did not settle in time; figures may lag")
    if keep is None:
        say("the demo's database was temporary and is gone; `outreach demo --keep DIR` keeps it to inspect")
    else:
        from outreach.apps.demo import repo_root
        from outreach.apps.demo_workspace import instructions, leave_workspace

        say(f"the database is kept in {result.database}; inspect it with:")
        say(f"  OUTREACH_DATABASE_URL=sqlite:///{result.database} outreach report")
        for line in instructions(leave_workspace(result.database, repo_root())):
            say(line)
