"""`outreach fhir import` and `outreach fhir export` (outreach/ingest/fhir/)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.text import Text

from outreach.apps.cli.context import engine, settings
from outreach.apps.cli.options import errors_option, json_option
from outreach.apps.cli.output import err_console, note, out

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from outreach.ingest.fhir.report import FhirResult

ERRORS_SHOWN = 50
_JSON_HELP = 'Print {"accepted", "rejected", "inserted", "updated", "events", "resources"} (see the README).'
_errors_option = errors_option("resource", "file,line,entry,field,value,reason")


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


@fhir.command("export")
@click.option("--base-url", required=True, metavar="URL", help="The FHIR server's base URL.")
@click.option("--group", metavar="ID", help="Export this Group's patients (default: all patients).")
@click.option("--since", metavar="ISO", help="Only resources changed since this instant (_since).")
@click.option("--client-id", metavar="ID", help="SMART Backend Services client id (with --key).")
@click.option(
    "--key", "key_path", type=click.Path(dir_okay=False), metavar="PEM", help="Private key (RSA or EC P-384)."
)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), metavar="DIR", help="Where the files go.")
@_errors_option
@json_option(_JSON_HELP)
def fhir_export(
    base_url: str,
    group: str | None,
    since: str | None,
    client_id: str | None,
    key_path: str | None,
    out_dir: str | None,
    errors_path: str | None,
    as_json: bool,
) -> None:
    """FHIR Bulk Data $export (kick-off, poll, download), then import what it wrote.

    With --client-id and --key, authenticates with SMART Backend Services. Exits 1 if any
    resource was rejected, 2 if the export itself failed (with the server's reason)."""
    from outreach.ingest.roster import check_errors_path

    _check_since(since)
    if (client_id is None) != (key_path is None):
        raise click.UsageError("--client-id and --key go together; give both, or neither for an open server")
    database = engine()
    if errors_path is not None:
        check_errors_path(Path(errors_path))
    out = Path(out_dir) if out_dir else Path(f"fhir-export-{_stamp()}")
    files = _export(base_url, group, since, client_id, key_path, out, as_json)
    target = _errors_target(errors_path, files, database) if files else None
    if not files:
        note(f"the export returned no files ({out})")
        return
    _run_import(database, files, target, as_json)


def _export(
    base_url: str,
    group: str | None,
    since: str | None,
    client_id: str | None,
    key_path: str | None,
    out: Path,
    as_json: bool,
) -> list[Path]:
    import requests

    from outreach.ingest.fhir.auth import SmartAuth
    from outreach.ingest.fhir.bulk import BulkClient

    session = requests.Session()
    auth = SmartAuth(base_url, client_id, Path(key_path), session) if client_id and key_path else None
    client = BulkClient(base_url, auth=auth, session=session, on_progress=None if as_json else _show_progress)
    result = client.export(out, group=group, since=since)
    for remark in result.notes:
        note(f"note: {remark}")
    return result.files


def _show_progress(text: str) -> None:
    note(f"export: {text}")


def _check_since(since: str | None) -> None:
    import datetime as dt

    if since is None:
        return
    try:
        dt.datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            "not an ISO instant; write it like 2026-01-01T00:00:00Z", param_hint="--since"
        ) from None


def _stamp() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
