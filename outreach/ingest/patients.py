"""Roster rows: the columns of DESIGN.md §5 and the check that turns records into clean rows.

The check runs once per row of million-row files, in helper processes (outreach/ingest/pool.py),
so it works a column at a time over a whole batch: each column is a list sliced out of the batch
in one step, cleaned by one comprehension, and only the values a fast test flags are looked at
again to say why. That keeps the per-row cost to what the values themselves need (phone parsing
is most of it) and each column's rule in one short function. A checked batch comes back as the
COPY text of its good rows (PostgreSQL) or as insert parameters (SQLite), plus its problems,
because that is what is cheap to send between processes.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from operator import attrgetter
from typing import Any
from zoneinfo import available_timezones

from outreach.ingest.csvfile import RowError
from outreach.ingest.fields import MRN_MAX, check_date, mrn_problem
from outreach.phones import PhoneError, parse_phone
from outreach.store import sql

PATIENT_REQUIRED = ("mrn", "first_name", "birth_date", "phone")
PATIENT_OPTIONAL = ("last_name", "sex", "language", "timezone", "postal_code")
PATIENT_COLUMNS = PATIENT_REQUIRED + PATIENT_OPTIONAL

# Columns an import owns; a row is "unchanged" when all of these already hold the same values.
DATA_COLUMNS = (
    "first_name",
    "last_name",
    "birth_date",
    "sex",
    "phone",
    "phone_zones",
    "language",
    "timezone",
    "postal_code",
)
# What a checked row holds, in this order: the file's values, cleaned ("" is NULL).
STAGE_COLUMNS = ("mrn", *DATA_COLUMNS)

NAME_MAX = 100
POSTAL_CODE_MAX = 16
SEXES = {
    "": "unknown",
    "f": "female",
    "female": "female",
    "m": "male",
    "male": "male",
    "o": "other",
    "other": "other",
    "u": "unknown",
    "unknown": "unknown",
}
_BAD_SEX = "unknown sex; use female, male, other or unknown"
_BAD_ZONE = "unknown time zone; use an IANA name such as America/Chicago"
_BAD_LANGUAGE = "not a language code; use a 2 or 3 letter code such as en or es"
_LANGUAGE = re.compile(r"[a-z]{2,3}")


@dataclass
class Batch:
    """Records of the roster, in file order: `fields` holds `width` values per record (the
    roster's columns that are present, in PATIENT_COLUMNS order) and `duplicates` maps a record's
    index in the batch to the line where its mrn first appeared. One flat list of strings pickles
    at a fraction of the cost of a list per record."""

    lines: list[int]
    fields: list[str]
    width: int
    duplicates: dict[int, int]


@dataclass
class Checked:
    """A checked batch: its good rows as COPY text (PostgreSQL) or as insert parameters."""

    accepted: int
    rejected: int
    errors: list[RowError]
    copy_text: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)


class _Problems:
    """The problems found in one batch and the records they reject (by index in the batch)."""

    def __init__(self, lines: list[int]) -> None:
        self.lines = lines
        self.errors: list[RowError] = []
        self.rejected: set[int] = set()

    def add(self, at: int, column: str, value: str, reason: str) -> None:
        self.errors.append(RowError(self.lines[at], column, value, reason))
        self.rejected.add(at)

    def in_file_order(self) -> list[RowError]:
        """By line; a record's own problems stay in column order (the sort is stable)."""
        return sorted(self.errors, key=attrgetter("line"))


class PatientCheck:
    """Checks roster batches; one lives in each helper process and one in the importing process.

    It keeps the parse of values that repeat (birth dates, languages) between batches. The
    duplicate-mrn check is not here: it needs the whole file, so the reading process does it and
    hands the answer over (Batch.duplicates).
    """

    def __init__(
        self, present: Sequence[str], region: str, today: dt.date, now: dt.datetime, *, copy: bool
    ) -> None:
        # Where each of PATIENT_COLUMNS sits in a record of `present` values; None when absent.
        self.positions = tuple(present.index(n) if n in present else None for n in PATIENT_COLUMNS)
        self.region = region
        self.today = today
        self.now = now
        self.copy = copy
        self.dates: dict[str, dt.date] = {}
        self.languages: dict[str, str] = {}

    def check(self, batch: Batch) -> Checked:
        problems = _Problems(batch.lines)
        mrn, first, birth, phone, last, sex, language, zone, postal = self._columns(batch)
        # In the order a record's problems are listed: the file's usual column order.
        mrn = _mrns(mrn, batch.duplicates, problems)
        first = _names(first, "first_name", problems, required=True)
        last = _names(last, "last_name", problems, required=False)
        birth = self._birth_dates(birth, problems)
        sex = _sexes(sex, problems)
        phone, zones = _phones(phone, self.region, problems)
        language = self._languages(language, problems)
        zone = _timezones(zone, problems)
        postal = _postal_codes(postal, problems)
        # In STAGE_COLUMNS order.
        rows = zip(mrn, first, last, birth, sex, phone, zones, language, zone, postal, strict=True)
        rejected = problems.rejected
        good = [row for at, row in enumerate(rows) if at not in rejected] if rejected else list(rows)
        checked = Checked(len(good), len(batch.lines) - len(good), problems.in_file_order())
        if self.copy:
            checked.copy_text = sql.copy_text(good)
        else:
            checked.rows = [self._params(values) for values in good]
        return checked

    def _columns(self, batch: Batch) -> list[list[str]]:
        """Each of PATIENT_COLUMNS as a list of raw values, "" for a column the file lacks."""
        fields, width, count = batch.fields, batch.width, len(batch.lines)
        return [[""] * count if at is None else fields[at::width] for at in self.positions]

    def _birth_dates(self, values: list[str], problems: _Problems) -> list[str]:
        """Kept as the text check_date accepted: exactly YYYY-MM-DD, which PostgreSQL reads as is."""
        clean = [value.strip() for value in values]
        dates = self.dates
        for at in [at for at, text in enumerate(clean) if text not in dates]:
            text = clean[at]
            if not text:
                problems.add(at, "birth_date", "", "missing birth_date")
                continue
            try:
                dates[text] = check_date(text, self.today)
            except ValueError as exc:
                problems.add(at, "birth_date", text, str(exc))
        return clean

    def _languages(self, values: list[str], problems: _Problems) -> list[str]:
        languages = self.languages
        clean = [languages.get(value.strip(), "") for value in values]
        for at in [at for at, code in enumerate(clean) if not code]:
            text = values[at].strip()
            code = text.lower() or "en"
            if _LANGUAGE.fullmatch(code):
                clean[at] = languages[text] = code
            else:
                problems.add(at, "language", text, _BAD_LANGUAGE)
        return clean

    def _params(self, values: tuple[str, ...]) -> dict[str, Any]:
        row: dict[str, Any] = {name: value or None for name, value in zip(STAGE_COLUMNS, values, strict=True)}
        row["birth_date"] = self.dates[values[3]]
        row["active"] = True
        row["created_at"] = row["updated_at"] = self.now
        return row


def _mrns(values: list[str], duplicates: dict[int, int], problems: _Problems) -> list[str]:
    """Duplicates are marked only for well-formed mrns (batches.read_batches), so a record has
    at most one mrn problem."""
    clean = [value.strip() for value in values]
    for at in [at for at, mrn in enumerate(clean) if not 0 < len(mrn) <= MRN_MAX]:
        problems.add(at, "mrn", clean[at], mrn_problem(clean[at]) or "")
    for at, first in duplicates.items():
        problems.add(at, "mrn", clean[at], f"duplicate mrn (first on line {first})")
    return clean


def _names(values: list[str], column: str, problems: _Problems, *, required: bool) -> list[str]:
    """A name is text a patient will read: a line break or a run of spaces typed into a cell must
    not reach a message, so whitespace runs fold to one space."""
    clean = [" ".join(value.split()) for value in values]
    for at in [at for at, name in enumerate(clean) if not name or len(name) > NAME_MAX]:
        name = clean[at]
        if len(name) > NAME_MAX:
            problems.add(at, column, name, f"too long (at most {NAME_MAX} characters)")
        elif required:
            problems.add(at, column, "", f"missing {column}")
    return clean


def _sexes(values: list[str], problems: _Problems) -> list[str]:
    clean = [SEXES.get(value.strip().lower(), "") for value in values]
    for at in [at for at, sex in enumerate(clean) if not sex]:
        problems.add(at, "sex", values[at].strip(), _BAD_SEX)
    return clean


def _phones(values: list[str], region: str, problems: _Problems) -> tuple[list[str], list[str]]:
    """E.164 numbers and the zones each spans (space-separated); "" for a refused number."""
    e164s: list[str] = []
    zones: list[str] = []
    for at, raw in enumerate(values):
        try:
            phone = parse_phone(raw, region)
        except PhoneError as exc:
            problems.add(at, "phone", raw.strip(), str(exc))
            e164s.append("")
            zones.append("")
            continue
        e164s.append(phone.e164)
        zones.append(" ".join(phone.zones))
    return e164s, zones


@lru_cache(maxsize=1)
def _zone_names() -> dict[str, str]:
    """Case-insensitive lookup of IANA names, so "america/chicago" is accepted as America/Chicago."""
    return {name.lower(): name for name in available_timezones()}


def _timezones(values: list[str], problems: _Problems) -> list[str]:
    clean = [value.strip() for value in values]
    names = _zone_names()
    for at in [at for at, text in enumerate(clean) if text]:
        zone = names.get(clean[at].lower(), "")
        if not zone:
            problems.add(at, "timezone", clean[at], _BAD_ZONE)
        clean[at] = zone
    return clean


def _postal_codes(values: list[str], problems: _Problems) -> list[str]:
    clean = [value.strip() for value in values]
    for at in [at for at, code in enumerate(clean) if len(code) > POSTAL_CODE_MAX]:
        problems.add(at, "postal_code", clean[at], f"too long (at most {POSTAL_CODE_MAX} characters)")
    return clean
