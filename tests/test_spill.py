"""The on-disk memory of an import (outreach/ingest/spill.py): the first line of each mrn and the
FHIR reference keys' mrns, asked a batch at a time."""

from __future__ import annotations

from outreach.ingest.spill import FirstLines, KeyMap, Spill


def test_first_lines_name_the_first_line_across_batches_and_within_one() -> None:
    with Spill() as spill:
        seen = FirstLines(spill)
        assert seen.repeats(["A", "B", "", "A"], [2, 3, 4, 5]) == {3: 2}
        assert seen.repeats(["C", "B", "", "A", "C"], [6, 7, 8, 9, 10]) == {1: 3, 3: 2, 4: 6}
        seen.drop()  # the next file starts afresh
        assert FirstLines(spill).repeats(["A"], [2]) == {}


def test_key_map_keeps_the_first_value_and_answers_only_known_keys() -> None:
    with Spill() as spill:
        ids = KeyMap(spill)
        ids.add([(f"id-{i}", f"MRN-{i}") for i in range(5000)])
        ids.add([("id-7", "other"), ("new", "MRN-new"), ("new", "again")])
        assert ids.get(["id-7", "id-4999", "nobody", "new", "id-7"]) == {
            "id-7": "MRN-7",
            "id-4999": "MRN-4999",
            "new": "MRN-new",
        }
        assert ids.get([]) == {}


def test_the_spill_file_is_deleted_when_the_import_ends() -> None:
    spill = Spill()
    FirstLines(spill).repeats(["A"], [2])
    assert spill.path.exists()
    spill.close()
    assert not spill.path.exists()
