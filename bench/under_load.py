"""Status callbacks while sending: `bench/webhooks.py --while-sending RATE`.

The plain webhook benchmark posts signed requests from an idle load generator. A fault run saw
something else: the web answered status callbacks slowly while Celery workers on the same two
cores sent at 200/s through the sandbox, whose callbacks then arrive in bursts (sent, delivered:
two per message) while the CPU is contended, and a callback the web does not answer within the
sandbox's 10 s is lost (Twilio does not retry status callbacks). This mode builds that situation
with the real parts, each in its own process as production runs them:

* `outreach web --workers W` on PostgreSQL, as bench/webhooks.py starts it;
* the sandbox (50 ms per API request, its default status timing), started by this file's
  `sandbox` entry, which times every callback it posts: from the start of the POST (connection
  pool wait included, as in aiohttp's 10 s total timeout) to the answer, as Twilio would see it;
* `celery -A workers worker` x P (threads), OUTREACH_SEND_RATE=RATE, OUTREACH_PUBLIC_URL set, so
  every create carries a StatusCallback (bench/send.py's workers otherwise).

It plans N messages with the real scheduler, waits until every one went out and every callback was
answered (or failed), and reports callback latency (p50/p90/p99/max), callbacks over 1 s and over
10 s, failures, the delivered count in the outbox, and each process's CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from sqlalchemy import func, select

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

LATE_S = 10.0  # the sandbox's (and Twilio's) patience with a callback


def run(args: argparse.Namespace, workers: int) -> dict[str, Any]:
    """One run with `workers` web processes; figures as a dict."""
    import send
    import webhooks
    from support import free_port, postgres_schema

    from outreach.clock import utcnow
    from outreach.plan.scheduler import tick
    from outreach.store import db as dbmod
    from outreach.store.models import Message

    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp, ExitStack() as stack:
        stack.enter_context(send._redis_db(args.broker_url))  # flushed now and at the end
        folder = Path(tmp)
        if args.sqlite:  # the default OUTREACH_DATABASE_URL: every process writes one file
            url = f"sqlite:///{folder / 'outreach.db'}"
            engine = dbmod.engine_for(url)
        else:
            engine, url = stack.enter_context(postgres_schema(args.database_url))
        dbmod.upgrade(engine)
        web_port = free_port()
        public = f"http://127.0.0.1:{web_port}"
        faults = {"p500": 0.05, "p429": 0.02, "p_timeout": 0.01, "inbound_url": public + "/twilio/inbound"}
        config = {"latency_ms": 50.0, **(faults if args.faults else {})}
        sandbox = stack.enter_context(_sandbox(folder, webhooks.TOKEN, send.ACCOUNT_SID, config, args.seed))
        env = send._environment(url, args.broker_url, sandbox.url, folder)
        env |= {"TWILIO_AUTH_TOKEN": webhooks.TOKEN, "OUTREACH_PUBLIC_URL": public}
        if args.messaging_service:  # accepted -> queued -> sent -> delivered: three callbacks each
            env |= {"TWILIO_MESSAGING_SERVICE_SID": "MG" + "be" * 16, "TWILIO_FROM_NUMBER": ""}
        web_env = webhooks._server_env(url, public, args.broker_url) | {
            "TWILIO_ACCOUNT_SID": send.ACCOUNT_SID
        }
        extra = ["--no-access-log"] if args.no_access_log else []
        web_pid = stack.enter_context(webhooks._server(workers, web_port, web_env, folder / "web.log", extra))
        bench = send.Bench(engine, env, sandbox, folder)  # the scheduler here: the workers' settings
        _seed(bench, args.patients, args.seed)
        argv = ["-A", "workers", "worker", "--pool", "threads", "--concurrency", str(args.send_threads)]
        rate_env = {**env, "OUTREACH_SEND_RATE": repr(float(args.while_sending))}
        senders = [stack.enter_context(send._celery(argv, rate_env, cwd=ROOT)) for _ in range(args.senders)]
        pids = {"web": [web_pid], "senders": [s.pid for s in senders], "sandbox": [sandbox.pid]}
        before = {name: _cpu(p) for name, p in pids.items()} | {"postgres": webhooks._postgres_cpu()}
        machine_before = webhooks._machine_cpu()
        started = time.perf_counter()
        planned = tick(
            engine, bench.campaigns, settings=send.get_settings(), now=utcnow(), dispatch=_dispatch()
        )
        sent_s = _wait(_SendingDone(engine, sandbox.url), args.timeout, "sending")
        accepted = _stats(sandbox.url)["total"]
        _wait(_Settled(sandbox.url, accepted), args.timeout, "callbacks")
        elapsed = time.perf_counter() - started
        cpu = {name: _cpu(p) - before[name] for name, p in pids.items()}
        cpu["postgres"] = webhooks._postgres_cpu() - before["postgres"]
        busy, total, _ = (a - b for a, b in zip(webhooks._machine_cpu(), machine_before, strict=True))
        with engine.connect() as conn:
            statuses = dict(conn.execute(select(Message.status, func.count()).group_by(Message.status)).all())
        timings = httpx.get(f"{sandbox.url}/_bench/callbacks", timeout=60).json()
        phases = httpx.get(f"{sandbox.url}/_bench/phases", timeout=60).json()
        counters = httpx.get(f"{sandbox.url}/_sandbox/stats", timeout=60).json()["counters"]
        server_errors = webhooks._count_errors(folder / "web.log")
        if args.keep_log:
            args.keep_log.mkdir(parents=True, exist_ok=True)
            (args.keep_log / f"web-{workers}-while-sending.log").write_bytes(
                (folder / "web.log").read_bytes()
            )
    figures = _figures(workers, args, accepted, sent_s, elapsed, timings, counters, statuses, cpu)
    return figures | {
        "sandbox_side": _sandbox_side(phases),
        "planned": planned.queued,
        "machine_busy": round(busy / total, 3) if total else None,
        "server_log_errors": server_errors,
    }


def _seed(bench: Any, n: int, seed: int) -> None:
    """bench/send.py's patients (all where it is about noon), through the real roster import."""
    import csv

    import send

    from outreach.ingest.roster import import_patients
    from samples.generate import ROSTER_HEADER, roster_rows

    zone = send.noon_zone(send.utcnow())
    roster = bench.folder / "roster.csv"
    column = ROSTER_HEADER.index("timezone")
    with roster.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(ROSTER_HEADER)
        for row in roster_rows(n, seed):
            writer.writerow((*row[:column], zone, *row[column + 1 :]))
    result = import_patients(bench.engine, roster, settings=send.get_settings())
    if result.accepted != n:
        raise RuntimeError(f"the roster import accepted {result.accepted} of {n} patients")


