"""Patient reference key → mrn, for the patients whose mrn is not their FHIR id.

Events refer to a patient by resource id (`Patient/123`) or by a Bundle's `urn:uuid:`; the roster
is keyed by the MR identifier. When the two differ (most EHRs) every patient's key must be kept for
the events read after it, which for a million-patient export is the one thing that grows with the
export. A dict of str to str costs ~150 bytes a patient; this keeps each key in FirstLines (the
roster import's compact hash table, ~45 bytes) pointing at its mrn's bytes in one bytearray, ~60
bytes a patient in all.
"""

from __future__ import annotations

from array import array

from outreach.ingest.batches import FirstLines

_ABSENT = -1


class IdMap:
    def __init__(self) -> None:
        self._keys = FirstLines()
        self._mrns = bytearray()
        self._ends = array("q")  # mrn i is _mrns[_ends[i - 1]:_ends[i]]

    def __len__(self) -> int:
        return len(self._ends)

    def add(self, key: str, mrn: str) -> None:
        """Remember `key` → `mrn`; a key seen before keeps its first mrn (a repeated patient is
        rejected as a duplicate anyway)."""
        index = len(self._ends)
        if self._keys.first(key, index) == index:
            self._mrns += mrn.encode("utf-8", "surrogatepass")
            self._ends.append(len(self._mrns))

    def get(self, key: str) -> str:
        """The mrn of `key`, or `key` itself when no patient with another mrn had it: the roster
        then decides whether that mrn is known (events for unknown mrns are kept and counted).

        FirstLines has no pure lookup, so a key looked up before its patient is added stays
        unmapped: Patient files are read first (files.fhir_files), and an event listed before its
        Patient in a Bundle whose mrn is not the id is counted as an unknown mrn, not lost."""
        if not self._ends:
            return key
        index = self._keys.first(key, _ABSENT)
        if index == _ABSENT:
            return key
        start = self._ends[index - 1] if index else 0
        return self._mrns[start : self._ends[index]].decode("utf-8", "surrogatepass")
