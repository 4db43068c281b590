"""Intervals over seeds for the confirmation's verdict.

For S scores x₁ … x_S of one configuration (one per seed), the mean x̄, the sample standard
deviation s (divisor S − 1) and the 95 % interval x̄ ± t₀.₉₇₅,S−1 · s/√S of Student's t. Two
configurations trained with the same seeds (the same initial draws and data order per seed) are
compared **paired**: the interval of the differences dₛ = aₛ − bₛ, which removes what a seed does to
both. A difference is *shown* when its interval excludes 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from scipy import stats

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    n: int
    mean: float
    sd: float  # NaN for one value
    low: float  # NaN for one value
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    @property
    def excludes_zero(self) -> bool:
        return self.n >= 2 and (self.low > 0 or self.high < 0)

    def text(self, digits: int = 3) -> str:
        if self.n < 2:
            return f"{self.mean:.{digits}f} (one seed: no interval)"
        return f"{self.mean:.{digits}f} (95% CI {self.low:.{digits}f} to {self.high:.{digits}f}, sd {self.sd:.{digits}f})"


def mean_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean, sample standard deviation and the two-sided t interval of ``values``."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        raise ValueError("no values")
    mean = sum(xs) / n
    if n == 1:
        return Interval(1, mean, math.nan, math.nan, math.nan)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(n, mean, sd, mean - half, mean + half)


def paired_difference(a: dict[int, float], b: dict[int, float], level: float = LEVEL) -> Interval:
    """The interval of aₛ − bₛ over the seeds s both hold."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError("no seed in common")
    return mean_interval([a[s] - b[s] for s in seeds], level)