def _figures(
    workers: int,
    args: argparse.Namespace,
    messages: int,
    sent_s: float,
    elapsed: float,
    timings: list[list[Any]],
    counters: dict[str, int],
    statuses: dict[str, int],
    cpu: dict[str, float],
) -> dict[str, Any]:
    seconds = sorted(t[1] for t in timings if t[3] == "status")
    inbound = sorted(t[1] for t in timings if t[3] == "inbound")
    failed = sum(1 for t in timings if not t[2] and t[3] == "status")
    first = min((t[0] for t in timings), default=0.0)
    per_second: dict[int, int] = {}
    for t in timings:
        per_second[int(t[0] - first)] = per_second.get(int(t[0] - first), 0) + 1
    return {
        "web_workers": workers,
        "rate": args.while_sending,
        "messages": messages,  # accepted by the sandbox
        "send_seconds": round(sent_s, 1),
        "seconds": round(elapsed, 1),
        "callbacks": len(seconds),
        "callbacks_failed": failed,
        "callbacks_over_1s": sum(1 for s in seconds if s > 1),
        f"callbacks_over_{LATE_S:g}s": sum(1 for s in seconds if s > LATE_S),
        "callback_latency_ms": {
            "p50": _pct(seconds, 0.5),
            "p90": _pct(seconds, 0.9),
            "p99": _pct(seconds, 0.99),
            "max": round(seconds[-1] * 1000, 1) if seconds else None,
        },
        "inbound": {
            "posted": len(inbound),
            "failed": sum(1 for t in timings if not t[2] and t[3] == "inbound"),
            "latency_ms": {"p50": _pct(inbound, 0.5), "p99": _pct(inbound, 0.99), "max": _pct(inbound, 1.0)},
        },
        "callbacks_started_per_s_max": max(per_second.values(), default=0),
        "sandbox_counters": counters,
        "delivered_in_outbox": statuses.get("delivered", 0),
        "outbox": statuses,  # `sent` left over: a callback that came before its sid was committed
        "cpu_s": {name: round(value, 1) for name, value in cpu.items()},
    }


