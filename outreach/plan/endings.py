"""Enrollments that end because of clinical events: exclusions and closed care gaps (issue #13).

Both can only appear after new events arrive (an events or FHIR import) or when the planning day
or the campaign file changes (a look-back moves, an exclusion is added), so each tick first asks
whether any of that changed since the campaign was last searched (`Campaign.endings_seen`: the
events' highest id and count, the day, the file's hash) and searches only then. A quiet tick costs
two index look-ups; a tick after an import runs the set-based UPDATEs of exclusions.py and
outreach/outcomes/closure.py. Counting as well as the highest id catches an import whose ids were
allotted before another's but committed after it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from outreach.campaigns import CampaignFile
from outreach.outcomes.closure import close_gaps
from outreach.plan.exclusions import end_excluded
from outreach.plan.marks import file_digest
from outreach.store.models import Campaign, PatientEvent


@dataclass
class Endings:
    gap_closed: int = 0
    excluded: int = 0
    canceled: int = 0


def end_enrollments(
    session: Session,
    campaigns: dict[str, CampaignFile],
    on: dt.date,
    now: dt.datetime,
    attribution_days: int,
) -> Endings:
    """Exclusions first (an excluded patient's later screening is not a closure to credit), then
    closed gaps, for every campaign whose inputs changed; the campaigns table must be in sync."""
    found = Endings()
    events = select(func.max(PatientEvent.id), func.count()).select_from(PatientEvent)
    highest, count = session.execute(events).one()
    for campaign in campaigns.values():
        digest = file_digest(campaign)[:16]
        marker = f"{highest}:{count}:{on.isoformat()}:{attribution_days}:{digest}"
        seen = session.scalar(select(Campaign.endings_seen).where(Campaign.id == campaign.id))
        if seen == marker:
            continue
        excluded, canceled = end_excluded(session, campaign, on, now)
        closed, closed_canceled = close_gaps(session, campaign, on, now, attribution_days)
        found.excluded += excluded
        found.gap_closed += closed
        found.canceled += canceled + closed_canceled
        session.execute(update(Campaign).where(Campaign.id == campaign.id).values(endings_seen=marker))
    return found
