"""Outbox statuses and kinds, and every named set of statuses the code asks about.

Each set used to be written where it was needed, and the copies drifted: "pending" meant
(planned, queued) to the opt-out and (planned, queued, sending) to the report, and "went out" had
two names. One name per meaning here, next to the statuses themselves, so a new status is placed
in every set at once and a reader can see which meaning a module asks for. When a row went out
(`coalesce(sent_at, sending_at)`) is `Message.went_out_at`, on the model, because it reads the
model's columns.
"""

from __future__ import annotations

import enum


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


class MessageKind(enum.StrEnum):
    outreach = "outreach"  # a campaign step: counts toward the frequency cap
    answer = "answer"  # an answer to the patient's own reply: does not count
    staff = "staff"  # written by a person in the workspace: not capped, only the 08-21 limit applies


# In the outbox and not yet claimed by a sender: the rows an opt-out, an ended campaign or a reply
# can still cancel (a claimed row is past that point; the sender re-checks consent itself).
WAITING = (MessageStatus.planned, MessageStatus.queued)
# Waiting, or claimed and being handed to the provider now: what the report counts as `pending`.
WAITING_OR_SENDING = (*WAITING, MessageStatus.sending)
# Rows that went (or may have gone) out: the candidates a reply or an opt-out is credited to, the
# latest of them by `Message.went_out_at` first.
WENT_OUT = (
    MessageStatus.sending,
    MessageStatus.unknown,
    MessageStatus.sent,
    MessageStatus.delivered,
    MessageStatus.undelivered,
)
# Rows that reached the patient as far as we know (accepted, and not reported failed): what a closed
# care gap is credited to (outreach/outcomes/closure.py) and what a tracked link can come from.
REACHED = (MessageStatus.sent, MessageStatus.delivered)
# Nothing moves these rows any more: the provider's last word, or our own cancel.
FINAL = (
    MessageStatus.delivered,
    MessageStatus.undelivered,
    MessageStatus.failed,
    MessageStatus.canceled,
)

# Our outbox statuses by progress, for forward-only updates. `unknown` sits with `sending`: both
# wait for the provider's word; every FINAL status ranks highest.
RANK: dict[str, int] = {
    MessageStatus.planned: 0,
    MessageStatus.queued: 1,
    MessageStatus.sending: 2,
    MessageStatus.unknown: 2,
    MessageStatus.sent: 3,
    MessageStatus.delivered: 4,
    MessageStatus.undelivered: 4,
    MessageStatus.failed: 4,
    MessageStatus.canceled: 4,
}
