"""FHIR Bulk Data import speed: a generated NDJSON export through `outreach.ingest.fhir.import_fhir`.

Writes Patient.ndjson (samples/generate.py's seeded roster as FHIR Patients) and Immunization,
Procedure and Observation files (three events a patient: a flu shot, a colonoscopy, a FIT result,
one in ten of them in a status that closes no gap), then imports the folder into PostgreSQL (a
private schema) or a temporary SQLite file. After the import it times the two JSON parsers on the
first lines of the export, which is how the parser was chosen. Prints one JSON object and a
one-line summary; targets are reported, not asserted (>= 20,000 resources/s, flat memory).

With --bundle the same resources are one Bundle (export.json), every event listed before its
Patient, whose mrn is not its id: the hard case for a streamed Bundle. The parser timing is then
orjson reading a Bundle whole against ijson streaming its entries, on a 40,000-entry Bundle.
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "samples")]

from generate import roster_rows  # noqa: E402  (samples/generate.py)
from support import postgres_schema  # noqa: E402

from outreach.config import Settings  # noqa: E402
from outreach.ingest.fhir.importer import import_fhir  # noqa: E402
from outreach.store import db as dbmod  # noqa: E402

MR = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}
EVENTS = {
    "Immunization": ("vaccineCode", "http://hl7.org/fhir/sid/cvx", "140", "occurrenceDateTime", "patient"),
    "Procedure": ("code", "http://snomed.info/sct", "73761001", "performedDateTime", "subject"),
    "Observation": ("code", "http://loinc.org", "29771-3", "effectiveDateTime", "subject"),
}
DONE = {"Immunization": "completed", "Procedure": "completed", "Observation": "final"}
NOT_DONE = {"Immunization": "not-done", "Procedure": "entered-in-error", "Observation": "preliminary"}


def patients(n: int) -> Iterator[dict[str, Any]]:
    for mrn, first, last, birth, sex, phone, language, _zone, postal in roster_rows(n, seed=1):
        yield {
            "resourceType": "Patient",
            "id": f"pt-{mrn}",
            "identifier": [{"type": MR, "system": "urn:example:mrn", "value": mrn}],
            "name": [{"use": "official", "family": last, "given": [first]}],
            "gender": sex,
            "birthDate": birth,
            "telecom": [{"system": "phone", "value": phone, "use": "mobile"}],
            "address": [{"use": "home", "postalCode": postal}],
            "communication": [{"language": {"coding": [{"code": language}]}, "preferred": True}],
        }


def events(kind: str, n: int) -> Iterator[dict[str, Any]]:
    code_field, system, code, date_field, subject = EVENTS[kind]
    for i in range(n):
        day = f"{2016 + i % 10}-{1 + i % 12:02d}-{1 + i % 28:02d}"
        yield {
            "resourceType": kind,
            "id": f"{kind[:3].lower()}-{i}",
            "status": NOT_DONE[kind] if i % 10 == 9 else DONE[kind],
            code_field: {"coding": [{"system": system, "code": code}]},
            subject: {"reference": f"Patient/pt-P{i:07d}"},
            date_field: f"{day}T10:00:00-05:00",
        }


def write_export(folder: Path, n: int, gz: bool) -> int:
    """The export's files; returns their total size in bytes."""
    suffix = ".ndjson.gz" if gz else ".ndjson"
    sources = {"Patient": patients(n), **{kind: events(kind, n) for kind in EVENTS}}
    size = 0
    for kind, resources in sources.items():
        path = folder / f"{kind}{suffix}"
        opener = gzip.open if gz else open
        with opener(path, "wt", encoding="utf-8") as handle:  # type: ignore[operator]
            for item in resources:
                handle.write(json.dumps(item, separators=(",", ":")) + "\n")
        size += path.stat().st_size
    return size


def write_bundle(folder: Path, n: int, name: str = "export.json") -> int:
    """One collection Bundle of the export's resources, the events first; returns its size."""
    path = folder / name
    sources = [*(events(kind, n) for kind in EVENTS), patients(n)]
    with path.open("w", encoding="utf-8") as handle:
        handle.write('{"resourceType":"Bundle","type":"collection","entry":[')
        separator = ""
        for resources in sources:
            for item in resources:
                entry = {"fullUrl": f"urn:uuid:{item['id']}", "resource": item}
                handle.write(separator + json.dumps(entry, separators=(",", ":")))
                separator = ","
        handle.write("]}")
    return path.stat().st_size


