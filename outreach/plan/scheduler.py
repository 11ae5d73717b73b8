"""One scheduler pass (`outreach tick`): enroll, plan due steps, enqueue what is due now.

Everything is decided from the database at `now` (injected), so a pass can run every minute from
Celery beat, twice at once, or after an outage, and still send each step once (the outbox's
unique (enrollment, step) key) at a time that fits the patient's window and the frequency cap.
Only rows whose time has come are handed to Celery: nothing waits inside the broker.

A pass is cut into shards and chunks (outreach/plan/shards.py): `tick` runs every shard in this
process, chunk after chunk, each chunk its own transaction; Celery runs the same `plan_shard` as
one task per shard on any worker (workers/tasks.py). What is due is enqueued before planning,
after every chunk and at the end (outreach/plan/enqueue.py), never behind a lock planning holds.
The jobs themselves live in their own modules: enroll.py, steps.py, enqueue.py.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, func, select, update
from sqlalchemy.orm import Session

from outreach.campaigns import CampaignFile, render_parts
from outreach.clock import clinic_today, utcnow
from outreach.config import Settings
from outreach.errors import UserError
from outreach.plan import shards as sharding
from outreach.plan.endings import end_enrollments
from outreach.plan.enqueue import ENQUEUE_CHUNK, Enqueuer, enqueue_due
from outreach.plan.enroll import enroll, enroll_candidates
from outreach.plan.marks import Marks, file_digest
from outreach.plan.shards import Chunk, Shard
from outreach.plan.steps import StepPlanner, due_candidates
from outreach.send.dispatch import Dispatch
from outreach.send.pause import paused_ids
from outreach.store import sql
from outreach.store.db import session_scope
from outreach.store.models import Campaign, Enrollment, Message, MessageStatus, Patient
from outreach.store.statuses import WAITING

log = logging.getLogger(__name__)

__all__ = [
    "ENQUEUE_CHUNK",
    "WAITING",
    "TickResult",
    "enqueue_due",
    "enroll",
    "plan_due_steps",
    "plan_shard",
    "prepare",
    "tick",
]

ChunkDone = Callable[[Chunk], None]
# A shard pass that wrote this many rows refreshes the planner's statistics of the tables it
# filled (DESIGN.md §10): the next pass finds its work with hash joins only if PostgreSQL knows
# how large enrollments and the outbox have become.
ANALYZE_AFTER = 10_000
# Planner threads of an in-process pass on PostgreSQL (`tick`): one per core of a small server.
PLANNERS = 2


@dataclass
class TickResult:
    enrolled: dict[str, int] = field(default_factory=dict)
    planned: int = 0
    canceled: int = 0
    queued: int = 0
    gap_closed: int = 0
    excluded: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "enrolled": self.enrolled,
            "planned": self.planned,
            "canceled": self.canceled,
            "queued": self.queued,
            "gap_closed": self.gap_closed,
            "excluded": self.excluded,
        }

    def add(self, other: TickResult) -> None:
        for campaign_id, count in other.enrolled.items():
            self.enrolled[campaign_id] = self.enrolled.get(campaign_id, 0) + count
        self.planned += other.planned
        self.canceled += other.canceled
        self.queued += other.queued
        self.gap_closed += other.gap_closed
        self.excluded += other.excluded


def planning_day(now: dt.datetime, settings: Settings) -> dt.date:
    """Campaign days (ages, look-backs, step offsets) are counted in the clinic's zone."""
    return clinic_today(settings.default_timezone, now)


def tick(
    engine: Engine,
    campaigns: dict[str, CampaignFile],
    *,
    settings: Settings,
    now: dt.datetime | None = None,
    dispatch: Dispatch | None = None,
    chunk_done: ChunkDone | None = None,
) -> TickResult:
    """Enroll, plan and enqueue, every shard in this process; `now` is naive UTC. Returns what
    changed. What is due is enqueued first, during the pass (`Enqueuer`) and at the end, so rows
    that come due while a long pass runs go out on time.

    On PostgreSQL the buckets are planned by `PLANNERS` threads, each a shard of its own with its
    own connection and bucket locks (as Celery's shard tasks would be): one thread's Python work
    (pacing, rendering) overlaps the other's statements in the database, on another core. The
    frequency cap stays exact because a number's rows are all in one bucket (shards.py). SQLite
    has one writer at a time, so there the pass is one walk."""
    now = now or utcnow()
    result = prepare(engine, campaigns, settings=settings, now=now)
    with Enqueuer(engine, now, dispatch) as enqueuer:

        def after_chunk(chunk: Chunk) -> None:
            enqueuer.run_once()
            if chunk_done is not None:
                chunk_done(chunk)

        planned = _plan_in_threads(engine, campaigns, settings=settings, now=now, chunk_done=after_chunk)
        result.add(planned)
    if _wrote_enough(planned):
        sql.analyze(engine, Enrollment.__table__, Message.__table__)  # type: ignore[arg-type]
    result.queued += enqueuer.queued
    return result


