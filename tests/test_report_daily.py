"""The report's daily sends and replies and its opt-outs by how they came, on a seeded population
(tests/report_population.py), each recomputed here from the rows as written, without the report's
code."""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict

import pytest
from sqlalchemy import Engine

from outreach.outcomes.funnel import funnel
from tests.report_population import FILES, ON, Population, build

WINDOW = [ON - dt.timedelta(days=back) for back in range(29, -1, -1)]


@pytest.fixture
def population(engine: Engine) -> Population:
    return build(engine)


def expected_daily(pop: Population, campaign: str | None) -> list[dict[str, object]]:
    sent: Counter[dt.date] = Counter()
    replies: Counter[dt.date] = Counter()
    for s in pop.sends:
        if s.accepted and campaign in (None, s.campaign):
            sent[s.at.date()] += 1
    for cid, at, kind in pop.replies:
        if kind != "opt_out" and campaign in (None, cid):
            replies[at.date()] += 1
    return [{"date": d.isoformat(), "sent": sent[d], "replies": replies[d]} for d in WINDOW]


def expected_opt_outs(pop: Population) -> dict[str, Counter[str]]:
    """Each opted-out number credited to the latest text of any campaign that went out to it before."""
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for phone, at, by in pop.opt_outs:
        before = [
            (s.at, i, s) for i, s in enumerate(pop.sends) if s.phone == phone and s.went_out and s.at <= at
        ]
        if not before:
            continue
        credited = max(before, key=lambda found: (found[0], found[1]))[2]
        how = "staff" if by and by.startswith("staff") else (by or "none")
        out[credited.campaign][how] += 1
    return out


def test_daily_sends_and_replies_over_the_last_30_days(engine: Engine, population: Population) -> None:
    report = funnel(engine, campaigns=FILES, on=ON).as_json()
    for c in report["campaigns"]:
        assert c["daily"] == expected_daily(population, c["id"]), c["id"]
    assert report["totals"]["daily"] == expected_daily(population, None)
    # The population has activity both inside and before the window, so the window matters.
    assert sum(d["sent"] for d in report["totals"]["daily"]) < sum(s.accepted for s in population.sends)
    assert sum(d["sent"] for d in report["totals"]["daily"]) > 0
    assert sum(d["replies"] for d in report["totals"]["daily"]) > 0


def test_opt_outs_by_how_they_came(engine: Engine, population: Population) -> None:
    report = funnel(engine, campaigns=FILES, on=ON).as_json()
    expected = expected_opt_outs(population)
    for c in report["campaigns"]:
        assert c["opted_out_by"] == dict(sorted(expected[c["id"]].items())), c["id"]
        assert c["opted_out"] == sum(expected[c["id"]].values())
        by_step: Counter[str] = Counter()
        for step in c["steps"]:
            by_step.update(step["opted_out_by"])
        assert by_step == expected[c["id"]]
    everything = sum(expected.values(), Counter())
    assert report["totals"]["opted_out_by"] == dict(sorted(everything.items()))
    assert {"staff", "twilio:21610"} <= set(everything)  # the seed covers the kinds
