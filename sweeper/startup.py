"""Where a trial's start-up goes: from Tune starting the trial to its first training step, by phase.

The trial driver (:func:`sweeper.trial.run_trial`) and rank 0's worker loop note wall-clock times
(``time.time()``, seconds) as they pass each point, and the worker sends them with its first report
under :data:`KEY`; the sweep's progress printer adds the time Tune started the trial and the time the
report reached it. Each phase is the difference of two consecutive points, and belongs to Ray
(actors, placement groups, Train's controller and worker group, the process group), to torch (the
modules it imports only when the first optimiser is built: ``torch._dynamo``, which any PyTorch
training pays) or to this project (its imports, reading the run's history, data, model,
initialisation and the first step). On a cluster the points come from two machines' clocks (the head's and a GPU node's),
so there a phase that spans both is as good as their clock synchronisation.
"""

from __future__ import annotations

import math
from typing import Mapping

KEY = "startup"

#: (phase, owner, from point, to point); ``worker_import_s`` is a duration, not a point
PHASES = (
    ("trial actor", "ray", "trial_start", "driver_entry"),
    ("trial driver", "project", "driver_entry", "fit_called"),
    ("Train controller and workers", "ray", "fit_called", "loop_entry"),  # minus the worker's imports
    ("worker imports", "project", None, None),
    ("lazy imports", "torch", "loop_entry", "torch_imported"),
    ("data, model, step", "project", "torch_imported", "set_up"),
    ("initialise or resume", "project", "set_up", "initialised"),
    ("first step", "project", "initialised", "first_step"),
)


OWNERS = ("ray", "torch", "project")
_OWNER_NAMES = {"ray": "Ray", "torch": "torch", "project": "this project"}


def phases(points: Mapping[str, float]) -> dict[str, float]:
    """Seconds per phase of :data:`PHASES` (NaN where a point is missing), plus each owner's sum
    (``ray``, ``torch``, ``project``) and ``total`` (Tune's trial start to the end of the first step)."""
    def span(a: str, b: str) -> float:
        return float(points[b]) - float(points[a]) if a in points and b in points else math.nan

    imports = float(points.get("worker_import_s", 0.0))
    out: dict[str, float] = {}
    for name, _, a, b in PHASES:
        if name == "worker imports":
            out[name] = imports
        elif name == "Train controller and workers":
            out[name] = span(a, b) - imports
        else:
            out[name] = span(a, b)
    for owner in OWNERS:
        out[owner] = sum(out[name] for name, who, _, _ in PHASES if who == owner)
    out["total"] = span("trial_start", "first_step")
    return out


def line(points: Mapping[str, float]) -> str:
    """``start-up 14.2 s to the first step: Ray 11.5 s (trial actor 0.01, ...), torch 1.4 s (lazy
    imports 1.40), this project 1.3 s (...)``."""
    p = phases(points)

    def part(owner: str) -> str:
        inner = ", ".join(f"{name} {p[name]:.2f}" for name, who, _, _ in PHASES if who == owner)
        return f"{_OWNER_NAMES[owner]} {p[owner]:.1f} s ({inner})"

    return f"start-up {p['total']:.1f} s to the first step: " + ", ".join(part(o) for o in OWNERS)
