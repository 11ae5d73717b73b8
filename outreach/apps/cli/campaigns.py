"""`outreach campaigns validate|list|preview` (outreach/campaigns/, outreach/plan/preview.py)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.text import Text

from outreach.apps.cli.context import engine, settings, today
from outreach.apps.cli.options import DATE, json_option
from outreach.apps.cli.output import count, note, out, say
from outreach.apps.tables import Column, print_rows
from outreach.errors import UserError

if TYPE_CHECKING:
    from outreach.campaigns import CampaignFile, CampaignProblem
    from outreach.plan.preview import PreviewRow

PREVIEW_TABLE_ROWS = 50


@click.group()
def campaigns() -> None:
    """Campaign files: validate, list, preview."""


@campaigns.command("validate")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--verbose", "-v", is_flag=True, help="Also list the warnings the files acknowledge.")
def campaigns_validate(paths: tuple[str, ...], verbose: bool) -> None:
    """Report every problem in campaign files (files or directories; default OUTREACH_CAMPAIGNS_DIR).

    Exits 1 on any error; warnings alone exit 0. A warning a file acknowledges (its `acknowledge`
    list) is not shown unless --verbose."""
    from outreach.campaigns import validate_files

    files = _campaign_files(paths)
    _, problems = validate_files(files, settings=settings())
    for problem in problems:
        if verbose or not problem.acknowledged:
            style = "red" if problem.severity == "error" else "dim" if problem.acknowledged else "yellow"
            out.print(Text(str(problem), style=style), soft_wrap=True)
    _validate_summary(len(files), problems, verbose)


def _campaign_files(paths: tuple[str, ...]) -> list[Path]:
    from outreach.campaigns import expand_paths

    if paths:
        files = expand_paths([Path(p) for p in paths])
    else:
        folder = Path(settings().campaigns_dir)
        if not folder.is_dir():
            raise UserError(f"campaign directory {folder} (OUTREACH_CAMPAIGNS_DIR) does not exist")
        files = expand_paths([folder])
    if not files:
        raise UserError(f"no campaign files (*.yaml) in {', '.join(paths) or settings().campaigns_dir}")
    return files


def _validate_summary(files: int, problems: list[CampaignProblem], verbose: bool) -> None:
    errors = sum(p.severity == "error" for p in problems)
    acknowledged = sum(p.acknowledged for p in problems)
    warnings = len(problems) - errors - acknowledged
    summary = f"{count(files, 'file')} checked: {count(errors, 'error')}, {count(warnings, 'warning')}"
    if acknowledged:
        summary += f" ({acknowledged} acknowledged{'' if verbose else '; --verbose lists them'})"
    say(summary, "bold red" if errors else "yellow" if warnings else "green")
    if errors:
        raise click.exceptions.Exit(1)


@campaigns.command("list")
@json_option('Print JSON: {"campaigns": [...]}.')
def campaigns_list(as_json: bool) -> None:
    """Id, name, active dates, steps and languages of every campaign in OUTREACH_CAMPAIGNS_DIR."""
    from outreach.campaigns import load_campaigns

    found = load_campaigns(settings=settings())
    if as_json:
        rows = [campaign.summary() for campaign in found.values()]
        click.echo(json.dumps({"campaigns": rows}, ensure_ascii=False, indent=2))
        return
    if not found:
        say("no campaigns")
    for campaign in found.values():
        steps = ", ".join(
            f"{s.id} +{s.after}" + (" if no reply" if s.only_if == "no_reply" else "") for s in campaign.steps
        )
        out.print(Text.assemble((campaign.id, "bold"), "  ", campaign.name), soft_wrap=True)
        say(f"  active     {campaign.active.from_} to {_until(campaign)}")
        say(f"  steps      {steps}")
        say(f"  languages  {', '.join(campaign.languages())}")


def _until(campaign: CampaignFile) -> str:
    return campaign.active.until.isoformat() if campaign.active.until else "open-ended"


@campaigns.command("preview")
@click.argument("campaign_id", metavar="ID")
@click.option(
    "--on", type=DATE, metavar="DATE", help="Planning day, YYYY-MM-DD (default: today in the default zone)."
)
@json_option("Print JSON (the shape is documented in the README).")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    metavar="N",
    help=f"Show at most N patients; the count stays the whole audience (table: {PREVIEW_TABLE_ROWS}).",
)
def campaigns_preview(campaign_id: str, on: dt.date | None, as_json: bool, limit: int | None) -> None:
    """Who would get which step when, with rendered text and segment count; sends nothing."""
    from outreach.campaigns import load_campaigns

    on = on or today()
    found = load_campaigns(settings=settings())
    if campaign_id not in found:
        known = ", ".join(sorted(found)) or "none"
        raise UserError(f"no campaign {campaign_id!r} in {settings().campaigns_dir}; known ids: {known}")
    campaign = found[campaign_id]
    rows, total = _preview(campaign, on, limit if limit is not None or as_json else PREVIEW_TABLE_ROWS)
    if not campaign.is_active(on):
        inactive = (
            f"note: {campaign_id} is not active on {on} (active {campaign.active.from_} to "
            f"{_until(campaign)}); the scheduler would send nothing"
        )
        if as_json:
            note(inactive)  # stdout stays the JSON
        else:
            say(inactive, "yellow")
    if as_json:
        patients = [_preview_json(r) for r in rows]
        payload = {"campaign": campaign_id, "on": on.isoformat(), "count": total, "patients": patients}
        click.echo(json.dumps(payload, ensure_ascii=False, indent=2))
    else:
        _preview_table(campaign, on, rows, total)


def _preview(campaign: CampaignFile, on: dt.date, shown: int | None) -> tuple[list[PreviewRow], int]:
    """The first `shown` rows, and the whole audience's size (counted only when rows were cut)."""
    from outreach.plan.eligibility import count_eligible
    from outreach.plan.preview import preview
    from outreach.store.db import session_scope

    with session_scope(engine()) as session:
        rows = preview(session, campaign, on, settings=settings(), limit=shown)
        cut = shown is not None and len(rows) >= shown
        return rows, count_eligible(session, campaign, on) if cut else len(rows)


def _preview_json(row: PreviewRow) -> dict[str, object]:
    """One patient of `preview --json` (DESIGN.md §5)."""
    keys = ("mrn", "step", "language", "text", "segments")
    return {**{key: getattr(row, key) for key in keys}, "send_at": row.send_at.isoformat()}


def _preview_table(campaign: CampaignFile, on: dt.date, rows: list[PreviewRow], total: int) -> None:
    from zoneinfo import ZoneInfo

    say(f"{campaign.id}: step {campaign.steps[0].id} on {on}", "bold")
    columns = [
        Column("mrn", key=True),
        Column("lang", key=True),
        Column("seg", key=True, right=True),
        Column("send at (patient-local)", key=True),
        Column("text"),
    ]
    cells = [
        (
            r.mrn,
            r.language,
            str(r.segments),
            r.send_at.astimezone(ZoneInfo(r.zone)).strftime("%a %Y-%m-%d %H:%M %Z"),
            r.text,
        )
        for r in rows
    ]
    print_rows(columns, cells, console=out)
    more = f" (showing {len(rows)}; --limit N or --json for more)" if len(rows) < total else ""
    say(f"{count(total, 'patient')} eligible{more}")
