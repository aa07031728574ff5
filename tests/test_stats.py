"""vpr.stats: the Wilson interval and McNemar's exact test against hand-worked cases, the definition written
out, a brute-force enumeration and scipy."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from scipy.stats import binomtest

from vpr.stats import (
    hits_at,
    hits_of,
    interval_column_names,
    interval_columns,
    mcnemar_exact,
    recall_interval,
    wilson_interval,
)

Z = 1.959963984540054  # the 97.5 % quantile of the standard normal distribution


def test_wilson_hand_worked():
    # 0 of 10: low = 0, high = (z^2/n) / (1 + z^2/n) = 0.38415 / 1.38415
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.277533, abs=1e-6))
    # 10 of 10: the mirror image
    assert wilson_interval(10, 10) == (pytest.approx(1 - 0.277533, abs=1e-6), 1.0)
    # 5 of 10: center 1/2, half-width z / 1.38415 * sqrt(1/40 + z^2/400) = 1.41600 * 0.18602 = 0.26341
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.23659, abs=1e-5) and high == pytest.approx(0.76341, abs=1e-5)
    # one query: 0 of 1 -> [0, z^2 / (1 + z^2)]
    assert wilson_interval(0, 1) == (0.0, pytest.approx(Z * Z / (1 + Z * Z), rel=1e-12))
    # Clopper-Pearson is wider at 0 of 10: 1 - 0.025^(1/10) = 0.3085
    exact = binomtest(0, 10).proportion_ci(method="exact")
    assert exact.high == pytest.approx(0.3085, abs=1e-4) and exact.high > wilson_interval(0, 10)[1]


@pytest.mark.parametrize("n", [1, 2, 3, 7, 20, 80, 315, 8280])
def test_wilson_bounds_are_where_the_score_statistic_equals_z(n):
    # The Wilson interval is {p : |k - n p| <= z sqrt(n p (1 - p))}; at an inner bound equality holds.
    for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
        low, high = wilson_interval(k, n)
        assert 0.0 <= low <= k / n <= high <= 1.0
        for p in (low, high):
            if 0.0 < p < 1.0:
                assert abs(k - n * p) == pytest.approx(Z * math.sqrt(n * p * (1 - p)), rel=1e-9, abs=1e-9)
        assert (low == 0.0) == (k == 0) and (high == 1.0) == (k == n)


@pytest.mark.parametrize("k, n", [(0, 5), (1, 5), (3, 7), (19, 80), (45, 80), (269, 315), (7510, 8280)])
def test_wilson_matches_scipy(k, n):
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson_interval(k, n)
    assert low == pytest.approx(ci.low, abs=1e-12) and high == pytest.approx(ci.high, abs=1e-12)


def test_recall_interval_and_columns():
    assert hits_of(19 / 80, 80) == 19
    assert recall_interval(19 / 80, 80) == wilson_interval(19, 80)
    with pytest.raises(ValueError, match="whole number"):
        hits_of(0.5, 3)                     # 1.5 of 3 queries cannot be a measured recall
    assert hits_of(0.854, 315, exact=False) == 269   # a published, rounded recall
    with pytest.raises(ValueError):
        wilson_interval(0, 0)
    cols = interval_columns({1: 0.25, 5: 1.0}, 4)
    assert list(cols) == interval_column_names([1, 5]) == [
        "recall@1_ci_low", "recall@1_ci_high", "recall@5_ci_low", "recall@5_ci_high"]
    assert (cols["recall@1_ci_low"], cols["recall@1_ci_high"]) == wilson_interval(1, 4)
    assert cols["recall@5_ci_high"] == 1.0


def test_hits_at():
    first = np.array([-1, 0, 2, 5, 1])
    assert hits_at(first, 1).tolist() == [False, True, False, False, False]
    assert hits_at(first, 3).tolist() == [False, True, True, False, True]


def _paired(only_a: int, only_b: int, both: int = 3, neither: int = 2) -> tuple[np.ndarray, np.ndarray]:
    a = [1] * only_a + [0] * only_b + [1] * both + [0] * neither
    b = [0] * only_a + [1] * only_b + [1] * both + [0] * neither
    order = np.random.default_rng(only_a * 31 + only_b).permutation(len(a))  # the order must not matter
    return np.array(a, bool)[order], np.array(b, bool)[order]


def test_mcnemar_hand_worked():
    # 5 discordant queries all for A: p = 2 * (1/2)^5 = 0.0625, not significant at 5 %
    t = mcnemar_exact(*_paired(5, 0))
    assert (t.only_a, t.only_b, t.n) == (5, 0, 10) and t.p_value == pytest.approx(0.0625, rel=1e-12)
    assert t.verdict() == "no"
    # 6 all for A: p = 2/64 = 0.03125 -> A significantly above B; and the mirror image below
    assert mcnemar_exact(*_paired(6, 0)).p_value == pytest.approx(0.03125, rel=1e-12)
    assert mcnemar_exact(*_paired(6, 0)).verdict() == "above"
    assert mcnemar_exact(*_paired(0, 6)).verdict() == "below"
    # 1 against 9: p = 2 * (1 + 10) / 1024
    assert mcnemar_exact(*_paired(1, 9)).p_value == pytest.approx(22 / 1024, rel=1e-12)
    # no discordant query: nothing to tell them apart
    t = mcnemar_exact(*_paired(0, 0))
    assert t.p_value == 1.0 and t.verdict() == "no" and t.difference == 0.0
    assert mcnemar_exact(*_paired(4, 4)).p_value == 1.0
    with pytest.raises(ValueError, match="same queries"):
        mcnemar_exact(np.ones(3, bool), np.ones(4, bool))


def _brute_force_p(only_a: int, only_b: int) -> Fraction:
    """Two-sided exact p-value by enumerating every way the discordant queries could have fallen: each goes
    to A or to B with probability 1/2 under the null; count the outcomes at least as far from an even split
    as the observed one."""
    m = only_a + only_b
    observed = abs(2 * only_a - m)
    extreme = sum(1 for signs in itertools.product((0, 1), repeat=m) if abs(2 * sum(signs) - m) >= observed)
    return Fraction(extreme, 2 ** m)


def test_mcnemar_matches_brute_force_enumeration():
    for only_a, only_b in itertools.product(range(8), repeat=2):
        if only_a + only_b > 12:
            continue
        expected = float(_brute_force_p(only_a, only_b))
        assert mcnemar_exact(*_paired(only_a, only_b)).p_value == pytest.approx(expected, rel=1e-12), (
            only_a, only_b)


@pytest.mark.parametrize("only_a, only_b", [(13, 30), (120, 160), (3000, 3120), (0, 1500), (2500, 2500)])
def test_mcnemar_matches_scipy_binomtest(only_a, only_b):
    expected = binomtest(only_a, only_a + only_b, 0.5, alternative="two-sided").pvalue
    got = mcnemar_exact(*_paired(only_a, only_b)).p_value
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_the_drop_test_is_the_one_sided_pooled_two_proportion_z_test():
    from vpr.stats import drop_p_value

    # 2 of 10 against 8 of 10: pooled 0.5, sd = sqrt(0.25 * 2 / 10) = 0.2236, z = 2.683, P(Z > z) = 0.00365
    assert drop_p_value(0.2, 0.8, 10) == pytest.approx(0.003645, abs=2e-6)
    # 85 % against 90 % of 100 queries: z = 0.05 / sqrt(0.875 * 0.125 * 0.02) = 1.069, p = 0.1425 (noise)
    assert drop_p_value(0.85, 0.90, 100) == pytest.approx(0.1425, abs=2e-4)
    assert drop_p_value(0.9, 0.9, 100) == 1.0 and drop_p_value(0.95, 0.9, 100) == 1.0
