"""``idensenet scaling``: budget-matched sweeps at several budgets in one command, and the curve of
best score against parameter count per family.

For each budget B given as a number, the space's reference Residual Flow (its ``budget:`` must then be
a reference config) gets the width whose exact count is nearest B; a budget given as a preset name
(``cifar10-small``) or a reference config is that model as it stands. That model's count is the
sub-sweep's budget and the model itself its control arm; ``follow_reference: [blocks_per_scale]``
gives the searched models that reference's blocks per scale (the paper's 4-4-4 at 8.7M and 16-16-16
at 25M), and the i-DenseNet growth (and a searched Residual Flow's width) is
solved for it as in any sweep. Before anything trains, every budget's space is checked; a searched
choice (depth, activation, blocks per scale) with no width within tolerance at some budget is
dropped there, with a line saying why. All sub-sweeps share one Ray instance and live under one
experiment folder (``<storage>/<name>/b<count>/``), each resumable: rerunning the command skips the
sub-sweeps that ended and resumes the one that did not.

Each sub-sweep is then confirmed as any sweep is (:mod:`sweeper.confirm`, ``--confirm-seeds``, 3 by
default): its best searched configuration and the reference Residual Flow retrained with seeds, so
each budget's answer carries its interval.

Writes ``scaling.csv`` / ``scaling.parquet`` (budget, family, best validation score and the test
score of that epoch, its config and exact count, epochs, the trial-epochs each family spent, and
per budget the confirmed difference with its 95 % interval) and ``scaling.png`` (the selected test
score against count, log x, per family, with the paper's CIFAR10 points where the data set is
CIFAR10).
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import math
import os
import tempfile
import time
from importlib import resources
from typing import Any

import yaml

from model.errors import UserError

from sweeper.settings import SETTINGS_FILE, score_label
from sweeper.storage import Location, experiment_location

SCALING_FILE, SCALING_CSV, SCALING_PARQUET, SCALING_PNG = "scaling.json", "scaling.csv", "scaling.parquet", "scaling.png"
#: published points by data set and family, [parameters, test bpd] (``scaling-paper.yaml``)
PAPER_POINTS = yaml.safe_load((resources.files(__package__) / "scaling-paper.yaml").read_text(encoding="utf-8"))
SEARCHABLE_CHOICES = ("depth", "activation", "blocks_per_scale")


def _reference(space_data: dict[str, Any], spec: dict[str, Any] | str):
    """The reference Residual Flow (a ``ModelConfig``) of a ``budget:`` value in this space."""
    from search_spaces.budgets import DEFAULT_TOLERANCE, make_budget

    try:
        return make_budget(spec, float(space_data.get("tolerance", DEFAULT_TOLERANCE)), space_data.get("dataset")).reference
    except UserError as err:
        raise UserError(f"scaling: {err.summary()}") from None


def scaled_reference(space_data: dict[str, Any], budget: Any) -> dict[str, Any] | str:
    """The ``budget:`` of the reference Residual Flow at ``budget``: a preset name (``cifar10-small``)
    or a mapping (a reference config) as given; a number: the space's reference with the width whose
    count is nearest it."""
    from search_spaces.budgets import REFERENCE_CONFIGS, UnknownBudget, resolve_budget
    from search_spaces.solver import nearest_width, with_width

    if isinstance(budget, dict):
        return dict(budget)
    if isinstance(budget, str) and budget.strip().lower() in REFERENCE_CONFIGS:
        return budget.strip().lower()
    try:
        target = resolve_budget(budget)  # a positive whole number, also as "8.7e6" or "100,000"
    except UnknownBudget as err:
        raise UserError(f"scaling: budget {budget!r} is neither a number of parameters, a preset name nor a "
                        f"reference config ({err.summary()})") from None
    ref_spec = space_data.get("budget")
    if not isinstance(ref_spec, dict):
        raise UserError("scaling: a budget given as a number needs a reference config as the space's budget "
                        "(e.g. {family: resflow, toy_hidden: [24, 24, 24, 24], blocks_per_scale: [10]}) so its "
                        "width can be scaled; or give preset names / reference configs as budgets")
    ref = _reference(space_data, ref_spec)
    sol = nearest_width(ref, target)
    width = getattr(with_width(ref, sol.width).arch, sol.field)
    return {**ref_spec, sol.field: list(width) if isinstance(width, tuple) else width}


def followed_fields(space_data: dict[str, Any], budget_spec: dict[str, Any] | str) -> dict[str, Any]:
    """The model fields ``follow_reference:`` copies from this budget's reference Residual Flow (the
    paper's 8.7M and 25M comparisons hold the blocks per scale of the Residual Flow they match)."""
    follow = space_data.get("follow_reference") or []
    if not follow:
        return {}
    ref = _reference(space_data, budget_spec)
    return {f: list(v) if isinstance(v := getattr(ref, f), tuple) else v for f in follow}


