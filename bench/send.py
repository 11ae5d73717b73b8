"""Sending benchmark: N messages through the real pipeline (PostgreSQL outbox, `outreach.plan.scheduler.tick`,
Redis, `celery -A workers worker` processes on a thread pool, the official twilio client, the
sandbox in its own process with 50 ms per request), then the naive one-task-per-message pattern
(bench/naive.py) for comparison, then the global rate limiter at a few rates.

    .venv/bin/python bench/send.py                       # 20,000 messages, naive 2,000, rates 50,200
    .venv/bin/python bench/send.py --n 2000 --naive-n 500 --rates 50
    .venv/bin/python bench/send.py --processes 2 --concurrency 32 --skip-naive --rates ""

Everything it creates is its own and removed at the end, also on failure or Ctrl-C: a fresh
PostgreSQL schema, one Redis database (flushed at start and end), the sandbox and worker processes
(each in its own process group). Prints one JSON object with every figure and, last, a one-line
summary. Throughput targets are reported, not asserted; the exit status is 1 when a correctness
check fails (a message accepted twice or not at all, a rate outside [0.95 R, R]).
"""

from __future__ import annotations

import argparse
import collections
import csv
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis
from sqlalchemy import Engine, func, select, text

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))  # samples/ and workers/ are folders of the checkout, not of the package

from support import free_port, postgres_schema  # noqa: E402

from outreach.campaigns import load_campaigns  # noqa: E402
from outreach.clock import utcnow  # noqa: E402
from outreach.config import get_settings  # noqa: E402
from outreach.ingest.roster import import_patients  # noqa: E402
from outreach.store import db as dbmod  # noqa: E402
from outreach.store.models import Base, Message, MessageStatus  # noqa: E402
from outreach.store.statuses import WAITING_OR_SENDING  # noqa: E402
from samples.generate import ROSTER_HEADER, roster_rows  # noqa: E402

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/14"
ACCOUNT_SID = "AC" + "be" * 16
AUTH_TOKEN = "bench-auth-token"
FROM_NUMBER = "+16175550000"
TARGET_MSGS_PER_S = 300
TARGET_SPEEDUP = 10
RATE_TOLERANCE = 0.95  # achieved must be within [0.95 R, R]
UNLIMITED_RATE = "1e9"  # the limiter still runs (one Redis call per message) but never waits
_CLK_TCK = os.sysconf("SC_CLK_TCK")

