"""Planning benchmark: import a large synthetic roster through the real import path, then time
each shipped campaign's eligibility query over it, and (`--tick`) two scheduler passes.

    .venv/bin/python bench/plan.py                    # 1,000,000 patients on PostgreSQL
    .venv/bin/python bench/plan.py --n 100000         # smaller
    .venv/bin/python bench/plan.py --sqlite           # 100,000 patients in a temporary SQLite file
    .venv/bin/python bench/plan.py --n 300000 --tick  # and the `tick` part (bench/plan_tick.py)
    .venv/bin/python bench/plan.py --n 1000000 --keep # import into a schema that is kept (named on
                                                      # stderr): drop it yourself when done
    .venv/bin/python bench/plan.py --tick-only --schema scale_1m   # the tick part on a roster
                                                      # already imported in that schema (its
                                                      # enrollments and outbox are emptied first)

PostgreSQL runs happen in a fresh schema that is dropped afterwards, so the benchmark can point at
a shared server. Prints one JSON object with every figure and, last, a one-line summary. Targets
are reported, not asserted (see bench/README.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # samples/ is a folder of the checkout, not of the installed package

from support import postgres_schema  # noqa: E402

from outreach.campaigns import CampaignFile, load_campaigns  # noqa: E402
from outreach.config import get_settings  # noqa: E402
from outreach.ingest.roster import import_events, import_patients  # noqa: E402
from outreach.plan.eligibility import eligible_patients  # noqa: E402
from outreach.store import db as dbmod  # noqa: E402
from samples.generate import REFERENCE_DATE, write_events, write_roster  # noqa: E402

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TARGET_IMPORT_ROWS_PER_S = 20_000
TARGET_PATIENTS_PER_S = 500_000
TARGET_RSS_MB = 300


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, help="patients (default 1,000,000 on PostgreSQL, 100,000 on SQLite)")
    parser.add_argument(
        "--database-url", default=DEFAULT_PG, help="PostgreSQL server to use (a schema is made)"
    )
    parser.add_argument("--sqlite", action="store_true", help="use a temporary SQLite file instead")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--on", type=dt.date.fromisoformat, default=REFERENCE_DATE, help="planning day (default: the data's)"
    )
    parser.add_argument("--tick", action="store_true", help="also time two scheduler passes (PostgreSQL)")
    parser.add_argument("--tick-only", action="store_true", help="only the tick part, on --schema")
    parser.add_argument("--schema", help="with --tick-only: a schema holding an imported roster")
    parser.add_argument(
        "--keep", action="store_true", help="keep the PostgreSQL schema for --tick-only (its name is printed)"
    )
    args = parser.parse_args(argv)
    if args.tick_only:
        figures = tick_only(args.database_url, args.schema)
        print(json.dumps(figures, indent=2))
        print(tick_summary(figures))
        return 0
    n = args.n or (100_000 if args.sqlite else 1_000_000)
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as tmp:
        folder = Path(tmp)
        with _sqlite(folder) if args.sqlite else postgres_schema(args.database_url, keep=args.keep) as found:
            engine, url = found if isinstance(found, tuple) else (found, "")
            if url and args.keep:
                print(f"keeping schema {url.rsplit('%3D', 1)[-1]} (drop it when done)", file=sys.stderr)
            figures = run(engine, folder, n=n, seed=args.seed, on=args.on)
            if args.tick and url:
                figures["tick"] = tick_part(url)
    print(json.dumps(figures, indent=2))
    print(summary(figures))
    if "tick" in figures:
        print(tick_summary(figures["tick"] | {"patients": n}))
    return 0


TARGET_FIRST_TICK_S_PER_MILLION = 120
TARGET_SECOND_TICK_S = 5
TARGET_DUE_TO_CLAIMED_S = 5


def tick_part(url: str) -> dict[str, Any]:
    """bench/plan_tick.py in a process of its own, so its peak RSS is the pass's alone."""
    import subprocess

    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "plan_tick.py"), url],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    figures["load_average"] = os.getloadavg()
    return figures


def tick_only(base: str, schema: str | None) -> dict[str, Any]:
    if not schema:
        raise SystemExit("--tick-only needs --schema")
    url = f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    engine = dbmod.engine_for(url)
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE messages, enrollments, campaigns RESTART IDENTITY CASCADE"))
        patients = conn.execute(text("SELECT count(*) FROM patients")).scalar_one()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE enrollments"))
        conn.execute(text("VACUUM ANALYZE messages"))
    return tick_part(url) | {"patients": patients}


