"""The report's outcome figures (DESIGN.md §11) on a seeded population, each recomputed here from
the raw rows with plain Python: per-variant delivered, engaged, activated, clicked and gap closed;
treated vs holdout closure; the lift's interval and p-value; median days from first text to
closure; clicks vs previews."""

from __future__ import annotations

import datetime as dt
import math
import random
from collections import Counter
from statistics import NormalDist, median
from typing import Any

from sqlalchemy import Engine, select, update

from outreach.config import Settings, get_settings
from outreach.outcomes import links
from outreach.outcomes.funnel import funnel
from outreach.plan import scheduler
from outreach.store import sql
from outreach.store.db import session_scope
from outreach.store.models import Activation, Enrollment, LinkClick, Message, Patient, PatientEvent
from tests.factories import add_patient, campaign

D = dt.date(2026, 3, 2)
MORNING = dt.datetime(2026, 3, 2, 15, 0)  # 10:00 in New York: invites go at once
SENT = dt.datetime(2026, 3, 2, 15, 5)
N = 600
BROWSER = "Mozilla/5.0 (Linux; Android 14) Chrome/120 Mobile"
TEXTS = {
    "a": {"en": "Hi {first_name}, {clinic_name}: your screening is due. See {link} Reply STOP to opt out."},
    "b": {"en": "{first_name}, {clinic_name} here: book your screening at {link} Reply STOP to opt out."},
}


def _campaign() -> Any:
    invite = {
        "id": "invite",
        "after": "0d",
        "variants": [
            {"id": "a", "weight": 50, "text": TEXTS["a"]},
            {"id": "b", "weight": 50, "text": TEXTS["b"]},
        ],
    }
    return campaign(
        audience={"age": {"min": 40, "max": 75}, "care_gap": [{"event": "fit", "within": "1y"}]},
        steps=[invite],
        holdout="30%",
        link="https://clinic.example.org/book",
    )


def _z(level: float = 0.975) -> float:
    return NormalDist().inv_cdf(level)


def _wilson(x: int, n: int) -> tuple[float, float]:
    z, p = _z(), x / n
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return ((p + z * z / (2 * n) - half) / (1 + z * z / n), (p + z * z / (2 * n) + half) / (1 + z * z / n))


def _simulate(engine: Engine, settings: Settings) -> None:
    """Deliveries, replies, clicks, previews and screenings, drawn from a fixed seed."""
    rng = random.Random(13)
    with session_scope(engine) as s:
        messages = list(s.execute(select(Message.id, Message.enrollment_id, Message.link_token)).all())
        for message_id, _, _ in messages:
            status = rng.choices(["delivered", "undelivered", "failed"], [8, 1, 1])[0]
            s.execute(
                update(Message)
                .where(Message.id == message_id)
                .values(status=status, sent_at=SENT, delivered_at=SENT, provider_sid=f"SM{message_id:032d}")
            )
    with session_scope(engine) as s:
        conn = sql.connection(s)
        for _, enrollment_id, token in messages:
            roll = rng.random()
            if roll < 0.2:
                links.follow(
                    conn,
                    token,
                    method="GET",
                    user_agent=BROWSER,
                    now=SENT + dt.timedelta(hours=1),
                    ttl_days=30,
                )
            elif roll < 0.3:
                links.follow(
                    conn,
                    token,
                    method="GET",
                    user_agent="WhatsApp/2.24",
                    now=SENT + dt.timedelta(hours=1),
                    ttl_days=30,
                )
            elif roll < 0.35:
                links.follow(
                    conn,
                    token,
                    method="GET",
                    user_agent=BROWSER,
                    now=SENT + dt.timedelta(seconds=1),
                    ttl_days=30,
                )
            if rng.random() < 0.3:
                replied = SENT + dt.timedelta(hours=2)
                s.execute(update(Enrollment).where(Enrollment.id == enrollment_id).values(replied_at=replied))
                if rng.random() < 0.5:
                    patient = s.scalar(select(Enrollment.patient_id).where(Enrollment.id == enrollment_id))
                    conn.execute(
                        sql.insert_or_skip(Activation, index_elements=["patient_id", "campaign_id"])[
                            conn.dialect.name
                        ],
                        {
                            "patient_id": patient,
                            "campaign_id": "test-screening",
                            "enrollment_id": enrollment_id,
                            "inbound_id": None,
                            "activated_at": replied,
                            "how": "kit_requested",
                        },
                    )
        for mrn, arm in s.execute(select(Patient.mrn, Enrollment.arm).join(Enrollment)).all():
            if rng.random() < (0.35 if arm == "treated" else 0.15):
                s.add(
                    PatientEvent(
                        mrn=mrn, kind="fit", date=D + dt.timedelta(days=rng.randint(-3, 120)), code=""
                    )
                )


