"""The narrow reading of FHIR R4 resources: only the fields DESIGN.md §13 uses, nothing validated
that is not used.

A full FHIR model library validates every element of every resource; a bulk export is millions of
resources of which outreach reads a dozen fields, so each reader here walks the plain JSON (dicts
and lists) for exactly those fields and leaves the rest unlooked-at. A field that is present but
unusable raises Unusable, which the importer reports with the resource's place in its file.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from outreach.ingest.fhir.codemap import CodeMap

Json = dict[str, Any]

# Resource types that can be events, the field holding their code, the statuses that close a gap
# (a not-done immunization, an entered-in-error procedure or a preliminary result close nothing)
# and the date fields, best first.
EVENT_TYPES: dict[str, tuple[str, frozenset[str], tuple[str, ...]]] = {
    "Procedure": ("code", frozenset({"completed"}), ("performedDateTime", "performedPeriod")),
    "Immunization": ("vaccineCode", frozenset({"completed"}), ("occurrenceDateTime",)),
    "Observation": (
        "code",
        frozenset({"final", "amended", "corrected"}),
        ("effectiveDateTime", "effectivePeriod", "effectiveInstant", "issued"),
    ),
    "DiagnosticReport": (
        "code",
        frozenset({"final", "amended", "corrected", "appended"}),
        ("effectiveDateTime", "effectivePeriod", "issued"),
    ),
    # A condition has no "final": only refuted or mistaken diagnoses are left out (a resolved
    # colon cancer still excludes, as the eCQMs count it ever).
    "Condition": ("code", frozenset(), ("onsetDateTime", "onsetPeriod", "recordedDate")),
}
_CONDITION_VOID = frozenset({"refuted", "entered-in-error"})
_MR = "MR"


class Unusable(ValueError):
    """A field the import needs is present but cannot be used: `field` is its FHIR path."""

    def __init__(self, field: str, value: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.value = value
        self.reason = reason


@dataclass(frozen=True)
class PatientFacts:
    """A Patient as roster values, in PATIENT_COLUMNS order ("" when absent), and whether it is active."""

    values: tuple[str, str, str, str, str, str, str, str, str]
    active: bool


@dataclass(frozen=True)
class EventFacts:
    """A coded resource that maps to an event kind, and the patient it is about."""

    patient: str  # the reference as written: "Patient/123", "urn:uuid:…"
    kind: str
    date: str  # YYYY-MM-DD as written in the resource (its own local date)
    code: str
    system: str


def patient_facts(resource: Json, today: dt.date) -> PatientFacts:
    """Roster values from a Patient (DESIGN.md §13); the row checks themselves are the roster's."""
    given, family = _name(resource.get("name"), today)
    values = (
        _mrn(resource),
        given,
        _text(resource.get("birthDate")),
        _phone(resource.get("telecom"), today),
        family,
        _text(resource.get("gender")),
        _language(resource.get("communication")),
        "",  # FHIR carries no time zone: the phone's area code decides, as for the CSV roster
        _postal_code(resource.get("address"), today),
    )
    deceased = resource.get("deceasedBoolean") is True or bool(resource.get("deceasedDateTime"))
    return PatientFacts(values, active=resource.get("active", True) is not False and not deceased)


def patient_keys(resource: Json, full_url: str) -> list[str]:
    """The reference keys other resources may use for this patient: its id and its fullUrl's
    last part (a transaction Bundle refers by `urn:uuid:`)."""
    keys = [str(resource["id"])] if resource.get("id") else []
    if full_url:
        keys.append(reference_key(full_url))
    return keys


def reference_key(reference: str) -> str:
    """ "Patient/1", "https://ehr/fhir/Patient/1/_history/2" and "urn:uuid:1" all give "1"."""
    if reference.startswith("urn:uuid:"):
        return reference[9:]
    _, found, tail = reference.partition("Patient/")
    return tail.split("/", 1)[0] if found else reference


def event_facts(resource: Json, kind_of: CodeMap) -> EventFacts | str:
    """The event a resource records, or why it records none: "status" (it closes no gap),
    "unmapped" (no coding in the code map) or "type" (not an event resource)."""
    rtype = resource.get("resourceType", "")
    spec = EVENT_TYPES.get(rtype)
    if spec is None:
        return "type"
    code_field, closing, date_fields = spec
    if not _closes_gap(resource, rtype, closing):
        return "status"
    found = _mapped_coding(resource.get(code_field), kind_of)
    if found is None:
        return "unmapped"
    system, code, kind = found
    subject_field = "patient" if rtype == "Immunization" else "subject"
    subject = resource.get(subject_field)
    reference = subject.get("reference") if isinstance(subject, dict) else None
    if not isinstance(reference, str) or not reference:
        raise Unusable(
            subject_field, "", f"no {subject_field}.reference; the event cannot be tied to a patient"
        )
    if not (reference.startswith("urn:uuid:") or "Patient/" in reference):
        raise Unusable(f"{subject_field}.reference", reference, "not a reference to a Patient")
    return EventFacts(reference, kind, _event_date(resource, date_fields), code, system)


