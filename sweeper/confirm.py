"""``idensenet confirm``: the verdict with seeds.

A search's winner is the best of N noisy runs, so its own score is biased in its favour (the
winner's curse), and one run of the control says nothing of the control's spread. Confirmation
trains again, with S fresh seeds each (the sweep's seed + 1 … + S), to the last epoch and without
early stopping:

* the **top K** searched configurations on validation (enqueued ones included), and the best searched
  i-DenseNet if it is not among them;
* the **reference** Residual Flow: the best searched Residual Flow when the sweep searched that
  family (its width solved to the same budget and its learning rate chosen by the same search as the
  i-DenseNets', so both arms had the same chance), else the control arm as the space fixed it (the
  output says that its learning rate was not searched).

Every run scores its **test** set at the epoch of its best **validation** score. Per configuration the
table gives the mean, the standard deviation and the 95 % t interval over seeds; each configuration
is compared with the reference paired by seed (:mod:`sweeper.intervals`). The verdict line takes the
i-DenseNet with the best mean validation score and states its test difference to the reference with
its interval, or "no difference shown at S seeds" when the interval contains 0.

The runs are Ray trials of the sweep's own trial driver (:func:`sweeper.trial.run_trial`), as many at
once as the sweep ran, in a Tune experiment ``confirm-k<K>-s<S>`` inside the sweep's folder: running
the same command again resumes it (finished runs are kept, unfinished ones continue from their
checkpoints). Writes ``confirm_runs.csv`` (one row per run) and ``confirm.csv`` / ``confirm.parquet``
(one row per configuration) and ``confirm.png`` there.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd
from ray import tune

from figures.plots import plot_confirmation
from model.families import budget_family
from model.errors import UserError
from model.run_config import RunConfig

from .intervals import mean_interval, paired_difference
from .lease import acquire
from .metrics import DIVERGED, TEST, VAL
from .placement import connect_ray
from .records import resolve_experiment, trial_records
from .table import results_table, scored, write_table
from .search import BASELINE_ROLES
from .settings import SweepSettings, score_label
from .storage import Location
from .sweep import ProgressPrinter
from .trial import run_trial

CASES_FILE, RUNS_CSV, TABLE_CSV, TABLE_PARQUET, FIGURE = (
    "confirm_cases.json", "confirm_runs.csv", "confirm.csv", "confirm.parquet", "confirm.png")
REFERENCE = "reference"


@dataclass(frozen=True)
class ConfirmOptions:
    experiment: str
    storage: str = "ray_results"
    top: int = 1
    seeds: int = 3
    max_concurrent: int | None = None
    address: str | None = None
    verbose: bool = False


def _arm(row, configs: dict[str, dict[str, Any]], kind: str, note: str = "") -> dict[str, Any]:  # noqa: ANN001
    cfg = configs[row.trial]
    run = RunConfig.from_dict(cfg["run"])
    m = run.model
    return {"arm": f"{kind} {row.trial}", "kind": kind, "trial": row.trial, "family": m.family,
            "describe": f"{m.describe()} {m.activation} lr {run.train.lr:.3g}",
            "param_count": int(row.param_count), "run": cfg["run"], "note": note}


def choose_arms(df, configs: dict[str, dict[str, Any]], top: int) -> list[dict[str, Any]]:  # noqa: ANN001
    """The configurations to confirm (module docstring), the reference last."""
    ok = scored(df)
    searched = ok[~ok["role"].isin(BASELINE_ROLES)]
    picks = list(searched.head(top).itertuples(index=False))
    budget = budget_family().name  # the reference's family; the others are the candidates
    candidates = searched[searched["family"] != budget]
    if len(candidates) and candidates.iloc[0]["trial"] not in {p.trial for p in picks}:
        picks.append(next(candidates.head(1).itertuples(index=False)))
    resflow = searched[searched["family"] == budget]
    control = ok[ok["role"] == "control"]
    if len(resflow):
        ref = _arm(next(resflow.head(1).itertuples(index=False)), configs, REFERENCE,
                   "the best searched Residual Flow: learning rate chosen by the same search")
    elif len(control):
        ref = _arm(next(control.head(1).itertuples(index=False)), configs, REFERENCE,
                   "the control arm: its learning rate is the space's fixed value, not searched")
    else:
        raise UserError("no reference Residual Flow to confirm against: the sweep has no scored control and "
                        "no scored searched Residual Flow")
    arms = [_arm(p, configs, "searched") for p in picks if p.trial != ref["trial"]]
    if not arms:
        raise UserError("nothing to confirm: the sweep has no scored searched configuration besides the reference")
    return [*arms, ref]


def confirm_cases(arms: list[dict[str, Any]], seeds: list[int], epochs: int) -> list[dict[str, Any]]:
    """One trial config per (configuration, seed): the run with that training seed, to the last epoch."""
    out = []
    for arm in arms:
        for seed in seeds:
            run = RunConfig.from_dict(arm["run"]).with_train(seed=seed, epochs=epochs)
            out.append({"run": run.to_dict(), "trial": {"role": "confirm", "arm": arm["arm"], "seed": seed,
                                                         "describe": arm["describe"]}})
    return out


def run_case(config: dict[str, Any], settings: dict[str, Any], cases: list[dict[str, Any]]) -> None:
    """Tune function trainable of one confirmation run (``cases`` bound with ``tune.with_parameters``)."""
    run_trial(cases[config["case"]], settings)


class ConfirmPrinter(ProgressPrinter):
    def on_trial_start(self, iteration, trials, trial, **info):  # noqa: ANN001
        case = self.cases[trial.config["case"]]["trial"]
        self._say(f"{trial.trial_id} started: {case['arm']} seed {case['seed']}: {case['describe']}")


def _tuner(settings: SweepSettings, loc: Location, cases: list[dict[str, Any]], concurrency: int, restore: bool):
    trainable = tune.with_resources(tune.with_parameters(run_case, settings=settings.to_dict(), cases=cases),
                                    dict(settings.shape["driver"]))
    if restore:
        return tune.Tuner.restore(loc.uri, trainable=trainable, resume_unfinished=True, resume_errored=True)
    printer = ConfirmPrinter(settings.epochs, "test NLL" if settings.is_toy else "test bpd")
    printer.cases = cases
    return tune.Tuner(
        trainable, param_space={"case": tune.grid_search(list(range(len(cases))))},
        tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=concurrency,
                                    trial_name_creator=_name, trial_dirname_creator=_name),
        run_config=tune.RunConfig(name=loc.name, storage_path=loc.parent_uri, callbacks=[printer], verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=settings.trial_max_failures)),
    )


def _name(trial) -> str:  # noqa: ANN001
    return f"confirm_{trial.trial_id}"


def run_confirmation(opts: ConfirmOptions) -> int:
    """Choose the configurations, train them with seeds (or resume), and report; exit code 0, or 1
    when some run failed."""
    if opts.seeds < 2:
        raise UserError("--seeds must be at least 2: an interval needs two seeds")
    exp = resolve_experiment(opts.experiment, opts.storage)
    settings = SweepSettings.load(exp)
    loc = exp.join(f"confirm-k{opts.top}-s{opts.seeds}")
    cases_file = loc.join(CASES_FILE)
    restore = cases_file.is_file() and tune.Tuner.can_restore(loc.uri)
    if restore:
        saved = json.loads(cases_file.read_text())
        cases, arms = saved["cases"], saved["arms"]
        print(f"resuming confirmation {loc.uri}", flush=True)
    else:
        records = trial_records(exp)
        arms = choose_arms(results_table(exp), {r["trial_id"]: r["config"] for r in records}, opts.top)
        seeds = [settings.seed + 1 + i for i in range(opts.seeds)]
        cases = confirm_cases(arms, seeds, settings.epochs)
        loc.makedirs()
        cases_file.write_text(json.dumps({"arms": [{k: v for k, v in a.items() if k != "run"} for a in arms],
                                          "seeds": seeds, "cases": cases}, indent=1))
        print(f"confirmation {loc.uri}: {len(arms)} configurations x {len(seeds)} seeds ({', '.join(map(str, seeds))}),"
              f" {settings.epochs} epochs each, no early stopping", flush=True)
        for a in arms:
            print(f"  {a['arm']}: {a['describe']}" + (f" ({a['note']})" if a["note"] else ""), flush=True)
    concurrency = opts.max_concurrent or settings.max_concurrent
    run_settings = dataclasses.replace(settings, experiment=loc.uri, name=loc.name, max_concurrent=concurrency)
    t0 = time.time()
    with acquire(loc):
        connect_ray(opts.address, settings.shape.get("use_gpu", False), opts.verbose)
        grid = _tuner(run_settings, loc, cases, concurrency, restore).fit()
    runs = confirmation_runs(loc, cases)
    summary = summarise(runs)
    write_confirmation(loc, runs, summary, settings)
    print("\n" + format_summary(summary))
    print("\n" + verdict(summary, settings.unit, arms[-1]["note"]))
    print(f"\nconfirmation took {time.time() - t0:.0f} s: {loc.join(TABLE_CSV).uri}")
    return 1 if any(r.error is not None for r in grid) else 0


def confirmation_runs(loc: Location, cases: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per run: its configuration, seed, the epoch of its best validation score, and the
    validation and test scores there (NaN for a run that diverged or has no score yet)."""
    rows = []
    for rec in trial_records(loc):
        case = cases[int(rec["config"]["case"])]
        scored_epochs = [r for r in rec["epochs"] if not r.get(DIVERGED) and math.isfinite(float(r.get(VAL, math.nan)))]
        best = min(scored_epochs, key=lambda r: float(r[VAL])) if scored_epochs else None
        last = rec["epochs"][-1] if rec["epochs"] else {}
        rows.append({"arm": case["trial"]["arm"], "seed": case["trial"]["seed"], "trial": rec["trial_id"],
                     "status": "diverged" if last.get(DIVERGED) else rec["status"].lower(),
                     "epochs_run": int(last.get("epoch", 0)), "best_epoch": int(best["epoch"]) if best else None,
                     "val": float(best[VAL]) if best else math.nan, "test": float(best[TEST]) if best else math.nan,
                     "describe": case["trial"]["describe"]})
    return pd.DataFrame(rows).sort_values(["arm", "seed"]).reset_index(drop=True)


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: validation mean, test mean, sd and 95 % interval, and the paired
    test difference to the reference (< 0: better than the reference)."""
    ok = runs[runs["test"].notna()]
    ref_name = next((a for a in runs["arm"].unique() if a.startswith(REFERENCE)), None)
    ref = dict(zip(ok[ok["arm"] == ref_name]["seed"], ok[ok["arm"] == ref_name]["test"])) if ref_name else {}
    rows = []
    for arm, part in runs.groupby("arm", sort=False):
        good = part[part["test"].notna()]
        row = {"arm": arm, "describe": part["describe"].iloc[0], "seeds": len(part), "scored": len(good),
               "diverged": int((part["status"] == "diverged").sum())}
        if len(good):
            t, v = mean_interval(good["test"]), mean_interval(good["val"])
            row.update(val_mean=v.mean, test_mean=t.mean, test_sd=t.sd, test_low=t.low, test_high=t.high)
            mine = dict(zip(good["seed"], good["test"]))
            if arm != ref_name and set(mine) & set(ref):
                d = paired_difference(mine, ref)
                row.update(diff=d.mean, diff_low=d.low, diff_high=d.high, paired_seeds=d.n, shown=d.excludes_zero)
        rows.append(row)
    df = pd.DataFrame(rows)
    return df.sort_values("val_mean", na_position="last").reset_index(drop=True) if "val_mean" in df else df


def verdict_row(summary: pd.DataFrame):
    """The row the verdict is about: the i-DenseNet best on mean validation score that has a paired
    difference to the reference (None when there is none)."""
    if "diff" not in summary:
        return None
    family = summary["describe"].str.split(" ").str[0]
    dense = summary[(family != budget_family().name) & summary["diff"].notna()]
    return dense.iloc[0] if len(dense) else None  # the summary is sorted by mean validation score


def verdict(summary: pd.DataFrame, unit: str, reference_note: str = "") -> str:
    """The one line the confirmation answers: the i-DenseNet best on validation against the reference
    (``reference_note``: how the reference was chosen, said in the line)."""
    d = verdict_row(summary)
    if d is None:
        return "verdict: no i-DenseNet with a paired score against the reference Residual Flow"
    ref = summary[summary["arm"].str.startswith(REFERENCE)].iloc[0]
    head = (f"verdict at {int(d['paired_seeds'])} seeds (test {unit} at each run's best validation epoch, paired by "
            f"seed): {d['arm']} ({d['describe']}) {d['test_mean']:.3f} against the Residual Flow {ref['arm']} "
            f"({ref['describe']}{'; ' + reference_note if reference_note else ''}) {ref['test_mean']:.3f}; difference {d['diff']:+.3f} {unit} "
            f"(95% CI {d['diff_low']:+.3f} to {d['diff_high']:+.3f})")
    if not d["shown"]:
        return f"{head}: no difference shown at {int(d['paired_seeds'])} seeds"
    return f"{head}: the i-DenseNet is {'better' if d['diff'] < 0 else 'worse'}"


def format_summary(summary: pd.DataFrame) -> str:
    cols = [c for c in ("arm", "describe", "scored", "diverged", "val_mean", "test_mean", "test_sd", "test_low",
                        "test_high", "diff", "diff_low", "diff_high", "shown") if c in summary]
    with pd.option_context("display.width", 240, "display.max_columns", 20, "display.float_format", "{:.4f}".format):
        return summary[cols].to_string(index=False, na_rep="-")


def write_confirmation(loc: Location, runs: pd.DataFrame, summary: pd.DataFrame, settings: SweepSettings) -> None:
    loc.join(RUNS_CSV).write_text(runs.to_csv(index=False))
    write_table(summary, loc.join(TABLE_CSV), loc.join(TABLE_PARQUET))
    png = io.BytesIO()
    plot_confirmation(runs, summary, png, ylabel=score_label(settings.is_toy))
    loc.join(FIGURE).write_bytes(png.getvalue())
