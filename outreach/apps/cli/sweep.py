"""`outreach sweep`: one sweeper pass now, with its figures (outreach/send/sweeper.py).

Celery beat runs the same pass every OUTREACH_SWEEP_EVERY; an operator runs it by hand to see
what is stuck, or right after fixing a sender's setup: a manual sweep makes every held sender's
probe due at once instead of waiting for OUTREACH_HOLD_PROBE_AFTER.

Registered on the `outreach` group in outreach/apps/cli/__init__.py, like every command.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import click

from outreach.apps.cli.context import engine, settings
from outreach.apps.cli.options import json_option
from outreach.errors import UserError
from outreach.send.dispatch import Dispatch

_FIGURES = (
    ("found", "found at the provider"),
    ("requeued", "queued again"),
    ("failed", "failed"),
    ("statuses_fetched", "statuses fetched"),
    ("statuses_moved", "statuses moved"),
    ("late_callbacks", "late callbacks applied"),
    ("redispatched", "re-dispatched"),
    ("probes", "probes"),
)


@click.command("sweep")
@click.option("--no-dispatch", is_flag=True, help="Settle and count, but hand nothing to Celery.")
@json_option("Print the figures as JSON (see the README).")
def sweep_command(no_dispatch: bool, as_json: bool) -> None:
    """One sweeper pass: settle stale and unknown rows at the provider, fetch lost delivery
    statuses, hand lost queued rows to the workers again, and probe held senders now."""
    from outreach.providers.twilio import TwilioProvider
    from outreach.send import sweeper

    current = settings()
    provider = TwilioProvider(current)
    dispatch = None if no_dispatch else _dispatch()
    policy = sweeper.SweepPolicy.from_settings(current, probe_now=True)
    result = sweeper.sweep(engine(), provider=provider, dispatch=dispatch, policy=policy)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
        return
    click.echo(", ".join(f"{label} {getattr(result, name)}" for name, label in _FIGURES))
    for hold in result.holds:
        scope = f" (to {hold['scope']} numbers)" if hold["scope"] != "all" else ""
        code = hold["error_code"] or f"HTTP {hold['http_status']}"
        click.echo(
            f"sending paused: sender {hold['sender']}{scope} since {hold['since']}: {code}: "
            f"{hold['message']}; next probe {hold['next_probe_at']}"
        )


def _dispatch() -> Dispatch:
    """The workers' dispatch, with a refused broker as one line instead of kombu's traceback."""
    from kombu.exceptions import OperationalError

    from workers.tasks import dispatch

    def handing_over(ids: Sequence[int]) -> None:
        try:
            dispatch(ids)
        except OperationalError as exc:
            raise UserError(
                f"OUTREACH_BROKER_URL: cannot hand messages to the workers ({exc}); they stay "
                "queued, and a later sweep hands them over once the broker is back"
            ) from None

    return handing_over
