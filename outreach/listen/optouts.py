"""Opt-outs as the care team sees and changes them: list, add for a patient who asked by phone or in
person, and remove only with the patient's recorded consent.

The rules live in outreach/listen/consent.py (per-number consent, pending messages canceled, audit rows);
this module adds what staff actions need on top: any human number format, a named person on every
change, and a reason that is mandatory when texts resume, since texting a number that opted out
without its consent is what the TCPA penalizes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from outreach.errors import UserError
from outreach.keywords import CARRIER_OPT_OUT
from outreach.listen import consent
from outreach.listen.classify import by_twilio
from outreach.listen.handoffs import iso_utc, staff_name
from outreach.phones import PhoneError, mask, parse_phone
from outreach.store.models import AuditEntry, Patient, PhoneConsent

STAFF = "staff"  # opted_out_by / opted_in_by for staff changes, followed by ": reason" when given
# Twilio's own opt-out keywords, and an opt-out Twilio's Advanced Opt-Out decided (a custom word such
# as REMOVE): after one of these Twilio refuses our texts (error 21610) until the patient texts START,
# whatever our database says.
PROVIDER_BLOCKING = frozenset(
    {word.upper() for word in CARRIER_OPT_OUT} | {"twilio:21610", by_twilio("STOP")}
)


class OptOutRefused(UserError):
    """The change does not apply to this number as it stands (nothing to remove): the CLI exits 1."""


@dataclass(frozen=True)
class OptOutRow:
    phone: str  # E.164
    opted_out_at: dt.datetime  # naive UTC
    by: str | None  # the keyword or phrase, `twilio:<code>`, or `staff: <reason>`
    actor: str | None  # patient, twilio, or the staff member's name (phone_consents.opted_out_actor)
    patients: tuple[str, ...]  # mrns of the patients sharing the number

    @property
    def blocked_at_provider(self) -> bool:
        """Twilio itself blocks this number too: only the patient texting START lifts that."""
        return (self.by or "") in PROVIDER_BLOCKING

    def as_dict(self, *, show_numbers: bool = False) -> dict[str, Any]:
        """The documented `--json` shape; numbers are masked unless asked for."""
        return {
            "phone": self.phone if show_numbers else mask(self.phone),
            "opted_out_at": iso_utc(self.opted_out_at),
            "by": self.by,
            "actor": self.actor,
            "patients": list(self.patients),
        }


@dataclass(frozen=True)
class OptOutChange:
    phone: str  # E.164
    changed: bool  # False when the number was already in the requested state
    canceled: int = 0  # pending messages canceled by an opt-out
    previous: OptOutRow | None = None  # the opt-out in force before the change, if any


def parse_number(raw: str, default_region: str) -> str:
    """A number as staff type it ("(617) 555-0123", "617.555.0123", "+1 617…") in E.164."""
    try:
        return parse_phone(raw, default_region).e164
    except PhoneError as exc:
        raise UserError(f"NUMBER {raw!r}: {exc}") from None


def list_opt_outs(session: Session, *, phone: str | None = None) -> list[OptOutRow]:
    """Numbers opted out now, newest first, with who did it and which patients share the number."""
    stmt = (
        select(
            PhoneConsent.phone,
            PhoneConsent.opted_out_at,
            PhoneConsent.opted_out_by,
            PhoneConsent.opted_out_actor,
        )
        .where(consent.opted_out())
        .order_by(PhoneConsent.opted_out_at.desc(), PhoneConsent.phone)
    )
    mrns = select(Patient.phone, Patient.mrn).join(PhoneConsent, PhoneConsent.phone == Patient.phone)
    mrns = mrns.where(consent.opted_out()).order_by(Patient.mrn)
    if phone is not None:
        stmt = stmt.where(PhoneConsent.phone == phone)
        mrns = mrns.where(Patient.phone == phone)
    sharing: dict[str, list[str]] = {}
    for number, mrn in session.execute(mrns):
        sharing.setdefault(number, []).append(mrn)
    rows = []
    for number, at, by, actor in session.execute(stmt):
        assert at is not None  # opted_out() requires it
        rows.append(OptOutRow(number, at, by, actor, tuple(sharing.get(number, ()))))
    return rows


def current(session: Session, phone: str) -> OptOutRow | None:
    """The opt-out in force for an E.164 number, if any."""
    found = list_opt_outs(session, phone=phone)
    return found[0] if found else None


def add_opt_out(
    session: Session, number: str, *, by: str, reason: str | None, at: dt.datetime, default_region: str
) -> OptOutChange:
    """Opt a number out on a patient's behalf; pending messages to it are canceled at once.

    Adding an opt-out that is already in force keeps the original (time, keyword) and still cancels
    anything planned since, like consent.record_opt_out.
    """
    actor = staff_name(by)
    phone = parse_number(number, default_region)
    why = (reason or "").strip()
    previous = current(session, phone)
    change = consent.record_opt_out(
        session, phone, by=f"{STAFF}: {why}" if why else STAFF, at=at, actor=actor
    )
    if not change.changed and change.canceled:
        # consent audits only the opt-out itself; messages canceled under an old one are a change too.
        detail = f"canceled {change.canceled} (already opted out)" + (f"; {why}" if why else "")
        entry = AuditEntry(at=at, actor=actor, action="cancel_pending", subject=mask(phone), detail=detail)
        session.add(entry)
    return OptOutChange(phone=phone, changed=change.changed, canceled=change.canceled, previous=previous)


def remove_opt_out(
    session: Session, number: str, *, by: str, reason: str, at: dt.datetime, default_region: str
) -> OptOutChange:
    """Let texts resume to a number: only with the patient's consent, recorded as `reason`.

    Raises OptOutRefused when the number is not opted out (nothing to undo).
    """
    actor = staff_name(by)
    why = reason.strip()
    if not why:
        raise UserError("--reason: record the patient's consent (when, how, to whom) to resume texts")
    phone = parse_number(number, default_region)
    previous = current(session, phone)
    if previous is None:
        raise OptOutRefused(f"{mask(phone)} is not opted out; nothing to remove")
    change = consent.record_opt_in(session, phone, by=f"{STAFF}: {why}", at=at, actor=actor)
    if not change.changed:  # opted in by someone else between the two statements
        raise OptOutRefused(f"{mask(phone)} is not opted out; nothing to remove")
    return OptOutChange(phone=phone, changed=True, previous=previous)


def patient_number(session: Session, mrn: str) -> str | None:
    """The number on file for the patient with `mrn` (E.164), to opt out or release by patient."""
    return session.scalar(select(Patient.phone).where(Patient.mrn == mrn.strip()))


def shown_as(session: Session, masked: str) -> list[OptOutRow]:
    """The opted-out numbers a masked number (as lists show it, +1********23) may stand for: staff
    act on what they can see, and more than one match means they must say which."""
    return [row for row in list_opt_outs(session) if mask(row.phone) == masked.strip()]


SEARCH_LIMIT = 50


@dataclass(frozen=True)
class Found:
    """A patient found by name, mrn or the last four digits of the number, with its number's state."""

    mrn: str
    name: str
    phone: str  # E.164: callers show it masked
    opt_out: OptOutRow | None  # in force now, or None when the number may be texted


def search(session: Session, query: str) -> list[Found]:
    """Patients whose mrn is `query`, whose number ends with it (four digits), or whose names start
    with its words (each word matching the first or the last name); at most SEARCH_LIMIT."""
    words = query.strip().split()
    if not words:
        return []
    matches = [Patient.mrn == query.strip()]
    if len(words) == 1 and words[0].isdigit() and len(words[0]) == 4:
        matches.append(Patient.phone.like(f"%{words[0]}"))
    by_name = [
        or_(
            func.lower(Patient.first_name).startswith(w.lower(), autoescape=True),
            func.lower(Patient.last_name).startswith(w.lower(), autoescape=True),
        )
        for w in words
    ]
    matches.append(and_(*by_name))
    stmt = select(Patient).where(or_(*matches)).order_by(Patient.last_name, Patient.first_name, Patient.mrn)
    patients = list(session.scalars(stmt.limit(SEARCH_LIMIT)))
    out = {row.phone: row for row in list_opt_outs(session)} if patients else {}
    return [
        Found(p.mrn, f"{p.first_name} {p.last_name or ''}".strip(), p.phone, out.get(p.phone))
        for p in patients
    ]
