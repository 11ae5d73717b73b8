"""The campaigns page in a real browser (the inbox's setup: chromium, a real `outreach web` process,
a real Celery worker on Redis, the Twilio sandbox, axe-core): a coordinator pauses a campaign while
its messages sit in the broker, the worker sends none of them, and after the resume each goes out
exactly once; a viewer sees the page without the buttons and is refused the POST."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from celery import Celery
from sqlalchemy import Engine, select

from outreach.sandbox import SandboxServer
from outreach.store.db import session_scope
from outreach.store.models import AuditEntry, Campaign, Enrollment, Message, MessageStatus
from tests.browser_support import WebServer, assert_accessible
from tests.factories import add_patient
from tests.test_workspace_browser import SHOTS, _sign_in, browser, page, web  # noqa: F401  (fixtures)
from tests.workers_harness import WorkerProcess, wait_until

CRC = "colorectal-screening"
PHONES = ("(617) 555-0201", "(617) 555-0202", "(617) 555-0203")
E164 = {"+16175550201", "+16175550202", "+16175550203"}


def _window_zone() -> str:
    """A zone where it is now between 10:00 and 17:00, inside the worker's copy of the campaign's
    window (`_every_day`), so the worker may send at once whatever the day."""
    now = dt.datetime.now(dt.UTC)
    for hours in range(-12, 15):
        zone = f"Etc/GMT{-hours:+d}" if hours else "Etc/GMT"  # POSIX signs are inverted
        if 10 <= now.astimezone(ZoneInfo(zone)).hour < 17:
            return zone
    raise AssertionError("the Etc/GMT zones span 26 hours: one is always between 10:00 and 17:00")


def _every_day(folder: Path) -> Path:
    """The shipped campaigns with colorectal-screening's Monday-Friday window opened to every day,
    for the worker: the pause, not the weekday, must be what holds the texts back."""
    shipped = Path(__file__).resolve().parent.parent / "campaigns"
    for source in shipped.glob("*.yaml"):
        text = source.read_text(encoding="utf-8")
        if source.stem == CRC:
            weekdays = "days: [mon, tue, wed, thu, fri]"
            assert weekdays in text
            text = text.replace(weekdays, "days: [mon, tue, wed, thu, fri, sat, sun]")
        (folder / source.name).write_text(text, encoding="utf-8")
    return folder


def _queued(engine: Engine) -> list[int]:
    """Three colorectal-screening invites, `queued` now (as a tick leaves them)."""
    zone, now = _window_zone(), dt.datetime.now(dt.UTC).replace(tzinfo=None)
    ids = []
    with session_scope(engine) as session:
        session.add(Campaign(id=CRC, name="Colorectal cancer screening", content_hash="x"))
        for i, phone in enumerate(PHONES):
            patient = add_patient(
                session, f"B{i}", phone=phone, timezone=zone, birth_date=dt.date(1960, 1, 1)
            )
            enrollment = Enrollment(patient_id=patient.id, campaign_id=CRC, enrolled_on=now.date())
            session.add(enrollment)
            session.flush()
            row = Message(
                enrollment_id=enrollment.id,
                step_id="invite",
                phone=patient.phone,
                body=f"Hi {patient.first_name}, Riverside Health here ({i}). Reply STOP to opt out.",
                status=MessageStatus.queued,
                send_at=now,
                queued_at=now,
            )
            session.add(row)
            session.flush()
            ids.append(row.id)
    return ids


def _dispatch(broker_url: str, ids: Sequence[int]) -> None:
    """What the scheduler process does: a task carrying the ids, into the workers' queue."""
    Celery(broker=broker_url).send_task("outreach.send_messages", args=[list(ids)], queue="outreach")


def _ours(sandbox: SandboxServer) -> list[str]:
    return [m["to"] for m in sandbox.messages() if m["to"] in E164]


def _done(worker: WorkerProcess) -> int:
    """Send tasks the worker has finished (Celery logs each at INFO)."""
    return sum("outreach.send_messages" in line and "succeeded" in line for line in worker.output)


def _redis_or_skip(env: dict[str, str]) -> str:
    url = env["OUTREACH_BROKER_URL"]
    if url.startswith("redis://127.0.0.1:1/"):
        if os.environ.get("OUTREACH_TEST_REQUIRE_SERVICES") == "1":
            pytest.fail("Redis required")
        pytest.skip("needs Redis for the worker")
    return url


