"""The funnel per campaign, step and language (`outreach report`).

Every figure is counted by the database with GROUP BY queries, one per family (enrollments,
messages, replies, activations, opt-outs, outcomes, hand-offs); Python only adds up the few grouped
rows, so the report costs the same for ten patients or ten million.

What the figures mean
---------------------
- ``eligible``: patients the campaign's audience selects today (``--on``), only for campaigns that
  are active that day and whose file is loaded; otherwise null. Not limited by ``--since``.
- ``enrolled``: enrollments (patient x campaign x cycle). ``--since DATE`` keeps enrollments from
  that date on, and with them every figure below.
- ``planned``: every outbox row of the step (campaign steps only, never answers to replies), in any
  status, including those still waiting. It splits exactly into ``pending`` (planned, queued or
  being sent), ``unknown`` (outcome ambiguous, being reconciled), ``canceled``, failures the
  provider refused outright (``failed`` without a provider id) and ``sent``.
- ``sent``: reached the provider, i.e. Twilio accepted it and gave it a sid: statuses ``sent``,
  ``delivered``, ``undelivered``, and ``failed`` after acceptance. ``unknown`` rows are not counted
  until reconciliation settles them.
- ``delivered``, ``undelivered``, ``failed``, ``canceled``: rows in that status; ``failed_codes``
  and ``undelivered_codes`` break them down by Twilio error code (``"none"`` when there is none),
  ``cancel_reasons`` by reason.
- ``replied``: enrollments that replied (any reply but an opt-out); ``activated``: activations (first
  engagement per patient x campaign). Per step, each is credited to the step whose message was the
  latest to reach the patient before the reply.
- ``opted_out``: numbers whose opt-out came after a message of this campaign, credited to the
  latest message (of any campaign) that reached the number before the opt-out, so no number is
  counted twice.
- ``outcomes``: enrollments per outcome; ``handoffs``: hand-offs of those enrollments, open and closed.
- ``delivered_pct``, ``replied_pct``, ``activated_pct``: percentages of ``sent`` (one decimal),
  null when nothing was sent.

JSON (`outreach report --json`), stable::

    {
      "on": "2026-11-23",                 # the day "eligible" was counted for
      "since": "2026-10-01" | null,
      "campaigns": [
        {
          "id": "colorectal-screening", "name": "...", "active": true | false | null,
          "eligible": 1234 | null, "enrolled": 900,
          <FIGURES>, "outcomes": {"kit_requested": 12}, "handoffs": {"open": 3, "closed": 5},
          "steps": [{"step": "invite", <FIGURES>}, ...],          # file order, then unknown steps
          "languages": [{"language": "en", "enrolled": 800, <FIGURES>,
                         "outcomes": {...}, "handoffs": {...}}, ...]
        }
      ],
      "totals": {"campaigns": 2, "eligible": 2000, "enrolled": 1500, <FIGURES>,
                 "outcomes": {...}, "handoffs": {...}, "languages": [...]},
      "sender_holds": [{"sender", "scope", "error_code", "http_status", "message", "since",
                        "seen_at", "next_probe_at"}]   # sending paused for an operator error
    }

    <FIGURES> = "planned", "pending", "sent", "delivered", "undelivered", "failed", "canceled",
                "unknown", "replied", "activated", "opted_out" (integers),
                "failed_codes", "undelivered_codes", "cancel_reasons" ({string: integer}),
                "delivered_pct", "replied_pct", "activated_pct" (number or null)

``active`` is null when the campaign's file is not loaded (only its history is in the database).
Totals add campaigns up (a patient eligible for two campaigns counts twice in ``eligible``).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeAlias

from sqlalchemy import ColumnElement, Engine, Select, func, or_, select
from sqlalchemy.orm import Session

from outreach.campaigns import CampaignFile
from outreach.errors import UserError
from outreach.plan.eligibility import count_eligible
from outreach.send import holds
from outreach.store.db import session_scope
from outreach.store.models import (
    Activation,
    Campaign,
    Enrollment,
    Handoff,
    Message,
    MessageKind,
    MessageStatus,
    PhoneConsent,
)
from outreach.store.statuses import WAITING_OR_SENDING, WENT_OUT

_COUNTS = (
    "planned",
    "pending",
    "sent",
    "delivered",
    "undelivered",
    "failed",
    "canceled",
    "unknown",
    "replied",
    "activated",
    "opted_out",
)

AnySelect: TypeAlias = "Select[*tuple[Any, ...]]"
# (campaign id, language, step id or None when no step can be credited)
Key = tuple[str, str, str | None]


@dataclass
class Figures:
    """The funnel of one step, language, campaign or of everything."""

    planned: int = 0
    pending: int = 0
    sent: int = 0
    delivered: int = 0
    undelivered: int = 0
    failed: int = 0
    canceled: int = 0
    unknown: int = 0
    replied: int = 0
    activated: int = 0
    opted_out: int = 0
    failed_codes: Counter[str] = field(default_factory=Counter)
    undelivered_codes: Counter[str] = field(default_factory=Counter)
    cancel_reasons: Counter[str] = field(default_factory=Counter)

    def add(self, other: Figures) -> None:
        """Add `other`'s figures (only the fields `self` has: a step takes a cell's step figures)."""
        for f in fields(self):
            if isinstance(getattr(self, f.name), Counter):
                getattr(self, f.name).update(getattr(other, f.name))
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def pct(self, count: int) -> float | None:
        return round(100 * count / self.sent, 1) if self.sent else None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name) for name in _COUNTS}
        out["failed_codes"] = dict(sorted(self.failed_codes.items()))
        out["undelivered_codes"] = dict(sorted(self.undelivered_codes.items()))
        out["cancel_reasons"] = dict(sorted(self.cancel_reasons.items()))
        out["delivered_pct"] = self.pct(self.delivered)
        out["replied_pct"] = self.pct(self.replied)
        out["activated_pct"] = self.pct(self.activated)
        return out


@dataclass
class Summary(Figures):
    """Figures that belong to enrollments rather than to a step."""

    enrolled: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    handoffs_open: int = 0
    handoffs_closed: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "enrolled": self.enrolled,
            **super().as_json(),
            "outcomes": dict(sorted(self.outcomes.items())),
            "handoffs": {"open": self.handoffs_open, "closed": self.handoffs_closed},
        }


@dataclass
class CampaignFunnel:
    id: str
    name: str
    active: bool | None
    eligible: int | None
    summary: Summary
    steps: dict[str, Figures]
    languages: dict[str, Summary]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "active": self.active,
            "eligible": self.eligible,
            **self.summary.as_json(),
            "steps": [{"step": step, **figures.as_json()} for step, figures in self.steps.items()],
            "languages": [{"language": lang, **s.as_json()} for lang, s in self.languages.items()],
        }


@dataclass
class FunnelReport:
    on: dt.date
    since: dt.date | None
    campaigns: list[CampaignFunnel]
    totals: Summary
    languages: dict[str, Summary]
    # Senders paused for an account or configuration error (outreach.send.holds): the report is
    # where an operator looks when "pending" does not move.
    sender_holds: list[dict[str, Any]] = field(default_factory=list)

    @property
    def eligible(self) -> int | None:
        counted = [c.eligible for c in self.campaigns if c.eligible is not None]
        return sum(counted) if counted else None

    def as_json(self) -> dict[str, Any]:
        """The documented `outreach report --json` shape (see the module docstring)."""
        return {
            "on": self.on.isoformat(),
            "since": self.since.isoformat() if self.since else None,
            "campaigns": [c.as_json() for c in self.campaigns],
            "totals": {
                "campaigns": len(self.campaigns),
                "eligible": self.eligible,
                **self.totals.as_json(),
                "languages": [{"language": lang, **s.as_json()} for lang, s in self.languages.items()],
            },
            "sender_holds": self.sender_holds,
        }


def funnel(
    engine: Engine,
    *,
    campaign_id: str | None = None,
    since: dt.date | None = None,
    campaigns: Mapping[str, CampaignFile] | None = None,
    on: dt.date,
) -> FunnelReport:
    """The funnel of every campaign (or of `campaign_id`) known to the database or the files.

    `campaigns` (the loaded files) give step order and today's eligible count; `on` is the day
    eligibility is counted for: the caller's choice (the CLI's default is the clinic's today), so
    the same history gives the same report whoever runs it and wherever.
    """
    files = dict(campaigns or {})
    with session_scope(engine) as session:
        names = {cid: name for cid, name in session.execute(select(Campaign.id, Campaign.name))}
        names |= {cid: c.name for cid, c in files.items()}
        if campaign_id is not None and campaign_id not in names:
            known = ", ".join(sorted(names)) or "none"
            raise UserError(
                f"no campaign {campaign_id!r} in the database or the campaign files; known: {known}"
            )
        ids = [campaign_id] if campaign_id is not None else sorted(names)
        cells: dict[Key, Summary] = {}
        _count_all(session, cells, _scope(campaign_id, since))
        eligible = {
            cid: count_eligible(session, files[cid], on)
            for cid in ids
            if cid in files and files[cid].is_active(on)
        }

    report = FunnelReport(on=on, since=since, campaigns=[], totals=Summary(), languages={})
    for cid in ids:
        mine = {key: cell for key, cell in cells.items() if key[0] == cid}
        campaign = _campaign_funnel(cid, names[cid], files.get(cid), mine, on, eligible.get(cid))
        report.totals.add(campaign.summary)
        for language, summary in campaign.languages.items():
            report.languages.setdefault(language, Summary()).add(summary)
        report.campaigns.append(campaign)
    report.languages = dict(sorted(report.languages.items()))
    report.sender_holds = _sender_holds(engine)
    return report


def _campaign_funnel(
    cid: str,
    name: str,
    file: CampaignFile | None,
    cells: Mapping[Key, Summary],
    on: dt.date,
    eligible: int | None,
) -> CampaignFunnel:
    """One campaign's figures from its cells: steps in the file's order (then any the file no
    longer has, so history is never hidden), per language, and the campaign's total."""
    order = [s.id for s in file.steps] if file else []
    seen = sorted({step for _, _, step in cells if step is not None and step not in order})
    steps = {step: Figures() for step in [*order, *seen]}
    languages: dict[str, Summary] = {}
    summary = Summary()
    for (_, language, step), cell in sorted(cells.items(), key=lambda kv: (kv[0][1], kv[0][2] or "")):
        summary.add(cell)
        languages.setdefault(language, Summary()).add(cell)
        if step is not None:
            steps[step].add(cell)
    return CampaignFunnel(
        id=cid,
        name=name,
        active=file.is_active(on) if file else None,
        eligible=eligible,
        summary=summary,
        steps=steps,
        languages=languages,
    )


