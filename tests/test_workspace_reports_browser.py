"""The reports page in a real browser (chromium, a real `outreach web` process over the test
database, the shipped campaign files): a viewer reaches it from the menu, sees each campaign's
funnel drawn as an accessible SVG and the same figures `outreach report --json` prints, and no
pause button; axe-core finds nothing serious. A coordinator's "Refresh now" brings a change in the
database onto the page, which reads the saved report. With OUTREACH_TEST_SCREENSHOTS set it saves the
README's screenshot."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from sqlalchemy import Engine

from outreach.apps.cli import main
from outreach.campaigns import load_campaigns
from outreach.clock import clinic_today
from outreach.config import get_settings
from outreach.outcomes import snapshots
from outreach.store.db import session_scope
from outreach.store.models import Campaign
from tests.browser_support import assert_accessible
from tests.report_population import build
from tests.test_workspace_browser import SHOTS, _sign_in, browser, page, web  # noqa: F401  (fixtures)
from tests.test_workspace_reports import expected, on_page


def test_a_viewer_reads_the_reports(page: Any, engine: Engine) -> None:  # noqa: F811
    settings = get_settings()
    shipped = tuple(sorted(load_campaigns(settings=settings)))
    today = clinic_today(settings.default_timezone)
    build(engine, patients=120, on=today, ids=shipped)
    result = CliRunner().invoke(main, ["report", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [c["id"] for c in report["campaigns"]] == list(shipped)

    _sign_in(page, engine, "view@example.org", "viewer")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Reports").click()
    page.wait_for_url("**/app/reports")
    for cid in shipped:
        chart = page.get_by_test_id(f"funnel-{cid}")
        assert chart.is_visible() and chart.get_attribute("role") == "img"
        assert "Enrolled" in (chart.locator("title").text_content() or "")
        assert page.get_by_test_id(f"daily-{cid}").is_visible()
    assert on_page(page.content()) == expected(report)
    freshness = page.get_by_test_id("report-freshness").text_content() or ""
    assert freshness.startswith("Figures as of ") and "refreshed every 5 minutes" in freshness
    assert page.locator('[data-testid^="pause-"], [data-testid^="resume-"]').count() == 0
    assert_accessible(page, "reports page")
    if SHOTS:
        page.set_viewport_size({"width": 1100, "height": 1000})
        page.screenshot(path=str(Path(SHOTS) / "reports.png"), full_page=False)
    page.get_by_text("Daily figures").first.click()  # the daily table, opened
    assert page.get_by_role("rowheader", name=report["on"]).first.is_visible()
    assert_accessible(page, "reports page, daily figures open")

    page.get_by_label("Campaign").select_option(shipped[0])
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(f"**/app/reports?campaign={shipped[0]}*")
    assert page.get_by_test_id(f"funnel-{shipped[0]}").is_visible()
    assert page.get_by_test_id(f"funnel-{shipped[1]}").count() == 0
    with page.expect_download() as download:
        page.get_by_test_id("report-csv").click()
    assert Path(download.value.path()).read_text(encoding="utf-8").startswith("campaign,section,item")


def test_a_coordinator_refreshes_the_figures_now(page: Any, engine: Engine) -> None:  # noqa: F811
    """The page reads the saved report: a campaign added to the database appears only after
    "Refresh now", which the `outreach web` process runs in a background thread."""
    settings = get_settings()
    shipped = tuple(sorted(load_campaigns(settings=settings)))
    build(engine, patients=40, on=clinic_today(settings.default_timezone), ids=shipped)
    _sign_in(page, engine, "coord@example.org", "coordinator")
    page.goto("/app/reports")
    assert "Figures as of" in (page.get_by_test_id("report-freshness").text_content() or "")
    first = snapshots.latest(engine)
    assert first is not None
    with session_scope(engine) as session:
        session.add(Campaign(id="gamma", name="Gamma", content_hash="x"))
    page.reload()
    assert page.get_by_test_id("funnel-gamma").count() == 0  # the saved report, not the database
    page.get_by_role("button", name="Refresh now").click()
    page.wait_for_url("**/app/reports")
    deadline = time.monotonic() + 30
    while (saved := snapshots.latest(engine)) is None or saved.computed_at == first.computed_at:
        assert time.monotonic() < deadline, "the refresh never saved"
        time.sleep(0.2)
    page.goto("/app/reports")
    assert page.get_by_test_id("funnel-gamma").is_visible()
    assert_accessible(page, "reports page, coordinator")
