"""The growth solver: the width that brings a model closest to a parameter budget.

With every other choice fixed, the closed-form count of :mod:`search_spaces.count` is a quadratic in
h = k/a (k the growth of the dense layers, eq. 4-5; a = 2 for CLipSwish, eq. 11, so k stays even):
P(h) = α·h² + β·h + γ with α, β > 0 integers read off three exact counts (second differences).
P is strictly increasing in h, so the closest achievable count lies at ⌊h*⌋ or ⌈h*⌉ of the real
root of P(h) = B; both neighbours are evaluated exactly, and the nearer one wins (ties: the smaller
width). Every family names the width the solver sets (:meth:`model.families.Family.width_field`;
for a Residual Flow the hidden width H = a·h of its conv blocks, or on toy data the common width of
its hidden layers) and its count must be a quadratic in it.

Results (CLipSwish, LC, budgets from :mod:`search_spaces.budgets`; tests/test_solver.py):

* small CIFAR10 (4-4-4, 8,730,441): depth 2 → 318, 3 → 178, 4 → 122 as in the paper; depth 5 → 90
  (8,628,606, −1.17%), nearer than the paper's 92 (8,839,086, +1.24%).
* full CIFAR10 (16-16-16, 25,174,233): depth 3 → 174 (+0.80%); the paper's 172 (24,894,690,
  −1.11%) is the other neighbour and also within ±1.5%. Depths 2/4/5 → 300/122/94.
* ImageNet32 (32-32-32, 47,099,289): depth 3 → 172 (46,981,074, −0.25%), the paper's growth.
* Residual Flow with CLipSwish at the small budget: hidden 652 (8,723,831), the paper's ``--idim``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from model.families import channel_multiplier
from model.config import ModelConfig
from model.errors import UserError
from model.families import get_family

from .budgets import DEFAULT_TOLERANCE
from .count import Arch, arch_from_values, arch_of, count_arch


class BudgetError(UserError):
    """No width brings the model within the tolerance of the budget; names the nearest counts."""


@dataclass(frozen=True)
class Solution:
    """The solved width of one configuration and how well it meets the budget."""

    field: str  # the family's width field, e.g. "growth" or "hidden"
    width: int
    count: int
    budget: int
    tolerance: float
    below: tuple[int, int] | None  # (width, count) of the largest width counting <= budget
    above: tuple[int, int] | None  # (width, count) of the smallest width counting > budget

    @property
    def deviation(self) -> float:
        """Relative deviation (count − budget) / budget."""
        return (self.count - self.budget) / self.budget

    @property
    def feasible(self) -> bool:
        return abs(self.deviation) <= self.tolerance

    def nearest_text(self) -> str:
        """The achievable counts either side of the budget, e.g. for an error message."""
        parts = []
        for side in (self.below, self.above):
            if side is not None:
                w, c = side
                parts.append(f"{self.field} {w} -> {c:,} ({100 * (c - self.budget) / self.budget:+.2f}%)")
        return " or ".join(parts)


def solve_arch(arch: Arch, budget: int, tolerance: float = DEFAULT_TOLERANCE) -> Solution:
    """:func:`nearest_width` on the count-relevant tuple (no :class:`ModelConfig` validation cost).

    The count is a quadratic in the width h, P(h) = αh² + βh + γ (each weight's size is a product
    of at most two widths), so three exact counts give α, β, γ and the root of P(h) = budget; the
    integer widths either side of it are counted exactly and the closer one is kept."""
    family = get_family(arch.family)
    field = family.width_field(arch.toy)
    a = channel_multiplier(arch.activation)

    def p(h: int) -> int:
        return count_arch(arch._replace(arch=family.with_width(arch.arch, a * h, arch.toy)))

    c1, c2, c3 = p(1), p(2), p(3)
    alpha2 = c3 - 2 * c2 + c1  # 2α
    beta = c2 - c1 - 3 * alpha2 / 2  # P(2) − P(1) = 3α + β
    gamma = c1 - alpha2 / 2 - beta
    if alpha2 > 0:
        disc = beta * beta + 2 * alpha2 * (budget - gamma)
        root = (-beta + math.sqrt(max(disc, 0.0))) / alpha2
    else:
        root = (budget - gamma) / beta
    h = max(1, math.floor(root))
    # float rounding can put the root a step off: walk to the exact bracket P(h) <= B < P(h + 1)
    while h > 1 and p(h) > budget:
        h -= 1
    while p(h + 1) <= budget:
        h += 1
    lo_count, hi_count = p(h), p(h + 1)
    below = (a * h, lo_count) if lo_count <= budget else None
    above = (a * (h + 1), hi_count)
    if below is None:  # even the narrowest model exceeds the budget
        above = (a * h, lo_count)
        best = above
    elif budget - lo_count <= hi_count - budget:
        best = below
    else:
        best = above
    return Solution(field, best[0], best[1], budget, tolerance, below, above)


def nearest_width(cfg: ModelConfig, budget: int, tolerance: float = DEFAULT_TOLERANCE) -> Solution:
    """The width (the family's width field) whose count is closest to ``budget``, with
    ``cfg``'s other fields fixed; never raises for being out of tolerance (see ``.feasible``)."""
    return solve_arch(arch_of(cfg), budget, tolerance)


def solve_growth(cfg: ModelConfig, budget: int, tolerance: float = DEFAULT_TOLERANCE) -> Solution:
    """:func:`nearest_width`, raising :class:`BudgetError` when no width is within ``tolerance``."""
    sol = nearest_width(cfg, budget, tolerance)
    if not sol.feasible:
        raise BudgetError(
            f"no {sol.field} fits {budget:,} ±{100 * tolerance:g}% for this {cfg.family} model, "
            f"{cfg.activation}, blocks {'-'.join(map(str, cfg.blocks_per_scale))}: nearest "
            f"{sol.nearest_text()}"
        )
    return sol


def solved_config(cfg: ModelConfig, budget: int, tolerance: float = DEFAULT_TOLERANCE) -> ModelConfig:
    """``cfg`` with its width replaced by the solved one (raises :class:`BudgetError`)."""
    sol = solve_growth(cfg, budget, tolerance)
    return with_width(cfg, sol.width)


def with_width(cfg: ModelConfig, width: int) -> ModelConfig:
    """``cfg`` with its family's width field set to ``width``."""
    return cfg.replace(arch=cfg.family_spec.with_width(cfg.arch, width, cfg.is_toy))


def growth_table(
    cfg: ModelConfig, budget: int, depths: list[int], tolerance: float = DEFAULT_TOLERANCE
) -> list[tuple[int, Solution]]:
    """(depth, nearest solution) for each depth, all other fields of ``cfg`` fixed."""
    return [(d, nearest_width(cfg.replace(depth=d), budget, tolerance)) for d in depths]


def with_width_values(values: Mapping[str, Any], width: int, family: str | None = None) -> dict[str, Any]:
    """Flat model values with the width field of ``family`` (default: their own) set to ``width``."""
    arch = arch_from_values({**values, "family": family or values["family"]})
    spec = get_family(arch.family)
    field = spec.width_field(arch.toy)
    return {**values, field: getattr(spec.with_width(arch.arch, width, arch.toy), field)}


def width_field_of(values: Mapping[str, Any], family: str | None = None) -> str:
    """The width field the solver sets for flat model values (of ``family``, default their own)."""
    return get_family(family or values["family"]).width_field(len(values["input_shape"]) == 1)
