"""`outreach demo`: the whole loop on one machine with nothing installed or running, in a minute or two.

Everything is real except the patients and the calendar: a SQLite database, the shipped sample
roster and campaign files, a Celery worker in this process on the in-memory broker, the official
twilio client talking to the sandbox, the sandbox's signed status callbacks and simulated replies
(outreach/sandbox/patients.py) arriving at `outreach web`'s webhooks, and the funnel report.

The calendar is simulated: the scheduler, the workers and the webhooks all read one clock that
jumps an hour at a time over several campaign days (so 7-day reminders happen), starting on the
day the sample roster was drawn up, Monday 2026-11-23 at 07:00 in New York. After each jump the
demo waits (bounded) until everything the jump set off has settled: due messages sent, their
status callbacks recorded, and the replies they drew answered; only then does the clock move on.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn
from sqlalchemy import Engine, select

import outreach
from outreach.apps.demo_figures import Figures, count_figures
from outreach.apps.demo_outcomes import LinkVisitors, write_followup_events
from outreach.campaigns import CampaignFile
from outreach.config import Settings
from outreach.errors import UserError
from outreach.outcomes.funnel import FunnelReport, funnel
from outreach.sandbox import SandboxConfig, SandboxServer
from outreach.sandbox.patients import PatientsConfig, SimulatedPatients
from outreach.send.dispatch import Dispatch
from outreach.store.db import session_scope
from outreach.store.models import Message, MessageStatus

START = dt.datetime(2026, 11, 23, 12, 0)  # naive UTC: Monday 07:00 in New York, the sample's day
STEP = dt.timedelta(hours=1)
DEFAULT_DAYS = 10
FAST_DAYS = 3
DEFAULT_SEED = 2026
ZONE = "America/New_York"

DEMO_ACCOUNT_SID = (
    "AC" + "de" * 16
)  # fixed fake credentials: the sandbox accepts them, Twilio never sees them
DEMO_AUTH_TOKEN = "outreach-demo-token"
DEMO_FROM = "+16175550190"
DEMO_CLINIC = ("Riverside Health", "(617) 555-0199")

SETTLE_TIMEOUT_S = 30.0
POLL_S = 0.02
NUDGE_S = 0.25
_SANDBOX_FINAL = {"delivered", "undelivered", "failed"}


class DemoClock:
    """The one simulated "now" (naive UTC) shared by the scheduler, the worker threads and the web app."""

    def __init__(self, start: dt.datetime) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> dt.datetime:
        with self._lock:
            return self._now

    def set(self, when: dt.datetime) -> None:
        with self._lock:
            self._now = when


@dataclass(frozen=True)
class DemoResult:
    database: Path
    start: dt.datetime
    end: dt.datetime
    figures: Figures
    report: FunnelReport  # counted before a temporary database goes away
    unsettled: int  # clock steps whose work did not settle within SETTLE_TIMEOUT_S
    seconds: float

    def span(self) -> str:
        return f"simulated {_label(self.start)} to {_label(self.end)} ({ZONE}) in {self.seconds:.0f} s"


SHIPPED = ("samples/roster.csv", "samples/events.csv", "campaigns")  # what the demo reads, under a root


def repo_root() -> Path:
    """Where the shipped samples and campaigns live: a source checkout, else the installed package.

    In a checkout (the package imported from `<root>/outreach`) they are `<root>/samples` and
    `<root>/campaigns`, so edits there show in the demo. An installed wheel carries copies of them
    as package data in `outreach/_data/` (pyproject.toml maps the two folders there at build time),
    found through importlib.resources; the same relative layout, so callers join the same paths.
    """
    checkout = Path(outreach.__file__).resolve().parents[1]
    data = resources.files(outreach).joinpath("_data")
    roots = [checkout, data] if isinstance(data, Path) else [checkout]  # wheels install unzipped
    for root in roots:
        if all((root / name).exists() for name in SHIPPED):
            return root
    nearest = checkout if (checkout / "pyproject.toml").exists() else roots[-1]  # a checkout, else the wheel
    missing = [str(nearest / name) for name in SHIPPED if not (nearest / name).exists()]
    raise UserError(
        "the demo needs the sample roster and campaigns that ship with outreach (in a source checkout "
        f"or an installed wheel); missing: {', '.join(missing)}; restore them or reinstall outreach"
    )


def run_demo(
    *,
    keep: Path | None = None,
    days: int = DEFAULT_DAYS,
    seed: int = DEFAULT_SEED,
    console: Console | None = None,
    start: dt.datetime = START,
    step: dt.timedelta = STEP,
) -> DemoResult:
    """Run the demo; with `keep`, the database stays in keep/outreach.db, else in a temporary directory."""
    if days < 1:
        raise UserError("--days must be at least 1")
    console = console or Console(stderr=True)
    root = repo_root()
    with ExitStack() as stack:
        if keep is None:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="outreach-demo-")))
        else:
            directory = keep
            directory.mkdir(parents=True, exist_ok=True)
        database = directory / "outreach.db"
        if database.exists():
            raise UserError(f"{database} already exists; give --keep an empty or new directory")
        where = f"database {database}" if keep is not None else "a temporary database (--keep DIR keeps it)"
        console.print(f"[bold]outreach demo[/bold]: {escape(where)}", soft_wrap=True, highlight=False)
        return _run(stack, root, database, days=days, seed=seed, console=console, start=start, step=step)
    raise AssertionError("unreachable")  # pragma: no cover - ExitStack does not swallow exceptions


@dataclass
class _World:
    """What the demo runs: the clock everything reads, the simulated patients, the sandbox, the
    database and the loaded campaigns, and the worker's dispatch once it runs."""

    clock: DemoClock
    patients: SimulatedPatients
    sandbox: SandboxServer
    settings: Settings
    engine: Engine
    campaigns: dict[str, CampaignFile]
    directory: Path
    seed: int
    dispatch: Dispatch | None = None
    visitors: LinkVisitors | None = None

    def settled(self) -> bool:
        return _settled(self.engine, self.sandbox, self.patients)

    def sweep(self) -> None:
        """The beat's sweeper pass: it also applies status callbacks that beat the sender's commit."""
        from outreach.runtime import get_runtime
        from outreach.send import sweeper

        provider = get_runtime().provider
        sweeper.sweep(self.engine, provider=provider, dispatch=self.dispatch, now=self.clock())