# Every day, all day: only the hard 08:00-21:00 (20:00 FL/OK/MD) patient-local limit applies, and
# every patient lives where it is about noon now, so workers on the real clock send at once.
CAMPAIGN_YAML = """\
id: bench-send
name: Sending benchmark
active: {from: 2020-01-01}
audience: {age: {min: 0, max: 130}, sex: any}
send_window: {days: [mon, tue, wed, thu, fri, sat, sun], start: "00:00", end: "23:59"}
re_enroll_after: 365d
default_language: en
steps:
  - id: invite
    after: 0d
    text: {en: "Hi {first_name}, {clinic_name} here. Reply STOP to opt out."}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=20_000, help="messages through the pipeline")
    parser.add_argument("--processes", type=int, default=2, help="celery worker processes")
    parser.add_argument("--concurrency", type=int, default=32, help="threads per worker process")
    parser.add_argument("--naive-n", type=int, default=2_000, help="messages through the naive pattern")
    parser.add_argument("--naive-concurrency", type=int, default=2, help="prefork processes (naive)")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--rates", default="50,200", help='limiter rates to check, "" for none')
    parser.add_argument("--rate-seconds", type=float, default=17.0, help="how long each rate run lasts")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="sandbox latency per request")
    parser.add_argument("--database-url", default=DEFAULT_PG, help="PostgreSQL server (a schema is made)")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS, help="a Redis database of its own (flushed)")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up on a run after this long")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]

    # SIGTERM unwinds like Ctrl-C, so the finally blocks below stop processes and drop the schema.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    figures: dict[str, Any] = {
        "config": {
            "n": args.n,
            "processes": args.processes,
            "concurrency": args.concurrency,
            "latency_ms": args.latency_ms,
            "naive_n": None if args.skip_naive else args.naive_n,
            "naive_concurrency": args.naive_concurrency,
            "rates": rates,
            "cpus": os.cpu_count(),
        }
    }
    with tempfile.TemporaryDirectory(prefix="bench-send-") as tmp, ExitStack() as stack:
        folder = Path(tmp)
        engine, database_url = stack.enter_context(postgres_schema(args.database_url))
        stack.enter_context(_redis_db(args.redis_url))
        sandbox = stack.enter_context(_sandbox(args.latency_ms, folder))
        bench = Bench(
            engine, _environment(database_url, args.redis_url, sandbox.url, folder), sandbox, folder
        )

        figures["pipeline"] = bench.pipeline(
            args.n,
            processes=args.processes,
            concurrency=args.concurrency,
            timeout=args.timeout,
            seed=args.seed,
        )
        if not args.skip_naive:
            figures["naive"] = bench.naive(
                args.naive_n, concurrency=args.naive_concurrency, timeout=args.timeout, seed=args.seed
            )
            figures["speedup_vs_naive"] = round(
                figures["pipeline"]["messages_per_s"] / figures["naive"]["messages_per_s"], 1
            )
        figures["rates"] = [
            bench.rate(
                rate,
                n=max(int(rate * args.rate_seconds), 10),
                processes=args.processes,
                concurrency=args.concurrency,
                timeout=args.timeout,
                seed=args.seed,
            )
            for rate in rates
        ]
    figures["targets"] = {"messages_per_s": TARGET_MSGS_PER_S, "speedup_vs_naive": TARGET_SPEEDUP}
    figures["checks"] = _checks(figures)
    print(json.dumps(figures, indent=2))
    print(summary(figures))
    return 0 if all(figures["checks"].values()) else 1


# --- the runs ------------------------------------------------------------------------------------


@dataclass
class Bench:
    engine: Engine
    env: dict[str, str]  # what every process of the pipeline sees (workers, the scheduler here)
    sandbox: ManagedProcess
    folder: Path

    def __post_init__(self) -> None:
        # The scheduler runs in this process: same settings as the workers.
        for name in [n for n in os.environ if n.startswith(("OUTREACH_", "TWILIO_"))]:
            del os.environ[name]
        os.environ.update(self.env)
        get_settings.cache_clear()
        dbmod.upgrade(self.engine)
        self.campaigns = load_campaigns(self.folder / "campaigns", settings=get_settings())
        self.redis = redis.Redis.from_url(self.env["OUTREACH_BROKER_URL"])

    def pipeline(
        self, n: int, *, processes: int, concurrency: int, timeout: float, seed: int
    ) -> dict[str, Any]:
        from workers.tasks import dispatch  # reads OUTREACH_BROKER_URL when first used: after __post_init__

        env = {"OUTREACH_SEND_RATE": UNLIMITED_RATE}
        with self._workers(processes, concurrency, env) as workers:
            return self._run(n, workers, dispatch, timeout=timeout, seed=seed)

    def naive(self, n: int, *, concurrency: int, timeout: float, seed: int) -> dict[str, Any]:
        sys.path.insert(0, str(BENCH))
        from naive import naive_send

        def dispatch(ids: Sequence[int]) -> None:
            for message_id in ids:  # one task per message
                naive_send.delay(message_id)

        argv = [
            "-A",
            "naive",
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            str(concurrency),
            "-Q",
            "naive",
        ]
        with ExitStack() as stack:
            worker = stack.enter_context(_celery(argv, self.env, cwd=BENCH))
            return self._run(n, [worker], dispatch, timeout=timeout, seed=seed)

    def rate(
        self, rate: float, *, n: int, processes: int, concurrency: int, timeout: float, seed: int
    ) -> dict[str, Any]:
        from workers.tasks import dispatch

        with self._workers(processes, concurrency, {"OUTREACH_SEND_RATE": repr(rate)}) as workers:
            run = self._run(n, workers, dispatch, timeout=timeout, seed=seed)
        stats = self._stats()
        counts = _per_second(stats["per_second"])
        middle = counts[1:-1]  # the first and last seconds are partial
        achieved = sum(middle) / len(middle) if middle else 0.0
        return {
            "rate": rate,
            "n": n,
            "seconds": run["seconds"],
            "accepted": run["sandbox_accepted"],
            "duplicates": run["sandbox_duplicates"],
            "achieved_per_s": round(achieved, 2),
            "full_seconds": len(middle),
            "min_full_second": min(middle, default=0),
            "max_full_second": max(middle, default=0),
            "max_in_any_1s_window": stats["max_per_second"],
            "max_segments_in_any_1s_window": stats["max_segments_per_second"],
            "within_bounds": RATE_TOLERANCE * rate <= achieved <= rate,
            "per_second": counts,
        }

    def _run(
        self,
        n: int,
        workers: Sequence[ManagedProcess],
        dispatch: Callable[[Sequence[int]], None],
        *,
        timeout: float,
        seed: int,
    ) -> dict[str, Any]:
        """Seed n patients, plan them with the real scheduler, and time the first dispatch to the
        last row reaching `sent`, polling the outbox."""
        from outreach.plan.scheduler import tick

        self._reset()
        started = time.perf_counter()
        self._seed(n, seed)
        seeded = time.perf_counter() - started
        pids = [p for w in workers for p in _tree(w.pid)]
        cpu_before = _cpu_sample(pids)
        lines_before = sum(w.lines for w in workers)
        sandbox_cpu_before = _cpu_sample([self.sandbox.pid])
        sessions_before = self._pg_sessions()
        first: list[float] = []

        def timed(ids: Sequence[int]) -> None:
            if not first:
                first.append(time.perf_counter())
            dispatch(ids)

        tick_started = time.perf_counter()
        planned = tick(self.engine, self.campaigns, settings=get_settings(), now=utcnow(), dispatch=timed)
        if planned.queued != n or not first:
            raise RuntimeError(f"the scheduler queued {planned.queued} of {n} messages: {planned.as_dict()}")
        done, statuses = self._wait_sent(n, first[0], timeout, workers)
        seconds = done - first[0]
        cpu = _cpu_since(cpu_before)
        lines = sum(w.lines for w in workers) - lines_before
        sessions = self._pg_sessions() - sessions_before
        rss = max(_peak_rss_mb(p) for p in pids)
        sandbox_cpu = _cpu_since(sandbox_cpu_before)
        accepted = self._sandbox_messages()
        recipients = collections.Counter(m["to"] for m in accepted)
        with dbmod.session_scope(self.engine) as session:
            db_sids = set(
                session.scalars(select(Message.provider_sid).where(Message.provider_sid.is_not(None)))
            )
        return {
            "n": n,
            "seed_seconds": round(seeded, 2),
            "plan_seconds": round(first[0] - tick_started, 2),  # enroll + plan, up to the first dispatch
            "seconds": round(seconds, 2),
            "messages_per_s": round(statuses.get(MessageStatus.sent, 0) / seconds, 1),
            "statuses": statuses,
            "worker_processes": len(pids),
            "worker_cpu_seconds": round(cpu, 2),
            "worker_cpu_seconds_per_1000": round(cpu / n * 1000, 3),
            "worker_peak_rss_mb": round(rss, 1),
            "worker_log_lines_per_message": round(lines / n, 2),
            # Connections opened to the database meanwhile (by anyone: the server is shared).
            "postgres_sessions_opened": sessions,
            "sandbox_cpu_seconds_per_1000": round(sandbox_cpu / n * 1000, 3),
            "sandbox_accepted": len(accepted),
            "sandbox_duplicates": sum(c - 1 for c in recipients.values() if c > 1),
            "sandbox_sids_match_outbox": db_sids == {m["sid"] for m in accepted},
        }

    def _wait_sent(
        self, n: int, since: float, timeout: float, workers: Sequence[ManagedProcess]
    ) -> tuple[float, dict[str, int]]:
        deadline = since + timeout
        while True:
            now = time.perf_counter()
            with self.engine.connect() as conn:
                by_status = select(Message.status, func.count()).group_by(Message.status)
                statuses = {status: count for status, count in conn.execute(by_status)}
            if statuses.get(MessageStatus.sent, 0) >= n:
                return now, statuses
            if not any(statuses.get(s) for s in WAITING_OR_SENDING):
                raise RuntimeError(f"nothing left to send but only {statuses} of {n}")
            for worker in workers:
                if worker.poll() is not None:
                    raise RuntimeError(f"a worker exited ({worker.poll()}):\n{worker.tail()}")
            if now > deadline:
                raise RuntimeError(f"not done after {timeout:.0f} s: {statuses}")
            time.sleep(0.05)

    def _reset(self) -> None:
        tables = ", ".join(t.name for t in reversed(Base.metadata.sorted_tables))
        with self.engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        self.redis.flushdb()
        httpx.post(f"{self.sandbox.url}/_sandbox/reset", timeout=30).raise_for_status()

    def _seed(self, n: int, seed: int) -> None:
        """n synthetic patients with distinct numbers, all in a zone where it is about noon now,
        loaded through the real roster import."""
        zone = noon_zone(utcnow())
        roster = self.folder / "roster.csv"
        column = ROSTER_HEADER.index("timezone")
        with roster.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(ROSTER_HEADER)
            for row in roster_rows(n, seed):
                writer.writerow((*row[:column], zone, *row[column + 1 :]))
        result = import_patients(self.engine, roster, settings=get_settings())
        if result.accepted != n:
            raise RuntimeError(f"the roster import accepted {result.accepted} of {n} patients")
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE patients"))

    def _pg_sessions(self) -> int:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT pg_stat_clear_snapshot()"))
            query = text("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
            return int(conn.execute(query).scalar_one())

    def _stats(self) -> dict[str, Any]:
        answer = httpx.get(f"{self.sandbox.url}/_sandbox/stats", timeout=60)
        answer.raise_for_status()
        stats: dict[str, Any] = answer.json()
        return stats

    def _sandbox_messages(self) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.sandbox.url}/_sandbox/messages", timeout=120)
        answer.raise_for_status()
        messages: list[dict[str, Any]] = answer.json()
        return messages

    @contextmanager
    def _workers(
        self, processes: int, concurrency: int, extra: dict[str, str]
    ) -> Iterator[list[ManagedProcess]]:
        argv = ["-A", "workers", "worker", "--pool", "threads", "--concurrency", str(concurrency)]
        with ExitStack() as stack:
            # Started one after another: each is ready (connected, consuming) before the next starts.
            yield [
                stack.enter_context(_celery(argv, {**self.env, **extra}, cwd=ROOT)) for _ in range(processes)
            ]


def noon_zone(now: dt.datetime) -> str:
    """An IANA zone where it is about noon at `now` (naive UTC)."""
    offset = (12 - now.hour + 12) % 24 - 12  # -12..11 hours from UTC
    return "Etc/GMT" + (f"{-offset:+d}" if offset else "")  # POSIX inverts the Etc/GMT signs


def _per_second(histogram: dict[str, int]) -> list[int]:
    """Counts for every calendar second from the first to the last accept, empty seconds included."""
    if not histogram:
        return []
    stamps = {dt.datetime.fromisoformat(k.replace("Z", "+00:00")): v for k, v in histogram.items()}
    first, last = min(stamps), max(stamps)
    seconds = int((last - first).total_seconds()) + 1
    return [stamps.get(first + dt.timedelta(seconds=i), 0) for i in range(seconds)]


def _checks(figures: dict[str, Any]) -> dict[str, bool]:
    runs = [figures["pipeline"], *([figures["naive"]] if "naive" in figures else [])]
    checks = {
        "every_message_accepted_once": all(r["sandbox_accepted"] == r["n"] for r in runs),
        "no_duplicates": all(r["sandbox_duplicates"] == 0 for r in runs)
        and all(r["duplicates"] == 0 for r in figures["rates"]),
        "sandbox_sids_match_outbox": all(r["sandbox_sids_match_outbox"] for r in runs),
    }
    for entry in figures["rates"]:
        checks[f"rate_{entry['rate']:g}_within_0.95R_R"] = entry["within_bounds"]
    return checks


def summary(figures: dict[str, Any]) -> str:
    def mark(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    p, config = figures["pipeline"], figures["config"]
    parts = [
        f"pipeline {p['n']:,} msgs ({config['processes']}x{config['concurrency']} threads): "
        f"{p['messages_per_s']:,} msg/s end to end [{mark(p['messages_per_s'] >= TARGET_MSGS_PER_S)}], "
        f"{p['worker_cpu_seconds_per_1000']} worker CPU-s per 1,000, "
        f"peak worker RSS {p['worker_peak_rss_mb']} MB, "
        f"sandbox accepted {p['sandbox_accepted']:,} with {p['sandbox_duplicates']} duplicates"
    ]
    if "naive" in figures:
        speedup = figures["speedup_vs_naive"]
        parts.append(
            f"naive {figures['naive']['n']:,} msgs: {figures['naive']['messages_per_s']} msg/s, "
            f"pipeline {speedup}x [{mark(speedup >= TARGET_SPEEDUP)}]"
        )
    for entry in figures["rates"]:
        parts.append(
            f"limit {entry['rate']:g}/s: achieved {entry['achieved_per_s']}/s, max in 1 s "
            f"{entry['max_in_any_1s_window']} [{mark(entry['within_bounds'])}]"
        )
    failed = [name for name, ok in figures["checks"].items() if not ok]
    parts.append("all checks passed" if not failed else f"FAILED: {', '.join(failed)}")
    return "; ".join(parts)


# --- processes and resources ---------------------------------------------------------------------


class ManagedProcess:
    """A child in its own process group (so stopping it also stops whatever it forked), with the
    tail of its output kept for error messages."""

    def __init__(self, argv: list[str], env: dict[str, str], *, cwd: Path, ready: str | None = None) -> None:
        self.url = ""
        self.argv = argv
        self._lines: collections.deque[str] = collections.deque(maxlen=200)
        self.lines = 0  # output lines so far (log volume is a cost of its own)
        self._ready = threading.Event()
        self._marker = ready
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._drain, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def tail(self) -> str:
        return "".join(list(self._lines)[-40:])

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines += 1
            self._lines.append(line)
            if self._marker and self._marker in line:
                self._ready.set()

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.1):
            if self.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{' '.join(self.argv[:6])} did not start:\n{self.tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            except ProcessLookupError:
                pass
        # Pool children of a prefork worker may outlive their parent for a moment.
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


@contextmanager
def _celery(argv: list[str], env: dict[str, str], *, cwd: Path) -> Iterator[ManagedProcess]:
    name = f"bench-{uuid.uuid4().hex[:8]}@%h"
    flags = ["-n", name, "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    full_env = {**_clean_environ(), **env, "PYTHONPATH": f"{ROOT}{os.pathsep}{BENCH}"}
    worker = ManagedProcess(
        [sys.executable, "-m", "celery", *argv, *flags], full_env, cwd=cwd, ready=" ready."
    )
    try:
        worker.wait_ready(60)
        yield worker
    finally:
        worker.stop()


@contextmanager
def _sandbox(latency_ms: float, folder: Path) -> Iterator[ManagedProcess]:
    """`outreach sandbox` in its own process; no status callbacks (no OUTREACH_PUBLIC_URL anywhere)."""
    port = free_port()
    argv = [
        *(sys.executable, "-m", "outreach.apps.cli", "sandbox"),
        *("--port", str(port), "--latency-ms", str(latency_ms)),
        *("--account-sid", ACCOUNT_SID, "--auth-token", AUTH_TOKEN),
    ]
    server = ManagedProcess(argv, _clean_environ(), cwd=folder)
    server.url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{server.url}/_sandbox/stats", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the sandbox did not start:\n{server.tail()}") from None
                time.sleep(0.1)
        yield server
    finally:
        server.stop()


@contextmanager
def _redis_db(url: str) -> Iterator[None]:
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield
    finally:
        client.flushdb()


def _environment(database_url: str, broker_url: str, sandbox_url: str, folder: Path) -> dict[str, str]:
    campaigns = folder / "campaigns"
    campaigns.mkdir(exist_ok=True)
    (campaigns / "bench-send.yaml").write_text(CAMPAIGN_YAML, encoding="utf-8")
    return {
        "OUTREACH_DATABASE_URL": database_url,
        "OUTREACH_BROKER_URL": broker_url,
        "OUTREACH_CAMPAIGNS_DIR": str(campaigns),
        "OUTREACH_CLINIC_NAME": "Riverside Health",
        "OUTREACH_CLINIC_PHONE": "(617) 555-0100",
        "OUTREACH_SEND_RATE": UNLIMITED_RATE,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_FROM_NUMBER": FROM_NUMBER,
        "OUTREACH_TWILIO_API_URL": sandbox_url,
    }


def _clean_environ() -> dict[str, str]:
    """This process's environment without any OUTREACH_*/TWILIO_* a developer may have set (a
    stray OUTREACH_PUBLIC_URL would turn status callbacks on)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("OUTREACH_", "TWILIO_"))}


def _proc_stat(pid: int) -> tuple[int, float]:
    """(parent pid, user + system CPU seconds) from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (a prefork worker's pool processes)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = _proc_stat(int(entry))[0]
            except (FileNotFoundError, ProcessLookupError):
                continue
    found, frontier = [pid], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _cpu_sample(pids: Sequence[int]) -> dict[int, float]:
    return {pid: _proc_stat(pid)[1] for pid in pids}


def _cpu_since(before: dict[int, float]) -> float:
    """CPU seconds the processes of `before` used since it was taken."""
    return sum(_proc_stat(pid)[1] - seconds for pid, seconds in before.items())


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


if __name__ == "__main__":
    sys.exit(main())
