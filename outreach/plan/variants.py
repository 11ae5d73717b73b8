"""Which wording of a step a patient gets (DESIGN.md §5 `variants`), reproducibly.

The draw is an MD5 bucket (outreach/store/sql.py) of "variant|enrollment|step", split by the
variants' weights: the same enrollment always gets the same wording of a step (a re-plan after a
crash renders the same text), different steps are drawn independently, and the draw knows nothing
about the patient. The same bucket exists as an SQL expression (`sql.bucket`), so planning that
renders in SQL can draw identically.
"""

from __future__ import annotations

from outreach.campaigns import Step
from outreach.store import sql


def variant_key(enrollment_id: int, step_id: str) -> str:
    return f"variant|{enrollment_id}|{step_id}"


def pick(bucket: int, weights: list[int]) -> int:
    """The index whose share of [0, BUCKETS) holds `bucket`, shares in proportion to `weights`."""
    total = sum(weights)
    cumulative = 0
    for index, weight in enumerate(weights):
        cumulative += weight
        if bucket * total < cumulative * sql.BUCKETS:
            return index
    return len(weights) - 1


def variant_for(enrollment_id: int, step: Step) -> tuple[str | None, dict[str, str]]:
    """(variant id or None when the step has one wording, its texts by language)."""
    wordings = step.wordings()
    if len(wordings) == 1:
        return wordings[0][0], wordings[0][2]
    index = pick(sql.bucket_of(variant_key(enrollment_id, step.id)), [w for _, w, _ in wordings])
    return wordings[index][0], wordings[index][2]
