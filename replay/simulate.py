"""One replay: the sweep's own searcher and scheduler run a search against a learning-curve table in
simulated time.

The objects are the sweep's: :class:`sweeper.search.StudySearcher` (its Optuna study in a journal in
a private folder, the sampler :func:`sweeper.search.make_sampler` configures) and the scheduler
:func:`sweeper.sweep.make_scheduler` builds, with settings made by :func:`sweeper.sweep.build_settings`
from the same options a sweep takes. The simulator plays Tune's part, in Tune's order: a free worker
asks the searcher for a trial and adds it to the scheduler; each epoch's result goes to the scheduler
and, unless it stops the trial, to the searcher; a trial that stops (the scheduler's decision, its last
epoch, a diverged epoch) ends in the scheduler and then in the searcher, and its worker asks for the
next trial at once.

Time: W workers; a trial occupies one from its start, pays ``start_cost`` seconds (the per-trial start-up
of a real sweep: actors, process group, data, model), then each epoch's recorded wall time. A proposal
is trained as the table's nearest configuration (:func:`nearest`) with one of the table's seeds drawn
per configuration and replay. Events at the same instant are taken in the order the trials started.

After every epoch the replay records the cumulative trial-epochs, the simulated time and the sweep's
pick at that moment: the trial with the lowest best validation score so far (the rule of ``best``),
scored by its configuration's regret (:func:`replay.curves.final_test`: mean test score over the
table's seeds after the full schedule, minus the table's best such mean).
"""

from __future__ import annotations

import heapq
import math
import os
import tempfile
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from .curves import PARAM_PREFIX, TableSpec, configurations, curves, final_test

#: seconds a trial occupies its worker besides its epochs (start-up before the first epoch plus wind-down
#: after the last: trial actor, Train controller, worker group, data, model), charged before the first
#: epoch; measured with ``idensenet replay check --logs`` on real sweeps (docs/search-efficiency.md)
START_COST_S = 12.0


@dataclass(frozen=True)
class Arm:
    """A search method as the sweep's options name it: the sampler, the scheduler (``asha`` or
    ``none``), ASHA's grace period, reduction factor and brackets, TPE's random start and model."""

    name: str
    sampler: str = "tpe"
    scheduler: str = "asha"
    grace_period: int | None = None
    reduction_factor: float | None = None
    brackets: int = 1
    n_startup_trials: int | None = None
    multivariate: bool = True


@dataclass
class Trace:
    """What one replay records after every epoch (arrays of equal length) and its trials' configurations."""

    trial_epochs: list[int] = field(default_factory=list)
    time_s: list[float] = field(default_factory=list)
    regret: list[float] = field(default_factory=list)
    picks: list[int] = field(default_factory=list)  # the configuration picked
    proposals: list[int] = field(default_factory=list)  # configuration of every trial, in start order
    decisions: list[tuple[int, int, str]] = field(default_factory=list)  # (trial, epoch, decision)


class Lookup:
    """The table as a replay reads it: configurations, curves, final scores and :meth:`nearest`."""

    def __init__(self, df: pd.DataFrame, spec: TableSpec) -> None:
        self.spec = spec
        self.space = spec.space()
        self.epochs = self.space.train_config(spec.train).epochs
        self.configs = configurations(df)
        self.curves = curves(df, self.epochs)
        self.seeds = sorted({s for _, s in self.curves})
        self.seeds_of = {c: sorted(s for c2, s in self.curves if c2 == c) for c in self.configs.index}
        paired = [d.name for d in self.space.dimensions if len(d.param_names) > 1]
        if paired:
            from model.errors import UserError

            raise UserError(f"replay: the table's space draws {', '.join(paired)} as two values; replays support "
                            "dimensions of one value only (e.g. eta_init with shared: true)")
        scores = final_test(df, self.epochs)
        self.regret = (scores - scores.min()).to_dict()
        self._dims = {d.param_names[0]: d for d in self.space.dimensions if len(d.param_names) == 1}

    def params_of(self, config: dict[str, Any]) -> dict[str, Any]:
        """The Optuna parameter values of a trial config (a :class:`TrialRecord` dict)."""
        from search_spaces.suggest import TrialRecord

        run = TrialRecord.from_dict(config).run
        flat, train = run.model.flat(), run.train
        out: dict[str, Any] = {}
        for dim in self.space.dimensions:
            if not dim.applies_to(run.model.family):
                continue
            value = flat.get(dim.name) if dim.target == "model" else getattr(train, dim.name)
            out.update(dim.params_for(value))
        return out

    def nearest(self, params: dict[str, Any]) -> int:
        """The configuration with the same categorical values and the nearest numeric ones (distance in
        each dimension's range, logarithmic for ``log`` dimensions)."""
        cand = self.configs
        numeric = []
        for name, value in params.items():
            col = PARAM_PREFIX + name
            dim = self._dims.get(name)
            if dim is None or dim.kind == "categorical" or isinstance(value, str):
                cand = cand[cand[col] == value]
            else:
                numeric.append((col, float(value), dim))
        absent = [c for c in self.configs.columns if c[len(PARAM_PREFIX):] not in params]
        cand = cand[cand[absent].isna().all(axis=1)] if absent else cand
        if not len(cand):
            raise ValueError(f"no table configuration matches {params}")
        dist = np.zeros(len(cand))
        for col, value, dim in numeric:
            f = np.log if dim.log else (lambda v: v)
            span = float(f(dim.high) - f(dim.low)) or 1.0
            dist += ((f(cand[col].to_numpy(dtype=float)) - f(value)) / span) ** 2
        return int(cand.index[int(np.argmin(dist))])


