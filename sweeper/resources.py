"""Concurrency arithmetic for Train-inside-Tune sweeps.

Every trial holds two placement groups (ray-notes §5 P2): the trial driver's (``DRIVER_CPU`` logical
CPUs, so it never competes with the workers for real cores) and its worker group's
(``workers × resources_per_worker``). A trial can only start when both fit, so the number of trials
that may run at once is ⌊available / per-trial need⌋, taken over every resource the trial asks for.
Running more trials than that lets the drivers take resources their own workers then wait for forever.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

from .errors import UserError

DRIVER_CPU = 0.01  # logical CPUs of the Tune trial driver; it only waits on the worker group
_EPS = 1e-9


def default_cpus_per_worker(use_gpu: bool) -> float:
    """One core per worker; on CPU 0.99, so a one-worker trial plus its driver fits one core."""
    return 1.0 if use_gpu else 1.0 - DRIVER_CPU


@dataclass(frozen=True)
class TrialShape:
    """What one trial asks of the cluster: ``workers`` Train workers of ``worker`` resources each,
    plus the driver's ``driver`` resources (a sliver of CPU, or the head's ``trial_driver`` unit on
    a cluster built from ``cluster.yaml``; see :mod:`sweeper.cluster`)."""

    workers: int
    worker: dict[str, float]
    driver: dict[str, float] = field(default_factory=lambda: {"CPU": DRIVER_CPU})
    use_gpu: bool = False

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise UserError(f"workers per trial must be >= 1, got {self.workers}")
        if float(self.worker.get("CPU", 0.0)) <= 0:
            raise UserError(f"--cpus-per-worker must be > 0, got {self.worker.get('CPU')}")

    @classmethod
    def local(cls, workers: int, use_gpu: bool, cpus_per_worker: float | None = None) -> "TrialShape":
        """The shape on a single machine: driver ``DRIVER_CPU``, workers of ``cpus_per_worker`` CPUs."""
        cpw = default_cpus_per_worker(use_gpu) if cpus_per_worker is None else float(cpus_per_worker)
        worker = {"CPU": cpw, **({"GPU": 1.0} if use_gpu else {})}
        return cls(workers, worker, {"CPU": DRIVER_CPU}, use_gpu)

    @classmethod
    def from_placement(cls, placement) -> "TrialShape":
        """From :class:`sweeper.cluster.TrialPlacement` (driver/worker requests of the connected cluster)."""
        driver = {k: float(v) for k, v in placement.driver.items() if float(v) > 0}
        return cls(placement.num_workers, dict(placement.worker), driver or {"CPU": DRIVER_CPU}, placement.use_gpu)

    def worker_resources(self) -> dict[str, float]:
        """Resources of one Train worker (``ScalingConfig.resources_per_worker``)."""
        return dict(self.worker)

    def per_trial(self) -> dict[str, float]:
        """Total of one trial: driver plus worker group."""
        need = dict(self.driver)
        for k, v in self.worker.items():
            need[k] = need.get(k, 0.0) + self.workers * float(v)
        return {k: v for k, v in need.items() if v > 0}


def fitting_trials(cluster: Mapping[str, float], shape: TrialShape) -> int:
    """⌊cluster[r] / need[r]⌋ minimised over the resources r a trial needs (0: not even one fits)."""
    counts = []
    for key, need in shape.per_trial().items():
        have = float(cluster.get(key, 0.0))
        counts.append(int(math.floor(have / need + _EPS)) if need > 0 else 10**9)
    return min(counts)


def max_concurrent_trials(
    cluster: Mapping[str, float], shape: TrialShape, trials: int, requested: int | None = None
) -> int:
    """Trials to run at once: what fits, capped by ``trials`` and by an explicit ``requested`` value.

    Raises :class:`UserError` when not even one trial fits (more workers than the cluster can give),
    or when ``requested`` exceeds what fits (that would deadlock).
    """
    fit = fitting_trials(cluster, shape)
    if fit < 1:
        need = ", ".join(f"{v:g} {k}" for k, v in shape.per_trial().items())
        have = ", ".join(f"{float(cluster.get(k, 0.0)):g} {k}" for k in shape.per_trial())
        raise UserError(
            f"one trial needs {need} ({shape.workers} workers) but the cluster has {have}; "
            f"use fewer workers per trial or CPUs per worker, or add nodes"
        )
    if requested is not None:
        if requested < 1:
            raise UserError(f"--max-concurrent must be >= 1, got {requested}")
        if requested > fit:
            raise UserError(
                f"--max-concurrent {requested} exceeds the {fit} trial(s) the cluster can hold at once"
            )
        fit = requested
    return max(1, min(fit, trials))


def check_worker_fits_a_node(nodes_resources: list[Mapping[str, float]], shape: TrialShape) -> None:
    """Each Train worker is one actor and must fit on a single node; raise :class:`UserError` if none can hold it."""
    want = shape.worker_resources()
    for res in nodes_resources:
        if all(float(res.get(k, 0.0)) + _EPS >= v for k, v in want.items()):
            return
    raise UserError(
        "no node can hold one worker ("
        + ", ".join(f"{v:g} {k}" for k, v in want.items())
        + "); lower --cpus-per-worker or use bigger nodes"
    )
