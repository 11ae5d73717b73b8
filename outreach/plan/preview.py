"""What a campaign would send on a day, patient by patient, without sending or writing anything.

A care team previews before a campaign goes live: who is in the audience, which language each
patient actually gets (after falling back to the campaign's default), the rendered first message,
what it costs in segments, and when it would go out in the patient's own send window.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from outreach.campaigns import CampaignFile, SendWindow, render
from outreach.config import Settings
from outreach.outcomes import links
from outreach.plan.eligibility import eligible_patients
from outreach.plan.variants import variant_for
from outreach.plan.windows import next_opening, patient_zones, strict_hours
from outreach.segments import count_segments
from outreach.store.db import require_tables
from outreach.store.models import Patient


@dataclass(frozen=True)
class PreviewRow:
    mrn: str
    step: str  # the campaign's first step: what enrollment on `on` sends first
    language: str  # the language actually used, after falling back to the default
    text: str
    segments: int
    send_at: dt.datetime  # aware, UTC
    zone: str  # the patient's first zone, for showing `send_at` in local time


def preview(
    session: Session,
    campaign: CampaignFile,
    on: dt.date,
    *,
    settings: Settings,
    limit: int | None = None,
) -> list[PreviewRow]:
    """The campaign's first step for each eligible patient on `on`, ordered by mrn.

    `send_at` is the first opening of the campaign's patient-local window (within the legal
    hours) at or after the start of day `on` in the patient's zones. When a patient may be in
    several zones (an area code spanning two), the start of day is the latest of their local
    midnights, so the message is never dated before `on` wherever the patient is. It is the
    earliest the step could go; the scheduler may send later (frequency caps, pacing).
    """
    require_tables(session.connection(), Patient.__tablename__)
    step = campaign.steps[0]
    query = eligible_patients(campaign, on).order_by(Patient.mrn)
    if limit is not None:
        query = query.limit(limit)
    rows: list[PreviewRow] = []
    # A roster has few distinct (zones, strict) pairs and many patients.
    openings: dict[tuple[tuple[str, ...], bool], dt.datetime] = {}
    for patient in session.execute(query):
        zones = patient_zones(patient.timezone, patient.phone_zones, settings.default_timezone)
        key = (zones, strict_hours(patient.phone, patient.postal_code))
        if key not in openings:
            openings[key] = _first_opening(on, campaign.send_window, *key)
        # A step with variants shows the wording drawn for the patient's id (the enrollment draws
        # its own); {link} of a campaign with `link:` shows a tracked URL of the real length.
        _variant, texts = variant_for(patient.id, step)
        language, template = campaign.text_for(texts, patient.language)
        link = links.sample_url(settings.public_url) if campaign.link and "{link}" in template else None
        text = render(template, first_name=patient.first_name, settings=settings, link=link)
        rows.append(
            PreviewRow(
                mrn=patient.mrn,
                step=step.id,
                language=language,
                text=text,
                segments=count_segments(text).segments,
                send_at=openings[key],
                zone=zones[0],
            )
        )
    return rows


def _first_opening(on: dt.date, window: SendWindow, zones: tuple[str, ...], strict: bool) -> dt.datetime:
    start = max(_local_midnight_utc(on, zone) for zone in zones)
    return next_opening(start, window=window, zones=zones, strict=strict).replace(tzinfo=dt.UTC)


def _local_midnight_utc(on: dt.date, zone: str) -> dt.datetime:
    local = dt.datetime.combine(on, dt.time(0, 0), tzinfo=ZoneInfo(zone))
    return local.astimezone(dt.UTC).replace(tzinfo=None)
