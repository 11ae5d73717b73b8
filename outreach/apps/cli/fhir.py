"""`outreach fhir import` and `outreach fhir export` (outreach/ingest/fhir/)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.text import Text

from outreach.apps.cli.context import engine, settings
from outreach.apps.cli.options import json_option
from outreach.apps.cli.output import err_console, note, out

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from outreach.ingest.fhir.report import FhirResult

ERRORS_SHOWN = 50
_JSON_HELP = 'Print {"accepted", "rejected", "inserted", "updated", "events", "resources"} (see the README).'
_errors_option = click.option(
    "--errors",
    "errors_path",
    type=click.Path(dir_okay=False, writable=True),
    metavar="FILE",
    help="Write every rejected resource to FILE as CSV (file,line,entry,field,value,reason).",
)


@click.group()
def fhir() -> None:
    """FHIR R4 in: Bundles, Bulk Data NDJSON, and the Bulk Data $export client."""


@fhir.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True), metavar="PATH...")
@_errors_option
@json_option(_JSON_HELP)
def fhir_import(paths: tuple[str, ...], errors_path: str | None, as_json: bool) -> None:
    """Patients and events from FHIR Bundles (.json), NDJSON (.ndjson, .ndjson.gz) or folders.

    Exits 1 if any resource was rejected (each is listed with file, line or entry, and reason)."""
    database = engine()
    target = _errors_target(errors_path, [Path(p) for p in paths], database)
    _run_import(database, [Path(p) for p in paths], target, as_json)


def _errors_target(errors_path: str | None, paths: list[Path], database: Engine) -> Path | None:
    """The --errors file, checked against every input and the database before anything is read."""
    from outreach.ingest.fhir.files import fhir_files
    from outreach.ingest.roster import errors_files

    if errors_path is None:
        return None
    for source in fhir_files(paths):
        errors_files(Path(errors_path), source, engine=database)
    return Path(errors_path)


def _run_import(database: Engine, paths: list[Path], target: Path | None, as_json: bool) -> None:
    from outreach.apps.progress import FileProgress
    from outreach.ingest.fhir.importer import import_fhir

    progress = None if as_json else FileProgress(err_console)
    result = import_fhir(database, paths, settings=settings(), progress=progress)
    _finish(result, target, as_json)


def _finish(result: FhirResult, target: Path | None, as_json: bool) -> None:
    """Problems (capped) and warnings on stderr; a summary or the --json object on stdout."""
    from outreach.ingest.fhir.report import write_fhir_errors_csv

    for warning in result.warnings():
        note(f"warning: {warning}")
    for error in result.errors[:ERRORS_SHOWN]:
        note(error.describe())
    hidden = len(result.errors) - ERRORS_SHOWN
    if hidden > 0:
        note(f"... and {hidden} more ({f'see {target}' if target else 'see --errors'})")
    if target is not None:
        write_fhir_errors_csv(target, result.errors)
    if as_json:
        click.echo(json.dumps(result.summary()))
    else:
        p = result.patients
        lines = [
            f"patients: {p.accepted} accepted ({p.inserted} inserted, {p.updated} updated), "
            f"{p.rejected} rejected",
            f"events: {result.events_accepted} accepted ({result.events_inserted} new), "
            f"{result.events_rejected} rejected; {result.skipped_status} not completed/final, "
            f"{result.skipped_unmapped} with codes not in the code map",
        ]
        for line in lines:
            out.print(Text(line, style="yellow" if result.rejected else "green"), soft_wrap=True)
    if result.rejected:
        raise click.exceptions.Exit(1)
