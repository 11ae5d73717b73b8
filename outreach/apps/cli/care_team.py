"""`outreach handoffs` and `outreach optouts`: what the care team reads and changes
(outreach/listen/handoffs.py, outreach/listen/optouts.py).

Lists mask phone numbers; so `optouts remove` takes the number as the list shows it (masked) as
well as in full, or the patient's `--mrn`, and never needs a number nobody can see.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from outreach.apps.cli.context import engine, local_time, settings
from outreach.apps.cli.options import by_option, json_option, show_numbers_option
from outreach.apps.cli.output import count, error_line, note, out, say
from outreach.apps.tables import Column, print_rows
from outreach.errors import UserError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


def _refused(exc: UserError) -> click.exceptions.Exit:
    """A change the data refuses (unknown id, already done) exits 1; bad input stays exit 2."""
    error_line(str(exc))
    return click.exceptions.Exit(1)


@click.group()
def handoffs() -> None:
    """Replies that need a person on the care team."""


@handoffs.command("list")
@click.option("--open", "open_only", is_flag=True, help="Only hand-offs not closed yet.")
@json_option('Print JSON: {"handoffs": [...]} (see the README).')
@show_numbers_option
def handoffs_list(open_only: bool, as_json: bool, show_numbers: bool) -> None:
    """Hand-offs newest first: when, patient, campaign, the reply, status."""
    from outreach.listen.handoffs import list_handoffs
    from outreach.phones import mask
    from outreach.store.db import session_scope

    with session_scope(engine()) as session:
        rows = list_handoffs(session, open_only=open_only)
    if as_json:
        payload = {"handoffs": [row.as_dict(show_numbers=show_numbers) for row in rows]}
        click.echo(json.dumps(payload, ensure_ascii=False, indent=2))
        return
    if not rows:
        say("no open hand-offs" if open_only else "no hand-offs")
        return
    # id: what `handoffs close ID` needs, so never cut; the reply and the rest fold if they must.
    columns = [Column("id", key=True, right=True), Column("opened", key=True), Column("patient")]
    columns += [Column("from", key=True), *map(Column, ("campaign", "reason", "reply", "status"))]
    cells = [
        (
            str(row.id),
            local_time(row.opened_at),
            f"{row.mrn} {row.first_name or ''}".strip() if row.mrn else "-",
            row.phone if show_numbers else mask(row.phone),
            row.campaign or "-",
            row.reason,
            row.text,
            row.status if row.status == "open" else f"{row.status} by {row.closed_by}",
        )
        for row in rows
    ]
    print_rows(columns, cells, console=out, bold=[row.status == "open" for row in rows])
    still_open = sum(row.status == "open" for row in rows)
    say(f"{count(len(rows), 'hand-off')}, {still_open} open")


@handoffs.command("close")
@click.argument("handoff_id", metavar="ID", type=int)
@by_option
@click.option("--note", "note_text", required=True, metavar="TEXT", help="What was done (audited).")
def handoffs_close(handoff_id: int, by: str, note_text: str) -> None:
    """Close an open hand-off; an unknown or already-closed ID exits 1."""
    from outreach.clock import utcnow
    from outreach.listen.handoffs import HandoffRefused, close_handoff
    from outreach.store.db import session_scope

    try:
        with session_scope(engine()) as session:
            row = close_handoff(session, handoff_id, by=by, note=note_text, at=utcnow())
    except HandoffRefused as exc:
        raise _refused(exc) from None
    say(f"hand-off {row.id} closed by {row.closed_by}")


@click.group()
def optouts() -> None:
    """Numbers that must not be texted (opt-out is per number)."""


@optouts.command("list")
@json_option('Print JSON: {"optouts": [...]} (see the README).')
@show_numbers_option
def optouts_list(as_json: bool, show_numbers: bool) -> None:
    """Numbers opted out now, newest first: when, by what keyword or person, patients on the number."""
    from outreach.listen.optouts import list_opt_outs
    from outreach.phones import mask
    from outreach.store.db import session_scope

    with session_scope(engine()) as session:
        rows = list_opt_outs(session)
    if as_json:
        payload = {"optouts": [row.as_dict(show_numbers=show_numbers) for row in rows]}
        click.echo(json.dumps(payload, ensure_ascii=False, indent=2))
        return
    if not rows:
        say("no opted-out numbers")
        return
    columns = [Column("number", key=True), Column("since", key=True)]
    columns += [Column(name) for name in ("by", "who", "patients")]
    cells = [
        (
            row.phone if show_numbers else mask(row.phone),
            local_time(row.opted_out_at),
            row.by or "-",
            row.actor or "-",
            ", ".join(row.patients) or "-",
        )
        for row in rows
    ]
    print_rows(columns, cells, console=out)
    say(f"{count(len(rows), 'number')} opted out")


@optouts.command("add")
@click.argument("number", metavar="NUMBER")
@by_option
@click.option("--reason", metavar="TEXT", help="How the patient asked (audited).")
def optouts_add(number: str, by: str, reason: str | None) -> None:
    """Opt a number out (any format, e.g. "(617) 555-0123"); pending messages to it are canceled."""
    from outreach.clock import utcnow
    from outreach.listen.optouts import add_opt_out
    from outreach.phones import mask
    from outreach.store.db import session_scope

    region = settings().default_region
    with session_scope(engine()) as session:
        change = add_opt_out(session, number, by=by, reason=reason, at=utcnow(), default_region=region)
    canceled = f"; {count(change.canceled, 'pending message')} canceled"
    if change.changed:
        say(f"{mask(change.phone)} opted out{canceled}")
    else:
        since = f" since {local_time(change.previous.opted_out_at)}" if change.previous else ""
        say(f"{mask(change.phone)} was already opted out{since}{canceled}")


@optouts.command("remove")
@click.argument("number", metavar="[NUMBER]", required=False)
@click.option("--mrn", metavar="MRN", help="The patient whose number to release, instead of NUMBER.")
@by_option
@click.option(
    "--reason",
    required=True,
    metavar="TEXT",
    help="The patient's recorded consent to resume texts: when, how, to whom (required, audited).",
)
def optouts_remove(number: str | None, mrn: str | None, by: str, reason: str) -> None:
    """Let texts resume to a number, with the patient's consent; a number not opted out exits 1.

    NUMBER in any format, or masked as `optouts list` shows it (+1********23) when no other
    opted-out number looks the same; or --mrn MRN for the patient's number."""
    from outreach.clock import utcnow
    from outreach.listen.optouts import OptOutRefused, remove_opt_out
    from outreach.phones import mask
    from outreach.store.db import session_scope

    if (number is None) == (mrn is None):
        raise UserError("optouts remove: give exactly one of NUMBER (as listed, or in full) and --mrn MRN")
    region = settings().default_region
    try:
        with session_scope(engine()) as session:
            phone = _patient_phone(session, mrn) if mrn is not None else _listed_number(session, number or "")
            change = remove_opt_out(session, phone, by=by, reason=reason, at=utcnow(), default_region=region)
    except OptOutRefused as exc:
        raise _refused(exc) from None
    say(f"{mask(change.phone)} may be texted again")
    if change.previous is not None and change.previous.blocked_at_provider:
        note(
            f"note: the opt-out came from {change.previous.by}; Twilio keeps refusing texts to this "
            "number until the patient texts START"
        )


def _patient_phone(session: Session, mrn: str) -> str:
    """The number on file for a patient (E.164)."""
    from outreach.listen.optouts import patient_number

    phone = patient_number(session, mrn)
    if phone is None:
        raise UserError(f"--mrn: no patient with mrn {mrn!r}; check it against `outreach optouts list`")
    return phone


def _listed_number(session: Session, number: str) -> str:
    """A number as typed in full, or masked as the list shows it (one opted-out number must match)."""
    from outreach.listen.optouts import shown_as

    if "*" not in number:
        return number
    matches = shown_as(session, number)
    if len(matches) == 1:
        return matches[0].phone
    if not matches:
        raise UserError(
            f"NUMBER {number!r}: no opted-out number shows as that; copy it from `outreach optouts list`"
        )
    patients = ", ".join(mrn for row in matches for mrn in row.patients) or "none on file"
    raise UserError(
        f"NUMBER {number!r}: {len(matches)} opted-out numbers show as that; give the number in full "
        f"or --mrn (patients on them: {patients})"
    )
