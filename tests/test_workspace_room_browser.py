"""The control room's pages in a real browser (the inbox's setup: chromium, a real `outreach web`
process, axe-core on every page and state): users, the audit log, opt-outs and the roster upload, each driven
through its real form."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select, update

from outreach.listen.consent import is_opted_out, record_opt_out
from outreach.store.db import session_scope
from outreach.store.models import AuditEntry, Patient, RosterUpload, UploadStatus, User
from outreach.team import uploads
from outreach.team.audit import audit
from tests.browser_support import assert_accessible
from tests.test_workspace_browser import ROOT, _sign_in, browser, page, web  # noqa: F401  (fixtures)


def test_an_admin_adds_and_disables_an_account(page: Any, engine: Engine) -> None:  # noqa: F811
    _sign_in(page, engine, "admin@example.org", "admin")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Users").click()
    page.wait_for_url("**/app/users")
    assert_accessible(page, "users page")
    page.get_by_label("Email", exact=True).fill("nurse@example.org")
    page.get_by_label("Role").select_option("coordinator")
    page.get_by_label("First password (at least 12 characters)").fill("a long first password")
    page.get_by_test_id("user-add").click()
    page.get_by_role("status").get_by_text("Account added").wait_for()
    row = page.locator('[data-testid="user-row"][data-email="nurse@example.org"]')
    assert row.get_attribute("data-state") == "active"
    row.get_by_test_id("user-disable").click()
    page.get_by_role("status").get_by_text("Account disabled").wait_for()
    assert row.get_attribute("data-state") == "disabled"
    assert_accessible(page, "users page after a change")
    with session_scope(engine) as session:
        user = session.scalar(select(User).where(User.email == "nurse@example.org"))
        assert user is not None and user.disabled and user.role == "coordinator"
        actions = set(
            session.scalars(select(AuditEntry.action).where(AuditEntry.actor == "admin@example.org"))
        )
    assert {"user_add", "user_disable"} <= actions


def test_an_admin_filters_the_audit_log(page: Any, engine: Engine) -> None:  # noqa: F811
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with session_scope(engine) as session:
        record_opt_out(session, "+16175550177", by="STOP", at=now)
        audit(session, "ann@example.org", "close", "conversation x", now)
    _sign_in(page, engine, "admin@example.org", "admin")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Audit").click()
    page.wait_for_url("**/app/audit")
    assert_accessible(page, "audit page")
    assert "+16175550177" not in page.content() and "+1********77" in page.content()
    page.get_by_label("Action").select_option("opt_out")
    page.get_by_test_id("audit-filter").click()
    page.wait_for_url("**/app/audit?*action=opt_out*")
    assert page.get_by_test_id("audit-row").count() == 1
    page.get_by_label("Action").select_option("")
    page.get_by_label("User").fill("ann@example.org")
    page.get_by_test_id("audit-filter").click()
    page.wait_for_url("**/app/audit?actor=ann*")
    rows = page.get_by_test_id("audit-row")
    assert rows.count() == 1 and rows.first.get_attribute("data-action") == "close"
    assert_accessible(page, "audit page, filtered")


def test_a_coordinator_opts_out_and_releases_with_consent(page: Any, engine: Engine) -> None:  # noqa: F811
    with session_scope(engine) as session:
        session.add(
            Patient(
                mrn="m-77",
                first_name="Ana",
                last_name="Lopez",
                birth_date=dt.date(1960, 1, 1),
                sex="f",
                phone="+16175550177",
            )
        )
    _sign_in(page, engine, "coord@example.org", "coordinator")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Opt-outs").click()
    page.wait_for_url("**/app/optouts")
    assert_accessible(page, "opt-outs page")
    page.get_by_label("Name, mrn or last four digits").fill("0177")
    page.get_by_test_id("optout-search-submit").click()
    found = page.get_by_test_id("optout-found")
    assert found.count() == 1 and found.get_attribute("data-state") == "in"
    assert "+16175550177" not in page.content()
    assert_accessible(page, "opt-outs search results")
    found.get_by_label("Reason (how the patient asked)").fill("asked by phone")
    found.get_by_test_id("optout-add").click()
    page.get_by_role("status").get_by_text("Opted out").wait_for()
    assert page.get_by_test_id("optout-row").count() == 1
    with session_scope(engine) as session:
        assert is_opted_out(session, "+16175550177")
    page.get_by_label("Name, mrn or last four digits").fill("lopez")
    page.get_by_test_id("optout-search-submit").click()
    found = page.get_by_test_id("optout-found")
    assert found.get_attribute("data-state") == "out"
    found.get_by_test_id("optout-remove").click()  # no consent given: the browser keeps the form
    assert found.get_by_test_id("optout-reason").evaluate("el => el.validity.valueMissing")
    found.get_by_test_id("optout-reason").fill("patient asked at the front desk, 11/30, to J. Wu")
    found.get_by_test_id("optout-remove").click()
    page.get_by_role("status").get_by_text("Opt-out removed").wait_for()
    assert page.get_by_test_id("optout-row").count() == 0
    assert_accessible(page, "opt-outs page after a release")
    with session_scope(engine) as session:
        assert not is_opted_out(session, "+16175550177")
        actors = set(
            session.scalars(select(AuditEntry.actor).where(AuditEntry.action.in_(["opt_out", "opt_in"])))
        )
    assert actors == {"coord@example.org"}


def test_a_coordinator_uploads_the_sample_roster_then_a_bad_one_and_its_report(
    page: Any,  # noqa: F811
    engine: Engine,
    tmp_path: Path,
) -> None:
    _sign_in(page, engine, "coord@example.org", "coordinator")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Roster").click()
    page.wait_for_url("**/app/roster")
    assert_accessible(page, "roster page")
    page.evaluate(  # what the bar showed while the file went up (htmx's progress events)
        "window.seen = []; document.addEventListener('htmx:xhr:progress', () =>"
        " window.seen.push(document.getElementById('roster-progress').value))"
    )
    page.get_by_test_id("roster-file").set_input_files(str(ROOT / "samples" / "roster.csv"))
    page.get_by_test_id("roster-submit").click()
    page.wait_for_url("**/app/roster/uploads/*")  # the upload's own page, its address pushed by htmx
    page.get_by_test_id("roster-result").wait_for()  # the import ran in the background; polled
    assert page.evaluate("window.seen")[-1] == 100  # the same document: swapped by htmx, no reload
    assert page.get_by_test_id("roster-accepted").inner_text() == "60"
    assert page.get_by_test_id("roster-inserted").inner_text() == "60"
    assert page.get_by_test_id("roster-rejected").inner_text() == "0"
    assert_accessible(page, "roster page with a result")
    bad = tmp_path / "bad.csv"
    bad.write_text('mrn,first_name,birth_date,sex,phone\nB1,Ana,1960-01-01,female,"=HYPERLINK(""x"")"\n')
    page.get_by_test_id("roster-file").set_input_files(str(bad))
    page.get_by_test_id("roster-submit").click()
    page.get_by_test_id("roster-rejected").get_by_text("1").wait_for()
    assert page.get_by_test_id("roster-status").get_attribute("data-status") == "done"
    with page.expect_download() as download:
        page.get_by_test_id("roster-report").click()
    report = Path(download.value.path()).read_text()
    assert report.startswith("line,column,value,reason") and "'=HYPERLINK" in report
    assert_accessible(page, "roster page with rejected rows")
    notes = tmp_path / "notes.csv"
    notes.write_text("name,age\nAna,60\n")
    page.get_by_test_id("roster-file").set_input_files(str(notes))
    page.get_by_test_id("roster-submit").click()
    assert "mrn" in page.get_by_test_id("roster-error").inner_text()  # a 400, swapped in with its reason
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(Patient)) == 60


def test_a_coordinator_watches_an_import_run_and_finish_without_a_reload(
    page: Any,  # noqa: F811
    engine: Engine,
) -> None:
    """The upload's page polls its status (htmx, under the workspace's CSP): here the import is
    a row the test moves (as the importing thread would), so the running state is seen for sure."""
    _sign_in(page, engine, "coord@example.org", "coordinator")
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    public_id = uploads.new_id()
    with session_scope(engine) as session:
        user = session.scalar(select(User).where(User.email == "coord@example.org"))
        assert user is not None
        session.add(
            RosterUpload(
                public_id=public_id,
                user_id=user.id,
                kind="patients",
                file_name="big.csv",
                size_bytes=4 * 2**20,
                status=UploadStatus.running,
                rows_read=20_000,
                bytes_read=2**20,
                pid=os.getpid(),  # a live process on this host: not taken for a dead import
                host=uploads.HOST,
                created_at=now,
                started_at=now,
                heartbeat_at=now + dt.timedelta(minutes=5),  # beats for the test's length
            )
        )
    page.goto(f"/app/roster/uploads/{public_id}")
    page.get_by_test_id("roster-running").get_by_text("20,000 rows read so far").wait_for()
    assert_accessible(page, "roster page, importing")
    page.evaluate("window.marker = 1")  # gone if the page reloads
    with session_scope(engine) as session:
        session.execute(
            update(RosterUpload)
            .where(RosterUpload.public_id == public_id)
            .values(status=UploadStatus.done, accepted=3, rejected=0, inserted=2, updated=1, problems=0)
        )
    page.get_by_test_id("roster-result").wait_for()
    assert page.get_by_test_id("roster-inserted").inner_text() == "2"
    assert page.evaluate("window.marker") == 1
    assert page.get_by_test_id("roster-status").get_attribute("hx-trigger") is None  # polling stopped
