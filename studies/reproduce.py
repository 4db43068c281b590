"""``idensenet reproduce toy``: the paper's Table 1 and Figure 3 (section 4.1), one Ray task per run.

Models (10 blocks each, the authors' toy recipe of :mod:`studies.toy`: batch 500, Adam 1e-3, a
fresh batch per iteration, test NLL in nats on 10,000 fresh samples with the exact 2-D log-det):

* ``resflow``: the Residual Flow, 4 hidden layers of 128 (501,850 parameters);
* ``idensenet``: the i-DenseNet, depth 3, growth 16, LipSwish, fixed concatenation (10,190);
* ``idensenet-lc``: the same with learnable concatenation (10,250), held for the first half of the
  iterations (the authors hold it 25,000 of 50,000);
* ``resflow-matched``: the Residual Flow with its width solved to the i-DenseNet+LC's count, since the
  paper's two toy models differ 50× in size.

On a cluster every run is its own task (all at once); locally one per core. Writes
``reproduce-toy.csv`` and ``reproduce-toy.png`` (data in the first row, one row per model, one column
per data set, as Figure 3).
"""

from __future__ import annotations

import math
import os
import time
from importlib import resources
from typing import Any

import yaml

#: the models, their labels and the paper's Table 1 (test NLL in nats), from ``reproduce-toy.yaml``
TABLE = yaml.safe_load((resources.files(__package__) / "reproduce-toy.yaml").read_text(encoding="utf-8"))
MODELS = tuple(TABLE["models"])
DATA = ("circles", "checkerboard", "moons")
LABELS = {name: entry["label"] for name, entry in TABLE["models"].items()}
PAPER_NLL = {name: entry["paper_nll"] for name, entry in TABLE["models"].items() if "paper_nll" in entry}


def model_config(name: str):
    """The :class:`model.config.ModelConfig` of one of :data:`MODELS`."""
    from model.config import toy_config
    from search_spaces.count import count_parameters
    from search_spaces.solver import solved_config

    entry = TABLE["models"][name]
    cfg = toy_config(**entry["model"])
    if "match" in entry:
        cfg = solved_config(cfg, count_parameters(model_config(entry["match"])), TABLE["match_tolerance"])
    return cfg


def run_one(name: str, data: str, iterations: int, seed: int, grid: int = 80) -> dict[str, Any]:
    """Train one model on one data set; its row of the table and its density on a grid."""
    import torch

    from studies.toy import default_lc_hold, train_toy

    from figures.plots import toy_log_density

    torch.set_num_threads(1)
    cfg = model_config(name)
    hold = default_lc_hold(iterations) if getattr(cfg.arch, "learnable_concat", False) else 0
    model, result = train_toy(cfg, data, iterations, lc_hold=hold, seed=seed)
    return {"data": data, "model": name, "seed": seed, "parameters": model.num_parameters(),
            "iterations": iterations, "test_nll": result.test_nll,
            "paper_nll": PAPER_NLL.get(name, {}).get(data, math.nan), "seconds": round(result.seconds, 1),
            "_density": toy_log_density(model, grid) if math.isfinite(result.test_nll) else None}


def table(rows: list[dict[str, Any]]):
    """Mean and spread over seeds per model and data set, beside the paper's value."""
    import pandas as pd

    df = pd.DataFrame([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
    out = df.groupby(["model", "data"], sort=False).agg(
        parameters=("parameters", "first"), iterations=("iterations", "first"), seeds=("seed", "count"),
        test_nll=("test_nll", "mean"), nll_min=("test_nll", "min"), nll_max=("test_nll", "max"),
        paper_nll=("paper_nll", "first"), seconds=("seconds", "mean")).reset_index()
    return df, out


def _choices(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    from model.errors import UserError

    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad or not items:
        raise UserError(f"--{what}: {', '.join(bad) or '(none)'} not among {', '.join(allowed)}")
    return items


def run(args: Any) -> int:
    """``idensenet reproduce toy`` (its arguments: :mod:`studies.cli`)."""
    from model.errors import UserError

    data = _choices(args.data or ",".join(DATA), DATA, "data")
    models = _choices(args.models or ",".join(MODELS), MODELS, "models")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds {args.seeds!r}: comma-separated integers") from None
    if args.iters < 1 or not seeds:
        raise UserError("--iters must be >= 1 and --seeds name at least one seed")
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as err:
        raise UserError(f"--out {args.out}: {err.strerror}") from None
    import ray

    from sweeper.placement import connect_ray

    connect_ray(args.address, gpu=False)
    task = ray.remote(num_cpus=1)(run_one)
    t0 = time.time()
    pending = {task.remote(m, d, args.iters, s): (m, d, s) for s in seeds for d in data for m in models}
    total, rows = len(pending), []
    print(f"reproduce toy: {total} runs of {args.iters} iterations ({', '.join(models)} on {', '.join(data)}, "
          f"seeds {', '.join(map(str, seeds))})", flush=True)
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        m, d, s = pending.pop(done[0])
        row = ray.get(done[0])
        rows.append(row)
        paper = f" (paper {row['paper_nll']:.2f})" if math.isfinite(row["paper_nll"]) else ""
        print(f"[{len(rows)}/{total}] {m} on {d}, seed {s}: {row['test_nll']:.3f} nats{paper}, "
              f"{row['parameters']:,} parameters, {row['seconds']:.0f} s", flush=True)
    runs, summary = table(rows)
    csv = os.path.join(args.out, "reproduce-toy.csv")
    runs.to_csv(csv, index=False)
    png = os.path.join(args.out, "reproduce-toy.png")
    from figures.studies import toy_reproduction

    toy_reproduction(rows, models, LABELS, data, png)
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.3f}".format):
        print(summary.to_string(index=False))
    print(f"table: {csv}\nfigure: {png}\nwall time {time.time() - t0:.0f} s", flush=True)
    return 0 if all(math.isfinite(r["test_nll"]) for r in rows) else 1
