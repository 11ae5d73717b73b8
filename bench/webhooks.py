"""Webhook benchmark: `outreach web` on PostgreSQL under signed Twilio traffic over loopback.

    .venv/bin/python bench/webhooks.py                       # 1 and 2 worker processes, 20,000 requests each
    .venv/bin/python bench/webhooks.py --workers 2 --patients 2000 --seconds 10

Each run gets a fresh PostgreSQL schema (dropped afterwards) with a few thousand patients, each
enrolled in a shipped campaign with its invite sent (a provider SID). It then starts `outreach web`
as production does, and posts, from `--concurrency` connections, signed status callbacks for every
sent message (queued, sent, delivered, in that order per message) interleaved with one signed reply
per patient (YES, STOP, HELP or free text, each with a unique MessageSid), until every request is
sent or `--seconds` have passed. Afterwards it checks that the database accounts for every request:
an inbound row per reply, the classification each reply should get, an opt-out per STOP, a hand-off
per free text, an answer (and a Celery task) per YES, and each message's final status.

Answers are dispatched to a Redis database of their own (`--broker-url`, default db 14) that no
worker reads; the benchmark counts the tasks there and deletes them. Prints one JSON object and,
last, a one-line summary. Targets are reported, not asserted (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import redis
from sqlalchemy import Engine, func, insert, select, text
from twilio.request_validator import RequestValidator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from arrivals import at_rate  # noqa: E402
from support import free_port, postgres_schema  # noqa: E402

from outreach.campaigns import load_campaigns  # noqa: E402
from outreach.config import get_settings  # noqa: E402
from outreach.store import db as dbmod  # noqa: E402
from outreach.store.models import (  # noqa: E402
    Campaign,
    Enrollment,
    Handoff,
    InboundMessage,
    Message,
    MessageKind,
    MessageStatus,
    Patient,
    PhoneConsent,
)

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_BROKER = "redis://127.0.0.1:6379/11"  # not 14: bench/send.py runs workers there
QUEUE = "outreach"  # workers/app.py task_default_queue
TOKEN = "bench0123456789abcdef0123456789ab"
SENDER = "+16175550100"
NOW = dt.datetime(2026, 3, 2, 15, 0)
TARGET_RPS = 500
TARGET_P99_MS = 100.0
# Reply mix: (kind, share, bodies); every body is classified as `kind` by outreach/listen/classify.py.
REPLIES = [
    ("yes", 0.35, ["YES", "Yes please", "y", "Sí"]),
    ("stop", 0.15, ["STOP", "stop", "Please stop texting me", "no más mensajes"]),
    ("help", 0.10, ["HELP", "info"]),
    ("free", 0.40, ["Can I come in on Tuesday?", "I already had one last year", "who is this", "ok thanks"]),
]
CALLBACKS = ("queued", "sent", "delivered")
# (status, provider_status) a message should end with, by the last callback acknowledged for it.
EXPECTED_FINAL = {
    None: (MessageStatus.sent, None),
    "queued": (MessageStatus.sent, "queued"),
    "sent": (MessageStatus.sent, "sent"),
    "delivered": (MessageStatus.delivered, "delivered"),
}


@dataclass(frozen=True)
class Request:
    kind: str  # status callback ("queued"/"sent"/"delivered") or reply family ("yes"/"stop"/...)
    path: str
    body: bytes
    signature: str
    sid: str
    handoff: bool = False  # the reply should open a hand-off (free text, or a rule with handoff: true)


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    sent: Counter[str] = field(default_factory=Counter)  # requests answered 2xx, by kind
    last_callback: dict[str, str] = field(default_factory=dict)  # sid -> last callback answered 2xx
    replies_ok: set[str] = field(default_factory=set)  # inbound MessageSids answered 200
    handoffs: int = 0  # acknowledged replies that should have opened a hand-off
    schedule: dict[str, float] | None = None  # open loop only: jobs skipped, the generator's lag


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--database-url", default=DEFAULT_PG, help="PostgreSQL server (a schema is made)")
    parser.add_argument(
        "--broker-url", default=DEFAULT_BROKER, help="Redis for dispatched answers (no worker)"
    )
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1, 2], help="uvicorn worker processes, one run each"
    )
    parser.add_argument(
        "--patients",
        type=int,
        default=5000,
        help="each: 1 reply + 3 status callbacks (default 20,000 requests)",
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="stop sending new requests after this")
    parser.add_argument("--concurrency", type=int, default=32, help="closed loop: requests in flight at once")
    parser.add_argument(
        "--rate",
        type=float,
        help="open loop: requests due per second, latency timed from when each was due (bench/arrivals.py)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep-log", type=Path, metavar="DIR", help="copy the server's log here")
    parser.add_argument(
        "--no-access-log",
        action="store_true",
        help="run `outreach web --no-access-log` (default: as shipped, access log on)",
    )
    load = parser.add_argument_group(
        "--while-sending: callbacks from the sandbox while workers send (bench/under_load.py)"
    )
    load.add_argument(
        "--while-sending", type=float, metavar="RATE", help="send --patients messages at RATE/s"
    )
    load.add_argument("--senders", type=int, default=2, help="celery worker processes sending")
    load.add_argument("--send-threads", type=int, default=32, help="threads per sending worker")
    load.add_argument("--timeout", type=float, default=600.0, help="give up on a run after this long")
    load.add_argument(
        "--faults",
        action="store_true",
        help="as the fault run: 5%% 5xx, 2%% 429, 1%% timeouts after acceptance, simulated patients replying",
    )
    load.add_argument("--sqlite", action="store_true", help="a SQLite file (the default database) for all")
    load.add_argument(
        "--messaging-service", action="store_true", help="send through a Messaging Service (3 callbacks each)"
    )
    args = parser.parse_args(argv)

    broker = redis.Redis.from_url(args.broker_url)
    db = broker.connection_pool.connection_kwargs.get("db", 0)
    others = [c for c in broker.client_list() if int(c.get("db", -1)) == db and c.get("cmd") != "client|list"]
    if broker.dbsize() or others:
        # A worker there would take the answers and look their ids up in its own database.
        parser.error(f"{args.broker_url} is in use (keys or clients); pick an idle --broker-url database")
    if args.while_sending:
        import under_load

        loaded = [under_load.run(args, workers) for workers in args.workers]
        print(json.dumps({"cpus": os.cpu_count(), "runs": loaded}, indent=2))
        print(under_load.summary(loaded))
        return 0 if all(under_load.passed(r) for r in loaded) else 1
    runs = []
    for workers in args.workers:
        with postgres_schema(args.database_url) as (engine, url):
            dbmod.upgrade(engine)
            runs.append(run(engine, url, broker, args, workers))
    figures = {
        "database": "postgresql",
        "cpus": os.cpu_count(),
        "runs": runs,
        "targets": {"requests_per_s": TARGET_RPS, "p99_ms": TARGET_P99_MS, "errors": 0},
    }
    print(json.dumps(figures, indent=2))
    print(summary(figures))
    return 0 if all(_passed(r) for r in runs) else 1


def run(
    engine: Engine, url: str, broker: redis.Redis, args: argparse.Namespace, workers: int
) -> dict[str, Any]:
    rng = random.Random(args.seed)
    started = time.perf_counter()
    sids, phones, handoff_on_yes = seed(engine, args.patients, rng)
    seed_s = time.perf_counter() - started
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    jobs = build_jobs(public, sids, phones, handoff_on_yes, rng)
    total = sum(len(job) for job in jobs)

    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        log_path = Path(tmp) / "web.log"
        env = _server_env(url, public, args.broker_url)
        extra = ["--no-access-log"] if args.no_access_log else []
        with _server(workers, port, env, log_path, extra) as pid:
            cpu_before, pg_before, machine_before = _tree_cpu(pid), _postgres_cpu(), _machine_cpu()
            tally, elapsed, client_cpu = asyncio.run(
                load(public, jobs, args.concurrency, args.seconds, args.rate)
            )
            server_cpu = _tree_cpu(pid) - cpu_before
            postgres_cpu = _postgres_cpu() - pg_before
            machine_busy, machine_total, steal = (
                a - b for a, b in zip(_machine_cpu(), machine_before, strict=True)
            )
            server_errors = _count_errors(log_path)
        if args.keep_log:
            args.keep_log.mkdir(parents=True, exist_ok=True)
            (args.keep_log / f"web-{workers}.log").write_bytes(log_path.read_bytes())
    dispatched = int(broker.llen(QUEUE))
    broker.delete(QUEUE, *broker.scan_iter(match=f"_kombu.binding*.{QUEUE}"))  # the db was idle: ours
    checks = verify(engine, tally, dispatched)
    done = len(tally.latencies_ms)
    ordered = sorted(tally.latencies_ms)
    return {
        "workers": workers,
        "access_log": not args.no_access_log,
        "patients": args.patients,
        "seed_seconds": round(seed_s, 2),
        "load": f"open loop, {args.rate:g} requests/s due"
        if args.rate
        else f"closed loop, {args.concurrency} clients",
        "open_loop_schedule": tally.schedule,
        "requests_planned": total,
        "requests": done,
        "seconds": round(elapsed, 2),
        "requests_per_s": round(done / elapsed) if elapsed else None,
        "latency_ms": {
            "p50": _pct(ordered, 0.50),
            "p90": _pct(ordered, 0.90),
            "p99": _pct(ordered, 0.99),
            "max": round(ordered[-1], 1) if ordered else None,
        },
        "errors": sum(tally.errors.values()),
        "error_kinds": dict(tally.errors),
        "http_statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "server_log_errors": server_errors,
        "by_kind": dict(sorted(tally.sent.items())),
        # CPU per request is what the machine's other load cannot distort: 2 cores / this = a ceiling.
        "server_cpu_s": round(server_cpu, 2),
        "server_cpu_ms_per_request": round(server_cpu * 1000 / done, 2) if done else None,
        "load_generator_cpu_s": round(client_cpu, 2),
        "load_generator_cpu_ms_per_request": round(client_cpu * 1000 / done, 2) if done else None,
        "postgres_cpu_s": round(postgres_cpu, 2),  # every postgres process: run under the machine lock
        # Shares of the machine's CPU time during the run (all cores): who used the two cores.
        "cpu_share": {
            "server": _share(server_cpu, machine_total),
            "load_generator": _share(client_cpu, machine_total),
            "postgres": _share(postgres_cpu, machine_total),
            "machine_busy": _share(machine_busy, machine_total),
            "stolen_by_the_hypervisor": _share(steal, machine_total),  # a noisy neighbour
        },
        "load_average_1m": round(os.getloadavg()[0], 2),
        "accounted": checks,
    }


def seed(engine: Engine, n: int, rng: random.Random) -> tuple[list[str], list[str], list[bool]]:
    """n patients (own numbers), each enrolled in a shipped campaign with its invite sent; also
    whether each patient's campaign hands a YES to the care team."""
    campaigns = load_campaigns(ROOT / "campaigns", settings=get_settings())
    ids = sorted(campaigns)
    yes_handoff = {c: any("YES" in r.keywords and r.handoff for r in campaigns[c].replies) for c in ids}
    phones = [f"+1617{200 + i // 10_000:03d}{i % 10_000:04d}" for i in range(n)]
    sids = [f"SM{uuid.UUID(int=rng.getrandbits(128)).hex}" for _ in range(n)]
    with engine.begin() as conn:
        conn.execute(
            insert(Campaign), [{"id": c, "name": campaigns[c].name, "content_hash": "bench"} for c in ids]
        )
        conn.execute(
            insert(Patient),
            [
                {
                    "id": i + 1,
                    "mrn": f"B{i:07d}",
                    "first_name": rng.choice(["Ana", "Luis", "Mary", "John", "Mei", "Omar"]),
                    "last_name": "Bench",
                    "birth_date": dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(9000)),
                    "sex": rng.choice(["female", "male"]),
                    "phone": phones[i],
                    "language": "es" if rng.random() < 0.2 else "en",
                    "active": True,
                }
                for i in range(n)
            ],
        )
        conn.execute(
            insert(Enrollment),
            [
                {
                    "id": i + 1,
                    "patient_id": i + 1,
                    "campaign_id": ids[i % len(ids)],
                    "cycle": 1,
                    "enrolled_on": NOW.date(),
                    "enrolled_at": NOW,
                    "language": "en",
                }
                for i in range(n)
            ],
        )
        sent_at = NOW - dt.timedelta(minutes=5)
        conn.execute(
            insert(Message),
            [
                {
                    "enrollment_id": i + 1,
                    "step_id": campaigns[ids[i % len(ids)]].steps[0].id,
                    "kind": MessageKind.outreach,
                    "phone": phones[i],
                    "body": "invite",
                    "segments": 1,
                    "status": MessageStatus.sent,
                    "send_at": sent_at,
                    "attempts": 1,
                    "provider_sid": sids[i],
                    "planned_at": sent_at,
                    "queued_at": sent_at,
                    "sending_at": sent_at,
                    "sent_at": sent_at,
                    "updated_at": sent_at,
                }
                for i in range(n)
            ],
        )
        for table in ("patients", "enrollments", "messages"):
            conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {n})"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    return sids, phones, [yes_handoff[ids[i % len(ids)]] for i in range(n)]


