"""What an import must remember about every row it has read, kept on disk, so memory stays flat.

An import streams: rows are checked and written in batches, and nothing else it holds grows with
the file, except two facts that must be remembered from the first row to the last:
- the line each mrn first appeared on (a repeated mrn is an error naming that line; the CSV
  roster and FHIR Patients alike);
- for FHIR, the mrn each Patient reference key stands for, when the mrn is not the resource id
  (the events read later refer to the id).

In Python objects these cost 45 to 150 bytes a row, about 100 MB for a million patients and more
for larger files. Here they live in a private SQLite file in the temp folder (sqlite3 is in the
standard library): its page cache is bounded (CACHE_MB) and the file is deleted when the import
ends. Every question is asked a batch at a time, thousands of keys in one statement joined
against a primary-key table, so a row costs a few microseconds. That is a small part of an import
that spends 30-60 µs a row (bench/fhir.py, bench/plan.py).
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType

CACHE_MB = 16


class Spill:
    """One private SQLite file for an import's tables; `close()` (or `with`) deletes it."""

    def __init__(self) -> None:
        handle, name = tempfile.mkstemp(prefix="outreach-import-", suffix=".sqlite")
        os.close(handle)
        self.path = Path(name)
        # check_same_thread=False: the FHIR import may finish on another thread than it started.
        # Calls never overlap: every caller uses it from one thread at a time.
        self.db = sqlite3.connect(name, isolation_level=None, check_same_thread=False)
        for pragma in (
            "journal_mode = OFF",  # a scratch file: nothing to recover after a crash
            "synchronous = OFF",
            "locking_mode = EXCLUSIVE",
            "temp_store = MEMORY",  # the one-batch table below
            f"cache_size = -{CACHE_MB * 1024}",
        ):
            self.db.execute(f"PRAGMA {pragma}")
        self.db.execute("CREATE TEMP TABLE batch (k TEXT NOT NULL, v)")
        self._tables = 0

    def table(self) -> str:
        """A new, empty table of unique text keys, each with one value."""
        self._tables += 1
        name = f"t{self._tables}"
        self.db.execute(f"CREATE TABLE {name} (k TEXT PRIMARY KEY, v) WITHOUT ROWID")
        return name

    def drop(self, name: str) -> None:
        self.db.execute(f"DROP TABLE IF EXISTS {name}")

    def stage(self, pairs: Iterable[tuple[str, object]]) -> None:
        """Replace the one-batch table's rows (call inside a transaction)."""
        self.db.execute("DELETE FROM batch")
        self.db.executemany("INSERT INTO batch (k, v) VALUES (?, ?)", pairs)

    def close(self) -> None:
        self.db.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> Spill:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class FirstLines:
    """The line each mrn of one file first appeared on, asked a batch at a time."""

    def __init__(self, spill: Spill) -> None:
        self._spill = spill
        self._table = spill.table()

    def repeats(self, mrns: Sequence[str], lines: Sequence[int]) -> dict[int, int]:
        """For each position of the batch whose mrn appeared before (in an earlier batch or
        earlier in this one), the line it first appeared on. The new mrns are remembered. An
        empty mrn is not checked (the row check rejects it anyway)."""
        first: dict[str, int] = {}
        repeats: dict[int, int] = {}
        for at, (mrn, line) in enumerate(zip(mrns, lines, strict=True)):
            if mrn:
                seen = first.setdefault(mrn, line)
                if seen != line:
                    repeats[at] = seen
        db, table = self._spill.db, self._table
        db.execute("BEGIN")
        try:
            self._spill.stage(first.items())
            earlier = dict(db.execute(f"SELECT {table}.k, {table}.v FROM batch JOIN {table} USING (k)"))
            db.execute(f"INSERT OR IGNORE INTO {table} (k, v) SELECT k, v FROM batch")
        finally:
            db.execute("COMMIT")
        if earlier:
            for at, mrn in enumerate(mrns):
                if mrn in earlier:
                    repeats[at] = earlier[mrn]
        return repeats

    def drop(self) -> None:
        self._spill.drop(self._table)


class KeyMap:
    """Text key → text value, the first value given for a key kept."""

    def __init__(self, spill: Spill) -> None:
        self._spill = spill
        self._table = spill.table()

    def add(self, pairs: Sequence[tuple[str, str]]) -> None:
        if pairs:
            db = self._spill.db
            db.execute("BEGIN")
            try:
                db.executemany(f"INSERT OR IGNORE INTO {self._table} (k, v) VALUES (?, ?)", pairs)
            finally:
                db.execute("COMMIT")

    def get(self, keys: Iterable[str]) -> dict[str, str]:
        """The values of those of `keys` that were added."""
        db, table = self._spill.db, self._table
        db.execute("BEGIN")
        try:
            self._spill.stage((key, None) for key in set(keys))
            return dict(db.execute(f"SELECT {table}.k, {table}.v FROM batch JOIN {table} USING (k)"))
        finally:
            db.execute("COMMIT")
