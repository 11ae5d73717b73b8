"""The roster read into batches for checking, with the one check that needs the whole file.

Rows are checked in batches, possibly in other processes (outreach/ingest/pool.py), but "this mrn
already appeared on line N" can only be answered by whoever reads the file from the top: the
reading process remembers the first line of every mrn (spill.FirstLines, on disk, so memory does
not grow with the roster) and marks repeats in each batch before it leaves.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from operator import itemgetter

from outreach.ingest.csvfile import CsvFile
from outreach.ingest.fields import MRN_MAX
from outreach.ingest.patients import Batch
from outreach.ingest.spill import FirstLines, Spill


def read_batches(csvfile: CsvFile, present: Sequence[str], size: int) -> Iterator[Batch]:
    """The roster's records in batches, each repeated mrn marked with the line of its first
    occurrence (remembered for every well-formed mrn, whether its row is valid or not)."""
    pick = itemgetter(*(csvfile.index[name] for name in present))
    at_mrn = csvfile.index["mrn"]
    with Spill() as spill:
        seen = FirstLines(spill)
        lines: list[int] = []
        values: list[str] = []
        mrns: list[str] = []
        for line, fields in csvfile.records():
            mrns.append(well_formed(fields[at_mrn]))
            lines.append(line)
            values += pick(fields)
            if len(lines) >= size:
                yield Batch(lines, values, len(present), seen.repeats(mrns, lines))
                lines, values, mrns = [], [], []
        if lines:
            yield Batch(lines, values, len(present), seen.repeats(mrns, lines))


def well_formed(mrn: str) -> str:
    """The mrn whose repeats are looked for: stripped, and "" (not checked) when it is empty or too
    long, which the row check rejects on its own."""
    mrn = mrn.strip()
    return mrn if len(mrn) <= MRN_MAX else ""
