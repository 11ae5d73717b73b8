"""Loading campaign files: which files, read as YAML 1.2, checked, reported all at once.

YAML is read with YAML 1.2 scalars: YAML 1.1 would silently turn a NO keyword into false,
09:00 into 540 and 2026-02-30 into a crash. Duplicate keys are errors rather than the last one
silently winning. Every problem of every file is reported in one run, each with its line, so a
care team fixes a file in one pass; nothing runs on half a protocol.

Campaign files are small and need no YAML aliases, but a few nested aliases (`b: [*a, *a]`,
`c: [*b, *b]`, ...) stand for billions of values, which every later step (line numbers, the
schema, the checks) would walk: one such file made `campaigns validate` run for minutes and take
gigabytes, and `tick` and `web` load the same files. So a file over MAX_FILE_BYTES is refused
unread, and a document whose aliases would expand it beyond MAX_VALUES values is refused right
after parsing, before anything walks it.
"""

from __future__ import annotations

import hashlib
import re
import typing
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from outreach.campaigns import checks
from outreach.campaigns._wording import what
from outreach.campaigns.problems import CampaignProblem, schema_problems, summary
from outreach.campaigns.schema import CampaignFile
from outreach.errors import UserError

if TYPE_CHECKING:
    from outreach.config import Settings

MAX_FILE_BYTES = 1_000_000  # the shipped files are about 4 kB
MAX_VALUES = 20_000  # scalars, lists and mappings once aliases are expanded (shipped: about 300)
MAX_ALIASES = 100

# (file, mtime in ns, size) of every campaign file in a directory; see `directory_stamp`.
DirectoryStamp = frozenset[tuple[Path, int, int]]


def campaign_paths(directory: Path) -> list[Path]:
    """The campaign files in a directory: *.yaml and *.yml, hidden files (editor backups) skipped."""
    found = [*directory.glob("*.yaml"), *directory.glob("*.yml")]
    return sorted(p for p in found if not p.name.startswith(".") and p.is_file())


def directory_stamp(directory: Path) -> DirectoryStamp:
    """The files `load_campaigns(directory)` would read, each with its mtime and size: a new file
    (.yaml or .yml), an edit or a deletion changes the stamp, so a long-lived process reloads
    exactly when the loader would see something else."""
    found: set[tuple[Path, int, int]] = set()
    for path in campaign_paths(directory):
        try:
            stat = path.stat()
        except OSError:  # deleted since it was listed: it is not there
            continue
        found.add((path, stat.st_mtime_ns, stat.st_size))
    return frozenset(found)


def expand_paths(paths: Sequence[Path]) -> list[Path]:
    """Files as given, directories as the campaign files in them, each file once (a missing path
    stays, so that validation reports it)."""
    found: dict[Path, Path] = {}
    for path in paths:
        for file in campaign_paths(path) if path.is_dir() else [path]:
            found.setdefault(file.resolve(), file)
    return list(found.values())


def content_hash(path: Path | str) -> str:
    """sha256 (hex) of the file's bytes: what the `campaigns` table records per loaded version."""
    return _sha256(Path(path).read_bytes())


def load_campaigns(directory: Path | str | None = None, *, settings: Settings) -> dict[str, CampaignFile]:
    """Every campaign in `directory` (default: `settings.campaigns_dir`) by id; raises UserError
    listing every error when any file is invalid, so nothing runs on half a protocol.

    `settings` are passed down, never fetched here: the caller (a worker's runtime, the CLI, a
    test) decides which clinic's name, phone and link the segment estimates use."""
    folder = Path(directory if directory is not None else settings.campaigns_dir)
    if not folder.is_dir():
        where = "" if directory is not None else " (OUTREACH_CAMPAIGNS_DIR)"
        raise UserError(
            f"campaign directory {folder}{where} does not exist; create it or point to the right one"
        )
    campaigns, problems = validate_files(campaign_paths(folder), settings=settings)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise UserError(summary(errors))
    return campaigns


def validate_files(
    paths: Sequence[Path], *, settings: Settings
) -> tuple[dict[str, CampaignFile], list[CampaignProblem]]:
    """Check every file and report every problem; the dict holds only the files without errors.

    `settings` supply the clinic name, phone and link used to estimate segment counts."""
    campaigns: dict[str, CampaignFile] = {}
    problems: list[CampaignProblem] = []
    for path in paths:
        shown = _display(path)
        data = _read_bytes(path, shown)
        if isinstance(data, CampaignProblem):
            problems.append(data)
            continue
        campaign, found = _check(data, shown, path.stem, settings)
        problems.extend(found)
        if campaign is None:
            continue
        if campaign.id in campaigns:
            first = campaigns[campaign.id].path
            problems.append(
                CampaignProblem(
                    shown, "id", f"campaign id {campaign.id} is also used by {first}; remove one file"
                )
            )
            continue
        campaigns[campaign.id] = campaign
    return campaigns, problems


def parse_campaign(text: str, *, path: str = "<text>", settings: Settings) -> CampaignFile:
    """A campaign from YAML text (tests, previews); raises UserError listing every error. The id
    is checked against the file name only when `path` names a .yaml file."""
    stem = Path(path).stem if path.endswith((".yaml", ".yml")) else None
    campaign, problems = _check(text.encode("utf-8"), path, stem, settings)
    if campaign is None:
        raise UserError(summary([p for p in problems if p.severity == "error"]))
    return campaign


