"""Enrollment: newly eligible patients of a chunk enter a campaign, in one INSERT … SELECT.

Linear whatever the planner's statistics say: the audience is eligibility.py's query limited to the
chunk's patients, and a patient's previous cycles of the campaign are looked up per patient
through the (campaign, patient) index as scalar subqueries, which PostgreSQL cannot turn into a
join. (A join against the enrollments table let the planner, without fresh statistics on a table
this very pass keeps filling, rescan the previous chunks' enrollments for every patient: minutes
per chunk at 100,000 patients.) The subqueries sit on the patients scan, so a patient already
enrolled is skipped before any care-gap lookup.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ColumnElement, Select, exists, func, literal, or_, select
from sqlalchemy.orm import Session

from outreach.campaigns import CampaignFile
from outreach.plan.eligibility import eligible_patients
from outreach.plan.holdout import arm_column
from outreach.plan.shards import Chunk, Shard
from outreach.store import sql
from outreach.store.models import Enrollment, Patient

ENROLLMENT_COLUMNS = ["patient_id", "campaign_id", "cycle", "enrolled_on", "enrolled_at", "language", "arm"]


def enroll(
    session: Session, campaign: CampaignFile, on: dt.date, now: dt.datetime, chunk: Chunk | None = None
) -> int:
    """Enroll the chunk's (or, without one, every) newly eligible patient; idempotent, honours the
    cool-down (`re_enroll_after`; without it a patient is enrolled once). Returns how many."""
    prior = Enrollment.__table__.alias("prior")
    mine = (prior.c.campaign_id == campaign.id, prior.c.patient_id == Patient.id)
    last_on = select(func.max(prior.c.enrolled_on)).where(*mine).scalar_subquery()
    last_cycle = select(func.max(prior.c.cycle)).where(*mine).scalar_subquery()
    allowed: ColumnElement[bool] = last_on.is_(None)
    if campaign.re_enroll_after is not None:
        allowed = or_(allowed, last_on <= campaign.re_enroll_after.before(on))
    audience = eligible_patients(campaign, on).where(allowed)
    if chunk is not None:
        audience = audience.where(chunk.patients())
    cycle = func.coalesce(last_cycle, 0) + 1
    source = audience.with_only_columns(
        Patient.id,
        literal(campaign.id),
        cycle,
        literal(on),
        literal(now),
        Patient.language,
        arm_column(campaign, cycle, Patient.id, sql.dialect_name(session)),  # the holdout draw
    )
    statement = (
        sql.upsert(Enrollment, session)
        .from_select(ENROLLMENT_COLUMNS, source)
        .on_conflict_do_nothing()
        .execution_options(preserve_rowcount=True)  # an INSERT's count is otherwise not kept
    )
    return sql.rowcount(sql.connection(session).execute(statement))


def enroll_candidates(campaign: CampaignFile, on: dt.date, shard: Shard) -> Select[Any]:
    """The ids of the shard's patients that `enroll` would enroll now, as one query over the whole
    shard (anti-joins the database runs as hash joins): how a pass finds the chunks with work."""
    prior = Enrollment.__table__.alias("prior")
    blocking = [prior.c.campaign_id == campaign.id, prior.c.patient_id == Patient.id]
    if campaign.re_enroll_after is not None:
        blocking.append(prior.c.enrolled_on > campaign.re_enroll_after.before(on))
    return (
        eligible_patients(campaign, on)
        .where(shard.holds(Patient.phone), ~exists().where(*blocking))
        .with_only_columns(Patient.id)
    )