def build_jobs(
    public: str, sids: list[str], phones: list[str], handoff_on_yes: list[bool], rng: random.Random
) -> list[list[Request]]:
    """Signed requests, prepared before the clock starts: a message's callbacks are one job (sent
    in order), each reply is a job of its own; jobs are shuffled so both kinds interleave."""
    validator = RequestValidator(TOKEN)

    def request(kind: str, path: str, form: dict[str, str], sid: str, handoff: bool = False) -> Request:
        signature = validator.compute_signature(public + path, form)
        return Request(kind, path, urlencode(form).encode(), signature, sid, handoff)

    jobs: list[list[Request]] = []
    for sid, phone in zip(sids, phones, strict=True):
        jobs.append(
            [
                request(
                    state,
                    "/twilio/status",
                    {"MessageSid": sid, "MessageStatus": state, "AccountSid": "AC" + "0" * 32, "To": phone},
                    sid,
                )
                for state in CALLBACKS
            ]
        )
    weights = [share for _, share, _ in REPLIES]
    for i, phone in enumerate(phones):
        kind, _, bodies = rng.choices(REPLIES, weights)[0]
        sid = f"SMin{i:030d}"
        form = {
            "MessageSid": sid,
            "AccountSid": "AC" + "0" * 32,
            "From": phone,
            "To": SENDER,
            "Body": rng.choice(bodies),
            "NumMedia": "0",
        }
        handoff = kind == "free" or (kind == "yes" and handoff_on_yes[i])
        jobs.append([request(kind, "/twilio/inbound", form, sid, handoff)])
    rng.shuffle(jobs)
    return jobs


