"""Planning due steps: each open enrollment whose step has come due gets its outbox row, rendered
in the patient's language and placed at the first slot the window and the frequency cap allow.

Linear in the rows planned, and per chunk (outreach/plan/shards.py):

* the due rows come from one query per step, with consent and "still eligible" evaluated for the
  due rows only (an enrollment made by this very pass is eligible by construction, so its
  eligibility is not evaluated again);
* a text is rendered once per (step, language) with everything but the first name filled in
  (`render_parts`), and segments are counted once per distinct first name;
* the frequency cap's state is read once per chunk, for every number of the chunk's patients by
  one join, and kept up to date in memory as rows are placed (`Pacer`);
* rows go in with COPY through a staging table on PostgreSQL (executemany on SQLite), each insert
  skipping rows that already exist.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Container, Sequence
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, case, exists, null, select, true
from sqlalchemy.orm import Session

from outreach.campaigns import CampaignFile, Step, render_parts
from outreach.campaigns.texts import tracked_url
from outreach.config import Settings
from outreach.listen.consent import number_opted_out
from outreach.outcomes import links
from outreach.plan.eligibility import eligible_patients
from outreach.plan.pacing import Pacer, Recipient
from outreach.plan.shards import EVERY_BUCKET, Chunk, Shard
from outreach.plan.variants import variant_for
from outreach.plan.windows import patient_zones, strict_hours
from outreach.segments import count_segments
from outreach.store import sql
from outreach.store.models import Arm, Enrollment, Message, MessageKind, MessageStatus, Patient

OUTBOX_COLUMNS = (
    "enrollment_id",
    "step_id",
    "kind",
    "phone",
    "body",
    "segments",
    "status",
    "send_at",
    "attempts",
    "planned_at",
    "updated_at",
    "canceled_at",
    "cancel_reason",
    "variant",
    "link_token",
)
# Where a text's tracked link goes until a row's own URL replaces it (no campaign text has a NUL).
_LINK_MARK = "\x00link\x00"
_STAGING = sql.Staging(Message.__table__, OUTBOX_COLUMNS)  # type: ignore[arg-type]
_CANCELED = MessageStatus.canceled.value
_OUTREACH = MessageKind.outreach.value


class StepPlanner:
    """Plans the due steps of one chunk, campaign after campaign, with one frequency-cap state, so
    a number shared by several patients or reached by several campaigns is paced across all of
    them."""

    def __init__(
        self, session: Session, chunk: Chunk | None, *, on: dt.date, now: dt.datetime, settings: Settings
    ) -> None:
        self.session, self.chunk, self.on, self.now, self.settings = session, chunk, on, now, settings
        self.pacer = Pacer(settings.daily_cap, settings.weekly_cap)
        self._paced = False
        self._texts: dict[tuple[str, str, str, str], _Text] = {}
        self._recipients: dict[tuple[Any, ...], tuple[tuple[str, ...], bool]] = {}
        self._due_days: dict[tuple[int, dt.date], dt.date] = {}

    def plan(self, campaign: CampaignFile, with_work: Container[str] | None = None) -> tuple[int, int]:
        """Outbox rows for every step of `campaign` that has come due; returns (planned, canceled).

        `with_work`, when given, names the steps that may have due rows in this chunk (the
        scheduler's search, `scheduler.plan_chunk`): the others are not asked, unless the step
        before got rows here for an enrollment old enough for this one to be due as well."""
        planned = canceled = 0
        oldest: dt.date | None = None  # the earliest enrollment day the previous step got rows of here
        for index, step in enumerate(campaign.steps):
            cutoff = step.after.before(self.on)
            if with_work is not None and step.id not in with_work and (oldest is None or oldest > cutoff):
                oldest = None
                continue
            previous = campaign.steps[index - 1].id if index else None
            # Core, not the ORM session: plain column rows, without the ORM's per-row loading
            rows = sql.connection(self.session).execute(self._due_query(campaign, step, previous)).all()
            oldest = min((row[1] for row in rows), default=None)  # enrolled_on
            if not rows:
                continue
            if not self._paced:
                self._load_pacing()
            values = self._outbox_rows(rows, campaign, step, previous)
            step_canceled = sum(1 for value in values if value[6] == _CANCELED)
            canceled += step_canceled
            planned += len(values) - step_canceled
            self._insert(values)
        return planned, canceled

    def _due_query(self, campaign: CampaignFile, step: Step, previous: str | None) -> Select[Any]:
        """The open enrollments whose `step` has come due on `on` and has no outbox row yet, with
        what deciding and rendering it needs (the step is planned only once the previous step's
        row exists, whose status is then the last column; NULL for a first step).

        The outbox look-ups are scalar subqueries through its (enrollment, step) key, one probe per
        enrollment of the chunk: as joins, PostgreSQL without fresh statistics on the outbox (which
        this pass fills) hashed every row of the step, all campaigns' chunks, for each chunk."""
        audience = eligible_patients(campaign, self.on).whereclause
        still_eligible = case(
            (Enrollment.enrolled_at == self.now, true()), else_=audience if audience is not None else true()
        )
        planned = (
            select(Message.id)
            .where(Message.enrollment_id == Enrollment.id, Message.step_id == step.id)
            .limit(1)
        )
        columns: list[Any] = [
            Enrollment.id,
            Enrollment.enrolled_on,
            Enrollment.replied_at,
            Enrollment.language,
            Patient.first_name,
            Patient.phone,
            Patient.phone_zones,
            Patient.timezone,
            Patient.postal_code,
            number_opted_out(Patient.phone).label("opted_out"),
            still_eligible.label("eligible"),
        ]
        query = (
            select(*columns)
            .join(Patient, Patient.id == Enrollment.patient_id)
            .where(
                Enrollment.campaign_id == campaign.id,
                Enrollment.ended_at.is_(None),
                Enrollment.arm == Arm.treated,  # a holdout is never texted (outreach/plan/holdout.py)
                Enrollment.enrolled_on <= step.after.before(self.on),
                planned.scalar_subquery().is_(None),
            )
        )
        if self.chunk is not None:
            query = query.where(self.chunk.ids(Enrollment.patient_id), self.chunk.patients())
        if previous is not None:
            prev = Message.__table__.alias("prev")
            status = (
                select(prev.c.status)
                .where(prev.c.enrollment_id == Enrollment.id, prev.c.step_id == previous)
                .scalar_subquery()
            )
            return query.add_columns(status.label("status")).where(status.is_not(None))
        return query.add_columns(null().label("status"))

    def _load_pacing(self) -> None:
        """The outreach already placed to the chunk's numbers, by one join (not a query per number):
        on PostgreSQL a LATERAL probe of the outbox's (phone, send_at) index per number, which the
        planner cannot turn into a scan of the whole outbox."""
        phones = select(Patient.phone).distinct()
        if self.chunk is not None:
            phones = phones.where(self.chunk.patients())
        if sql.dialect_name(self.session) == "postgresql":
            self.pacer.load_lateral(self.session, phones.subquery(), self.now)
        else:
            self.pacer.load_where(self.session, Message.phone.in_(phones.scalar_subquery()), self.now)
        self._paced = True

    def _outbox_rows(
        self, rows: Sequence[Any], campaign: CampaignFile, step: Step, previous: str | None
    ) -> list[tuple[Any, ...]]:
        """The due rows' outbox values (in OUTBOX_COLUMNS order): canceled with the reason, or
        planned at the first slot the window and the cap allow (recorded in the pacer, so the next
        row to the same number is placed after it).

        One loop with everything that is the same for many rows looked up in local tables (the
        text per variant and language, the earliest instant per enrollment day and zone): it runs
        once per planned row, ~2 million times in a first pass over a million patients."""
        now, window, pacer, only_if = self.now, campaign.send_window, self.pacer, step.only_if
        texts: dict[tuple[str | None, str], _Text] = {}
        earliest_at: dict[tuple[dt.date, str], dt.datetime] = {}
        public_url = self.settings.public_url
        canceled_value, planned_value, outreach = _CANCELED, MessageStatus.planned.value, _OUTREACH
        wordings = step.wordings()
        single = wordings[0] if len(wordings) == 1 else None
        step_id = step.id
        values: list[tuple[Any, ...]] = []
        append = values.append
        for row in rows:
            (enrollment_id, enrolled_on, replied_at, language, first_name, phone, phone_zones, timezone,
             postal_code, opted_out, eligible, status) = row  # fmt: skip
            variant, wording = (single[0], single[2]) if single else variant_for(enrollment_id, step)
            text = texts.get((variant, language))
            if text is None:
                text = texts[variant, language] = self._text(campaign, step, variant, wording, language)
            body = first_name.join(text.parts)
            token = None
            if text.tracked:  # each message its own token (outreach/outcomes/links.py)
                token = links.new_token()
                body = body.replace(_LINK_MARK, tracked_url(public_url, token))
            reason = _cancel_reason(opted_out, eligible, replied_at, status, only_if, previous)
            if reason:
                status_value, send_at, canceled_at = canceled_value, now, now
            else:
                who = self._recipient(phone, timezone, phone_zones, postal_code)
                earliest = earliest_at.get((enrolled_on, who.zones[0]))
                if earliest is None:
                    midnight = _local_midnight_utc(self._due_day(step, enrolled_on), who.zones[0])
                    earliest = earliest_at[enrolled_on, who.zones[0]] = max(now, midnight)
                send_at = pacer.place(who, earliest, window)
                pacer.record(phone, send_at)
                status_value, canceled_at = planned_value, None
            append(
                (enrollment_id, step_id, outreach, phone, body, text.segments(first_name), status_value,
                 send_at, 0, now, now, canceled_at, reason, variant, token)
            )  # fmt: skip
        return values

    def _due_day(self, step: Step, enrolled_on: dt.date) -> dt.date:
        """The day `step` comes due for an enrollment of `enrolled_on` (remembered per pair)."""
        key = (id(step), enrolled_on)
        found = self._due_days.get(key)
        if found is None:
            found = self._due_days[key] = step.after.after(enrolled_on)
        return found

    def _text(
        self, campaign: CampaignFile, step: Step, variant: str | None, texts: dict[str, str], language: str
    ) -> _Text:
        """A wording rendered once per (campaign, step, variant, language). A tracked link is
        left as a marker that each row replaces with its own token's URL (every such URL has the
        same length and alphabet, so the segment count holds for any token)."""
        key = (campaign.id, step.id, variant or "", language)
        found = self._texts.get(key)
        if found is None:
            _, template = campaign.text_for(texts, language)
            token, url = links.for_template(campaign, template, self.settings)
            tracked = token is not None
            parts = render_parts(template, settings=self.settings, link=_LINK_MARK if tracked else url)
            sample = links.sample_url(self.settings.public_url) if tracked else None
            found = self._texts[key] = _Text(parts, sample)
        return found

    def _recipient(
        self, phone: str, timezone: str | None, phone_zones: str | None, postal_code: str | None
    ) -> Recipient:
        """The zones and hour rule of a number, worked out once per kind of number (area code,
        zone, postal code) rather than once per patient."""
        key = (phone[:5], timezone, phone_zones, postal_code)
        found = self._recipients.get(key)
        if found is None:
            zones = patient_zones(timezone, phone_zones, self.settings.default_timezone)
            found = self._recipients[key] = (zones, strict_hours(phone, postal_code))
        return Recipient(phone, found[0], found[1])

    def _insert(self, values: Sequence[tuple[Any, ...]]) -> None:
        """Store the rows; one that exists already (another pass planned it) is skipped.

        PostgreSQL: COPY straight into the outbox, which only fails when another planner wrote
        one of the rows (the bucket locks make that rare); then again through a staging table
        with ON CONFLICT DO NOTHING."""
        conn = sql.connection(self.session)
        if conn.dialect.name == "postgresql":
            now = self.now.isoformat(" ")
            rows = sql.copy_text([_copy_row(v, now) for v in values])
            if _STAGING.copy_text_into_table(conn, rows):
                return
            _STAGING.create(conn)
            _STAGING.copy_text(conn, rows)
            insert = sql.upsert(Message, conn).from_select(OUTBOX_COLUMNS, _STAGING.select())
            conn.execute(insert.on_conflict_do_nothing())
            conn.exec_driver_sql(f"DELETE FROM {_STAGING.name}")
            return
        statement = sql.upsert(Message, conn).on_conflict_do_nothing()
        for start in range(0, len(values), 5000):
            conn.execute(
                statement, [dict(zip(OUTBOX_COLUMNS, v, strict=True)) for v in values[start : start + 5000]]
            )


def _copy_row(values: tuple[Any, ...], now: str) -> tuple[str, ...]:
    """An outbox row (OUTBOX_COLUMNS order) as COPY text, NULL the empty string (no value here is
    ever empty): psycopg adapting each value of each row cost more than the rest of placing it.
    Written out per column, since the types are known: `planned_at`/`updated_at` are the pass's
    `now`, a canceled row's `canceled_at` too, and `send_at` takes one of few instants."""
    (enrollment, step, kind, phone, body, segments, status, send_at, attempts, _, _, canceled, reason,
     variant, token) = values  # fmt: skip
    return (
        str(enrollment),
        step,
        kind,
        phone,
        body,
        str(segments),
        status,
        _iso(send_at),
        str(attempts),
        now,
        now,
        "" if canceled is None else now,
        reason or "",
        variant or "",
        token or "",
    )


@lru_cache(maxsize=65_536)
def _iso(moment: dt.datetime) -> str:
    return moment.isoformat(" ")


class _Text:
    """A step's text in one language, split where the first name goes, with segment counts
    remembered per first name (rosters repeat names a lot). `sample_link`, for a text with a
    tracked link, is a URL of the real length that stands in for the marker when counting."""

    def __init__(self, parts: tuple[str, ...], sample_link: str | None = None) -> None:
        self.parts = parts
        self.sample_link = sample_link
        self._segments: dict[str, int] = {}

    @property
    def tracked(self) -> bool:
        return self.sample_link is not None

    def segments(self, first_name: str) -> int:
        found = self._segments.get(first_name)
        if found is None:
            body = first_name.join(self.parts)
            if self.sample_link is not None:
                body = body.replace(_LINK_MARK, self.sample_link)
            found = self._segments[first_name] = count_segments(body).segments
        return found


def _cancel_reason(
    opted_out: bool,
    eligible: bool,
    replied_at: dt.datetime | None,
    status: str | None,
    only_if: str | None,
    previous: str | None,
) -> str | None:
    """Why a due step must not go out, or None; checked in this order so the funnel names the
    cause. `status` is the previous step's row's (None for a first step)."""
    if opted_out:
        return "opted out"
    if not eligible:
        return "no longer eligible"
    if only_if == "no_reply" and replied_at is not None:
        return "replied"
    if previous is not None and status in (MessageStatus.canceled, MessageStatus.failed):
        return f"previous step {status}"
    return None


@lru_cache(maxsize=4096)
def _local_midnight_utc(day: dt.date, zone: str) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), ZoneInfo(zone)).astimezone(dt.UTC).replace(tzinfo=None)


def due_candidates(
    campaign: CampaignFile, step: Step, previous: str | None, on: dt.date, shard: Shard
) -> Select[Any]:
    """The patient ids of the shard's enrollments whose `step` `StepPlanner` would plan now, as one
    query over the whole shard: how a pass finds the chunks with work."""
    query: Select[Any] = select(Enrollment.patient_id).where(
        Enrollment.campaign_id == campaign.id,
        Enrollment.ended_at.is_(None),
        Enrollment.arm == Arm.treated,
        Enrollment.enrolled_on <= step.after.before(on),
        ~exists().where(Message.enrollment_id == Enrollment.id, Message.step_id == step.id),
    )
    if previous is not None:
        prev = Message.__table__.alias("prev")
        query = query.where(exists().where(prev.c.enrollment_id == Enrollment.id, prev.c.step_id == previous))
    if shard.buckets != EVERY_BUCKET.buckets:
        query = query.join(Patient, Patient.id == Enrollment.patient_id).where(shard.holds(Patient.phone))
    return query
