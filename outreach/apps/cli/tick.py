"""`outreach tick`: one scheduler pass (outreach/plan/scheduler.py), handing due rows to Celery.

A broker that refuses (Redis not running, a wrong OUTREACH_BROKER_URL) loses nothing: the
scheduler commits rows as `queued` before handing their ids over, and the sweeper re-dispatches
queued rows that sat too long. So the pass still finishes, and the command ends in one line saying
what was planned and what waits for the broker, exit 2.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence

import click

from outreach.apps.cli.context import engine, settings
from outreach.apps.cli.options import INSTANT, json_option
from outreach.apps.cli.output import out
from outreach.errors import UserError
from outreach.send.dispatch import Dispatch


class HandOver:
    """Hands ids to the workers until the broker first refuses, then holds the rest: each further
    attempt would only wait through Celery's publish retries for the same answer."""

    def __init__(self, dispatch: Dispatch) -> None:
        self._dispatch = dispatch
        self.refused: Exception | None = None
        self.held = 0

    def __call__(self, ids: Sequence[int]) -> None:
        from kombu.exceptions import OperationalError

        if self.refused is None:
            try:
                self._dispatch(ids)
                return
            except (OperationalError, ConnectionError) as exc:
                self.refused = exc
        self.held += len(ids)


@click.command("tick")
@click.option("--now", type=INSTANT, metavar="ISO", help="Run the pass as of this instant (default: now).")
@click.option(
    "--no-dispatch", is_flag=True, help="Plan and mark due rows queued, but hand nothing to Celery."
)
@json_option("Print the figures as JSON.")
def tick_command(now: dt.datetime | None, no_dispatch: bool, as_json: bool) -> None:
    """One scheduler pass: enroll, plan due steps, enqueue what is due."""
    from outreach.campaigns import load_campaigns
    from outreach.plan import scheduler

    hand_over = None
    if not no_dispatch:
        from workers.tasks import dispatch

        hand_over = HandOver(dispatch)
    found = load_campaigns(settings=settings())
    result = scheduler.tick(engine(), found, settings=settings(), now=now, dispatch=hand_over)
    enrolled = sum(result.enrolled.values())
    figures = (
        f"enrolled {enrolled}, planned {result.planned}, canceled {result.canceled}, queued {result.queued}"
    )
    if hand_over is not None and hand_over.refused is not None:
        raise UserError(_broker_refused(figures, hand_over))
    if as_json:
        out.print_json(json.dumps(result.as_dict()))
    else:
        out.print(figures)


def _broker_refused(figures: str, hand_over: HandOver) -> str:
    from kombu.utils.url import maybe_sanitize_url

    reason = str(hand_over.refused).strip().splitlines()[0] if str(hand_over.refused).strip() else "refused"
    return (
        f"OUTREACH_BROKER_URL: cannot reach the broker at {maybe_sanitize_url(settings().broker_url)} "
        f"({reason}); {figures}: {hand_over.held} rows wait as queued, and the sweeper hands them to "
        "the workers once the broker is back (start it or fix the URL; `outreach tick --no-dispatch` "
        "plans without it)"
    )
