"""Conversations, the inbox's rows: one per number that wrote to us (outreach.store.models
.conversation), with who has it, whether it is open, and what each person has read.

Rows are made from `inbound_messages` by `sync`, which the workspace calls before it reads: the
webhooks stay as they are (no extra statement on the hot path), and a reply is in the inbox at the
next page load or poll. A new reply reopens a closed conversation: the patient is waiting again.

Inbox order (DESIGN.md §12): conversations with an open hand-off first, then newest reply first,
a page at a time. Assign, close (with an outcome) and reopen are audited through
outreach.team.audit; closing also closes the number's open hand-offs, so `outreach handoffs list`
and the inbox agree.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from outreach.errors import UserError
from outreach.phones import mask
from outreach.store import sql
from outreach.store.models import (
    Conversation,
    ConversationRead,
    Enrollment,
    Handoff,
    InboundMessage,
    Patient,
    User,
)
from outreach.team.audit import audit

OPEN, CLOSED = "open", "closed"
PAGE_SIZE = 50
SNIPPET = 80
# Offered when closing, after the campaign's own outcomes (its reply rules').
GENERAL_OUTCOMES = ("answered", "appointment_booked", "called_back", "no_action_needed", "wrong_number")

_conversations = cast(Table, Conversation.__table__)
_NEW = sql.per_dialect(
    lambda name: sql.upsert(_conversations, name).on_conflict_do_nothing(index_elements=["phone"])
)
_BUMP = (
    update(_conversations)
    .where(
        _conversations.c.phone == bindparam("b_phone"), _conversations.c.last_inbound_id < bindparam("b_id")
    )
    .values(
        last_inbound_id=bindparam("b_id"),
        last_inbound_at=bindparam("b_at"),
        patient_id=func.coalesce(bindparam("b_patient"), _conversations.c.patient_id),
        campaign_id=func.coalesce(bindparam("b_campaign"), _conversations.c.campaign_id),
        status=OPEN,
        outcome=None,
        closed_at=None,
        closed_by=None,
    )
)


def sync(session: Session) -> int:
    """Bring conversations up to date with the replies stored since the last sync; returns how
    many numbers had new replies. Safe to run concurrently: inserts skip existing numbers and a
    bump only moves a conversation forward."""
    watermark = session.scalar(select(func.max(Conversation.last_inbound_id))) or 0
    latest = (
        select(func.max(InboundMessage.id))
        .where(InboundMessage.id > watermark)
        .group_by(InboundMessage.from_phone)
        .scalar_subquery()
    )
    patient = func.coalesce(InboundMessage.patient_id, Enrollment.patient_id)
    rows = session.execute(
        select(
            InboundMessage.id,
            InboundMessage.from_phone,
            InboundMessage.received_at,
            patient,
            Enrollment.campaign_id,
        )
        .outerjoin(Enrollment, Enrollment.id == InboundMessage.enrollment_id)
        .where(InboundMessage.id.in_(latest))
    ).all()
    if not rows:
        return 0
    conn = sql.connection(session)
    conn.execute(
        _NEW[conn.dialect.name],
        [
            {
                "public_id": secrets.token_urlsafe(12),
                "phone": r[1],
                "status": OPEN,
                "last_inbound_id": 0,
                "last_inbound_at": r[2],
            }
            for r in rows
        ],
    )
    conn.execute(
        _BUMP,
        [{"b_phone": r[1], "b_id": r[0], "b_at": r[2], "b_patient": r[3], "b_campaign": r[4]} for r in rows],
    )
    return len(rows)


@dataclass(frozen=True)
class Filters:
    campaign: str | None = None
    assignee: str | None = None  # "me", "none", or a user id as text
    status: str = OPEN  # open | closed | all
    page: int = 1


@dataclass(frozen=True)
class InboxRow:
    public_id: str
    first_name: str | None
    masked_phone: str
    campaign: str | None
    status: str
    assignee: str | None
    last_at: dt.datetime
    snippet: str
    handoff_open: bool
    unread: int


@dataclass(frozen=True)
class InboxPage:
    rows: list[InboxRow]
    total: int
    page: int
    pages: int
    unread_total: int  # conversations on this page with unread replies, for the page title


def _open_handoff_phones() -> Any:
    """Numbers with an open hand-off, as one subquery the inbox joins once (a hash join over the
    open hand-offs), rather than a probe per conversation."""
    return (
        select(InboundMessage.from_phone.label("phone"))
        .join(Handoff, Handoff.inbound_id == InboundMessage.id)
        .where(Handoff.status == OPEN)
        .distinct()
        .subquery("open_handoffs")
    )


def _where(filters: Filters, user_id: int) -> list[Any]:
    conditions: list[Any] = []
    if filters.status in (OPEN, CLOSED):
        conditions.append(Conversation.status == filters.status)
    if filters.campaign:
        conditions.append(Conversation.campaign_id == filters.campaign)
    if filters.assignee == "me":
        conditions.append(Conversation.assignee_id == user_id)
    elif filters.assignee == "none":
        conditions.append(Conversation.assignee_id.is_(None))
    elif filters.assignee and filters.assignee.isdigit():
        conditions.append(Conversation.assignee_id == int(filters.assignee))
    return conditions


def inbox(session: Session, filters: Filters, user_id: int) -> InboxPage:
    """One page of the inbox for `user_id` (whose unread counts are shown)."""
    conditions = _where(filters, user_id)
    total = session.scalar(select(func.count()).select_from(Conversation).where(*conditions)) or 0
    pages = max(1, -(-total // PAGE_SIZE))
    page = min(max(1, filters.page), pages)
    phones = _open_handoff_phones()
    handoff = (phones.c.phone.is_not(None)).label("handoff_open")
    found = session.execute(
        select(Conversation, handoff, Patient.first_name, User.email)
        .outerjoin(phones, phones.c.phone == Conversation.phone)
        .outerjoin(Patient, Patient.id == Conversation.patient_id)
        .outerjoin(User, User.id == Conversation.assignee_id)
        .where(*conditions)
        .order_by(handoff.desc(), Conversation.last_inbound_at.desc(), Conversation.id.desc())
        .limit(PAGE_SIZE)
        .offset((page - 1) * PAGE_SIZE)
    ).all()
    conversations = [row[0] for row in found]
    unread = _unread(session, conversations, user_id)
    snippets = _snippets(session, conversations)
    rows = [
        InboxRow(
            public_id=c.public_id,
            first_name=first_name,
            masked_phone=mask(c.phone),
            campaign=c.campaign_id,
            status=c.status,
            assignee=email,
            last_at=c.last_inbound_at,
            snippet=snippets.get(c.last_inbound_id, ""),
            handoff_open=bool(is_open),
            unread=unread.get(c.id, 0),
        )
        for c, is_open, first_name, email in found
    ]
    return InboxPage(rows, total, page, pages, sum(1 for r in rows if r.unread))


def _unread(session: Session, conversations: list[Conversation], user_id: int) -> dict[int, int]:
    """Replies after each person's read mark, for one page of conversations (one query)."""
    if not conversations:
        return {}
    read = (
        select(ConversationRead.inbound_id)
        .where(ConversationRead.conversation_id == Conversation.id, ConversationRead.user_id == user_id)
        .scalar_subquery()
    )
    counts = session.execute(
        select(Conversation.id, func.count(InboundMessage.id))
        .join(InboundMessage, InboundMessage.from_phone == Conversation.phone)
        .where(Conversation.id.in_([c.id for c in conversations]))
        .where(InboundMessage.id > func.coalesce(read, 0))
        .group_by(Conversation.id)
    ).all()
    return {conversation_id: count for conversation_id, count in counts}


