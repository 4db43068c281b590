"""ASHA's schedule for a space: the grace period g, the reduction factor η and the rungs they give.

ASHA (Li et al., 2020) judges a trial at the rungs g, g·η, g·η², … below the last epoch R, keeping
about the best 1/η of the trials that reached each rung. A rung at epoch r judges a trial on what it
learned in its first r epochs; an i-DenseNet whose learnable concatenation starts at epoch L (paper
§3.2: η is held at its initial value until then) is judged before that start at every rung r ≤ L.
"""

from __future__ import annotations

import math
from typing import Any

DEFAULT_REDUCTION = 3.0


def default_grace(epochs: int, reduction: float) -> int:
    """About three rungs below the last epoch: g = ⌈R/η²⌉ (R = 10, η = 3: rungs at 2 and 6)."""
    return max(1, min(epochs, math.ceil(epochs / reduction**2)))


def asha_rungs(epochs: int, grace: int, reduction: float) -> list[int]:
    """The epochs below ``epochs`` at which ASHA decides: Tune's milestones g·η^k, k = 0 …
    ⌊log_η(R/g)⌋, each reached at the first whole epoch ≥ it."""
    count = int(math.log(epochs / grace) / math.log(reduction) + 1) if epochs >= grace else 0
    return sorted(r for r in {math.ceil(grace * reduction**k - 1e-9) for k in range(count)} if r < epochs)


def space_schedule(space: Any) -> tuple[int, float]:
    """(grace period, reduction factor) a sweep of ``space`` uses unless told otherwise."""
    reduction = float(space.schedule.get("reduction_factor", DEFAULT_REDUCTION))
    epochs = space.train_config().epochs
    return min(int(space.schedule.get("grace_period") or default_grace(epochs, reduction)), epochs), reduction


def early_rung_warnings(space: Any, grace: int | None = None, reduction: float | None = None) -> list[str]:
    """One line per rung that falls at or before a searched ``lc_start_epoch``."""
    dims = [d for d in space.dimensions if d.name == "lc_start_epoch"]
    values = dims[0].values() if dims else None
    if dims and values is None:
        values = [dims[0].low, dims[0].high]
    if not values:
        return []
    g0, eta0 = space_schedule(space)
    grace, reduction = grace or g0, reduction or eta0
    latest = max(int(v) for v in values)
    return [f"ASHA's rung at epoch {r} falls before a searched lc_start_epoch (up to {latest}): trials whose "
            f"learnable concatenation starts at epoch >= {r} are judged there before it has trained"
            for r in asha_rungs(space.train_config().epochs, grace, reduction) if r <= latest]
