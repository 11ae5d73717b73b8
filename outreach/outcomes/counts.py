"""The grouped queries behind the funnel (outreach/outcomes/funnel.py): every figure counted by the
database, a few GROUP BY queries in all, so the report costs the same for ten patients or ten
million. Each family fills `cells`, keyed (campaign, language, step, variant); a figure that
belongs to an enrollment rather than to a text is in the cell whose step is None.

Crediting: a reply, an activation, a closed care gap or a click is credited to one message of the
enrollment (the latest that went out before the reply or activation; the closure's credited
message; the first message whose link was clicked), and through it to that message's step and
variant. An opt-out is credited to the last message, of any campaign, that reached the number.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeAlias

from sqlalchemy import ColumnElement, Select, case, func, or_, select
from sqlalchemy.orm import Session

from outreach.listen.optouts import STAFF
from outreach.store.models import (
    Activation,
    EndReason,
    Enrollment,
    Handoff,
    LinkClick,
    Message,
    MessageKind,
    MessageStatus,
    PhoneConsent,
)
from outreach.store.statuses import WAITING_OR_SENDING, WENT_OUT

AnySelect: TypeAlias = "Select[*tuple[Any, ...]]"
# (campaign id, language, step id or None, variant id or None)
Key = tuple[str, str, str | None, str | None]


class Cell(Protocol):
    """What a family adds to: the fields of funnel.Summary the queries fill."""

    enrolled: int
    planned: int
    pending: int
    sent: int
    delivered: int
    undelivered: int
    failed: int
    canceled: int
    unknown: int
    replied: int
    engaged: int
    activated: int
    clicked: int
    gap_closed: int
    opted_out: int
    handoffs_open: int
    handoffs_closed: int
    failed_codes: Any
    undelivered_codes: Any
    cancel_reasons: Any
    opted_out_by: Any
    sent_days: Any
    outcomes: Any
    ended: Any


CellOf = Callable[[Key], Cell]


def count_all(
    session: Session, cell: CellOf, scope: list[ColumnElement[bool]], sent_day: ColumnElement[Any]
) -> None:
    """Fill the cells (`cell(key)` finds or makes one) with every figure of the funnel. `sent_day`
    (outreach/outcomes/daily.py) is the day a text counts for in the daily figures, or NULL: it is
    grouped in the same pass over the outbox, which is the report's largest table."""
    _count_enrolled(session, cell, scope)
    _count_outbox(session, cell, scope, sent_day)
    _count_engagement(session, cell, scope)
    _count_outcomes(session, cell, scope)
    _count_endings(session, cell, scope)


def went_out() -> ColumnElement[bool]:
    return or_(Message.status.in_(WENT_OUT), Message.provider_sid.is_not(None))


def _credited(enrollment_id: Any, moment: Any) -> Any:
    """The id of the enrollment's latest outreach message that went out at or before `moment`."""
    return (
        select(Message.id)
        .where(
            Message.enrollment_id == enrollment_id,
            Message.kind == MessageKind.outreach,
            went_out(),
            Message.went_out_at <= moment,
        )
        .order_by(Message.went_out_at.desc(), Message.id.desc())
        .limit(1)
        .scalar_subquery()
    )


def _by_message(credited: AnySelect) -> AnySelect:
    """Count rows of `credited` (campaign_id, language, message_id) per the message's step and
    variant (both None when no message is credited), grouped over plain subquery columns, which is
    what PostgreSQL accepts as the same expression in GROUP BY. Step and variant are looked up by
    primary key for each credited row: a join let PostgreSQL hash the whole outbox (seconds at a
    million texts) for the few rows credited."""
    inner = credited.subquery()
    step = select(Message.step_id).where(Message.id == inner.c.message_id).scalar_subquery()
    variant = select(Message.variant).where(Message.id == inner.c.message_id).scalar_subquery()
    return grouped(
        select(inner.c.campaign_id, inner.c.language, step.label("step"), variant.label("variant"))
    )


def grouped(stmt: AnySelect) -> AnySelect:
    inner = stmt.subquery()
    columns = list(inner.c)
    return select(*columns, func.count()).group_by(*columns)


