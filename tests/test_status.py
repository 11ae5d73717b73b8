"""Status callbacks only move a message forward, whatever order and however often they arrive."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from sqlalchemy import Connection, Engine, event, select, update
from sqlalchemy.orm import Session

from outreach.listen import consent
from outreach.listen.status import Outcome, apply_status, reapply_recent, reapply_unmatched
from outreach.store.db import session_scope
from outreach.store.models import AuditEntry, Message, MessageKind, MessageStatus

SID = "SM" + "a" * 32
PHONE = "+16175550123"
T0 = dt.datetime(2026, 3, 2, 15, 0)


def _sent_message(session: Session, sid: str | None = SID, phone: str = PHONE) -> int:
    row = Message(
        enrollment_id=None,
        step_id=f"step-{sid}",
        kind=MessageKind.outreach,
        phone=phone,
        body="text",
        status=MessageStatus.sent,
        provider_sid=sid,
        provider_status="queued",
        send_at=T0,
        sending_at=T0,
        sent_at=T0,
    )
    session.add(row)
    session.flush()
    return row.id


def _row(session: Session, message_id: int) -> Message:
    session.expire_all()
    row = session.get(Message, message_id)
    assert row is not None
    return row


def _at(minutes: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def test_delivered_moves_a_sent_message_and_stamps_it(session: Session) -> None:
    message_id = _sent_message(session)

    assert apply_status(session, SID, "delivered", None, _at(2)) is Outcome.applied

    row = _row(session, message_id)
    assert (row.status, row.provider_status, row.delivered_at, row.sent_at) == (
        "delivered",
        "delivered",
        _at(2),
        T0,
    )


@pytest.mark.parametrize("order", list(itertools.permutations(["queued", "sent", "delivered"])))
def test_any_order_of_callbacks_ends_delivered(session: Session, order: tuple[str, ...]) -> None:
    message_id = _sent_message(session)

    for minute, status in enumerate(order, start=1):
        apply_status(session, SID, status, None, _at(minute))

    row = _row(session, message_id)
    assert (row.status, row.provider_status) == ("delivered", "delivered")
    assert row.delivered_at == _at(order.index("delivered") + 1)


def test_a_late_sent_never_overwrites_delivered(session: Session) -> None:
    message_id = _sent_message(session)
    apply_status(session, SID, "delivered", None, _at(1))

    assert apply_status(session, SID, "sent", None, _at(2)) is Outcome.stale

    row = _row(session, message_id)
    assert (row.status, row.provider_status, row.sent_at) == ("delivered", "delivered", T0)


def test_a_replay_changes_nothing(session: Session) -> None:
    message_id = _sent_message(session)
    assert apply_status(session, SID, "undelivered", 30003, _at(1)) is Outcome.applied
    before = _row(session, message_id)
    snapshot = (before.status, before.failed_at, before.error_code, before.error_message, before.updated_at)

    assert apply_status(session, SID, "undelivered", 30003, _at(5)) is Outcome.stale

    after = _row(session, message_id)
    assert (
        after.status,
        after.failed_at,
        after.error_code,
        after.error_message,
        after.updated_at,
    ) == snapshot


def test_failure_stores_code_and_a_readable_message(session: Session) -> None:
    message_id = _sent_message(session)

    apply_status(session, SID, "undelivered", 30003, _at(1))

    row = _row(session, message_id)
    assert (row.status, row.error_code, row.failed_at) == ("undelivered", 30003, _at(1))
    assert row.error_message == "unreachable destination handset"
    assert not consent.is_opted_out(session, PHONE)


def test_the_callbacks_own_error_message_is_kept(session: Session) -> None:
    message_id = _sent_message(session)

    apply_status(session, SID, "failed", 30008, _at(1), error_message="carrier said no")

    assert _row(session, message_id).error_message == "carrier said no"


@pytest.mark.parametrize("code", [21610, 30004])
def test_opt_out_error_codes_record_an_opt_out_for_the_number(session: Session, code: int) -> None:
    _sent_message(session)
    pending = Message(step_id="next", phone=PHONE, body="x", status=MessageStatus.queued, send_at=_at(60))
    session.add(pending)
    session.flush()

    apply_status(session, SID, "failed", code, _at(1))

    assert consent.is_opted_out(session, PHONE)
    assert _row(session, pending.id).status == "canceled"


def test_queued_after_sent_only_ever_refines_provider_status_forward(session: Session) -> None:
    message_id = _sent_message(session)
    apply_status(session, SID, "sent", None, _at(1))

    assert apply_status(session, SID, "queued", None, _at(2)) is Outcome.stale
    row = _row(session, message_id)
    assert (row.status, row.provider_status) == ("sent", "sent")


def test_a_failure_callback_behind_our_own_failure_only_moves_the_provider_status(session: Session) -> None:
    """Our status and the provider's move separately in one UPDATE: the part already there stays."""
    message_id = _sent_message(session)
    session.execute(
        update(Message)
        .where(Message.id == message_id)
        .values(status=MessageStatus.failed, failed_at=_at(1), error_code=30007, error_message="filtered")
    )

    assert apply_status(session, SID, "undelivered", 30003, _at(2)) is Outcome.applied

    row = _row(session, message_id)
    assert (row.status, row.provider_status, row.failed_at, row.error_code, row.error_message) == (
        "failed",
        "undelivered",
        _at(1),
        30007,
        "filtered",
    )
    assert row.updated_at == _at(2)


