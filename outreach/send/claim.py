"""The claim: `queued → sending` in one conditional UPDATE, the only door to the provider.

Only rows still `queued` match, so of any number of workers holding the same ids (two ticks, a
redelivered task, a sweeper's re-dispatch) exactly one wins each row: DESIGN.md §7, invariant 1.
Rows whose sender is held (outreach.send.holds) do not match either: they stay `queued`, untouched,
until the hold is lifted, except the one row a due probe lets through (`claim_probe`). Steps of a
paused campaign (outreach.send.pause) match neither: a pause stops every worker at its next claim.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import ReturningUpdate

from outreach.listen import consent
from outreach.send import holds, pause, reachability
from outreach.store.models import Enrollment, Message, MessageStatus, Patient


@dataclass(frozen=True)
class Claimed:
    """A row this worker won, with what sending it needs."""

    id: int
    phone: str
    body: str
    segments: int
    kind: str
    attempts: int
    campaign_id: str | None
    timezone: str | None
    phone_zones: str | None
    postal_code: str | None
    opted_out: bool
    unreachable: bool


_outbox = cast(Table, Message.__table__)


def _claim_statement(*, unless_held: bool) -> ReturningUpdate[tuple[int]]:
    conditions = [
        _outbox.c.id.in_(bindparam("ids", expanding=True)),
        _outbox.c.status == MessageStatus.queued,
        ~pause.held_by_pause(_outbox.c.kind, _outbox.c.enrollment_id),
    ]
    if unless_held:
        conditions.append(~holds.held(holds.SENDER, _outbox.c.phone))
    return (
        update(_outbox)
        .where(*conditions)
        .values(
            status=MessageStatus.sending,
            sending_at=bindparam("now"),
            attempts=_outbox.c.attempts + 1,
            updated_at=bindparam("now"),
        )
        .returning(_outbox.c.id)
    )


# Built once: the sender runs them for every chunk, and a statement built per call costs more
# worker CPU than its round trip.
_CLAIM = _claim_statement(unless_held=True)
_CLAIM_PROBE = _claim_statement(unless_held=False)
_DETAILS = (
    select(
        Message.id,
        Message.phone,
        Message.body,
        Message.segments,
        Message.kind,
        Message.attempts,
        Enrollment.campaign_id,
        Patient.timezone,
        Patient.phone_zones,
        Patient.postal_code,
        consent.number_opted_out(Message.phone).label("opted_out"),
        reachability.number_unreachable(Message.phone).label("unreachable"),
    )
    .outerjoin(Enrollment, Enrollment.id == Message.enrollment_id)
    .outerjoin(Patient, Patient.id == Enrollment.patient_id)
    .where(Message.id.in_(bindparam("ids", expanding=True)))
    .order_by(Message.id)
)
_STILL_QUEUED = select(Message.id, Message.phone).where(
    Message.id.in_(bindparam("ids", expanding=True)),
    Message.status == MessageStatus.queued,
    ~pause.held_by_pause(Message.kind, Message.enrollment_id),  # a pause is no hold: no probe
)


def claim(session: Session, ids: Sequence[int], now: dt.datetime, sender: str = "default") -> list[Claimed]:
    """`queued → sending` for those of `ids` still queued and not held for `sender`, exactly one
    winner across processes; returns the rows this caller won, with what sending them needs."""
    won = session.execute(_CLAIM, {"ids": list(ids), "now": now, "sender": sender}).all()
    return _details(session, [row.id for row in won])


def claim_probe(session: Session, message_id: int, now: dt.datetime) -> list[Claimed]:
    """Claim one held row for a probe (the caller has taken the hold's probe)."""
    won = session.execute(_CLAIM_PROBE, {"ids": [message_id], "now": now}).all()
    return _details(session, [row.id for row in won])


def still_queued(session: Session, ids: Sequence[int]) -> list[tuple[int, str]]:
    """(id, phone) of those of `ids` still `queued` (a paused campaign's aside): after a claim,
    the rows a hold kept back."""
    return [(row.id, row.phone) for row in session.execute(_STILL_QUEUED, {"ids": list(ids)})]


def _details(session: Session, ids: list[int]) -> list[Claimed]:
    if not ids:
        return []
    return [Claimed(**row._asdict()) for row in session.execute(_DETAILS, {"ids": ids})]
