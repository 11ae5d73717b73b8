"""The engine stands without its entry points (DESIGN.md §2), checked on the source.

Every module under outreach/ except the entry points (outreach/apps/) and the Twilio-compatible
sandbox (outreach/sandbox/, test and demo infrastructure) is the engine: importable and testable
without Celery, a web server or a terminal. Modules are parsed with `ast`, not imported, so an
import inside a function (the usual way to hide a heavy dependency) counts as much as one at the
top, and a module that is never imported by the tests is checked all the same.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTSIDE_ENGINE = ("outreach.apps", "outreach.sandbox")
# Only entry points may use these (the `workers` package is the Celery entry point).
ENTRY_POINT_LIBRARIES = frozenset(
    {"celery", "click", "rich", "fastapi", "starlette", "jinja2", "uvicorn", "workers"}
)
# In the engine, Twilio's SDK belongs to the provider; replies and statuses are plain values.
TWILIO_HOME = "outreach.providers"


def _module(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _engine_files() -> list[Path]:
    return [p for p in _files("outreach") if not any(_within(_module(p), o) for o in OUTSIDE_ENGINE)]


def imports(path: Path, root: Path = ROOT) -> Iterator[tuple[int, str]]:
    """(line, module) for every import in `path`, wherever it stands, relative ones resolved.

    `from a import b` yields `a` and `a.b` (b may be a submodule: `from outreach import apps`), and
    `importlib.import_module("x")` with a literal name yields `x`.
    """
    module = _module(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"
        elif isinstance(node, ast.Call) and (name := _dynamic_import(node)) is not None:
            yield node.lineno, name


def _dynamic_import(node: ast.Call) -> str | None:
    """The module named by `importlib.import_module("x")` or `__import__("x")`, else None."""
    called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
    if called not in ("import_module", "__import__") or not node.args:
        return None
    first = node.args[0]
    return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None


def _violations(files: list[Path], forbidden: Callable[[str], bool]) -> list[str]:
    """'file:line imports module', once per line (`from rich.table import Table` is rich.table)."""
    found: dict[tuple[str, int], str] = {}
    for path in files:
        for line, name in imports(path):
            key = (str(path.relative_to(ROOT)), line)
            if forbidden(name) and (key not in found or len(name) < len(found[key])):
                found[key] = name
    return [f"{where}:{line} imports {name}" for (where, line), name in sorted(found.items())]


def _assert_none(violations: list[str]) -> None:
    assert not violations, "\n".join(["imports across the boundary (file:line):", *violations])


def test_the_walk_covers_the_engine_and_only_the_engine() -> None:
    modules = {_module(p) for p in _engine_files()}
    rooms = ("store", "ingest", "plan", "send", "listen", "outcomes", "providers")
    assert {f"outreach.{room}" for room in rooms} <= modules
    assert {"outreach.config", "outreach.runtime", "outreach.listen.replies"} <= modules
    assert not any(_within(m, o) for m in modules for o in OUTSIDE_ENGINE)


def test_the_engine_imports_no_entry_point_library() -> None:
    """celery, click, rich, fastapi/starlette, jinja2, uvicorn and `workers` are for entry points."""

    def forbidden(name: str) -> bool:
        return name.partition(".")[0] in ENTRY_POINT_LIBRARIES

    _assert_none(_violations(_engine_files(), forbidden))


def test_the_engine_imports_neither_the_entry_points_nor_the_sandbox() -> None:
    def forbidden(name: str) -> bool:
        return any(_within(name, outside) for outside in OUTSIDE_ENGINE)

    _assert_none(_violations(_engine_files(), forbidden))


def test_only_the_provider_speaks_twilio_in_the_engine() -> None:
    """Webhook forms and TwiML are the web side's (outreach/apps/web/twilio_forms.py)."""
    rules = [p for p in _engine_files() if not _within(_module(p), TWILIO_HOME)]

    def forbidden(name: str) -> bool:
        return name.partition(".")[0] == "twilio"

    _assert_none(_violations(rules, forbidden))


def test_the_workers_call_the_engine_not_the_entry_points() -> None:
    """`workers` may import outreach, but not the CLI, the web app, the demo or the sandbox."""

    def forbidden(name: str) -> bool:
        return any(_within(name, outside) for outside in OUTSIDE_ENGINE)

    files = _files("workers")
    assert files
    _assert_none(_violations(files, forbidden))


def test_imports_inside_functions_and_relative_ones_count(tmp_path: Path) -> None:
    """The checker itself: a lazy, a relative and a dynamic import are all seen."""
    package = tmp_path / "outreach" / "listen"
    package.mkdir(parents=True)
    source = package / "sneaky.py"
    source.write_text(
        "import importlib\n"
        "def later():\n"
        "    from rich.console import Console\n"
        "    from ..apps import cli\n"
        "    return importlib.import_module('workers.tasks'), Console, cli\n"
    )
    seen = {name for _line, name in imports(source, root=tmp_path)}
    assert {"rich.console", "outreach.apps", "outreach.apps.cli", "workers.tasks"} <= seen


def _clean_environment(**values: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("OUTREACH_", "TWILIO_", "CELERY_"))
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return env | values


def test_importing_workers_reads_no_settings(tmp_path: Path) -> None:
    """A malformed setting does not break `import workers` (the CLI and the web app import it); it
    stops the first use of the configuration instead, naming the variable."""
    script = (
        "import workers\n"
        "print('imported')\n"
        "from outreach.errors import UserError\n"
        "try:\n"
        "    workers.app.conf.broker_url\n"
        "except UserError as exc:\n"
        "    print(exc)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script],
        env=_clean_environment(OUTREACH_SEND_RATE="fast"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0] == "imported"
    assert run.stdout.splitlines()[1].startswith("OUTREACH_SEND_RATE: ")


def test_the_celery_app_takes_its_broker_from_the_settings_when_first_configured(tmp_path: Path) -> None:
    """What `celery -A workers worker` relies on: OUTREACH_BROKER_URL, read at configuration time."""
    script = (
        "import os, workers\n"
        "os.environ['OUTREACH_BROKER_URL'] = 'redis://broker.example:6379/7'\n"  # after the import
        "print(workers.app.conf.broker_url)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script],
        env=_clean_environment(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "redis://broker.example:6379/7"