def _run(
    stack: ExitStack,
    root: Path,
    database: Path,
    *,
    days: int,
    seed: int,
    console: Console,
    start: dt.datetime,
    step: dt.timedelta,
) -> DemoResult:
    began = time.monotonic()
    web_socket = stack.enter_context(_loopback_socket())
    world = _start(stack, root, database, web_socket, seed=seed, start=start, console=console)
    world.dispatch = stack.enter_context(_embedded_worker(world.clock))
    stack.enter_context(
        _web(web_socket, world.settings, world.engine, world.campaigns, world.dispatch, world.clock)
    )
    end = start + int(dt.timedelta(days=days) / step) * step
    unsettled = _simulate(world, start, end, step, console)
    return DemoResult(
        database=database,
        start=start,
        end=end,
        figures=count_figures(world.engine),
        report=funnel(world.engine, campaigns=world.campaigns, on=_local(end).date()),
        unsettled=unsettled,
        seconds=time.monotonic() - began,
    )


def _start(
    stack: ExitStack,
    root: Path,
    database: Path,
    web_socket: socket.socket,
    *,
    seed: int,
    start: dt.datetime,
    console: Console,
) -> _World:
    """The sandbox and the settings pointing at it, a migrated database with the samples loaded."""
    from outreach.campaigns import load_campaigns
    from outreach.config import get_settings
    from outreach.store.db import engine_for, upgrade

    patients = SimulatedPatients(PatientsConfig(seed=seed, delay_s=(0.02, 0.2)))
    public_url = f"http://127.0.0.1:{web_socket.getsockname()[1]}"
    sandbox = SandboxServer(
        DEMO_ACCOUNT_SID,
        DEMO_AUTH_TOKEN,
        config=SandboxConfig(
            sent_after_s=0.05, delivered_after_s=0.05, inbound_url=f"{public_url}/twilio/inbound", seed=seed
        ),
        replies=patients,
    )
    stack.enter_context(sandbox)
    url = f"sqlite:///{database}"
    stack.enter_context(_environment(_demo_settings(url, root, sandbox.url, public_url)))
    settings = get_settings()
    engine = engine_for(url)
    stack.callback(engine.dispose)
    upgrade(engine)
    _load_samples(engine, root, settings, console, today=_local(start).date())
    campaigns = load_campaigns(root / "campaigns", settings=settings)
    console.print(f"  campaigns: {', '.join(campaigns)}", soft_wrap=True, highlight=False)
    return _World(
        DemoClock(start),
        patients,
        sandbox,
        settings,
        engine,
        campaigns,
        database.parent,
        seed,
        None,
        LinkVisitors(seed),
    )


