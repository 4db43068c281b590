"""Search efficiency: TPE + ASHA against random search without early stopping (a benchmark, not a test).

Both arms run the same space (the demo's two-moons space at 19,290 parameters, without its fixed
trials, so every trial is proposed by the sampler), the same number of trials and the same seeds, on
one local Ray instance. Per arm and seed it prints, as JSON: the best score reached, the trial-epochs
used (every epoch any trial trained), the wall time, and the trial-epochs spent (in the order epochs
were reported) until a score within ``--within`` nats of the best score of *all* runs was first seen
(null when never). ``--summary`` adds the medians and ranges over seeds.

    python -m bench.search_efficiency --trials 8 --seeds 0,1 --json-out eff.json
    python -m bench.search_efficiency --epochs 16 --steps-per-epoch 20 --grace-period 2 --reduction-factor 3

The second line trains every full trial as many steps as the demo (320) but gives ASHA three rungs
(epochs 2 and 6: after 40 and 120 steps) instead of one at epoch 2 of 4.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

ARMS = {"tpe+asha": {"sampler": "tpe", "asha": True}, "random, no stopping": {"sampler": "random", "asha": False}}


def bench_space(folder: Path) -> str:
    """The demo space with its baselines and enqueued trials removed."""
    data = yaml.safe_load((resources.files("search_spaces") / "demo-moons.yaml").read_text())
    data.pop("baselines", None)
    data.pop("enqueue", None)
    data["name"] = "efficiency-moons"
    path = folder / "efficiency-moons.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def epoch_events(exp: str) -> list[tuple[float, str, float]]:
    """(report time, trial id, score) of every epoch any trial reported, in time order."""
    from sweeper.metrics import TEST
    from sweeper.records import trial_records
    from sweeper.storage import locate

    events = []
    for rec in trial_records(locate(exp)):
        for row in rec["epochs"]:
            score = row.get(TEST)
            score = float(score) if score is not None else math.nan
            events.append((float(row.get("timestamp") or 0.0), rec["trial_id"], score))
    return sorted(events)


def run_arm(space: str, storage: str, arm: str, seed: int, trials: int, schedule: dict[str, Any]) -> dict[str, Any]:
    """One sweep. ``schedule``: ``epochs``, ``steps_per_epoch``, ``grace_period``, ``reduction_factor``
    (None keeps the space's own)."""
    from sweeper.sweep import SweepOptions, run_sweep

    spec = ARMS[arm]
    # the baseline arm gets a grace period past the last epoch: no rungs, no stopping
    grace = schedule["grace_period"] if spec["asha"] else 10**6
    train = {"steps_per_epoch": schedule["steps_per_epoch"]} if schedule["steps_per_epoch"] else {}
    name = f"{spec['sampler']}-{'asha' if spec['asha'] else 'full'}-s{seed}"
    t0 = time.time()
    outcome = run_sweep(SweepOptions(space=space, trials=trials, seed=seed, sampler=spec["sampler"],
                                     epochs=schedule["epochs"], grace_period=grace,
                                     reduction_factor=schedule["reduction_factor"] if spec["asha"] else None,
                                     train_overrides=train, storage=storage, name=name))
    wall = time.time() - t0
    events = epoch_events(outcome.experiment)
    finite = [s for _, _, s in events if math.isfinite(s)]
    return {"arm": arm, "seed": seed, "trials": trials, "experiment": outcome.experiment, "wall_s": round(wall, 1),
            "trial_epochs": len(events), "best": min(finite) if finite else None, "_events": events}


def epochs_to_reach(events: list[tuple[float, str, float]], target: float) -> int | None:
    for i, (_, _, score) in enumerate(events, start=1):
        if math.isfinite(score) and score <= target:
            return i
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.search_efficiency", description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=8, help="trials per sweep (default 8)")
    p.add_argument("--seeds", default="0,1", help="comma-separated seeds (default 0,1)")
    p.add_argument("--within", type=float, default=0.02, help="nats from the overall best that count as reached")
    p.add_argument("--storage", default=None, help="experiment folder (default: a temporary one)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per full trial, R (default: the space's)")
    p.add_argument("--steps-per-epoch", type=int, default=None, help="steps per epoch (default: the space's)")
    p.add_argument("--grace-period", type=int, default=None, help="ASHA's first rung g (default: the space's)")
    p.add_argument("--reduction-factor", type=float, default=None, help="ASHA's eta (default: the space's)")
    p.add_argument("--json-out", default=None)
    args = p.parse_args(argv)
    schedule = {"epochs": args.epochs, "steps_per_epoch": args.steps_per_epoch,
                "grace_period": args.grace_period, "reduction_factor": args.reduction_factor}
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    with tempfile.TemporaryDirectory(prefix="idn-eff-") as tmp:
        space = bench_space(Path(tmp))
        storage = args.storage or str(Path(tmp) / "runs")
        runs = []
        for seed in seeds:  # the arms alternate, so load on this machine hits both alike
            for arm in ARMS:
                runs.append(run_arm(space, storage, arm, seed, args.trials, schedule))
                print(f"[efficiency] {arm} seed {seed}: best {runs[-1]['best']}, {runs[-1]['trial_epochs']} "
                      f"trial-epochs, {runs[-1]['wall_s']} s", flush=True)
    overall = min(r["best"] for r in runs if r["best"] is not None)
    for r in runs:
        r["trial_epochs_to_within"] = epochs_to_reach(r.pop("_events"), overall + args.within)
    summary = {}
    for arm in ARMS:
        mine = [r for r in runs if r["arm"] == arm]
        summary[arm] = {k: {"median": statistics.median(v), "min": min(v), "max": max(v)}
                        for k in ("best", "trial_epochs", "wall_s")
                        if (v := [r[k] for r in mine if r[k] is not None])}
        reached = [r["trial_epochs_to_within"] for r in mine]
        summary[arm]["reached_within"] = f"{sum(x is not None for x in reached)}/{len(reached)}"
    out = {"overall_best": overall, "within": args.within, "schedule": schedule, "runs": runs, "summary": summary}
    from bench.measure import emit_json

    emit_json(out, args.json_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
