"""Planning in shards and chunks (DESIGN.md §10): a killed pass loses and repeats nothing, the
frequency cap holds across planners of different shards running at once, a row that is due is
enqueued while a planning pass holds its locks, and a setting a text needs is checked first.

Chunks are made tiny here (`CHUNK_IDS`), so a few dozen patients make many chunks.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, delete, event, func, select
from sqlalchemy.orm import Session

from outreach.apps.cli import main
from outreach.config import get_settings
from outreach.plan import scheduler, shards
from outreach.plan.eligibility import count_eligible
from outreach.plan.enqueue import enqueue_due
from outreach.plan.steps import OUTBOX_COLUMNS, StepPlanner
from outreach.store.db import session_scope
from outreach.store.models import Arm, Enrollment, Message, MessageStatus
from tests.factories import add_patient, campaign

NOW = dt.datetime(2026, 11, 23, 14, 0)  # Monday, 09:00 in New York
ROOT = Path(__file__).resolve().parent.parent
CAMPAIGNS = {c.id: c for c in (campaign(id=f"c{i}", name=f"C{i}") for i in range(3))}


@pytest.fixture
def tiny_chunks(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(shards, "CHUNK_IDS", 4)
    return 4


def _roster(session: Session, count: int, *, shared_every: int = 0) -> None:
    """`count` patients in New York; with `shared_every`, every that-many-th patient shares one
    number with the others doing so (a family), so one number spans many chunks."""
    for i in range(count):
        shared = shared_every and i % shared_every == 0
        add_patient(session, f"P{i:03d}", phone="(212) 555-0199" if shared else f"(212) 555-{1000 + i:04d}")
    session.commit()


def _outbox(engine: Engine) -> list[Message]:
    with session_scope(engine) as s:
        return list(s.scalars(select(Message)))


def _assert_cap(messages: list[Message], daily: int = 1, weekly: int = 3) -> None:
    """No number over the cap (DESIGN.md §7.9), counted in New York days and 7-day windows."""
    by_phone: dict[str, list[dt.datetime]] = {}
    for m in messages:
        if m.status != MessageStatus.canceled:
            by_phone.setdefault(m.phone, []).append(m.send_at)
    for phone, times in by_phone.items():
        days = Counter((t - dt.timedelta(hours=5)).date() for t in times)
        assert max(days.values()) <= daily, (phone, sorted(times))
        for start in times:
            assert sum(1 for t in times if start <= t < start + dt.timedelta(days=7)) <= weekly, phone


def _assert_complete(engine: Engine, patients: int) -> None:
    """Every patient enrolled once in each campaign, and each enrollment's first step planned once."""
    with session_scope(engine) as s:
        enrollments = list(s.execute(select(Enrollment.patient_id, Enrollment.campaign_id)))
        steps = list(s.execute(select(Message.enrollment_id, Message.step_id)))
        for c in CAMPAIGNS.values():
            assert count_eligible(s, c, NOW.date()) == patients
    assert len(enrollments) == len(set(enrollments)) == patients * len(CAMPAIGNS)
    assert len(steps) == len(set(steps)) == patients * len(CAMPAIGNS)
    assert {step for _, step in steps} == {"invite"}


_CHILD = """
import datetime as dt, sys
from outreach.config import get_settings
from outreach.plan import scheduler, shards
from outreach.store.db import engine_for
from tests.test_planning_chunks import CAMPAIGNS, NOW
shards.CHUNK_IDS = 4
done = []
def chunk_done(chunk):
    done.append(chunk)
    if len(done) == 3:
        print("three chunks committed", flush=True)
        sys.stdin.readline()  # wait here until killed
settings = get_settings()
engine = engine_for(settings.database_url)
scheduler.tick(engine, CAMPAIGNS, settings=settings, now=NOW, chunk_done=chunk_done)
print("finished", flush=True)
"""