def _demo_settings(url: str, root: Path, sandbox_url: str, public_url: str) -> dict[str, str]:
    """The demo's whole configuration, as the environment variables an operator would set."""
    return {
        "OUTREACH_DATABASE_URL": url,
        "OUTREACH_CAMPAIGNS_DIR": str(root / "campaigns"),
        "OUTREACH_BROKER_URL": "memory://",
        "TWILIO_ACCOUNT_SID": DEMO_ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": DEMO_AUTH_TOKEN,
        "TWILIO_FROM_NUMBER": DEMO_FROM,
        "TWILIO_MESSAGING_SERVICE_SID": "",
        "OUTREACH_TWILIO_API_URL": sandbox_url,
        "OUTREACH_PUBLIC_URL": public_url,
        "OUTREACH_SEND_RATE": "1000",  # the sandbox has no carrier to protect
        "OUTREACH_DEFAULT_REGION": "US",
        "OUTREACH_DEFAULT_TIMEZONE": ZONE,
        "OUTREACH_CLINIC_NAME": DEMO_CLINIC[0],
        "OUTREACH_CLINIC_PHONE": DEMO_CLINIC[1],
        "OUTREACH_DAILY_CAP": "1",
        "OUTREACH_WEEKLY_CAP": "3",
        "OUTREACH_TWILIO_ADVANCED_OPT_OUT": "false",
    }


def _load_samples(
    engine: Engine, root: Path, settings: Settings, console: Console, *, today: dt.date
) -> None:
    from outreach.ingest import roster

    for path, load in (
        (root / "samples" / "roster.csv", roster.import_patients),
        (root / "samples" / "events.csv", roster.import_events),
    ):
        result = load(engine, path, settings=settings, today=today)
        console.print(f"  imported {path.name}: {result.accepted} rows", soft_wrap=True, highlight=False)


def _simulate(
    world: _World, start: dt.datetime, end: dt.datetime, step: dt.timedelta, console: Console
) -> int:
    """Move the clock an hour at a time from `start` to `end`, running the scheduler and the
    sweeper at each hour and waiting for what they set off; returns the hours that did not settle."""
    from outreach.plan import scheduler

    steps = int((end - start) / step)
    unsettled = 0
    with Progress(
        TextColumn("[bold]{task.fields[when]}"),
        BarColumn(bar_width=24),
        TextColumn("{task.fields[figures]}"),
        console=console,
    ) as progress:
        task = progress.add_task("days", total=steps, when=_label(start), figures="")
        for index in range(steps):
            now = start + index * step
            world.clock.set(now)
            scheduler.tick(
                world.engine, world.campaigns, settings=world.settings, now=now, dispatch=world.dispatch
            )
            world.sweep()
            unsettled += not _wait(world.settled, world.sweep)
            _outcomes(world, index, steps, now, console)
            live = count_figures(world.engine).live()
            progress.update(task, advance=1, when=_label(now + step), figures=live)
    world.clock.set(end)
    return unsettled + (not _wait(world.settled, world.sweep))


def _outcomes(world: _World, index: int, steps: int, now: dt.datetime, console: Console) -> None:
    """Patients open their links (demo_outcomes.py); halfway through, an events file arrives with
    screenings in both arms, which the next tick finds as closed care gaps."""
    if world.visitors is not None:
        world.visitors.visit(world.sandbox.messages(), index)
    if index == steps // 2:
        from outreach.ingest import roster

        path = world.directory / "events-followup.csv"
        today = _local(now).date()
        rows = write_followup_events(world.engine, world.campaigns, path, today, world.seed)
        roster.import_events(world.engine, path, settings=world.settings, today=today)
        console.print(f"  imported {path.name}: {rows} screenings since enrollment", highlight=False)


