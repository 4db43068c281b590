"""Search methods compared by replay: many replays per arm, anytime regret with bootstrap intervals,
and the speed-up over random search without stopping.

Every arm is replayed with the same replay seeds (seed i seeds the sampler, ASHA's bracket draws and
the table-seed draws of replay i in every arm), so arms are compared pairwise. For each arm and trial
count: the regret of the sweep's pick after every epoch, as a function of cumulative trial-epochs and of
simulated time; its median over replays at every budget, with a percentile-bootstrap 95 % interval
(replays resampled). The **speed-up** of an arm is B_random / B_arm: the fewest trial-epochs after
which random search without stopping, and the arm, have a median regret at most random search's final
median regret (its median after all N trials; random search itself has 1 by definition, and B_random
is often less than the N·R trial-epochs random search spends in all, so the ratio never credits an arm
for budget random search wasted after it had found its answer). Its interval resamples the replays of
both arms together (paired by seed) and recomputes all three. Not reached: no speed-up (0).
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import time
from dataclasses import asdict
from typing import Any, Callable

import numpy as np
import pandas as pd

from .simulate import Arm, Lookup, replay

BOOTSTRAP = 1000
CONTROL = "random, no stopping"

#: the demo space's shipped schedule (``search_spaces/demo-moons.yaml``), which the arms below vary
SHIPPED = dict(grace_period=1, reduction_factor=3)
DEFAULT = "TPE + ASHA g1 η3 (the shipped default)"

#: the compared arms: the 2×2 (sampler × early stopping), asynchronous Hyperband, and variants of the
#: shipped default's schedule and TPE settings; every schedule is explicit, so no arm depends on the
#: schedule written in the table's copy of the space
ARMS = (
    Arm(CONTROL, sampler="random", scheduler="none"),
    Arm("random + ASHA g1 η3", sampler="random", **SHIPPED),
    Arm("TPE, no stopping", scheduler="none"),
    Arm(DEFAULT, **SHIPPED),
    Arm("TPE + Hyperband g1 η3 (3 brackets)", brackets=3, **SHIPPED),
    Arm("TPE + ASHA g1 η4", grace_period=1, reduction_factor=4),
    Arm("TPE + ASHA g2 η3 (the demo's first schedule)", grace_period=2, reduction_factor=3),
    Arm("TPE + ASHA g2 η4", grace_period=2, reduction_factor=4),
    Arm("TPE + ASHA g1 η3, independent TPE", multivariate=False, **SHIPPED),
    Arm("TPE + ASHA g1 η3, random start 16", n_startup_trials=16, **SHIPPED),
)

_LOOKUP: Lookup | None = None


def _init(path: str) -> None:
    global _LOOKUP
    from .curves import read_table

    _LOOKUP = Lookup(*read_table(path))


def _one(job: tuple[Arm, int, int, int, float]) -> tuple[str, int, int, dict[str, list]]:
    arm, trials, workers, seed, start_cost = job
    tr = replay(_LOOKUP, arm, trials, workers, seed, start_cost)
    return arm.name, trials, seed, {"trial_epochs": tr.trial_epochs, "time_s": tr.time_s, "regret": tr.regret,
                                    "picks": tr.picks}


def run_replays(table: str, arms: tuple[Arm, ...], trial_counts: tuple[int, ...], replays: int, workers: int,
                start_cost: float, jobs: int, say: Callable[[str], None] = print) -> dict[tuple[str, int], list[dict]]:
    """(arm name, trial count) -> one trace (dict of lists) per replay seed 0 … replays−1."""
    todo = [(arm, n, workers, seed, start_cost) for n in trial_counts for arm in arms for seed in range(replays)]
    out: dict[tuple[str, int], dict[int, dict]] = {}
    t0 = time.monotonic()
    with mp.get_context("spawn").Pool(jobs, initializer=_init, initargs=(table,)) as pool:
        for k, (name, n, seed, trace) in enumerate(pool.imap_unordered(_one, todo, chunksize=2), start=1):
            out.setdefault((name, n), {})[seed] = trace
            if k % 20 == 0 or k == len(todo):
                say(f"[{k}/{len(todo)} replays, {time.monotonic() - t0:.0f} s]")
    order = list(dict.fromkeys((arm.name, n) for arm, n, *_ in todo))  # the arms' order, not the finishing order
    return {key: [out[key][s] for s in sorted(out[key])] for key in order}


def on_grid(traces: list[dict], axis: str, grid: np.ndarray) -> np.ndarray:
    """(replays × grid) regret of each replay's pick once ``axis`` (trial-epochs or time) reached each
    grid value (inf before the first epoch)."""
    out = np.full((len(traces), len(grid)), np.inf)
    for i, tr in enumerate(traces):
        x, r = np.asarray(tr[axis], dtype=float), np.asarray(tr["regret"], dtype=float)
        idx = np.searchsorted(x, grid, side="right") - 1
        out[i, idx >= 0] = r[idx[idx >= 0]]
    return out


def _first_at_most(curve: np.ndarray, grid: np.ndarray, target: float) -> float:
    hit = np.nonzero(curve <= target + 1e-12)[0]
    return float(grid[hit[0]]) if len(hit) else math.inf


def summarise(results: dict[tuple[str, int], list[dict]], epochs: int, seed: int = 0) -> pd.DataFrame:
    """One row per (trial count, arm): final median regret with its interval, trial-epochs and simulated
    minutes spent (medians), and the speed-up over random search without stopping with its interval."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in sorted({k[1] for k in results}):
        grid = np.arange(1, n * epochs + 1, dtype=float)
        control = on_grid(results[(CONTROL, n)], "trial_epochs", grid)
        reps = control.shape[0]
        boot = rng.integers(0, reps, size=(BOOTSTRAP, reps))
        target = float(np.median(control[:, -1]))
        for (name, count), traces in results.items():
            if count != n:
                continue
            arm = on_grid(traces, "trial_epochs", grid)
            spent = np.array([tr["trial_epochs"][-1] for tr in traces], dtype=float)
            minutes = np.array([tr["time_s"][-1] for tr in traces], dtype=float) / 60
            final = arm[:, -1]
            b_arm = _first_at_most(np.median(arm, axis=0), grid, target)
            b_control = _first_at_most(np.median(control, axis=0), grid, target)
            speed = b_control / b_arm
            boot_speed, boot_final = [], []
            for idx in boot:
                t = float(np.median(control[idx, -1]))
                boot_speed.append(_first_at_most(np.median(control[idx], axis=0), grid, t)
                                  / _first_at_most(np.median(arm[idx], axis=0), grid, t))
                boot_final.append(float(np.median(final[idx])))
            rows.append({
                "trials": n, "arm": name, "replays": len(traces),
                "final_regret": float(np.median(final)), "final_lo": float(np.percentile(boot_final, 2.5)),
                "final_hi": float(np.percentile(boot_final, 97.5)),
                "trial_epochs": float(np.median(spent)), "sim_minutes": float(np.median(minutes)),
                "target": target, "epochs_to_target": b_arm, "control_epochs_to_target": b_control,
                "speedup": speed, "speedup_lo": float(np.percentile(boot_speed, 2.5)),
                "speedup_hi": float(np.percentile(boot_speed, 97.5)),
            })
    return pd.DataFrame(rows)


