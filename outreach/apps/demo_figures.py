"""The demo's own figures: its live progress line and its closing `demo:` summary.

Counted straight from the tables (tests/test_demo.py counts them again with plain SQL), next to
the funnel report the demo also prints; `Figures.legend` says where the two use different words.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from sqlalchemy import Engine, func, or_, select

from outreach.store.db import session_scope
from outreach.store.models import (
    Enrollment,
    Handoff,
    InboundMessage,
    Message,
    MessageKind,
    MessageStatus,
    Patient,
    PhoneConsent,
)


@dataclass(frozen=True)
class Figures:
    """The live line and the closing summary, counted from the database.

    Message figures are campaign texts (kind `outreach`), not answers to replies: `planned` is every
    outbox row in any status, `sent` those the provider accepted (they have a sid), `delivered`
    those in status delivered. `replied` counts what the report's `replied` counts, enrollments
    that replied (an opt-out is not a reply there); `texts received` counts every inbound text
    (STOP, HELP, a second reply, a stranger's text), so it is the larger of the two. `opted out`
    are numbers whose latest consent change is an opt-out, `hand-offs` every hand-off, `answers`
    texts sent back to replies.
    """

    patients: int
    enrolled: int
    planned: int
    sent: int
    delivered: int
    replied: int
    opted_out: int
    handoffs: int
    texts_received: int
    answers: int

    def line(self) -> str:
        return self._join([f.name for f in fields(self)])

    def live(self) -> str:
        """The progress bar's short form."""
        return self._join(["planned", "sent", "delivered", "replied", "opted_out", "handoffs"])

    @staticmethod
    def legend() -> str:
        """Why `replied` and `texts received` differ, printed under the summary line."""
        return (
            "replied: enrollments that replied, as in the report; texts received: every text "
            "patients sent, opt-outs and second replies included"
        )

    def _join(self, names: list[str]) -> str:
        labels = {"opted_out": "opted out", "handoffs": "hand-offs", "texts_received": "texts received"}
        return ", ".join(f"{labels.get(name, name)} {getattr(self, name)}" for name in names)


def count_figures(engine: Engine) -> Figures:
    outreach_rows = select(func.count()).select_from(Message).where(Message.kind == MessageKind.outreach)
    with session_scope(engine) as s:

        def count(statement: object) -> int:
            return int(s.scalar(statement) or 0)  # type: ignore[call-overload]

        return Figures(
            patients=count(select(func.count()).select_from(Patient)),
            enrolled=count(select(func.count()).select_from(Enrollment)),
            planned=count(outreach_rows),
            sent=count(outreach_rows.where(Message.provider_sid.is_not(None))),
            delivered=count(outreach_rows.where(Message.status == MessageStatus.delivered)),
            replied=count(
                select(func.count()).select_from(Enrollment).where(Enrollment.replied_at.is_not(None))
            ),
            opted_out=count(
                select(func.count())
                .select_from(PhoneConsent)
                .where(
                    PhoneConsent.opted_out_at.is_not(None),
                    or_(
                        PhoneConsent.opted_in_at.is_(None),
                        PhoneConsent.opted_in_at < PhoneConsent.opted_out_at,
                    ),
                )
            ),
            handoffs=count(select(func.count()).select_from(Handoff)),
            texts_received=count(select(func.count()).select_from(InboundMessage)),
            answers=count(
                select(func.count()).select_from(Message).where(Message.kind == MessageKind.answer)
            ),
        )