def _sender_holds(engine: Engine) -> list[dict[str, Any]]:
    with session_scope(engine) as session:
        return [hold.as_json() for hold in holds.active_holds(session)]


def _scope(campaign_id: str | None, since: dt.date | None) -> list[ColumnElement[bool]]:
    """Which enrollments the report covers; every family is joined to enrollments and filtered so."""
    conditions: list[ColumnElement[bool]] = []
    if campaign_id is not None:
        conditions.append(Enrollment.campaign_id == campaign_id)
    if since is not None:
        conditions.append(Enrollment.enrolled_on >= since)
    return conditions


def _went_out() -> ColumnElement[bool]:
    return or_(Message.status.in_(WENT_OUT), Message.provider_sid.is_not(None))


def _credited_step(enrollment_id: Any, moment: Any) -> ColumnElement[Any]:
    """The step of the enrollment's latest message that went out at or before `moment`."""
    return (
        select(Message.step_id)
        .where(
            Message.enrollment_id == enrollment_id,
            Message.kind == MessageKind.outreach,
            _went_out(),
            Message.went_out_at <= moment,
        )
        .order_by(Message.went_out_at.desc(), Message.id.desc())
        .limit(1)
        .scalar_subquery()
    )


def _grouped(stmt: AnySelect) -> AnySelect:
    """Count rows of `stmt` (campaign, language, step, ...) grouped by all its columns.

    Grouping over a subquery's plain columns, rather than repeating expressions with bound
    parameters in GROUP BY, is what PostgreSQL accepts as the same expression.
    """
    inner = stmt.subquery()
    columns = list(inner.c)
    return select(*columns, func.count()).group_by(*columns)


