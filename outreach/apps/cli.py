"""The `outreach` command (DESIGN.md §3).

Commands parse arguments and call the engine modules; every user error ends as one line on
stderr with a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console

from outreach.clock import clinic_time, clinic_today
from outreach.errors import UserError
from outreach.send.dispatch import Dispatch

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from outreach.apps.progress import FileProgress

err_console = Console(stderr=True, highlight=False)
out = Console(highlight=False)


def _engine() -> Engine:
    """The database of OUTREACH_DATABASE_URL: the entry point reads the settings, the engine is
    handed what it needs (a malformed URL is a UserError naming the variable)."""
    from outreach.config import get_settings
    from outreach.store.db import engine_for

    return engine_for(get_settings().database_url)


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
    from outreach.config import get_settings
    from outreach.store import db as dbmod

    dbmod.upgrade(_engine())
    out.print(f"schema is up to date ({_safe_url(get_settings().database_url)})")


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# --- patients and events (outreach/ingest/roster.py) ---------------------------------------------------

IMPORT_ERRORS_SHOWN = 50


@main.group()
def patients() -> None:
    """Patient roster."""


@main.group()
def events() -> None:
    """Clinical events (screenings, vaccines) that close care gaps."""


_JSON_HELP = 'Print {"accepted", "rejected", "inserted", "updated"} (see the README).'
_csv_path = click.Path(exists=True, dir_okay=False, readable=True)
_errors_option = click.option(
    "--errors",
    "errors_path",
    type=click.Path(dir_okay=False, writable=True),
    metavar="FILE",
    help="Write every rejected row to FILE as CSV (line,column,value,reason).",
)


@patients.command("import")
@click.argument("roster", type=_csv_path)
@click.option(
    "--events", "events_path", type=_csv_path, metavar="EVENTS.csv", help="Also import these events."
)
@_errors_option
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
def patients_import(roster: str, events_path: str | None, errors_path: str | None, as_json: bool) -> None:
    """Upsert patients by mrn; bad rows are reported with line and reason, good rows load.

    Exits 1 if any row was rejected. With --events, the events file's problems go to
    FILE with `.events` before its suffix (errors.csv -> errors.events.csv)."""
    from pathlib import Path

    from outreach.config import get_settings
    from outreach.ingest.roster import check_events_header, import_events, import_patients

    engine = _engine()
    if events_path is not None:
        check_events_header(Path(events_path))  # both headers are checked before anything loads
    settings, progress = get_settings(), _file_progress(as_json)
    errors = Path(errors_path) if errors_path else None
    results = [
        (Path(roster), import_patients(engine, Path(roster), settings=settings, progress=progress), errors)
    ]
    if events_path is not None:
        events_errors = errors.with_name(f"{errors.stem}.events{errors.suffix}") if errors else None
        result = import_events(engine, Path(events_path), settings=settings, progress=progress)
        results.append((Path(events_path), result, events_errors))
    _finish_import(results, as_json)


@events.command("import")
@click.argument("events_file", metavar="EVENTS.csv", type=_csv_path)
@_errors_option
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
def events_import(events_file: str, errors_path: str | None, as_json: bool) -> None:
    """Add clinical events by mrn; events already known are left alone. Exits 1 if any row was rejected."""
    from pathlib import Path

    from outreach.config import get_settings
    from outreach.ingest.roster import import_events

    progress = _file_progress(as_json)
    result = import_events(_engine(), Path(events_file), settings=get_settings(), progress=progress)
    _finish_import([(Path(events_file), result, Path(errors_path) if errors_path else None)], as_json)


def _file_progress(as_json: bool) -> FileProgress | None:
    """A bar on stderr while a large file loads (on a terminal only); none under --json."""
    from outreach.apps.progress import FileProgress

    return None if as_json else FileProgress(err_console)


def _finish_import(results: list[tuple[Any, Any, Any]], as_json: bool) -> None:
    """Rejected rows (capped) and notes on stderr; a summary or the --json object on stdout."""
    import json

    from rich.text import Text

    from outreach.ingest.roster import write_errors_csv

    for path, result, errors_path in results:
        prefix = f"{path.name}: " if len(results) > 1 else ""
        for note in result.notes:
            err_console.print(f"note: {note}", soft_wrap=True, markup=False)
        for error in result.errors[:IMPORT_ERRORS_SHOWN]:
            err_console.print(f"{prefix}{error.describe()}", soft_wrap=True, markup=False)
        hidden = len(result.errors) - IMPORT_ERRORS_SHOWN
        if hidden > 0:
            where = f"see {errors_path}" if errors_path else "see --errors"
            err_console.print(f"{prefix}... and {hidden} more ({where})", soft_wrap=True, markup=False)
        if errors_path is not None:
            write_errors_csv(errors_path, result.errors)
    if as_json:
        payload: dict[str, Any] = results[0][1].summary()
        if len(results) > 1:
            payload["events"] = results[1][1].summary()
        click.echo(json.dumps(payload))
    else:
        for path, result, _ in results:
            line = (
                f"{path.name}: {result.accepted} accepted ({result.inserted} inserted, "
                f"{result.updated} updated, {result.unchanged} unchanged), {result.rejected} rejected"
            )
            out.print(Text(line, style="yellow" if result.rejected else "green"), soft_wrap=True)
    if any(result.rejected for _, result, _ in results):
        sys.exit(1)


# --- campaigns (outreach/campaigns.py, outreach/plan/eligibility.py) ---------------------------------


@main.group()
def campaigns() -> None:
    """Campaign files: validate, list, preview."""


@campaigns.command("validate")
@click.argument("paths", nargs=-1, type=click.Path())
def campaigns_validate(paths: tuple[str, ...]) -> None:
    """Report every problem in campaign files (files or directories; default OUTREACH_CAMPAIGNS_DIR).

    Exits 1 on any error; warnings alone exit 0."""
    from pathlib import Path

    from rich.text import Text

    from outreach.campaigns import expand_paths, validate_files
    from outreach.config import get_settings

    if paths:
        files = expand_paths([Path(p) for p in paths])
    else:
        folder = Path(get_settings().campaigns_dir)
        if not folder.is_dir():
            raise UserError(f"campaign directory {folder} (OUTREACH_CAMPAIGNS_DIR) does not exist")
        files = expand_paths([folder])
    if not files:
        where = ", ".join(paths) or get_settings().campaigns_dir
        raise UserError(f"no campaign files (*.yaml) in {where}")
    _, problems = validate_files(files, settings=get_settings())
    for problem in problems:
        style = "red" if problem.severity == "error" else "yellow"
        out.print(Text(str(problem), style=style), soft_wrap=True)
    errors = sum(p.severity == "error" for p in problems)
    warnings = len(problems) - errors
    summary = f"{_count(len(files), 'file')} checked: "
    summary += f"{_count(errors, 'error')}, {_count(warnings, 'warning')}"
    style = "bold red" if errors else "yellow" if warnings else "green"
    out.print(Text(summary, style=style), soft_wrap=True)
    if errors:
        sys.exit(1)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


@campaigns.command("list")
@click.option("--json", "as_json", is_flag=True, help='Print JSON: {"campaigns": [...]}.')
def campaigns_list(as_json: bool) -> None:
    """Id, name, active dates, steps and languages of every campaign in OUTREACH_CAMPAIGNS_DIR."""
    import json

    from rich.text import Text

    from outreach.campaigns import load_campaigns
    from outreach.config import get_settings

    found = load_campaigns(settings=get_settings())
    if as_json:
        rows = [campaign.summary() for campaign in found.values()]
        click.echo(json.dumps({"campaigns": rows}, ensure_ascii=False, indent=2))
        return
    if not found:
        out.print("no campaigns", soft_wrap=True)
    for campaign in found.values():
        until = campaign.active.until.isoformat() if campaign.active.until else "open-ended"
        steps = ", ".join(
            f"{s.id} +{s.after}" + (" if no reply" if s.only_if == "no_reply" else "") for s in campaign.steps
        )
        out.print(Text.assemble((campaign.id, "bold"), "  ", campaign.name), soft_wrap=True)
        out.print(f"  active     {campaign.active.from_} to {until}", soft_wrap=True, markup=False)
        out.print(f"  steps      {steps}", soft_wrap=True, markup=False)
        out.print(f"  languages  {', '.join(campaign.languages())}", soft_wrap=True, markup=False)


PREVIEW_TABLE_ROWS = 50


@campaigns.command("preview")
@click.argument("campaign_id", metavar="ID")
@click.option(
    "--on",
    "on_text",
    metavar="DATE",
    help="Planning day, YYYY-MM-DD (default: today in OUTREACH_DEFAULT_TIMEZONE).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the shape is documented in the README).")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    metavar="N",
    help=f"Show at most N patients; the count stays the whole audience (table: {PREVIEW_TABLE_ROWS}).",
)
def campaigns_preview(campaign_id: str, on_text: str | None, as_json: bool, limit: int | None) -> None:
    """Who would get which step when, with rendered text and segment count; sends nothing."""
    import datetime as dt
    import json
    from zoneinfo import ZoneInfo

    from rich.table import Table

    from outreach.campaigns import load_campaigns
    from outreach.config import get_settings
    from outreach.plan.eligibility import count_eligible
    from outreach.plan.preview import preview
    from outreach.store.db import session_scope

    settings = get_settings()
    if on_text is None:
        on = clinic_today(settings.default_timezone)
    else:
        try:
            on = dt.date.fromisoformat(on_text)
        except ValueError:
            raise UserError(f"--on: {on_text!r} is not a date; write YYYY-MM-DD, e.g. 2026-10-01") from None
    found = load_campaigns(settings=settings)
    if campaign_id not in found:
        known = ", ".join(sorted(found)) or "none"
        raise UserError(f"no campaign {campaign_id!r} in {settings.campaigns_dir}; known ids: {known}")
    campaign = found[campaign_id]
    shown = limit if limit is not None or as_json else PREVIEW_TABLE_ROWS
    with session_scope(_engine()) as session:
        rows = preview(session, campaign, on, settings=settings, limit=shown)
        count = len(rows) if shown is None or len(rows) < shown else count_eligible(session, campaign, on)
    inactive = None
    if not campaign.is_active(on):
        until = campaign.active.until.isoformat() if campaign.active.until else "open-ended"
        inactive = (
            f"note: {campaign_id} is not active on {on} (active {campaign.active.from_} to {until}); "
            "the scheduler would send nothing"
        )
    if as_json:
        if inactive:
            err_console.print(inactive, soft_wrap=True, markup=False)
        patients = [
            {
                "mrn": r.mrn,
                "step": r.step,
                "language": r.language,
                "text": r.text,
                "segments": r.segments,
                "send_at": r.send_at.isoformat(),
            }
            for r in rows
        ]
        payload = {"campaign": campaign_id, "on": on.isoformat(), "count": count, "patients": patients}
        click.echo(json.dumps(payload, ensure_ascii=False, indent=2))
        return
    if inactive:
        out.print(inactive, style="yellow", soft_wrap=True, markup=False)
    table = Table(title=f"{campaign_id}: step {campaign.steps[0].id} on {on}", title_justify="left")
    # Only the text is cut short to fit the terminal; the other columns keep their full width.
    local = [r.send_at.astimezone(ZoneInfo(r.zone)).strftime("%a %Y-%m-%d %H:%M %Z") for r in rows]
    fixed = [max((len(r.mrn) for r in rows), default=3), 4, 3, max(map(len, local), default=23)]
    text_width = max(12, min(60, out.width - sum(fixed) - 3 * (len(fixed) + 1) - 1))
    table.add_column("mrn", no_wrap=True)
    table.add_column("lang", no_wrap=True)
    table.add_column("seg", justify="right", no_wrap=True)
    table.add_column("send at (patient-local)", no_wrap=True)
    table.add_column("text", no_wrap=True, overflow="ellipsis", max_width=text_width)
    for r, at in zip(rows, local, strict=True):
        table.add_row(r.mrn, r.language, str(r.segments), at, r.text)
    out.print(table)
    more = f" (showing {len(rows)}; --limit N or --json for more)" if len(rows) < count else ""
    out.print(f"{_count(count, 'patient')} eligible{more}", soft_wrap=True, markup=False)


# --- scheduler and sending (outreach/plan/scheduler.py, outreach/send/batch.py) -------------------------


@main.command("tick")
@click.option("--now", "now_text", metavar="ISO", help="Run the pass as of this instant (default: now).")
@click.option(
    "--no-dispatch", is_flag=True, help="Plan and mark due rows queued, but hand nothing to Celery."
)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def tick_command(now_text: str | None, no_dispatch: bool, as_json: bool) -> None:
    """One scheduler pass: enroll, plan due steps, enqueue what is due."""
    import datetime as dt
    import json

    from outreach.campaigns import load_campaigns
    from outreach.clock import naive_utc
    from outreach.config import get_settings
    from outreach.plan import scheduler

    now = None
    if now_text:
        try:
            now = naive_utc(dt.datetime.fromisoformat(now_text))
        except ValueError:
            raise UserError(
                f"--now: {now_text!r} is not an ISO date-time (e.g. 2026-11-23T14:00:00Z)"
            ) from None
    dispatch: Dispatch | None = None
    if not no_dispatch:
        from workers.tasks import dispatch
    settings = get_settings()
    result = scheduler.tick(
        _engine(), load_campaigns(settings=settings), settings=settings, now=now, dispatch=dispatch
    )
    if as_json:
        out.print_json(json.dumps(result.as_dict()))
    else:
        enrolled = sum(result.enrolled.values())
        out.print(
            f"enrolled {enrolled}, planned {result.planned}, "
            f"canceled {result.canceled}, queued {result.queued}"
        )


# --- web (outreach/apps/web/) -------------------------------------------------------------------------


@main.command("web")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="TCP port.")
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Worker processes; webhooks are database-bound, so about one per core.",
)
@click.option(
    "--access-log/--no-access-log",
    default=True,
    show_default=True,
    help="Log every request (uvicorn's access log). Refused webhooks and errors are logged either way; "
    "off saves a line per request (~0.1 ms of CPU each).",
)
def web_command(host: str, port: int, workers: int, access_log: bool) -> None:
    """Twilio webhooks (inbound replies, status callbacks) and /healthz, served by uvicorn."""
    import uvicorn

    app = web_app()  # with several workers too: a bad setting stops here, as one line
    # uvloop and httptools (uvicorn[standard]) are picked automatically: the event loop and HTTP
    # parser in C, where the pure-Python ones cost a webhook more CPU than its own work.
    options: dict[str, Any] = {"host": host, "port": port, "log_level": "info", "access_log": access_log}
    if workers == 1:
        uvicorn.run(app, **options)
    else:
        # Each worker process builds its own app (and engine) from this factory.
        uvicorn.run("outreach.apps.cli:web_app", factory=True, workers=workers, **options)


def web_app() -> Any:
    """The app `outreach web` serves: webhooks dispatching answers to the Celery workers."""
    import logging

    from outreach.apps.web.app import create_app
    from workers.app import check_broker
    from workers.tasks import dispatch

    app = create_app(dispatch=dispatch, broker_check=check_broker)
    # Runs in every worker process: the app's own warnings (refused webhooks, with the reason) and
    # errors reach the log next to uvicorn's lines; its per-request INFO lines stay off. A no-op
    # where logging is configured already.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s:  %(name)s: %(message)s")
    return app


# --- care team (listen/handoffs.py, listen/optouts.py) ---------------------------------------------------

_by_option = click.option(
    "--by", "by", required=True, metavar="NAME", help="Who is making the change (audited)."
)
_show_numbers_option = click.option(
    "--show-numbers", is_flag=True, help="Print phone numbers in full (default: masked, +1******23)."
)


def _refused(exc: UserError) -> click.exceptions.Exit:
    """A change the data refuses (unknown id, already done) exits 1; bad input stays exit 2."""
    from rich.text import Text

    err_console.print(Text.assemble(("error:", "red"), f" {exc}"), soft_wrap=True)  # names may hold [...]
    return click.exceptions.Exit(1)


def _local(value: Any) -> str:
    """A stored naive-UTC time in OUTREACH_DEFAULT_TIMEZONE, for tables people read."""
    from outreach.config import get_settings

    return clinic_time(get_settings().default_timezone, value).strftime("%Y-%m-%d %H:%M %Z")


@main.group()
def handoffs() -> None:
    """Replies that need a person on the care team."""


@handoffs.command("list")
@click.option("--open", "open_only", is_flag=True, help="Only hand-offs not closed yet.")
@click.option("--json", "as_json", is_flag=True, help='Print JSON: {"handoffs": [...]} (see the README).')
@_show_numbers_option
def handoffs_list(open_only: bool, as_json: bool, show_numbers: bool) -> None:
    """Hand-offs newest first: when, patient, campaign, the reply, status."""
    import json

    from rich.table import Table
    from rich.text import Text

    from outreach.listen.handoffs import list_handoffs
    from outreach.phones import mask
    from outreach.store.db import session_scope

    with session_scope(_engine()) as session:
        rows = list_handoffs(session, open_only=open_only)
    if as_json:
        payload = {"handoffs": [row.as_dict(show_numbers=show_numbers) for row in rows]}
        click.echo(json.dumps(payload, ensure_ascii=False, indent=2))
        return
    if not rows:
        out.print("no open hand-offs" if open_only else "no hand-offs", soft_wrap=True)
        return
    table = Table(title_justify="left")
    for name in ("id", "opened", "patient", "from", "campaign", "reason", "reply", "status"):
        table.add_column(name, no_wrap=name not in ("reply", "status"), overflow="fold")
    for row in rows:
        patient = f"{row.mrn} {row.first_name or ''}".strip() if row.mrn else "-"
        status = row.status if row.status == "open" else f"{row.status} by {row.closed_by}"
        cells = (
            str(row.id),
            _local(row.opened_at),
            patient,
            row.phone if show_numbers else mask(row.phone),
            row.campaign or "-",
            row.reason,
            row.text,
            status,
        )
        # Text() cells: a patient's reply is data, never rich markup.
        table.add_row(*map(Text, cells), style="bold" if row.status == "open" else None)
    out.print(table)
    still_open = sum(row.status == "open" for row in rows)
    out.print(f"{_count(len(rows), 'hand-off')}, {still_open} open", soft_wrap=True, markup=False)


@handoffs.command("close")
@click.argument("handoff_id", metavar="ID", type=int)
@_by_option
@click.option("--note", required=True, metavar="TEXT", help="What was done (audited).")
def handoffs_close(handoff_id: int, by: str, note: str) -> None:
    """Close an open hand-off; an unknown or already-closed ID exits 1."""
    from outreach.clock import utcnow
    from outreach.listen.handoffs import HandoffRefused, close_handoff
    from outreach.store.db import session_scope

    try:
        with session_scope(_engine()) as session:
            row = close_handoff(session, handoff_id, by=by, note=note, at=utcnow())
    except HandoffRefused as exc:
        raise _refused(exc) from None
    out.print(f"hand-off {row.id} closed by {row.closed_by}", soft_wrap=True, markup=False)


@main.group()
def optouts() -> None:
    """Numbers that must not be texted (opt-out is per number)."""


@optouts.command("list")
@click.option("--json", "as_json", is_flag=True, help='Print JSON: {"optouts": [...]} (see the README).')
@_show_numbers_option
def optouts_list(as_json: bool, show_numbers: bool) -> None:
    """Numbers opted out now, newest first: when, by what keyword or person, patients on the number."""
    import json

    from rich.table import Table
    from rich.text import Text

    from outreach.listen.optouts import list_opt_outs
    from outreach.phones import mask
    from outreach.store.db import session_scope

    with session_scope(_engine()) as session:
        rows = list_opt_outs(session)
    if as_json:
        payload = {"optouts": [row.as_dict(show_numbers=show_numbers) for row in rows]}
        click.echo(json.dumps(payload, ensure_ascii=False, indent=2))
        return
    if not rows:
        out.print("no opted-out numbers", soft_wrap=True)
        return
    table = Table(title_justify="left")
    for name in ("number", "since", "by", "who", "patients"):
        table.add_column(name, no_wrap=name != "by", overflow="fold")
    for row in rows:
        cells = (
            row.phone if show_numbers else mask(row.phone),
            _local(row.opted_out_at),
            row.by or "-",
            row.actor or "-",
            ", ".join(row.patients) or "-",
        )
        table.add_row(*map(Text, cells))
    out.print(table)
    out.print(f"{_count(len(rows), 'number')} opted out", soft_wrap=True, markup=False)


@optouts.command("add")
@click.argument("number", metavar="NUMBER")
@_by_option
@click.option("--reason", metavar="TEXT", help="How the patient asked (audited).")
def optouts_add(number: str, by: str, reason: str | None) -> None:
    """Opt a number out (any format, e.g. "(617) 555-0123"); pending messages to it are canceled."""
    from outreach.clock import utcnow
    from outreach.config import get_settings
    from outreach.listen.optouts import add_opt_out
    from outreach.phones import mask
    from outreach.store.db import session_scope

    with session_scope(_engine()) as session:
        change = add_opt_out(
            session, number, by=by, reason=reason, at=utcnow(), default_region=get_settings().default_region
        )
    canceled = f"; {_count(change.canceled, 'pending message')} canceled"
    if change.changed:
        out.print(f"{mask(change.phone)} opted out{canceled}", soft_wrap=True, markup=False)
    else:
        since = f" since {_local(change.previous.opted_out_at)}" if change.previous else ""
        out.print(
            f"{mask(change.phone)} was already opted out{since}{canceled}", soft_wrap=True, markup=False
        )


@optouts.command("remove")
@click.argument("number", metavar="NUMBER")
@_by_option
@click.option(
    "--reason",
    required=True,
    metavar="TEXT",
    help="The patient's recorded consent to resume texts: when, how, to whom (required, audited).",
)
def optouts_remove(number: str, by: str, reason: str) -> None:
    """Let texts resume to a number, with the patient's consent; a number not opted out exits 1."""
    from outreach.clock import utcnow
    from outreach.config import get_settings
    from outreach.listen.optouts import OptOutRefused, remove_opt_out
    from outreach.phones import mask
    from outreach.store.db import session_scope

    try:
        with session_scope(_engine()) as session:
            change = remove_opt_out(
                session,
                number,
                by=by,
                reason=reason,
                at=utcnow(),
                default_region=get_settings().default_region,
            )
    except OptOutRefused as exc:
        raise _refused(exc) from None
    out.print(f"{mask(change.phone)} may be texted again", soft_wrap=True, markup=False)
    if change.previous is not None and change.previous.blocked_at_provider:
        err_console.print(
            f"note: the opt-out came from {change.previous.by}; Twilio keeps refusing texts to this "
            "number until the patient texts START",
            soft_wrap=True,
            markup=False,
        )


