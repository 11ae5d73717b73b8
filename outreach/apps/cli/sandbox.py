"""`outreach sandbox`: the local Twilio-compatible server (outreach/sandbox/)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from outreach.apps.cli.context import settings
from outreach.apps.cli.options import port_option
from outreach.apps.cli.output import note, out
from outreach.errors import UserError

if TYPE_CHECKING:
    from outreach.sandbox import SandboxConfig


def _number_codes(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> dict[str, int]:
    rules: dict[str, int] = {}
    for value in values:
        number, sep, code = value.partition("=")
        if not sep or not code.strip().isdigit():
            raise click.BadParameter(f"{value!r}: expected NUMBER=CODE, for example +16175550123=21610")
        rules[number.strip()] = int(code)
    return rules


@click.command("sandbox")
@click.option("--host", default="127.0.0.1", show_default=True)
@port_option(8765)
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
    replies_spec: str | None,
    **faults: Any,
) -> None:
    """Run the local Twilio-compatible server (point OUTREACH_TWILIO_API_URL at it)."""
    from outreach.sandbox import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, SandboxServer

    account_sid = account_sid or settings().twilio_account_sid or DEFAULT_ACCOUNT_SID
    auth_token = auth_token or settings().twilio_auth_token or DEFAULT_AUTH_TOKEN
    config = _config(**faults)
    planner = None
    if replies_spec:
        from outreach.sandbox.patients import load_replies

        planner = load_replies(replies_spec, seed=faults["seed"])
        if not faults["inbound_url"]:
            note("note: --replies needs --inbound-url to post them")
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


def _config(
    *,
    latency_ms: float,
    p429: float,
    p500: float,
    p_timeout: float,
    seed: int | None,
    reject: dict[str, int],
    undelivered: dict[str, int],
    inbound_url: str | None,
) -> SandboxConfig:
    """The fault settings, checked by the sandbox's own model (a share above 1 is one line)."""
    from pydantic import ValidationError

    from outreach.sandbox import SandboxConfig
    from outreach.sandbox.state import MAGIC_REJECTS

    try:
        return SandboxConfig(
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