def _count_all(session: Session, cells: dict[Key, Summary], scope: list[ColumnElement[bool]]) -> None:
    """Fill `cells` (campaign, language, step) with every figure of the funnel, a few grouped
    queries in all, so the report costs the same whether a campaign has ten patients or a million."""
    _count_enrolled(session, cells, scope)
    _count_outbox(session, cells, scope)
    _count_engagement(session, cells, scope)
    _count_endings(session, cells, scope)


def _cell(cells: dict[Key, Summary], campaign: str, language: str, step: str | None) -> Summary:
    return cells.setdefault((campaign, language, step), Summary())


def _count_enrolled(session: Session, cells: dict[Key, Summary], scope: list[ColumnElement[bool]]) -> None:
    enrolled = select(Enrollment.campaign_id, Enrollment.language, func.count()).where(*scope)
    for campaign, language, n in session.execute(
        enrolled.group_by(Enrollment.campaign_id, Enrollment.language)
    ):
        _cell(cells, campaign, language, None).enrolled += n


def _count_outbox(session: Session, cells: dict[Key, Summary], scope: list[ColumnElement[bool]]) -> None:
    messages = (
        select(
            Enrollment.campaign_id,
            Enrollment.language,
            Message.step_id,
            Message.status,
            Message.provider_sid.is_not(None).label("accepted"),
            Message.error_code,
            Message.cancel_reason,
        )
        .select_from(Message)
        .join(Enrollment, Message.enrollment_id == Enrollment.id)
        .where(Message.kind == MessageKind.outreach, *scope)
    )
    for campaign, language, step, status, accepted, code, reason, n in session.execute(_grouped(messages)):
        _count_messages(_cell(cells, campaign, language, step), status, bool(accepted), code, reason, n)


