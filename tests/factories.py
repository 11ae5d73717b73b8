"""Small builders for test data: real rows in the real database, and campaign files as a care
team would write them."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from outreach.campaigns import CampaignFile
from outreach.phones import parse_phone
from outreach.store.db import session_scope
from outreach.store.models import Campaign, Enrollment, Message, Patient, PatientEvent


def add_patient(
    session: Session,
    mrn: str,
    *,
    phone: str = "(617) 555-0101",
    birth_date: dt.date = dt.date(1970, 5, 1),
    sex: str = "female",
    first_name: str = "Ana",
    language: str = "en",
    timezone: str | None = None,
    postal_code: str | None = None,
    active: bool = True,
) -> Patient:
    parsed = parse_phone(phone)
    patient = Patient(
        mrn=mrn,
        first_name=first_name,
        last_name="Test",
        birth_date=birth_date,
        sex=sex,
        phone=parsed.e164,
        phone_zones=parsed.zones_text,
        language=language,
        timezone=timezone,
        postal_code=postal_code,
        active=active,
    )
    session.add(patient)
    session.flush()
    return patient


def add_event(session: Session, mrn: str, kind: str, date: dt.date, code: str = "") -> None:
    session.add(PatientEvent(mrn=mrn, kind=kind, date=date, code=code, code_system=""))
    session.flush()


def campaign(**overrides: Any) -> CampaignFile:
    """A two-step campaign open every day 09:00-18:00; override any top-level field."""
    data: dict[str, Any] = {
        "id": "test-screening",
        "name": "Test screening",
        "active": {"from": dt.date(2026, 1, 1)},
        "audience": {"age": {"min": 40, "max": 75}, "sex": "any", "care_gap": []},
        "send_window": {
            "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
            "start": "09:00",
            "end": "18:00",
        },
        "re_enroll_after": "365d",
        "default_language": "en",
        "steps": [
            {
                "id": "invite",
                "after": "0d",
                "text": {
                    "en": "Hi {first_name}, {clinic_name} here. Reply YES for a kit. Reply STOP to opt out.",
                    "es": "Hola {first_name}, le saluda {clinic_name}. Responda SI. "
                    "Responda STOP para salir.",
                },
            },
            {
                "id": "reminder",
                "after": "7d",
                "only_if": "no_reply",
                "text": {
                    "en": "{first_name}, a reminder from {clinic_name}.",
                    "es": "{first_name}, recordatorio.",
                },
            },
        ],
        "replies": [
            {
                "keywords": ["YES", "SI"],
                "outcome": "kit_requested",
                "answer": {"en": "Thanks!", "es": "¡Gracias!"},
            }
        ],
    }
    data.update(overrides)
    return CampaignFile.model_validate(data)


def seed_invite(
    engine: Engine,
    *,
    phone: str,
    at: dt.datetime,
    status: str = "delivered",
    sid: str = "SM" + "9" * 32,
) -> int:
    """Ana, enrolled in colorectal screening, whose invite already went out to `phone` with `sid`:
    replies and status callbacks for that number have a real enrollment and message to change.
    Returns the enrollment id."""
    with session_scope(engine) as session:
        ana = Patient(mrn="m1", first_name="Ana", birth_date=dt.date(1960, 1, 1), sex="female", phone=phone)
        session.add_all([ana, Campaign(id="colorectal-screening", name="CRC", content_hash="x")])
        session.flush()
        enrollment = Enrollment(patient_id=ana.id, campaign_id="colorectal-screening", enrolled_on=at.date())
        session.add(enrollment)
        session.flush()
        session.add(
            Message(
                enrollment_id=enrollment.id,
                step_id="invite",
                phone=phone,
                body="x",
                status=status,
                send_at=at,
                sent_at=at,
                provider_sid=sid,
            )
        )
        return enrollment.id
