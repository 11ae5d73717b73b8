"""Reading FHIR files: Bundles (.json), Bulk Data NDJSON (.ndjson, .ndjson.gz) and folders of them.

NDJSON is what a Bulk Data export writes, possibly millions of lines, so it is read a line at a
time (gzip too) and memory stays flat whatever the size. A Bundle is one JSON document and is read
whole; EHRs and Synthea write one Bundle per patient, so each stays small. A line or entry that is
not a resource is handed back as a problem, and the rest of the file goes on.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from outreach.errors import UserError
from outreach.ingest.csvfile import Progress

try:  # orjson parses a FHIR line about 3x faster than json (bench/fhir.py); json is the fallback
    import orjson

    loads: Callable[[bytes], Any] = orjson.loads
    _DECODE_ERRORS: tuple[type[Exception], ...] = (orjson.JSONDecodeError, UnicodeDecodeError)
except ImportError:  # pragma: no cover - orjson is a dependency; this keeps a bare install working
    loads = json.loads
    _DECODE_ERRORS = (json.JSONDecodeError, UnicodeDecodeError)

SUFFIXES = (".ndjson.gz", ".ndjson", ".json")
_PROGRESS_EVERY = 1024 * 1024


@dataclass
class Item:
    """One resource of a file, or why the line or entry holds none (`problem`)."""

    at: int  # NDJSON: the line (1-based); Bundle: the entry index (0-based, as in Bundle.entry[i])
    resource: dict[str, Any] | None
    full_url: str = ""
    problem: str = ""


def fhir_files(paths: list[Path]) -> list[Path]:
    """Every FHIR file named or inside a named folder, Patient files first (so events find their
    patients already loaded), then by name. A path that is not there or not FHIR is a user error."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES))
            if not inside:
                raise UserError(
                    f"{path}: no .json, .ndjson or .ndjson.gz files in this folder; check the path"
                )
            found += inside
        elif path.is_file():
            if not path.name.endswith(SUFFIXES):
                raise UserError(
                    f"{path}: not a FHIR file; name Bundles .json and Bulk Data files .ndjson or .ndjson.gz"
                )
            found.append(path)
        else:
            raise UserError(f"{path}: no such file or folder; check the path")
    return sorted(dict.fromkeys(found), key=lambda p: (not p.name.startswith("Patient"), str(p)))


def is_ndjson(path: Path) -> bool:
    return path.name.endswith((".ndjson", ".ndjson.gz"))


def read_items(path: Path, progress: Progress | None = None) -> Iterator[Item]:
    """The resources of one file, in file order."""
    if is_ndjson(path):
        yield from _ndjson(path, progress)
    else:
        yield from _bundle(path)


def _open(path: Path) -> tuple[IO[bytes], BinaryIO]:
    """The lines to read and the raw file (whose position tells progress how far a gzip file is)."""
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror})") from None
    lines = cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb")) if path.name.endswith(".gz") else raw
    return lines, raw


def _ndjson(path: Path, progress: Progress | None) -> Iterator[Item]:
    lines, raw = _open(path)
    if progress is not None:
        progress.start(f"importing {path.name}", path.stat().st_size)
    reported = 0
    try:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                resource = loads(line)
            except _DECODE_ERRORS as exc:
                yield Item(number, None, problem=f"not JSON ({_short(exc)}); each line must be one resource")
                continue
            except (OSError, EOFError) as exc:
                yield Item(number, None, problem=f"the file ends here: {exc}")
                return
            yield _resource_item(number, resource)
            if progress is not None and number % 4096 == 0:
                reported = _advance(progress, raw, reported)
    except (OSError, EOFError) as exc:  # a truncated or corrupt .gz
        yield Item(0, None, problem=f"cannot read past this point ({exc}); download the file again")
    finally:
        if progress is not None:
            progress.stop()
        lines.close()
        raw.close()


def _advance(progress: Progress, raw: IO[bytes], reported: int) -> int:
    position = raw.tell()
    if position - reported >= _PROGRESS_EVERY:
        progress.advance(position - reported)
        return position
    return reported


def _bundle(path: Path) -> Iterator[Item]:
    try:
        document = loads(path.read_bytes())
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror})") from None
    except _DECODE_ERRORS as exc:
        yield Item(0, None, problem=f"not JSON ({_short(exc)}); a .json file must be one Bundle")
        return
    if not isinstance(document, dict) or document.get("resourceType") != "Bundle":
        yield _resource_item(0, document)  # a single resource saved as .json
        return
    for index, entry in enumerate(document.get("entry") or ()):
        if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
            yield Item(index, None, problem="entry without a resource")
            continue
        item = _resource_item(index, entry["resource"])
        full_url = entry.get("fullUrl")
        item.full_url = full_url if isinstance(full_url, str) else ""
        yield item


def _resource_item(at: int, value: Any) -> Item:
    if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
        return Item(at, None, problem="not a FHIR resource (no resourceType)")
    return Item(at, value)


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:80]