def _snippets(session: Session, conversations: list[Conversation]) -> dict[int, str]:
    ids = [c.last_inbound_id for c in conversations]
    if not ids:
        return {}
    found = session.execute(select(InboundMessage.id, InboundMessage.body).where(InboundMessage.id.in_(ids)))
    return {i: (body if len(body) <= SNIPPET else body[: SNIPPET - 1] + "…") for i, body in found}


def by_public_id(session: Session, public_id: str) -> Conversation | None:
    return session.scalar(select(Conversation).where(Conversation.public_id == public_id))


def mark_read(session: Session, conversation: Conversation, user_id: int, now: dt.datetime) -> None:
    """Everything in the conversation up to its latest reply is read by `user_id`."""
    conn = sql.connection(session)
    table = cast(Table, ConversationRead.__table__)
    values = {
        "conversation_id": conversation.id,
        "user_id": user_id,
        "inbound_id": conversation.last_inbound_id,
        "read_at": now,
    }
    stmt = sql.upsert(table, conn).values(**values)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["conversation_id", "user_id"],
            set_={"inbound_id": stmt.excluded.inbound_id, "read_at": stmt.excluded.read_at},
        )
    )


def assign(
    session: Session, conversation: Conversation, assignee_id: int | None, *, actor: str, now: dt.datetime
) -> str | None:
    """Give the conversation to `assignee_id` (None: nobody); returns the assignee's email."""
    email = None
    if assignee_id is not None:
        user = session.get(User, assignee_id)
        if user is None or user.disabled or user.role == "viewer":
            raise UserError("that person cannot take conversations (unknown, disabled, or read-only)")
        email = user.email
    conversation.assignee_id = assignee_id
    audit(session, actor, "assign", f"conversation {conversation.public_id}", now, f"to {email or 'nobody'}")
    return email


def close(
    session: Session, conversation: Conversation, outcome: str, *, actor: str, actor_id: int, now: dt.datetime
) -> int:
    """Close with an outcome; the number's open hand-offs close with it. Returns how many did."""
    outcome = outcome.strip()
    if not outcome or len(outcome) > 64:
        raise UserError("choose an outcome to close the conversation with")
    if conversation.status == CLOSED:
        raise UserError("this conversation is already closed")
    conversation.status, conversation.outcome = CLOSED, outcome
    conversation.closed_at, conversation.closed_by = now, actor_id
    replies = select(InboundMessage.id).where(InboundMessage.from_phone == conversation.phone)
    closed = session.execute(
        update(Handoff)
        .where(Handoff.status == OPEN, Handoff.inbound_id.in_(replies))
        .values(status=CLOSED, closed_at=now, closed_by=actor[:100], note=f"closed in the inbox: {outcome}")
        .execution_options(synchronize_session=False)
    )
    audit(session, actor, "close", f"conversation {conversation.public_id}", now, f"outcome {outcome}")
    return sql.rowcount(closed)


def reopen(session: Session, conversation: Conversation, *, actor: str, now: dt.datetime) -> None:
    if conversation.status == OPEN:
        raise UserError("this conversation is already open")
    conversation.status, conversation.outcome = OPEN, None
    conversation.closed_at = conversation.closed_by = None
    audit(session, actor, "reopen", f"conversation {conversation.public_id}", now)


def colleagues(session: Session) -> list[tuple[int, str]]:
    """People who can take a conversation: enabled admins and coordinators."""
    found = session.execute(
        select(User.id, User.email)
        .where(User.disabled.is_(False), or_(User.role == "admin", User.role == "coordinator"))
        .order_by(User.email)
    )
    return [(i, e) for i, e in found]