def budget_space(space_data: dict[str, Any], budget: Any) -> tuple[dict[str, Any], list[str]]:
    """The space at one budget, with the searched choices that cannot fit it dropped; (data, notes)."""
    from search_spaces.space import SpaceError, space_from_dict

    data = copy.deepcopy(space_data)
    data.pop("budgets", None)
    data["budget"] = scaled_reference(space_data, budget)
    search = data.get("search") or {}
    followed = followed_fields(space_data, data["budget"])
    for field in followed:
        if field in search:
            raise UserError(f"scaling: {field} is both searched and in follow_reference; choose one")
    data["model"] = {**(data.get("model") or {}), **followed}
    notes: list[str] = []
    for dim in SEARCHABLE_CHOICES:
        spec = search.get(dim)
        if not (isinstance(spec, dict) and isinstance(spec.get("choices"), list) and len(spec["choices"]) > 1):
            continue
        kept = []
        for choice in spec["choices"]:
            trial = copy.deepcopy(data)
            trial["search"][dim] = {"choices": [choice]}
            try:
                space_from_dict(trial)
                kept.append(choice)
            except SpaceError as err:
                notes.append(f"drops {dim} {choice}: {err.lines()[0].split(': ', 1)[-1]}")
        if not kept:
            raise UserError(f"scaling: no {dim} of {spec['choices']} fits this budget ({'; '.join(notes)})")
        spec["choices"] = kept
    try:
        space = space_from_dict(data)
    except SpaceError as err:
        raise UserError(f"scaling: {err.summary()}") from None
    data["name"] = f"{data.get('name', 'space')}-b{space.budget.params}"
    return data, notes


def scaling_table(exp: Location):
    """One row per budget and family: the best trial and what the family spent."""
    import pandas as pd

    from sweeper.table import results_table, scored

    doc = json.loads(exp.join(SCALING_FILE).read_text())
    rows = []
    for sub in doc["budgets"]:
        sub_exp = exp.join(sub["name"])
        if not sub_exp.join(SETTINGS_FILE).is_file():
            continue
        df = results_table(sub_exp)
        confirmed = confirmed_difference(sub_exp, doc.get("confirm_seeds", 0))
        for family, part in df.groupby("family"):
            ok = scored(part)
            best = ok.iloc[0] if len(ok) else None
            rows.append({
                "budget": sub["params"], "family": family, "best_val": best["best_val"] if best is not None else None,
                "test": best["test"] if best is not None else None, **confirmed,
                "trial": best["trial"] if best is not None else None, "role": best["role"] if best is not None else None,
                "arch": best["arch"] if best is not None else None,
                "activation": best["activation"] if best is not None else None,
                "param_count": best["param_count"] if best is not None else None,
                "epochs": best["epochs_run"] if best is not None else None,
                "trial_epochs": int(part["epochs_run"].sum()), "trials": len(part),
            })
    out = pd.DataFrame(rows)
    out.attrs["metric"] = doc.get("metric", "score")
    out.attrs["data"] = doc.get("data")
    return out


def confirmed_difference(sub_exp: Location, seeds: int) -> dict[str, Any]:
    """The budget's confirmed i-DenseNet − reference difference (test, paired by seed) and its
    interval, from its confirmation's table; NaNs when it has none."""
    import pandas as pd

    table = sub_exp.join(f"confirm-k1-s{seeds}", "confirm.csv")
    out = {"confirmed_diff": math.nan, "diff_low": math.nan, "diff_high": math.nan, "seeds": seeds or None,
           "difference_shown": None}
    if not seeds or not table.is_file():
        return out
    from sweeper.confirm import verdict_row

    d = verdict_row(pd.read_csv(io.StringIO(table.read_text())))
    if d is not None:
        out.update(confirmed_diff=d["diff"], diff_low=d["diff_low"], diff_high=d["diff_high"],
                   difference_shown=bool(d["diff_low"] > 0 or d["diff_high"] < 0))
    return out


def write_scaling_outputs(exp: Location) -> tuple[Any, dict[str, str]]:
    from sweeper.table import write_table

    df = scaling_table(exp)
    out = {"csv": exp.join(SCALING_CSV), "parquet": exp.join(SCALING_PARQUET), "png": exp.join(SCALING_PNG)}
    write_table(df, out["csv"], out["parquet"])
    png = io.BytesIO()
    from figures.studies import scaling

    scaling(df, png, df.attrs["metric"], PAPER_POINTS.get(df.attrs.get("data")) or {})
    out["png"].write_bytes(png.getvalue())
    return df, {k: v.uri for k, v in out.items()}


