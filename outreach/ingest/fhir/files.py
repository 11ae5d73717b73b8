"""Reading FHIR files: Bundles (.json), Bulk Data NDJSON (.ndjson, .ndjson.gz) and folders of them.

NDJSON is what a Bulk Data export writes, possibly millions of lines, so it is read a line at a
time (gzip too) and memory stays flat whatever the size. A Bundle is one JSON document. EHRs and
Synthea write one Bundle per patient, a few hundred kB, which orjson reads whole fastest. A larger
one is streamed entry by entry with ijson: read whole, a 70 MB Bundle took 700 MB and was slower
per entry than streaming (bench/fhir.py --bundle). Either way a Bundle's Patients are handed out
before its other entries, so an event listed before its Patient still finds it; a streamed Bundle
is read twice for that. A line or entry that is not a resource is handed back as a problem, and
the rest of the file goes on.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import ijson

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
WHOLE_BUNDLE_BYTES = 4 * 1024 * 1024  # read whole up to this size, streamed above (see above)


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


def _bundle(path: Path, whole_up_to: int = WHOLE_BUNDLE_BYTES) -> Iterator[Item]:
    """A .json file's resources: a Bundle's entries (Patients first), or the one resource saved.
    Small files are read whole, a large Bundle is streamed; a large file that is not a Bundle is
    one resource, so it is read whole too (there is nothing to stream)."""
    try:
        size = path.stat().st_size
        document = loads(path.read_bytes()) if size <= whole_up_to else None
        stream = document is None and _streamable(path)
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror})") from None
    except _DECODE_ERRORS as exc:
        yield Item(0, None, problem=f"not JSON ({_short(exc)}); a .json file must be one Bundle")
        return
    if stream:
        yield from _patients_first(lambda: _streamed_entries(path))
        return
    if document is None:
        yield from _bundle(path, whole_up_to=size)
        return
    if not isinstance(document, dict) or document.get("resourceType") != "Bundle":
        yield _resource_item(0, document)  # a single resource saved as .json
        return
    entries = document.get("entry") or ()
    yield from _patients_first(lambda: enumerate(entries if isinstance(entries, list) else ()))


def _patients_first(entries: Callable[[], Iterable[tuple[int, Any]]]) -> Iterator[Item]:
    """The Bundle's entries as items, its Patients first and then the rest, each with its index in
    `Bundle.entry`; an entry without a resource is reported once, in the first pass."""
    for patients in (True, False):
        for index, entry in entries():
            item = _entry_item(index, entry)
            if item.resource is None:
                if patients:
                    yield item
            elif (item.resource["resourceType"] == "Patient") is patients:
                yield item


def _entry_item(index: int, entry: Any) -> Item:
    if isinstance(entry, _Broken):
        return Item(index, None, problem=entry.problem)
    if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
        return Item(index, None, problem="entry without a resource")
    item = _resource_item(index, entry["resource"])
    full_url = entry.get("fullUrl")
    item.full_url = full_url if isinstance(full_url, str) else ""
    return item


@dataclass
class _Broken:
    """Where a streamed Bundle stops being JSON: the entries before it load."""

    problem: str


def _streamable(path: Path) -> bool:
    """Whether the document is a Bundle, from its top-level resourceType (FHIR's JSON writers put
    it first, so this reads the first bytes; a document without one is read through)."""
    with path.open("rb") as handle:
        try:
            return next(ijson.items(handle, "resourceType"), None) == "Bundle"
        except ijson.JSONError:
            return True  # streaming reports where it breaks


def _streamed_entries(path: Path) -> Iterator[tuple[int, Any]]:
    """The entries of a Bundle too large to read whole, one at a time; where the JSON breaks, a
    _Broken entry at the index being read."""
    index = 0
    with path.open("rb") as handle:
        try:
            for entry in ijson.items(handle, "entry.item", use_float=True):
                yield index, entry
                index += 1
        except ijson.JSONError as exc:
            yield index, _Broken(f"not JSON from here on ({_short(exc)}); the entries before it load")


def _resource_item(at: int, value: Any) -> Item:
    if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
        return Item(at, None, problem="not a FHIR resource (no resourceType)")
    return Item(at, value)


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:80]