def test_a_pass_killed_mid_way_loses_nothing_and_repeats_nothing(
    engine: Engine, session: Session, database_url: str, tiny_chunks: int
) -> None:
    _roster(session, 30, shared_every=7)
    env = {**os.environ, "OUTREACH_DATABASE_URL": database_url, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD],
        env=env,
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "three chunks committed"
        child.kill()  # SIGKILL: no cleanup, a chunk may be half-written in its transaction
    finally:
        child.wait(timeout=30)
    with session_scope(engine) as s:
        enrolled = s.scalar(select(func.count()).select_from(Enrollment))
    assert 0 < enrolled < 30 * len(CAMPAIGNS)  # killed part-way: some chunks committed, not all

    result = scheduler.tick(engine, CAMPAIGNS, settings=get_settings(), now=NOW)
    assert sum(result.enrolled.values()) == 30 * len(CAMPAIGNS) - enrolled
    _assert_complete(engine, 30)
    _assert_cap(_outbox(engine))
    again = scheduler.tick(engine, CAMPAIGNS, settings=get_settings(), now=NOW)
    assert (sum(again.enrolled.values()), again.planned) == (0, 0)


def test_the_cap_holds_with_planners_of_every_shard_and_two_whole_passes_at_once(
    engine: Engine, session: Session, tiny_chunks: int
) -> None:
    _roster(session, 24, shared_every=3)  # eight patients share one number, spread over the chunks
    settings = get_settings()
    scheduler.prepare(engine, CAMPAIGNS, settings=settings, now=NOW)  # what the tick task does first
    start = threading.Barrier(shards.BUCKETS + 2)
    errors: list[BaseException] = []

    def plan(shard: shards.Shard) -> None:
        try:
            start.wait(timeout=30)
            scheduler.plan_shard(engine, CAMPAIGNS, settings=settings, now=NOW, shard=shard)
        except BaseException as exc:  # reported below
            errors.append(exc)

    planners = [shards.EVERY_BUCKET, shards.EVERY_BUCKET, *shards.bucket_shards()]
    threads = [threading.Thread(target=plan, args=(shard,)) for shard in planners]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    scheduler.tick(engine, CAMPAIGNS, settings=settings, now=NOW)  # whatever a busy bucket left
    messages = _outbox(engine)
    _assert_complete(engine, 24)
    _assert_cap(messages)
    shared = [m for m in messages if m.phone == "+12125550199"]
    assert len(shared) == 8 * len(CAMPAIGNS)  # the family's 24 texts, paced one a day, three a week


@pytest.fixture
def postgres_only(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: a planning chunk and enqueueing take turns there")


def test_a_row_due_while_a_pass_holds_its_chunk_is_enqueued_without_waiting(
    engine: Engine, session: Session, postgres_only: None, tiny_chunks: int
) -> None:
    add_patient(session, "EARLY", phone="(212) 555-0001")
    session.commit()
    settings = get_settings()
    early = {"c0": CAMPAIGNS["c0"]}
    scheduler.tick(engine, early, settings=settings, now=NOW - dt.timedelta(days=1, hours=5))  # Sunday 04:00
    (due,) = [m.id for m in _outbox(engine)]  # planned for Sunday 09:00 New York, due at NOW
    _roster(session, 40)

    planner_thread: list[int] = []
    in_chunk, release = threading.Event(), threading.Event()

    def hold_first_commit(conn: object) -> None:
        if planner_thread and threading.get_ident() == planner_thread[0] and not in_chunk.is_set():
            in_chunk.set()  # the chunk's rows are written, its locks held, its commit not yet sent
            release.wait(timeout=60)

    def plan() -> None:
        scheduler.prepare(engine, CAMPAIGNS, settings=settings, now=NOW)
        planner_thread.append(threading.get_ident())
        scheduler.plan_shard(engine, CAMPAIGNS, settings=settings, now=NOW)

    event.listen(engine, "commit", hold_first_commit)
    planner = threading.Thread(target=plan)
    try:
        planner.start()
        assert in_chunk.wait(timeout=60)
        enqueued: list[list[int]] = []
        enqueuer = threading.Thread(target=lambda: enqueued.append(enqueue_due(engine, NOW, dispatch=None)))
        enqueuer.start()
        enqueuer.join(timeout=60)
        assert enqueued == [[due]]  # handed over while the pass still holds its chunk
        assert planner.is_alive()
    finally:
        release.set()
        planner.join(timeout=120)
        event.remove(engine, "commit", hold_first_commit)
    _assert_cap(_outbox(engine))
    assert len(_outbox(engine)) == 1 + 40 * len(CAMPAIGNS) + 2  # EARLY joins c1 and c2 too


def test_a_setting_a_text_needs_is_refused_before_any_work(
    engine: Engine, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    _roster(session, 5)
    monkeypatch.delenv("OUTREACH_CLINIC_NAME")
    get_settings.cache_clear()
    result = CliRunner().invoke(main, ["tick", "--no-dispatch", "--now", "2026-11-23T14:00:00Z"])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: campaign ") and "OUTREACH_CLINIC_NAME is not set" in line, line
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Enrollment)) == 0


