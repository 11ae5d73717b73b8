"""The workspace in a real browser (chromium via Playwright) against a real `outreach web` process
and the test database: sign-in with TOTP, lockout, a coordinator answering a hand-off end to end
(worker, sandbox, delivery status on the thread without a reload), an opted-out number, a viewer,
CSRF, the idle timeout, keyboard-only use, and axe-core on every page (no serious or critical
violation)."""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyotp
import pytest
from sqlalchemy import Engine, select, update

from outreach.listen.consent import record_opt_out
from outreach.sandbox import SandboxServer
from outreach.store.db import session_scope
from outreach.store.models import Message, Patient, WebSession
from tests.browser_support import WebServer, assert_accessible, chromium_browser
from tests.factories import seed_invite
from tests.sandbox_fixtures import SENDER
from tests.workers_harness import WorkerProcess, wait_until
from tests.workspace_support import PASSWORD, make_user, reply_from

ROOT = Path(__file__).resolve().parent.parent
PHONE = "+16175550123"
SHOTS = os.environ.get("OUTREACH_TEST_SCREENSHOTS")  # a folder: the README's screenshots are taken there
ZONES = (
    "Pacific/Honolulu",
    "America/Los_Angeles",
    "America/New_York",
    "Europe/London",
    "Asia/Kolkata",
    "Asia/Tokyo",
    "Australia/Sydney",
)


def daytime_zone() -> str:
    """A zone where it is between 10:00 and 19:00 now, so a staff reply may go out at once."""
    now = dt.datetime.now(dt.UTC)
    return next(z for z in ZONES if 10 <= now.astimezone(ZoneInfo(z)).hour < 19)


def _env(database_url: str, sandbox: SandboxServer, broker: str) -> dict[str, str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OUTREACH_", "TWILIO_")) or k.startswith("OUTREACH_TEST_")
    }
    return {
        **base,
        "OUTREACH_DATABASE_URL": database_url,
        "OUTREACH_CAMPAIGNS_DIR": str(ROOT / "campaigns"),
        "OUTREACH_CLINIC_NAME": "Riverside Health",
        "OUTREACH_CLINIC_PHONE": "(617) 555-0100",
        "OUTREACH_BROKER_URL": broker,
        "TWILIO_ACCOUNT_SID": sandbox.account_sid,
        "TWILIO_AUTH_TOKEN": sandbox.auth_token,
        "TWILIO_FROM_NUMBER": SENDER,
        "OUTREACH_TWILIO_API_URL": sandbox.url,
    }


