"""`outreach demo --fast` runs to the end, and what it prints is what the database holds."""

from __future__ import annotations

import datetime as dt
import os
import re
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

import outreach
from outreach.apps.cli import main
from outreach.apps.demo import run_demo
from outreach.outcomes.funnel import funnel
from outreach.store.db import engine_for

# The figures of the closing `demo:` line, counted here straight from the tables.
COUNTS = {
    "patients": "SELECT count(*) FROM patients",
    "enrolled": "SELECT count(*) FROM enrollments",
    "planned": "SELECT count(*) FROM messages WHERE kind = 'outreach'",
    "sent": "SELECT count(*) FROM messages WHERE kind = 'outreach' AND provider_sid IS NOT NULL",
    "delivered": "SELECT count(*) FROM messages WHERE kind = 'outreach' AND status = 'delivered'",
    "replied": "SELECT count(*) FROM enrollments WHERE replied_at IS NOT NULL",
    "opted out": "SELECT count(*) FROM phone_consents WHERE opted_out_at IS NOT NULL"
    " AND (opted_in_at IS NULL OR opted_in_at < opted_out_at)",
    "hand-offs": "SELECT count(*) FROM handoffs",
    "texts received": "SELECT count(*) FROM inbound_messages",
    "answers": "SELECT count(*) FROM messages WHERE kind = 'answer'",
}


def test_the_fast_demo_runs_to_the_end_and_its_figures_are_the_databases(tmp_path: Path) -> None:
    from workers.app import app

    broker = app.conf.broker_url
    kept = tmp_path / "kept"
    result = CliRunner().invoke(main, ["demo", "--fast", "--keep", str(kept)])
    assert result.exit_code == 0, result.output + repr(result.exception)

    (line,) = [ln for ln in result.stdout.splitlines() if ln.startswith("demo: ")]
    printed = {name: int(n) for name, n in re.findall(r"([a-z][a-z -]*?) (\d+)", line.removeprefix("demo: "))}
    assert set(printed) == set(COUNTS)
    database = kept / "outreach.db"
    with sqlite3.connect(database) as conn:
        counted = {name: conn.execute(sql).fetchone()[0] for name, sql in COUNTS.items()}
        steps = conn.execute("SELECT count(*), count(DISTINCT enrollment_id || '/' || step_id) FROM messages")
        total, distinct = steps.fetchone()
        unlinked = conn.execute(
            "SELECT count(*) FROM inbound_messages WHERE from_phone NOT IN (SELECT phone FROM patients)"
        ).fetchone()[0]
    assert printed == counted

    # Every part of the loop did something: texts out, replies in, answers, opt-outs, hand-offs.
    assert counted["patients"] == 60
    assert 0 < counted["delivered"] == counted["sent"] <= counted["planned"]
    assert counted["replied"] > 0 and counted["answers"] > 0
    assert counted["texts received"] >= counted["replied"]  # opt-outs and second replies are texts too
    assert counted["opted out"] > 0 and counted["hand-offs"] > 0
    assert total == distinct  # once per step
    assert unlinked == 0  # replies came from the numbers that were texted

    assert "All campaigns" in result.stdout and "colorectal-screening" in result.stdout
    # The summary's `replied` is the report's: its total row, and the report run on the kept database.
    # The engagement table's total row: total, sent, replied, activated, opted out and 3 rates.
    (engagement,) = [
        row for row in map(str.split, result.stdout.splitlines()) if row[:1] == ["total"] and len(row) == 8
    ]
    assert int(engagement[2]) == printed["replied"], engagement
    report = funnel(engine_for(f"sqlite:///{database}"), on=dt.date(2026, 11, 26)).as_json()
    assert report["totals"]["replied"] == printed["replied"]
    assert "replied: enrollments that replied, as in the report; texts received: every text" in result.stdout
    assert f"database {database}" in result.stderr
    assert f"OUTREACH_DATABASE_URL=sqlite:///{database} outreach report" in result.stdout
    assert "warning" not in result.stderr
    # A working inbox on the kept database: a demo login and the settings `outreach web` reads there.
    (login,) = re.findall(r"sign in as (\S+), password (\S+);", result.stdout)
    assert login[0] == "demo@example.org" and f"cd {kept} && outreach web" in result.stdout
    env_file = (kept / ".env").read_text()
    assert f"OUTREACH_DATABASE_URL=sqlite:///{database}" in env_file and "OUTREACH_PUBLIC_URL=" in env_file
    with sqlite3.connect(database) as conn:
        assert conn.execute("SELECT email, role FROM users").fetchall() == [
            ("demo@example.org", "coordinator")
        ]
    # The demo's settings do not outlive it.
    assert "OUTREACH_BROKER_URL" not in os.environ and "OUTREACH_PUBLIC_URL" not in os.environ
    assert app.conf.broker_url == broker


def test_without_keep_no_path_is_printed_only_that_it_was_temporary(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["demo", "--days", "1"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "outreach-demo-" not in result.output and "outreach.db" not in result.output
    assert "outreach demo: a temporary database (--keep DIR keeps it)" in result.stderr
    assert result.stdout.strip().endswith(
        "the demo's database was temporary and is gone; `outreach demo --keep DIR` keeps it to inspect"
    )


def test_keep_refuses_a_directory_that_already_has_a_database(tmp_path: Path) -> None:
    (tmp_path / "outreach.db").write_bytes(b"")
    result = CliRunner().invoke(main, ["demo", "--fast", "--keep", str(tmp_path)])
    assert result.exit_code == 2
    assert "already exists" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_the_demo_says_what_is_missing_outside_a_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outreach, "__file__", str(tmp_path / "site-packages" / "outreach" / "__init__.py"))
    with pytest.raises(outreach.errors.UserError, match=r"samples/roster\.csv"):
        run_demo(keep=tmp_path / "kept")
    assert not (tmp_path / "kept").exists()
