"""One scheduler pass (`outreach tick`): enroll, plan due steps, enqueue what is due now.

Everything is decided from the database at `now` (injected), so a pass can run every minute from
Celery beat, twice at once, or after an outage, and still send each step once (the outbox's
unique (enrollment, step) key) at a time that fits the patient's window and the frequency cap.
Only rows whose time has come are handed to Celery: nothing waits inside the broker.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, Select, and_, exists, func, literal, select, text, update
from sqlalchemy.orm import Session

from outreach.campaigns import CampaignFile, Step, render
from outreach.clock import clinic_today, utcnow
from outreach.config import Settings
from outreach.listen.consent import number_opted_out
from outreach.outcomes import links
from outreach.plan.eligibility import eligible_patients
from outreach.plan.endings import end_enrollments
from outreach.plan.holdout import arm_column
from outreach.plan.pacing import Pacer, recipient
from outreach.plan.variants import variant_for
from outreach.segments import count_segments
from outreach.send.dispatch import Dispatch
from outreach.store import sql
from outreach.store.db import session_scope
from outreach.store.models import Arm, Campaign, Enrollment, Message, MessageKind, MessageStatus, Patient
from outreach.store.statuses import WAITING

log = logging.getLogger(__name__)

ENQUEUE_CHUNK = 20  # ids per Celery task: big enough to amortize a task, small enough to spread


@dataclass
class TickResult:
    enrolled: dict[str, int] = field(default_factory=dict)
    planned: int = 0
    canceled: int = 0
    queued: int = 0
    gap_closed: int = 0
    excluded: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "enrolled": self.enrolled,
            "planned": self.planned,
            "canceled": self.canceled,
            "queued": self.queued,
            "gap_closed": self.gap_closed,
            "excluded": self.excluded,
        }


def planning_day(now: dt.datetime, settings: Settings) -> dt.date:
    """Campaign days (ages, look-backs, step offsets) are counted in the clinic's zone."""
    return clinic_today(settings.default_timezone, now)


def tick(
    engine: Engine,
    campaigns: dict[str, CampaignFile],
    *,
    settings: Settings,
    now: dt.datetime | None = None,
    dispatch: Dispatch | None = None,
) -> TickResult:
    """Enroll, plan and enqueue; `now` is naive UTC. Returns what changed."""
    now = now or utcnow()
    result = TickResult()
    with session_scope(engine) as session:
        _take_planning_lock(session)
        sync_campaigns(session, campaigns)
        on = planning_day(now, settings)
        # Issue #13: exclusions and closed care gaps found since the last tick (outreach/plan/endings.py).
        endings = end_enrollments(session, campaigns, on, now, settings.attribution_days)
        result.gap_closed, result.excluded = endings.gap_closed, endings.excluded
        result.canceled = endings.canceled
        for campaign in campaigns.values():
            if campaign.is_active(on):
                result.enrolled[campaign.id] = enroll(session, campaign, on, now)
                planned, canceled = plan_due_steps(session, campaign, on, now, settings)
                result.planned += planned
                result.canceled += canceled
            else:
                result.canceled += cancel_pending(session, campaign.id, "campaign ended", now)
        result.canceled += cancel_replied_reminders(session, campaigns, now)
    result.queued = len(enqueue_due(engine, now, dispatch=dispatch))
    return result