async def load(
    public: str, jobs: list[list[Request]], concurrency: int, seconds: float, rate: float | None = None
) -> tuple[Tally, float, float]:
    """Closed loop: `concurrency` clients take jobs until none are left or time is up (a job in
    flight finishes). With `rate`, open loop (bench/arrivals.py): jobs are due so that `rate`
    requests arrive per second; a job's first request is timed from when it was due, each later
    one (a message's next callback) from when the one before it was answered."""
    tally = Tally()
    queue = iter(jobs)
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    deadline = started + seconds
    timeout = aiohttp.ClientTimeout(total=30)
    limit = 512 if rate else concurrency
    connector = aiohttp.TCPConnector(limit=limit)
    async with aiohttp.ClientSession(public, connector=connector, timeout=timeout) as session:

        async def run_job(job: list[Request], due: float) -> None:
            for req in job:
                if not await _post(session, req, tally, due):
                    break  # a failed callback: the later ones would only be out of order
                due = time.perf_counter()

        if rate:
            per_job = sum(len(job) for job in jobs) / len(jobs)
            seconds = min(seconds, len(jobs) * per_job / rate)
            schedule, elapsed = await at_rate(
                rate / per_job, seconds, lambda i, due: run_job(jobs[i], due), max_in_flight=limit
            )
            tally.schedule = {
                "skipped": schedule.skipped,
                "generator_late_ms_max": round(schedule.late_ms_max, 1),
            }
        else:

            async def client() -> None:
                for job in queue:
                    if time.perf_counter() >= deadline:
                        return
                    await run_job(job, time.perf_counter())

            await asyncio.gather(*(client() for _ in range(concurrency)))
            elapsed = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return tally, elapsed, cpu


