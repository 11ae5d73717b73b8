"""Pause benchmark: what the pause check costs the hot path, and how long a pause and a resume take.

    flock /tmp/outreach-bench.lock .venv/bin/python bench/pause.py            # 200,000 rows
    flock /tmp/outreach-bench.lock .venv/bin/python bench/pause.py --n 50000

On a private PostgreSQL schema (dropped at the end), two campaigns with N/2 enrollments and one due
`planned` outreach row each. Measures, each from the same starting state:

1. `enqueue_due` (planned → queued, batches of 5,000) as shipped, with the pause check, nothing
   paused; then the same UPDATE without the check (the statement before pause existed), for the
   difference;
2. the claim (`queued → sending`) of 20,000 rows, 10 a statement as the sender does, with the check
   and without it;
3. `pause` of one campaign with N/2 rows queued (they go back to planned), `enqueue_due` while it
   is paused (only the other campaign's rows move), and `resume`.

Prints one JSON object and, last, a one-line summary.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Engine, Table, bindparam, select, text, update
from support import postgres_schema

from outreach.plan.enqueue import enqueue_due
from outreach.send import claim as claiming
from outreach.send import pause
from outreach.store import db as dbmod
from outreach.store.db import session_scope
from outreach.store.models import Message, MessageStatus

NOW = dt.datetime(2026, 11, 23, 14, 0)
CLAIMS = 20_000
_outbox = cast(Table, Message.__table__)


def _seed(engine: Engine, n: int) -> None:
    """N patients, each enrolled in campaign a or b, each with one due planned invite."""
    statements = [
        "INSERT INTO campaigns (id, name, content_hash, loaded_at) "
        "VALUES ('a', 'A', '', :t), ('b', 'B', '', :t)",
        "INSERT INTO patients (mrn, first_name, birth_date, sex, phone, language, active, created_at, "
        "updated_at) SELECT 'm' || i, 'Ana', DATE '1960-01-01', 'female', '+1617' || lpad(i::text, 7, '0'), "
        "'en', true, :t, :t FROM generate_series(1, :n) AS i",
        "INSERT INTO enrollments (patient_id, campaign_id, cycle, enrolled_on, enrolled_at, language, arm) "
        "SELECT id, CASE WHEN id % 2 = 0 THEN 'a' ELSE 'b' END, 1, DATE '2026-11-23', :t, 'en', "
        "'treated' FROM patients",
        "INSERT INTO messages (enrollment_id, step_id, kind, phone, body, segments, status, send_at, "
        "attempts, planned_at, updated_at) SELECT e.id, 'invite', 'outreach', p.phone, 'Hi Ana', 1, "
        "'planned', :due, 0, :t, :t FROM enrollments e JOIN patients p ON p.id = e.patient_id",
    ]
    params = {"t": NOW, "n": n, "due": NOW - dt.timedelta(minutes=1)}
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement), {k: v for k, v in params.items() if f":{k}" in statement})
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))


def _reset(engine: Engine, status: str) -> None:
    with engine.begin() as conn:
        conn.execute(update(Message).values(status=status, queued_at=NOW if status == "queued" else None))
        conn.execute(text("UPDATE campaigns SET paused_at = NULL, paused_by = NULL"))
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE messages"))


def _timed(run: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = run()
    return round(time.perf_counter() - started, 3), result


def _enqueue_unchecked(engine: Engine, batch: int = 5000) -> int:
    """enqueue_due's UPDATE as it was before the pause check, for comparison."""
    moved = 0
    while True:
        with session_scope(engine) as session:
            due = (
                select(Message.id)
                .where(Message.status == MessageStatus.planned, Message.send_at <= NOW)
                .order_by(Message.send_at, Message.id)
                .limit(batch)
            )
            ids = list(
                session.scalars(
                    update(Message)
                    .where(Message.id.in_(due), Message.status == MessageStatus.planned)
                    .values(status=MessageStatus.queued, queued_at=NOW, updated_at=NOW)
                    .returning(Message.id)
                )
            )
        moved += len(ids)
        if len(ids) < batch:
            return moved


