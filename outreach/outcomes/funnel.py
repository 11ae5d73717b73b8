"""The funnel per campaign, step, variant and language (`outreach report`).

Every figure is counted by the database with GROUP BY queries, one per family (outreach/outcomes/
counts.py: enrollments, messages, replies, activations, clicks, closed gaps, opt-outs, outcomes,
hand-offs; outreach/outcomes/arms.py: treated vs holdout); Python only adds up the few grouped rows,
so the report costs the same for ten patients or ten million.

What the figures mean
---------------------
- ``eligible``: patients the campaign's audience selects today (``--on``), only for campaigns that
  are active that day and whose file is loaded; otherwise null. Not limited by ``--since``.
- ``enrolled``: enrollments (patient x campaign x cycle) of the treated arm; holdout enrollments
  (never texted) are counted apart, in ``holdout``. ``--since DATE`` keeps enrollments from that
  date on, and with them every figure below.
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
- ``engaged``: enrollments that replied (any reply but an opt-out); ``replied`` is the same count,
  kept under its first name. ``activated``: activations, the first positive action per patient x
  campaign (a reply whose rule activates, or a click on the tracked link; a decline is not one).
  Per step, each is credited to the step whose message was the latest to reach the patient before
  the reply or click.
- ``clicked``: enrollments whose tracked link was clicked (previews not counted), credited to the
  first message whose link they clicked.
- ``gap_closed``: enrollments whose care gap closed inside the attribution window, credited to the
  last message that reached the patient before the closing event (in the campaign's cell, with no
  step, when none did).
- ``opted_out``: numbers whose opt-out came after a message of this campaign, credited to the
  latest message (of any campaign) that reached the number before the opt-out, so no number is
  counted twice.
- ``opted_out_by``: the same opt-outs by how the number opted out: the keyword as the patient sent
  it (``STOP``, ...), the provider's refusal (``twilio:21610``), ``staff`` (a coordinator, with the
  reason in the audit log), ``none`` when nothing was recorded.
- ``daily``: per campaign and in the totals, the last 30 UTC days up to ``--on``, oldest first, each
  ``{"date", "sent", "replies"}``: texts the provider accepted that day and replies (not opt-outs)
  that arrived that day (outreach/outcomes/daily.py). ``--since`` applies to it too.
- ``outcomes``: enrollments per reply outcome; ``ended``: enrollments per end reason (gap_closed,
  excluded); ``handoffs``: hand-offs of those enrollments, open and closed.
- ``delivered_pct``, ``replied_pct``, ``engaged_pct``, ``activated_pct``, ``gap_closed_pct``:
  percentages of ``sent`` (one decimal), null when nothing was sent.
- Per campaign, ``treated`` and ``holdout``: enrolled, gap_closed and gap_closed_pct (percent of
  the arm's enrollments); ``lift``: the treated minus holdout closure rate (a proportion) with its
  95% interval (Newcombe) and two-sided p-value, or null with ``lift_note`` saying why (no holdout,
  too small to conclude); ``days_to_close_median``: median days from a treated patient's first
  text to the closure of the gap (closures credited to a text), or null.

JSON (`outreach report --json`), stable::

    {
      "on": "2026-11-23",                 # the day "eligible" was counted for
      "since": "2026-10-01" | null,
      "campaigns": [
        {
          "id": "colorectal-screening", "name": "...", "active": true | false | null,
          "eligible": 1234 | null, "enrolled": 900,
          <FIGURES>, "outcomes": {"kit_requested": 12}, "ended": {"gap_closed": 40, "excluded": 2},
          "handoffs": {"open": 3, "closed": 5},
          "steps": [{"step": "invite", <FIGURES>,                  # file order, then unknown steps
                     "variants": [{"variant": "a", <FIGURES>}, ...]},   # steps with variants only
                    ...],
          "languages": [{"language": "en", "enrolled": 800, <FIGURES>,
                         "outcomes": {...}, "ended": {...}, "handoffs": {...}}, ...],
          "treated": {"enrolled": 900, "gap_closed": 90, "gap_closed_pct": 10.0},
          "holdout": {"enrolled": 100, "gap_closed": 6, "gap_closed_pct": 6.0},
          "lift": {"difference": 0.04, "ci95": [-0.0095, 0.0689], "p_value": 0.1797} | null,
          "lift_note": null | "holdout too small to conclude: ...",
          "days_to_close_median": 12.5 | null,
          "links": {"clicks": 40, "previews": 12},
          "daily": [{"date": "2026-10-25", "sent": 120, "replies": 9}, ...]   # 30 days, oldest first
        }
      ],
      "totals": {"campaigns": 2, "eligible": 2000, "enrolled": 1500, <FIGURES>,
                 "outcomes": {...}, "handoffs": {...}, "languages": [...], "daily": [...]},
      "sender_holds": [{"sender", "scope", "error_code", "http_status", "message", "since",
                        "seen_at", "next_probe_at"}]   # sending paused for an operator error
    }

    <FIGURES> = "planned", "pending", "sent", "delivered", "undelivered", "failed", "canceled",
                "unknown", "replied", "engaged", "activated", "clicked", "gap_closed", "opted_out"
                (integers), "failed_codes", "undelivered_codes", "cancel_reasons", "opted_out_by"
                ({string: integer}),
                "delivered_pct", "replied_pct", "engaged_pct", "activated_pct", "gap_closed_pct"
                (number or null)

``active`` is null when the campaign's file is not loaded (only its history is in the database).
Totals add campaigns up (a patient eligible for two campaigns counts twice in ``eligible``).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from sqlalchemy import ColumnElement, Engine, select

from outreach.campaigns import CampaignFile
from outreach.errors import UserError
from outreach.outcomes.arms import Comparison, compare_arms
from outreach.outcomes.counts import Key, count_all, link_hits
from outreach.outcomes.daily import Day, add_up, daily_replies, days, empty, sent_day
from outreach.plan.eligibility import count_eligible
from outreach.send import holds
from outreach.store import sql
from outreach.store.db import session_scope
from outreach.store.models import Arm, Campaign, Enrollment

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
    "engaged",
    "activated",
    "clicked",
    "gap_closed",
    "opted_out",
)
_RATES = ("delivered", "replied", "engaged", "activated", "gap_closed")


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
    engaged: int = 0
    activated: int = 0
    clicked: int = 0
    gap_closed: int = 0
    opted_out: int = 0
    failed_codes: Counter[str] = field(default_factory=Counter)
    undelivered_codes: Counter[str] = field(default_factory=Counter)
    cancel_reasons: Counter[str] = field(default_factory=Counter)
    opted_out_by: Counter[str] = field(default_factory=Counter)
    sent_days: Counter[dt.date] = field(default_factory=Counter)  # for `daily`, not printed per step

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
        out["opted_out_by"] = dict(sorted(self.opted_out_by.items()))
        out |= {f"{name}_pct": self.pct(getattr(self, name)) for name in _RATES}
        return out


@dataclass
class Summary(Figures):
    """Figures that belong to enrollments rather than to a step."""

    enrolled: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    ended: Counter[str] = field(default_factory=Counter)
    handoffs_open: int = 0
    handoffs_closed: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "enrolled": self.enrolled,
            **super().as_json(),
            "outcomes": dict(sorted(self.outcomes.items())),
            "ended": dict(sorted(self.ended.items())),
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
    variants: dict[str, dict[str, Figures]] = field(default_factory=dict)  # step -> variant -> figures
    arms: Comparison = field(default_factory=Comparison)
    links: dict[str, int] = field(default_factory=lambda: {"clicks": 0, "previews": 0})
    daily: list[Day] = field(default_factory=list)  # the last DAYS days, oldest first

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "active": self.active,
            "eligible": self.eligible,
            **self.summary.as_json(),
            "steps": [self._step_json(step, figures) for step, figures in self.steps.items()],
            "languages": [{"language": lang, **s.as_json()} for lang, s in self.languages.items()],
            **self.arms.as_json(),
            "links": self.links,
            "daily": [day.as_json() for day in self.daily],
        }

    def _step_json(self, step: str, figures: Figures) -> dict[str, Any]:
        out = {"step": step, **figures.as_json()}
        if step in self.variants:
            out["variants"] = [{"variant": v, **f.as_json()} for v, f in self.variants[step].items()]
        return out


@dataclass
class FunnelReport:
    on: dt.date
    since: dt.date | None
    campaigns: list[CampaignFunnel]
    totals: Summary
    languages: dict[str, Summary]
    daily: list[Day] = field(default_factory=list)
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
                "daily": [day.as_json() for day in self.daily],
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
        sql.jit_off(session)
        names = {cid: name for cid, name in session.execute(select(Campaign.id, Campaign.name))}
        names |= {cid: c.name for cid, c in files.items()}
        if campaign_id is not None and campaign_id not in names:
            known = ", ".join(sorted(names)) or "none"
            raise UserError(
                f"no campaign {campaign_id!r} in the database or the campaign files; known: {known}"
            )
        ids = [campaign_id] if campaign_id is not None else sorted(names)
        cells: dict[Key, Summary] = {}
        scope = _scope(campaign_id, since)
        count_all(
            session,
            lambda key: cells.setdefault(key, Summary()),
            [*scope, Enrollment.arm == Arm.treated],
            sent_day(on),
        )
        arms = compare_arms(session, scope)
        hits = link_hits(session, scope)
        replies = daily_replies(session, scope, on)
        eligible = {
            cid: count_eligible(session, files[cid], on)
            for cid in ids
            if cid in files and files[cid].is_active(on)
        }

    report = FunnelReport(on=on, since=since, campaigns=[], totals=Summary(), languages={}, daily=empty(on))
    for cid in ids:
        mine = {key: cell for key, cell in cells.items() if key[0] == cid}
        campaign = _campaign_funnel(cid, names[cid], files.get(cid), mine, on, eligible.get(cid))
        campaign.arms = arms.get(cid, Comparison())
        campaign.links = hits.get(cid, campaign.links)
        campaign.daily = days(on, campaign.summary.sent_days, replies.get(cid, Counter()))
        add_up(report.daily, campaign.daily)
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
    longer has, so history is never hidden), their variants, per language, and the total."""
    order = [s.id for s in file.steps] if file else []
    seen = sorted({step for _, _, step, _ in cells if step is not None and step not in order})
    steps = {step: Figures() for step in [*order, *seen]}
    variants: dict[str, dict[str, Figures]] = {}
    for written in file.steps if file else []:
        if written.variants:
            variants[written.id] = {v.id: Figures() for v in written.variants}
    languages: dict[str, Summary] = {}
    summary = Summary()
    for (_, language, step, variant), cell in sorted(cells.items(), key=lambda kv: _order(kv[0])):
        summary.add(cell)
        languages.setdefault(language, Summary()).add(cell)
        if step is not None:
            steps[step].add(cell)
            if variant is not None:
                variants.setdefault(step, {}).setdefault(variant, Figures()).add(cell)
    return CampaignFunnel(
        id=cid,
        name=name,
        active=file.is_active(on) if file else None,
        eligible=eligible,
        summary=summary,
        steps=steps,
        languages=languages,
        variants=variants,
    )


def _order(key: Key) -> tuple[str, str, str]:
    return key[1], key[2] or "", key[3] or ""


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
