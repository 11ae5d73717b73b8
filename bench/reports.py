"""Reports page benchmark: the server time of /app/reports (and its CSV) for a large history on
PostgreSQL: 1,000,000 patients, the 4 shipped campaigns, ~1.9 M enrollments and outbox rows.

    flock /tmp/outreach-bench.lock .venv/bin/python bench/reports.py                 # build, time, drop
    flock /tmp/outreach-bench.lock .venv/bin/python bench/reports.py --keep reports_1m   # build into a
                                                          # named schema and keep it
    flock /tmp/outreach-bench.lock .venv/bin/python bench/reports.py --schema reports_1m # re-time it
    .venv/bin/python bench/reports.py --drop reports_1m

How the history is built (say so beside the figures): the roster and events come from
samples/generate.py through the real importer (as bench/plan.py does); then, in SQL, every patient
each campaign's real eligibility query selects today is enrolled (INSERT ... SELECT over
`eligible_patients`, 5% of them in the holdout), each treated enrollment gets its first step's
text in the outbox with a status spread like a month of sending (80% delivered, 5% sent, 4%
undelivered, 3% failed with real Twilio codes, 4% canceled, 4% still planned) at a time spread over
the last 30 days, and ~6% of the delivered get a reply (keyword, free text or STOP), activations,
opt-outs and closed gaps. The planner is not run (bench/plan_tick.py times it): building this way
takes a minute or two instead of ten.

Timed, through the whole web app in process, signed in as a viewer: the report engine call alone
(`funnel(...)`, what `outreach report --json` runs) and the refresh that saves it
(outreach/outcomes/snapshots.py), `--runs` times each; GETs of /app/reports and /app/reports.csv
reading the saved result (`--reads` times each: p50 and max); one GET of a stale page (it answers
from the saved result and starts a background refresh, whose run is timed too); the live path (a
`since` filter), `--runs` times. Prints one JSON object and, last, a one-line summary. The target
(<= 1 s server time for the page) is reported, not asserted.
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

from sqlalchemy import Engine, insert, literal, select, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from outreach.campaigns import CampaignFile, load_campaigns  # noqa: E402
from outreach.clock import clinic_today  # noqa: E402
from outreach.config import get_settings  # noqa: E402
from outreach.ingest.roster import import_events, import_patients  # noqa: E402
from outreach.outcomes import snapshots  # noqa: E402
from outreach.outcomes.funnel import funnel  # noqa: E402
from outreach.plan.eligibility import eligible_patients  # noqa: E402
from outreach.store import db as dbmod  # noqa: E402
from outreach.store.db import session_scope  # noqa: E402
from outreach.store.models import Campaign, Enrollment  # noqa: E402
from samples.generate import REFERENCE_DATE, write_events, write_roster  # noqa: E402

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TARGET_PAGE_S = 1.0
TABLES = ("patients", "patient_events", "enrollments", "messages", "inbound_messages", "activations")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=1_000_000, help="patients (default 1,000,000)")
    parser.add_argument("--database-url", default=DEFAULT_PG, help="PostgreSQL server (a schema is made)")
    parser.add_argument("--runs", type=int, default=3, help="engine calls, refreshes, live GETs")
    parser.add_argument("--reads", type=int, default=20, help="GETs of the page reading the saved result")
    parser.add_argument("--schema", help="time an already built schema (from --keep) instead of building")
    parser.add_argument("--keep", metavar="SCHEMA", help="build into this schema and keep it afterwards")
    parser.add_argument("--drop", metavar="SCHEMA", help="drop a kept schema and exit")
    args = parser.parse_args(argv)
    # The web app refuses to start without a clinic name and number (HELP answers name them).
    os.environ.setdefault("OUTREACH_CLINIC_NAME", "Riverside Health")
    os.environ.setdefault("OUTREACH_CLINIC_PHONE", "(617) 555-0100")
    admin = dbmod.engine_for(args.database_url)
    if args.drop:
        _drop(admin, args.drop)
        return 0
    schema = args.schema or args.keep or f"bench_reports_{os.getpid()}"
    engine = dbmod.engine_for(_url(args.database_url, schema))
    figures: dict[str, Any] = {"database": "postgresql", "schema": schema}
    try:
        if not args.schema:
            with admin.begin() as conn:
                conn.execute(text(f"CREATE SCHEMA {schema}"))
            figures["build"] = build(engine, args.n)
        figures |= measure(engine, args.runs, args.reads)
    finally:
        engine.dispose()
        if not args.schema and not args.keep:
            _drop(admin, schema)
    figures["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(figures, indent=2))
    print(summary(figures))
    return 0


def _url(base: str, schema: str) -> str:
    return f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"


def _drop(admin: Engine, schema: str) -> None:
    if not schema.startswith(("bench_", "reports_")):
        raise SystemExit(f"refusing to drop {schema!r}: not a schema this benchmark makes")
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))


def _on() -> dt.date:
    return clinic_today(get_settings().default_timezone)


def _campaigns() -> dict[str, CampaignFile]:
    return load_campaigns(ROOT / "campaigns", settings=get_settings())


def build(engine: Engine, n: int) -> dict[str, Any]:
    """The roster through the importer, then a month of history in SQL (see the module docstring)."""
    dbmod.upgrade(engine)
    settings = get_settings()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        roster, events = Path(folder) / "roster.csv", Path(folder) / "events.csv"
        write_roster(roster, n, 1)
        write_events(events, n, 1)
        import_patients(engine, roster, settings=settings, today=REFERENCE_DATE)
        import_events(engine, events, settings=settings, today=REFERENCE_DATE)
    imported = time.perf_counter() - started
    on, files = _on(), _campaigns()
    with session_scope(engine) as session:
        session.add_all([Campaign(id=c.id, name=c.name, content_hash="bench") for c in files.values()])
    with engine.begin() as conn:
        for campaign in files.values():
            audience = eligible_patients(campaign, on).subquery()
            arm = text("CASE WHEN hashtext(mrn || :cid) % 20 = 0 THEN 'holdout' ELSE 'treated' END")
            conn.execute(
                insert(Enrollment).from_select(
                    ["patient_id", "campaign_id", "cycle", "enrolled_on", "enrolled_at", "language", "arm"],
                    select(
                        audience.c.id,
                        literal(campaign.id),
                        literal(1),
                        literal(on - dt.timedelta(days=30)),
                        literal(dt.datetime.combine(on - dt.timedelta(days=30), dt.time(13))),
                        audience.c.language,
                        arm.bindparams(cid=campaign.id),
                    ),
                )
            )
        first_steps = {c.id: c.steps[0].id for c in files.values()}
        for statement in _history_sql(on):
            conn.execute(text(statement), {"steps": json.dumps(first_steps)})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in TABLES:
            conn.execute(text(f"VACUUM ANALYZE {table}"))
    with engine.connect() as conn:
        counts = {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES}
    return {
        "patients": n,
        "rows": counts,
        "import_seconds": round(imported, 1),
        "history_seconds": round(time.perf_counter() - started - imported, 1),
    }


def _history_sql(on: dt.date) -> list[str]:
    """The outbox, replies, activations, opt-outs and closures, in a few INSERT ... SELECTs. `r` is a
    per-row pseudo-random number 0-999 from the enrollment id, so the spread is the same every build."""
    start = f"TIMESTAMP '{on - dt.timedelta(days=30)} 13:00'"
    return [
        f"""
        INSERT INTO messages (enrollment_id, step_id, kind, phone, body, segments, status, send_at,
            attempts, provider_sid, error_code, planned_at, sending_at, sent_at, delivered_at, failed_at,
            canceled_at, cancel_reason, updated_at)
        SELECT e.id, (CAST(:steps AS json)) ->> e.campaign_id, 'outreach', p.phone, 'text', 1, s.status,
            t.at, 1,
            CASE WHEN s.status IN ('delivered', 'sent', 'undelivered') OR (s.status = 'failed' AND r % 2 = 0)
                 THEN 'SM' || md5(e.id::text) END,
            CASE WHEN s.status = 'undelivered' THEN (ARRAY[30003, 30005, 30006])[1 + r % 3]
                 WHEN s.status = 'failed' THEN (ARRAY[30008, 21610, 21211, 30007])[1 + r % 4] END,
            t.at, CASE WHEN s.status NOT IN ('planned', 'canceled') THEN t.at END,
            CASE WHEN s.status IN ('delivered', 'sent', 'undelivered')
                   OR (s.status = 'failed' AND r % 2 = 0) THEN t.at END,
            CASE WHEN s.status = 'delivered' THEN t.at + interval '5 seconds' END,
            CASE WHEN s.status IN ('failed', 'undelivered') THEN t.at + interval '5 seconds' END,
            CASE WHEN s.status = 'canceled' THEN t.at END,
            CASE WHEN s.status = 'canceled' THEN (ARRAY['opted out', 'gap closed', 'replied'])[1 + r % 3] END,
            t.at
        FROM enrollments e
        JOIN patients p ON p.id = e.patient_id
        CROSS JOIN LATERAL (SELECT (e.id::bigint * 7919) % 1000 AS r) k
        CROSS JOIN LATERAL (SELECT CASE WHEN r < 800 THEN 'delivered' WHEN r < 850 THEN 'sent'
            WHEN r < 890 THEN 'undelivered' WHEN r < 920 THEN 'failed' WHEN r < 960 THEN 'canceled'
            ELSE 'planned' END AS status) s
        CROSS JOIN LATERAL (SELECT {start} + ((e.id::bigint * 104729) % (30 * 24 * 60)) * interval '1 minute'
            AS at) t
        WHERE e.arm = 'treated'
        """,
        """
        INSERT INTO inbound_messages (provider_sid, from_phone, to_phone, body, received_at, patient_id,
            enrollment_id, classification)
        SELECT 'SMin' || md5(m.id::text), m.phone, '+16175550100', 'reply',
            m.sent_at + interval '2 hours', e.patient_id, e.id,
            (ARRAY['keyword', 'free_text', 'opt_out', 'keyword'])[1 + (m.id % 4)]
        FROM messages m JOIN enrollments e ON e.id = m.enrollment_id
        WHERE m.status = 'delivered' AND (m.id::bigint * 31) % 100 < 6
        """,
        """
        UPDATE enrollments e SET replied_at = i.received_at,
            outcome = CASE WHEN i.classification = 'keyword' THEN 'kit_requested' END,
            outcome_at = CASE WHEN i.classification = 'keyword' THEN i.received_at END
        FROM inbound_messages i WHERE i.enrollment_id = e.id AND i.classification <> 'opt_out'
        """,
        """
        INSERT INTO activations (patient_id, campaign_id, enrollment_id, inbound_id, activated_at, how)
        SELECT e.patient_id, e.campaign_id, e.id, i.id, i.received_at, coalesce(e.outcome, 'free_text')
        FROM inbound_messages i JOIN enrollments e ON e.id = i.enrollment_id
        WHERE i.classification <> 'opt_out'
        ON CONFLICT DO NOTHING
        """,
        """
        INSERT INTO phone_consents (phone, opted_out_at, opted_out_by, updated_at)
        SELECT DISTINCT ON (i.from_phone) i.from_phone, i.received_at, 'STOP', i.received_at
        FROM inbound_messages i WHERE i.classification = 'opt_out'
        UNION ALL
        SELECT DISTINCT ON (m.phone) m.phone, m.failed_at, 'twilio:21610', m.failed_at
        FROM messages m WHERE m.error_code = 21610
          AND m.phone NOT IN (SELECT from_phone FROM inbound_messages WHERE classification = 'opt_out')
        ON CONFLICT DO NOTHING
        """,
        """
        UPDATE enrollments e SET end_reason = 'gap_closed', ended_at = m.sent_at + interval '9 days',
            closed_on = CAST(m.sent_at + interval '9 days' AS date), credited_message_id = m.id
        FROM messages m
        WHERE m.enrollment_id = e.id AND m.status = 'delivered' AND (m.id::bigint * 17) % 100 < 3
        """,
    ]


def measure(engine: Engine, runs: int, reads: int) -> dict[str, Any]:
    """The engine call alone and the refresh (engine call + save), `runs` times each; then the page
    and the CSV reading the saved result, `reads` times each; one GET of a stale page (it starts a
    background refresh); and the live path (a `since` filter), `runs` times."""
    from tests.workspace_support import Clock, make_user, sign_in, workspace_client

    files, on = _campaigns(), _on()
    engine_s = [_timed(lambda: funnel(engine, campaigns=files, on=on)) for _ in range(runs)]
    report = funnel(engine, campaigns=files, on=on).as_json()
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    refresh_s = [_timed(lambda: _saved(snapshots.refresh(engine, files, on, now=now))) for _ in range(runs)]
    saved = snapshots.latest(engine)
    assert saved is not None and saved.report == report, "the saved report differs from the engine's"
    clock = Clock(now)
    with workspace_client(engine, clock, campaigns=files) as client:
        email = f"bench-{os.getpid()}@example.org"
        make_user(engine, email, "viewer", now)
        sign_in(client, email)
        page_s = [_timed(lambda: _ok(client.get("/app/reports"))) for _ in range(reads)]
        csv_s = [_timed(lambda: _ok(client.get("/app/reports.csv"))) for _ in range(reads)]
        one_s = [_timed(lambda: _ok(client.get("/app/reports", params={"campaign": "flu-season"})))]
        size = len(client.get("/app/reports").content)
        since = {"since": (on - dt.timedelta(days=365)).isoformat()}
        live_s = [_timed(lambda: _ok(client.get("/app/reports", params=since))) for _ in range(runs)]
        clock.now = now + get_settings().report_refresh_every  # the saved result is now stale
        stale_s = _timed(lambda: _ok(client.get("/app/reports")))
        waited = _timed(lambda: _wait_for_refresh(client))
    after = snapshots.latest(engine)
    totals = report["totals"]
    return {
        "report": {k: totals[k] for k in ("campaigns", "eligible", "enrolled", "planned", "sent", "replied")},
        "engine_seconds": _stats(engine_s),
        "refresh_seconds": _stats(refresh_s),
        "saved_seconds_recorded": saved.seconds,
        "page_saved_seconds": _stats(page_s),
        "csv_saved_seconds": _stats(csv_s),
        "page_saved_one_campaign_seconds": _stats(one_s),
        "page_stale_read_seconds": round(stale_s, 3),
        "background_refresh_after_stale_read_seconds": round(waited, 3),
        "background_refresh_saved": after is not None and after.computed_at > now,
        "page_live_since_filter_seconds": _stats(live_s),
        "page_bytes": size,
        "target_page_seconds": TARGET_PAGE_S,
    }


def _wait_for_refresh(client: Any) -> None:
    from outreach.apps.web.workspace.reports import REFRESHER

    REFRESHER.wait()


def _saved(saved: snapshots.Saved | None) -> None:
    assert saved is not None, "another refresh was running"


def _ok(response: Any) -> None:
    assert response.status_code == 200, response.text[:300]


def _timed(call: Any) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _stats(values: list[float]) -> dict[str, Any]:
    return {
        "runs": [round(v, 3) for v in values],
        "median": round(statistics.median(values), 3),
        "best": round(min(values), 3),
        "max": round(max(values), 3),
    }


def summary(figures: dict[str, Any]) -> str:
    page = figures["page_saved_seconds"]
    mark = "met" if page["max"] <= TARGET_PAGE_S else "MISSED"
    report = figures["report"]
    return (
        f"reports: {report['enrolled']:,} enrolled, {report['planned']:,} texts; page reading the saved "
        f"result p50 {page['median']} s, max {page['max']} s over {len(page['runs'])} GETs (target <= "
        f"{TARGET_PAGE_S} s: {mark}); csv p50 {figures['csv_saved_seconds']['median']} s; refresh "
        f"{figures['refresh_seconds']['median']} s (engine call {figures['engine_seconds']['median']} s); "
        f"live (since filter) {figures['page_live_since_filter_seconds']['median']} s; "
        f"load {figures['load_average']}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