# --- report (outreach/outcomes/funnel.py) ----------------------------------------------------------------


def _date_option(name: str, value: str | None) -> Any:
    import datetime as dt

    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise UserError(f"{name}: {value!r} is not a date; write YYYY-MM-DD, e.g. 2026-10-01") from None


@main.command("report")
@click.argument("campaign_id", metavar="[ID]", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the shape is documented in the README).")
@click.option("--since", "since_text", metavar="DATE", help="Only enrollments from DATE (YYYY-MM-DD) on.")
@click.option(
    "--on", "on_text", metavar="DATE", help="Count 'eligible' for DATE (default: today in the default zone)."
)
def report_command(
    campaign_id: str | None, as_json: bool, since_text: str | None, on_text: str | None
) -> None:
    """The funnel per campaign and step: eligible, enrolled, sent, delivered, replied, activated."""
    import json

    from outreach.apps.report_table import print_report
    from outreach.campaigns import load_campaigns
    from outreach.config import get_settings
    from outreach.outcomes.funnel import funnel

    since = _date_option("--since", since_text)
    on = _date_option("--on", on_text) or clinic_today(get_settings().default_timezone)
    try:
        files = load_campaigns(settings=get_settings())
    except UserError as exc:  # the history is still worth reporting; only 'eligible' needs the files
        err_console.print(f"note: campaign files not loaded, no eligible counts: {exc}", soft_wrap=True)
        files = {}
    result = funnel(_engine(), campaign_id=campaign_id, since=since, campaigns=files, on=on)
    if as_json:
        click.echo(json.dumps(result.as_json(), ensure_ascii=False, indent=2))
    else:
        print_report(result, out)