def tick_summary(figures: dict[str, Any]) -> str:
    first, second = figures["first_tick"], figures["second_tick"]
    n = figures["patients"]
    first_target = TARGET_FIRST_TICK_S_PER_MILLION * n / 1_000_000
    due = figures["due_to_claimed_seconds"]
    rss = figures["tick_process_peak_rss_mb"]

    def mark(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    return (
        f"tick, {n:,} patients: first {first['wall_seconds']} s (database {first['database_seconds']} s, "
        f"{first['result']['planned']:,} planned) [{mark(first['wall_seconds'] <= first_target)} "
        f"<= {first_target:.0f} s]; second {second['wall_seconds']} s "
        f"[{mark(second['wall_seconds'] <= TARGET_SECOND_TICK_S)}]; due to claimed max {due['max']} s "
        f"[{mark(due['max'] is not None and due['max'] <= TARGET_DUE_TO_CLAIMED_S)}]; peak RSS "
        f"{rss} MB [{mark(rss <= TARGET_RSS_MB)}]; "
        f"load {figures['load_average'][0]:.1f}"
    )


@contextmanager
def _sqlite(folder: Path) -> Iterator[Engine]:
    engine = dbmod.engine_for(f"sqlite:///{folder / 'bench.db'}")
    try:
        yield engine
    finally:
        engine.dispose()


def run(engine: Engine, folder: Path, *, n: int, seed: int, on: dt.date) -> dict[str, Any]:
    dbmod.upgrade(engine)
    roster, events = folder / "roster.csv", folder / "events.csv"
    started = time.perf_counter()
    write_roster(roster, n, seed)
    write_events(events, n, seed)
    generated = time.perf_counter() - started

    settings = get_settings()
    cpu_before = os.times()
    patients_result, patients_s = _timed(
        lambda: import_patients(engine, roster, settings=settings, today=REFERENCE_DATE)
    )
    cpu_after = os.times()
    # Whose CPU the import used: this process (reading, loading) and its helper processes
    # (checking rows); the database server's is not visible from here. The helpers' memory is
    # theirs, not part of this process's peak RSS, so it is reported next to it.
    own_cpu = cpu_after.user - cpu_before.user + cpu_after.system - cpu_before.system
    helper_cpu = sum(cpu_after[i] - cpu_before[i] for i in (2, 3))  # children_user, children_system
    patients_cpu = {
        "importing_process_cpu_seconds": round(own_cpu, 2),
        "helper_processes_cpu_seconds": round(helper_cpu, 2),
        "peak_rss_mb_so_far": _peak_rss_mb(),
        "helper_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
    }
    events_result, events_s = _timed(
        lambda: import_events(engine, events, settings=settings, today=REFERENCE_DATE)
    )
    # A bulk load leaves the planner without statistics until autovacuum gets to it; production
    # gets them within a minute, the benchmark asks for them at once.
    _, analyze_s = _timed(lambda: _analyze(engine))

    campaigns = load_campaigns(ROOT / "campaigns", settings=settings)
    eligibility = {cid: _eligibility(engine, campaigns[cid], on, n) for cid in sorted(campaigns)}
    # The target is on the query (count); streaming ids adds a transfer that grows with the audience.
    slowest = min(min(e["count_patients_per_s"]) for e in eligibility.values())
    slowest_ids = min(min(e["ids_patients_per_s"]) for e in eligibility.values())
    return {
        "database": engine.dialect.name,
        "patients": n,
        "events": events_result.accepted,
        "planning_day": on.isoformat(),
        "generate_seconds": round(generated, 2),
        "import": {
            "patients": _rate(patients_result.accepted, patients_s, patients_result.rejected) | patients_cpu,
            "events": _rate(events_result.accepted, events_s, events_result.rejected),
            "analyze_seconds": round(analyze_s, 2),
        },
        "eligibility": eligibility,
        "slowest_eligibility_patients_per_s": slowest,
        "slowest_ids_patients_per_s": slowest_ids,
        "peak_rss_mb": _peak_rss_mb(),
        "targets": {
            "import_rows_per_s": TARGET_IMPORT_ROWS_PER_S,
            "eligibility_patients_per_s": TARGET_PATIENTS_PER_S,
            "peak_rss_mb": TARGET_RSS_MB,
        },
    }


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _timed(call: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


def _rate(rows: int, seconds: float, rejected: int) -> dict[str, Any]:
    return {
        "rows": rows,
        "rejected": rejected,
        "seconds": round(seconds, 2),
        "rows_per_s": round(rows / seconds) if seconds else None,
    }


def _analyze(engine: Engine) -> None:
    if engine.dialect.name == "postgresql":
        # VACUUM also sets the visibility map, which index-only scans need.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE patients"))
            conn.execute(text("VACUUM ANALYZE patient_events"))
    else:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))


