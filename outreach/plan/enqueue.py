"""Enqueueing: due rows move `planned → queued` and their ids go to the workers (DESIGN.md §7.5).

Its own job, apart from planning (DESIGN.md §10): it takes no planning lock and touches only rows
whose time has come, so a row that becomes due while a long planning pass runs is handed over
within seconds. Beat runs it every few seconds (`outreach.enqueue`); `outreach tick` runs it before
planning, after every chunk it plans, and at the end.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine, select, update

from outreach.send.dispatch import Dispatch
from outreach.store.db import session_scope
from outreach.store.models import Message, MessageStatus

ENQUEUE_CHUNK = 20  # ids per Celery task: big enough to amortize a task, small enough to spread


def enqueue_due(
    engine: Engine, now: dt.datetime, *, dispatch: Dispatch | None, batch: int = 5000
) -> list[int]:
    """Move due rows `planned → queued` and hand their ids to the workers, in chunks.

    The status change commits before dispatch: a crash in between leaves `queued` rows that the
    sweeper re-dispatches, never rows that were sent without being recorded.
    """
    queued: list[int] = []
    while True:
        with session_scope(engine) as session:
            due = (
                select(Message.id)
                .where(Message.status == MessageStatus.planned, Message.send_at <= now)
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
