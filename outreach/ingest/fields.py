"""Checks of single values that both import files share (dates, mrns).

Each check returns the clean value or raises ValueError whose text is the reason a care team
reads next to the line, so the roster and the events file word the same mistake the same way.
"""

from __future__ import annotations

import datetime as dt

MRN_MAX = 64  # patients.mrn and patient_events.mrn are VARCHAR(64)
_EARLIEST = dt.date(1900, 1, 1)
_NOT_A_DATE = "not a date; write YYYY-MM-DD"


def check_date(text: str, today: dt.date) -> dt.date:
    """A YYYY-MM-DD date from 1900 up to `today` (birth dates and events never lie ahead).

    The shape is checked by hand before `dt.date` so "2026-1-5" or "05/05/1970" are refused
    with the format to use, rather than guessed at."""
    if len(text) != 10 or text[4] != "-" or text[7] != "-":
        raise ValueError(_NOT_A_DATE)
    digits = text[:4] + text[5:7] + text[8:]
    if not (digits.isascii() and digits.isdigit()):
        raise ValueError(_NOT_A_DATE)
    try:
        day = dt.date(int(text[:4]), int(text[5:7]), int(text[8:]))
    except ValueError:
        raise ValueError("no such day in the calendar") from None
    if day > today:
        raise ValueError(f"in the future (after {today.isoformat()})")
    if day < _EARLIEST:
        raise ValueError("before 1900; check the year")
    return day


def mrn_problem(mrn: str) -> str | None:
    """Why a stripped mrn cannot be used, or None."""
    if not mrn:
        return "missing mrn"
    if len(mrn) > MRN_MAX:
        return f"too long (at most {MRN_MAX} characters)"
    return None
