"""The lift's statistics against published worked examples, not against themselves."""

from __future__ import annotations

import math

import pytest

from outreach.outcomes.lift import lift, newcombe, two_proportion_p, wilson

# Newcombe, Statistics in Medicine 1998;17:873-890, Table II, method 10 (hybrid score, no
# continuity correction): (x1, n1, x2, n2) -> (lower, upper), to 4 decimals.
NEWCOMBE_TABLE_II = [
    ((56, 70, 48, 80), (0.0524, 0.3339)),
    ((9, 10, 3, 10), (0.1705, 0.8090)),
    ((6, 7, 2, 7), (0.0582, 0.8062)),
    ((5, 56, 0, 29), (-0.0381, 0.1926)),
    ((0, 10, 0, 20), (-0.1611, 0.2775)),
    ((10, 10, 0, 20), (0.6791, 1.0000)),
]


@pytest.mark.parametrize(("counts", "interval"), NEWCOMBE_TABLE_II)
def test_newcombe_interval_matches_the_published_table(
    counts: tuple[int, int, int, int], interval: tuple[float, float]
) -> None:
    difference, lower, upper = newcombe(*counts)
    x1, n1, x2, n2 = counts
    assert difference == pytest.approx(x1 / n1 - x2 / n2)
    assert (round(lower, 4), round(upper, 4)) == interval


def test_wilson_interval_matches_the_published_example() -> None:
    # Newcombe, Statistics in Medicine 1998;17:857-872, Table I, method 3: 81/263 -> 0.2553-0.3662.
    lower, upper = wilson(81, 263)
    assert (round(lower, 4), round(upper, 4)) == (0.2553, 0.3662)


@pytest.mark.parametrize("counts", [(56, 70, 48, 80), (120, 900, 9, 100), (30, 400, 30, 400)])
def test_p_value_is_pearsons_chi_square_without_correction(counts: tuple[int, int, int, int]) -> None:
    x1, n1, x2, n2 = counts
    table = [[x1, n1 - x1], [x2, n2 - x2]]
    total = n1 + n2
    chi2 = 0.0
    for row in range(2):
        for col in range(2):
            expected = sum(table[row]) * (table[0][col] + table[1][col]) / total
            chi2 += (table[row][col] - expected) ** 2 / expected
    # Chi-square with one degree of freedom: P(X > chi2) = erfc(sqrt(chi2 / 2)).
    assert two_proportion_p(*counts) == pytest.approx(math.erfc(math.sqrt(chi2 / 2)), abs=1e-9)


def test_no_lift_is_claimed_without_a_holdout_or_with_one_too_small() -> None:
    assert lift((10, 100), (0, 0)) == (None, "no holdout: set holdout: N% in the campaign to measure lift")
    found, why = lift((10, 100), (1, 12))
    assert found is None and why is not None and "too small to conclude" in why and "12 in the holdout" in why
    found, why = lift((1, 400), (0, 40))  # big enough arms, but almost no closures anywhere
    assert found is None and why is not None and "too few closures" in why
    found, why = lift((120, 900), (9, 100))
    assert why is None and found is not None
    assert found.difference == pytest.approx(120 / 900 - 9 / 100)
    assert found.ci95[0] < found.difference < found.ci95[1]