def _read_bytes(path: Path, shown: str) -> bytes | CampaignProblem:
    """The file's bytes, at most MAX_FILE_BYTES of them (a bigger file is not a campaign)."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        return CampaignProblem(shown, "(file)", f"cannot read it ({exc.strerror}); check the path")
    if len(data) > MAX_FILE_BYTES:
        return CampaignProblem(
            shown,
            "(file)",
            f"is over {MAX_FILE_BYTES // 1_000_000} MB; a campaign file is a few kB, check the path",
        )
    return data


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _display(path: Path) -> str:
    """Paths under the working directory are shown relative to it, as the user would type them."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


# --- checking one file ------------------------------------------------------------------------


class _TooBig(Exception):
    """The document's aliases stand for more than a campaign file can hold (see the docstring)."""


class _Loader(yaml.SafeLoader):
    """YAML 1.2 scalars (only true/false are booleans; no sexagesimal numbers, no implicit dates),
    duplicate keys are errors instead of the last one silently winning, and aliases are counted."""

    aliases = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise _TooBig(f"too many YAML aliases (over {MAX_ALIASES}); campaign files need none")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, typing.Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if not tag.endswith((":bool", ":int", ":float", ":timestamp"))]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^[-+]?[0-9]+$"), list("-+0123456789"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+\.[0-9]*)(?:[eE][-+]?[0-9]+)?$"),
    list("-+.0123456789"),
)


def _check(
    data: bytes, shown: str, stem: str | None, settings: Settings
) -> tuple[CampaignFile | None, list[CampaignProblem]]:
    """The campaign in `data` (None when it has errors) and every problem, in file order."""
    document = _read(data, shown)
    if isinstance(document, CampaignProblem):
        return None, [document]
    node, raw = document
    problems: list[CampaignProblem] = []
    campaign: CampaignFile | None = None
    try:
        campaign = CampaignFile.model_validate(raw)
    except ValidationError as exc:
        problems = schema_problems(exc, shown)
    problems.extend(CampaignProblem(shown, field, message) for field, message in checks.errors(raw, stem))
    accepted = checks.acknowledged(raw)
    problems.extend(
        CampaignProblem(shown, field, message, "warning", acknowledged=(field, kind) in accepted)
        for field, kind, message in checks.warnings(raw, settings)
    )
    lines = _field_lines(node)
    problems = sorted(
        (replace(p, line=_line_of(p.field, lines)) for p in problems),
        key=lambda p: p.line or 0,
    )
    if campaign is None or any(p.severity == "error" for p in problems):
        return None, problems
    campaign.loaded_from(shown, _sha256(data))
    return campaign, problems


def _read(data: bytes, shown: str) -> tuple[yaml.Node, dict[str, Any]] | CampaignProblem:
    """The document as a node tree (for line numbers) and as a mapping, or the one problem that
    stops the file from being read at all."""

    def unreadable(message: str) -> CampaignProblem:
        return CampaignProblem(shown, "(file)", message)

    try:
        loader = _Loader(data.decode("utf-8-sig"))
        try:
            node = loader.get_single_node()
            if node is not None:
                _check_size(node, loader.aliases)
            raw = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except UnicodeDecodeError:
        return unreadable("is not UTF-8 text; save it as UTF-8")
    except _TooBig as exc:
        return unreadable(str(exc))
    except RecursionError:
        return unreadable("is nested too deeply to be a campaign file; check its brackets and indentation")
    except yaml.MarkedYAMLError as exc:
        return _syntax_problem(shown, exc)
    except yaml.YAMLError as exc:
        return unreadable(f"YAML error ({exc}); check the file's syntax")
    if node is None or raw is None:
        return unreadable("the file is empty; start from a shipped campaign such as flu-season.yaml")
    if not isinstance(raw, dict):
        got = what(raw)
        return unreadable(f"expected keys such as id, name and steps, got {got}; write key: value lines")
    return node, raw


def _check_size(root: yaml.Node, aliases: int) -> None:
    """Refuse a document whose aliases expand it past MAX_VALUES values, counting each shared
    node once per use, without expanding anything (sizes are memoized per node)."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        if id(node) not in sizes:
            children: list[yaml.Node] = []
            if isinstance(node, yaml.SequenceNode):
                children = list(node.value)
            elif isinstance(node, yaml.MappingNode):
                children = [part for pair in node.value for part in pair]
            sizes[id(node)] = 1 + sum(size(child) for child in children)
        return sizes[id(node)]

    if aliases and size(root) > MAX_VALUES:
        raise _TooBig(
            f"too many YAML aliases ({aliases}, standing for over {MAX_VALUES} values); "
            "campaign files need none, write the values out"
        )


def _field_lines(node: yaml.Node, prefix: str = "") -> dict[str, int]:
    """Field path -> line number (1-based) of every key and item in the document."""
    found = {prefix: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = f"{prefix}.{key.value}" if prefix else str(key.value)
            found.update(_field_lines(value, path))
            found[path] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found.update(_field_lines(item, f"{prefix}[{index}]"))
    return found


def _line_of(field: str, lines: dict[str, int]) -> int | None:
    """The line of `field`, else of its nearest enclosing field (a missing key: its parent)."""
    while field not in lines and field:
        field = re.sub(r"(\.[^.\[]*|\[\d+\])$", "", field) if re.search(r"[.\[]", field) else ""
    return lines.get(field)


def _syntax_problem(shown: str, exc: yaml.MarkedYAMLError) -> CampaignProblem:
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}" if mark is not None else "(file)"
    problem = exc.problem or "unreadable"
    context = f" ({exc.context})" if exc.context else ""
    fix = (
        "remove or rename one of them"
        if "duplicate key" in problem
        else "check indentation and colons on that line, and quote text containing ': ' or '#' "
        "or starting with { or ["
    )
    return CampaignProblem(shown, where, f"YAML syntax error: {problem}{context}; {fix}")
