"""Campaign pause: a coordinator stops a campaign's sending and restarts it (DESIGN.md §3, §12).

The state lives in the database (`campaigns.paused_at`, `paused_by`), not in a worker's memory,
so every worker process and every planner sees it at its next statement, a restarted worker still
knows, and the web page and the CLI show the same thing. While a campaign is paused:

- the claim (outreach/send/claim.py) refuses its outreach rows: a task already in a worker's hands
  sends nothing, within one claim (seconds) of the pause;
- `pause` puts the campaign's `queued` rows back to `planned` (their send time kept), so nothing of
  it waits in the broker or is re-dispatched by the sweeper every pass; the enqueuer
  (outreach/plan/enqueue.py) and the sweeper leave its rows alone (`held_by_pause`);
- the planner enrolls and plans nothing for it (outreach/plan/scheduler.py, `paused_ids`).

Nothing is canceled by a pause: an opt-out, a closed gap or an ended campaign still cancel as
always, but the pause itself only waits. `resume` clears the state; the rows are due already, so
the next enqueue (beat's every few seconds, or the caller's own `enqueue_due`) hands them to the
workers, and the claim re-checks consent, the window and the cap as for any row.

Only campaign steps (kind `outreach`) wait: staff replies and answers to a patient's own reply
(including the HELP and STOP answers carriers require) go out while a campaign is paused.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, select, update
from sqlalchemy.orm import Session

from outreach.store import sql
from outreach.store.models import Campaign, Enrollment, Message, MessageKind, MessageStatus
from outreach.store.statuses import WAITING
from outreach.team.audit import audit

PAUSE = "campaign_pause"
RESUME = "campaign_resume"


@dataclass(frozen=True)
class PauseState:
    """A campaign's pause as the page and `campaigns list` show it."""

    paused_at: dt.datetime
    paused_by: str


@dataclass(frozen=True)
class PauseChange:
    """What `pause` or `resume` did: `changed` is False when the campaign was already in that
    state; `waiting` counts its planned and queued messages (held by a pause, released by a resume)."""

    campaign_id: str
    changed: bool
    waiting: int


def held_by_pause(kind: Any, enrollment_id: Any, *, many: bool = False) -> ColumnElement[bool]:
    """SQL: "this outbox row is a step of a paused campaign" (`kind`, `enrollment_id`: the row's
    columns). The one predicate the claim, the enqueuer and the sweeper share.

    Two shapes of one rule, for the database's sake: a statement over a handful of ids (the claim,
    10 rows) looks each row's campaign up by key; one that walks many rows (`many`: the enqueuer,
    the sweeper) asks once for the paused campaigns' enrollments (none, nearly always) instead of
    once per row, which measured 2-25 times slower in bench/pause.py."""
    paused = Campaign.paused_at.is_not(None)
    if many:
        return and_(
            kind == MessageKind.outreach,
            enrollment_id.in_(
                select(Enrollment.id).join(Campaign, Campaign.id == Enrollment.campaign_id).where(paused)
            ),
        )
    return and_(
        kind == MessageKind.outreach,
        exists().where(Enrollment.id == enrollment_id, Campaign.id == Enrollment.campaign_id, paused),
    )


def paused_ids(session: Session) -> set[str]:
    """Ids of the campaigns paused now: the planner skips them."""
    return set(session.scalars(select(Campaign.id).where(Campaign.paused_at.is_not(None))))


def pause_states(session: Session) -> dict[str, PauseState]:
    """Every paused campaign, with when and by whom."""
    rows = session.execute(
        select(Campaign.id, Campaign.paused_at, Campaign.paused_by).where(Campaign.paused_at.is_not(None))
    )
    return {row.id: PauseState(row.paused_at, row.paused_by or "") for row in rows}


def pause(session: Session, campaign_id: str, name: str, *, by: str, at: dt.datetime) -> PauseChange:
    """Pause `campaign_id` (a campaign file's id and name: the row is made if no pass has recorded
    it yet), put its queued rows back to `planned`, and audit it with `by`; in the caller's
    transaction, so the state, the rows and the audit entry commit together."""
    _ensure_row(session, campaign_id, name, at)
    changed = session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id, Campaign.paused_at.is_(None))
        .values(paused_at=at, paused_by=by[:100])
    )
    if sql.rowcount(changed) == 1:
        session.execute(
            update(Message)
            .where(
                Message.status == MessageStatus.queued,
                Message.kind == MessageKind.outreach,
                Message.enrollment_id.in_(_enrollments(campaign_id)),
            )
            .values(status=MessageStatus.planned, queued_at=None, updated_at=at)
        )
    waiting = waiting_count(session, campaign_id)
    if sql.rowcount(changed) == 1:
        audit(session, by, PAUSE, campaign_id, at, f"{waiting} planned or queued messages held")
    return PauseChange(campaign_id, sql.rowcount(changed) == 1, waiting)


def resume(session: Session, campaign_id: str, *, by: str, at: dt.datetime) -> PauseChange:
    """Resume `campaign_id` (not paused, or never recorded: nothing changes) and audit it with
    `by`. Its rows are `planned` and due: the next
    enqueue hands them over (the caller may run `enqueue_due` at once after committing)."""
    changed = session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id, Campaign.paused_at.is_not(None))
        .values(paused_at=None, paused_by=None)
    )
    waiting = waiting_count(session, campaign_id)
    if sql.rowcount(changed) == 1:
        audit(session, by, RESUME, campaign_id, at, f"{waiting} planned or queued messages released")
    return PauseChange(campaign_id, sql.rowcount(changed) == 1, waiting)


def waiting_count(session: Session, campaign_id: str) -> int:
    """The campaign's planned and queued outreach messages."""
    return (
        session.scalar(
            select(func.count())
            .select_from(Message)
            .where(
                Message.status.in_(WAITING),
                Message.kind == MessageKind.outreach,
                Message.enrollment_id.in_(_enrollments(campaign_id)),
            )
        )
        or 0
    )


def _enrollments(campaign_id: str) -> Any:
    return select(Enrollment.id).where(Enrollment.campaign_id == campaign_id)


def _ensure_row(session: Session, campaign_id: str, name: str, at: dt.datetime) -> None:
    """The `campaigns` row, made when no scheduler pass has recorded the campaign yet (its empty
    hash makes the next pass record the file's own)."""
    session.execute(
        sql.upsert(Campaign, session)
        .values(id=campaign_id, name=name[:200], content_hash="", loaded_at=at)
        .on_conflict_do_nothing(index_elements=["id"])
    )