def time_bundle_parsers(folder: Path, patients_n: int = 10_000) -> dict[str, float]:
    """Microseconds an entry: orjson reading a Bundle whole, and ijson streaming its entries."""
    import ijson
    import orjson

    size = write_bundle(folder, patients_n, "sample.json")
    path = folder / "sample.json"
    start = time.perf_counter()
    count = len(orjson.loads(path.read_bytes())["entry"])
    whole = time.perf_counter() - start
    start = time.perf_counter()
    with path.open("rb") as handle:
        streamed = sum(1 for _ in ijson.items(handle, "entry.item", use_float=True))
    stream = time.perf_counter() - start
    assert streamed == count
    return {
        "sample_mb": round(size / 1e6, 1),
        "orjson_whole_us_per_entry": round(1e6 * whole / count, 2),
        "ijson_stream_us_per_entry": round(1e6 * stream / count, 2),
    }


def time_parsers(folder: Path, lines: int = 200_000) -> dict[str, float]:
    """Microseconds a line for json.loads and orjson.loads over the same lines."""
    import orjson

    sample: list[bytes] = []
    for name in ("Patient.ndjson", "Immunization.ndjson"):
        path = folder / name
        if path.exists():
            with path.open("rb") as handle:
                sample += [line for _, line in zip(range(lines // 2), handle, strict=False)]
    figures = {}
    for label, parse in (("json", json.loads), ("orjson", orjson.loads)):
        start = time.perf_counter()
        for line in sample:
            parse(line)
        figures[f"{label}_us_per_line"] = round(1e6 * (time.perf_counter() - start) / max(len(sample), 1), 2)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=1_000_000, help="patients (default 1,000,000)")
    parser.add_argument("--database-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--sqlite", action="store_true", help="a temporary SQLite file instead")
    parser.add_argument("--gz", action="store_true", help="write and read .ndjson.gz")
    parser.add_argument("--bundle", action="store_true", help="one Bundle, events before their Patients")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fhir-bench-") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        size = write_bundle(folder, args.n) if args.bundle else write_export(folder, args.n, args.gz)
        figures: dict[str, Any] = {
            "patients": args.n,
            "bytes": size,
            "generate_s": round(time.perf_counter() - start, 1),
            "bundle": args.bundle,
        }
        figures["rss_before_import_mb"] = _peak_rss_mb()
        if args.sqlite:
            engine = dbmod.engine_for(f"sqlite:///{folder / 'bench.db'}")
            dbmod.upgrade(engine)
            figures |= run(engine, folder)
        else:
            with postgres_schema(args.database_url) as (engine, _url):
                dbmod.upgrade(engine)
                figures |= run(engine, folder)
        # After the import, so the parsers' samples are not in the import's peak RSS.
        if args.bundle:
            figures["parsers"] = time_bundle_parsers(folder)
        elif not args.gz:
            figures["parsers"] = time_parsers(folder)
    print(json.dumps(figures, indent=2))
    print(summary(figures))
    return 0


def run(engine: Any, folder: Path) -> dict[str, Any]:
    start = time.perf_counter()
    result = import_fhir(engine, [folder], settings=Settings())
    seconds = time.perf_counter() - start
    return {
        "database": engine.dialect.name,
        "import_s": round(seconds, 1),
        "resources": result.resources,
        "resources_per_s": round(result.resources / seconds),
        "result": result.summary(),
        "peak_rss_mb": _peak_rss_mb(),
    }


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def summary(f: dict[str, Any]) -> str:
    return (
        f"fhir import{' (one Bundle)' if f.get('bundle') else ''}: {f['resources']:,} resources "
        f"({f['patients']:,} patients) in {f['import_s']} s on "
        f"{f['database']}: {f['resources_per_s']:,} resources/s (target >= 20,000), "
        f"peak RSS {f['peak_rss_mb']} MB"
    )


if __name__ == "__main__":
    raise SystemExit(main())
