"""What the campaigns page (/app/campaigns) shows of each campaign, without HTTP.

Each figure comes from the engine's own home, so the page cannot drift from the commands: the
problems from `validate_files` (what `outreach campaigns validate` prints), the audience from
`count_eligible` (the planner's eligibility SQL), the pause from outreach/send/pause.py, and the
texts rendered by the same `render` and `count_segments` the planner uses. Samples name patients
by first name only: the page is read by viewers, and a first name is all a text may hold anyway.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from outreach.campaigns import CampaignFile, CampaignProblem, render, validate_files
from outreach.campaigns.loading import campaign_paths
from outreach.clock import clinic_today
from outreach.config import Settings
from outreach.errors import UserError
from outreach.outcomes import links
from outreach.plan.eligibility import count_eligible, eligible_patients
from outreach.segments import count_segments
from outreach.send.pause import PauseState, pause_states
from outreach.store.models import Enrollment, Message, MessageKind, Patient
from outreach.store.statuses import WAITING

DAYS_AHEAD = 7
SAMPLE_NAMES = 3
EXAMPLE_NAME = "Maria"  # when no patient is eligible today: an example, and the page says so


@dataclass(frozen=True)
class Sample:
    """One step's wording in one language, rendered for one sample patient."""

    step: str
    variant: str | None
    language: str
    first_name: str
    text: str
    segments: int


@dataclass(frozen=True)
class CampaignView:
    id: str
    name: str
    state: str  # active | paused | scheduled | ended
    paused: PauseState | None
    active_from: dt.date
    active_until: dt.date | None
    problems: list[CampaignProblem]
    eligible: int
    next_days: list[tuple[dt.date, int]]  # planned or queued steps by clinic-local day, today first
    samples: list[Sample]
    example_names: bool  # no one is eligible today: the samples use EXAMPLE_NAME


@dataclass(frozen=True)
class Room:
    campaigns: list[CampaignView]
    other_problems: list[CampaignProblem]  # files that are not (or no longer) a served campaign
    today: dt.date


def state_of(campaign: CampaignFile, on: dt.date, paused: PauseState | None) -> str:
    """`scheduled` before its dates, `ended` after them (a pause changes neither), else `paused`
    or `active`."""
    if on < campaign.active.from_:
        return "scheduled"
    if campaign.active.until is not None and on > campaign.active.until:
        return "ended"
    return "paused" if paused is not None else "active"


def room(
    session: Session, campaigns: Mapping[str, CampaignFile], *, settings: Settings, now: dt.datetime
) -> Room:
    """Every served campaign, in id order, with today's figures; `now` is naive UTC."""
    today = clinic_today(settings.default_timezone, now)
    problems = _problems(settings)
    paused = pause_states(session)
    ahead = next_sends(session, list(campaigns), now=now, zone=settings.default_timezone)
    views = []
    for campaign_id in sorted(campaigns):
        campaign = campaigns[campaign_id]
        names = sample_names(session, campaign, today)
        views.append(
            CampaignView(
                id=campaign.id,
                name=campaign.name,
                state=state_of(campaign, today, paused.get(campaign.id)),
                paused=paused.get(campaign.id),
                active_from=campaign.active.from_,
                active_until=campaign.active.until,
                problems=problems.pop(campaign.path or "", []),
                eligible=count_eligible(session, campaign, today),
                next_days=ahead[campaign.id],
                samples=samples(campaign, names or [EXAMPLE_NAME], settings=settings),
                example_names=not names,
            )
        )
    return Room(views, [p for found in problems.values() for p in found], today)


def _problems(settings: Settings) -> dict[str, list[CampaignProblem]]:
    """`outreach campaigns validate` of the campaign folder now (the files may have changed since
    the server loaded them), by file as the problems name it."""
    folder = Path(settings.campaigns_dir)
    if not folder.is_dir():
        return {}
    _, found = validate_files(campaign_paths(folder), settings=settings)
    by_file: dict[str, list[CampaignProblem]] = {}
    for problem in found:
        by_file.setdefault(problem.path, []).append(problem)
    return by_file


def next_sends(
    session: Session, campaign_ids: Sequence[str], *, now: dt.datetime, zone: str, days: int = DAYS_AHEAD
) -> dict[str, list[tuple[dt.date, int]]]:
    """Planned and queued steps per campaign and clinic-local day, today and the `days - 1` after
    it; rows already due (a paused campaign's, a backlog) count for today. One query, counted by
    the database."""
    today = clinic_today(zone, now)
    dates = [today + dt.timedelta(days=n) for n in range(days)]
    ends = [_utc_midnight(day + dt.timedelta(days=1), zone) for day in dates]
    counts = [
        func.count().filter(Message.send_at < ends[0]),
        *(
            func.count().filter(Message.send_at >= start, Message.send_at < end)
            for start, end in itertools.pairwise(ends)
        ),
    ]
    rows = session.execute(
        select(Enrollment.campaign_id, *counts)
        .join(Enrollment, Enrollment.id == Message.enrollment_id)
        .where(
            Enrollment.campaign_id.in_(campaign_ids),
            Message.kind == MessageKind.outreach,
            Message.status.in_(WAITING),
            Message.send_at < ends[-1],
        )
        .group_by(Enrollment.campaign_id)
    ).all()
    found = {row[0]: list(row[1:]) for row in rows}
    return {cid: list(zip(dates, found.get(cid, [0] * days), strict=True)) for cid in campaign_ids}


def _utc_midnight(day: dt.date, zone: str) -> dt.datetime:
    local = dt.datetime.combine(day, dt.time(0, 0), tzinfo=ZoneInfo(zone))
    return local.astimezone(dt.UTC).replace(tzinfo=None)


def sample_names(
    session: Session, campaign: CampaignFile, on: dt.date, count: int = SAMPLE_NAMES
) -> list[str]:
    """First names of the first few patients eligible on `on` (by mrn): nothing else leaves here."""
    query = eligible_patients(campaign, on).order_by(Patient.mrn).limit(count)
    return [row.first_name for row in session.execute(query)]


def samples(campaign: CampaignFile, names: Sequence[str], *, settings: Settings) -> list[Sample]:
    """Every step, variant and language of `campaign`, rendered for the sample names in turn, with
    the segments it costs (a `{link}` is a tracked URL of the real length)."""
    found: list[Sample] = []
    for step in campaign.steps:
        for variant, _, texts in step.wordings():
            for language, template in texts.items():
                name = names[len(found) % len(names)]
                link = (
                    links.sample_url(settings.public_url) if campaign.link and "{link}" in template else None
                )
                try:
                    text = render(template, first_name=name, settings=settings, link=link)
                except UserError as exc:  # a setting the text needs is not set: say which
                    found.append(Sample(step.id, variant, language, name, f"cannot be rendered: {exc}", 0))
                    continue
                found.append(Sample(step.id, variant, language, name, text, count_segments(text).segments))
    return found