def _take_planning_lock(session: Session) -> None:
    """Serialize planning so two schedulers never both use the same frequency-cap slot.

    PostgreSQL: a transaction-scoped advisory lock, keyed by schema so tenants sharing a server do
    not wait on each other; a second scheduler waits, then finds nothing left to plan. SQLite: a
    write at the start of the transaction takes the database's single write lock.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(4242001, hashtext(current_schema()))"))
    else:
        session.execute(update(Campaign).where(literal(False)).values(name=Campaign.name))


def sync_campaigns(session: Session, campaigns: dict[str, CampaignFile]) -> None:
    """Keep the campaigns table (referenced by enrollments) in step with the files."""
    for campaign in campaigns.values():
        digest = hashlib.sha256(campaign.model_dump_json().encode()).hexdigest()
        row = session.get(Campaign, campaign.id)
        if row is None:
            session.add(Campaign(id=campaign.id, name=campaign.name, content_hash=digest))
        elif row.content_hash != digest or row.name != campaign.name:
            row.name, row.content_hash, row.loaded_at = campaign.name, digest, utcnow()
    session.flush()


def enroll(session: Session, campaign: CampaignFile, on: dt.date, now: dt.datetime) -> int:
    """One INSERT … SELECT of newly eligible patients; idempotent, honours the cool-down."""
    eligible = eligible_patients(campaign, on).subquery()
    prior = Enrollment.__table__.alias("prior")
    previous_cycles = (
        select(func.count())
        .select_from(prior)
        .where(prior.c.patient_id == eligible.c.id, prior.c.campaign_id == campaign.id)
        .scalar_subquery()
    )
    blocking = [prior.c.patient_id == eligible.c.id, prior.c.campaign_id == campaign.id]
    if campaign.re_enroll_after is not None:
        blocking.append(prior.c.enrolled_on > campaign.re_enroll_after.before(on))
    source = select(
        eligible.c.id,
        literal(campaign.id),
        previous_cycles + 1,
        literal(on),
        literal(now),
        eligible.c.language,
        arm_column(campaign, previous_cycles + 1, eligible.c.id, sql.dialect_name(session)),  # issue #13
    ).where(~exists().where(*blocking))
    statement = (
        sql.upsert(Enrollment, session)
        .from_select(
            ["patient_id", "campaign_id", "cycle", "enrolled_on", "enrolled_at", "language", "arm"], source
        )
        .on_conflict_do_nothing()
        .returning(Enrollment.id)
    )
    return len(session.execute(statement).all())


def plan_due_steps(
    session: Session, campaign: CampaignFile, on: dt.date, now: dt.datetime, settings: Settings
) -> tuple[int, int]:
    """Create outbox rows for every step that has come due; returns (planned, canceled)."""
    planned = canceled = 0
    still_eligible = select(eligible_patients(campaign, on).subquery().c.id)
    for index, step in enumerate(campaign.steps):
        previous = campaign.steps[index - 1].id if index else None
        rows = session.execute(_due_query(campaign, step, previous, on, still_eligible)).all()
        if not rows:
            continue
        pacer = Pacer(settings.daily_cap, settings.weekly_cap)
        pacer.load(session, (row.phone for row in rows), now)
        values = [_outbox_row(row, campaign, step, previous, pacer, now, settings) for row in rows]
        step_canceled = sum(1 for value in values if value["status"] == MessageStatus.canceled)
        canceled += step_canceled
        planned += len(values) - step_canceled
        for start in range(0, len(values), 1000):
            session.execute(
                sql.upsert(Message, session).values(values[start : start + 1000]).on_conflict_do_nothing()
            )
    return planned, canceled


def _due_query(
    campaign: CampaignFile, step: Step, previous: str | None, on: dt.date, still_eligible: Select[Any]
) -> Select[Any]:
    """The open enrollments whose `step` has come due on `on` and has no outbox row yet, with what
    deciding and rendering it needs: the patient, consent, eligibility now, and the status of the
    previous step's row (the step is planned only once that row exists)."""
    columns: list[Any] = [
        Enrollment.id,
        Enrollment.enrolled_on,
        Enrollment.replied_at,
        Enrollment.language,
        Patient.first_name,
        Patient.phone,
        Patient.phone_zones,
        Patient.timezone,
        Patient.postal_code,
        number_opted_out(Patient.phone).label("opted_out"),
        Patient.id.in_(still_eligible).label("eligible"),
    ]
    query = (
        select(*columns)
        .join(Patient, Patient.id == Enrollment.patient_id)
        .where(
            Enrollment.campaign_id == campaign.id,
            Enrollment.ended_at.is_(None),
            Enrollment.arm == Arm.treated,  # a holdout is never texted (outreach/plan/holdout.py)
            Enrollment.enrolled_on <= step.after.before(on),
            ~exists().where(Message.enrollment_id == Enrollment.id, Message.step_id == step.id),
        )
    )
    if previous is not None:
        prev_msg = Message.__table__.alias("prev")
        query = query.add_columns(prev_msg.c.status).join(
            prev_msg, and_(prev_msg.c.enrollment_id == Enrollment.id, prev_msg.c.step_id == previous)
        )
    return query