_UNCHECKED_CLAIM = (
    update(_outbox)
    .where(_outbox.c.id.in_(bindparam("ids", expanding=True)), _outbox.c.status == MessageStatus.queued)
    .values(status=MessageStatus.sending, sending_at=bindparam("now"), attempts=_outbox.c.attempts + 1)
    .returning(_outbox.c.id)
)


def _claims(engine: Engine, ids: list[int], *, checked: bool) -> int:
    won = 0
    for start in range(0, len(ids), 10):
        chunk = ids[start : start + 10]
        with session_scope(engine) as session:
            if checked:
                won += len(session.execute(claiming._CLAIM, {"ids": chunk, "now": NOW, "sender": "x"}).all())
            else:
                won += len(session.execute(_UNCHECKED_CLAIM, {"ids": chunk, "now": NOW}).all())
    return won


def run(engine: Engine, n: int) -> dict[str, Any]:
    figures: dict[str, Any] = {"rows": n, "load": os.getloadavg()}
    _seed(engine, n)
    figures["enqueue_checked_s"], moved = _timed(lambda: len(enqueue_due(engine, NOW, dispatch=None)))
    assert moved == n, moved
    _reset(engine, "planned")
    figures["enqueue_unchecked_s"], moved = _timed(lambda: _enqueue_unchecked(engine))
    assert moved == n, moved
    with session_scope(engine) as session:
        ids = list(session.scalars(select(Message.id).order_by(Message.id).limit(CLAIMS)))
    _reset(engine, "queued")
    figures["claims_checked_s"], won = _timed(lambda: _claims(engine, ids, checked=True))
    assert won == len(ids), won
    _reset(engine, "queued")
    figures["claims_unchecked_s"], won = _timed(lambda: _claims(engine, ids, checked=False))
    assert won == len(ids), won
    _reset(engine, "queued")

    def _pause() -> pause.PauseChange:
        with session_scope(engine) as session:
            return pause.pause(session, "a", "A", by="bench", at=NOW)

    figures["pause_s"], change = _timed(_pause)
    figures["pause_held"] = change.waiting
    _reset_other(engine)
    figures["enqueue_while_paused_s"], moved = _timed(lambda: len(enqueue_due(engine, NOW, dispatch=None)))
    figures["enqueue_while_paused_moved"] = moved

    def _resume() -> pause.PauseChange:
        with session_scope(engine) as session:
            return pause.resume(session, "a", by="bench", at=NOW)

    figures["resume_s"], _ = _timed(_resume)
    figures["enqueue_after_resume_s"], moved = _timed(lambda: len(enqueue_due(engine, NOW, dispatch=None)))
    figures["enqueue_after_resume_moved"] = moved
    return figures


def _reset_other(engine: Engine) -> None:
    """Campaign b's rows back to planned, so the enqueue while a is paused has b's to move."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE messages SET status = 'planned', queued_at = NULL WHERE enrollment_id IN "
                "(SELECT id FROM enrollments WHERE campaign_id = 'b')"
            )
        )
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE messages"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "OUTREACH_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
    )
    args = parser.parse_args()
    with postgres_schema(args.database_url) as (engine, _):
        dbmod.upgrade(engine)
        figures = run(engine, args.n)
    print(json.dumps(figures, indent=1))
    print(
        f"pause bench (enqueue while paused {figures['enqueue_while_paused_s']} s, after resume "
        f"{figures['enqueue_after_resume_s']} s): "
        f"pause bench, {args.n:,} rows: enqueue {figures['enqueue_checked_s']} s with the pause check vs "
        f"{figures['enqueue_unchecked_s']} s without; {CLAIMS:,} claims {figures['claims_checked_s']} s vs "
        f"{figures['claims_unchecked_s']} s; pause of {figures['pause_held']:,} queued rows "
        f"{figures['pause_s']} s, resume {figures['resume_s']} s (load {figures['load'][0]:.1f})"
    )


if __name__ == "__main__":
    main()