def _count_enrolled(session: Session, cell: CellOf, scope: list[ColumnElement[bool]]) -> None:
    enrolled = select(Enrollment.campaign_id, Enrollment.language, func.count()).where(*scope)
    for campaign, language, n in session.execute(
        enrolled.group_by(Enrollment.campaign_id, Enrollment.language)
    ):
        cell((campaign, language, None, None)).enrolled += n


def _count_outbox(
    session: Session, cell: CellOf, scope: list[ColumnElement[bool]], sent_day: ColumnElement[Any]
) -> None:
    messages = (
        select(
            Enrollment.campaign_id,
            Enrollment.language,
            Message.step_id,
            Message.variant,
            Message.status,
            Message.provider_sid.is_not(None).label("accepted"),
            Message.error_code,
            Message.cancel_reason,
            sent_day.label("sent_day"),
        )
        .select_from(Message)
        .join(Enrollment, Message.enrollment_id == Enrollment.id)
        .where(Message.kind == MessageKind.outreach, *scope)
    )
    for campaign, language, step, variant, status, accepted, code, reason, day, n in session.execute(
        grouped(messages)
    ):
        target = cell((campaign, language, step, variant))
        _count_messages(target, status, bool(accepted), code, reason, n)
        if day is not None:
            target.sent_days[day] += n


def _count_engagement(session: Session, cell: CellOf, scope: list[ColumnElement[bool]]) -> None:
    """Replies (engagement), activations, clicks, closed gaps and opt-outs, each credited to a text."""
    replied = select(
        Enrollment.campaign_id,
        Enrollment.language,
        _credited(Enrollment.id, Enrollment.replied_at).label("message_id"),
    ).where(Enrollment.replied_at.is_not(None), *scope)
    for campaign, language, step, variant, n in session.execute(_by_message(replied)):
        target = cell((campaign, language, step, variant))
        target.replied += n
        target.engaged += n

    activated = (
        select(
            Enrollment.campaign_id,
            Enrollment.language,
            _credited(Activation.enrollment_id, Activation.activated_at).label("message_id"),
        )
        .select_from(Activation)
        .join(Enrollment, Activation.enrollment_id == Enrollment.id)
        .where(*scope)
    )
    for campaign, language, step, variant, n in session.execute(_by_message(activated)):
        cell((campaign, language, step, variant)).activated += n

    # Each enrollment's first clicked link, found from the (few) clicks rather than probed for on
    # every enrollment: a correlated subquery per enrollment cost seconds at a million enrollments.
    first_click = (
        select(
            LinkClick.enrollment_id,
            LinkClick.message_id,
            func.row_number()
            .over(
                partition_by=LinkClick.enrollment_id,
                order_by=(LinkClick.first_click_at, LinkClick.message_id),
            )
            .label("nth"),
        )
        .where(LinkClick.clicks > 0)
        .subquery()
    )
    clicked = (
        select(Enrollment.campaign_id, Enrollment.language, first_click.c.message_id.label("message_id"))
        .select_from(first_click)
        .join(Enrollment, Enrollment.id == first_click.c.enrollment_id)
        .where(first_click.c.nth == 1, *scope)
    )
    for campaign, language, step, variant, n in session.execute(_by_message(clicked)):
        cell((campaign, language, step, variant)).clicked += n

    closed = select(
        Enrollment.campaign_id, Enrollment.language, Enrollment.credited_message_id.label("message_id")
    ).where(Enrollment.end_reason == EndReason.gap_closed, *scope)
    for campaign, language, step, variant, n in session.execute(_by_message(closed)):
        cell((campaign, language, step, variant)).gap_closed += n

    for campaign, language, step, variant, by, n in session.execute(_opt_outs(scope)):
        target = cell((campaign, language, step, variant))
        target.opted_out += n
        target.opted_out_by[by] += n