def _sandbox_side(phases: dict[str, list[Any]]) -> dict[str, Any]:
    """Where a callback's time went as the sandbox saw it: waiting for a pooled connection, from
    sent to answered (the web and the network), and how late its own event loop ran."""
    queued = sorted(p[0] for p in phases["phases"])
    answered = sorted(p[1] for p in phases["phases"])
    lags = sorted(phases["lags"])
    return {
        "pool_wait_ms": {"p50": _pct(queued, 0.5), "p99": _pct(queued, 0.99), "max": _pct(queued, 1.0)},
        "sent_to_answer_ms": {
            "p50": _pct(answered, 0.5),
            "p99": _pct(answered, 0.99),
            "max": _pct(answered, 1.0),
        },
        "event_loop_lag_ms": {"p50": _pct(lags, 0.5), "p99": _pct(lags, 0.99), "max": _pct(lags, 1.0)},
    }


def passed(run: dict[str, Any]) -> bool:
    """Every callback answered 2xx, none later than LATE_S. (The outbox's `delivered` count is
    reported, not judged: a callback that overtakes its sid's commit is issue 10's reason 1.)"""
    return bool(run["callbacks_failed"] == 0 and run[f"callbacks_over_{LATE_S:g}s"] == 0)


def summary(runs: list[dict[str, Any]]) -> str:
    parts = [
        f"{r['web_workers']} web worker(s), {r['messages']:,} messages at {r['rate']:g}/s: "
        f"{r['callbacks']:,} callbacks, p50 {r['callback_latency_ms']['p50']} ms, p99 "
        f"{r['callback_latency_ms']['p99']} ms, max {r['callback_latency_ms']['max']} ms, "
        f"{r['callbacks_failed']} failed, {r[f'callbacks_over_{LATE_S:g}s']} over {LATE_S:g} s, "
        f"{r['delivered_in_outbox']:,} delivered in the outbox [{'ok' if passed(r) else 'MISSED'}]"
        for r in runs
    ]
    return "callbacks while sending: " + "; ".join(parts)


def _pct(ordered: Sequence[float], q: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)


def _cpu(pids: list[int]) -> float:
    import webhooks

    return sum(webhooks._tree_cpu(pid) for pid in pids)


def _dispatch() -> Callable[[Sequence[int]], None]:
    from workers.tasks import dispatch

    return dispatch


class _SendingDone:
    """True once nothing is `queued` or `sending`, or the sandbox has accepted nothing new for 5 s:
    without the sweeper (not started here), a create lost on the way stays `sending` and a task
    the rate limiter could not fit in its wait leaves its rows `queued` (both in `outbox`)."""

    def __init__(self, engine: Any, sandbox_url: str) -> None:
        self._engine = engine
        self._url = sandbox_url
        self._last = (-1, time.monotonic())

    def __call__(self) -> bool:
        from outreach.store.models import Message

        with self._engine.connect() as conn:
            waiting = conn.scalar(
                select(func.count()).select_from(Message).where(Message.status.in_(["queued", "sending"]))
            )
        total = _stats(self._url)["total"]
        if total != self._last[0]:
            self._last = (total, time.monotonic())
        return not waiting or (total > 0 and time.monotonic() - self._last[1] > 5)


def _stats(sandbox_url: str) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(f"{sandbox_url}/_sandbox/stats", timeout=60).json()
    return answer


class _Settled:
    """Every accepted message delivered at the sandbox, and no callback answered (or failed) for
    3 s: a message's callbacks, and its simulated reply, have all been posted."""

    def __init__(self, sandbox_url: str, accepted: int) -> None:
        self._url = sandbox_url
        self._accepted = accepted
        self._last = (-1, time.monotonic())

    def __call__(self) -> bool:
        stats = _stats(self._url)
        done = sum(v for k, v in stats["counters"].items() if "_callbacks_" in k)
        if done != self._last[0]:
            self._last = (done, time.monotonic())
        delivered = stats["by_status"].get("delivered", 0) >= self._accepted
        return delivered and time.monotonic() - self._last[1] > 3


def _wait(done: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.perf_counter()
    while not done():
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"{what} not finished after {timeout:.0f} s")
        time.sleep(0.25)
    return time.perf_counter() - started