def _plan_in_threads(
    engine: Engine,
    campaigns: dict[str, CampaignFile],
    *,
    settings: Settings,
    now: dt.datetime,
    chunk_done: ChunkDone,
) -> TickResult:
    """Every bucket planned, by `PLANNERS` threads on PostgreSQL, in this thread on SQLite."""
    threads = _planner_count(engine)
    shards = [Shard(sharding.EVERY_BUCKET.buckets[i::threads]) for i in range(threads)]

    def plan(shard: Shard) -> TickResult:
        return _plan_shard(engine, campaigns, settings=settings, now=now, shard=shard, chunk_done=chunk_done)

    result = TickResult()
    if threads == 1:
        result.add(plan(shards[0]))
        return result
    searched = threading.Barrier(threads)

    def plan_after_every_search(shard: Shard) -> TickResult:
        try:
            return _plan_shard(
                engine,
                campaigns,
                settings=settings,
                now=now,
                shard=shard,
                chunk_done=chunk_done,
                searched=searched.wait,
            )
        except BaseException:
            searched.abort()  # the other threads stop waiting (BrokenBarrierError)
            raise

    with ThreadPoolExecutor(threads, thread_name_prefix="outreach-plan") as pool:
        for done in pool.map(plan_after_every_search, shards):
            result.add(done)
    return result


def prepare(
    engine: Engine, campaigns: dict[str, CampaignFile], *, settings: Settings, now: dt.datetime
) -> TickResult:
    """What a pass does once before its shards, in one short transaction: refuse texts that cannot
    be rendered (before any work), record the campaigns, end the enrollments that new events
    excluded or whose gap closed (outreach/plan/endings.py: set-based, and only when events, the
    day or the file changed), and cancel what will never go out."""
    on = planning_day(now, settings)
    check_texts(active(campaigns, on), settings)
    result = TickResult()
    with session_scope(engine) as session:
        _take_prepare_lock(session)
        sync_campaigns(session, campaigns)
        endings = end_enrollments(session, campaigns, on, now, settings.attribution_days)
        result.gap_closed, result.excluded, result.canceled = (
            endings.gap_closed,
            endings.excluded,
            endings.canceled,
        )
        for campaign in campaigns.values():
            if not campaign.is_active(on):
                result.canceled += cancel_pending(session, campaign.id, "campaign ended", now)
        result.canceled += cancel_replied_reminders(session, campaigns, now)
    return result


def active(campaigns: dict[str, CampaignFile], on: dt.date) -> list[CampaignFile]:
    return [campaign for campaign in campaigns.values() if campaign.is_active(on)]


def check_texts(campaigns: Iterable[CampaignFile], settings: Settings) -> None:
    """Render every step text of `campaigns` without a patient, so a setting a text needs and
    that is not set (OUTREACH_CLINIC_NAME for `{clinic_name}`) stops the pass in its first
    moment, naming the campaign, instead of after minutes of planning."""
    for campaign in campaigns:
        for step in campaign.steps:
            for variant, _, texts in step.wordings():
                for language, template in texts.items():
                    try:
                        render_parts(template, settings=settings, link=campaign.link)
                    except UserError as exc:
                        where = f"step {step.id}" + (f", variant {variant}" if variant else "")
                        raise UserError(f"campaign {campaign.id}, {where} ({language}): {exc}") from None


def _planner_count(engine: Engine) -> int:
    """`PLANNERS` on PostgreSQL when the roster spans more than one chunk of ids; otherwise one:
    a pass of a single chunk has nothing to overlap, and one walk keeps a small roster's outbox in
    patient order."""
    if engine.dialect.name != "postgresql":
        return 1
    with engine.connect() as conn:
        low, high = conn.execute(select(func.min(Patient.id), func.max(Patient.id))).one()
    return PLANNERS if low is not None and high - low >= sharding.CHUNK_IDS else 1


