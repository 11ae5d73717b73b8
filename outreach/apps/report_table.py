"""The funnel as terminal tables (`outreach report`, `outreach demo`).

outcomes/funnel.py counts; this module only draws what it counted, so the engine needs no
terminal library and the figures reach scripts (`--json`) and people (rich tables) alike. On a
terminal the tables are rich tables whose first column (steps, campaigns) is never folded;
piped or redirected, the same rows come as plain aligned lines (outreach/apps/tables.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from outreach.apps.tables import Column, print_rows
from outreach.outcomes.funnel import Figures, FunnelReport, Summary

# Two tables per campaign (delivery, then engagement) so each fits a common terminal width.
_DELIVERY = (
    ("planned", "planned"),
    ("pending", "pending"),
    ("sent", "sent"),
    ("delivered", "deliv."),
    ("undelivered", "undeliv."),
    ("failed", "failed"),
    ("canceled", "cancel."),
    ("unknown", "unknown"),
)
_ENGAGEMENT = (
    ("sent", "sent"),
    ("replied", "replied"),
    ("activated", "activated"),
    ("opted_out", "opted out"),
)
_RATES = (("delivered", "deliv. %"), ("replied", "reply %"), ("activated", "activ. %"))
# What the texts led to: clicks on the tracked link and closed care gaps (issue #13).
_OUTCOMES = (("sent", "sent"), ("engaged", "engaged"), ("clicked", "clicked"), ("gap_closed", "closed"))
_OUTCOME_RATES = (("clicked", "click %"), ("gap_closed", "closed %"))
# (counts, rates) of each table, in the order they print.
_TABLES = ((_DELIVERY, ()), (_ENGAGEMENT, _RATES), (_OUTCOMES, _OUTCOME_RATES))

# A table section: (row label, figures, bold) rows.
Section = list[tuple[str, Figures, bool]]


def print_report(report: FunnelReport, console: Console) -> None:
    """Per campaign: steps, the campaign's total and its languages as rows; then all campaigns."""
    since = f" for enrollments since {report.since}" if report.since else ""
    for hold in report.sender_holds:
        scope = f" (to {hold['scope']} numbers)" if hold["scope"] != "all" else ""
        code = hold["error_code"] or f"HTTP {hold['http_status']}"
        console.print(
            f"[red]sending paused[/red]: sender {escape(hold['sender'])}{scope} since {hold['since']}: "
            f"{code}: {escape(hold['message'])} (messages stay queued; fix the setup, then `outreach sweep`)",
            soft_wrap=True,
        )
    if not report.campaigns:
        console.print(f"no campaigns{since}", soft_wrap=True)
        return
    for campaign in report.campaigns:
        if campaign.eligible is not None:
            eligible = f"{campaign.eligible} eligible on {report.on}"
        elif campaign.active is False:
            eligible = f"not active on {report.on}"
        else:
            eligible = "campaign file not loaded"
        console.print(
            f"[bold]{escape(campaign.id)}[/bold]: {escape(campaign.name)} "
            f"({eligible}, {campaign.summary.enrolled} enrolled{since})",
            soft_wrap=True,
        )
        sections: list[Section] = [
            [(step, figures, False) for step, figures in campaign.steps.items()],
            [
                (f"{step}/{variant}", figures, False)
                for step, variants in campaign.variants.items()
                for variant, figures in variants.items()
            ],
            [("all steps", campaign.summary, True)],
            [(f"lang {lang}", s, False) for lang, s in campaign.languages.items()],
        ]
        _tables(console, "step", sections)
        _details(console, campaign.summary, campaign.languages)
        if any(campaign.links.values()):
            hits = campaign.links
            console.print(
                f"  tracked links: {hits['clicks']} clicks, {hits['previews']} previews", markup=False
            )
        console.print(f"  {comparison_line(campaign.arms.as_json())}", soft_wrap=True, markup=False)
        console.print()
    if len(report.campaigns) > 1:
        eligible_total = report.eligible
        console.print(
            f"[bold]All campaigns[/bold] ({eligible_total if eligible_total is not None else 'no'} "
            f"eligible, {report.totals.enrolled} enrolled{since})",
            soft_wrap=True,
        )
        sections = [
            [(c.id, c.summary, False) for c in report.campaigns],
            [("total", report.totals, True)],
            [(f"lang {lang}", s, False) for lang, s in report.languages.items()],
        ]
        _tables(console, "campaign", sections)
        _details(console, report.totals, report.languages)


