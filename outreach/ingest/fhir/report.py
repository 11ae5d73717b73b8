"""What a FHIR import found: the counts `--json` prints and the problems the `--errors` file lists.

A FHIR problem sits in a file (an import reads many) at an NDJSON line or a Bundle entry, so the
report has a file column and keeps the two positions apart; its cells go through the same
spreadsheet guard as the CSV import's report (errorsfile.spreadsheet_safe).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from outreach.ingest.errorsfile import spreadsheet_safe


@dataclass
class FhirError:
    """One rejected resource (or unreadable line/entry), with where it is and why."""

    file: Path
    line: int | None  # NDJSON: 1-based line
    entry: int | None  # Bundle: 0-based index, as in Bundle.entry[i]
    field: str  # the FHIR element, "" when the whole resource is unusable
    value: str
    reason: str

    def describe(self) -> str:
        where = f"line {self.line}" if self.line is not None else f"entry {self.entry}"
        what = f", {self.field} {self.value!r}" if self.field else ""
        return f"{self.file.name}, {where}{what}: {self.reason}"


@dataclass
class PatientCounts:
    accepted: int = 0
    rejected: int = 0
    inserted: int = 0
    updated: int = 0


@dataclass
class FhirResult:
    """Counts over every file read: patients as `patients import` counts them, events with the
    reasons resources did not become events."""

    patients: PatientCounts = field(default_factory=PatientCounts)
    files: int = 0
    resources: int = 0
    unreadable: int = 0
    events_accepted: int = 0
    events_rejected: int = 0
    events_inserted: int = 0
    unknown_mrns: int = 0
    skipped_status: int = 0  # not completed/final: closes no gap
    skipped_unmapped: int = 0  # an event resource whose codes are not in the code map
    skipped_type: int = 0  # resources outreach does not read (Encounter, Claim, ...)
    deactivated: int = 0
    errors: list[FhirError] = field(default_factory=list)
    unknown_at: list[tuple[Path, int, list[int]]] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return self.patients.rejected + self.events_rejected + self.unreadable

    def summary(self) -> dict[str, object]:
        """The `--json` object: the patients' four counts as `patients import` prints them, plus
        "events" and "resources" objects (README, "From an EHR: FHIR")."""
        p = self.patients
        return {
            "accepted": p.accepted,
            "rejected": p.rejected,
            "inserted": p.inserted,
            "updated": p.updated,
            "events": {
                "accepted": self.events_accepted,
                "rejected": self.events_rejected,
                "inserted": self.events_inserted,
                "unknown_mrns": self.unknown_mrns,
            },
            "resources": {
                "files": self.files,
                "read": self.resources,
                "unreadable": self.unreadable,
                "skipped_status": self.skipped_status,
                "skipped_unmapped": self.skipped_unmapped,
                "skipped_type": self.skipped_type,
                "deactivated": self.deactivated,
            },
        }

    def warnings(self) -> list[str]:
        """One line on events whose patient is not on the roster (kept, as the CSV import does)."""
        if not self.unknown_mrns:
            return []
        shown = []
        for path, _count, lines in self.unknown_at[:3]:
            unit = "line" if path.name.endswith((".ndjson", ".ndjson.gz")) else "entry"
            shown.append(f"{path.name} {unit} {', '.join(map(str, lines[:3]))}")
        more = ", …" if len(self.unknown_at) > 3 else ""
        return [
            f"{self.unknown_mrns} event(s) refer to patients not on the roster ({'; '.join(shown)}{more}); "
            "kept, they count once those patients are imported: check the Patient resources were exported "
            "and accepted"
        ]


def write_fhir_errors_csv(path: Path, errors: Iterable[FhirError]) -> None:
    """The `--errors` file: file,line,entry,field,value,reason, every text cell spreadsheet-safe."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("file", "line", "entry", "field", "value", "reason"))
        for error in errors:
            writer.writerow(
                (
                    spreadsheet_safe(str(error.file)),
                    "" if error.line is None else error.line,
                    "" if error.entry is None else error.entry,
                    spreadsheet_safe(error.field),
                    spreadsheet_safe(error.value),
                    spreadsheet_safe(error.reason),
                )
            )
