"""How sure a Recall@N is: its confidence interval over the queries, and a paired test of two methods.

Recall@N is a binomial proportion: each of the ``n`` queries either has a ground-truth positive among its
first N results or not, and the recall is the fraction ``k / n`` that does. The queries of one test set are
the sample; a different draw of queries from the same city would give a different recall.

**Interval: Wilson score.** The 95 % interval is the Wilson score interval, the set of proportions p whose
score test does not reject ``k`` hits out of ``n`` at the 5 % level::

    center = (k/n + z²/(2n)) / (1 + z²/n)
    half   = z / (1 + z²/n) * sqrt(k/n (1 - k/n) / n + z²/(4n²))        z = 1.95996 (two-sided 95 %)

Why this one: it stays inside [0, 1] and keeps a non-zero width at 0 % and 100 % (the normal "Wald"
interval ``p ± z sqrt(p(1-p)/n)`` collapses to a point there and is badly under-covering for small n); its
coverage is close to the nominal 95 % for small n as well, while the Clopper-Pearson "exact" interval
guarantees at least 95 % and is therefore wider than needed on average (e.g. 0 of 10: Wilson [0, 27.8] %,
Clopper-Pearson [0, 30.8] %); and it is a closed form, deterministic, with no resampling seed (a bootstrap
interval of 0 of n hits has zero width). Test sets in this field have hundreds to thousands of queries,
where all three agree to a fraction of a point; the differences matter on the small synthetic test sets.

**Paired test: McNemar's exact test.** Two methods evaluated on the same queries are compared on the
per-query hits: ``b`` queries hit by method A only and ``c`` by method B only (the discordant pairs;
queries both hit or both miss say nothing about which is better). Under the null hypothesis "equal
Recall@N" each discordant query is equally likely to go either way, so ``b ~ Binomial(b + c, 1/2)``; the
two-sided p-value is ``min(1, 2 P(X <= min(b, c)))`` with ``X ~ Binomial(b + c, 1/2)``. Why this one: it
uses the pairing (a paired test is far more powerful than comparing two intervals, since both methods
succeed and fail on mostly the same queries), it is exact at every n (no large-sample approximation, no
continuity correction to choose), and it is deterministic (a paired bootstrap gives the same answer
approximately, with a seed and a resampling count to choose).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

CONFIDENCE = 0.95
SIGNIFICANCE = 0.05  # level at which a paired difference is called significant


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson_interval(hits: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval ``(low, high)`` (fractions) of ``hits`` successes out of ``n`` trials."""
    hits, n = int(hits), int(n)
    if n < 1:
        raise ValueError(f"the interval needs at least one trial, got n = {n}")
    if not 0 <= hits <= n:
        raise ValueError(f"hits must lie in [0, n], got {hits} of {n}")
    z = _z(confidence)
    p = hits / n
    denom = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n))
    # at 0 and n hits the bound is exactly 0 or 1; rounding must not move it off
    low = 0.0 if hits == 0 else max(0.0, center - half)
    high = 1.0 if hits == n else min(1.0, center + half)
    return low, high


def hits_of(recall: float, n: int, exact: bool = True) -> int:
    """The number of hits behind a recall fraction over ``n`` queries: ``round(recall * n)``.

    A measured recall is always k / n, so with ``exact`` anything else is a ValueError (a recall and a
    query count that do not belong together); published recalls are rounded and need ``exact=False``.
    """
    if n < 1:
        raise ValueError(f"the number of queries must be positive, got {n}")
    if not (math.isfinite(recall) and 0.0 <= recall <= 1.0):
        raise ValueError(f"a recall must be a fraction in [0, 1], got {recall}")
    k = round(recall * n)
    if exact and abs(k / n - recall) > 1e-9:
        raise ValueError(f"recall {recall!r} is not a whole number of hits out of {n} queries")
    return k


def recall_interval(recall: float, n: int, exact: bool = True, confidence: float = CONFIDENCE
                    ) -> tuple[float, float]:
    """Wilson interval of a Recall@N (a fraction) over ``n`` queries (``exact``: see :func:`hits_of`)."""
    return wilson_interval(hits_of(recall, n, exact), n, confidence)


