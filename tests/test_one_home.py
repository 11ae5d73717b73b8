"""Facts of the storage layer that used to be written in several places, each pinned to its one home:
the status sets, "when a message went out", the dialect helpers and the COPY path, and the Twilio
codes that record an opt-out."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from outreach.config import get_settings
from outreach.errors import UserError
from outreach.listen import consent, context, replies, status
from outreach.outcomes import counts, funnel
from outreach.plan import scheduler
from outreach.providers import twilio_codes
from outreach.providers.twilio import TwilioProvider
from outreach.sandbox import SandboxServer
from outreach.send import batch
from outreach.send.ratelimit import NoLimit
from outreach.store import sql, statuses
from outreach.store.db import session_scope
from outreach.store.models import Base, Campaign, Enrollment, Message, MessageKind, MessageStatus, Patient
from outreach.store.statuses import FINAL, RANK, WAITING, WAITING_OR_SENDING, WENT_OUT
from tests.factories import add_patient

ENGINE_ROOT = Path(__file__).resolve().parent.parent / "outreach"
PHONE = "+16175550101"
T0 = dt.datetime(2026, 3, 2, 15, 0)


def _engine_sources() -> dict[str, str]:
    return {str(path.relative_to(ENGINE_ROOT)): path.read_text() for path in ENGINE_ROOT.rglob("*.py")}


# --- status sets ---------------------------------------------------------------------------------


def test_the_report_and_the_reply_context_share_one_went_out_set() -> None:
    assert counts.WENT_OUT is statuses.WENT_OUT  # the report counts in outcomes/counts.py
    assert context.WENT_OUT is statuses.WENT_OUT


def test_each_pending_meaning_has_one_set_and_its_users_share_it() -> None:
    assert counts.WAITING_OR_SENDING is statuses.WAITING_OR_SENDING
    assert consent.WAITING is statuses.WAITING
    assert scheduler.WAITING is statuses.WAITING
    assert set(WAITING) == {MessageStatus.planned, MessageStatus.queued}
    assert set(WAITING_OR_SENDING) == set(WAITING) | {MessageStatus.sending}
    # `sending` may have gone out: both "pending" to the report and a candidate for a reply.
    assert set(WAITING_OR_SENDING) & set(WENT_OUT) == {MessageStatus.sending}


def test_status_sets_agree_with_the_forward_order() -> None:
    assert set(RANK) == set(MessageStatus)
    top = max(RANK.values())
    assert set(FINAL) == {s for s, rank in RANK.items() if rank == top}
    assert all(RANK[s] < RANK[MessageStatus.sending] for s in WAITING)
    assert not set(FINAL) & (set(WAITING_OR_SENDING) | {MessageStatus.unknown, MessageStatus.sent})
    assert status.RANK is statuses.RANK


def test_each_table_has_a_model_module_of_its_own() -> None:
    modules = [mapper.class_.__module__ for mapper in Base.registry.mappers]
    assert len(modules) == len(set(modules)) == len(Base.metadata.tables)
    assert all(module.startswith("outreach.store.models.") for module in modules)


def test_models_reexport_the_statuses_of_their_one_home() -> None:
    from outreach.store import models

    assert models.MessageStatus is statuses.MessageStatus
    assert models.MessageKind is statuses.MessageKind


@pytest.mark.parametrize("later", list(MessageStatus))
def test_a_reply_belongs_to_the_latest_message_that_went_out(session: Session, later: MessageStatus) -> None:
    """The reply context takes a message as "went out" exactly for WENT_OUT, and orders by
    went_out_at: an `unknown` row (no sent_at, a sending_at) later than a `sent` one wins."""
    earlier, latest = _two_enrollments(session)
    _outreach(session, earlier, MessageStatus.sent, sending_at=T0, sent_at=T0)
    _outreach(session, latest, later, sending_at=T0 + dt.timedelta(hours=1), sent_at=None)

    expected = latest if later in WENT_OUT else earlier
    assert context.latest_enrollment_id(session, PHONE) == expected


def test_went_out_at_is_sent_at_else_sending_at_in_python_and_in_sql(session: Session) -> None:
    enrollment, _ = _two_enrollments(session)
    accepted = _outreach(session, enrollment, MessageStatus.sent, sending_at=T0, sent_at=T0 + dt.timedelta(1))
    unsure = _outreach(session, enrollment, MessageStatus.unknown, sending_at=T0, sent_at=None, step="b")
    waiting = _outreach(session, enrollment, MessageStatus.planned, sending_at=None, sent_at=None, step="c")

    in_sql = {row.id: row.went_out_at for row in session.execute(select(Message.id, Message.went_out_at))}
    assert in_sql == {m.id: m.went_out_at for m in (accepted, unsure, waiting)}
    assert (accepted.went_out_at, unsure.went_out_at, waiting.went_out_at) == (T0 + dt.timedelta(1), T0, None)
    assert "coalesce(messages.sent_at, messages.sending_at)" in str(Message.went_out_at.compile())


def test_the_report_counts_exactly_waiting_or_sending_as_pending(engine: Engine) -> None:
    with session_scope(engine) as session:
        session.add(Campaign(id="c", name="C", content_hash="x"))
        for i, state in enumerate(MessageStatus):
            patient = add_patient(session, f"M{i}", phone=f"(617) 555-01{i:02d}")
            enrollment = Enrollment(patient_id=patient.id, campaign_id="c", enrolled_on=T0.date())
            session.add(enrollment)
            session.flush()
            _outreach(session, enrollment.id, state, sending_at=T0, sent_at=None)
    report = funnel.funnel(engine, on=T0.date())
    assert report.totals.pending == len(WAITING_OR_SENDING)


def test_an_opt_out_cancels_exactly_the_waiting_rows(session: Session) -> None:
    rows = {
        state: _outreach(session, None, state, sending_at=None, sent_at=None, step=f"s-{state}")
        for state in MessageStatus
    }
    change = consent.record_opt_out(session, PHONE, by="STOP", at=T0)
    session.expire_all()
    canceled = {state for state, row in rows.items() if row.cancel_reason == consent.CANCEL_REASON}
    assert canceled == set(WAITING)
    assert change.canceled == len(WAITING)


# --- dialect helpers -----------------------------------------------------------------------------


def test_upsert_builds_the_dialects_insert_and_refuses_others(engine: Engine) -> None:
    assert isinstance(sql.upsert(Message, "postgresql"), postgresql.Insert)
    assert isinstance(sql.upsert(Message, "sqlite"), sqlite.Insert)
    expected = postgresql.Insert if engine.dialect.name == "postgresql" else sqlite.Insert
    with session_scope(engine) as session:
        assert isinstance(sql.upsert(Message, session), expected)
    with engine.connect() as conn:
        assert isinstance(sql.upsert(Message, conn), expected)
    with pytest.raises(UserError, match="mysql is not supported"):
        sql.upsert(Message, "mysql")
    assert set(sql.per_dialect(lambda name: name)) == set(sql.DIALECTS)


def test_insert_or_skip_stores_once(engine: Engine) -> None:
    statement = sql.insert_or_skip(Campaign)
    with engine.begin() as conn:
        row = {"id": "c", "name": "C", "content_hash": "x", "loaded_at": T0}
        first = conn.scalar(statement[conn.dialect.name], row)
        again = conn.scalar(statement[conn.dialect.name], row)
    assert (first, again) == ("c", None)


def test_in_constants_writes_only_status_names_into_the_sql() -> None:
    clause = sql.in_constants(Message.status, WAITING)
    assert str(clause.compile()) == "messages.status IN ('planned', 'queued')"
    with pytest.raises(AssertionError):
        sql.in_constants(Message.status, ["x'); DROP TABLE messages; --"])


def test_the_session_helpers_live_only_in_the_storage_layer() -> None:
    for name in ("connection", "in_constants", "_on_conflict_do_nothing"):
        assert not any(hasattr(module, name) for module in (consent, context, replies)), name
    from outreach.store import db

    assert not hasattr(db, "insert_for") and not hasattr(db, "rowcount")


def test_only_the_storage_layer_picks_a_dialect_or_speaks_copy() -> None:
    """Dialect-specific INSERTs and psycopg's COPY are built in outreach/store/sql.py alone."""
    home = str(Path("store") / "sql.py")
    for relative, source in _engine_sources().items():
        if relative == home:
            continue
        assert "sqlalchemy.dialects" not in source, relative
        assert "driver_connection" not in source, relative
        assert "FROM STDIN" not in source, relative
        assert "coalesce(Message.sent_at, Message.sending_at)" not in source, relative


