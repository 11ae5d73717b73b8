"""`outreach campaigns validate|list|preview|pause|resume` (outreach/campaigns/, outreach/plan/preview.py,
outreach/send/pause.py)."""

from __future__ import annotations

import datetime as dt
import getpass
import json
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.text import Text

from outreach.apps.cli.context import database_url, engine, local_time, settings, today
from outreach.apps.cli.options import DATE, json_option
from outreach.apps.cli.output import count, note, out, say
from outreach.apps.tables import Column, print_rows
from outreach.errors import UserError

if TYPE_CHECKING:
    from outreach.campaigns import CampaignFile, CampaignProblem
    from outreach.plan.preview import PreviewRow
    from outreach.send.pause import PauseState

PREVIEW_TABLE_ROWS = 50


@click.group()
def campaigns() -> None:
    """Campaign files: validate, list, preview; pause and resume a campaign's sending."""


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
    paused = _pause_states()
    if as_json:
        rows = [
            {**campaign.summary(), "paused": _paused_json(paused, campaign.id)} for campaign in found.values()
        ]
        click.echo(json.dumps({"campaigns": rows}, ensure_ascii=False, indent=2))
        return
    if not found:
        say("no campaigns")
    for campaign in found.values():
        steps = ", ".join(
            f"{s.id} +{s.after}" + (" if no reply" if s.only_if == "no_reply" else "") for s in campaign.steps
        )
        out.print(Text.assemble((campaign.id, "bold"), "  ", campaign.name), soft_wrap=True)
        if campaign.id in paused:
            state = paused[campaign.id]
            say(f"  PAUSED     since {local_time(state.paused_at)} by {state.paused_by}", "bold yellow")
        say(f"  active     {campaign.active.from_} to {_until(campaign)}")
        say(f"  steps      {steps}")
        say(f"  languages  {', '.join(campaign.languages())}")


def _pause_states() -> dict[str, PauseState]:
    """Paused campaigns, from the database when there is one to read: `list` also serves a fresh
    checkout whose database was never made (no file is created for it, nothing is reported)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from outreach.send.pause import pause_states
    from outreach.store.db import session_scope

    url = make_url(database_url())
    if url.get_backend_name() == "sqlite" and not (url.database and Path(url.database).is_file()):
        return {}
    try:
        with session_scope(engine()) as session:
            return pause_states(session)
    except SQLAlchemyError:  # not migrated, or not answering: the files are still worth listing
        return {}


def _paused_json(paused: dict[str, PauseState], campaign_id: str) -> dict[str, str] | None:
    state = paused.get(campaign_id)
    return None if state is None else {"at": state.paused_at.isoformat(), "by": state.paused_by}


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
    on = on or today()
    campaign = _campaign(campaign_id)
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


def _campaign(campaign_id: str) -> CampaignFile:
    """The campaign file with this id; an unknown id is one line naming the ids there are."""
    from outreach.campaigns import load_campaigns

    found = load_campaigns(settings=settings())
    if campaign_id not in found:
        known = ", ".join(sorted(found)) or "none"
        raise UserError(f"no campaign {campaign_id!r} in {settings().campaigns_dir}; known ids: {known}")
    return found[campaign_id]


def _actor() -> str:
    """Who the audit log names for a command: the OS user."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in a bare container
        return "cli"


@campaigns.command("pause")
@click.argument("campaign_id", metavar="ID")
def campaigns_pause(campaign_id: str) -> None:
    """Stop a campaign's sending now, in every worker; nothing is canceled (audited).

    Queued and planned messages wait, and nothing new is planned, until `outreach campaigns resume ID`."""
    from outreach.clock import utcnow
    from outreach.send.pause import pause
    from outreach.store.db import session_scope

    campaign = _campaign(campaign_id)
    with session_scope(engine()) as session:
        change = pause(session, campaign.id, campaign.name, by=_actor(), at=utcnow())
    held = f"{change.waiting:,} queued/planned {'message' if change.waiting == 1 else 'messages'} held"
    if change.changed:
        say(f"paused {campaign.id}: {held}; `outreach campaigns resume {campaign.id}` restarts it", "yellow")
    else:
        say(f"{campaign.id} was already paused: {held}")


@campaigns.command("resume")
@click.argument("campaign_id", metavar="ID")
def campaigns_resume(campaign_id: str) -> None:
    """Restart a paused campaign's sending where it stopped (audited).

    Its due messages are handed to the workers at once; each is checked again for consent, the
    patient's send window and the frequency cap as it is claimed."""
    from outreach.clock import utcnow
    from outreach.send.pause import resume
    from outreach.store.db import session_scope

    campaign = _campaign(campaign_id)
    now = utcnow()
    with session_scope(engine()) as session:
        change = resume(session, campaign.id, by=_actor(), at=now)
    if not change.changed:
        say(f"{campaign.id} is not paused")
        return
    waiting = f"{change.waiting:,} queued/planned {'message' if change.waiting == 1 else 'messages'}"
    say(f"resumed {campaign.id}: {waiting} {'goes' if change.waiting == 1 else 'go'} out as due", "green")
    _hand_over_due(now)


def _hand_over_due(now: dt.datetime) -> None:
    """What is due now goes to the workers at once (beat's enqueue would within seconds anyway);
    a broker that refuses loses nothing: the rows wait as queued for the sweeper."""
    from outreach.apps.cli.tick import HandOver
    from outreach.plan.enqueue import enqueue_due
    from workers.tasks import dispatch

    hand_over = HandOver(dispatch)
    enqueue_due(engine(), now, dispatch=hand_over)
    if hand_over.refused is not None:
        note(
            f"the broker (OUTREACH_BROKER_URL) refused: {hand_over.held} due messages wait as queued "
            "and go out once it is back"
        )


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
