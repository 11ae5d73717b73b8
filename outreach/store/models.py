"""The tables of DESIGN.md §6, as SQLAlchemy 2.0 typed models.

The database is the source of truth: every promise (once per step, consent, forward-only status)
is backed by a constraint here or by an atomic UPDATE in the module that owns the transition.
"""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import (
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from outreach.clock import utcnow

# Stable constraint names so Alembic migrations are identical on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Sex(enum.StrEnum):
    female = "female"
    male = "male"
    other = "other"
    unknown = "unknown"


class MessageStatus(enum.StrEnum):
    """Outbox states. Only forward moves are allowed; `RANK` orders them for provider callbacks."""

    planned = "planned"
    queued = "queued"
    sending = "sending"
    unknown = "unknown"
    sent = "sent"
    delivered = "delivered"
    undelivered = "undelivered"
    failed = "failed"
    canceled = "canceled"


PENDING_STATUSES = (MessageStatus.planned, MessageStatus.queued)
FINAL_STATUSES = (
    MessageStatus.delivered,
    MessageStatus.undelivered,
    MessageStatus.failed,
    MessageStatus.canceled,
)


class MessageKind(enum.StrEnum):
    outreach = "outreach"  # a campaign step: counts toward the frequency cap
    answer = "answer"  # an answer to the patient's own reply: does not count


class Patient(Base):
    __tablename__ = "patients"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mrn: Mapped[str] = mapped_column(String(64), unique=True)
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str | None] = mapped_column(String(100))
    birth_date: Mapped[dt.date] = mapped_column(Date, index=True)
    sex: Mapped[str] = mapped_column(String(10))
    phone: Mapped[str] = mapped_column(String(20), index=True)
    # Zones the number's area code spans (space separated), used when `timezone` is unknown.
    # Text: a valid +7 number spans 16 zones (228 characters).
    phone_zones: Mapped[str | None] = mapped_column(Text)
    language: Mapped[str] = mapped_column(String(10), default="en")
    timezone: Mapped[str | None] = mapped_column(String(64))
    postal_code: Mapped[str | None] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class PatientEvent(Base):
    """A clinical event (screening, vaccine) that closes a care gap; keyed by mrn so events may
    arrive before or after the patient row."""

    __tablename__ = "patient_events"
    __table_args__ = (
        UniqueConstraint("mrn", "kind", "date", "code", name="uq_patient_events_identity"),
        Index("ix_patient_events_kind_mrn_date", "kind", "mrn", "date"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mrn: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(40))
    date: Mapped[dt.date] = mapped_column(Date)
    # Empty string rather than NULL so the identity constraint also holds for code-less events.
    code: Mapped[str] = mapped_column(String(40), default="")
    code_system: Mapped[str] = mapped_column(String(100), default="")


class PhoneConsent(Base):
    """One row per number: opt-out is per number, across every campaign and patient sharing it."""

    __tablename__ = "phone_consents"

    phone: Mapped[str] = mapped_column(String(20), primary_key=True)
    opted_out_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    opted_out_by: Mapped[str | None] = mapped_column(String(100))  # keyword or provider error code
    opted_in_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    opted_in_by: Mapped[str | None] = mapped_column(String(100))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    content_hash: Mapped[str] = mapped_column(String(64))
    loaded_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Enrollment(Base):
    """A patient's pass through one campaign; `cycle` grows with each re-enrollment."""

    __tablename__ = "enrollments"
    __table_args__ = (
        UniqueConstraint("patient_id", "campaign_id", "cycle", name="uq_enrollments_identity"),
        Index("ix_enrollments_campaign_patient", "campaign_id", "patient_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaigns.id"))
    cycle: Mapped[int] = mapped_column(Integer, default=1)
    enrolled_on: Mapped[dt.date] = mapped_column(Date)
    enrolled_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    language: Mapped[str] = mapped_column(String(10), default="en")
    replied_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    outcome: Mapped[str | None] = mapped_column(String(64))
    outcome_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    ended_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class Message(Base):
    """The outbox. Unique on (enrollment, step): the first line of defence against sending twice."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("enrollment_id", "step_id", name="uq_messages_enrollment_step"),
        Index("ix_messages_status_send_at", "status", "send_at"),
        Index("ix_messages_phone_send_at", "phone", "send_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    enrollment_id: Mapped[int | None] = mapped_column(ForeignKey("enrollments.id"))
    step_id: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(10), default=MessageKind.outreach)
    phone: Mapped[str] = mapped_column(String(20))
    body: Mapped[str] = mapped_column(Text)
    segments: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(12), default=MessageStatus.planned)
    send_at: Mapped[dt.datetime] = mapped_column(DateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    provider_sid: Mapped[str | None] = mapped_column(String(64), unique=True)
    provider_status: Mapped[str | None] = mapped_column(String(20))
    error_code: Mapped[int | None] = mapped_column(Integer)
    error_message: Mapped[str | None] = mapped_column(Text)
    planned_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    queued_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    sending_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    failed_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    canceled_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    cancel_reason: Mapped[str | None] = mapped_column(String(100))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class InboundMessage(Base):
    __tablename__ = "inbound_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider_sid: Mapped[str] = mapped_column(String(64), unique=True)
    idempotency_token: Mapped[str | None] = mapped_column(String(200), unique=True)
    from_phone: Mapped[str] = mapped_column(String(20), index=True)
    to_phone: Mapped[str] = mapped_column(String(20))
    body: Mapped[str] = mapped_column(Text, default="")
    received_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"))
    enrollment_id: Mapped[int | None] = mapped_column(ForeignKey("enrollments.id"))
    classification: Mapped[str | None] = mapped_column(String(40))


class Activation(Base):
    """First engagement per patient x campaign; the unique key makes 'first reply wins' atomic."""

    __tablename__ = "activations"
    __table_args__ = (UniqueConstraint("patient_id", "campaign_id", name="uq_activations_identity"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaigns.id"))
    enrollment_id: Mapped[int] = mapped_column(ForeignKey("enrollments.id"))
    inbound_id: Mapped[int | None] = mapped_column(ForeignKey("inbound_messages.id"))
    activated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    how: Mapped[str] = mapped_column(String(64))


class Handoff(Base):
    """A reply that needs a person on the care team."""

    __tablename__ = "handoffs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    inbound_id: Mapped[int] = mapped_column(ForeignKey("inbound_messages.id"), unique=True)
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"))
    enrollment_id: Mapped[int | None] = mapped_column(ForeignKey("enrollments.id"))
    reason: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(10), default="open")
    opened_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    closed_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    closed_by: Mapped[str | None] = mapped_column(String(100))
    note: Mapped[str | None] = mapped_column(Text)


class AuditEntry(Base):
    """Who changed consent or closed a hand-off, and why: care-team actions must be accountable."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_action_at", "action", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(200))
    detail: Mapped[str | None] = mapped_column(Text)