def _broker() -> str:
    import redis

    url = os.environ.get("OUTREACH_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError:
        return "redis://127.0.0.1:1/0"  # nothing listens: dispatch fails and rows wait, as documented
    return url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from chromium_browser()


@pytest.fixture(scope="module")
def web(
    migrated_engine: Engine,
    database_url: str,
    sandbox_server: SandboxServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[WebServer, dict[str, str]]]:
    env = _env(database_url, sandbox_server, _broker())
    server = WebServer(env, tmp_path_factory.mktemp("web"))
    yield server, {**env, "OUTREACH_PUBLIC_URL": server.url}
    server.stop()


@pytest.fixture
def page(
    browser: Any, web: tuple[WebServer, dict[str, str]], engine: Engine, sandbox: SandboxServer
) -> Iterator[Any]:
    context = browser.new_context(base_url=web[0].url)
    opened = context.new_page()
    opened.set_default_timeout(15_000)
    yield opened
    context.close()


def _seed(engine: Engine, *, zone: str | None = None) -> None:
    """Ana, invited to colorectal screening, who wrote back a question (a hand-off)."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    seed_invite(engine, phone=PHONE, at=now - dt.timedelta(hours=2))
    with session_scope(engine) as session:
        ana = session.scalar(select(Patient))
        assert ana is not None
        ana.timezone, ana.language = zone or daytime_zone(), "en"
        patient_id = ana.id
    reply_from(
        engine,
        PHONE,
        "Can you call me after 5? I have questions about the kit",
        now - dt.timedelta(minutes=30),
        sid="SM" + "7" * 32,
        patient_id=patient_id,
        handoff=True,
    )


def _sign_in(page: Any, engine: Engine, email: str, role: str) -> str:
    """Signed in through the pages (enrolling the authenticator when the role needs one); returns
    the TOTP secret."""
    secret = make_user(engine, email, role, dt.datetime.now(dt.UTC).replace(tzinfo=None))
    page.goto("/app/login")
    assert_accessible(page, "sign-in page")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    if role != "viewer":
        page.wait_for_url("**/app/mfa")
        shown = page.get_by_test_id("totp-secret").inner_text().replace(" ", "")
        assert shown == secret
        assert_accessible(page, "enrolment page")
        page.get_by_label("Code").fill(pyotp.TOTP(secret).now())
        page.get_by_role("button", name="Verify").click()
    page.wait_for_url("**/app/inbox")
    return secret


def _open_first(page: Any) -> None:
    page.get_by_test_id("inbox-row").first.get_by_role("link").click()
    page.wait_for_url(re.compile(r".*/app/conversations/[A-Za-z0-9_-]{16}$"))


def test_sign_in_with_totp_enrolment_and_every_page_is_accessible(page: Any, engine: Engine) -> None:
    _seed(engine)
    secret = _sign_in(page, engine, "coord@example.org", "coordinator")
    assert page.get_by_test_id("inbox-row").count() == 1
    assert_accessible(page, "inbox")
    _open_first(page)
    assert_accessible(page, "conversation")
    assert "5550123" not in page.url and "m1" not in page.url.split("/")[-1]
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/app/login")
    page.goto("/app/inbox")
    page.wait_for_url("**/app/login")
    # Enrolled now: the next sign-in asks for a code only (the next one: a used code is refused).
    page.get_by_label("Email").fill("coord@example.org")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/app/mfa")
    assert page.get_by_test_id("totp-secret").count() == 0
    assert_accessible(page, "code page")
    page.get_by_label("Code").fill(pyotp.TOTP(secret).at(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)))
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url("**/app/inbox")


def test_wrong_password_then_lockout(page: Any, engine: Engine) -> None:
    make_user(engine, "view@example.org", "viewer", dt.datetime.now(dt.UTC).replace(tzinfo=None))
    page.goto("/app/login")
    for attempt in range(5):
        page.get_by_label("Email").fill("view@example.org")
        page.get_by_label("Password").fill(f"wrong password {attempt}")
        page.get_by_role("button", name="Sign in").click()
        expected = "locked until" if attempt == 4 else "The email or password is not right."
        assert expected in page.get_by_role("alert").inner_text()
    assert_accessible(page, "sign-in page with an error")
    page.get_by_label("Email").fill("view@example.org")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    assert "locked until" in page.get_by_role("alert").inner_text()  # the right password, still locked


def test_a_coordinator_answers_a_handoff_and_the_thread_shows_it_delivered(
    page: Any, engine: Engine, web: tuple[WebServer, dict[str, str]], sandbox: SandboxServer
) -> None:
    if web[1]["OUTREACH_BROKER_URL"].startswith("redis://127.0.0.1:1/"):
        pytest.skip("needs Redis for the worker") if os.environ.get(
            "OUTREACH_TEST_REQUIRE_SERVICES"
        ) != "1" else pytest.fail("Redis required")
    import redis

    redis.Redis.from_url(web[1]["OUTREACH_BROKER_URL"]).flushdb()
    _seed(engine)
    worker = WorkerProcess(web[1], concurrency=2)
    try:
        _sign_in(page, engine, "coord@example.org", "coordinator")
        _open_first(page)
        page.get_by_test_id("assign-me").click()
        page.get_by_test_id("reply-body").fill(
            "Hi Ana, this is Riverside Health: we will call you after 5 today."
        )
        page.get_by_test_id("segments").get_by_text("1 segment · GSM-7").wait_for()
        if SHOTS:
            page.screenshot(path=str(Path(SHOTS) / "conversation-typing.png"), full_page=True)
        page.get_by_test_id("reply-send").click()
        page.get_by_role("status").get_by_text("Reply queued").wait_for()
        staff = page.locator('[data-testid="thread-message"][data-kind="staff"]')
        staff.and_(page.locator('[data-status="delivered"]')).wait_for(timeout=45_000)  # htmx poll, no reload
        assert wait_until(
            lambda: any(m["to"] == PHONE and "after 5 today" in m["body"] for m in sandbox.messages()), 10
        )
        assert_accessible(page, "conversation after a reply")
        if SHOTS:
            page.screenshot(path=str(Path(SHOTS) / "conversation.png"), full_page=True)
        page.get_by_label("Outcome").select_option("called_back")
        page.get_by_test_id("close").click()
        page.get_by_role("status").get_by_text("Conversation closed.").wait_for()
    finally:
        worker.stop()
    with session_scope(engine) as session:
        row = session.scalar(select(Message).where(Message.kind == "staff"))
        assert row is not None and row.status == "delivered" and row.author_id is not None


def test_an_opted_out_numbers_reply_box_refuses(page: Any, engine: Engine) -> None:
    _seed(engine)
    with session_scope(engine) as session:
        record_opt_out(session, PHONE, by="STOP", at=dt.datetime.now(dt.UTC).replace(tzinfo=None))
    _sign_in(page, engine, "coord@example.org", "coordinator")
    _open_first(page)
    assert "opted out" in page.get_by_test_id("blocked").inner_text()
    assert page.get_by_test_id("reply-body").is_disabled() and page.get_by_test_id("reply-send").is_disabled()
    assert_accessible(page, "conversation, opted out")
    token = page.locator('input[name="csrf_token"]').first.get_attribute("value")
    refused = page.request.post(page.url + "/reply", form={"body": "hello?", "csrf_token": token})
    assert refused.status == 409 and "This number opted out" in refused.text()


def test_a_viewer_cannot_send_and_a_csrf_less_post_is_refused(page: Any, engine: Engine) -> None:
    _seed(engine)
    _sign_in(page, engine, "view@example.org", "viewer")
    _open_first(page)
    assert page.get_by_test_id("read-only").is_visible() and page.get_by_test_id("reply-send").count() == 0
    assert_accessible(page, "conversation, read-only")
    token = page.locator('input[name="csrf_token"]').first.get_attribute("value")
    as_viewer = page.request.post(page.url + "/reply", form={"body": "hi", "csrf_token": token})
    assert as_viewer.status == 403
    no_token = page.request.post(page.url + "/reply", form={"body": "hi"})
    assert no_token.status == 403
    page.goto("/app/conversations/not-a-conversation")  # the refusal page is accessible too
    assert "No such conversation" in page.get_by_role("alert").inner_text()
    assert_accessible(page, "refusal page")
    with session_scope(engine) as session:
        assert session.scalar(select(Message).where(Message.kind == "staff")) is None


def test_an_idle_session_is_logged_out(page: Any, engine: Engine) -> None:
    _seed(engine)
    _sign_in(page, engine, "view@example.org", "viewer")
    with session_scope(engine) as session:  # 16 minutes without a request
        idle_since = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=16)
        assert session.execute(update(WebSession).values(seen_at=idle_since)).rowcount == 1  # type: ignore[attr-defined]
    page.reload()
    page.wait_for_url("**/app/login")


def _tab_to(page: Any, testid: str, most: int = 25) -> None:
    """Press Tab until the element with `testid` has the focus (failing after `most` presses)."""
    for _ in range(most):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.dataset.testid") == testid:
            return
    pytest.fail(f"{testid} is not reachable with Tab")


def test_keyboard_only_inbox(page: Any, engine: Engine) -> None:
    _seed(engine, zone="Pacific/Kiritimati")
    _sign_in(page, engine, "coord@example.org", "coordinator")
    page.keyboard.press("Tab")  # the skip link comes first
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    for _ in range(12):  # through the filters to the first conversation
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.closest('[data-testid=inbox-row]') !== null"):
            break
    else:
        pytest.fail("the first conversation is not reachable with Tab")
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / "inbox.png"), full_page=True)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*/app/conversations/"))
    _tab_to(page, "reply-body")
    page.keyboard.type("Thanks Ana, we will call.")
    _tab_to(page, "reply-send", most=1)
    page.keyboard.press("Enter")
    page.get_by_role("status").wait_for()