def replay_settings(lookup: Lookup, arm: Arm, trials: int, seed: int, folder: str, workers: int):  # noqa: ANN201
    """The settings a sweep of the table's space with ``arm``'s options would run with."""
    from sweeper.storage import locate
    from sweeper.sweep import SweepOptions, build_settings

    path = os.path.join(folder, f"{lookup.spec.space_name}.yaml")
    with open(path, "w") as f:
        f.write(lookup.spec.space_yaml)
    opts = SweepOptions(space=path, trials=trials, seed=seed, sampler=arm.sampler, scheduler=arm.scheduler,
                        grace_period=arm.grace_period, reduction_factor=arm.reduction_factor, brackets=arm.brackets,
                        n_startup_trials=arm.n_startup_trials, multivariate=arm.multivariate,
                        train_overrides=dict(lookup.spec.train))
    return replace(build_settings(opts, locate(os.path.join(folder, "replay"))), max_concurrent=workers)


class _Trial:
    """What Tune's schedulers read of a trial: its id and config."""

    def __init__(self, trial_id: str, config: dict[str, Any]) -> None:
        self.trial_id, self.config = trial_id, config


def replay(lookup: Lookup, arm: Arm, trials: int, workers: int, seed: int, start_cost: float = 0.0) -> Trace:
    """One replay of ``arm`` with ``trials`` trials on ``workers`` workers (module docstring). ``seed``
    seeds the sampler (as a sweep's ``--seed`` does), ASHA's bracket draws and the table-seed draws."""
    from ray.tune.schedulers import TrialScheduler

    from sweeper.metrics import BEST_VAL, DIVERGED, TEST, VAL
    from sweeper.search import METRIC, MODE, StudySearcher
    from sweeper.sweep import make_scheduler

    rng = np.random.default_rng(seed)
    np.random.seed(seed % 2**32)  # ASHA draws a trial's bracket from NumPy's global generator
    draws: dict[int, int] = {}
    trace = Trace()
    with tempfile.TemporaryDirectory(prefix="idn-replay-") as folder:
        settings = replay_settings(lookup, arm, trials, seed, folder, workers)
        searcher = StudySearcher(settings)
        searcher.prepare()
        scheduler = make_scheduler(settings)
        scheduler.set_search_properties(METRIC, MODE)
        events: list[tuple[float, int, int]] = []  # (time, trial number, epoch)
        live: dict[int, tuple[_Trial, int, dict[str, np.ndarray]]] = {}
        best: dict[int, float] = {}
        started, used = 0, 0

        def start(now: float) -> None:
            nonlocal started
            tid = f"{started:05d}"
            config = searcher.suggest(tid)
            c = lookup.nearest(lookup.params_of(config))
            seeds = lookup.seeds_of[c]
            s = draws.setdefault(c, seeds[int(rng.integers(len(seeds)))])
            trial = _Trial(tid, config)
            scheduler.on_trial_add(None, trial)
            live[started] = (trial, c, lookup.curves[(c, s)])
            trace.proposals.append(c)
            heapq.heappush(events, (now + start_cost + live[started][2]["seconds"][0], started, 1))
            started += 1

        now = 0.0
        while started < min(workers, trials):
            start(now)
        while events:
            now, n, epoch = heapq.heappop(events)
            trial, c, curve = live[n]
            val, test = float(curve["val"][epoch - 1]), float(curve["test"][epoch - 1])
            diverged = not (math.isfinite(val) and math.isfinite(test))
            if diverged:  # the sweep's rule: a diverged trial is never the pick (sweeper.table.scored)
                best.pop(n, None)
            else:
                best[n] = min(best.get(n, math.inf), val)
            result = {"epoch": epoch, VAL: val, TEST: test, BEST_VAL: best.get(n, math.inf), DIVERGED: diverged,
                      "trial_id": trial.trial_id}
            used += 1
            decision = scheduler.on_trial_result(None, trial, result)
            if decision != TrialScheduler.STOP:
                searcher.on_trial_result(trial.trial_id, result)
            ends = diverged or decision == TrialScheduler.STOP or epoch >= len(curve["val"]) or epoch >= lookup.epochs
            trace.decisions.append((n, epoch, decision))
            if ends:
                scheduler.on_trial_complete(None, trial, result)
                searcher.on_trial_complete(trial.trial_id, result)
                del live[n]
                if started < trials:
                    start(now)
            else:
                heapq.heappush(events, (now + float(curve["seconds"][epoch]), n, epoch + 1))
            pick = min(best, key=lambda k: (best[k], k)) if best else None
            pick_config = trace.proposals[pick] if pick is not None else -1
            trace.trial_epochs.append(used)
            trace.time_s.append(now)
            trace.picks.append(pick_config)
            trace.regret.append(lookup.regret[pick_config] if pick is not None else math.inf)
    return trace
