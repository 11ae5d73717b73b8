"""Celery tasks: thin wrappers that call the engine with this process's runtime.

`send_messages` is acknowledged late (workers/app.py): a killed worker's sends come back through
the broker after its short visibility timeout. `tick` and `sweep` are acknowledged on receipt
instead: beat sends them again every minute (every OUTREACH_SWEEP_EVERY) anyway, and a planning
pass can outlast the visibility timeout, which would otherwise hand a still-running tick to a
second worker every 40 s, each copy holding a thread and a connection while it waits for the
planning lock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from outreach.clock import naive_utc
from outreach.plan import scheduler
from outreach.runtime import get_runtime
from outreach.send import batch, sweeper
from workers.app import app


@app.task(name="outreach.send_messages")
def send_messages(ids: list[int]) -> dict[str, int]:
    rt = get_runtime()
    result = batch.send_batch(
        [int(i) for i in ids],
        engine=rt.engine,
        provider=rt.provider,
        limiter=rt.limiter,
        campaigns=rt.campaigns,
        settings=rt.settings,
        clock=rt.clock,
    )
    return {"claimed": result.claimed, "sent": result.sent, "skipped": result.skipped}


@app.task(name="outreach.tick", acks_late=False)
def tick(now: str | None = None) -> dict[str, object]:
    rt = get_runtime()
    at = naive_utc(dt.datetime.fromisoformat(now)) if now else rt.clock()
    return scheduler.tick(rt.engine, rt.campaigns, settings=rt.settings, now=at, dispatch=dispatch).as_dict()


@app.task(name="outreach.sweep", acks_late=False)
def sweep() -> dict[str, object]:
    rt = get_runtime()
    policy = sweeper.SweepPolicy.from_settings(rt.settings)
    result = sweeper.sweep(rt.engine, provider=rt.provider, dispatch=dispatch, now=rt.clock(), policy=policy)
    return result.as_dict()


def dispatch(ids: Sequence[int]) -> None:
    """Hand outbox ids to the workers: one task per chunk, carrying ids only (never a body)."""
    send_messages.delay(list(ids))
