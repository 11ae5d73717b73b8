"""What a reply belongs to (DESIGN.md §8): the enrollment it answers, the patients on its number,
and whether the number is opted out, read in one round trip per reply.

A reply answers the enrollment of the latest outreach message that went to its number, whatever the
campaign; the patient is that enrollment's, else the only one on the number (a shared number with no
enrollment names nobody rather than guess). outreach/listen/replies.py classifies and acts with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import Connection, String, bindparam, literal_column, null, or_, select, union_all
from sqlalchemy.orm import Session

from outreach.campaigns import CampaignFile
from outreach.listen import consent
from outreach.store import sql
from outreach.store.models import Enrollment, Message, MessageKind, Patient, PhoneConsent
from outreach.store.statuses import WENT_OUT


@dataclass(frozen=True)
class Person:
    """What a reply needs of a patient (plain values: no ORM identity to keep in step)."""

    id: int
    first_name: str
    language: str


@dataclass(frozen=True)
class Enrolled:
    """The enrollment a reply answers (that of the latest outreach message to the number)."""

    id: int
    patient_id: int
    campaign_id: str
    language: str


@dataclass(frozen=True)
class ReplyContext:
    """What a reply is classified and acted on with, read in one round trip (`load_context`)."""

    phone: str
    patients: tuple[Person, ...]
    enrollment: Enrolled | None
    campaign: CampaignFile | None
    opted_out: bool

    @property
    def patient(self) -> Person | None:
        """The reply's patient: the enrollment's, else the only one on the number (shared: unknown)."""
        if self.enrollment is not None:
            return next((p for p in self.patients if p.id == self.enrollment.patient_id), None)
        return self.patients[0] if len(self.patients) == 1 else None

    @property
    def language(self) -> str:
        if self.enrollment is not None:
            return self.enrollment.language
        patient = self.patient or (self.patients[0] if self.patients else None)
        return patient.language if patient is not None else "en"


_PHONE = bindparam("phone", type_=String())

# The enrollment of the latest outreach message that went to the number: what a reply answers.
_LATEST = (
    select(Enrollment.id, Enrollment.patient_id, Enrollment.campaign_id, Enrollment.language)
    .join(Message, Message.enrollment_id == Enrollment.id)
    .where(
        Message.phone == _PHONE,
        Message.kind == MessageKind.outreach,
        sql.in_constants(Message.status, WENT_OUT),
    )
    .order_by(Message.went_out_at.desc().nulls_last(), Message.id.desc())
    .limit(1)
)
_LATEST_CTE = _LATEST.cte("latest")
# Everything a reply is classified with, in one round trip: rows tagged "e" (the enrollment it
# answers), "p" (the patients on the number, and the enrollment's patient) and "o" (the number is
# opted out).
_CONTEXT = union_all(
    select(
        literal_column("'e'"),
        _LATEST_CTE.c.id,
        _LATEST_CTE.c.patient_id,
        _LATEST_CTE.c.campaign_id,
        _LATEST_CTE.c.language,
        null(),
    ),
    select(
        literal_column("'p'"), Patient.id, null(), Patient.first_name, Patient.language, Patient.phone
    ).where(or_(Patient.phone == _PHONE, Patient.id.in_(select(_LATEST_CTE.c.patient_id)))),
    select(literal_column("'o'"), null(), null(), null(), null(), null())
    .select_from(PhoneConsent)
    .where(PhoneConsent.phone == _PHONE, consent.opted_out()),
)


def latest_enrollment_id(session: Session, phone: str) -> int | None:
    """The enrollment of the latest outreach message that went to `phone`: what a reply answers."""
    row = sql.connection(session).execute(_LATEST, {"phone": phone}).first()
    return int(row.id) if row is not None else None


def load_context(conn: Connection, phone: str, campaigns: Mapping[str, CampaignFile]) -> ReplyContext:
    """The context of a reply from `phone`: one SELECT, on the caller's connection."""
    enrollment: Enrolled | None = None
    found: list[tuple[bool, Person]] = []
    opted_out = False
    for tag, id_, patient_id, text_a, text_b, text_c in conn.execute(_CONTEXT, {"phone": phone}):
        if tag == "e":
            enrollment = Enrolled(id_, patient_id, text_a, text_b)
        elif tag == "p":
            found.append((text_c != phone, Person(id_, text_a, text_b)))
        else:
            opted_out = True
    # The number's own patients by id, then the enrollment's patient if it is not one of them.
    patients = tuple(person for _other, person in sorted(found, key=lambda f: (f[0], f[1].id)))
    campaign = campaigns.get(enrollment.campaign_id) if enrollment is not None else None
    return ReplyContext(phone, patients, enrollment, campaign, opted_out)
