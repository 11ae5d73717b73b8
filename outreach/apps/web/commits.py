"""Group commit for webhooks: several requests' database work in one transaction, then each answer.

A webhook must be durably stored before it is acknowledged, so each one costs a transaction; one
transaction per request makes the per-transaction costs (a pooled connection's checkout and ping,
BEGIN, COMMIT and its WAL flush, the session's set-up) a large share of a short webhook. Here a thread
takes every request waiting at that moment, runs their work one after another in ONE session and
transaction, commits, and only then answers each of them. Requests that arrive while a batch runs
form the next batch, so batches grow with the load and a lone request still goes alone (no waiting
for company). A second thread runs another batch meanwhile, so one batch's waits on the database
overlap the other's work. Durability is unchanged: nobody is answered before the commit that
holds their work.

Running the work serially in one transaction is equivalent to running it request by request
(each item sees the effects of the ones before it), so the webhook logic needs no change. If a batch
fails anywhere (a deadlock with another process, a lost connection, a bug an input triggers) the
batch is rolled back and every item is run again in a transaction of its own, so a failure only
reaches the request that causes it. Work must therefore be safe to run twice when the first run
was rolled back, which holds for any function that only touches the database through the session.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from outreach.store.db import session_scope

log = logging.getLogger(__name__)

T = TypeVar("T")
Work = Callable[[Session], T]

# Two threads, so one batch's round trips and COMMIT wait overlap the next batch's work; more only
# split the batches smaller and contend for the GIL (bench/README.md, webhooks section).
THREADS = 2
MAX_BATCH = 64  # bounds a batch's transaction (and so the locks it holds) under a burst
IDLE_SECONDS = 10.0  # an idle thread ends (an app in a test suite should not keep one forever)


@dataclass
class _Item(Generic[T]):
    work: Work[T]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]


class GroupCommit:
    """Runs `work(session)` for callers on event loops, batched into shared transactions."""

    def __init__(
        self,
        engine: Engine,
        *,
        threads: int = THREADS,
        max_batch: int = MAX_BATCH,
        idle_seconds: float = IDLE_SECONDS,
    ):
        self._engine = engine
        self._threads = threads
        self._max_batch = max_batch
        self._idle_seconds = idle_seconds
        self._pending: collections.deque[_Item[Any]] = collections.deque()
        self._ready = threading.Condition(threading.Lock())
        self._running = 0  # threads alive
        self._waiting = 0  # of which waiting for work

    async def run(self, work: Work[T]) -> T:
        """`work`'s result once the transaction it ran in is committed (its exception otherwise)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        item = _Item(work, loop, future)
        with self._ready:
            self._pending.append(item)
            if self._waiting:
                self._ready.notify()
            elif self._running < self._threads:
                self._running += 1
                threading.Thread(target=self._serve, name="webhook-commits", daemon=True).start()
        return await item.future

    def _serve(self) -> None:
        while True:
            with self._ready:
                while not self._pending:
                    self._waiting += 1
                    woken = self._ready.wait(self._idle_seconds)
                    self._waiting -= 1
                    if not woken and not self._pending:
                        self._running -= 1  # under the lock: the next `run` starts a thread
                        return
                batch = [self._pending.popleft() for _ in range(min(self._max_batch, len(self._pending)))]
            try:
                self._settle(batch, self._together(batch))
            except BaseException as exc:  # never leave a caller waiting forever
                log.exception("webhook batch of %s failed unexpectedly", len(batch))
                self._settle(batch, [(False, exc)] * len(batch))

    def _together(self, batch: list[_Item[Any]]) -> list[tuple[bool, Any]]:
        """Every item's result from one transaction; one transaction per item if that fails."""
        try:
            with session_scope(self._engine) as session:
                self._begin(session)
                results = [(True, item.work(session)) for item in batch]
            return results
        except Exception as exc:
            if len(batch) == 1:
                return [(False, exc)]
            log.warning(
                "a batch of %s webhooks failed (%s); running each on its own", len(batch), type(exc).__name__
            )
        return [self._alone(item) for item in batch]

    def _alone(self, item: _Item[Any]) -> tuple[bool, Any]:
        try:
            with session_scope(self._engine) as session:
                self._begin(session)
                result = item.work(session)
            return True, result
        except Exception as exc:
            return False, exc

    def _begin(self, session: Session) -> None:
        if self._engine.dialect.name == "sqlite":
            take_sqlite_write_lock(session)

    @staticmethod
    def _settle(batch: list[_Item[Any]], results: list[tuple[bool, Any]]) -> None:
        """Wake each caller on its own loop, one wake-up per loop for the whole batch."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for item, (ok, value) in zip(batch, results, strict=True):
            by_loop.setdefault(item.loop, []).append((item.future, ok, value))
        for loop, outcomes in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: its callers are gone
                loop.call_soon_threadsafe(_resolve, outcomes)


def take_sqlite_write_lock(session: Session, poll_s: float = 0.005) -> None:
    """Start the session's SQLite transaction as the writer (BEGIN IMMEDIATE), polling for the lock
    every `poll_s` instead of through SQLite's busy handler, for as long as the busy timeout.

    SQLite admits one writer at a time, and its busy handler backs off (1, 2, 5 ... up to 100 ms
    between tries), so a writer that has waited a while tries less often than newcomers: with a
    worker's 64 sending threads taking the lock meanwhile, a webhook batch starved for 4-8 s
    (bench/README.md, `--while-sending --sqlite`), close to the 10-15 s a callback's sender waits.
    Webhooks have that deadline and the sending threads do not, so the webhooks keep trying every
    few milliseconds. Taking the lock first also means the batch never has to upgrade a read to a
    write (which fails at once in WAL mode when another writer committed since the read began).
    """
    conn = session.connection()
    timeout_ms = int(conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one())
    conn.exec_driver_sql("PRAGMA busy_timeout = 0")
    deadline = time.monotonic() + timeout_ms / 1000
    try:
        while True:
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                return
            except OperationalError as exc:  # SQLAlchemy's: a 503 to the webhook when it gives up
                if "locked" not in str(exc.orig) or time.monotonic() >= deadline:
                    raise
            time.sleep(poll_s)
    finally:
        conn.exec_driver_sql(f"PRAGMA busy_timeout = {timeout_ms}")


def _resolve(outcomes: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in outcomes:
        if future.cancelled():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