def _local(when: dt.datetime) -> dt.datetime:
    return when.replace(tzinfo=dt.UTC).astimezone(ZoneInfo(ZONE))


def _label(when: dt.datetime) -> str:
    return _local(when).strftime("%a %Y-%m-%d %H:%M")


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """The demo's settings win over the shell and any .env; the caller's environment comes back after."""
    from outreach.config import get_settings
    from outreach.runtime import reset_runtime

    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    get_settings.cache_clear()
    reset_runtime()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        get_settings.cache_clear()
        reset_runtime()


@contextmanager
def _loopback_socket() -> Iterator[socket.socket]:
    """A free loopback port, bound now so its URL (the signatures' key) is known before the server runs."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock
    finally:
        sock.close()


@contextmanager
def _embedded_worker(clock: Callable[[], dt.datetime]) -> Iterator[Dispatch]:
    """A real Celery worker (thread pool) in this process on the in-memory broker; yields `dispatch`."""
    from celery.contrib.testing.worker import start_worker

    from outreach.runtime import get_runtime
    from workers import tasks
    from workers.app import app

    previous = app.conf.broker_url, app.conf.broker_transport_options
    # The in-memory transport polls its queues (every second by default): poll often, so each
    # simulated hour's texts go out at once.
    app.conf.update(broker_url="memory://", broker_transport_options={"polling_interval": 0.01})
    # Forget broker connections made earlier in this process (Celery's own reset after a fork;
    # private, so the stubs do not declare it).
    app._after_fork()  # type: ignore[attr-defined]
    get_runtime().clock = clock
    try:
        with start_worker(app, pool="threads", concurrency=4, perform_ping_check=False, shutdown_timeout=10):
            yield tasks.dispatch
    finally:
        app.conf.update(broker_url=previous[0], broker_transport_options=previous[1])
        app._after_fork()  # type: ignore[attr-defined]


@contextmanager
def _web(
    sock: socket.socket,
    settings: Settings,
    engine: Engine,
    campaigns: dict[str, CampaignFile],
    dispatch: Dispatch,
    clock: Callable[[], dt.datetime],
) -> Iterator[None]:
    """`outreach web` on the bound socket, in a thread, reading the simulated clock."""
    import asyncio

    import uvicorn

    from outreach.apps.web.app import create_app

    app = create_app(settings, dispatch=dispatch, engine=engine, campaigns=campaigns, clock=clock)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    thread = threading.Thread(
        target=lambda: asyncio.run(server.serve(sockets=[sock])), name="demo-web", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the demo's web app did not start")
        time.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def _wait(
    predicate: Callable[[], bool], nudge: Callable[[], object], timeout: float = SETTLE_TIMEOUT_S
) -> bool:
    """Poll until `predicate` holds (False after `timeout`), calling `nudge` each second it does not."""
    deadline = time.monotonic() + timeout
    next_nudge = time.monotonic() + NUDGE_S
    while not predicate():
        now = time.monotonic()
        if now > deadline:
            return False
        if now > next_nudge:
            nudge()
            next_nudge = now + NUDGE_S
        time.sleep(POLL_S)
    return True


def _settled(engine: Engine, sandbox: SandboxServer, patients: SimulatedPatients) -> bool:
    """Nothing in flight: no row being queued or sent, every accepted text final in the sandbox and
    in the outbox (its callbacks recorded), every delivered text shown to its patient, and every
    reply they decided on posted and stored."""
    with session_scope(engine) as s:
        if s.scalar(
            select(Message.id)
            .where(Message.status.in_((MessageStatus.queued, MessageStatus.sending)))
            .limit(1)
        ):
            return False
        rows = s.execute(
            select(Message.provider_sid, Message.status).where(Message.provider_sid.is_not(None))
        )
        outbox = {sid: status for sid, status in rows}
    for record in sandbox.messages():
        if record["status"] not in _SANDBOX_FINAL or outbox.get(record["sid"]) != record["status"]:
            return False
        if record["status"] == "delivered" and not patients.seen(record["sid"]):
            return False
    counters = sandbox.stats()["counters"]
    answered = counters.get("inbound_callbacks_ok", 0) + counters.get("inbound_callbacks_failed", 0)
    # A reply's webhook answers only after its transaction committed, so answered means stored.
    return bool(patients.planned == len(sandbox.inbound()) == answered)
