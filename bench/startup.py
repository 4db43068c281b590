"""A trial's start-up by phase, for toy and digits trials on 1 and 2 workers, beside Ray's floor.

    python -m bench.startup [--trials 3] [--cases toy-1,toy-2,digits-1,digits-2] [--no-floor]

Each case runs ``idensenet sweep`` (a local Ray instance, CPU, one trial at a time, one epoch) on the
demo space (``toy``) or the digits space (``digits``) with 1 or 2 workers per trial, and reads the
``start-up`` line the sweep prints for every trial (:mod:`sweeper.startup`: Tune's trial start to the
end of the first training step, split into Ray's phases and this project's). **Ray's floor** is the
same Tune + Train set-up (:func:`sweeper.placement.connect_ray`'s local Ray, the sweep's trial
resources, :func:`sweeper.trial.make_torch_trainer`, the same progress printer) with a worker loop
that only reports: what any Tune + Train trial pays before its first line of training code. Medians
over ``--trials`` trials per case; prints one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

SPACES = {"toy": "demo-moons", "digits": "digits"}
_LINE = re.compile(r"start-up (-?[0-9.]+|nan) s to the first step: (.*)$")
_OWNER = re.compile(r"(Ray|torch|this project) (-?[0-9.]+|nan) s \(([^)]*)\)")
_PART = re.compile(r"(.+?) (-?[0-9.]+|nan)(?:, |$)")
_KEYS = {"Ray": "ray", "torch": "torch", "this project": "project"}


def parse(lines: list[str]) -> list[dict[str, float]]:
    """The phases of every ``start-up`` line (seconds by phase, each owner's sum, ``total``)."""
    out = []
    for text in lines:
        m = _LINE.search(text.rstrip())
        if not m:
            continue
        row = {"total": float(m[1])}
        for owner, seconds, parts in _OWNER.findall(m[2]):
            row[_KEYS[owner]] = float(seconds)
            row.update({name: float(v) for name, v in _PART.findall(parts)})
        out.append(row)
    return out


def medians(rows: list[dict[str, float]]) -> dict[str, Any]:
    keys = list(rows[0]) if rows else []
    return {"trials": len(rows), **{k: round(statistics.median(r[k] for r in rows), 2) for k in keys}}


def sweep_case(kind: str, workers: int, trials: int) -> list[dict[str, float]]:
    with tempfile.TemporaryDirectory() as storage:
        cmd = [sys.executable, "-m", "sweeper.cli", "sweep", "--space", SPACES[kind], "--trials", str(trials), "--max-concurrent", "1",
               "--epochs", "1", "--workers-per-trial", str(workers), "--storage", storage, "--name", "startup"]
        env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"bench.startup: {' '.join(cmd)} failed: {done.stderr.strip().splitlines()[-1:]}")
    return parse(done.stdout.splitlines())


def _empty_loop(config: dict[str, Any]) -> None:
    import ray.train

    from sweeper.metrics import TEST, VAL
    from sweeper.startup import KEY

    now = time.time()
    points = {**config[KEY], "worker_import_s": 0.0, "loop_entry": now, "torch_imported": now, "set_up": now,
              "initialised": now, "first_step": now}
    ray.train.report({"epoch": 1, VAL: 0.0, TEST: 0.0, KEY: points})  # the progress printer's keys


def _floor_trial(config: dict[str, Any]) -> None:
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from sweeper.startup import KEY
    from sweeper.storage import locate
    from sweeper.trial import make_torch_trainer

    entry = time.time()
    run = locate(config["storage"]).join("train_runs", f"train-{tune.get_context().get_trial_id()}")
    loop = {KEY: {"driver_entry": entry, "fit_called": time.time()}}
    make_torch_trainer(loop, config["shape"], run, callbacks=[TuneReportCallback()], loop=_empty_loop).fit()


def floor(workers: int, trials: int) -> list[dict[str, float]]:
    """Ray's floor: the sweep's Tune + Train set-up around a loop that only reports."""
    import ray
    from ray import tune

    from sweeper.placement import ClusterShape, connect_ray, trial_shape
    from sweeper.sweep import ProgressPrinter

    class Printer(ProgressPrinter):  # the sweep's printer, without describing a run config it has not
        def on_trial_start(self, iteration, trials, trial, **info):  # noqa: ANN001
            self._started[trial.trial_id] = time.time()

    connect_ray(None, False, False)
    shape = trial_shape(workers, False, None, ClusterShape())
    out = io.StringIO()
    try:
        with tempfile.TemporaryDirectory() as storage, contextlib.redirect_stdout(out):
            tune.Tuner(
                tune.with_resources(_floor_trial, dict(shape.driver)),
                param_space={"storage": os.path.join(storage, "floor"), "shape": shape},
                tune_config=tune.TuneConfig(num_samples=trials, max_concurrent_trials=1),
                run_config=tune.RunConfig(name="floor", storage_path=storage, verbose=0,
                                          callbacks=[Printer(1, "test")]),
            ).fit()
    finally:
        ray.shutdown()
    return parse(out.getvalue().splitlines())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=3, help="trials per case, at least 2: a sweep's baseline and enqueued trials (default 3)")
    p.add_argument("--cases", default="toy-1,toy-2,digits-1,digits-2",
                   help="comma-separated KIND-WORKERS, KIND toy or digits (default all four)")
    p.add_argument("--no-floor", action="store_true", help="skip Ray's floor")
    args = p.parse_args(argv)
    cases = []
    for text in args.cases.split(","):
        kind, _, w = text.partition("-")
        if kind not in SPACES or not w.isdigit() or int(w) < 1 or args.trials < 2:
            print(f"bench.startup: bad case {text!r} (want toy-N or digits-N) or --trials < 2", file=sys.stderr)
            return 2
        cases.append((kind, int(w)))
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    result: dict[str, Any] = {"trials_per_case": args.trials, "cases": {}, "floor": {}}
    for kind, workers in cases:
        rows = sweep_case(kind, workers, args.trials)
        result["cases"][f"{kind}-{workers}"] = medians(rows)
        print(f"{kind}-{workers}: {result['cases'][f'{kind}-{workers}']}", file=sys.stderr, flush=True)
    if not args.no_floor:
        for workers in sorted({w for _, w in cases}):
            result["floor"][f"{workers} worker(s)"] = medians(floor(workers, args.trials))
            print(f"floor-{workers}: {result['floor'][f'{workers} worker(s)']}", file=sys.stderr, flush=True)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
