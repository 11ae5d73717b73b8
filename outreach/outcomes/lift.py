"""Did the texts cause more closed care gaps than would have happened anyway? (DESIGN.md §11)

The holdout arm is a random share of each enrollment cycle that is never texted, so the difference
between the arms' gap-closure rates estimates the causal lift of the outreach. We report the
absolute difference with a 95% confidence interval by Newcombe's hybrid score method (method 10 of
Newcombe, Statistics in Medicine 1998;17:873-890: each arm's Wilson score interval combined), which
keeps its coverage near 95% with small arms and rates near 0 or 1, where the textbook Wald interval
does not; and a two-sided p-value from the pooled two-proportion z-test (equal to Pearson's
chi-square test of the 2x2 table without continuity correction).

These are a few lines over `statistics.NormalDist` (the standard library): scipy or statsmodels
would add tens of megabytes to every install (the workers and the web image too) for two formulas;
tests/test_lift.py checks them against the published worked examples.

No lift is claimed when the comparison cannot carry one: an empty holdout, fewer than
`MIN_ARM` patients in an arm, or fewer than `MIN_EXPECTED` expected closures or non-closures in an
arm (the normal approximation behind the p-value needs them). The note then says why, in words.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

MIN_ARM = 30
MIN_EXPECTED = 5
_Z95 = NormalDist().inv_cdf(0.975)


@dataclass(frozen=True)
class Lift:
    difference: float  # treated rate - holdout rate (a proportion, not a percentage)
    ci95: tuple[float, float]
    p_value: float

    def as_json(self) -> dict[str, object]:
        return {
            "difference": round(self.difference, 4),
            "ci95": [round(self.ci95[0], 4), round(self.ci95[1], 4)],
            "p_value": round(self.p_value, 4),
        }


def wilson(successes: int, n: int, z: float = _Z95) -> tuple[float, float]:
    """Wilson's score interval for a proportion (n > 0)."""
    p = successes / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    denominator = 1 + z * z / n
    return (centre - spread) / denominator, (centre + spread) / denominator


def newcombe(x1: int, n1: int, x2: int, n2: int, z: float = _Z95) -> tuple[float, float, float]:
    """(p1 - p2, lower, upper): Newcombe's hybrid score interval for a difference of proportions."""
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson(x1, n1, z)
    l2, u2 = wilson(x2, n2, z)
    difference = p1 - p2
    lower = difference - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    upper = difference + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return difference, lower, upper


def two_proportion_p(x1: int, n1: int, x2: int, n2: int) -> float:
    """Two-sided p-value of the pooled z-test of p1 = p2 (1.0 when the pooled rate is 0 or 1)."""
    pooled = (x1 + x2) / (n1 + n2)
    if pooled in (0.0, 1.0):
        return 1.0
    z = (x1 / n1 - x2 / n2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return 2 * (1 - NormalDist().cdf(abs(z)))


def too_small(treated: tuple[int, int], holdout: tuple[int, int]) -> str | None:
    """Why (treated, holdout) = ((closed, enrolled), (closed, enrolled)) cannot carry a lift, or None."""
    (x1, n1), (x2, n2) = treated, holdout
    if n2 == 0:
        return "no holdout: set holdout: N% in the campaign to measure lift"
    if min(n1, n2) < MIN_ARM:
        return f"holdout too small to conclude: {n2} in the holdout, {n1} treated; each arm needs {MIN_ARM}"
    pooled = (x1 + x2) / (n1 + n2)
    expected = min(n * rate for n in (n1, n2) for rate in (pooled, 1 - pooled))
    if expected < MIN_EXPECTED:
        return (
            f"too few closures to conclude ({x1} treated, {x2} holdout): each arm needs at least "
            f"{MIN_EXPECTED} expected closures and non-closures"
        )
    return None


def lift(treated: tuple[int, int], holdout: tuple[int, int]) -> tuple[Lift | None, str | None]:
    """(the lift, None) when the arms can carry one, else (None, why not)."""
    why = too_small(treated, holdout)
    if why is not None:
        return None, why
    (x1, n1), (x2, n2) = treated, holdout
    difference, lower, upper = newcombe(x1, n1, x2, n2)
    return Lift(difference, (lower, upper), two_proportion_p(x1, n1, x2, n2)), None