def interval_columns(recall: dict[int, float], n: int, prefix: str = "recall@") -> dict[str, float]:
    """``{prefix}N_ci_low`` / ``{prefix}N_ci_high`` for every N of ``recall`` (fractions over n queries):
    the interval columns that go beside ``{prefix}N`` in a log row."""
    columns: dict[str, float] = {}
    for k, r in recall.items():
        columns[f"{prefix}{k}_ci_low"], columns[f"{prefix}{k}_ci_high"] = recall_interval(r, n)
    return columns


def interval_column_names(ns, prefix: str = "recall@") -> list[str]:
    """The names :func:`interval_columns` gives, in order, for the recall values ``ns``."""
    return [f"{prefix}{n}_ci_{side}" for n in ns for side in ("low", "high")]


def binomial_cdf_half(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), summed in log space (exact to rounding for any n)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    log_terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in range(k + 1)]
    top = max(log_terms)
    log_sum = top + math.log(math.fsum(math.exp(t - top) for t in log_terms))
    return min(1.0, math.exp(log_sum - n * math.log(2.0)))


@dataclass(frozen=True)
class PairedTest:
    """McNemar's exact test of method A against method B on the same queries.

    ``only_a`` / ``only_b``: queries hit by A only / by B only; ``n``: all queries; ``p_value``: two-sided.
    """

    only_a: int
    only_b: int
    n: int
    p_value: float

    @property
    def difference(self) -> float:
        """Recall of A minus recall of B (a fraction)."""
        return (self.only_a - self.only_b) / self.n

    def significant(self, level: float = SIGNIFICANCE) -> bool:
        return self.p_value < level

    def verdict(self, level: float = SIGNIFICANCE) -> str:
        """'above' / 'below' when A is significantly above / below B at ``level``, else 'no'."""
        if not self.significant(level):
            return "no"
        return "above" if self.only_a > self.only_b else "below"


def mcnemar_exact(hits_a: np.ndarray, hits_b: np.ndarray) -> PairedTest:
    """McNemar's exact test on per-query hits (boolean, one entry per query, the same queries in order)."""
    a = np.asarray(hits_a, dtype=bool).reshape(-1)
    b = np.asarray(hits_b, dtype=bool).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"paired hits need the same queries: {a.size} against {b.size} queries")
    if a.size == 0:
        raise ValueError("a paired test needs at least one query")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    discordant = only_a + only_b
    p = 1.0 if discordant == 0 else min(1.0, 2.0 * binomial_cdf_half(min(only_a, only_b), discordant))
    return PairedTest(only_a, only_b, int(a.size), p)


def hits_at(first_positive: np.ndarray, n: int) -> np.ndarray:
    """Per-query hit@N from the first-positive positions of a rankings file (-1 = none): 0 <= pos < N."""
    first = np.asarray(first_positive)
    return (first >= 0) & (first < n)


def drop_p_value(lower: float, upper: float, n: int) -> float:
    """One-sided p-value that the recall measured as ``lower`` truly lies below the one measured as ``upper``,
    both fractions over the same ``n`` queries, when only the two recalls are known (no per-query hits).

    The pooled two-proportion z-test: ``z = (upper - lower) / sqrt(p (1 - p) 2 / n)`` with ``p`` their mean,
    ``p-value = 1 - Phi(z)``. Measured on the same queries, the two recalls are positively correlated (the
    easy queries are hit by both), so the true variance of the difference is smaller than this unpaired one:
    the test is conservative (it calls a drop only when it is larger than an exact paired test would need),
    which is what a warning that must not cry wolf wants. A recall at or above ``upper`` gives 1.
    """
    if n < 1:
        raise ValueError(f"the number of queries must be positive, got {n}")
    if lower >= upper:
        return 1.0
    pooled = (lower + upper) / 2.0
    sd = math.sqrt(pooled * (1.0 - pooled) * 2.0 / n)
    if sd == 0.0:
        return 1.0
    return 1.0 - NormalDist().cdf((upper - lower) / sd)