def print_scaling(df, paths: dict[str, str]) -> None:
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.4f}".format):
        print(df.to_string(index=False, na_rep="-") if len(df) else "(no sub-sweep has results yet)")
    for budget, part in df.groupby("budget") if len(df) else []:
        row = part.iloc[0]
        if row.get("difference_shown") is None or pd.isna(row.get("confirmed_diff")):
            print(f"budget {budget:,}: not confirmed (screening only; run with --confirm-seeds)")
            continue
        seeds = int(row["seeds"])
        shown = (f"the i-DenseNet is {'better' if row['confirmed_diff'] < 0 else 'worse'}" if row["difference_shown"]
                 else f"no difference shown at {seeds} seeds")
        print(f"budget {budget:,}: i-DenseNet − Residual Flow {row['confirmed_diff']:+.4f} (95% CI "
              f"{row['diff_low']:+.4f} to {row['diff_high']:+.4f}, {seeds} seeds): {shown}")
    print("wrote " + "\n      ".join(paths.values()))


def _confirm(sub_exp: Location, args: argparse.Namespace) -> None:
    """The budget's confirmation (top 1, ``--confirm-seeds``), unless off or already written."""
    if not args.confirm_seeds or sub_exp.join(f"confirm-k1-s{args.confirm_seeds}", "confirm.csv").is_file():
        return
    from sweeper.confirm import ConfirmOptions, run_confirmation

    run_confirmation(ConfirmOptions(experiment=sub_exp.uri, top=1, seeds=args.confirm_seeds, address=args.address))


def run(args: argparse.Namespace) -> int:
    """``idensenet scaling`` (its arguments: :mod:`studies.cli`)."""
    from sweeper.settings import space_text
    from sweeper.sweep import SweepOptions, run_sweep

    if args.trials < 1 or (args.epochs is not None and args.epochs < 1):
        raise UserError("--trials and --epochs must be positive integers")
    if args.confirm_seeds == 1 or args.confirm_seeds < 0:
        raise UserError("--confirm-seeds must be 0 (no confirmation) or at least 2")
    name, text = space_text(args.space)
    data = yaml.safe_load(text)
    budgets = [b.strip() for b in args.budgets.split(",") if b.strip()] if args.budgets else data.get("budgets")
    if not budgets:
        raise UserError("scaling: give --budgets or a budgets: list in the space file")
    subs = []
    for b in budgets:  # every budget checked before anything trains
        sub, notes = budget_space(data, b)
        from search_spaces.space import space_from_dict

        params = space_from_dict(sub).budget.params
        subs.append((params, sub))
        followed = "".join(f", {f} {sub['model'][f]}" for f in data.get("follow_reference") or [])
        print(f"budget {params:,} (asked {b}): reference Residual Flow {sub['budget']}{followed}" +
              "".join(f"\n  {n}" for n in notes), flush=True)
    if args.check:
        return 0
    exp = experiment_location(args.storage, args.name or f"{name}-scaling")
    exp.makedirs()
    from model.datasets import dataset_info

    toy = dataset_info(str(data.get("dataset"))).is_toy
    doc = {"space": name, "data": data.get("dataset"), "metric": score_label(toy), "confirm_seeds": args.confirm_seeds,
           "budgets": [{"params": p, "name": f"b{p}"} for p, _ in subs]}
    exp.join(SCALING_FILE).write_text(json.dumps(doc, indent=1))
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="idn-scaling-") as tmp:
        for params, sub in subs:
            sub_exp = exp.join(f"b{params}")
            settings_file = sub_exp.join(SETTINGS_FILE)
            if settings_file.is_file():
                from sweeper.records import all_trials_ended
                from sweeper.settings import SweepSettings

                if all_trials_ended(sub_exp, SweepSettings.load(sub_exp).trials):
                    print(f"budget {params:,}: done before, skipped", flush=True)
                    _confirm(sub_exp, args)
                    continue
            path = os.path.join(tmp, f"b{params}.yaml")
            with open(path, "w") as f:
                yaml.safe_dump(sub, f)
            print(f"\n=== budget {params:,} ===", flush=True)
            run_sweep(SweepOptions(space=path, trials=args.trials, epochs=args.epochs, storage=exp.uri,
                                   name=f"b{params}", seed=args.seed, resume=settings_file.is_file(),
                                   train_overrides=dict(args.train), address=args.address))
            _confirm(sub_exp, args)
    df, paths = write_scaling_outputs(exp)
    print()
    print_scaling(df, paths)
    print(f"scaling study finished in {time.time() - t0:.0f} s: {exp.uri}", flush=True)
    return 0
