"""The saved report (outreach/outcomes/snapshots.py): it is `outreach report --json`'s result, one
refresh runs at a time (in a process, and across processes on PostgreSQL), and Celery beat has an
entry whose task refreshes it."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from outreach.clock import clinic_today, utcnow
from outreach.config import get_settings
from outreach.outcomes import snapshots
from outreach.outcomes.funnel import funnel
from outreach.runtime import reset_runtime
from tests.report_population import FILES, ON, TEXTS, build

NOW = dt.datetime.combine(ON, dt.time(17))


def test_refresh_saves_the_engine_result_and_replaces_it(engine: Engine) -> None:
    build(engine)
    assert snapshots.latest(engine) is None
    first = snapshots.refresh(engine, FILES, ON, now=NOW)
    assert first is not None and first.report == funnel(engine, campaigns=FILES, on=ON).as_json()
    later = NOW + dt.timedelta(minutes=5)
    assert snapshots.refresh(engine, FILES, ON, now=later) is not None
    saved = snapshots.latest(engine)
    assert saved is not None and saved.computed_at == later and saved.report == first.report
    assert saved.seconds >= 0 and saved.on == ON
    assert not saved.stale(later + dt.timedelta(minutes=4), dt.timedelta(minutes=5), ON)
    assert saved.stale(later + dt.timedelta(minutes=5), dt.timedelta(minutes=5), ON)
    assert saved.stale(later, dt.timedelta(minutes=5), ON + dt.timedelta(days=1))  # another day


def test_one_refresh_at_a_time_in_a_process(engine: Engine) -> None:
    build(engine)
    with snapshots.one_at_a_time(engine) as mine:
        assert mine
        assert snapshots.refresh(engine, FILES, ON, now=NOW) is None  # another is running
        elsewhere: list[object] = []
        thread = threading.Thread(
            target=lambda: elsewhere.append(snapshots.refresh(engine, FILES, ON, now=NOW))
        )
        thread.start()
        thread.join()
        assert elsewhere == [None]
    assert snapshots.latest(engine) is None
    assert snapshots.refresh(engine, FILES, ON, now=NOW) is not None  # the lock was released


def test_one_refresh_at_a_time_across_processes(engine: Engine) -> None:
    """On PostgreSQL another process's refresh holds the schema's advisory lock: this one skips."""
    if engine.dialect.name != "postgresql":
        pytest.skip("the cross-process lock is PostgreSQL's advisory lock; SQLite has the in-process guard")
    build(engine)
    with engine.connect() as other:  # another process's connection, holding the lock
        assert other.execute(snapshots.TRY_LOCK).scalar_one() is True
        assert snapshots.refresh(engine, FILES, ON, now=NOW) is None
        other.execute(snapshots.UNLOCK)
        other.commit()
    assert snapshots.refresh(engine, FILES, ON, now=NOW) is not None


@pytest.fixture
def worker_settings(engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The workers' runtime over the test database and the report's campaign files."""
    for cid, text in TEXTS.items():
        (tmp_path / f"{cid}.yaml").write_text(text, encoding="utf-8")
    monkeypatch.setenv("OUTREACH_CAMPAIGNS_DIR", str(tmp_path))
    monkeypatch.setenv("OUTREACH_REPORT_REFRESH_EVERY", "2m")
    get_settings.cache_clear()
    reset_runtime()
    yield
    reset_runtime()
    get_settings.cache_clear()


def test_beat_refreshes_the_report_every_interval(engine: Engine, worker_settings: None) -> None:
    from workers import tasks
    from workers.app import _from_settings, app

    # Celery reads its configuration once per process (an earlier test may have): the schedule
    # this process's settings give is what a freshly started beat would run.
    assert "refresh-report" in app.conf.beat_schedule
    entry = _from_settings()["beat_schedule"]["refresh-report"]
    assert entry == {"task": "outreach.refresh_report", "schedule": 120.0}
    assert tasks.refresh_report.name == entry["task"] and entry["task"] in app.tasks
    assert tasks.refresh_report.acks_late is False
    build(engine)
    before = utcnow()
    result = tasks.refresh_report.apply().get()
    assert result["refreshed"] is True
    saved = snapshots.latest(engine)
    assert saved is not None and saved.computed_at >= before
    today = clinic_today(get_settings().default_timezone, saved.computed_at)
    assert saved.report == funnel(engine, campaigns=FILES, on=today).as_json()