def plan_shard(
    engine: Engine,
    campaigns: dict[str, CampaignFile],
    *,
    settings: Settings,
    now: dt.datetime,
    shard: Shard = sharding.EVERY_BUCKET,
    chunk_done: ChunkDone | None = None,
) -> TickResult:
    """Enroll and plan the shard's patients, a chunk (one transaction) at a time, only where there
    is work. Buckets another planner is walking right now are left to it (PostgreSQL).
    Idempotent: after a crash, the next pass plans exactly what the committed chunks lack. A
    paused campaign (outreach/send/pause.py) enrolls and plans no one until it is resumed."""
    result = _plan_shard(engine, campaigns, settings=settings, now=now, shard=shard, chunk_done=chunk_done)
    if _wrote_enough(result):
        sql.analyze(engine, Enrollment.__table__, Message.__table__)  # type: ignore[arg-type]
    return result


def _wrote_enough(result: TickResult) -> bool:
    return sum(result.enrolled.values()) + result.planned + result.canceled >= ANALYZE_AFTER


def _plan_shard(
    engine: Engine,
    campaigns: dict[str, CampaignFile],
    *,
    settings: Settings,
    now: dt.datetime,
    shard: Shard,
    chunk_done: ChunkDone | None,
    searched: Callable[[], object] = lambda: None,
) -> TickResult:
    """`plan_shard` without the statistics refresh at its end (`tick` refreshes them once).
    `searched` is called once the shard's work is found, before its first write: `tick`'s threads
    wait there for each other, so no whole-shard search runs while another thread fills the
    tables it reads (with the statistics of the empty tables, PostgreSQL may rescan the growing
    enrollments table for every patient: a search of seconds became minutes)."""
    on = planning_day(now, settings)
    with session_scope(engine) as session:
        paused = paused_ids(session)
    planning = [campaign for campaign in active(campaigns, on) if campaign.id not in paused]
    result = TickResult(enrolled={campaign.id: 0 for campaign in planning})
    if not planning:
        searched()
        return result
    with engine.connect() as conn:
        mine = sharding.claim(conn, shard)
        if mine.buckets != shard.buckets:
            log.info("buckets of shard %s are being planned by another pass; left to it", shard.name)
        try:
            if not mine.buckets:
                searched()
            else:
                marks = Marks.read(conn, planning, mine, on)
                work, due = _work(conn, planning, mine, on, marks)
                searched()
                for chunk in sharding.chunks_for(mine, work):
                    with Session(bind=conn) as session:
                        sharding.begin_chunk(session.connection())
                        steps = due.get(chunk.first_id, set())
                        done = plan_chunk(
                            session, planning, chunk, on=on, now=now, settings=settings, due=steps
                        )
                        result.add(done)
                        session.commit()
                    if chunk_done is not None:
                        chunk_done(chunk)
                marks.write(conn)
        finally:
            sharding.release(conn, mine)
    return result


Due = dict[int, set[tuple[str, str]]]


def _work(
    conn: Connection, campaigns: list[CampaignFile], shard: Shard, on: dt.date, marks: Marks
) -> tuple[set[int], Due]:
    """The chunk ranges where a campaign has someone to enroll or a step to plan, and per range
    the (campaign, step) pairs with due rows; a search whose inputs did not change since the last
    complete pass is skipped (marks.py)."""
    starts: set[int] = set()
    due: Due = {}
    for campaign in campaigns:
        if marks.must_enroll(campaign.id):
            starts |= sharding.id_ranges(conn, enroll_candidates(campaign, on, shard))
        if not marks.must_plan(campaign.id):
            continue
        for index, step in enumerate(campaign.steps):
            previous = campaign.steps[index - 1].id if index else None
            found = sharding.id_ranges(conn, due_candidates(campaign, step, previous, on, shard))
            for start in found:
                due.setdefault(start, set()).add((campaign.id, step.id))
            starts |= found
    conn.commit()
    return starts, due