def test_an_unknown_status_value_is_ignored(session: Session) -> None:
    message_id = _sent_message(session)

    assert apply_status(session, SID, "teleported", None, _at(1)) is Outcome.ignored
    assert _row(session, message_id).status == "sent"


def test_a_callback_that_races_ahead_of_the_sender_is_applied_once_the_sid_is_recorded(
    session: Session,
) -> None:
    """The sender commits provider_sid after Twilio answers; callbacks may arrive before that."""
    message_id = _sent_message(session, sid=None)
    session.execute(update(Message).where(Message.id == message_id).values(status=MessageStatus.sending))

    assert apply_status(session, SID, "sent", None, _at(1), to=PHONE) is Outcome.unmatched
    assert apply_status(session, SID, "delivered", None, _at(2), to=PHONE) is Outcome.unmatched
    assert apply_status(session, SID, "delivered", None, _at(3), to=PHONE) is Outcome.stale  # replay
    kept = session.scalars(select(AuditEntry).where(AuditEntry.action == "status_unmatched")).all()
    assert [entry.subject for entry in kept] == [SID, SID]

    # The sender records the SID (its own "sent"), then re-applies what arrived early.
    session.execute(
        update(Message)
        .where(Message.id == message_id)
        .values(status=MessageStatus.sent, provider_sid=SID, sent_at=_at(1))
    )
    assert reapply_unmatched(session, SID) == 2  # "sent" refines provider_status, "delivered" moves it

    row = _row(session, message_id)
    assert (row.status, row.provider_status, row.delivered_at) == ("delivered", "delivered", _at(2))
    assert reapply_unmatched(session, SID) == 0


def test_an_unmatched_opt_out_error_still_records_consent_from_the_callbacks_number(
    session: Session,
) -> None:
    assert apply_status(session, SID, "failed", 21610, _at(1), to=PHONE) is Outcome.unmatched

    assert consent.is_opted_out(session, PHONE)


def test_the_sweeper_applies_early_callbacks_the_sender_did_not_pick_up(session: Session) -> None:
    early = _sent_message(session, sid=None)
    apply_status(session, SID, "delivered", None, _at(1), to=PHONE)
    apply_status(session, "SM" + "b" * 32, "delivered", None, _at(1))  # never matched: left alone
    session.execute(update(Message).where(Message.id == early).values(provider_sid=SID))

    assert reapply_recent(session, since=_at(0)) == 1
    assert reapply_recent(session, since=_at(0)) == 0
    assert _row(session, early).status == "delivered"


# --- a callback racing the sender's commit of the SID ----------------------------------------------


