"""Enqueueing: due rows move `planned → queued` and their ids go to the workers (DESIGN.md §7.5).

Its own job, apart from planning (DESIGN.md §10): it takes no planning lock and touches only rows
whose time has come, so a row that becomes due while a long planning pass runs is handed over
within seconds. Beat runs it every few seconds (`outreach.enqueue`); `outreach tick` runs it before
planning, after every chunk it plans, every second meanwhile (PostgreSQL), and at the end.
"""

from __future__ import annotations

import datetime as dt
import threading

from sqlalchemy import Engine, select, update

from outreach.send.dispatch import Dispatch
from outreach.send.pause import held_by_pause
from outreach.store.db import session_scope
from outreach.store.models import Message, MessageStatus

ENQUEUE_CHUNK = 20  # ids per Celery task: big enough to amortize a task, small enough to spread


def enqueue_due(
    engine: Engine, now: dt.datetime, *, dispatch: Dispatch | None, batch: int = 5000
) -> list[int]:
    """Move due rows `planned → queued` and hand their ids to the workers, in chunks.

    Steps of a paused campaign stay `planned` (outreach/send/pause.py) until it is resumed.
    The status change commits before dispatch: a crash in between leaves `queued` rows that the
    sweeper re-dispatches, never rows that were sent without being recorded.
    """
    queued: list[int] = []
    while True:
        with session_scope(engine) as session:
            due = (
                select(Message.id)
                .where(
                    Message.status == MessageStatus.planned,
                    Message.send_at <= now,
                    ~held_by_pause(
                        Message.kind, Message.enrollment_id, many=True
                    ),  # a paused campaign's wait
                )
                .order_by(Message.send_at, Message.id)
                .limit(batch)
            )
            ids = list(
                session.scalars(
                    update(Message)
                    .where(Message.id.in_(due), Message.status == MessageStatus.planned)
                    .values(status=MessageStatus.queued, queued_at=now, updated_at=now)
                    .returning(Message.id)
                )
            )
        if not ids:
            return queued
        ids.sort()
        queued.extend(ids)
        if dispatch is not None:
            for start in range(0, len(ids), ENQUEUE_CHUNK):
                dispatch(ids[start : start + ENQUEUE_CHUNK])
        if len(ids) < batch:
            return queued


class Enqueuer:
    """Enqueueing alongside an in-process planning pass (`outreach tick`): `run_once` when asked
    (before planning, after every chunk, at the end) and, on PostgreSQL, every `every` seconds from
    a thread of its own, as beat's `outreach.enqueue` does for Celery, so a row that comes due in
    the middle of a long chunk waits a second, not the chunk. SQLite has one writer at a time,
    so there the chunks' ends are the moments. Runs never overlap; the thread's error, if any, is
    raised when the pass ends."""

    def __init__(
        self, engine: Engine, now: dt.datetime, dispatch: Dispatch | None, every: float = 1.0
    ) -> None:
        self.engine, self.now, self.dispatch, self.every = engine, now, dispatch, every
        self.queued = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._failed: BaseException | None = None
        self._thread: threading.Thread | None = None

    def run_once(self) -> None:
        with self._lock:
            self.queued += len(enqueue_due(self.engine, self.now, dispatch=self.dispatch))

    def __enter__(self) -> Enqueuer:
        self.run_once()
        if self.engine.dialect.name == "postgresql":
            self._thread = threading.Thread(target=self._loop, name="outreach-enqueue", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._failed is not None and exc[0] is None:
            raise self._failed
        if exc[0] is None:
            self.run_once()

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.run_once()
            except BaseException as error:  # raised by __exit__ in the planning thread
                self._failed = error
                return