def test_outcome_figures_match_an_independent_count(engine: Engine) -> None:
    settings = get_settings().model_copy(update={"public_url": "https://o.example.org"})
    c = _campaign()
    with session_scope(engine) as s:
        for i in range(N):
            add_patient(s, f"p{i}", phone=f"+1617{2000000 + i:07d}")
    scheduler.tick(engine, {c.id: c}, settings=settings, now=MORNING)
    _simulate(engine, settings)
    on = D + dt.timedelta(days=130)
    scheduler.tick(engine, {c.id: c}, settings=settings, now=dt.datetime.combine(on, dt.time(15)))

    report = funnel(engine, campaigns={c.id: c}, on=on).as_json()["campaigns"][0]

    with session_scope(engine) as s:
        enrollments = {e.id: e for e in s.scalars(select(Enrollment))}
        s.expunge_all()
        messages = {m.enrollment_id: m for m in s.scalars(select(Message))}
        s.expunge_all()
        events = list(s.execute(select(PatientEvent.mrn, PatientEvent.date)).all())
        mrn_of = dict(s.execute(select(Patient.id, Patient.mrn)).all())
        clicks = {row.enrollment_id: row for row in s.scalars(select(LinkClick))}
        activated = set(s.scalars(select(Activation.enrollment_id)))

    def closure(e: Enrollment) -> dt.date | None:
        days = [
            d
            for m, d in events
            if m == mrn_of[e.patient_id]
            and e.enrolled_on <= d < e.enrolled_on + dt.timedelta(days=90)
            and d <= on
        ]
        return min(days) if days else None

    expected: dict[str, Counter[str]] = {"a": Counter(), "b": Counter()}
    arms = {"treated": Counter(), "holdout": Counter()}
    waits = []
    for e in enrollments.values():
        closed_on = closure(e)
        arms[e.arm]["enrolled"] += 1
        arms[e.arm]["closed"] += closed_on is not None
        if e.arm == "holdout":
            assert e.id not in messages
            continue
        m = messages[e.id]
        figures = expected[m.variant or "?"]
        figures["delivered"] += m.status == "delivered"
        figures["sent"] += 1
        figures["engaged"] += e.replied_at is not None
        figures["activated"] += e.id in activated
        figures["clicked"] += e.id in clicks and clicks[e.id].clicks > 0
        reached = m.status == "delivered" and closed_on is not None and SENT.date() <= closed_on
        figures["gap_closed"] += reached
        if reached:
            waits.append((closed_on - SENT.date()).days)
    [invite] = report["steps"]
    by_variant = {v["variant"]: v for v in invite["variants"]}
    for variant in ("a", "b"):
        got = by_variant[variant]
        assert {
            k: got[k] for k in ("sent", "delivered", "engaged", "activated", "clicked", "gap_closed")
        } == {
            k: expected[variant][k]
            for k in ("sent", "delivered", "engaged", "activated", "clicked", "gap_closed")
        }
        assert got["gap_closed_pct"] == round(
            100 * expected[variant]["gap_closed"] / expected[variant]["sent"], 1
        )
    assert min(expected["a"]["gap_closed"], expected["b"]["gap_closed"], expected["a"]["clicked"]) > 0
    # The whole campaign: treated closures include those no text reached.
    assert (report["treated"]["enrolled"], report["treated"]["gap_closed"]) == (
        arms["treated"]["enrolled"],
        arms["treated"]["closed"],
    )
    assert (report["holdout"]["enrolled"], report["holdout"]["gap_closed"]) == (
        arms["holdout"]["enrolled"],
        arms["holdout"]["closed"],
    )
    assert (
        report["enrolled"] == arms["treated"]["enrolled"]
        and report["gap_closed"] == arms["treated"]["closed"]
    )
    assert report["days_to_close_median"] == median(waits)

    x1, n1, x2, n2 = (
        arms["treated"]["closed"],
        arms["treated"]["enrolled"],
        arms["holdout"]["closed"],
        arms["holdout"]["enrolled"],
    )
    p1, p2 = x1 / n1, x2 / n2
    (l1, u1), (l2, u2) = _wilson(x1, n1), _wilson(x2, n2)
    lower = p1 - p2 - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    upper = p1 - p2 + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    pooled = (x1 + x2) / (n1 + n2)
    z = (p1 - p2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    assert report["lift"] == {
        "difference": round(p1 - p2, 4),
        "ci95": [round(lower, 4), round(upper, 4)],
        "p_value": round(math.erfc(abs(z) / math.sqrt(2)), 4),
    }
    assert report["lift_note"] is None
    hits: Counter[str] = Counter()
    for row in clicks.values():
        hits["clicks"] += row.clicks
        hits["previews"] += row.previews
    assert report["links"] == dict(hits) and hits["previews"] > 0


def test_the_holdout_share_is_within_tolerance(engine: Engine) -> None:
    share = 0.3
    c = _campaign()
    with session_scope(engine) as s:
        for i in range(N):
            add_patient(s, f"p{i}", phone=f"+1617{2000000 + i:07d}")
    scheduler.tick(engine, {c.id: c}, settings=get_settings(), now=MORNING)
    with session_scope(engine) as s:
        held = sum(arm == "holdout" for arm in s.scalars(select(Enrollment.arm)))
    assert abs(held - N * share) < 4 * math.sqrt(N * share * (1 - share))
