"""The `--errors` report of an import: where it may be written, and how, safely.

Two things went wrong here before. The report was written after the rows had committed, so a
path that could not be written (a missing folder) raised once the good rows were in and the
rejected ones were never shown; and a path that named an input (`--errors roster.csv`) replaced
the care team's roster with the report (the SQLite database file would have gone the same way).
So every target is checked before anything is read.

The report is opened in a spreadsheet by people who did not write its cells: a value a roster
carried such as `=HYPERLINK(...)` would run as a formula there. Every cell that can echo input is
written the way OWASP's CSV-injection rule says: prefixed with a single quote when it starts with
= + - @, a tab or a carriage return, which a spreadsheet then shows as text.
"""

from __future__ import annotations

import csv
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import Engine

from outreach.errors import UserError
from outreach.ingest.csvfile import RowError
from outreach.ingest.spill import Spill

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def events_errors_path(errors: Path) -> Path:
    """Where `patients import --events` puts the events file's problems: `.events` before the
    suffix of the roster's report (errors.csv -> errors.events.csv)."""
    return errors.with_name(f"{errors.stem}.events{errors.suffix}")


def errors_files(errors: Path | None, *inputs: Path, engine: Engine | None = None) -> list[Path | None]:
    """The report file for each input, in order, each checked by `check_errors_path`: the first
    input's (the roster, or the events file of `events import`) is `errors` itself, the second's
    (the events file of `patients import --events`) is `events_errors_path(errors)`. All None
    without --errors. With `engine`, a SQLite database file is protected too. Raises UserError
    before anything is read or written."""
    if errors is None:
        return [None] * len(inputs)
    if len(inputs) > 2:
        raise ValueError("an import has at most two inputs: a roster and an events file")
    database = _sqlite_file(engine)
    targets = [errors, events_errors_path(errors)][: len(inputs)]
    for target in targets:
        check_errors_path(target, *inputs, database=database)
    return list(targets)


def check_errors_path(errors: Path, *inputs: Path, database: Path | None = None) -> None:
    """Refuse, as one line naming the fix, a report path that is one of `inputs` or the SQLite
    `database` (by any spelling, symlink or hard link) or that cannot be written; call it before
    importing."""
    named = [(f"the input file {source}", source) for source in inputs]
    if database is not None:
        named.append((f"the database file {database}", database))
    for what, source in named:
        if _same_file(errors, source):
            raise UserError(
                f"--errors {errors} is {what}; the report would overwrite it, "
                "so give --errors another file name"
            )
    if errors.is_dir():
        raise UserError(f"--errors {errors} is a folder; give a file name such as {errors / 'errors.csv'}")
    folder = errors.parent
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--errors {errors}: {folder} is a file, not a folder; choose another path")
    if not folder.is_dir():
        raise UserError(
            f"--errors {errors}: the folder {folder} does not exist; create it or choose another path"
        )
    if not os.access(folder, os.W_OK | os.X_OK) or (errors.exists() and not os.access(errors, os.W_OK)):
        raise UserError(f"--errors {errors} cannot be written (permission denied); choose another path")


def _sqlite_file(engine: Engine | None) -> Path | None:
    """The file a SQLite engine keeps its database in; None for PostgreSQL or an in-memory one."""
    if engine is None or engine.dialect.name != "sqlite":
        return None
    name = engine.url.database
    return Path(name) if name and name != ":memory:" and not name.startswith("file:") else None


def _same_file(a: Path, b: Path) -> bool:
    """Whether writing `a` would write `b`: the same path once symlinks and `..` are resolved, or
    the same file on disk (a hard link, or another spelling on a case-insensitive disk)."""
    try:
        if a.resolve() == b.resolve():
            return True
    except (OSError, RuntimeError):  # a symlink loop: the samefile check below decides
        pass
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): not the same file
        return False


def spreadsheet_safe(text: str) -> str:
    """`text` as a spreadsheet shows it, never as a formula it would run (OWASP CSV injection)."""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def write_errors_csv(path: Path, errors: Iterable[RowError]) -> None:
    """The `--errors` file: one row per problem, columns line,column,value,reason, every text cell
    made spreadsheet-safe (values come from the file; the other cells are ours, but cost nothing
    to guard and may quote input one day)."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("line", "column", "value", "reason"))
        for error in errors:
            writer.writerow(
                (
                    error.line,
                    spreadsheet_safe(error.column),
                    spreadsheet_safe(error.value),
                    spreadsheet_safe(error.reason),
                )
            )


ERRORS_KEPT = 1000  # problems an import that writes its report as it goes keeps in memory
_FLUSH_EVERY = 5000
_CACHE_KB = 2048


class ErrorSpool:
    """An import's problems when they go to a report file: every one to a scratch SQLite file
    (outreach/ingest/spill.py), the first `keep` by line returned by `finish` for a page or a
    terminal to show. A roster with a bad column in every row has a problem per row, and as
    objects they cost 150-250 bytes each: 500,000 of them took the web process from 168 to 311 MB
    (bench/roster_upload.py --bad-every 2), where the upload of a clean roster peaks at 168 MB.

    Problems arrive from two threads (the reader's malformed records, the loader's checked
    batches), each in file order but not in order with each other, so the report is sorted by
    line (then arrival) when it is written."""

    def __init__(self, report: Path, keep: int | None = None) -> None:
        self.report = report
        self.keep = ERRORS_KEPT if keep is None else keep
        self.count = 0
        self._pending: list[RowError] = []
        self._lock = threading.Lock()
        self._spill = Spill()
        # Kept in (line, arrival) order as it is written, so the report needs no sort at the end
        # (SQLite would sort in memory: temp_store is MEMORY); written once and read once, it
        # needs little page cache.
        self._spill.db.execute(f"PRAGMA cache_size = -{_CACHE_KB}")
        self._spill.db.execute(
            "CREATE TABLE problems (line INTEGER, seq INTEGER, col TEXT, value TEXT, reason TEXT,"
            " PRIMARY KEY (line, seq)) WITHOUT ROWID"
        )

    def append(self, error: RowError, /) -> None:
        self.extend((error,))

    def extend(self, errors: Iterable[RowError], /) -> None:
        with self._lock:
            self._pending.extend(errors)
            if len(self._pending) >= _FLUSH_EVERY:
                self._flush()

    def _flush(self) -> None:
        start, pending = self.count, self._pending
        self._pending = []
        self.count += len(pending)
        db = self._spill.db
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO problems VALUES (?, ?, ?, ?, ?)",
            ((e.line, start + i, e.column, e.value, e.reason) for i, e in enumerate(pending)),
        )
        db.execute("COMMIT")

    def finish(self) -> list[RowError]:
        """Write the report (write_errors_csv, in line order) and return its first `keep` problems."""
        with self._lock:
            self._flush()
        ordered = "SELECT line, col, value, reason FROM problems ORDER BY line, seq"
        write_errors_csv(self.report, (RowError(*row) for row in self._spill.db.execute(ordered)))
        first = [RowError(*row) for row in self._spill.db.execute(f"{ordered} LIMIT ?", (self.keep,))]
        self.close()
        return first

    def close(self) -> None:
        """Delete the scratch file (`finish` does; call it when the import fails)."""
        self._spill.close()