class _SenderCommit:
    """The worker's transaction that records the provider SID, committed at one chosen moment of a
    status callback: just before the first SELECT that follows the callback's first UPDATE.

    On PostgreSQL it is a second real connection that writes the SID before the callback starts and
    holds it uncommitted, which is exactly the fault run's race. SQLite lets one writer at a time
    (the callback's UPDATE would wait for the sender's commit, so the race cannot happen there); the
    sender's write is then made on the callback's own connection at that same moment, so the branch
    that handles the race is exercised on both databases.
    """

    def __init__(self, engine: Engine, callback: Connection, message_id: int, **values: object) -> None:
        self._statement = update(Message).where(Message.id == message_id).values(provider_sid=SID, **values)
        self._callback = callback
        self._shared = engine.dialect.name == "sqlite"
        self._sender = callback if self._shared else engine.connect()
        self._updated = False
        self.committed = False
        if not self._shared:
            self._sender.begin()
            self._sender.execute(self._statement)
        event.listen(callback, "before_cursor_execute", self._before)

    def _before(self, _conn: Connection, _cursor: object, statement: str, *_args: object) -> None:
        head = statement.lstrip().upper()
        if head.startswith("UPDATE MESSAGES"):
            self._updated = True
        elif head.startswith("SELECT") and self._updated and not self.committed:
            self.committed = True
            if self._shared:
                self._sender.execute(self._statement)
            else:
                self._sender.commit()

    def close(self) -> None:
        event.remove(self._callback, "before_cursor_execute", self._before)
        if not self._shared:
            self._sender.close()


def _race(
    engine: Engine, callback_status: str, **sender_values: object
) -> tuple[Outcome, Message, list[AuditEntry]]:
    """A message being sent (no SID yet, committed); the sender records the SID with
    `sender_values` while callback `callback_status` for that SID is being applied."""
    with session_scope(engine) as session:
        message_id = _sent_message(session, sid=None)
        session.execute(
            update(Message)
            .where(Message.id == message_id)
            .values(status=MessageStatus.sending, sent_at=None, provider_status=None)
        )
    with session_scope(engine) as session:
        sender = _SenderCommit(engine, session.connection(), message_id, **sender_values)
        try:
            outcome = apply_status(session, SID, callback_status, None, _at(2), to=PHONE)
        finally:
            sender.close()
        assert sender.committed, "the sender's commit never fell between the UPDATE and the SELECT"
    with session_scope(engine) as session:
        row = session.get(Message, message_id)
        assert row is not None
        kept = list(session.scalars(select(AuditEntry).where(AuditEntry.action == "status_unmatched")))
        session.expunge_all()
    return outcome, row, kept


@pytest.mark.parametrize(
    ("callback", "status", "provider_status"),
    [
        ("delivered", "delivered", "delivered"),
        ("sent", "sent", "sent"),
        ("undelivered", "undelivered", "undelivered"),
    ],
)
def test_a_callback_that_raced_the_senders_commit_is_applied_not_dropped_as_stale(
    engine: Engine, callback: str, status: str, provider_status: str
) -> None:
    """Fault run, reason 1: the UPDATE by SID ran before the sender committed the SID and matched
    nothing; the SELECT after it found the row and the callback was called stale and lost."""
    outcome, row, kept = _race(
        engine,
        callback,
        status=MessageStatus.sent,
        sent_at=_at(1),
        provider_status="queued",
        updated_at=_at(1),
    )

    assert outcome is Outcome.applied
    assert (row.status, row.provider_status, row.updated_at) == (status, provider_status, _at(2))
    assert row.sent_at == _at(1)  # the sender's own moment is kept
    assert kept == []  # applied, so nothing is left for the sweeper to re-apply


def test_a_truly_stale_callback_that_meets_the_senders_commit_stays_stale_and_changes_nothing(
    engine: Engine,
) -> None:
    """The sender committed the row already past the callback (here: delivered, as a reconcile
    found it): the second look must not move it back or touch it."""
    outcome, row, kept = _race(
        engine,
        "sent",
        status=MessageStatus.delivered,
        sent_at=_at(1),
        delivered_at=_at(1),
        provider_status="delivered",
        updated_at=_at(1),
    )

    assert outcome is Outcome.stale
    assert (row.status, row.provider_status, row.sent_at, row.delivered_at, row.updated_at) == (
        "delivered",
        "delivered",
        _at(1),
        _at(1),
        _at(1),
    )
    assert kept == []
