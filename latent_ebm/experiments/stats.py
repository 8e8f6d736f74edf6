"""Evidence over seeds: the mean, standard error and verdict of an ordering claim.

A table cell over ``n`` seeds is ``mean ± SE`` with ``SE = s / sqrt(n)`` (``s`` the sample
standard deviation, ``ddof = 1``). A claim compares two cells (or one cell with a bound) and
reads ``holds``, ``fails`` or ``not resolved`` by the rule :data:`CRITERION`, which every table
prints under its claims.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["CRITERION", "Summary", "beats", "no_worse", "paired", "summarize", "within"]

HOLDS, FAILS, OPEN = "holds", "fails", "not resolved"

CRITERION = (
    "Criterion: with `d` the difference of the two means in the claimed direction and "
    '`se = sqrt(se_a^2 + se_b^2)` its standard error, "A beats B" holds when `d > 2 se`, '
    'fails when `d < -2 se`, and is not resolved otherwise; "A no worse than B" holds unless '
    'A is worse by more than `2 se` (then it fails); "within 10%" holds when the mean ratio '
    "plus `2 se` is at most 1.10, fails when the mean ratio minus `2 se` exceeds 1.10. With one "
    "seed (no standard error) every claim is not resolved."
)


@dataclass(frozen=True)
class Summary:
    """``mean``, standard error ``se`` (NaN for one value) and ``n`` of values over seeds."""

    mean: float
    se: float
    n: int

    def format(self, digits: int) -> str:
        """``mean ± se`` (just the mean for one value) at ``digits`` decimals."""
        if self.n < 2:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.se:.{digits}f}"


def summarize(values: Sequence[float]) -> Summary:
    """Mean and standard error of the mean of ``values`` (at least one)."""
    n = len(values)
    if n == 0:
        raise ValueError("summarize needs at least one value")
    mean = math.fsum(values) / n
    if n < 2:
        return Summary(mean, math.nan, n)
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return Summary(mean, math.sqrt(var / n), n)


def _difference(a: Summary, b: Summary, lower_is_better: bool) -> tuple[float, float]:
    """How much ``a`` is better than ``b`` (positive: better), and its standard error."""
    d = (b.mean - a.mean) if lower_is_better else (a.mean - b.mean)
    return d, math.sqrt(a.se**2 + b.se**2)


def beats(a: Summary, b: Summary, lower_is_better: bool = True) -> str:
    """Verdict of "``a`` beats ``b``" by :data:`CRITERION`."""
    if min(a.n, b.n) < 2:
        return OPEN
    d, se = _difference(a, b, lower_is_better)
    return HOLDS if d > 2 * se else FAILS if d < -2 * se else OPEN


def no_worse(a: Summary, b: Summary, lower_is_better: bool = True) -> str:
    """Verdict of "``a`` is no worse than ``b``" by :data:`CRITERION`."""
    if min(a.n, b.n) < 2:
        return OPEN
    d, se = _difference(a, b, lower_is_better)
    return FAILS if d < -2 * se else HOLDS


def within(ratios: Sequence[float], bound: float = 1.10) -> tuple[Summary, str]:
    """Summary of per-seed ratios and the verdict of "the ratio is at most ``bound``"."""
    s = summarize(ratios)
    if s.n < 2:
        return s, OPEN
    if s.mean + 2 * s.se <= bound:
        return s, HOLDS
    return s, FAILS if s.mean - 2 * s.se > bound else OPEN


def paired(a: Sequence[float], b: Sequence[float]) -> tuple[Summary, str]:
    """The per-seed (or per-run) differences ``a - b``, paired, and the verdict of "``a`` is
    lower than ``b``": :func:`beats` of those differences against zero, so it holds when their
    mean is below ``-2 se``, fails above ``2 se``, else is not resolved."""
    s = summarize([x - y for x, y in zip(a, b, strict=True)])
    return s, beats(s, Summary(0.0, 0.0, s.n))