def _count_engagement(session: Session, cells: dict[Key, Summary], scope: list[ColumnElement[bool]]) -> None:
    """Replies, activations and opt-outs, each credited to the step that drew it."""
    replied = select(
        Enrollment.campaign_id,
        Enrollment.language,
        _credited_step(Enrollment.id, Enrollment.replied_at).label("step"),
    ).where(Enrollment.replied_at.is_not(None), *scope)
    for campaign, language, step, n in session.execute(_grouped(replied)):
        _cell(cells, campaign, language, step).replied += n

    activated = (
        select(
            Enrollment.campaign_id,
            Enrollment.language,
            _credited_step(Activation.enrollment_id, Activation.activated_at).label("step"),
        )
        .select_from(Activation)
        .join(Enrollment, Activation.enrollment_id == Enrollment.id)
        .where(*scope)
    )
    for campaign, language, step, n in session.execute(_grouped(activated)):
        _cell(cells, campaign, language, step).activated += n

    for campaign, language, step, n in session.execute(_opt_outs(scope)):
        _cell(cells, campaign, language, step).opted_out += n


def _count_endings(session: Session, cells: dict[Key, Summary], scope: list[ColumnElement[bool]]) -> None:
    """How enrollments ended (outcomes) and the hand-offs they raised."""
    outcomes = select(Enrollment.campaign_id, Enrollment.language, Enrollment.outcome).where(
        Enrollment.outcome.is_not(None), *scope
    )
    for campaign, language, outcome, n in session.execute(_grouped(outcomes)):
        _cell(cells, campaign, language, None).outcomes[outcome] += n

    handoffs = (
        select(Enrollment.campaign_id, Enrollment.language, Handoff.status)
        .select_from(Handoff)
        .join(Enrollment, Handoff.enrollment_id == Enrollment.id)
        .where(*scope)
    )
    for campaign, language, status, n in session.execute(_grouped(handoffs)):
        target = _cell(cells, campaign, language, None)
        if status == "open":
            target.handoffs_open += n
        else:
            target.handoffs_closed += n


def _count_messages(
    target: Figures, status: str, accepted: bool, code: int | None, reason: str | None, n: int
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


def _opt_outs(scope: list[ColumnElement[bool]]) -> AnySelect:
    """Opted-out numbers per (campaign, language, step) of the latest message that reached them
    before the opt-out: one number, one credited message."""
    last = (
        select(Message.id)
        .where(
            Message.phone == PhoneConsent.phone,
            Message.kind == MessageKind.outreach,
            Message.enrollment_id.is_not(None),
            _went_out(),
            Message.went_out_at <= PhoneConsent.opted_out_at,
        )
        .order_by(Message.went_out_at.desc(), Message.id.desc())
        .limit(1)
        .correlate(PhoneConsent)
        .scalar_subquery()
    )
    credited = select(last.label("message_id")).where(PhoneConsent.opted_out_at.is_not(None)).subquery()
    return (
        select(Enrollment.campaign_id, Enrollment.language, Message.step_id, func.count())
        .select_from(credited)
        .join(Message, Message.id == credited.c.message_id)
        .join(Enrollment, Message.enrollment_id == Enrollment.id)
        .where(*scope)
        .group_by(Enrollment.campaign_id, Enrollment.language, Message.step_id)
    )
