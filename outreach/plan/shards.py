"""How a planning pass is cut up (DESIGN.md §10): shards by phone number, chunks by patient id.

**Shards.** Every patient belongs to one of `SHARDS` shards by the last four digits of their phone
number, so every patient sharing a number is in the same shard, and so is every outreach row
planned to that number. The frequency cap is a per-number rule, so one planner per shard keeps it
exact while the shards are planned at the same time by different workers or machines: no two
planners ever place texts to the same number at once. The count is a constant, not a setting:
planners that cut the numbers differently would overlap.

**Chunks.** A shard is walked in ranges of patient ids (`CHUNK_IDS` ids, about CHUNK_IDS / SHARDS
patients of the shard); each chunk is one transaction that enrolls its patients and plans their
due steps. Every write is idempotent through the unique keys (enrollments: patient x campaign x
cycle; outbox: enrollment x step), so a pass killed mid-way leaves whole chunks committed and the
next pass plans exactly what is missing.

**The shard lock.** On PostgreSQL a planner holds a session-level advisory lock on its shard
while it walks it, taken with `pg_try_advisory_lock`: a second planner arriving at a busy shard
leaves it to the first (which is already planning it) instead of waiting. The lock is keyed by
schema and shard, blocks nothing else (sending and enqueueing never take it), and goes away with
the connection if the planner dies. On SQLite each chunk's transaction starts with a write, which
takes the database's single write lock, so chunks are serialized there and the cap stays exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, Integer, cast, func, literal, select, text, true, update

from outreach.store.models import Campaign, Patient

SHARDS = 4
CHUNK_IDS = 100_000


@dataclass(frozen=True)
class Shard:
    """One of `count` disjoint sets of phone numbers (`index` in 0..count-1)."""

    index: int
    count: int = SHARDS

    def holds(self, phone: Any) -> ColumnElement[bool]:
        """SQL: the number in column `phone` is in this shard (E.164 numbers end in digits)."""
        if self.count == 1:
            return true()
        last_four = cast(func.substr(phone, func.length(phone) - 3), Integer)
        return last_four % self.count == self.index

    @property
    def name(self) -> str:
        return f"{self.index + 1}/{self.count}"


def all_shards(count: int = SHARDS) -> list[Shard]:
    return [Shard(index, count) for index in range(count)]


@dataclass(frozen=True)
class Chunk:
    """The patients of one shard whose id is in [first_id, end_id): one planning transaction."""

    shard: Shard
    first_id: int
    end_id: int

    def ids(self, column: Any) -> ColumnElement[bool]:
        """SQL: a patient id column is in this chunk's range (for tables keyed by patient id)."""
        return (column >= self.first_id) & (column < self.end_id)

    def patients(self) -> ColumnElement[bool]:
        """SQL: the `patients` row is one of this chunk's patients."""
        return self.ids(Patient.id) & self.shard.holds(Patient.phone)


def chunks(conn: Connection, shard: Shard, span: int = CHUNK_IDS) -> Iterator[Chunk]:
    """The shard's chunks, in id order, over the ids the roster has now (patients imported while
    a pass runs get the next pass)."""
    low, high = conn.execute(select(func.min(Patient.id), func.max(Patient.id))).one()
    conn.commit()
    if low is None:
        return
    for first in range(low, high + 1, span):
        yield Chunk(shard, first, first + span)


_TRY_LOCK = text("SELECT pg_try_advisory_lock(4242002, hashtext(current_schema()) # :index)")
_UNLOCK = text("SELECT pg_advisory_unlock(4242002, hashtext(current_schema()) # :index)")


def try_claim(conn: Connection, shard: Shard) -> bool:
    """Become the shard's only planner; False when another planner is walking it now."""
    if conn.dialect.name != "postgresql":
        return True
    claimed = bool(conn.execute(_TRY_LOCK, {"index": shard.index}).scalar_one())
    conn.commit()  # the lock is the session's, not the transaction's: chunks commit under it
    return claimed


def release(conn: Connection, shard: Shard) -> None:
    if conn.dialect.name == "postgresql":
        conn.rollback()
        conn.execute(_UNLOCK, {"index": shard.index})
        conn.commit()


def begin_chunk(conn: Connection) -> None:
    """SQLite: take the write lock at the start of a chunk's transaction, so the chunk reads the
    outbox as no other writer will change it before it commits (the cap's reads and writes are
    one step). PostgreSQL needs nothing: the shard lock already makes this planner the only one
    placing texts to the shard's numbers."""
    if conn.dialect.name == "sqlite":
        conn.execute(update(Campaign).where(literal(False)).values(name=Campaign.name))
    else:
        # A chunk's statements are estimated costly enough for PostgreSQL to compile them to
        # machine code (JIT), which took longer (~100 ms a statement) than running them.
        conn.exec_driver_sql("SET LOCAL jit = off")
