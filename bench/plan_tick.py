"""The `tick` part of bench/plan.py: a scheduler pass over an imported roster, in a process of its own.

    .venv/bin/python bench/plan_tick.py URL     # what bench/plan.py runs; prints one JSON object

Two passes of the real `outreach.plan.scheduler.tick` at the data's reference instant (Monday
2026-11-23 14:00 UTC; 09:00 in New York): the first enrolls everyone the four shipped campaigns
take and plans every first step; the second finds nothing new. Each: wall time, this process's
CPU, and the difference (the database's time, as the issue measured it), plus the pass's figures.
The process's peak RSS covers both passes (its own process, so the import before it is not in it).

While the first pass runs, a probe thread commits a row that is due every `PROBE_EVERY_S` and a
consumer thread, given the ids the pass hands over, claims each probe row with the senders' own
claim (`outreach.send.claim`): "due to claimed" is the time between the two commits. The rows the
pass itself makes due are handed to no one (as `tick --no-dispatch` would, they stay `queued`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import queue
import resource
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import Engine, text  # noqa: E402

from outreach.campaigns import load_campaigns  # noqa: E402
from outreach.clock import utcnow  # noqa: E402
from outreach.config import get_settings  # noqa: E402
from outreach.plan import enqueue, scheduler  # noqa: E402
from outreach.send.claim import claim  # noqa: E402
from outreach.store import db as dbmod  # noqa: E402
from outreach.store.models import Message, MessageKind, MessageStatus  # noqa: E402

NOW = dt.datetime(2026, 11, 23, 14, 0)
PROBE_EVERY_S = 0.5


class Probe:
    """Rows that become due during the pass, and when a sender's claim took each."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.due_at: dict[int, float] = {}
        self.claimed_at: dict[int, float] = {}
        self.handed: queue.Queue[list[int] | None] = queue.Queue()
        self.stop = threading.Event()
        self.started = time.perf_counter()
        self.enqueue_runs: list[tuple[float, float, int]] = []
        self.claims: list[float] = []

    def dispatch(self, ids: Sequence[int]) -> None:
        probes = [i for i in ids if i in self.due_at]
        if probes:
            self.handed.put(probes)

    def make_due(self) -> None:
        number = 0
        while not self.stop.wait(PROBE_EVERY_S):
            number += 1
            with dbmod.session_scope(self.engine) as session:
                row = Message(
                    step_id=f"probe-{number}",
                    kind=MessageKind.answer,
                    phone="+12025550100",
                    body="probe",
                    status=MessageStatus.planned,
                    send_at=NOW,
                )
                session.add(row)
                session.flush()
                row_id = row.id
            self.due_at[row_id] = time.perf_counter()

    def consume(self) -> None:
        while (ids := self.handed.get()) is not None:
            started = time.perf_counter()
            with dbmod.session_scope(self.engine) as session:
                claimed = claim(session, ids, utcnow())
            self.claims.append(time.perf_counter() - started)
            for c in claimed:
                self.claimed_at[c.id] = time.perf_counter()

    def timed_enqueue(self) -> None:
        """Time every `enqueue_due` of the pass (the planner's after-chunk calls and the thread's
        every-second ones): how long each took and how many rows it moved."""
        real = enqueue.enqueue_due
        runs = self.enqueue_runs

        def timed(*args: Any, **kwargs: Any) -> list[int]:
            started = time.perf_counter()
            ids = real(*args, **kwargs)
            runs.append((started - self.started, time.perf_counter() - started, len(ids)))
            return ids

        enqueue.enqueue_due = timed

    def enqueue_figures(self) -> dict[str, Any]:
        durations = sorted(run[1] for run in self.enqueue_runs)
        slowest = sorted(self.enqueue_runs, key=lambda run: -run[1])[:5]
        return {
            "runs": len(durations),
            "median_s": round(durations[len(durations) // 2], 3) if durations else None,
            "max_s": round(durations[-1], 2) if durations else None,
            "rows": sum(run[2] for run in self.enqueue_runs),
            "slowest_at_s_took_s_rows": [[round(a, 1), round(b, 2), n] for a, b, n in slowest],
        }

    def latencies(self) -> list[float]:
        return sorted(self.claimed_at[i] - self.due_at[i] for i in self.claimed_at)


def timed_tick(engine: Engine, campaigns: Any, dispatch: Any) -> dict[str, Any]:
    settings = get_settings()
    cpu, wall = time.process_time(), time.perf_counter()
    result = scheduler.tick(engine, campaigns, settings=settings, now=NOW, dispatch=dispatch)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "wall_seconds": round(wall, 2),
        "python_cpu_seconds": round(cpu, 2),
        "database_seconds": round(wall - cpu, 2),
        "result": result.as_dict(),
    }


def main(url: str) -> dict[str, Any]:
    os.environ.setdefault("OUTREACH_CLINIC_NAME", "Riverside Health")
    os.environ.setdefault("OUTREACH_CLINIC_PHONE", "(617) 555-0100")
    engine = dbmod.engine_for(url)
    campaigns = load_campaigns(ROOT / "campaigns", settings=get_settings())
    probe = Probe(engine)
    probe.timed_enqueue()
    threads = [threading.Thread(target=probe.make_due), threading.Thread(target=probe.consume)]
    for thread in threads:
        thread.start()
    try:
        first = timed_tick(engine, campaigns, probe.dispatch)
    finally:
        probe.stop.set()
        probe.handed.put(None)
        for thread in threads:
            thread.join()
    first_enqueues = probe.enqueue_figures()
    second = timed_tick(engine, campaigns, None)
    with engine.connect() as conn:
        rows = {
            table: conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in ("enrollments", "messages")
        }
    late = probe.latencies()
    return {
        "first_tick": first,
        "second_tick": second,
        "rows": rows,
        "due_to_claimed_seconds": {
            "probes": len(probe.due_at),
            "claimed": len(late),
            "median": round(late[len(late) // 2], 2) if late else None,
            "p90": round(late[len(late) * 9 // 10], 2) if late else None,
            "max": round(late[-1], 2) if late else None,
            "over_5_s": sum(1 for seconds in late if seconds > 5),
            "slowest_claim_s": round(max(probe.claims), 2) if probe.claims else None,
        },
        "first_tick_enqueue_runs": first_enqueues,
        "tick_process_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