def test_a_pause_holds_queued_messages_from_a_running_worker_until_resume(
    page: Any,  # noqa: F811
    engine: Engine,
    web: tuple[WebServer, dict[str, str]],  # noqa: F811
    sandbox: SandboxServer,
    tmp_path: Path,
) -> None:
    broker = _redis_or_skip(web[1])
    queue = redis.Redis.from_url(broker)
    queue.flushdb()
    ids = _queued(engine)
    _dispatch(broker, ids)  # the tasks wait in the broker, as a tick left them
    _sign_in(page, engine, "coord@example.org", "coordinator")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Campaigns").click()
    page.wait_for_url("**/app/campaigns")
    assert_accessible(page, "campaigns page")
    card = page.locator(f'[data-testid="campaign"][data-id="{CRC}"]')
    assert card.get_attribute("data-state") == "active"
    page.get_by_test_id(f"pause-{CRC}").click()
    page.get_by_role("status").get_by_text("Paused").wait_for()
    assert card.get_attribute("data-state") == "paused"
    assert page.get_by_test_id(f"pause-{CRC}").count() == 0
    assert page.get_by_test_id(f"resume-{CRC}").is_visible()
    assert page.get_by_test_id(f"next-sends-{CRC}").locator("td").first.inner_text() == "3"  # held, today
    card.locator("summary").click()  # the texts, rendered for the sample patients
    assert card.locator(f'[data-testid="sample-{CRC}"]').first.is_visible()
    assert_accessible(page, "campaigns page, paused, texts open")
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / "campaigns.png"), full_page=True)
    worker = WorkerProcess({**web[1], "OUTREACH_CAMPAIGNS_DIR": str(_every_day(tmp_path))}, concurrency=2)
    try:
        assert wait_until(lambda: _done(worker) == 1, 30)  # the worker ran the task…
        _dispatch(broker, ids)  # …and another, as the sweeper or a redelivery would send
        assert wait_until(lambda: _done(worker) == 2, 30)
        assert _ours(sandbox) == []  # …and sent nothing
        with session_scope(engine) as session:
            statuses = set(session.scalars(select(Message.status).where(Message.id.in_(ids))))
        assert statuses == {MessageStatus.planned}  # held, never canceled
        page.get_by_test_id(f"resume-{CRC}").click()
        page.get_by_role("status").get_by_text("Resumed").wait_for()
        assert card.get_attribute("data-state") == "active"
        assert wait_until(lambda: len(_ours(sandbox)) == 3, 30)  # handed to the worker by the resume
        _dispatch(broker, ids)  # a duplicate delivery changes nothing
        assert wait_until(lambda: _done(worker) >= 4, 30)
    finally:
        worker.stop()
    assert sorted(_ours(sandbox)) == sorted(E164)  # each exactly once
    with session_scope(engine) as session:
        actions = list(
            session.scalars(
                select(AuditEntry.action)
                .where(AuditEntry.actor == "coord@example.org", AuditEntry.subject == CRC)
                .order_by(AuditEntry.id)
            )
        )
    assert actions == ["campaign_pause", "campaign_resume"]


def test_a_viewer_sees_the_campaigns_but_no_pause_button(page: Any, engine: Engine) -> None:  # noqa: F811
    _sign_in(page, engine, "view@example.org", "viewer")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Campaigns").click()
    page.wait_for_url("**/app/campaigns")
    assert page.get_by_test_id("campaign").count() == 4
    assert page.locator('[data-testid^="pause-"], [data-testid^="resume-"]').count() == 0
    page.get_by_text("Texts by step and language").first.click()  # open the first preview
    assert page.get_by_test_id(
        f"sample-{page.get_by_test_id('campaign').first.get_attribute('data-id')}"
    ).count()
    assert_accessible(page, "campaigns page, viewer")
    token = page.locator('input[name="csrf_token"]').first.get_attribute("value")
    refused = page.request.post(f"/app/campaigns/{CRC}/pause", form={"csrf_token": token})
    assert refused.status == 403
    with session_scope(engine) as session:
        row = session.get(Campaign, CRC)
        assert row is None or row.paused_at is None