def _eligibility(engine: Engine, campaign: CampaignFile, on: dt.date, n: int) -> dict[str, Any]:
    """Each form twice (cold, then warm caches): count(*) in the database, and every id streamed
    to Python in chunks, as planning consumes them."""
    audience = eligible_patients(campaign, on).subquery()
    count_query = select(func.count()).select_from(audience)
    # Streamed (a server-side cursor on PostgreSQL) so memory stays flat however large the audience.
    ids_query = select(audience.c.id).execution_options(stream_results=True, yield_per=50_000)
    counts, count_s, ids_s = [], [], []
    with engine.connect() as conn:
        for _ in range(2):
            value, seconds = _timed(lambda: conn.execute(count_query).scalar_one())
            counts.append(value)
            count_s.append(seconds)
        for _ in range(2):
            value, seconds = _timed(lambda: sum(len(p) for p in conn.execute(ids_query).partitions()))
            counts.append(value)
            ids_s.append(seconds)
        plan = (
            _plan(conn, count_query)
            if engine.dialect.name == "postgresql"
            else _sqlite_plan(conn, count_query)
        )
    if len(set(counts)) != 1:
        raise AssertionError(f"{campaign.id}: the forms disagree on the audience: {counts}")
    return {
        "eligible": counts[0],
        "count_seconds": [round(s, 3) for s in count_s],
        "count_patients_per_s": [round(n / s) for s in count_s],
        "ids_seconds": [round(s, 3) for s in ids_s],
        "ids_patients_per_s": [round(n / s) for s in ids_s],
        "plan": plan,
    }


def _plan(conn: Any, query: Any) -> list[str]:
    """The plan's nodes, depth-first, as "Node Type [on relation] [using index]"."""
    compiled = query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
    (document,) = conn.execute(text(f"EXPLAIN (FORMAT JSON) {compiled}")).scalar_one()
    nodes: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        label = node["Node Type"]
        if "Join Type" in node and node["Join Type"] not in label:
            label = f"{node['Join Type']} {label}"
        if "Relation Name" in node:
            label += f" on {node['Relation Name']}"
        if "Index Name" in node:
            label += f" using {node['Index Name']}"
        nodes.append(label)
        for child in node.get("Plans", []):
            walk(child)

    walk(document["Plan"])
    return nodes


def _sqlite_plan(conn: Any, query: Any) -> list[str]:
    compiled = query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
    return [row[-1] for row in conn.execute(text(f"EXPLAIN QUERY PLAN {compiled}"))]


def summary(figures: dict[str, Any]) -> str:
    imp = figures["import"]
    slowest = figures["slowest_eligibility_patients_per_s"]
    targets = figures["targets"]

    def mark(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    import_ok = (
        min(imp["patients"]["rows_per_s"], imp["events"]["rows_per_s"]) >= targets["import_rows_per_s"]
    )
    eligibility_ok = slowest >= targets["eligibility_patients_per_s"]
    rss_ok = figures["peak_rss_mb"] <= targets["peak_rss_mb"]
    return (
        f"{figures['database']}, {figures['patients']:,} patients / {figures['events']:,} events: "
        f"import {imp['patients']['rows_per_s']:,} patients/s and {imp['events']['rows_per_s']:,} events/s "
        f"[{mark(import_ok)}]; eligibility count at least {slowest:,} patients/s over "
        f"{len(figures['eligibility'])} campaigns [{mark(eligibility_ok)}] "
        f"(streaming the ids: {figures['slowest_ids_patients_per_s']:,}/s); "
        f"peak RSS {figures['peak_rss_mb']} MB [{mark(rss_ok)}]"
    )


if __name__ == "__main__":
    sys.exit(main())
