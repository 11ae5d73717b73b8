"""`outreach patients import` and `outreach events import` (outreach/ingest/roster.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.text import Text

from outreach.apps.cli.context import engine, settings
from outreach.apps.cli.options import errors_option, json_option
from outreach.apps.cli.output import err_console, note, out

if TYPE_CHECKING:
    from outreach.apps.progress import FileProgress

IMPORT_ERRORS_SHOWN = 50

_JSON_HELP = 'Print {"accepted", "rejected", "inserted", "updated"} (see the README).'
_csv_path = click.Path(exists=True, dir_okay=False, readable=True)
_errors_option = errors_option("row", "line,column,value,reason")


@click.group()
def patients() -> None:
    """Patient roster."""


@click.group()
def events() -> None:
    """Clinical events (screenings, vaccines) that close care gaps."""


@patients.command("import")
@click.argument("roster", type=_csv_path)
@click.option(
    "--events", "events_path", type=_csv_path, metavar="EVENTS.csv", help="Also import these events."
)
@_errors_option
@json_option(_JSON_HELP)
def patients_import(roster: str, events_path: str | None, errors_path: str | None, as_json: bool) -> None:
    """Upsert patients by mrn; bad rows are reported with line and reason, good rows load.

    Exits 1 if any row was rejected. With --events, the events file's problems go to
    FILE with `.events` before its suffix (errors.csv -> errors.events.csv)."""
    from outreach.ingest.roster import check_events_header, errors_files, import_events, import_patients

    database = engine()
    inputs = [Path(roster)] + ([Path(events_path)] if events_path is not None else [])
    # Every report path is checked before anything is read: a bad one must not cost an import.
    targets = errors_files(Path(errors_path) if errors_path else None, *inputs, engine=database)
    if events_path is not None:
        check_events_header(Path(events_path))  # both headers are checked before anything loads
    progress = _file_progress(as_json)
    # With --errors the report is written as the import goes, and only its first rows stay in memory.
    loaded = import_patients(
        database, Path(roster), settings=settings(), progress=progress, errors_to=targets[0]
    )
    results = [(Path(roster), loaded, targets[0])]
    if events_path is not None:
        result = import_events(
            database, Path(events_path), settings=settings(), progress=progress, errors_to=targets[1]
        )
        results.append((Path(events_path), result, targets[1]))
    _finish_import(results, as_json)


@events.command("import")
@click.argument("events_file", metavar="EVENTS.csv", type=_csv_path)
@_errors_option
@json_option(_JSON_HELP)
def events_import(events_file: str, errors_path: str | None, as_json: bool) -> None:
    """Add clinical events by mrn; events already known are left alone. Exits 1 if any row was rejected."""
    from outreach.ingest.roster import errors_files, import_events

    database = engine()
    (target,) = errors_files(Path(errors_path) if errors_path else None, Path(events_file), engine=database)
    progress = _file_progress(as_json)
    result = import_events(
        database, Path(events_file), settings=settings(), progress=progress, errors_to=target
    )
    _finish_import([(Path(events_file), result, target)], as_json)


def _file_progress(as_json: bool) -> FileProgress | None:
    """A bar on stderr while a large file loads (on a terminal only); none under --json."""
    from outreach.apps.progress import FileProgress

    return None if as_json else FileProgress(err_console)


def _finish_import(results: list[tuple[Path, Any, Path | None]], as_json: bool) -> None:
    """Rejected rows (capped) and notes on stderr; a summary or the --json object on stdout. The
    --errors report is written by the import itself."""
    for path, result, errors_path in results:
        prefix = f"{path.name}: " if len(results) > 1 else ""
        for remark in result.notes:
            note(f"note: {remark}")
        for warning in result.warnings:
            note(f"{prefix}warning: {warning}")
        for error in result.errors[:IMPORT_ERRORS_SHOWN]:
            note(f"{prefix}{error.describe()}")
        hidden = result.problems - IMPORT_ERRORS_SHOWN
        if hidden > 0:
            note(f"{prefix}... and {hidden} more ({f'see {errors_path}' if errors_path else 'see --errors'})")
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
        raise click.exceptions.Exit(1)
