"""Problem messages: each validation error as `FILE: field.path: problem; fix`.

pydantic's own messages speak Python ("Input should be a valid integer"); the people who write
campaign files are nurses and care managers. So every error is reworded in the words of the file,
with the closest valid key or value suggested (difflib) and an example of what to write.
"""

from __future__ import annotations

import difflib
import re
import typing
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from outreach.campaigns._wording import OWN, show, what
from outreach.campaigns.schema import EVENT_KINDS, CampaignFile
from outreach.campaigns.texts import template_problems

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class CampaignProblem:
    path: str  # the file as the user named it
    field: str  # e.g. steps[1].text.es; "(file)" for the file as a whole, "line N" for YAML syntax
    message: str  # "problem; fix"
    severity: Severity = "error"
    line: int | None = None  # where in the file, when known (problems are sorted by it)
    acknowledged: bool = False  # a warning the file's `acknowledge` list accepts

    def __str__(self) -> str:
        tag = (
            "warning (acknowledged): "
            if self.acknowledged
            else "warning: "
            if self.severity == "warning"
            else ""
        )
        return f"{self.path}: {self.field}: {tag}{self.message}"


def schema_problems(exc: ValidationError, shown: str) -> list[CampaignProblem]:
    """Every error pydantic found in file `shown`, reworded; a broken text yields one problem per
    mistake in it (pydantic stops at the first)."""
    problems: list[CampaignProblem] = []
    for error in exc.errors(include_url=False):
        field = field_path(error["loc"])
        if error["type"] == OWN + "template":
            problems.extend(CampaignProblem(shown, field, text) for text in template_problems(error["input"]))
        else:
            problems.append(CampaignProblem(shown, field, describe(error)))
    return problems


def summary(errors: list[CampaignProblem]) -> str:
    """The one message that stops a run on invalid files (`UserError`), listing every error."""
    count = f"{len(errors)} error{'s' if len(errors) != 1 else ''}"
    lines = "\n".join(f"  {problem}" for problem in errors)
    return (
        f"invalid campaign files ({count}; `outreach campaigns validate` shows them with warnings):\n{lines}"
    )


def field_path(loc: tuple[int | str, ...]) -> str:
    """('steps', 1, 'text', 'es') -> steps[1].text.es"""
    out = ""
    for part in loc:
        if part == "[key]":
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(file)"


_EXAMPLES = {
    "id": "id: followed by the file name without .yaml",
    "steps.id": "id: such as reminder",
    "name": "name: followed by a title care teams recognize",
    "active": "active: {from: 2026-01-01}",
    "from": "from: 2026-01-01",
    "audience": "audience: with age: {min: 18, max: 75}",
    "age": "age: {min: 18, max: 75}",
    "min": "min: 18",
    "max": "max: 75",
    "steps": "steps: with at least an invite step",
    "after": "after: 0d (time from enrollment)",
    "text": 'text: {en: "..."}',
    "event": "event: one of " + ", ".join(EVENT_KINDS),
    "keywords": "keywords: [YES, SI]",
    "outcome": "outcome: such as kit_requested",
    "field": "field: as `outreach campaigns validate` prints it, such as steps[0].text.es",
    "warning": "warning: segments, opt_out or quiet_hours",
}


def describe(error: Any) -> str:
    """A pydantic error as `problem; fix` in the words of the campaign file."""
    kind: str = error["type"]
    loc: tuple[int | str, ...] = error["loc"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    name = next((str(p) for p in reversed(loc) if isinstance(p, str) and p != "[key]"), "value")
    if kind == "extra_forbidden":
        valid = _valid_keys(loc[:-1])
        close = difflib.get_close_matches(name, valid, n=1)
        fix = f"did you mean {close[0]}?" if close else f"valid keys here: {', '.join(valid)}"
        return f"unknown key {name}; {fix}"
    if kind == "missing":
        example = _EXAMPLES.get(f"steps.{name}" if loc[0] == "steps" and name == "id" else name)
        return f"missing required field {name}; add {example or name + ': ...'}"
    if kind == "string_type":
        return f"expected text, got {what(value)}; write it as text (in quotes if it looks like a number)"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected a whole number, got {show(value)}; write digits only, such as 45"
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false, got {show(value)}; write true or false"
    if kind == "list_type":
        return f"expected a list, got {what(value)}; write [a, b] or one '- item' per line"
    if kind == "dict_type" and name in ("text", "answer"):
        return f'expected one text per language, got {what(value)}; write {name}: {{en: "...", es: "..."}}'
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected keys and values, got {what(value)}; write key: value pairs indented under {name}"
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        return f"{show(value)} is not allowed here; {hint}use {' or '.join(choices)}"
    if kind in ("greater_than_equal", "less_than_equal"):
        bound = ctx.get("ge", ctx.get("le"))
        side = "at least" if kind == "greater_than_equal" else "at most"
        return f"{show(value)} is out of range; use a number {side} {bound}"
    if kind == "too_short":
        return f"{name} is empty; add at least one"
    if kind == "string_too_short":
        return f"{name} is empty; write it"
    if kind.startswith(OWN):
        return str(error["msg"])
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    return f"{error['msg']}; see the campaign file format in DESIGN.md §5"


def _valid_keys(loc: tuple[int | str, ...]) -> list[str]:
    """The keys allowed in the mapping at `loc`, found by walking the schema."""
    model: type[BaseModel] = CampaignFile
    for part in loc:
        if isinstance(part, int):
            continue
        field = next((f for n, f in model.model_fields.items() if (f.alias or n) == part), None)
        inner = _model_in(field.annotation) if field is not None else None
        if inner is None:
            return []
        model = inner
    return [f.alias or n for n, f in model.model_fields.items()]


def _model_in(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
