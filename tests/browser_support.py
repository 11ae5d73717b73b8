"""Browser-test infrastructure: Debian's chromium driven by Playwright, a real `outreach web`
process on a free port over the test database, and axe-core run inside each page.

No browser is downloaded (Playwright's own builds are unreachable here): the tests use
/usr/bin/chromium. Without it they skip on a developer's machine, and fail in CI
(OUTREACH_TEST_REQUIRE_SERVICES=1 or CI=true), where `.ci/run` installs it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("OUTREACH_TEST_CHROMIUM", "/usr/bin/chromium")
AXE = ROOT / "tests" / "vendor" / "axe.min.js"
IN_CI = os.environ.get("OUTREACH_TEST_REQUIRE_SERVICES") == "1" or os.environ.get("CI") == "true"
BLOCKING = ("serious", "critical")


def chromium_or_skip() -> str:
    if Path(CHROMIUM).exists() or shutil.which(CHROMIUM):
        return CHROMIUM
    if IN_CI:
        pytest.fail(f"chromium is required in CI ({CHROMIUM}); `apt-get install -y chromium`")
    pytest.skip(f"no chromium at {CHROMIUM} (apt-get install -y chromium)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WebServer:
    """`outreach web` in its own process, as production runs it (uvicorn, the real app)."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = cwd / "web.log"
        full = {**os.environ, **env, "PYTHONPATH": str(ROOT), "OUTREACH_PUBLIC_URL": self.url}
        self._out = self.log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "outreach.apps.cli", "web", "--port", str(self.port), "--no-access-log"],
            cwd=cwd,
            env=full,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("outreach web exited:\n" + self.log.read_text()[-3000:])
            try:
                urllib.request.urlopen(f"{self.url}/app/login", timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("outreach web did not answer:\n" + self.log.read_text()[-3000:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._out.close()


def chromium_browser() -> Iterator[Any]:
    """Debian's chromium under Playwright, headless; a test module yields it from a fixture."""
    path = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=path,
            args=["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        yield launched
        launched.close()


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text(encoding="utf-8"))
    found: list[dict[str, Any]] = page.evaluate(
        """async () => (await window.axe.run(document, {resultTypes: ['violations']})).violations
            .map(v => ({id: v.id, impact: v.impact, help: v.help,
                        nodes: v.nodes.map(n => n.target.join(' '))}))"""
    )
    return [v for v in found if v["impact"] in BLOCKING]


def assert_accessible(page: Any, where: str) -> None:
    violations = axe_violations(page)
    assert not violations, f"{where}: " + json.dumps(violations, indent=1)
