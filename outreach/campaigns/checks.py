"""Checks across fields of one campaign file, run on the raw mapping.

They run on the data as read, not on the validated model, so they still report when other
fields fail: a care team sees every problem of a file in one run. Each yields
`(field path, "problem; fix")`; `errors` make the file invalid, `warnings` do not (they flag
cost and carrier expectations, which the care team may accept). A warning also names its kind
(`WarningKind`), which is how a file's `acknowledge` list accepts it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pydantic_core import PydanticCustomError

from outreach.campaigns.dates import time_of_day
from outreach.campaigns.schema import QUIET_AFTER, QUIET_BEFORE, WarningKind, is_campaign_id
from outreach.campaigns.texts import (
    has_opt_out_instructions,
    is_language_code,
    segment_warning,
    template_problems,
)

if TYPE_CHECKING:
    from outreach.config import Settings

Found = Iterator[tuple[str, str]]
Warned = Iterator[tuple[str, WarningKind, str]]


def errors(raw: dict[str, Any], stem: str | None) -> Found:
    """Rules that need more than one field: the id against the file name (`stem`; None for text
    not read from a .yaml file), unique step ids, look-backs and keywords, default-language texts."""
    yield from _id_matches_file(raw, stem)
    yield from _unique_step_ids(raw)
    yield from _one_look_back_per_event(raw)
    yield from _default_language_texts(raw)
    yield from _unique_keywords(raw)


def warnings(raw: dict[str, Any], settings: Settings) -> Warned:
    """Costly texts (estimated with the clinic's `settings`), a first message without STOP, and a
    send window reaching into the hours texts are never sent: `(field, kind, "problem; fix")`."""
    yield from ((field, "segments", message) for field, message in _segment_costs(raw, settings))
    yield from ((field, "opt_out", message) for field, message in _opt_out_instructions(raw))
    yield from ((field, "quiet_hours", message) for field, message in _quiet_hours(raw))


def acknowledged(raw: dict[str, Any]) -> set[tuple[str, str]]:
    """(field, warning kind) of every well-formed entry of the file's `acknowledge` list (the
    schema reports malformed ones)."""
    return {
        (entry["field"], entry["warning"])
        for _, entry in _items(raw, "acknowledge")
        if isinstance(entry.get("field"), str) and isinstance(entry.get("warning"), str)
    }


def _items(raw: dict[str, Any], key: str) -> Iterator[tuple[int, dict[str, Any]]]:
    value = raw.get(key)
    if isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, dict):
                yield index, item


def _texts(raw: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every translated text mapping in the file with its field path."""
    for index, step in _items(raw, "steps"):
        if isinstance(step.get("text"), dict):
            yield f"steps[{index}].text", step["text"]
        for position, variant in _items(step, "variants"):
            if isinstance(variant.get("text"), dict):
                yield f"steps[{index}].variants[{position}].text", variant["text"]
    for index, rule in _items(raw, "replies"):
        if isinstance(rule.get("answer"), dict):
            yield f"replies[{index}].answer", rule["answer"]


def _id_matches_file(raw: dict[str, Any], stem: str | None) -> Found:
    campaign_id = raw.get("id")
    if stem is not None and is_campaign_id(campaign_id) and campaign_id != stem:
        yield "id", f"id {campaign_id} does not match the file name {stem}; rename the file or set id: {stem}"


def _unique_step_ids(raw: dict[str, Any]) -> Found:
    step_ids: dict[str, int] = {}
    for index, step in _items(raw, "steps"):
        step_id = step.get("id")
        if isinstance(step_id, str):
            if step_id in step_ids:
                yield (
                    f"steps[{index}].id",
                    f"duplicate step id {step_id} (also steps[{step_ids[step_id]}]); rename one",
                )
            else:
                step_ids[step_id] = index


def _one_look_back_per_event(raw: dict[str, Any]) -> Found:
    events: dict[str, int] = {}
    audience = raw.get("audience")
    gaps = audience.get("care_gap") if isinstance(audience, dict) else None
    for index, gap in enumerate(gaps if isinstance(gaps, list) else []):
        event = gap.get("event") if isinstance(gap, dict) else None
        if isinstance(event, str):
            if event in events:
                yield (
                    f"audience.care_gap[{index}].event",
                    f"{event} is listed twice (also care_gap[{events[event]}]); keep one look-back per event",
                )
            else:
                events[event] = index


def _default_language_texts(raw: dict[str, Any]) -> Found:
    default = raw.get("default_language", "en")
    if not is_language_code(default):
        return  # the schema reports the code itself
    for field, texts in _texts(raw):
        if default not in texts:
            yield field, f'no {default} text (the default language); add {default}: "..."'


def _unique_keywords(raw: dict[str, Any]) -> Found:
    """Case-folded but accent-kept, as written: SI and SÍ may lead to the same outcome twice."""
    keywords: dict[str, str] = {}
    for index, rule in _items(raw, "replies"):
        words = rule.get("keywords")
        for position, word in enumerate(words if isinstance(words, list) else []):
            if not isinstance(word, str) or not word.strip():
                continue
            folded = word.strip().casefold()
            here = f"replies[{index}].keywords[{position}]"
            if folded in keywords:
                yield (
                    here,
                    f"keyword {word.strip()} is also {keywords[folded]}; "
                    "a keyword can lead to one outcome only, remove one",
                )
            else:
                keywords[folded] = here


def _segment_costs(raw: dict[str, Any], settings: Settings) -> Found:
    for field, texts in _texts(raw):
        for language, template in texts.items():
            if isinstance(template, str) and not template_problems(template):
                message = segment_warning(template, settings)
                if message:
                    yield f"{field}.{language}", message


def _opt_out_instructions(raw: dict[str, Any]) -> Found:
    first = dict(_items(raw, "steps")).get(0)
    if first is None:
        return
    wordings = [("steps[0].text", first.get("text"))]
    wordings += [(f"steps[0].variants[{i}].text", v.get("text")) for i, v in _items(first, "variants")]
    for field, texts in wordings:
        if not isinstance(texts, dict):
            continue
        for language, text in texts.items():
            if isinstance(text, str) and not has_opt_out_instructions(text):
                yield (
                    f"{field}.{language}",
                    'the first message has no opt-out instructions; add "Reply STOP to opt out." '
                    "(carriers expect them in the first message, keeping the word STOP in every language)",
                )


def _quiet_hours(raw: dict[str, Any]) -> Found:
    window = raw.get("send_window")
    if not isinstance(window, dict):
        return
    for key, limit, outside in (("start", QUIET_BEFORE, "before"), ("end", QUIET_AFTER, "after")):
        try:
            value = time_of_day(window.get(key))
        except PydanticCustomError:
            continue
        if (value < limit) if outside == "before" else (value > limit):
            yield (
                f"send_window.{key}",
                f"{value:%H:%M} is {outside} {limit:%H:%M}; messages are never sent {outside} "
                f"{limit:%H:%M} patient-local time (20:00 in FL, OK and MD), "
                "so they wait for the next opening",
            )