def test_celery_tick_fans_out_a_shard_task_per_bucket_that_plans_everyone(
    engine: Engine, session: Session, tiny_chunks: int
) -> None:
    from celery.signals import task_postrun

    from outreach.runtime import reset_runtime
    from workers import app, tasks

    _roster(session, 12, shared_every=4)
    ran: list[tuple[str, list[int], object]] = []

    def record(task: object, args: tuple[object, ...], retval: object, **_: object) -> None:
        if getattr(task, "name", "") == "outreach.plan_shard":
            ran.append(("plan_shard", list(args[0]), retval))  # type: ignore[call-overload]

    task_postrun.connect(record, weak=False)
    app.conf.task_always_eager = True  # the shard tasks run here, one after another
    reset_runtime()
    try:
        night = dt.datetime(2026, 11, 23, 6, 0)  # 01:00 in New York: nothing is due yet
        tasks.tick.delay(night.isoformat())
    finally:
        app.conf.task_always_eager = False
        task_postrun.disconnect(record)
        reset_runtime()
    assert sorted(buckets for _, buckets, _ in ran) == [[b] for b in range(shards.BUCKETS)]
    with session_scope(engine) as s:
        enrolled = s.scalar(select(func.count()).select_from(Enrollment))
        treated = s.scalar(select(func.count()).where(Enrollment.arm == Arm.treated))
        statuses = Counter(s.scalars(select(Message.status)))
    assert enrolled == 12 * 4  # the four shipped campaigns all take a 56-year-old woman
    # colorectal holds out 10%: a holdout enrollment gets no first step
    assert sum(r["planned"] for _, _, r in ran) == treated  # type: ignore[index]
    assert statuses == {MessageStatus.planned: treated}
    assert treated is not None and 12 * 3 <= treated <= 12 * 4
    _assert_cap(_outbox(engine))


def test_an_outbox_row_another_planner_wrote_meanwhile_is_skipped_not_an_error(
    engine: Engine, session: Session, postgres_only: None
) -> None:
    """The outbox is written with a COPY straight into the table (no conflict is expected under
    the bucket locks); a batch that meets a row written meanwhile still goes in, that row skipped."""
    _roster(session, 2)
    settings = get_settings()
    scheduler.tick(engine, {"c0": CAMPAIGNS["c0"]}, settings=settings, now=NOW)
    rows = sorted(_outbox(engine), key=lambda m: m.id)
    assert len(rows) == 2
    batch = [tuple(getattr(m, column) for column in OUTBOX_COLUMNS) for m in rows]
    with session_scope(engine) as s:
        s.execute(delete(Message).where(Message.id == rows[1].id))  # the second still to be written
    with session_scope(engine) as s:
        StepPlanner(s, None, on=NOW.date(), now=NOW, settings=settings)._insert(batch)
    again = sorted(_outbox(engine), key=lambda m: m.id)
    assert [(m.enrollment_id, m.step_id, m.body) for m in again] == [
        (m.enrollment_id, m.step_id, m.body) for m in rows
    ]
    assert again[0].id == rows[0].id  # the row that existed is the same row, not a second copy