def _sandbox(folder: Path, auth_token: str, account_sid: str, config: dict[str, Any], seed: int) -> Any:
    import send
    from support import free_port

    port = free_port()
    argv = [sys.executable, str(Path(__file__)), "sandbox", str(port), account_sid, auth_token]
    argv += [json.dumps(config | {"seed": seed})]

    class _Started:
        def __enter__(self) -> Any:
            self.process = send.ManagedProcess(argv, send._clean_environ(), cwd=folder)
            self.process.url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(f"{self.process.url}/_sandbox/stats", timeout=1).raise_for_status()
                    return self.process
                except httpx.HTTPError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"the sandbox did not start:\n{self.process.tail()}") from None
                    time.sleep(0.1)

        def __exit__(self, *_exc: object) -> None:
            self.process.stop()

    return _Started()


# --- the timed sandbox (its own process) ---------------------------------------------------------


def serve_timed_sandbox(port: int, account_sid: str, auth_token: str, config: dict[str, Any]) -> None:
    """The sandbox with `config` (SandboxConfig's fields; simulated patients answer when it has an
    inbound_url) and every callback POST timed; the timings as JSON at GET /_bench/callbacks:
    [start (epoch s), seconds, ok, kind] each."""
    from fastapi import FastAPI

    from outreach.sandbox import app as sandbox_app
    from outreach.sandbox.callbacks import Lifecycle
    from outreach.sandbox.patients import load_replies
    from outreach.sandbox.server import SandboxServer
    from outreach.sandbox.state import SandboxConfig

    timings: list[tuple[float, float, bool, str]] = []
    post_signed = Lifecycle.post_signed

    async def timed(self: Lifecycle, url: str, params: dict[str, str], *, kind: str) -> bool:
        at, started = time.time(), time.perf_counter()
        ok = await post_signed(self, url, params, kind=kind)
        timings.append((at, time.perf_counter() - started, ok, kind))
        return ok

    Lifecycle.post_signed = timed  # type: ignore[method-assign]
    phases: list[tuple[float, float]] = []  # per request: (waiting for a pooled connection, sent -> answered)
    lags: list[float] = []  # the sandbox's own event loop: how late a 10 ms sleep wakes up

    async def start(self: Lifecycle) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=10), trace_configs=[_phase_trace(phases)]
        )
        asyncio.get_running_loop().create_task(_watch_lag(lags))

    Lifecycle.start = start  # type: ignore[method-assign]
    create_app = sandbox_app.create_app

    def with_timings(*a: Any, **kw: Any) -> FastAPI:
        app = create_app(*a, **kw)
        app.add_api_route("/_bench/callbacks", lambda: list(timings), methods=["GET"])
        app.add_api_route("/_bench/phases", lambda: {"phases": phases, "lags": lags}, methods=["GET"])
        return app

    import outreach.sandbox.server as server_module

    server_module.create_app = with_timings  # type: ignore[assignment]
    sandbox_config = SandboxConfig(**config)
    replies = load_replies("probabilities", seed=sandbox_config.seed) if sandbox_config.inbound_url else None
    SandboxServer(account_sid, auth_token, port=port, config=sandbox_config, replies=replies).serve_forever()


def _phase_trace(phases: list[tuple[float, float]]) -> Any:
    """aiohttp tracing: how long each callback waited for one of the client's pooled connections
    (aiohttp's limit: 100), and how long from its request being sent to the end of the answer."""
    import aiohttp

    trace = aiohttp.TraceConfig()

    async def queued_start(_s: Any, ctx: Any, _p: Any) -> None:
        ctx.queued_at = time.perf_counter()

    async def queued_end(_s: Any, ctx: Any, _p: Any) -> None:
        ctx.queued = time.perf_counter() - ctx.queued_at

    async def headers_sent(_s: Any, ctx: Any, _p: Any) -> None:
        ctx.sent_at = time.perf_counter()

    async def request_end(_s: Any, ctx: Any, _p: Any) -> None:
        phases.append((getattr(ctx, "queued", 0.0), time.perf_counter() - ctx.sent_at))

    trace.on_connection_queued_start.append(queued_start)
    trace.on_connection_queued_end.append(queued_end)
    trace.on_request_headers_sent.append(headers_sent)
    trace.on_request_end.append(request_end)
    return trace


async def _watch_lag(lags: list[float]) -> None:
    while True:
        started = time.perf_counter()
        await asyncio.sleep(0.01)
        lags.append(time.perf_counter() - started - 0.01)


if __name__ == "__main__" and sys.argv[1:2] == ["sandbox"]:
    serve_timed_sandbox(int(sys.argv[2]), sys.argv[3], sys.argv[4], json.loads(sys.argv[5]))