def _count_outcomes(session: Session, cell: CellOf, scope: list[ColumnElement[bool]]) -> None:
    """What the patients asked for (a reply rule's outcome) and why enrollments ended."""
    for column, counter in ((Enrollment.outcome, "outcomes"), (Enrollment.end_reason, "ended")):
        rows = select(Enrollment.campaign_id, Enrollment.language, column).where(column.is_not(None), *scope)
        for campaign, language, name, n in session.execute(grouped(rows)):
            getattr(cell((campaign, language, None, None)), counter)[name] += n


def _count_endings(session: Session, cell: CellOf, scope: list[ColumnElement[bool]]) -> None:
    """The hand-offs the enrollments raised, open and closed."""
    handoffs = (
        select(Enrollment.campaign_id, Enrollment.language, Handoff.status)
        .select_from(Handoff)
        .join(Enrollment, Handoff.enrollment_id == Enrollment.id)
        .where(*scope)
    )
    for campaign, language, status, n in session.execute(grouped(handoffs)):
        target = cell((campaign, language, None, None))
        if status == "open":
            target.handoffs_open += n
        else:
            target.handoffs_closed += n


def _count_messages(
    target: Cell, status: str, accepted: bool, code: int | None, reason: str | None, n: int
) -> None:
    target.planned += n
    if accepted:
        target.sent += n
    if status in WAITING_OR_SENDING:
        target.pending += n
    elif status == MessageStatus.delivered:
        target.delivered += n
    elif status == MessageStatus.undelivered:
        target.undelivered += n
        target.undelivered_codes[_code(code)] += n
    elif status == MessageStatus.failed:
        target.failed += n
        target.failed_codes[_code(code)] += n
    elif status == MessageStatus.canceled:
        target.canceled += n
        target.cancel_reasons[reason or "none"] += n
    elif status == MessageStatus.unknown:
        target.unknown += n


def _code(code: int | None) -> str:
    return "none" if code is None else str(code)


def opt_out_how() -> ColumnElement[str]:
    """How a number opted out, as the report groups it: the keyword (STOP, ...) or the provider's
    error (twilio:21610) as recorded; a staff change is just "staff" (its free-text reason stays in
    the audit log and off the report); "none" when nothing was recorded."""
    by = PhoneConsent.opted_out_by
    return case((by.like(f"{STAFF}%"), STAFF), else_=func.coalesce(by, "none"))


def _opt_outs(scope: list[ColumnElement[bool]]) -> AnySelect:
    """Opted-out numbers per (campaign, language, step, variant) of the latest message that reached
    them before the opt-out, and how they opted out: one number, one credited message."""
    last = (
        select(Message.id)
        .where(
            Message.phone == PhoneConsent.phone,
            Message.kind == MessageKind.outreach,
            Message.enrollment_id.is_not(None),
            went_out(),
            Message.went_out_at <= PhoneConsent.opted_out_at,
        )
        .order_by(Message.went_out_at.desc(), Message.id.desc())
        .limit(1)
        .correlate(PhoneConsent)
        .scalar_subquery()
    )
    credited = (
        select(last.label("message_id"), opt_out_how().label("how"))
        .where(PhoneConsent.opted_out_at.is_not(None))
        .subquery()
    )
    columns = (Enrollment.campaign_id, Enrollment.language, Message.step_id, Message.variant, credited.c.how)
    return (
        select(*columns, func.count())
        .select_from(credited)
        .join(Message, Message.id == credited.c.message_id)
        .join(Enrollment, Message.enrollment_id == Enrollment.id)
        .where(*scope)
        .group_by(*columns)
    )


def link_hits(session: Session, scope: list[ColumnElement[bool]]) -> dict[str, dict[str, int]]:
    """Per campaign, every hit on its tracked links: clicks and previews (HEAD, fetchers, on delivery)."""
    rows = (
        select(Enrollment.campaign_id, func.sum(LinkClick.clicks), func.sum(LinkClick.previews))
        .select_from(LinkClick)
        .join(Enrollment, Enrollment.id == LinkClick.enrollment_id)
        .where(*scope)
        .group_by(Enrollment.campaign_id)
    )
    return {
        campaign: {"clicks": int(clicks or 0), "previews": int(previews or 0)}
        for campaign, clicks, previews in session.execute(rows)
    }
