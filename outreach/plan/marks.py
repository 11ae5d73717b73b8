"""Skipping the whole-roster searches when nothing they depend on changed (issue 11).

A pass finds its work with set-based queries over the whole shard (shards.py): who is newly
eligible (the audience's anti-joins against events, consents and enrollments) and which open
enrollment has a due step without an outbox row (anti-joins against the outbox). At a million
patients those take a second each even when they find nothing, so each campaign and bucket
remembers (`PlanMark`) what its last complete pass had seen, and the next pass asks again only
when something differs:

* **Newly eligible** depends on the roster (new patients, changed birth dates, phones, `active`),
  the events (a gap closed, an exclusion, or a look-back the planning day moved), consents and
  unreachable numbers (an opt-in makes a patient eligible again), the planning day (birthdays,
  look-back windows, the re-enrollment cool-down) and the campaign file. `roster_inputs` sums them
  up in one read: per table the row count, the highest id and, where rows are updated in place,
  the sum of `updated_at` (an update moves the sum even when it does not move the maximum, e.g.
  an import that stamps every row with its own start time).
* **Due steps** come due when the day changes (step offsets count days), when the file changes,
  or when an enrollment or a previous step's outbox row appears. Enrollments and outbox rows of
  outreach steps are made only by the planner (enroll.py, steps.py), which plans every due step
  of a chunk right after enrolling it, in the same transaction; so the day and the file are the
  whole mark.

The mark is read before the searches and written only after every chunk of the bucket committed,
under the bucket's lock: a change committed after the read is seen by the next pass, and a pass
that failed half-way leaves the old mark, so the next one searches again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, extract, func, select

from outreach.campaigns import CampaignFile
from outreach.plan.shards import Shard
from outreach.store import sql
from outreach.store.models import Patient, PatientEvent, PhoneConsent, PlanMark, UnreachableNumber


def file_digest(campaign: CampaignFile) -> str:
    """A campaign file's content hash: what every "did the file change?" check compares."""
    return hashlib.sha256(campaign.model_dump_json().encode()).hexdigest()


def _stamp_sum(column: Any, dialect: str) -> Any:
    """SQL: the sum of a timestamp column as a number (epoch seconds / Julian days)."""
    if dialect == "postgresql":
        return func.coalesce(func.sum(extract("epoch", column)), 0)
    return func.coalesce(func.sum(func.julianday(column)), 0)


def roster_inputs(conn: Connection) -> str:
    """One string that changes whenever a patient, event, consent or unreachable number that
    eligibility reads is added, removed or updated."""
    dialect = conn.dialect.name
    reads = [
        select(func.count(), func.max(Patient.id), _stamp_sum(Patient.updated_at, dialect)),
        select(func.count(), func.max(PatientEvent.id)),
        select(func.count(), _stamp_sum(PhoneConsent.updated_at, dialect)),
        select(func.count(), _stamp_sum(UnreachableNumber.marked_at, dialect)),
    ]
    seen = "|".join(":".join(str(value) for value in conn.execute(read).one()) for read in reads)
    return hashlib.sha256(seen.encode()).hexdigest()[:32]


@dataclass
class Marks:
    """The marks of a shard's campaigns: what a pass must search, and what it writes when done."""

    shard: Shard
    enrolled: dict[str, str]  # campaign id -> the mark of its newly eligible search now
    planned: dict[str, str]  # campaign id -> the mark of its due-step search now
    stored: dict[tuple[str, int], tuple[str | None, str | None]] = field(default_factory=dict)

    @classmethod
    def read(cls, conn: Connection, campaigns: list[CampaignFile], shard: Shard, on: dt.date) -> Marks:
        inputs = roster_inputs(conn)
        digests = {campaign.id: file_digest(campaign)[:24] for campaign in campaigns}
        marks = cls(
            shard,
            enrolled={cid: f"{inputs}:{on.isoformat()}:{digest}" for cid, digest in digests.items()},
            planned={cid: f"{on.isoformat()}:{digest}" for cid, digest in digests.items()},
        )
        columns = (PlanMark.campaign_id, PlanMark.bucket, PlanMark.enrolled_seen, PlanMark.planned_seen)
        rows = conn.execute(
            select(*columns).where(
                PlanMark.campaign_id.in_(list(digests)), PlanMark.bucket.in_(shard.buckets)
            )
        )
        marks.stored = {(row[0], row[1]): (row[2], row[3]) for row in rows}
        conn.commit()
        return marks

    def must_enroll(self, campaign_id: str) -> bool:
        """Whether some bucket of the shard may have a newly eligible patient for the campaign."""
        return any(self._seen(campaign_id, b)[0] != self.enrolled[campaign_id] for b in self.shard.buckets)

    def must_plan(self, campaign_id: str) -> bool:
        """Whether some bucket of the shard may have an unplanned due step of the campaign."""
        return any(self._seen(campaign_id, b)[1] != self.planned[campaign_id] for b in self.shard.buckets)

    def _seen(self, campaign_id: str, bucket: int) -> tuple[str | None, str | None]:
        return self.stored.get((campaign_id, bucket), (None, None))

    def write(self, conn: Connection) -> None:
        """Record that every chunk of the shard was planned with these marks (one transaction)."""
        key = [PlanMark.__table__.c.campaign_id, PlanMark.__table__.c.bucket]
        for campaign_id, enrolled in self.enrolled.items():
            for bucket in self.shard.buckets:
                values = {"enrolled_seen": enrolled, "planned_seen": self.planned[campaign_id]}
                row = {"campaign_id": campaign_id, "bucket": bucket, **values}
                statement = sql.upsert(PlanMark, conn).values(**row)
                conn.execute(statement.on_conflict_do_update(index_elements=key, set_=values))
        conn.commit()
