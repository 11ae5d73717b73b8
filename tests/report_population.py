"""A seeded population for the report's daily and opt-out figures (tests/test_report_daily.py, the
reports page tests): patients in two languages enrolled in two campaigns, texts in every status over
the last ~40 days, replies of every kind, opt-outs by keyword, by the provider and by staff.

`Population` keeps what it wrote in plain Python lists, so a test can recompute every figure from
the raw rows without the report's code.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field

import yaml
from sqlalchemy import Engine

from outreach.campaigns import CampaignFile
from outreach.store.db import session_scope
from outreach.store.models import Campaign, Enrollment, InboundMessage, Message, MessageStatus, PhoneConsent
from tests.factories import add_patient

ON = dt.date(2026, 11, 2)
YAML = """
id: {id}
name: {name}
active: {{from: 2026-01-01}}
audience: {{age: {{min: 40, max: 75}}, sex: any}}
steps:
  - {{id: invite, after: 0d, text: {{en: "Hi {{first_name}}. Reply STOP to opt out."}}}}
  - {{id: reminder, after: 7d, text: {{en: "Hi again {{first_name}}. Reply STOP to opt out."}}}}
"""
TEXTS = {"alpha": YAML.format(id="alpha", name="Alpha"), "beta": YAML.format(id="beta", name="Beta")}
FILES: dict[str, CampaignFile] = {
    cid: CampaignFile.model_validate(yaml.safe_load(text)) for cid, text in TEXTS.items()
}
STATUSES = [
    MessageStatus.delivered,
    MessageStatus.delivered,
    MessageStatus.sent,
    MessageStatus.undelivered,
    MessageStatus.failed,
    MessageStatus.canceled,
    MessageStatus.planned,
    MessageStatus.unknown,
]
ACCEPTED = (MessageStatus.delivered, MessageStatus.sent, MessageStatus.undelivered)
CODES = [30003, 30008, 21211]
KINDS = ["keyword", "free_text", "question", "help", "opt_out", None]
HOW = ["STOP", "stop", "twilio:21610", "staff: called the clinic", "staff: asked in person", None]


@dataclass
class Sent:
    campaign: str
    phone: str
    at: dt.datetime  # when it went (or would have gone) out
    accepted: bool  # the provider gave it an id: the funnel's "sent"
    went_out: bool  # accepted, or in a status that may have reached the number (WENT_OUT)


@dataclass
class Population:
    sends: list[Sent] = field(default_factory=list)
    replies: list[tuple[str, dt.datetime, str | None]] = field(default_factory=list)  # campaign, at, kind
    opt_outs: list[tuple[str, dt.datetime, str | None]] = field(default_factory=list)  # phone, at, by


def build(
    engine: Engine, seed: int = 7, patients: int = 90, on: dt.date = ON, ids: tuple[str, ...] = tuple(FILES)
) -> Population:
    """Write the population (activity in the 40 days up to `on`, in campaigns `ids`); returns what
    was written."""
    rng = random.Random(seed)
    pop = Population()
    start = dt.datetime.combine(on, dt.time(12)) - dt.timedelta(days=40)
    sids = 0
    with session_scope(engine) as s:
        names = {cid: FILES[cid].name if cid in FILES else cid for cid in ids}
        s.add_all([Campaign(id=cid, name=name, content_hash="x") for cid, name in names.items()])
        for i in range(patients):
            language = "es" if i % 3 == 0 else "en"
            p = add_patient(s, f"m{i}", phone=f"(617) 555-{1000 + i:04d}", language=language)
            for cid in ids:
                if rng.random() < 0.25:
                    continue
                e = Enrollment(patient_id=p.id, campaign_id=cid, enrolled_on=start.date(), language=language)
                s.add(e)
                s.flush()
                for step in ("invite", "reminder"):
                    status = rng.choice(STATUSES)
                    moment = start + dt.timedelta(hours=rng.randrange(0, 41 * 24))
                    accepted = status in ACCEPTED or (status == MessageStatus.failed and rng.random() < 0.5)
                    went = status not in (MessageStatus.planned, MessageStatus.canceled)
                    sids += 1
                    s.add(
                        Message(
                            enrollment_id=e.id,
                            step_id=step,
                            phone=p.phone,
                            body="text",
                            status=status,
                            send_at=moment,
                            provider_sid=f"SM{sids:032d}" if accepted else None,
                            sent_at=moment if accepted else None,
                            sending_at=moment if went else None,
                            error_code=rng.choice(CODES) if status in ("failed", "undelivered") else None,
                            cancel_reason="replied" if status == MessageStatus.canceled else None,
                        )
                    )
                    may_have = accepted or status in (*ACCEPTED, MessageStatus.unknown)
                    pop.sends.append(Sent(cid, p.phone, moment, accepted, may_have))
                for _ in range(rng.choice([0, 0, 1, 2])):
                    when = start + dt.timedelta(hours=rng.randrange(0, 41 * 24), minutes=7)
                    kind = rng.choice(KINDS)
                    sids += 1
                    s.add(
                        InboundMessage(
                            provider_sid=f"SM{sids:032d}",
                            from_phone=p.phone,
                            to_phone="+16175550100",
                            body="reply",
                            received_at=when,
                            patient_id=p.id,
                            enrollment_id=e.id,
                            classification=kind,
                        )
                    )
                    pop.replies.append((cid, when, kind))
                    if kind != "opt_out":  # what the reply handler records (outreach/listen/replies.py)
                        e.replied_at = min(e.replied_at or when, when)
            if rng.random() < 0.3:
                when = start + dt.timedelta(hours=rng.randrange(0, 41 * 24), minutes=30)
                by = rng.choice(HOW)
                s.add(PhoneConsent(phone=p.phone, opted_out_at=when, opted_out_by=by))
                pop.opt_outs.append((p.phone, when, by))
    return pop
