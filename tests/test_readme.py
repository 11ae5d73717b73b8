"""The README's first command, run exactly as written on a clean copy of the project: a person who
has never seen outreach runs it and sees the whole loop work."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def readme_command(number: int) -> str:
    """The shell line under `# N.` in the README's first sh block."""
    block = re.search(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "README has no sh block"
    lines = block.group(1).splitlines()
    marker = next(i for i, line in enumerate(lines) if line.startswith(f"# {number}."))
    return lines[marker + 1].strip()


def test_readme_commands_are_the_ones_ci_runs() -> None:
    assert readme_command(1).endswith("outreach demo")
    test_command = readme_command(2)
    assert test_command in (ROOT / ".ci" / "run").read_text()


@pytest.mark.skipif(
    bool(os.environ.get("OUTREACH_TEST_DATABASE_URL")),
    reason="the demo always runs on embedded SQLite: the first CI leg runs it",
)
@pytest.mark.skipif(shutil.which("git") is None, reason="needs git to list the project's files")
def test_first_command_runs_the_demo_on_a_clean_copy(tmp_path: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    clone = tmp_path / "outreach"
    for name in files:
        source = ROOT / name
        if source.is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, clone / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OUTREACH_", "TWILIO_", "VIRTUAL_ENV"))}
    result = subprocess.run(
        ["bash", "-c", readme_command(1)], cwd=clone, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "colorectal-screening" in result.stdout
    assert "delivered" in result.stdout.lower()