def plan_chunk(
    session: Session,
    campaigns: list[CampaignFile],
    chunk: Chunk | None,
    *,
    on: dt.date,
    now: dt.datetime,
    settings: Settings,
    due: set[tuple[str, str]] | None = None,
) -> TickResult:
    """Enroll the chunk's newly eligible patients in every campaign, then plan their due steps,
    with one frequency-cap state across the campaigns.

    `due`, from the pass's search (`_work`), names the (campaign, step) pairs with due rows in the
    chunk: only those steps are asked for their due rows, plus the first step of a campaign that
    enrolled someone here and any step whose previous one got rows here (`StepPlanner.plan`), the
    only ways a step comes due after the search: enrollments and outreach rows are made only by
    the planner, and the bucket locks keep every other planner out (marks.py). Most chunks of a
    first pass have only first steps to plan, and each step asked costs a query. Without `due`,
    every step is asked."""
    result = TickResult()
    with sql.no_bitmap_scans(session):
        for campaign in campaigns:
            result.enrolled[campaign.id] = enroll(session, campaign, on, now, chunk)
    planner = StepPlanner(session, chunk, on=on, now=now, settings=settings)
    for campaign in campaigns:
        with_work = None
        if due is not None:
            with_work = {step for campaign_id, step in due if campaign_id == campaign.id}
            if result.enrolled[campaign.id]:
                with_work.add(campaign.steps[0].id)
        planned, canceled = planner.plan(campaign, with_work)
        result.planned += planned
        result.canceled += canceled
    return result


def plan_due_steps(
    session: Session, campaign: CampaignFile, on: dt.date, now: dt.datetime, settings: Settings
) -> tuple[int, int]:
    """Create outbox rows for every step of `campaign` that has come due, for every patient at once
    (no chunk); returns (planned, canceled). The scheduler itself plans chunk by chunk."""
    return StepPlanner(session, None, on=on, now=now, settings=settings).plan(campaign)


def sync_campaigns(session: Session, campaigns: dict[str, CampaignFile]) -> None:
    """Keep the campaigns table (referenced by enrollments) in step with the files; an upsert, so
    passes starting at the same moment do not trip over each other's new rows."""
    table = Campaign.__table__
    for campaign in campaigns.values():
        digest = file_digest(campaign)
        statement = sql.upsert(Campaign, session).values(
            id=campaign.id, name=campaign.name, content_hash=digest, loaded_at=utcnow()
        )
        changed = (table.c.content_hash != digest) | (table.c.name != campaign.name)
        session.execute(
            statement.on_conflict_do_update(
                index_elements=[table.c.id],
                set_={
                    "name": campaign.name,
                    "content_hash": digest,
                    "loaded_at": statement.excluded.loaded_at,
                },
                where=changed,
            )
        )


def _take_prepare_lock(session: Session) -> None:
    """Serialize the short part of a pass that runs once before the shards (recording campaigns,
    cancelling), so two passes never update the same outbox rows in opposite orders. Held only for
    that transaction; planning itself locks per shard (shards.py), enqueueing not at all.

    PostgreSQL: a transaction-scoped advisory lock, keyed by schema so tenants sharing a server do
    not wait on each other. SQLite: a write at the start of the transaction takes the database's
    single write lock."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sql.advisory("pg_advisory_xact_lock", sql.Lock.PREPARE))
    else:
        sharding.begin_chunk(session.connection())


def cancel_pending(session: Session, campaign_id: str, reason: str, now: dt.datetime) -> int:
    """Pending rows of a campaign that ended will never go out: say so in the outbox."""
    enrollment_ids = select(Enrollment.id).where(Enrollment.campaign_id == campaign_id)
    result = session.execute(
        update(Message)
        .where(
            Message.enrollment_id.in_(enrollment_ids),
            Message.status.in_(WAITING),
        )
        .values(status=MessageStatus.canceled, canceled_at=now, cancel_reason=reason, updated_at=now)
    )
    return sql.rowcount(result)


def cancel_replied_reminders(session: Session, campaigns: dict[str, CampaignFile], now: dt.datetime) -> int:
    """A reply that arrives after a 'no reply' reminder was planned still stops that reminder."""
    canceled = 0
    for campaign in campaigns.values():
        steps = [step.id for step in campaign.steps if step.only_if == "no_reply"]
        if not steps:
            continue
        replied = select(Enrollment.id).where(
            Enrollment.campaign_id == campaign.id, Enrollment.replied_at.is_not(None)
        )
        result = session.execute(
            update(Message)
            .where(
                Message.enrollment_id.in_(replied),
                Message.step_id.in_(steps),
                Message.status.in_(WAITING),
            )
            .values(status=MessageStatus.canceled, canceled_at=now, cancel_reason="replied", updated_at=now)
        )
        canceled += sql.rowcount(result)
    return canceled