async def _post(session: aiohttp.ClientSession, req: Request, tally: Tally, started: float) -> bool:
    """One signed POST; its latency counts from `started` (when it was due)."""
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": req.signature}
    try:
        async with session.post(req.path, data=req.body, headers=headers) as response:
            await response.read()
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        tally.errors[type(exc).__name__] += 1
        return False
    tally.latencies_ms.append((time.perf_counter() - started) * 1000)
    tally.statuses[status] += 1
    if status >= 300:
        tally.errors[f"http {status}"] += 1
        return False
    tally.sent[req.kind] += 1
    if req.path == "/twilio/status":
        tally.last_callback[req.sid] = req.kind
    else:
        tally.replies_ok.add(req.sid)
        tally.handoffs += req.handoff
    return True


def verify(engine: Engine, tally: Tally, dispatched: int) -> dict[str, Any]:
    """What the database holds against what was acknowledged; `ok` is true only if all agree."""
    with engine.connect() as conn:
        by_class = select(InboundMessage.classification, func.count()).group_by(InboundMessage.classification)
        inbound = {kind: count for kind, count in conn.execute(by_class)}
        stored_sids = set(conn.scalars(select(InboundMessage.provider_sid)))
        opted_out = conn.scalar(
            select(func.count()).select_from(PhoneConsent).where(PhoneConsent.opted_out_at.is_not(None))
        )
        handoffs = conn.scalar(select(func.count()).select_from(Handoff))
        answers = conn.scalar(
            select(func.count()).select_from(Message).where(Message.kind == MessageKind.answer)
        )
        finals = {
            sid: (status, provider_status)
            for sid, status, provider_status in conn.execute(
                select(Message.provider_sid, Message.status, Message.provider_status).where(
                    Message.kind == MessageKind.outreach
                )
            )
        }
    wrong_final = sum(
        1 for sid, final in finals.items() if final != EXPECTED_FINAL[tally.last_callback.get(sid or "")]
    )
    yes, stop, free = tally.sent["yes"], tally.sent["stop"], tally.sent["free"]
    checks = {
        "inbound_rows": sum(inbound.values()),
        "inbound_requests_ok": len(tally.replies_ok),
        "inbound_sids_match": stored_sids == tally.replies_ok,
        "classified": dict(sorted((str(k), v) for k, v in inbound.items())),
        "opted_out_numbers": opted_out,
        "stop_replies": stop,
        "handoffs": handoffs,
        "handoffs_expected": tally.handoffs,
        "answers_queued": answers,
        "answer_tasks_dispatched": dispatched,
        "yes_replies": yes,
        "messages_delivered": sum(1 for final in finals.values() if final[0] == MessageStatus.delivered),
        "delivered_callbacks": tally.sent["delivered"],
        "messages_with_wrong_final_status": wrong_final,
    }
    checks["ok"] = bool(
        checks["inbound_sids_match"]
        and checks["inbound_rows"] == len(tally.replies_ok)
        and inbound.get("keyword", 0) == yes
        and inbound.get("opt_out", 0) == stop == opted_out
        and inbound.get("help", 0) == tally.sent["help"]
        and inbound.get("free_text", 0) + inbound.get("question", 0) == free
        and handoffs == tally.handoffs
        and answers == yes == dispatched
        and wrong_final == 0
        and checks["messages_delivered"] == tally.sent["delivered"]
    )
    return checks


