"""Open-loop load: requests arrive at a fixed rate whether or not the server keeps up.

The HTTP benchmarks' default load is closed-loop: N clients each wait for an answer before asking
again, so they find the server's ceiling, and the latency they report is mostly time spent
queueing at that ceiling (Little's law: N / throughput). A target such as "500 requests/s at
p99 <= 100 ms" asks something else: how long a request takes when 500 arrive each second. That
needs arrivals on a schedule (`--rate`), and latency measured from the moment a request was due,
not from when a busy client got round to sending it; otherwise a stalled server slows the load
generator down and hides its own stall ("coordinated omission").

Imported by the scripts as a sibling module, like `support`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any


@dataclass
class Schedule:
    """What the generator managed: due jobs it started on time, late, or had to skip."""

    started: int = 0
    late_ms_max: float = 0.0  # the generator's own lag behind the schedule (its CPU is shared)
    skipped: int = 0  # jobs not started because `max_in_flight` were still unanswered


async def at_rate(
    rate: float,
    seconds: float,
    job: Callable[[int, float], Coroutine[Any, Any, None]],
    *,
    max_in_flight: int = 512,
) -> tuple[Schedule, float]:
    """Start `job(i, due)` at `due = t0 + i / rate` (perf_counter seconds) for `seconds`, each as
    its own task, then wait for all of them; returns the schedule's record and the elapsed time.

    A job measures its latency from `due`. When `max_in_flight` jobs are unanswered the server
    has fallen behind for good: further jobs are counted as skipped, not queued, so the run ends
    on time and says so."""
    schedule = Schedule()
    tasks: set[asyncio.Task[None]] = set()
    start = time.perf_counter()
    total = int(rate * seconds)
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            schedule.late_ms_max = max(schedule.late_ms_max, -delay * 1000)
        if len(tasks) >= max_in_flight:
            schedule.skipped += 1
            continue
        task = asyncio.create_task(job(i, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        schedule.started += 1
    if tasks:
        await asyncio.gather(*tasks)
    return schedule, time.perf_counter() - start
