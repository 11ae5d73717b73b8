"""Tables at 80 columns and in a pipe: the id `handoffs close ID` needs is never cut, step and
campaign names never wrap, and piped output is one whole line per row.

The terminal cases run the real command in a pseudo-terminal 80 columns wide (rich draws tables
only on a terminal); the piped cases run it through click's runner, which is not a terminal.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine

from outreach.apps.cli import main
from outreach.store.db import session_scope
from outreach.store.models import Handoff, InboundMessage, Patient

BIG_IDS = (987654321, 987654322)
REPLY = "Can someone call me back about the test kit? I am at work until five, after that any time is fine."
SHIPPED = ("breast-screening", "cervical-screening", "colorectal-screening", "flu-season")


def run_in_terminal(args: list[str], columns: int = 80) -> str:
    """`outreach ARGS` with a pseudo-terminal `columns` wide as stdout; what it drew, without
    colour codes."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {**os.environ, "COLUMNS": str(columns), "TERM": "xterm"}
    process = subprocess.Popen(
        [sys.executable, "-m", "outreach.apps.cli", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the command ended and closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert process.wait(60) == 0, b"".join(chunks).decode()
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode()).replace("\r\n", "\n")


@pytest.fixture
def handoffs(engine: Engine) -> None:
    """Two open hand-offs with long ids and a long reply, as a busy clinic's would be."""
    with session_scope(engine) as session:
        ana = Patient(
            mrn="MRN-000123456",
            first_name="Anastasia",
            birth_date=dt.date(1960, 1, 1),
            sex="female",
            phone="+16175550123",
        )
        session.add(ana)
        session.flush()
        for number, handoff_id in enumerate(BIG_IDS):
            inbound = InboundMessage(
                provider_sid=f"SM{number:032d}",
                from_phone=ana.phone,
                to_phone="+16175550190",
                body=REPLY,
                patient_id=ana.id,
            )
            session.add(inbound)
            session.flush()
            session.add(
                Handoff(id=handoff_id, inbound_id=inbound.id, patient_id=ana.id, reason="callback_requested")
            )


def test_handoffs_at_80_columns_keep_every_id_whole(handoffs: None) -> None:
    drawn = run_in_terminal(["handoffs", "list"])
    for handoff_id in BIG_IDS:
        assert re.search(rf"│\s*{handoff_id}\s*│", drawn), drawn
    assert max(len(line) for line in drawn.splitlines()) <= 80


def test_handoffs_piped_are_whole_rows(handoffs: None) -> None:
    result = CliRunner().invoke(main, ["handoffs", "list"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    header, *rows, total = result.stdout.strip().splitlines()
    assert header.split() == ["id", "opened", "patient", "from", "campaign", "reason", "reply", "status"]
    assert [int(row.split()[0]) for row in rows] == sorted(BIG_IDS, reverse=True)
    assert all(REPLY in row and row.rstrip().endswith("open") for row in rows)
    assert total == "2 hand-offs, 2 open"


def test_report_at_80_columns_never_wraps_a_campaign_or_step_name(engine: Engine) -> None:
    drawn = run_in_terminal(["report", "--on", "2026-11-23"])
    firsts = [line.split()[0] for line in drawn.splitlines() if line.startswith(" ") and line.strip()]
    for name in (*SHIPPED, "invite", "reminder", "last-reminder"):
        assert name in firsts, drawn
    assert not any(first in ("ning", "-screening", "eening") for first in firsts)


def test_report_piped_is_whole_rows(engine: Engine) -> None:
    result = CliRunner().invoke(main, ["report", "--on", "2026-11-23"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.stdout.splitlines()]
    assert [
        "campaign",
        "planned",
        "pending",
        "sent",
        "deliv.",
        "undeliv.",
        "failed",
        "cancel.",
        "unknown",
    ] in rows
    for campaign in SHIPPED:
        assert [campaign, "0", "0", "0", "0", "0", "0", "0", "0"] in rows
        assert [campaign, "0", "0", "0", "0", "-", "-", "-"] in rows
