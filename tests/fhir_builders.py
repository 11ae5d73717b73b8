"""Small FHIR R4 resources for the tests and the benchmark: just the elements outreach reads."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
CVX = "http://hl7.org/fhir/sid/cvx"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
MR_TYPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}


def patient(
    pid: str, *, mrn: str | None = None, phone: str = "(617) 555-0101", **extra: Any
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": pid,
        "name": [{"use": "official", "family": "Lee", "given": ["Ann"]}],
        "birthDate": "1970-05-05",
        "gender": "female",
        "telecom": [{"system": "phone", "value": phone, "use": "mobile"}],
        "address": [{"use": "home", "postalCode": "02139", "state": "MA"}],
        "communication": [{"language": {"coding": [{"code": "en-US"}]}, "preferred": True}],
    }
    if mrn is not None:
        resource["identifier"] = [{"type": MR_TYPE, "value": mrn}]
    resource.update(extra)
    return resource


def procedure(
    pid: str, code: str, date: str, *, system: str = SNOMED, status: str = "completed"
) -> dict[str, Any]:
    return {
        "resourceType": "Procedure",
        "status": status,
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
        "performedDateTime": f"{date}T10:00:00-05:00",
    }


def immunization(pid: str, cvx: str, date: str, *, status: str = "completed") -> dict[str, Any]:
    return {
        "resourceType": "Immunization",
        "status": status,
        "vaccineCode": {"coding": [{"system": CVX, "code": cvx}]},
        "patient": {"reference": f"Patient/{pid}"},
        "occurrenceDateTime": f"{date}T10:00:00Z",
    }


def observation(pid: str, loinc: str, date: str, *, status: str = "final") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": status,
        "code": {"coding": [{"system": LOINC, "code": loinc}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": date,
    }


def condition(
    pid: str, code: str, onset: str, *, system: str = ICD10, verification: str = "confirmed"
) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "verificationStatus": {"coding": [{"code": verification}]},
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
        "onsetDateTime": onset,
    }


def write_ndjson(path: Path, resources: list[dict[str, Any]] | list[str]) -> Path:
    """One resource a line (a str is written as is, to plant a broken line); gzip for .gz."""
    lines = [r if isinstance(r, str) else json.dumps(r) for r in resources]
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def write_bundle(path: Path, resources: list[dict[str, Any]], kind: str = "collection") -> Path:
    entries = [{"fullUrl": f"urn:uuid:{r.get('id', i)}", "resource": r} for i, r in enumerate(resources)]
    path.write_text(json.dumps({"resourceType": "Bundle", "type": kind, "entry": entries}))
    return path