def markdown(df: pd.DataFrame, workers: int) -> str:
    """The summary as the README's table."""
    lines = [f"| trials | arm | speed-up (95 % CI) | final regret, nats (95 % CI) | trial-epochs | simulated min (W={workers}) |",
             "|---|---|---|---|---|---|"]
    for r in df.itertuples(index=False):
        sp = "not reached" if r.speedup == 0 else f"{r.speedup:.2f}× ({r.speedup_lo:.2f}–{r.speedup_hi:.2f})"
        lines.append(f"| {r.trials} | {r.arm} | {sp} | {r.final_regret:.3f} ({r.final_lo:.3f}–{r.final_hi:.3f}) "
                     f"| {r.trial_epochs:.0f} | {r.sim_minutes:.1f} |")
    return "\n".join(lines)


def save(results: dict[tuple[str, int], list[dict]], df: pd.DataFrame, meta: dict[str, Any], folder: str) -> None:
    """``replays.json`` (every trace and the run's parameters), ``summary.csv``."""
    import os

    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "replays.json"), "w") as f:
        json.dump({"meta": meta, "traces": [{"arm": a, "trials": n, "replays": t} for (a, n), t in results.items()]}, f)
    df.to_csv(os.path.join(folder, "summary.csv"), index=False)


def arm_dicts(arms: tuple[Arm, ...]) -> list[dict[str, Any]]:
    return [asdict(a) for a in arms]


def figure_curves(results: dict[tuple[str, int], list[dict]], epochs: int, points: int = 120,
                  seed: int = 0) -> list[dict[str, Any]]:
    """The figure's curves: per (trial count, arm) and axis, the median regret and its bootstrap band
    on ``points`` log-spaced budgets."""
    rng = np.random.default_rng(seed)
    out = []
    for n in sorted({k[1] for k in results}):
        target = float(np.median(on_grid(results[(CONTROL, n)], "trial_epochs", np.array([n * epochs]))[:, 0]))
        t_max = max(tr["time_s"][-1] for (a, c), trs in results.items() if c == n for tr in trs)
        axes = {"trial_epochs": np.unique(np.geomspace(1, n * epochs, points).round()),
                "time_s": np.geomspace(max(t_max, 1) / 1e3, t_max, points)}
        for (name, count), traces in results.items():
            if count != n:
                continue
            for axis, grid in axes.items():
                reg = on_grid(traces, axis, grid)
                with np.errstate(invalid="ignore"):  # inf before a replay's first epoch
                    boot = np.array([np.median(reg[idx], axis=0)
                                     for idx in rng.integers(0, len(traces), size=(200, len(traces)))])
                    out.append({"trials": n, "arm": name, "axis": axis, "x": grid, "median": np.median(reg, axis=0),
                                "lo": np.percentile(boot, 2.5, axis=0), "hi": np.percentile(boot, 97.5, axis=0),
                                "target": target})
    return out


def band(results: dict[tuple[str, int], list[dict]], arm: str, trials: int, level: float = 90.0) -> tuple[float, float]:
    """The central ``level`` % of an arm's final regrets over its replays."""
    final = np.array([tr["regret"][-1] for tr in results[(arm, trials)]])
    half = (100 - level) / 2
    return float(np.percentile(final, half)), float(np.percentile(final, 100 - half))