# --- demo (outreach/apps/demo.py) ---------------------------------------------------------------------


@main.command("demo")
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
    from pathlib import Path

    from outreach.apps.demo import DEFAULT_DAYS, FAST_DAYS, run_demo
    from outreach.apps.report_table import print_report

    keep = Path(keep_dir).resolve() if keep_dir else None
    days = days or (FAST_DAYS if fast else DEFAULT_DAYS)
    result = run_demo(keep=keep, days=days, seed=seed, console=err_console)
    print_report(result.report, out)
    out.print(result.span(), soft_wrap=True, markup=False)
    out.print(f"demo: {result.figures.line()}", soft_wrap=True, markup=False)
    if result.unsettled:
        err_console.print(
            f"warning: {result.unsettled} simulated hours did not settle in time; figures may lag",
            soft_wrap=True,
        )
    if keep is not None:
        hint = f"OUTREACH_DATABASE_URL=sqlite:///{result.database} outreach report"
        kept = f"the database is kept in {result.database}; inspect it with:\n  {hint}"
        out.print(kept, soft_wrap=True, markup=False)


# --- sandbox (outreach/sandbox/) -----------------------------------------------------------------


def _number_codes(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> dict[str, int]:
    rules: dict[str, int] = {}
    for value in values:
        number, sep, code = value.partition("=")
        if not sep or not code.strip().isdigit():
            raise click.BadParameter(f"{value!r}: expected NUMBER=CODE, for example +16175550123=21610")
        rules[number.strip()] = int(code)
    return rules


@main.command("sandbox")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=int)
@click.option("--account-sid", help="default: TWILIO_ACCOUNT_SID, else a demo value")
@click.option("--auth-token", help="default: TWILIO_AUTH_TOKEN, else a demo value")
@click.option("--latency-ms", default=0.0, show_default=True, type=float, help="added to every API request")
@click.option("--p429", default=0.0, show_default=True, type=float, help="share of creates answered 429")
@click.option("--p500", default=0.0, show_default=True, type=float, help="share of creates answered 500")
@click.option("--p-timeout", default=0.0, type=float, help="share of creates recorded but never answered")
@click.option("--seed", type=int, help="make the faults reproducible")
@click.option(
    "--reject", multiple=True, callback=_number_codes, help="NUMBER=CODE: creates to NUMBER fail (e.g. 21610)"
)
@click.option(
    "--undelivered",
    multiple=True,
    callback=_number_codes,
    help="NUMBER=CODE: messages to NUMBER end undelivered (e.g. 30003)",
)
@click.option("--inbound-url", help="where simulated replies are posted (the web app's inbound webhook)")
@click.option(
    "--replies",
    "replies_spec",
    metavar="probabilities|FILE.json",
    help="simulated patients answer: a weighted mix, or a JSON script/config (outreach/sandbox/patients.py)",
)
def sandbox(
    host: str,
    port: int,
    account_sid: str | None,
    auth_token: str | None,
    latency_ms: float,
    p429: float,
    p500: float,
    p_timeout: float,
    seed: int | None,
    reject: dict[str, int],
    undelivered: dict[str, int],
    inbound_url: str | None,
    replies_spec: str | None,
) -> None:
    """Run the local Twilio-compatible server (point OUTREACH_TWILIO_API_URL at it)."""
    from pydantic import ValidationError

    from outreach.config import get_settings
    from outreach.sandbox import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, SandboxConfig, SandboxServer
    from outreach.sandbox.state import MAGIC_REJECTS

    settings = get_settings()
    account_sid = account_sid or settings.twilio_account_sid or DEFAULT_ACCOUNT_SID
    auth_token = auth_token or settings.twilio_auth_token or DEFAULT_AUTH_TOKEN
    try:
        config = SandboxConfig(
            latency_ms=latency_ms,
            p429=p429,
            p500=p500,
            p_timeout=p_timeout,
            seed=seed,
            reject={**MAGIC_REJECTS, **reject},
            outcomes={n: {"status": "undelivered", "error_code": code} for n, code in undelivered.items()},
            inbound_url=inbound_url,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UserError(f"sandbox option {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    planner = None
    if replies_spec:
        from outreach.sandbox.patients import load_replies

        planner = load_replies(replies_spec, seed=seed)
        if not inbound_url:
            err_console.print("note: --replies needs --inbound-url to post them", soft_wrap=True)
    server = SandboxServer(account_sid, auth_token, host=host, port=port, config=config, replies=planner)
    out.print(
        f"Twilio sandbox on http://{host}:{port} (control: /_sandbox/config, /_sandbox/stats)", soft_wrap=True
    )
    out.print(f"  OUTREACH_TWILIO_API_URL=http://{host}:{port}")
    out.print(f"  TWILIO_ACCOUNT_SID={account_sid}")
    if auth_token == DEFAULT_AUTH_TOKEN:
        out.print(f"  TWILIO_AUTH_TOKEN={auth_token}  (demo value)")
    try:
        server.serve_forever()
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


if __name__ == "__main__":  # pragma: no cover
    main()

from outreach.apps.sweep_command import sweep_command  # noqa: E402  (`outreach sweep`, in its own module)

main.add_command(sweep_command)