def _outbox_row(
    row: Any,
    campaign: CampaignFile,
    step: Step,
    previous: str | None,
    pacer: Pacer,
    now: dt.datetime,
    settings: Settings,
) -> dict[str, object]:
    """One due row's outbox values: rendered in the patient's language, then either canceled with
    the reason or planned at the first slot the window and the frequency cap allow (recorded in
    `pacer`, so the next patient sharing the number is placed after it)."""
    variant, texts = variant_for(row.id, step)  # issue #13: the step's wording and tracked link
    _, template = campaign.text_for(texts, row.language)
    token, link = links.for_template(campaign, template, settings)
    body = render(template, first_name=row.first_name, settings=settings, link=link)
    record: dict[str, object] = {
        "variant": variant,
        "link_token": token,
        "enrollment_id": row.id,
        "step_id": step.id,
        "kind": MessageKind.outreach,
        "phone": row.phone,
        "body": body,
        "segments": count_segments(body).segments,
        "planned_at": now,
        "updated_at": now,
        "canceled_at": None,
        "cancel_reason": None,
    }
    reason = _cancel_reason(row, step.only_if, previous)
    if reason:
        return record | {
            "status": MessageStatus.canceled,
            "send_at": now,
            "canceled_at": now,
            "cancel_reason": reason,
        }
    who = recipient(row.phone, row.timezone, row.phone_zones, row.postal_code, settings.default_timezone)
    earliest = max(now, _local_midnight_utc(step.after.after(row.enrolled_on), who.zones[0]))
    send_at = pacer.place(who, earliest, campaign.send_window)
    pacer.record(row.phone, send_at)
    return record | {"status": MessageStatus.planned, "send_at": send_at}


def _cancel_reason(row: Any, only_if: str | None, previous: str | None) -> str | None:
    """Why a due step must not go out, or None; checked in this order so the funnel names the cause."""
    if row.opted_out:
        return "opted out"
    if not row.eligible:
        return "no longer eligible"
    if only_if == "no_reply" and row.replied_at is not None:
        return "replied"
    if previous is not None and row.status in (MessageStatus.canceled, MessageStatus.failed):
        return f"previous step {row.status}"
    return None


def _local_midnight_utc(day: dt.date, zone: str) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), ZoneInfo(zone)).astimezone(dt.UTC).replace(tzinfo=None)


def cancel_pending(session: Session, campaign_id: str, reason: str, now: dt.datetime) -> int:
    """Pending rows of a campaign that ended will never go out: say so in the outbox."""
    enrollment_ids = select(Enrollment.id).where(Enrollment.campaign_id == campaign_id)
    result = session.execute(
        update(Message)
        .where(
            Message.enrollment_id.in_(enrollment_ids),
            Message.status.in_(WAITING),
        )
        .values(status=MessageStatus.canceled, canceled_at=now, cancel_reason=reason, updated_at=now)
    )
    return sql.rowcount(result)


def cancel_replied_reminders(session: Session, campaigns: dict[str, CampaignFile], now: dt.datetime) -> int:
    """A reply that arrives after a 'no reply' reminder was planned still stops that reminder."""
    canceled = 0
    for campaign in campaigns.values():
        steps = [step.id for step in campaign.steps if step.only_if == "no_reply"]
        if not steps:
            continue
        replied = select(Enrollment.id).where(
            Enrollment.campaign_id == campaign.id, Enrollment.replied_at.is_not(None)
        )
        result = session.execute(
            update(Message)
            .where(
                Message.enrollment_id.in_(replied),
                Message.step_id.in_(steps),
                Message.status.in_(WAITING),
            )
            .values(status=MessageStatus.canceled, canceled_at=now, cancel_reason="replied", updated_at=now)
        )
        canceled += sql.rowcount(result)
    return canceled


def enqueue_due(
    engine: Engine, now: dt.datetime, *, dispatch: Dispatch | None, batch: int = 5000
) -> list[int]:
    """Move due rows `planned → queued` and hand their ids to the workers, in chunks.

    The status change commits before dispatch: a crash in between leaves `queued` rows that the
    sweeper re-dispatches, never rows that were sent without being recorded.
    """
    queued: list[int] = []
    while True:
        with session_scope(engine) as session:
            due = (
                select(Message.id)
                .where(Message.status == MessageStatus.planned, Message.send_at <= now)
                .order_by(Message.send_at, Message.id)
                .limit(batch)
            )
            ids = list(
                session.scalars(
                    update(Message)
                    .where(Message.id.in_(due), Message.status == MessageStatus.planned)
                    .values(status=MessageStatus.queued, queued_at=now, updated_at=now)
                    .returning(Message.id)
                )
            )
        if not ids:
            return queued
        ids.sort()
        queued.extend(ids)
        if dispatch is not None:
            for start in range(0, len(ids), ENQUEUE_CHUNK):
                dispatch(ids[start : start + ENQUEUE_CHUNK])
        if len(ids) < batch:
            return queued