def _server_env(url: str, public: str, broker_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OUTREACH_", "TWILIO_"))}
    env.update(
        {
            "OUTREACH_DATABASE_URL": url,
            "OUTREACH_PUBLIC_URL": public,
            "OUTREACH_BROKER_URL": broker_url,
            "OUTREACH_CAMPAIGNS_DIR": str(ROOT / "campaigns"),
            "OUTREACH_CLINIC_NAME": "Riverside Health",
            "OUTREACH_CLINIC_PHONE": "(617) 555-0100",
            "TWILIO_AUTH_TOKEN": TOKEN,
            "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
            "TWILIO_FROM_NUMBER": SENDER,
        }
    )
    return env


@contextlib.contextmanager
def _server(workers: int, port: int, env: dict[str, str], log_path: Path, extra: list[str]) -> Iterator[int]:
    """`outreach web` as an operator starts it; ready when /healthz answers 200."""
    outreach = Path(sys.executable).with_name("outreach")
    command = [str(outreach), "web", "--port", str(port), "--workers", str(workers), *extra]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            _wait_healthy(port, process, log_path)
            print(f"outreach web ready: pid {process.pid}, port {port}", file=sys.stderr, flush=True)
            yield process.pid
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _wait_healthy(port: int, process: subprocess.Popen[bytes], log_path: Path) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"outreach web exited ({process.returncode}):\n{log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"outreach web not healthy after 60 s:\n{log_path.read_text()[-2000:]}")


def _cpu_where(wanted: Callable[[int, str, list[str]], bool]) -> float:
    """CPU seconds (user + system) used so far by the processes `wanted(pid, name, fields)` picks,
    from /proc/<pid>/stat (`fields` are those after the command name)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            head, _, rest = (entry / "stat").read_text().rpartition(")")
        except OSError:
            continue  # exited meanwhile
        fields = rest.split()
        if wanted(int(entry.name), head.partition("(")[2], fields):
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def _tree_cpu(pid: int) -> float:
    """CPU seconds used so far by a process and its children (uvicorn's workers)."""
    return _cpu_where(lambda found, _name, fields: found == pid or int(fields[1]) == pid)


def _postgres_cpu() -> float:
    """CPU seconds used so far by every process named postgres (the server and its backends)."""
    return _cpu_where(lambda _pid, name, _fields: name == "postgres")


def _machine_cpu() -> tuple[float, float, float]:
    """(busy, total, stolen) CPU seconds of the whole machine so far, all cores (/proc/stat)."""
    ticks = os.sysconf("SC_CLK_TCK")
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    values += [0] * (8 - len(values))
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already inside user time
    return (total - idle - values[7]) / ticks, total / ticks, values[7] / ticks


def _share(part: float, whole: float) -> float | None:
    return round(part / whole, 3) if whole > 0 else None


def _count_errors(log_path: Path) -> int:
    """Tracebacks and 5xx access lines in the server's own log."""
    lines = log_path.read_text(errors="replace").splitlines()
    return sum(1 for line in lines if "Traceback" in line or '" 5' in line)


def _pct(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def _passed(run: dict[str, Any]) -> bool:
    schedule = run["open_loop_schedule"]
    # Open loop: the rate asked for was served if no job had to be skipped.
    served = (
        float(run["load"].split()[2]) >= TARGET_RPS and not schedule["skipped"]
        if schedule
        else (run["requests_per_s"] or 0) >= TARGET_RPS
    )
    return bool(
        served
        and (run["latency_ms"]["p99"] or 1e9) <= TARGET_P99_MS
        and run["errors"] == 0
        and run["server_log_errors"] == 0
        and run["accounted"]["ok"]
    )


def summary(figures: dict[str, Any]) -> str:
    parts = []
    for r in figures["runs"]:
        mark = "ok" if _passed(r) else "MISSED"
        parts.append(
            f"{r['workers']} worker{'s' if r['workers'] > 1 else ''} ({r['load']}): "
            f"{r['requests']:,} requests in "
            f"{r['seconds']} s = {r['requests_per_s']:,}/s, p50 {r['latency_ms']['p50']} ms, "
            f"p99 {r['latency_ms']['p99']} ms, {r['errors']} errors, "
            f"{'all accounted for' if r['accounted']['ok'] else 'NOT all accounted for'} [{mark}]"
        )
    return (
        f"webhooks on postgresql ({figures['cpus']} cpus, target >= {TARGET_RPS}/s, p99 <= "
        f"{TARGET_P99_MS:g} ms, 0 errors): " + "; ".join(parts)
    )


if __name__ == "__main__":
    sys.exit(main())
