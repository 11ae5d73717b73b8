"""Events rows: the columns of DESIGN.md §5 and the check of one record.

An events file is a fraction of a roster's CPU (no phone numbers), so it is checked record by
record in the reading process; the event kinds are the campaigns' vocabulary (EVENT_KINDS), so a
file cannot bring a kind no campaign could ever refer to.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from outreach.campaigns import EVENT_KINDS
from outreach.ingest.csvfile import Problems, RowError
from outreach.ingest.fields import check_date, mrn_problem

EVENT_REQUIRED = ("mrn", "event", "date")
EVENT_OPTIONAL = ("code", "code_system")
EVENT_COLUMNS = EVENT_REQUIRED + EVENT_OPTIONAL
EVENT_COLUMNS_DB = ("mrn", "kind", "date", "code", "code_system")
CODE_MAX = 40
CODE_SYSTEM_MAX = 100


def event_row(
    line: int, fields: list[str], index: dict[str, int], today: dt.date, errors: Problems
) -> dict[str, Any] | None:
    """The record's row in EVENT_COLUMNS_DB terms, or None after adding its problems to `errors`."""

    def get(name: str) -> str:
        at = index.get(name)
        return "" if at is None else fields[at].strip()

    problems: list[RowError] = []
    mrn = get("mrn")
    if reason := mrn_problem(mrn):
        problems.append(RowError(line, "mrn", mrn, reason))
    raw_kind = get("event")
    kind = raw_kind.lower().replace(" ", "_")
    if kind not in EVENT_KINDS:
        reason = "missing event" if not raw_kind else f"unknown event; use one of {', '.join(EVENT_KINDS)}"
        problems.append(RowError(line, "event", raw_kind, reason))
    raw_date = get("date")
    day = None
    if not raw_date:
        problems.append(RowError(line, "date", "", "missing date"))
    else:
        try:
            day = check_date(raw_date, today)
        except ValueError as exc:
            problems.append(RowError(line, "date", raw_date, str(exc)))
    code, system = get("code"), get("code_system")
    if len(code) > CODE_MAX:
        problems.append(RowError(line, "code", code, f"too long (at most {CODE_MAX} characters)"))
    if len(system) > CODE_SYSTEM_MAX:
        problems.append(
            RowError(line, "code_system", system, f"too long (at most {CODE_SYSTEM_MAX} characters)")
        )
    if problems:
        errors.extend(problems)
        return None
    return {"mrn": mrn, "kind": kind, "date": day, "code": code, "code_system": system}
