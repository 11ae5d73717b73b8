"""The wheel: what it holds, and that an installed wheel runs `outreach demo` with no checkout.

The wheel is built the way the Docker image builds it (pip, from the files the Dockerfile copies
into /tmp/src less .dockerignore), so one build covers both `pip install .` and the image.
"""

from __future__ import annotations

import fnmatch
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import time
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
from setuptools import find_namespace_packages

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS: dict[str, Any] = PYPROJECT["tool"]["setuptools"]
DATA = {"outreach._data.campaigns": "campaigns", "outreach._data.samples": "samples"}


def test_every_package_on_disk_is_listed_and_the_data_folders_are_mapped() -> None:
    found = set(find_namespace_packages(where=str(ROOT), include=["outreach*", "workers*"]))
    listed = set(SETUPTOOLS["packages"])
    missing = sorted(found - listed)
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml"
    assert listed - found == set(DATA), "listed packages that are neither on disk nor mapped data"
    assert SETUPTOOLS["package-dir"] == DATA
    data = SETUPTOOLS["package-data"]
    assert data["outreach._data.campaigns"] == ["*.yaml"]
    assert data["outreach._data.samples"] == ["roster.csv", "events.csv"]


# --- the wheel, built as the Dockerfile builds it --------------------------------------------------


def _dockerfile() -> list[str]:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _ignored(relative: str, patterns: list[str]) -> bool:
    """.dockerignore, approximately: the path or one of its parents matches a pattern."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    patterns = [*patterns, *(p.removeprefix("**/") for p in patterns if p.startswith("**/"))]
    return any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes for pattern in patterns)


def docker_build_source(dest: Path) -> Path:
    """/tmp/src as the Dockerfile lays it out before `pip install /tmp/src`."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    instructions = _dockerfile()
    assert any(line == "RUN pip install /tmp/src && rm -rf /tmp/src" for line in instructions)
    for line in instructions:
        if not line.startswith("COPY ") or "--from" in line:
            continue
        *sources, target = [part for part in shlex.split(line)[1:] if not part.startswith("--")]
        if not target.startswith("/tmp/src"):
            continue
        into = dest / target.removeprefix("/tmp/src").strip("/")
        for source in sources:
            origin = ROOT / source
            to = into / origin.name if target.endswith("/") else into
            files = [origin] if origin.is_file() else sorted(p for p in origin.rglob("*") if p.is_file())
            for file in files:
                relative = file.relative_to(ROOT).as_posix()
                if _ignored(relative, patterns):
                    continue
                out = to if file == origin else to / file.relative_to(origin)
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, out)
    return dest


def _clean_env() -> dict[str, str]:
    """No checkout on the path and none of the developer's outreach settings."""
    drop = ("OUTREACH_", "TWILIO_", "PYTHONPATH", "VIRTUAL_ENV")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip wheel` of the Docker build source: the build backend comes from the configured index."""
    work = tmp_path_factory.mktemp("wheel")
    source = docker_build_source(work / "src")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q", "-w", str(work / "dist")],
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (built,) = (work / "dist").glob("outreach-*.whl")
    return built


def test_the_wheel_carries_the_campaigns_and_the_sample_roster(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in sorted((ROOT / "campaigns").glob("*.yaml")):
        assert f"outreach/_data/campaigns/{path.name}" in names
    assert {"outreach/_data/samples/roster.csv", "outreach/_data/samples/events.csv"} <= names
    assert "outreach/store/migrations/script.py.mako" in names and "outreach/py.typed" in names
    assert "workers/app.py" in names
    workspace = ROOT / "outreach" / "apps" / "web" / "workspace"
    for folder in ("templates", "static"):  # the workspace's pages and its vendored htmx
        for path in sorted((workspace / folder).iterdir()):
            assert f"outreach/apps/web/workspace/{folder}/{path.name}" in names
    assert not any(name.startswith(("tests/", "bench/", "samples/", "campaigns/")) for name in names)


def test_an_installed_wheel_runs_the_demo_from_an_empty_folder(wheel: Path, tmp_path: Path) -> None:
    """About 20 s on 2 cores: a venv, the wheel (no deps, no index) and `outreach demo --days 1`.

    The venv sees this environment's packages through a .pth line placed after its own
    site-packages (so the runtime dependencies need no download); `.pth` files of that environment
    are not run, so an editable install of this checkout there stays inactive.
    """
    began = time.monotonic()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    env = _clean_env()
    own = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    outer = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (Path(own) / "_outer_environment.pth").write_text("".join(f"{path}\n" for path in outer))
    install = [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--force-reinstall"]
    done = subprocess.run([*install, str(wheel)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    empty = tmp_path / "elsewhere"
    empty.mkdir()
    probe = "import outreach.apps.demo as demo\nprint(demo.outreach.__file__)\nprint(demo.repo_root())"
    where = subprocess.run(
        [str(python), "-c", probe], cwd=empty, env=env, capture_output=True, text=True, timeout=60
    )
    assert where.returncode == 0, where.stderr
    package, root = where.stdout.splitlines()
    assert Path(package).is_relative_to(own), package  # the wheel's copy, not this checkout
    assert Path(root) == Path(own) / "outreach" / "_data"

    demo = subprocess.run(
        [str(venv / "bin" / "outreach"), "demo", "--days", "1"],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "imported roster.csv: 60 rows" in demo.stderr
    assert "All campaigns" in demo.stdout and "colorectal-screening" in demo.stdout
    assert any(line.startswith("demo: patients 60,") for line in demo.stdout.splitlines())
    assert list(empty.iterdir()) == []  # the demo leaves nothing behind in the folder it ran from
    print(f"installed-wheel demo: {time.monotonic() - began:.1f} s")
