"""The learning-curve table: configurations of a space on a grid, each trained for the space's whole
schedule with several seeds by this project's own training step (:func:`model.run.epochs`).

Configurations are the space's proposals for a grid of its dimensions' values: every choice of each
categorical (or integer) dimension, and ``points`` values spread evenly (logarithmically for ``log``
dimensions) over each continuous one, for every family's applicable dimensions; each grid point is
turned into a run config by :func:`search_spaces.suggest.suggest` (widths solved from the budget), so a
configuration is exactly what a sweep would train for those parameter values.

Schema (one row per configuration, seed and epoch; Parquet):

=================  =======  ===========================================================
column             type     meaning
=================  =======  ===========================================================
config             int32    the configuration's index in the grid
p:<param>          any      its Optuna parameter values (``p:model/family``, ``p:train/lr`` ...;
                            null where the family has no such parameter)
seed               int32    the training seed
epoch              int32    1-based epoch
val                float64  validation score of the EMA weights (NaN once diverged)
test               float64  test score of the EMA weights (NaN once diverged)
train_loss         float64  mean training loss of the epoch
seconds            float64  wall time of the epoch (training and scoring), one CPU thread
diverged           bool     a step or a score was not finite (the run's last row)
param_count        int64    the configuration's exact parameter count
=================  =======  ===========================================================

Table-wide facts (space name, its text, the train values forced, the grid) are stored in the file's
key-value metadata under ``replay``.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from model.errors import UserError

PARAM_PREFIX = "p:"
META_KEY = b"replay"


@dataclass(frozen=True)
class TableSpec:
    """What a table records: a space (its text), the train values forced on every run, the grid's
    points per continuous dimension and the seeds."""

    space_name: str
    space_yaml: str
    train: dict[str, Any]
    points: int
    seeds: tuple[int, ...]

    def space(self):  # noqa: ANN201
        from sweeper.settings import load_space_text

        return load_space_text(self.space_name, self.space_yaml, self.space_name)

    def to_json(self) -> str:
        return json.dumps({"space_name": self.space_name, "space_yaml": self.space_yaml, "train": self.train,
                           "points": self.points, "seeds": list(self.seeds)})

    @classmethod
    def from_json(cls, text: str) -> "TableSpec":
        d = json.loads(text)
        return cls(d["space_name"], d["space_yaml"], dict(d["train"]), int(d["points"]), tuple(d["seeds"]))


def table_spec(space_ref: str, train: dict[str, Any], points: int, seeds: tuple[int, ...]) -> TableSpec:
    """The spec of a table of the space ``space_ref`` (a shipped name or a file) without its fixed trials
    (baselines and enqueued configurations are not search points: every replayed trial is proposed
    by the arm's sampler), ``train`` forced on every run."""
    import yaml

    from sweeper.settings import space_text

    name, text = space_text(space_ref)
    data = yaml.safe_load(text)
    for key in ("baselines", "enqueue"):
        data.pop(key, None)
    spec = TableSpec(name, yaml.safe_dump(data, sort_keys=False), dict(train), int(points), tuple(seeds))
    spec.space()  # refuses a space or train values that do not load
    return spec


def _spread(dim, points: int) -> list[Any]:  # noqa: ANN001
    vals = dim.values()
    if vals is not None:
        return vals
    lo, hi = float(dim.low), float(dim.high)
    if dim.log:
        spread = np.exp(np.linspace(math.log(lo), math.log(hi), points))
    else:
        spread = np.linspace(lo, hi, points)
    return [float(f"{v:.6g}") for v in spread]


def grid(space, points: int) -> list[dict[str, Any]]:  # noqa: ANN001
    """The Optuna parameters of every grid configuration (module docstring), family by family."""
    fam_dim = next((d for d in space.dimensions if d.name == "family"), None)
    families = list(fam_dim.choices) if fam_dim else [space.base["family"]]
    out = []
    for family in families:
        combos: list[dict[str, Any]] = [fam_dim.params_for(family) if fam_dim else {}]
        for dim in space.dimensions:
            if dim is fam_dim or not dim.applies_to(family):
                continue
            values = [dim.params_for(v if dim.kind != "eta" else (v, v)) for v in _spread(dim, points)]
            combos = [{**c, **v} for c in combos for v in values]
        out += combos
    return out


def run_config(space, params: dict[str, Any], train: dict[str, Any], seed: int):  # noqa: ANN001
    """The run config a sweep trains for ``params`` (solved from the budget), with ``train`` and ``seed``."""
    import optuna

    from search_spaces.suggest import suggest

    record = suggest(space, optuna.trial.FixedTrial(params))
    return record.with_train(**{**train, "seed": seed}).run, record.param_count


def _train_one(job: tuple[str, int, dict[str, Any], int]) -> list[dict[str, Any]]:
    """Rows of one (configuration, seed) run, trained in this process on one thread."""
    import torch

    torch.set_num_threads(1)
    spec_json, config, params, seed = job
    spec = TableSpec.from_json(spec_json)
    run, count = run_config(spec.space(), params, spec.train, seed)
    from model.run import epochs

    rows = []
    for e in epochs(run):
        rows.append({"config": config, **{PARAM_PREFIX + k: v for k, v in params.items()}, "seed": seed,
                     "epoch": e["epoch"], "val": e["val"], "test": e["test"], "train_loss": e["train_loss"],
                     "seconds": e["seconds"], "diverged": e["diverged"], "param_count": count})
    return rows


def read_table(path: str) -> tuple[pd.DataFrame, TableSpec]:
    """The table and the spec it was recorded with."""
    import pyarrow.parquet as pq

    try:
        t = pq.read_table(path)
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: not a learning-curve table ({err})") from None
    meta = (t.schema.metadata or {}).get(META_KEY)
    if meta is None:
        raise UserError(f"{path}: not a learning-curve table (no '{META_KEY.decode()}' metadata)")
    return t.to_pandas(), TableSpec.from_json(meta.decode())


def write_table(df: pd.DataFrame, spec: TableSpec, path: str) -> None:
    """Write atomically (a reader never sees half a table; an interrupted write loses nothing)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
    t = t.replace_schema_metadata({**(t.schema.metadata or {}), META_KEY: spec.to_json().encode()})
    tmp = f"{path}.part"
    pq.write_table(t, tmp, compression="zstd")
    os.replace(tmp, path)


def record(spec: TableSpec, path: str, jobs: int = 1, limit: int | None = None, say=print) -> pd.DataFrame:  # noqa: ANN001
    """Record (or extend) the table at ``path``: every (configuration, seed) run it lacks, ``jobs`` runs
    at a time (one thread each), the file rewritten after every run, so an interrupted recording
    resumes where it stopped. ``limit``: record at most this many runs now."""
    space = spec.space()
    configs = grid(space, spec.points)
    done = pd.DataFrame()
    if os.path.exists(path):
        done, old = read_table(path)
        if (old.space_yaml, old.train, old.points) != (spec.space_yaml, spec.train, spec.points):
            raise UserError(f"{path} was recorded for another space, schedule or grid; record into a new file")
        spec = TableSpec(spec.space_name, spec.space_yaml, spec.train, spec.points,
                         tuple(sorted(set(old.seeds) | set(spec.seeds))))
    have = set(zip(done["config"], done["seed"])) if len(done) else set()
    todo = [(spec.to_json(), i, p, s) for s in spec.seeds for i, p in enumerate(configs) if (i, s) not in have]
    todo = todo[:limit] if limit is not None else todo
    say(f"{len(configs)} configurations x {len(spec.seeds)} seeds: {len(have)} runs recorded, {len(todo)} to go "
        f"({jobs} at a time) -> {path}")
    t0, frames = time.monotonic(), [done] if len(done) else []
    ctx = mp.get_context("spawn")
    with ctx.Pool(jobs, maxtasksperchild=20) as pool:
        for n, rows in enumerate(pool.imap_unordered(_train_one, todo), start=1):
            frames.append(pd.DataFrame(rows))
            df = pd.concat(frames, ignore_index=True).sort_values(["config", "seed", "epoch"])
            write_table(df, spec, path)
            rate = (time.monotonic() - t0) / n
            say(f"[{n}/{len(todo)}] config {rows[0]['config']} seed {rows[0]['seed']}: "
                f"final val {rows[-1]['val']:.4f}  ({sum(r['seconds'] for r in rows):.1f} s; "
                f"about {rate * (len(todo) - n) / 60:.0f} min left)")
            sys.stdout.flush()
    return pd.concat(frames, ignore_index=True) if frames else done


def params_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith(PARAM_PREFIX)]


def configurations(df: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: its parameters (``p:`` columns)."""
    cols = params_columns(df)
    return df.drop_duplicates("config").set_index("config")[cols].sort_index()


def curves(df: pd.DataFrame, epochs: int, penalty: float | None = None) -> dict[tuple[int, int], dict[str, np.ndarray]]:
    """(config, seed) -> ``val``, ``test``, ``seconds`` arrays of length ≤ ``epochs`` (a diverged run's
    arrays end at its diverged epoch, whose scores are NaN)."""
    out = {}
    for (c, s), g in df.sort_values("epoch").groupby(["config", "seed"]):
        out[(int(c), int(s))] = {k: g[k].to_numpy(dtype=float)[:epochs] for k in ("val", "test", "seconds")}
    return out


def final_test(df: pd.DataFrame, epochs: int) -> pd.Series:
    """Each configuration's test score after the last epoch, the mean over its seeds: what training the
    configuration in full gives. A seed that diverged counts as the worst final score in the table (a
    configuration that diverges in some seeds is one a search should not pick)."""
    last = df[df["epoch"] == epochs].set_index(["config", "seed"])["test"]
    worst = float(last.max())
    runs = df.groupby(["config", "seed"])["diverged"].any()
    scores = last.reindex(runs.index).where(~runs, worst).fillna(worst)
    return scores.groupby(level="config").mean()
