"""Campaign files: the schema a care team writes (DESIGN.md §5), loading, validation and rendering.

A campaign file is the product's main interface, and the people who write it are nurses and
care managers, not programmers. So validation reports every problem in a file at once, each as
`FILE: field.path: problem; fix`.

This is the package's public face; one module per job behind it:

- `dates`: calendar arithmetic (durations, add_months) and the date and time fields
- `schema`: the pydantic models (CampaignFile, Step, ReplyRule, SendWindow, CareGap, ...)
- `texts`: placeholders, template checks, rendering, segment estimates
- `checks`: rules across fields, run on the raw file so they report even when fields fail
- `problems`: each error reworded as `problem; fix`, with suggestions
- `loading`: which files (and their stamp), YAML 1.2, content hashes, load_campaigns, validate_files

Only `loading` imports yaml and only `problems` difflib, so code that needs the models or
`render` (the workers) imports neither. The reserved reply words live in outreach/keywords.py.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from outreach.campaigns.dates import WEEKDAYS, Duration, Weekday, add_months
from outreach.campaigns.schema import (
    EVENT_KINDS,
    QUIET_AFTER,
    QUIET_BEFORE,
    ActiveDates,
    AgeRange,
    Audience,
    CampaignFile,
    CareGap,
    Exclusion,
    ReplyRule,
    SendWindow,
    Step,
    Variant,
)
from outreach.campaigns.texts import (
    PLACEHOLDER_SETTINGS,
    PLACEHOLDERS,
    Language,
    Template,
    Texts,
    render,
    render_parts,
    template_problems,
)

if TYPE_CHECKING:
    from outreach.campaigns.loading import (
        DirectoryStamp,
        campaign_paths,
        content_hash,
        directory_stamp,
        expand_paths,
        load_campaigns,
        parse_campaign,
        validate_files,
    )
    from outreach.campaigns.problems import CampaignProblem, Severity

# Imported on first use, so that the models and `render` come without yaml and difflib.
_LAZY = {
    "DirectoryStamp": "loading",
    "campaign_paths": "loading",
    "content_hash": "loading",
    "directory_stamp": "loading",
    "expand_paths": "loading",
    "load_campaigns": "loading",
    "parse_campaign": "loading",
    "validate_files": "loading",
    "CampaignProblem": "problems",
    "Severity": "problems",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


__all__ = [
    "EVENT_KINDS",
    "PLACEHOLDERS",
    "PLACEHOLDER_SETTINGS",
    "QUIET_AFTER",
    "QUIET_BEFORE",
    "WEEKDAYS",
    "ActiveDates",
    "AgeRange",
    "Audience",
    "CampaignFile",
    "CampaignProblem",
    "CareGap",
    "DirectoryStamp",
    "Duration",
    "Exclusion",
    "Language",
    "ReplyRule",
    "SendWindow",
    "Severity",
    "Step",
    "Template",
    "Texts",
    "Variant",
    "Weekday",
    "add_months",
    "campaign_paths",
    "content_hash",
    "directory_stamp",
    "expand_paths",
    "load_campaigns",
    "parse_campaign",
    "render",
    "render_parts",
    "template_problems",
    "validate_files",
]
