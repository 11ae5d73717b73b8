"""The README's first command, run exactly as written on a clean copy of the project: a person who
has never seen outreach runs it and sees the whole loop work."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from outreach.apps.cli import main

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


# --- every outreach command the README shows exists ------------------------------------------------


def code_texts(markdown: str) -> list[str]:
    """The text of every fenced code block and every inline code span."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", markdown, re.S)
    prose = re.sub(r"```[a-z]*\n.*?```", "", markdown, flags=re.S)
    # In the command table a cell may go on without the prefix: `optouts list`, `optouts add NUMBER`
    rows = re.findall(r"^\| (`outreach [^|]*)\|", prose, re.M)
    continued = [f"outreach {span}" for row in rows for span in re.findall(r"`([^`]+)`", row)[1:]]
    return [*blocks, *re.findall(r"`([^`\n]+)`", prose), *continued]


def outreach_commands(markdown: str) -> list[list[str]]:
    """Each `outreach …` (or `.venv/bin/outreach …`) command as its words after `outreach`."""
    found = []
    for text in code_texts(markdown):
        for line in text.splitlines():
            for segment in re.split(r"&&|\|\||\||;", line.split(" # ")[0]):
                words = segment.split()
                for i, word in enumerate(words):
                    if word == "outreach" or word.endswith("/outreach"):
                        found.append(words[i + 1 :])
                        break
    return found


@functools.cache
def help_of(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, f"outreach {' '.join(path)} --help: {result.output}"
    return result.output


def subcommands(help_text: str) -> set[str]:
    section = help_text.partition("\nCommands:\n")[2]
    return set(re.findall(r"^  ([a-z][a-z-]*)", section, re.M))


def check_outreach_command(words: list[str]) -> None:
    """The command path is one `outreach --help` lists, and each --option one its --help shows."""
    path: list[str] = []
    rest = list(words)
    while rest and rest[0] in subcommands(help_of(tuple(path))):
        path.append(rest.pop(0))
    shown = f"outreach {' '.join(words)}"
    if subcommands(help_of(tuple(path))) and rest and re.fullmatch(r"[a-z][a-z-]*", rest[0]):
        raise AssertionError(f"{shown}: `outreach {' '.join(path)}` has no command {rest[0]!r}")
    options = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", help_of(tuple(path))))
    for option in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", " ".join(rest)):
        assert option in options, f"{shown}: `outreach {' '.join(path)}` has no option {option}"


def test_every_outreach_command_in_the_readme_exists() -> None:
    commands = outreach_commands((ROOT / "README.md").read_text())
    assert ["db", "upgrade"] in commands and ["tick", "--no-dispatch"] in [c[:2] for c in commands]
    for words in commands:
        check_outreach_command(words)


def test_the_command_check_catches_a_missing_command_or_option() -> None:
    with pytest.raises(AssertionError, match="no command 'upgrayed'"):
        check_outreach_command(["db", "upgrayed"])
    with pytest.raises(AssertionError, match="no option --no-send"):
        check_outreach_command(["tick", "--no-send"])
    check_outreach_command(["patients", "import", "ROSTER.csv", "[--events", "EVENTS.csv]"])


# --- "Beyond the demo", run as written --------------------------------------------------------------


def section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def sh_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, re.S)


def test_beyond_the_demo_runs_as_written_on_a_copy_of_the_campaigns_and_samples(tmp_path: Path) -> None:
    """The first block of the section (no broker: `tick --no-dispatch`), line by line, in a fresh folder."""
    block = sh_blocks(section("Beyond the demo"))[0]
    for folder in ("campaigns", "samples"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    scripts = Path(sys.executable).parent  # this environment's console scripts, `outreach` among them
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OUTREACH_", "TWILIO_"))}
    env["PATH"] = f"{scripts}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "roster.csv: 60 accepted" in done.stdout
    assert (tmp_path / "outreach.db").is_file()
    # The clinic settings the block wrote to .env reach the texts.
    preview = subprocess.run(
        ["outreach", "campaigns", "preview", "colorectal-screening", "--on", "2026-11-23", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert preview.returncode == 0, preview.stderr
    texts = [patient["text"] for patient in json.loads(preview.stdout)["patients"]]
    assert texts and all("Riverside Health" in text for text in texts if text.startswith("Hi "))


def test_beyond_the_demo_sandbox_settings_are_the_ones_the_sandbox_and_web_use() -> None:
    from outreach.sandbox import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN

    blocks = sh_blocks(section("Beyond the demo"))
    settings = dict(line.split("=", 1) for line in blocks[1].splitlines() if "=" in line)
    assert settings["TWILIO_ACCOUNT_SID"] == DEFAULT_ACCOUNT_SID
    assert settings["TWILIO_AUTH_TOKEN"] == DEFAULT_AUTH_TOKEN

    def default(command: str, name: str) -> object:
        return next(p.default for p in main.commands[command].params if p.name == name)

    assert (
        settings["OUTREACH_TWILIO_API_URL"]
        == f"http://{default('sandbox', 'host')}:{default('sandbox', 'port')}"
    )
    assert settings["OUTREACH_PUBLIC_URL"] == f"http://{default('web', 'host')}:{default('web', 'port')}"
    assert f"--inbound-url {settings['OUTREACH_PUBLIC_URL']}/twilio/inbound" in blocks[2]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for line in blocks[2].splitlines():
        if line.startswith("celery "):
            argv = line.split(" #")[0].split()
            assert argv in (compose["worker"]["command"][:6], compose["scheduler"]["command"][:4]), line
