"""Celery tasks: thin wrappers that call the engine with this process's runtime.

`send_messages` is acknowledged late (workers/app.py): a killed worker's sends come back through
the broker after its short visibility timeout. `tick`, `plan_shard`, `enqueue`, `sweep` and
`refresh_report` are acknowledged on receipt instead: beat sends them again every minute (every few
seconds, every OUTREACH_SWEEP_EVERY, every OUTREACH_REPORT_REFRESH_EVERY) anyway, and a shard's
planning can outlast the visibility timeout, which would otherwise hand a still-running shard to a
second worker every 40 s (harmless, the second finds the shard's buckets taken, but a thread and a
connection spent on nothing).

A scheduler pass on Celery (DESIGN.md §10): `tick` does the short part once (checks, campaigns,
cancels), enqueues what is due, and fans the planning out as one `plan_shard` task per bucket of
phone numbers, so every worker on every machine plans; `enqueue` runs every few seconds on its own,
so what comes due is handed over while shards are still planning.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from outreach.clock import clinic_today, naive_utc
from outreach.outcomes import snapshots
from outreach.plan import scheduler, shards
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
    result = scheduler.prepare(rt.engine, rt.campaigns, settings=rt.settings, now=at)
    result.queued += len(scheduler.enqueue_due(rt.engine, at, dispatch=dispatch))
    for shard in shards.bucket_shards():
        plan_shard.delay(list(shard.buckets), at.isoformat())
    return result.as_dict()


@app.task(name="outreach.plan_shard", acks_late=False)
def plan_shard(buckets: list[int], now: str) -> dict[str, object]:
    rt = get_runtime()
    at = naive_utc(dt.datetime.fromisoformat(now))
    shard = shards.Shard(tuple(int(b) for b in buckets))
    return scheduler.plan_shard(rt.engine, rt.campaigns, settings=rt.settings, now=at, shard=shard).as_dict()


@app.task(name="outreach.enqueue", acks_late=False)
def enqueue() -> int:
    rt = get_runtime()
    return len(scheduler.enqueue_due(rt.engine, rt.clock(), dispatch=dispatch))


@app.task(name="outreach.sweep", acks_late=False)
def sweep() -> dict[str, object]:
    rt = get_runtime()
    policy = sweeper.SweepPolicy.from_settings(rt.settings)
    result = sweeper.sweep(rt.engine, provider=rt.provider, dispatch=dispatch, now=rt.clock(), policy=policy)
    return result.as_dict()


@app.task(name="outreach.refresh_report", acks_late=False)
def refresh_report() -> dict[str, object]:
    """Recompute the saved report the reports page reads; skipped while another refresh runs."""
    rt = get_runtime()
    now = rt.clock()
    on = clinic_today(rt.settings.default_timezone, now)
    saved = snapshots.refresh(rt.engine, rt.campaigns, on, now=now)
    return {"refreshed": saved is not None, "seconds": saved.seconds if saved else None}


def dispatch(ids: Sequence[int]) -> None:
    """Hand outbox ids to the workers: one task per chunk, carrying ids only (never a body)."""
    send_messages.delay(list(ids))
