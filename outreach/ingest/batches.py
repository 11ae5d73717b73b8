"""The roster read into batches for checking, with the one check that needs the whole file.

Rows are checked in batches, possibly in other processes (outreach/ingest/pool.py), but "this mrn
already appeared on line N" can only be answered by whoever reads the file from the top: the
reading process remembers the first line of every mrn (in FirstLines, ~45 bytes an mrn) and marks
repeats in each batch before it leaves.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterator, Sequence
from operator import itemgetter

from outreach.ingest.csvfile import CsvFile
from outreach.ingest.fields import MRN_MAX
from outreach.ingest.patients import Batch


def read_batches(csvfile: CsvFile, present: Sequence[str], size: int) -> Iterator[Batch]:
    """The roster's records in batches, each repeated mrn marked with the line of its first
    occurrence (remembered for every well-formed mrn, whether its row is valid or not)."""
    pick = itemgetter(*(csvfile.index[name] for name in present))
    at_mrn = csvfile.index["mrn"]
    seen = FirstLines()
    lines: list[int] = []
    values: list[str] = []
    duplicates: dict[int, int] = {}
    for line, fields in csvfile.records():
        mrn = fields[at_mrn].strip()
        if mrn and len(mrn) <= MRN_MAX:
            first = seen.first(mrn, line)
            if first != line:
                duplicates[len(lines)] = first
        lines.append(line)
        values += pick(fields)
        if len(lines) >= size:
            yield Batch(lines, values, len(present), duplicates)
            lines, values, duplicates = [], [], {}
    if lines:
        yield Batch(lines, values, len(present), duplicates)


class FirstLines:
    """The line each mrn of the file first appeared on.

    A dict would cost ~120 bytes an mrn (the str, the int, the slot), 120 MB for a million-row
    roster. This is an open-addressing hash table over arrays instead: each mrn's UTF-8 bytes are
    appended to one bytearray, its hash, line and end offset to three arrays of machine integers,
    and the table's slots hold entry numbers; about 45 bytes an mrn. A lookup compares the hash,
    then the bytes, so mrns whose hashes collide are still told apart exactly.
    """

    def __init__(self, hasher: Callable[[str], int] = hash) -> None:
        self._hash = hasher
        self._slots = array("i", [0]) * 1024  # entry number + 1; 0 is a free slot
        self._mask = len(self._slots) - 1
        self._hashes = array("q")
        self._lines = array("q")
        self._ends = array("q")  # entry i's bytes are _data[_ends[i - 1]:_ends[i]]
        self._data = bytearray()

    def __len__(self) -> int:
        return len(self._lines)

    def first(self, mrn: str, line: int) -> int:
        """The line `mrn` first appeared on; `line` itself, now remembered, when it is new."""
        digest = self._hash(mrn)
        slots, hashes, mask = self._slots, self._hashes, self._mask
        at = digest & mask
        key = None
        while entry := slots[at]:
            entry -= 1
            if hashes[entry] == digest:
                if key is None:
                    key = mrn.encode("utf-8", "surrogatepass")
                ends = self._ends
                if self._data[ends[entry - 1] if entry else 0 : ends[entry]] == key:
                    return self._lines[entry]
            at = (at + 1) & mask
        self._data += mrn.encode("utf-8", "surrogatepass") if key is None else key
        self._ends.append(len(self._data))
        hashes.append(digest)
        self._lines.append(line)
        slots[at] = len(hashes)
        if 2 * len(hashes) > len(slots):  # at most half full, so probe runs stay short
            self._grow()
        return line

    def _grow(self) -> None:
        slots = array("i", [0]) * (2 * len(self._slots))
        mask = len(slots) - 1
        for entry, digest in enumerate(self._hashes, 1):
            at = digest & mask
            while slots[at]:
                at = (at + 1) & mask
            slots[at] = entry
        self._slots, self._mask = slots, mask
