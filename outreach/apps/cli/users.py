"""`outreach users add|list|disable|reset-mfa`: care-team accounts (DESIGN.md §3, §12), the rules
in outreach/team/accounts.py. Every change is audited as `cli:<operating-system user>`, the person
at the terminal, since the CLI has no sign-in of its own.

`users add --json` prints `{"email", "role", "totp_uri"}`: the TOTP secret is shown this once (and
as a QR code at the account's first sign-in, until a code confirms it).
"""

from __future__ import annotations

import getpass
import json
import sys

import click

from outreach.apps.cli.context import engine, local_time
from outreach.apps.cli.options import json_option
from outreach.apps.cli.output import out, say
from outreach.apps.tables import Column, print_rows

ROLES = ("admin", "coordinator", "viewer")


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in a bare container
        return "cli"


@click.group()
def users() -> None:
    """Care-team accounts for the workspace (outreach web, /app/)."""


@users.command("add")
@click.argument("email")
@click.option("--role", required=True, type=click.Choice(ROLES), help="admin, coordinator or viewer.")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@json_option('Print {"email", "role", "totp_uri"} (the TOTP secret is shown once).')
def users_add(email: str, role: str, password_stdin: bool, as_json: bool) -> None:
    """Add an account; admins and coordinators enrol an authenticator at their first sign-in."""
    from outreach.clock import utcnow
    from outreach.store.db import session_scope
    from outreach.team.accounts import add_user, totp_uri

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
    with session_scope(engine()) as session:
        user = add_user(session, email, role, password, by=_actor(), at=utcnow())
        payload = {"email": user.email, "role": user.role, "totp_uri": totp_uri(user)}
    if as_json:
        click.echo(json.dumps(payload, indent=2))
        return
    say(f"{payload['email']} added as {payload['role']}")
    say(f"TOTP (shown once; the first sign-in also shows it as a QR code): {payload['totp_uri']}")


@users.command("list")
@json_option('Print {"users": [{"email", "role", "mfa", "disabled", "locked_until", "last_login_at"}]}.')
def users_list(as_json: bool) -> None:
    """Accounts: role, second factor enrolled, disabled, locked, last sign-in."""
    from outreach.clock import utcnow
    from outreach.listen.handoffs import iso_utc
    from outreach.store.db import session_scope
    from outreach.team.accounts import list_users

    now = utcnow()
    with session_scope(engine()) as session:
        found = list_users(session)
        session.expunge_all()
    locked = {u.email: u.locked_until if u.locked_until and u.locked_until > now else None for u in found}
    if as_json:
        rows = [
            {
                "email": u.email,
                "role": u.role,
                "mfa": u.totp_confirmed_at is not None,
                "disabled": u.disabled,
                "locked_until": iso_utc(locked[u.email]),
                "last_login_at": iso_utc(u.last_login_at),
            }
            for u in found
        ]
        click.echo(json.dumps({"users": rows}, indent=2))
        return
    if not found:
        say("no accounts; add one with `outreach users add EMAIL --role admin`")
        return
    columns = [Column("email", key=True), Column("role", key=True), Column("mfa"), Column("state")]
    columns.append(Column("last sign-in"))
    cells = [
        (
            u.email,
            u.role,
            "enrolled" if u.totp_confirmed_at else "not yet",
            "disabled" if u.disabled else ("locked" if locked[u.email] else "active"),
            local_time(u.last_login_at) if u.last_login_at else "-",
        )
        for u in found
    ]
    print_rows(columns, cells, console=out)


@users.command("disable")
@click.argument("email")
def users_disable(email: str) -> None:
    """Disable an account; its sessions end at once."""
    from outreach.clock import utcnow
    from outreach.store.db import session_scope
    from outreach.team.accounts import disable_user

    with session_scope(engine()) as session:
        user = disable_user(session, email, by=_actor(), at=utcnow())
        say(f"{user.email} disabled; its sessions are ended")


@users.command("reset-mfa")
@click.argument("email")
def users_reset_mfa(email: str) -> None:
    """A new authenticator secret (a lost phone): enrolled with a QR code at the next sign-in."""
    from outreach.clock import utcnow
    from outreach.store.db import session_scope
    from outreach.team.accounts import reset_mfa

    with session_scope(engine()) as session:
        user = reset_mfa(session, email, by=_actor(), at=utcnow())
        say(f"{user.email}: second factor reset; the next sign-in enrols a new authenticator")
