"""The demo's outcomes: simulated patients open the tracked links in their texts (and their phones
and messengers fetch link previews), and a later events file closes some care gaps in both arms,
so the demo ends with clicks, closures, a holdout comparison and per-variant figures.

Both are reproducible from the demo's seed: a text's fate is drawn from the seed, the number and
the text without its (random) link token; a closure from the seed and the enrollment. Clicks go to
`outreach web` over HTTP exactly as a phone's browser would (the redirect is not followed: the
campaign's page is someone else's site); the events go through the real events import.
"""

from __future__ import annotations

import csv
import datetime as dt
import http.client
import random
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import Engine, select

from outreach.campaigns import CampaignFile
from outreach.store.db import session_scope
from outreach.store.models import Arm, Enrollment, Patient

BROWSER = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"
PREVIEWERS = ("facebookexternalhit/1.1 Facebot Twitterbot/1.0", "WhatsApp/2.24.10.85 i")
_LINK = re.compile(r"https?://\S+/l/[A-Za-z0-9_-]+")
CLICK, PREVIEW = 0.35, 0.4  # of texts with a link: opened by the patient; unfurled by the phone
CLOSE = {Arm.treated: 0.45, Arm.holdout: 0.25}  # share of each arm screened before the events file


class LinkVisitors:
    """Who opens which link: previews as the text arrives, clicks an hour or more later."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._first_seen: dict[str, int] = {}
        self._done: set[tuple[str, str]] = set()
        self.clicks = self.previews = 0

    def visit(self, messages: Iterable[Mapping[str, str]], hour: int) -> None:
        """Act on the delivered texts of the sandbox (`messages`) at simulated hour `hour`."""
        for message in messages:
            found = _LINK.search(message.get("body", ""))
            if message.get("status") != "delivered" or found is None:
                continue
            url = found.group(0)
            first = self._first_seen.setdefault(url, hour)
            rng = random.Random(f"{self._seed}|{message['to']}|{_LINK.sub('', message['body'])}")
            click, preview = rng.random() < CLICK, rng.random() < PREVIEW
            if preview and (url, "preview") not in self._done:
                self._done.add((url, "preview"))
                self.previews += _get(url, rng.choice(PREVIEWERS), "HEAD" if rng.random() < 0.3 else "GET")
            if click and hour > first and (url, "click") not in self._done:
                self._done.add((url, "click"))
                self.clicks += _get(url, BROWSER, "GET")


def _get(url: str, agent: str, method: str) -> int:
    """One request to `outreach web`, as a phone sends it; 1 when it answered."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=10)
    try:
        conn.request(method, parts.path, headers={"User-Agent": agent})
        conn.getresponse().read()
        return 1
    except OSError:
        return 0
    finally:
        conn.close()


def write_followup_events(
    engine: Engine, campaigns: Mapping[str, CampaignFile], path: Path, today: dt.date, seed: int
) -> int:
    """Screenings since enrollment for a seeded share of each arm's open enrollments, as an events
    CSV (DESIGN.md §5) at `path`; returns how many rows it wrote."""
    with session_scope(engine) as s:
        rows = s.execute(
            select(Enrollment.id, Enrollment.campaign_id, Enrollment.arm, Enrollment.enrolled_on, Patient.mrn)
            .join(Patient, Patient.id == Enrollment.patient_id)
            .where(Enrollment.ended_at.is_(None))
            .order_by(Enrollment.id)
        ).all()
    written = 0
    with path.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(["mrn", "event", "date", "code", "code_system"])
        for enrollment_id, campaign_id, arm, enrolled_on, mrn in rows:
            campaign = campaigns.get(campaign_id)
            rng = random.Random(f"{seed}|closure|{enrollment_id}")
            if campaign is None or not campaign.audience.care_gap or rng.random() >= CLOSE[Arm(arm)]:
                continue
            day = max(enrolled_on, today - dt.timedelta(days=rng.randint(0, 2)))
            out.writerow([mrn, campaign.audience.care_gap[0].event, day.isoformat(), "", ""])
            written += 1
    return written