def _tables(console: Console, first: str, sections: list[Section]) -> None:
    if not console.is_terminal:
        _plain(console, first, sections)
        return
    widest = max((len(label) for section in sections for label, _, _ in section), default=0)
    for counts, rates in _TABLES:
        table = _table(first, [header for _, header in (*counts, *rates)], widest)
        for section in (s for s in sections if s):
            for label, figures, bold in section:
                table.add_row(label, *_cells(figures, counts, rates), style="bold" if bold else None)
            table.add_section()
        console.print(table)


def _plain(console: Console, first: str, sections: list[Section]) -> None:
    """The same tables as plain aligned rows (tables.py), for a pipe or a file."""
    rows = [row for section in sections for row in section]
    for counts, rates in _TABLES:
        names = (*counts, *rates)
        columns = [Column(first, key=True), *(Column(header, right=True) for _, header in names)]
        cells = [[label, *_cells(figures, counts, rates)] for label, figures, _ in rows]
        print_rows(columns, cells, console=console)
        console.print()


def _cells(
    figures: Figures, counts: Iterable[tuple[str, str]], rates: Iterable[tuple[str, str]]
) -> list[str]:
    return [str(getattr(figures, name)) for name, _ in counts] + [
        _pct(figures.pct(getattr(figures, name))) for name, _ in rates
    ]


def comparison_line(arms: Mapping[str, Any]) -> str:
    """Treated vs holdout in one sentence (`CampaignFunnel.as_json`'s arms fields)."""
    treated, holdout = arms["treated"], arms["holdout"]
    line = f"gap closed: treated {_arm(treated)}, holdout {_arm(holdout)}; "
    found = arms["lift"]
    if found is None:
        line += f"no lift claimed ({arms['lift_note']})"
    else:
        low, high = found["ci95"]
        p = found["p_value"]
        line += (
            f"lift {100 * found['difference']:+.1f} points (95% CI {100 * low:+.1f} to {100 * high:+.1f}), "
            f"p {'< 0.001' if p < 0.001 else f'= {p:.3f}'}"
        )
    if arms["days_to_close_median"] is not None:
        line += f"; median {arms['days_to_close_median']:g} days from first text to closure"
    return line


def _arm(figures: Mapping[str, Any]) -> str:
    if not figures["enrolled"]:
        return "none enrolled"
    return f"{figures['gap_closed']}/{figures['enrolled']} ({figures['gap_closed_pct']:.1f}%)"


def _table(first: str, headers: list[str], widest: int) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 0, 0, 1))
    # Step names and campaign ids stay whole (a step is what `campaigns list` calls it); on a
    # narrow terminal the table is wider than the window rather than fold an id in two.
    table.add_column(first, no_wrap=True, min_width=max(widest, len(first)))
    for header in headers:
        table.add_column(header, justify="right", min_width=len(header))
    return table


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _details(console: Console, summary: Summary, languages: Mapping[str, Summary]) -> None:
    lines = [
        ("enrolled by language", {lang: s.enrolled for lang, s in languages.items()}),
        ("failed by code", summary.failed_codes),
        ("undelivered by code", summary.undelivered_codes),
        ("canceled by reason", summary.cancel_reasons),
        ("outcomes", summary.outcomes),
        ("ended", summary.ended),
    ]
    for label, counts in lines:
        if any(counts.values()):
            console.print(f"  {label}: {_pairs(counts.items())}", soft_wrap=True, markup=False)
    console.print(
        f"  hand-offs: {summary.handoffs_open} open, {summary.handoffs_closed} closed",
        soft_wrap=True,
        markup=False,
    )


def _pairs(items: Iterable[tuple[str, int]]) -> str:
    return ", ".join(f"{key} {n}" for key, n in sorted(items) if n)