def test_copy_text_escapes_only_when_needed() -> None:
    assert sql.copy_text([]) == ""
    assert sql.copy_text([("a", "b"), ("c", "")]) == "a\tb\nc\t\n"
    assert sql.copy_text([("a\tb", "c\\d"), ("e\nf", "g\rh")]) == "a\\tb\tc\\\\d\ne\\nf\tg\\rh\n"


def test_staging_loads_text_and_rows_through_copy(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("COPY is PostgreSQL's")
    table = Base.metadata.tables["campaigns"]
    stage = sql.Staging(table, ("id", "name", "content_hash"))
    with engine.connect() as conn:
        stage.create(conn)
        stage.copy_text(conn, sql.copy_text([("a", "tab\there", ""), ("b", "back\\slash", "h")]))
        stage.copy_rows(conn, [("c", "line\nbreak", None)])
        got = conn.execute(stage.select()).all()
        conn.commit()
        assert conn.execute(text(f"SELECT count(*) FROM {stage.name}")).scalar() == 0  # empties at commit
    assert sorted(got) == [("a", "tab\there", None), ("b", "back\\slash", "h"), ("c", "line\nbreak", None)]


# --- Twilio codes --------------------------------------------------------------------------------


def test_the_sender_and_the_status_callbacks_share_one_set_of_opt_out_codes() -> None:
    assert batch.OPT_OUT_CODES is twilio_codes.OPT_OUT_CODES
    assert status.OPT_OUT_CODES is twilio_codes.OPT_OUT_CODES
    assert {21610, 30004} == twilio_codes.OPT_OUT_CODES
    assert status.ERROR_MESSAGES is twilio_codes.ERROR_MESSAGES


@pytest.mark.parametrize("code", sorted(twilio_codes.OPT_OUT_CODES))
def test_an_opt_out_code_on_create_records_an_opt_out(
    engine: Engine, twilio_env: SandboxServer, code: int
) -> None:
    with session_scope(engine) as session:
        refused = _outreach(session, None, MessageStatus.queued, sending_at=None, sent_at=None, kind="answer")
        later = _outreach(session, None, MessageStatus.planned, sending_at=None, sent_at=None, step="later")
    twilio_env.configure(reject={PHONE: code})
    settings = get_settings()
    sender = batch.Sender(
        engine, TwilioProvider(settings, timeout=5.0), NoLimit(), {}, settings, clock=lambda: T0
    )

    assert sender.send([refused.id]).failed == 1
    with session_scope(engine) as session:
        assert consent.is_opted_out(session, PHONE)
        assert session.get(Message, refused.id).error_code == code  # type: ignore[union-attr]
        assert session.get(Message, later.id).status == MessageStatus.canceled  # type: ignore[union-attr]


@pytest.mark.parametrize("code", sorted(twilio_codes.OPT_OUT_CODES))
def test_an_opt_out_code_on_a_status_callback_records_an_opt_out(session: Session, code: int) -> None:
    sent = _outreach(session, None, MessageStatus.sent, sending_at=T0, sent_at=T0)
    sent.provider_sid = "SM" + "1" * 32
    session.flush()
    assert status.apply_status(session, sent.provider_sid, "failed", code, T0) is status.Outcome.applied
    assert consent.is_opted_out(session, PHONE)


# --- builders ------------------------------------------------------------------------------------


def _two_enrollments(session: Session) -> tuple[int, int]:
    patient = add_patient(session, "P1", phone=PHONE)
    ids = []
    for campaign_id in ("first", "second"):
        session.add(Campaign(id=campaign_id, name=campaign_id, content_hash="x"))
        session.flush()
        enrollment = Enrollment(patient_id=patient.id, campaign_id=campaign_id, enrolled_on=T0.date())
        session.add(enrollment)
        session.flush()
        ids.append(enrollment.id)
    return ids[0], ids[1]


def _outreach(
    session: Session,
    enrollment_id: int | None,
    state: MessageStatus,
    *,
    sending_at: dt.datetime | None,
    sent_at: dt.datetime | None,
    step: str = "invite",
    kind: str = MessageKind.outreach,
) -> Message:
    row = Message(
        enrollment_id=enrollment_id,
        step_id=step,
        kind=kind,
        phone=PHONE if enrollment_id is None else _phone_of(session, enrollment_id),
        body="Hi",
        status=state,
        send_at=T0,
        queued_at=T0 if state != MessageStatus.planned else None,
        sending_at=sending_at,
        sent_at=sent_at,
    )
    session.add(row)
    session.flush()
    return row


def _phone_of(session: Session, enrollment_id: int) -> str:
    phone = session.scalar(
        select(Patient.phone)
        .join(Enrollment, Enrollment.patient_id == Patient.id)
        .where(Enrollment.id == enrollment_id)
    )
    assert phone is not None
    return phone
