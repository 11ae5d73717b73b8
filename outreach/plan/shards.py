"""How a planning pass is cut up (DESIGN.md §10): shards by phone number, chunks by patient id.

**Buckets and shards.** Every patient falls in one of `BUCKETS` buckets by the last four digits of
their phone number, so every patient sharing a number is in the same bucket, and so is every
outreach row planned to that number. The frequency cap is a per-number rule, so one planner per
bucket at a time keeps it exact while different buckets are planned at once by different workers
or machines. A shard is a set of buckets: Celery plans one bucket per task (workers/tasks.py),
`outreach tick` all of them, in two threads of two buckets each on PostgreSQL (scheduler.py).
The bucket count is a constant, not a setting: planners that cut the numbers differently would
overlap.

**Bucket locks.** On PostgreSQL a planner holds a session-level advisory lock on each bucket it
plans, taken with `pg_try_advisory_lock`: a planner arriving at a busy bucket leaves it to the
one already planning it instead of waiting. The locks are keyed by schema and bucket, block
nothing else (sending and enqueueing never take them), and go away with the connection if the
planner dies. On SQLite each chunk's transaction starts with a write, which takes the database's
single write lock, so chunks are serialized there and the cap stays exact.

**Chunks.** A shard is walked in ranges of `CHUNK_IDS` patient ids, each one transaction that
enrolls its patients and plans their due steps; every write is idempotent through the unique
keys (enrollments: patient x campaign x cycle; outbox: enrollment x step), so a pass killed
mid-way leaves whole chunks committed and the next pass plans exactly what is missing. Only the
ranges that have work are walked: `ranges_with_work` asks the database once per campaign and step
for the whole shard (hash joins over the tables, the cheapest way to find nothing), so a pass with
nothing new costs a few set-based queries, not a walk over every patient.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    and_,
    cast,
    false,
    func,
    literal,
    select,
    true,
    update,
)

from outreach.store import sql
from outreach.store.models import Campaign, Patient

BUCKETS = 4
CHUNK_IDS = 25_000


@dataclass(frozen=True)
class Shard:
    """A set of phone-number buckets (each in 0..BUCKETS-1)."""

    buckets: tuple[int, ...]

    def holds(self, phone: Any) -> ColumnElement[bool]:
        """SQL: the number in column `phone` is in one of the shard's buckets (E.164 numbers end
        in digits); no condition at all when the shard is every bucket."""
        if set(self.buckets) >= set(range(BUCKETS)):
            return true()
        if not self.buckets:
            return false()
        last_four = cast(func.substr(phone, func.length(phone) - 3), Integer)
        return (last_four % BUCKETS).in_(self.buckets)

    @property
    def name(self) -> str:
        return "+".join(str(b) for b in self.buckets) or "none"


EVERY_BUCKET = Shard(tuple(range(BUCKETS)))


def bucket_shards() -> list[Shard]:
    """One shard per bucket: what beat fans out as Celery tasks."""
    return [Shard((bucket,)) for bucket in range(BUCKETS)]


@dataclass(frozen=True)
class Chunk:
    """The patients of one shard whose id is in [first_id, end_id): one planning transaction."""

    shard: Shard
    first_id: int
    end_id: int

    def ids(self, column: Any) -> ColumnElement[bool]:
        """SQL: a patient id column is in this chunk's range (for tables keyed by patient id)."""
        return and_(column >= self.first_id, column < self.end_id)

    def patients(self) -> ColumnElement[bool]:
        """SQL: the `patients` row is one of this chunk's patients."""
        return and_(self.ids(Patient.id), self.shard.holds(Patient.phone))


def range_of(patient_id: Any) -> Any:
    """SQL: the first id of the chunk range a patient id falls in."""
    return patient_id - patient_id % CHUNK_IDS


def chunks_for(shard: Shard, starts: Iterable[int]) -> list[Chunk]:
    return [Chunk(shard, start, start + CHUNK_IDS) for start in sorted(set(starts))]


_TRY_LOCK = sql.advisory("pg_try_advisory_lock", sql.Lock.BUCKET, plus=" # :bucket")
_UNLOCK = sql.advisory("pg_advisory_unlock", sql.Lock.BUCKET, plus=" # :bucket")


def claim(conn: Connection, shard: Shard) -> Shard:
    """Become the only planner of the shard's buckets that no other planner holds now; returns
    the buckets claimed (all of them on SQLite)."""
    if conn.dialect.name != "postgresql":
        return shard
    claimed = tuple(b for b in shard.buckets if conn.execute(_TRY_LOCK, {"bucket": b}).scalar_one())
    conn.commit()  # the locks are the session's, not the transaction's: chunks commit under them
    return Shard(claimed)


def release(conn: Connection, shard: Shard) -> None:
    if conn.dialect.name == "postgresql":
        conn.rollback()
        for bucket in shard.buckets:
            conn.execute(_UNLOCK, {"bucket": bucket})
        conn.commit()


def begin_chunk(conn: Connection) -> None:
    """Start a chunk's transaction. SQLite: take the write lock first, so the chunk reads the
    outbox as no other writer will change it before it commits (the cap's reads and writes are
    one step). PostgreSQL: the bucket locks already make this planner the only one placing texts
    to the shard's numbers; JIT is turned off, since a chunk's statements are estimated costly
    enough to be compiled to machine code, which took longer (~100 ms a statement) than running
    them."""
    if conn.dialect.name == "sqlite":
        conn.execute(update(Campaign).where(literal(False)).values(name=Campaign.name))
    else:
        sql.jit_off(conn)


def id_ranges(conn: Connection, query: Any) -> set[int]:
    """The chunk starts of the patient ids `query` (a one-column SELECT of patient ids) returns."""
    found = query.subquery()
    start = range_of(found.c[0])
    return set(conn.execute(select(start).group_by(start)).scalars())