def _closes_gap(resource: Json, rtype: str, closing: frozenset[str]) -> bool:
    if rtype == "Condition":
        status = resource.get("verificationStatus")
        codes = {c.get("code") for c in status.get("coding", ())} if isinstance(status, dict) else set()
        return not (codes & _CONDITION_VOID)
    return resource.get("status") in closing


def _mapped_coding(concept: Any, kind_of: CodeMap) -> tuple[str, str, str] | None:
    """The first coding of a CodeableConcept that the code map knows."""
    if not isinstance(concept, dict):
        return None
    for coding in concept.get("coding") or ():
        if isinstance(coding, dict):
            system, code = coding.get("system"), coding.get("code")
            kind = kind_of.get((system, code)) if isinstance(system, str) and isinstance(code, str) else None
            if kind is not None:
                return str(system), str(code), kind
    return None


def _event_date(resource: Json, fields: tuple[str, ...]) -> str:
    """The day an event happened: the first date field present; of a period, its end (the day the
    procedure finished), else its start."""
    for name in fields:
        value = resource.get(name)
        if isinstance(value, dict):
            value = value.get("end") or value.get("start")
        if isinstance(value, str) and value:
            return value[:10]
    raise Unusable(fields[0], "", f"no date ({' or '.join(fields)}); the event cannot be placed in time")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _current(item: Json, today: dt.date) -> bool:
    """False when the element's `period` has ended before today (an old number, a former name)."""
    period = item.get("period")
    end = period.get("end") if isinstance(period, dict) else None
    return not (isinstance(end, str) and end[:10] < today.isoformat())


def _mrn(resource: Json) -> str:
    """The identifier typed MR (v2-0203), else the resource id."""
    for identifier in resource.get("identifier") or ():
        kind = identifier.get("type") if isinstance(identifier, dict) else None
        codings = kind.get("coding") or () if isinstance(kind, dict) else ()
        if any(isinstance(c, dict) and c.get("code") == _MR for c in codings) and identifier.get("value"):
            return str(identifier["value"])
    return _text(resource.get("id"))


def _name(names: Any, today: dt.date) -> tuple[str, str]:
    """Given and family of the official name, else the usual one, else the first current one."""
    usable = [
        n
        for n in names or ()
        if isinstance(n, dict) and _current(n, today) and n.get("use") not in ("old", "maiden")
    ]
    for use in ("official", "usual", None):
        for name in usable:
            if use is None or name.get("use") == use:
                given = name.get("given")
                first = given[0] if isinstance(given, list) and given else ""
                return _text(first), _text(name.get("family"))
    return "", ""


def _phone(telecom: Any, today: dt.date) -> str:
    """A current phone number: `use = mobile` first (texts go there), then by rank."""
    phones = [
        t
        for t in telecom or ()
        if isinstance(t, dict)
        and t.get("system") == "phone"
        and t.get("value")
        and t.get("use") != "old"
        and _current(t, today)
    ]
    if not phones:
        return ""
    best = min(
        phones,
        key=lambda t: (
            t.get("use") != "mobile",
            t.get("rank") if isinstance(t.get("rank"), int) else 1 << 30,
        ),
    )
    return str(best["value"])


def _language(communication: Any) -> str:
    """The preferred language as its base code ("en-US" → "en")."""
    items = [c for c in communication or () if isinstance(c, dict)]
    items.sort(key=lambda c: c.get("preferred") is not True)
    for item in items:
        concept = item.get("language")
        codings = concept.get("coding") or () if isinstance(concept, dict) else ()
        for coding in codings:
            code = coding.get("code") if isinstance(coding, dict) else None
            if isinstance(code, str):
                return code.split("-", 1)[0].lower()
    return ""


def _postal_code(addresses: Any, today: dt.date) -> str:
    """The home address's postal code, else the first current address's."""
    current = [
        a for a in addresses or () if isinstance(a, dict) and _current(a, today) and a.get("use") != "old"
    ]
    current.sort(key=lambda a: a.get("use") != "home")
    return _text(current[0].get("postalCode")) if current else ""
