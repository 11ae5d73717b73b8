"""A conversation's whole thread in time order: campaign texts, the patient's replies, automatic
answers and staff messages, each outbound one with its delivery status (DESIGN.md §12).

Outbound rows that have not gone out are left out, except staff messages: a campaign step planned
for next week is not part of the conversation yet, but a staff reply waiting for the morning is,
and the page must say it waits.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from outreach.segments import count_segments
from outreach.store.models import Conversation, Enrollment, InboundMessage, Message, MessageKind, User
from outreach.store.statuses import WENT_OUT, MessageStatus

LIMIT = 200  # the latest items; older ones are in the report and the database
# Order at one instant (a simulated clock stamps a text, its reply and the answer alike): the
# campaign text, then the reply to it, then the answer to the reply and a person's message.
_SAME_INSTANT = {"outreach": 0, "reply": 1, "answer": 2, "staff": 3}


@dataclass(frozen=True)
class Item:
    at: dt.datetime
    direction: str  # "in" (the patient) or "out"
    kind: str  # outreach | answer | staff | reply
    body: str
    status: str  # the outbox status; "received" for replies
    detail: str  # who wrote it, which step, why it waits or was canceled
    message_id: int | None = None
    send_at: dt.datetime | None = None  # outbound: when it is due (a staff reply waiting for morning)

    @property
    def waiting(self) -> bool:
        """A staff reply held back by the patient's night: the page says until when."""
        return self.kind == MessageKind.staff and self.status == MessageStatus.planned


def thread(session: Session, conversation: Conversation) -> list[Item]:
    phone = conversation.phone
    shown = or_(
        Message.kind == MessageKind.staff,
        Message.status.in_([*WENT_OUT, MessageStatus.failed]),
    )
    when = func.coalesce(Message.sent_at, Message.sending_at, Message.planned_at)
    outbound = session.execute(
        select(Message, when, Enrollment.campaign_id, User.email)
        .outerjoin(Enrollment, Enrollment.id == Message.enrollment_id)
        .outerjoin(User, User.id == Message.author_id)
        .where(Message.phone == phone, shown)
        .order_by(when.desc())
        .limit(LIMIT)
    ).all()
    inbound = session.scalars(
        select(InboundMessage)
        .where(InboundMessage.from_phone == phone)
        .order_by(InboundMessage.received_at.desc())
        .limit(LIMIT)
    ).all()
    items = [_outbound(m, at, campaign, author) for m, at, campaign, author in outbound]
    items += [
        Item(r.received_at, "in", "reply", r.body, "received", r.classification or "", None) for r in inbound
    ]
    items.sort(key=lambda item: (item.at, _SAME_INSTANT.get(item.kind, 1)))
    return items[-LIMIT:]


def _outbound(message: Message, at: dt.datetime, campaign: str | None, author: str | None) -> Item:
    if message.kind == MessageKind.staff:
        detail = f"from {author or 'staff'}"
    elif message.kind == MessageKind.answer:
        detail = "automatic answer"
    else:
        detail = f"{campaign or 'campaign'} · {message.step_id}"
    return Item(at, "out", message.kind, message.body, message.status, detail, message.id, message.send_at)


def segments_label(body: str) -> str:
    """`2 segments · GSM-7 · 190 characters`: what a reply will cost, as it is typed."""
    counted = count_segments(body)
    noun = "segment" if counted.segments == 1 else "segments"
    return f"{counted.segments} {noun} · {counted.encoding} · {len(body)} characters"
