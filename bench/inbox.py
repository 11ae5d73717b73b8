"""Inbox benchmark: the workspace's inbox page with 10,000 open conversations, server time.

    .venv/bin/python bench/inbox.py                    # PostgreSQL 127.0.0.1:5432/test, 10,000 conversations
    .venv/bin/python bench/inbox.py --sqlite           # a temporary SQLite file
    .venv/bin/python bench/inbox.py --conversations 50000 --requests 40

Builds `--conversations` patients, each with one reply stored as the webhook stores it (one in ten
a hand-off), makes the conversations from them (the first sync, timed), signs a coordinator in,
then requests the inbox page (first page, 50 rows, open hand-offs first), its htmx rows fragment, a
filtered page and a deep page `--requests` times each through the real app in-process (ASGI, no
network). Server time is the time from request to the complete response body. Prints one JSON
object and a summary line; the target (<= 300 ms p95 for the first page) is reported, not asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import Engine, insert, select  # noqa: E402
from support import postgres_schema  # noqa: E402

from outreach.apps.web.app import create_app  # noqa: E402
from outreach.config import get_settings  # noqa: E402
from outreach.store import db as dbmod  # noqa: E402
from outreach.store import sql  # noqa: E402
from outreach.store.db import session_scope  # noqa: E402
from outreach.store.models import Handoff, InboundMessage, Patient  # noqa: E402
from outreach.team import conversations  # noqa: E402
from tests.workspace_support import full_sign_in, make_user  # noqa: E402

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
NOW = dt.datetime(2026, 11, 23, 15, 0)
TARGET_MS = 300.0


def seed(engine: Engine, n: int) -> None:
    """n patients with one reply each (every tenth a hand-off), in chunks."""
    chunk = 5000
    with session_scope(engine) as session:
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            session.execute(
                insert(Patient),
                [
                    {
                        "mrn": f"b{i}",
                        "first_name": f"P{i}",
                        "birth_date": dt.date(1960, 1, 1),
                        "sex": "female",
                        "phone": f"+1617{i:07d}",
                        "language": "en",
                        "active": True,
                    }
                    for i in range(start, stop)
                ],
            )
        ids = dict(session.execute(select(Patient.phone, Patient.id)).all())
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            session.execute(
                insert(InboundMessage),
                [
                    {
                        "provider_sid": f"SM{i:032d}",
                        "from_phone": f"+1617{i:07d}",
                        "to_phone": "+16175550100",
                        "body": "Can you call me after 5? I have a question about the kit",
                        "patient_id": ids[f"+1617{i:07d}"],
                        "received_at": NOW - dt.timedelta(seconds=i),
                        "classification": "free_text",
                    }
                    for i in range(start, stop)
                ],
            )
        handoffs = session.execute(
            select(InboundMessage.id, InboundMessage.patient_id).where(InboundMessage.id % 10 == 0)
        ).all()
        session.execute(
            insert(Handoff),
            [
                {"inbound_id": i, "patient_id": p, "reason": "free_text", "opened_at": NOW}
                for i, p in handoffs
            ],
        )
    sql.analyze(engine, Patient.__table__, InboundMessage.__table__, Handoff.__table__)  # type: ignore[arg-type]


def timed(client: TestClient, url: str, count: int) -> dict[str, float]:
    times = []
    for _ in range(count):
        began = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - began) * 1000)
        assert response.status_code == 200, response.text[:300]
    times.sort()
    return {
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(times[int(0.95 * (len(times) - 1))], 1),
        "max_ms": round(times[-1], 1),
    }


def run(engine: Engine, args: argparse.Namespace) -> dict[str, Any]:
    dbmod.upgrade(engine)
    began = time.perf_counter()
    seed(engine, args.conversations)
    seeded = time.perf_counter() - began
    with session_scope(engine) as session:
        began = time.perf_counter()
        made = conversations.sync(session)
    first_sync = time.perf_counter() - began
    settings = get_settings().model_copy(
        update={"twilio_auth_token": "t" * 32, "public_url": "http://127.0.0.1"}
    )
    clock = lambda: NOW  # noqa: E731
    app = create_app(settings, engine=engine, campaigns={}, clock=clock)
    secret = make_user(engine, "bench@example.org", "coordinator", NOW)
    figures: dict[str, Any] = {}
    with TestClient(app) as client:
        full_sign_in(client, "bench@example.org", secret, NOW)
        client.get("/app/inbox")  # warm: templates compiled, statements cached
        pages = -(-made // conversations.PAGE_SIZE)
        for name, url in [
            ("inbox_first_page", "/app/inbox"),
            ("inbox_rows_fragment", "/app/inbox/rows"),
            ("inbox_unassigned", "/app/inbox?assignee=none"),
            ("inbox_deep_page", f"/app/inbox?page={pages // 2}"),
        ]:
            figures[name] = timed(client, url, args.requests)
    return {
        "conversations": made,
        "seed_s": round(seeded, 1),
        "first_sync_s": round(first_sync, 2),
        **figures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--database-url", default=DEFAULT_PG)
    parser.add_argument("--sqlite", action="store_true", help="a temporary SQLite file instead")
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=30, help="requests per page measured")
    args = parser.parse_args()
    os.environ.setdefault("OUTREACH_CLINIC_NAME", "Riverside Health")
    os.environ.setdefault("OUTREACH_CLINIC_PHONE", "(617) 555-0100")
    if args.sqlite:
        with tempfile.TemporaryDirectory() as folder:
            engine = dbmod.engine_for(f"sqlite:///{folder}/inbox.db")
            result = {"database": "sqlite", **run(engine, args)}
            engine.dispose()
    else:
        with postgres_schema(args.database_url) as (engine, _url):
            result = {"database": "postgresql", **run(engine, args)}
    print(json.dumps(result, indent=2))
    first = result["inbox_first_page"]
    verdict = "ok" if first["p95_ms"] <= TARGET_MS else "MISSED"
    print(
        f"inbox on {result['database']} with {result['conversations']:,} open conversations: first page p50 "
        f"{first['p50_ms']} ms, p95 {first['p95_ms']} ms (target <= {TARGET_MS:.0f} ms) [{verdict}]; "
        f"fragment p95 {result['inbox_rows_fragment']['p95_ms']} ms, deep page p95 "
        f"{result['inbox_deep_page']['p95_ms']} ms; first sync {result['first_sync_s']} s"
    )


if __name__ == "__main__":
    main()
