"""The code map: which coded FHIR resources are the §5 events, as (code system, code) → event kind.

EHRs code a colonoscopy as SNOMED CT, CPT or HCPCS, a stool test as LOINC, a flu shot as CVX, a
colon cancer as ICD-10-CM or SNOMED CT; campaigns speak only the event kinds. The mapping lives in
a data file (codemap.csv, shipped with the package) rather than in code so every row can cite the
value set it comes from (the CMS eCQM value set OIDs) and a site can add its own local codes with
a file of the same shape (OUTREACH_CODE_MAP) without touching the program. Where each value
set's codes were checked is in codemap-sources.md.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path

from outreach.campaigns import EVENT_KINDS
from outreach.errors import UserError

COLUMNS = ("system", "code", "kind", "value_set")
CodeMap = Mapping[tuple[str, str], str]

# Other spellings of a code system's URI that EHRs send. The map uses HCPCS's VSAC URI (http://),
# and earlier maps and some EHRs use https://. A coding under either spelling should match.
_SPELLINGS = {
    "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets": (
        "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
    ),
}


def load_code_map(site_file: str | Path | None = None) -> dict[tuple[str, str], str]:
    """The shipped map, plus the site's file when given; a site row wins over a shipped one, so a
    site can also re-map a code it uses differently."""
    shipped = resources.files("outreach.ingest.fhir").joinpath("codemap.csv")
    mapping = _read(shipped.read_text(encoding="utf-8").splitlines(), "codemap.csv (shipped)")
    if site_file:
        path = Path(site_file)
        try:
            with path.open("r", encoding="utf-8-sig", newline="") as handle:
                mapping.update(_read(handle, str(path)))
        except OSError as exc:
            raise UserError(
                f"OUTREACH_CODE_MAP {path}: cannot read it ({exc.strerror}); fix the path or unset it"
            ) from None
    for (system, code), kind in list(mapping.items()):
        for spelling in _SPELLINGS.get(system, ()):
            mapping.setdefault((spelling, code), kind)  # a site's row under that spelling wins
    return mapping


def _read(lines: Iterable[str], name: str) -> dict[tuple[str, str], str]:
    """Rows of `name`, each checked: a kind campaigns do not know, or a row without its value set,
    is a user error naming the line, because a silently ignored row leaves a gap open."""
    reader = csv.DictReader(lines)
    missing = [column for column in COLUMNS if column not in (reader.fieldnames or ())]
    if missing:
        raise UserError(
            f"{name}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}; "
            f"the header must have {', '.join(COLUMNS)}"
        )
    mapping: dict[tuple[str, str], str] = {}
    for row in reader:
        line = reader.line_num
        system, code, kind = (row[c].strip() if row[c] else "" for c in ("system", "code", "kind"))
        if not system or not code:
            raise UserError(f"{name}, line {line}: system and code are required; fill them in")
        if kind not in EVENT_KINDS:
            raise UserError(f"{name}, line {line}, kind {kind!r}: use one of {', '.join(EVENT_KINDS)}")
        if not (row["value_set"] or "").strip():
            raise UserError(f"{name}, line {line}: value_set is empty; cite the value set the code is from")
        mapping[(system, code)] = kind
    return mapping
