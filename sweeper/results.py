"""Results of a sweep, read through Ray (``tune.ExperimentAnalysis`` for trials, statuses and every
reported epoch), each trial's Train run read from its checkpoint folders (:mod:`sweeper.run_reader`)
and the study read from a private copy (:func:`sweeper.search.study_snapshot`), with the project's own
columns on top: the role (control, baseline, enqueued, search), the exact parameter count and its
deviation from the budget, the best validation score and its epoch (what every decision reads), the
**test score at that epoch** (the report), the difference to the control arm's validation score at
the same epoch, and a status: how the trial ended by the one rule of :mod:`sweeper.endings`, as the study
recorded it (finished, stopped (ASHA), stopped (time budget), diverged, error), or incomplete.

Epochs a trial's Train run has checkpointed count even when Tune's records of them were lost (a
trial restarted after an interruption), so every reported epoch is in the table, the plot and
``best``; an epoch reported twice counts with its newest report, as in the study. Works during and
after a sweep, on local or remote storage, and writes nothing the sweep reads.
"""

from __future__ import annotations

import io
import logging
import math
import os
import sys
from typing import Any

import pandas as pd
import yaml
from ray.tune import ExperimentAnalysis

from figures.plots import plot_scores, plot_toy_densities
from figures.study import study_figures
from model.config import ModelConfig
from model.errors import UserError
from model.families import arch_fields, budget_family, families

from . import endings
from .checkpoint import STATE_FILE, load_model
from .run_reader import checkpoint_of_epoch, saved_checkpoints
from .metrics import TEST, VAL
from .search import BASELINE_ROLES, recorded_endings, study_snapshot
from .settings import SETTINGS_FILE, SweepSettings, score_label
from .storage import Location, is_uri, locate
from .trial import train_run

RESULTS_CSV, RESULTS_PARQUET, SCORES_PNG, DENSITIES_PNG = "results.csv", "results.parquet", "scores.png", "densities.png"
STUDY_PNGS = {"by_family": "scores_by_family.png", "parallel": "parallel.png", "importance": "importance.png"}


def experiment_candidates(name_or_path: str, storage: str) -> list[Location]:
    """Where ``name_or_path`` may be: itself, and (unless a URI) a folder of that name under ``storage``."""
    return [locate(name_or_path)] + ([] if is_uri(name_or_path) else [locate(storage).join(name_or_path)])


def resolve_experiment(name_or_path: str, storage: str = "ray_results") -> Location:
    """An experiment folder from a path or URI, or a name under ``storage``."""
    candidates = experiment_candidates(name_or_path, storage)
    for c in candidates:
        if c.join(SETTINGS_FILE).is_file():
            return c
    raise UserError(f"no sweep named {name_or_path!r} (looked for {SETTINGS_FILE} in "
                    f"{' and '.join(c.uri for c in candidates)})")


# ------------------------------------------------------------------------------------ reading
def _analysis(exp: Location):
    """Tune's ExperimentAnalysis of ``exp``, or None before its first snapshot."""
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    try:
        return ExperimentAnalysis(exp.path, storage_filesystem=exp.fs)
    except ValueError:  # no experiment snapshot yet
        return None


def tune_trials(exp: Location) -> dict[str, tuple[str, dict[str, Any]]]:
    """Tune trial id -> (Tune status, last result) of every trial in the experiment's snapshot."""
    analysis = _analysis(exp)
    return {t.trial_id: (t.status, dict(t.last_result or {})) for t in analysis.trials} if analysis else {}


def trial_records(exp: Location) -> list[dict[str, Any]]:
    """Per trial: ``trial_id``, Tune ``status``, ``config``, ``epochs`` (epoch -> its report, from
    Tune's records and the Train run's checkpointed history), ``checkpoints`` (its complete checkpoint
    folders, :func:`sweeper.run_reader.saved_checkpoints`)."""
    analysis = _analysis(exp)
    if analysis is None:
        return []
    frames = analysis.trial_dataframes
    out = []
    for trial in analysis.trials:
        rows: dict[int, dict[str, Any]] = {}
        saved = saved_checkpoints(train_run(exp, trial.trial_id))
        rows.update({int(h["epoch"]): dict(h) for h in (saved[-1].history if saved else [])})
        df = frames.get(trial.trial_id)
        if df is not None and len(df) and "epoch" in df.columns:
            for rec in df.to_dict("records"):
                if rec.get("epoch") is not None and not (isinstance(rec["epoch"], float) and math.isnan(rec["epoch"])):
                    rows[int(rec["epoch"])] = rec  # a repeated epoch (resumed trial): the newest report
        out.append({"trial_id": trial.trial_id, "status": trial.status, "config": trial.config,
                    "epochs": [rows[e] for e in sorted(rows)], "checkpoints": saved, "path": trial.path})
    return out


def _finite(r: dict[str, Any], key: str) -> bool:
    return not r.get("diverged") and r.get(key) is not None and math.isfinite(float(r[key]))


def _scores(rec: dict[str, Any], key: str = VAL) -> list[tuple[int, float]]:
    """(epoch, score) of every epoch with a finite ``key`` (the validation score unless told)."""
    return [(int(r["epoch"]), float(r[key])) for r in rec["epochs"] if _finite(r, key)]


def recorded_scores(experiment: str) -> dict[str, list[tuple[int, float]]]:
    """Every finite validation score each searched trial reported, by epoch (what a restored
    scheduler is refilled with; baselines never enter ASHA's rungs)."""
    return {rec["trial_id"]: _scores(rec) for rec in trial_records(locate(experiment))
            if (rec["config"].get("trial") or {}).get("role") not in BASELINE_ROLES}


def all_trials_ended(exp: Location, trials: int) -> bool:
    """True when the experiment holds every planned trial, each TERMINATED or ERROR."""
    statuses = [status for status, _ in tune_trials(exp).values()]
    return len(statuses) >= trials and all(s in ("TERMINATED", "ERROR") for s in statuses)


def _status(rec: dict[str, Any], epochs: int, recorded: tuple[str, int] | None) -> tuple[str, int | None]:
    """(status, the last epoch of the trial's record). The ending and epochs the study recorded
    (:mod:`sweeper.endings`), unless that was an error and Tune runs the trial again now: a worker
    may checkpoint one more epoch while its trial is being stopped, which no one was told and which
    does not count. For a trial the study has not ended, the same rule from Tune's records, every
    reported epoch counting."""
    live = rec["status"] in ("RUNNING", "PENDING", "PAUSED")
    if recorded and recorded[0] in endings.ENDED and not (live and recorded[0] == endings.ERROR):
        return recorded[0], recorded[1]
    if live:
        return endings.INCOMPLETE, None
    last = rec["epochs"][-1] if rec["epochs"] else {}
    return endings.tune_ending(rec["status"], int(last.get("epoch", 0)), epochs, bool(last.get("diverged", False))), None


def _best_checkpoint(saved, best_epoch: int | None) -> str | None:  # noqa: ANN001
    """The complete checkpoint of the best epoch (None when that epoch's checkpoint was not kept)."""
    ckpt = checkpoint_of_epoch(saved or [], best_epoch)
    return ckpt.location.path if ckpt else None


def results_table(exp: Location):
    """The pandas table of a sweep: one row per trial, best score first."""
    settings = SweepSettings.load(exp)
    return table_from_records(trial_records(exp), settings.epochs, settings.metric_name, recorded_endings(settings))


def table_from_records(records: list[dict[str, Any]], epochs: int, metric_name: str,
                       recorded: dict[str, tuple[str, int]] | None = None):
    """The table of :func:`trial_records`' records (see :func:`results_table`); ``recorded``: the
    ending and epochs run the study holds for each trial it has ended."""
    rows, capped = [], []
    recorded = recorded or {}
    family_columns = list(dict.fromkeys(c for f in families() for c in f.table_columns))  # every family's, in order
    for rec in records:
        status, last_epoch = _status(rec, epochs, recorded.get(rec["trial_id"]))
        if last_epoch is not None:
            rec = {**rec, "epochs": [r for r in rec["epochs"] if int(r["epoch"]) <= last_epoch]}
        capped.append(rec)
        cfg, info = rec["config"], rec["config"].get("trial") or {}
        model, t = ModelConfig.from_dict(cfg["run"]["model"]), cfg["run"]["train"]
        scores = _scores(rec)
        best = min(scores, key=lambda es: es[1]) if scores else (None, math.nan)
        test = dict(_scores(rec, TEST))
        own = model.family_spec.columns(model.arch, model.is_toy)
        rows.append({
            "trial": rec["trial_id"], "role": info.get("role", "search"), "label": info.get("label", ""),
            "status": status, "family": model.family, "arch": model.family_spec.label(model.arch, model.is_toy),
            **{c: own.get(c) for c in family_columns}, "activation": model.activation,
            "blocks": "-".join(str(b) for b in model.blocks_per_scale),
            "param_count": info.get("param_count"),
            "budget_dev_pct": 100.0 * float(info["budget_deviation"]) if info.get("budget_deviation") is not None else math.nan,
            "sn_coeff": model.sn_coeff, "lr": t.get("lr"), "best_val": best[1], "best_epoch": best[0],
            "test": test.get(best[0], math.nan), "last_val": scores[-1][1] if scores else math.nan,
            "epochs_run": int(rec["epochs"][-1]["epoch"]) if rec["epochs"] else 0,
            "best_checkpoint": _best_checkpoint(rec.get("checkpoints"), best[0]), "trial_dir": rec["path"],
            "_scores": dict(scores),
        })
    control = next((r["_scores"] for r in rows if r["role"] == "control"), None)
    for r in rows:  # the difference to the control's validation score at the trial's last epoch (> 0: worse)
        last = max(r["_scores"], default=None)
        r["vs_control"] = (r["_scores"][last] - control[last]) if control and last in control else math.nan
        del r["_scores"]
    df = pd.DataFrame(rows)
    whole = [c for c in family_columns if c in arch_fields() and str(arch_fields()[c].type) == "int"]
    for col in (*whole, "best_epoch", "param_count"):
        if col in df.columns:
            df[col] = df[col].astype("Int64")
    if len(df):
        df = df.sort_values(["best_val", "trial"], na_position="last").reset_index(drop=True)
    df.attrs["metric"] = metric_name
    df.attrs["curves"] = {rec["trial_id"]: _scores(rec) for rec in capped}
    return df


# ----------------------------------------------------------------------------------- verdicts
def scored(df):  # noqa: ANN001
    """The rows of trials with a score that counts (not diverged, not errored), best first."""
    return df[~df["status"].isin(endings.EXCLUDED) & df["best_val"].notna()] if len(df) else df


def control_screen(df, unit: str) -> str | None:
    """One line on the search's own runs: the best i-DenseNet against the Residual Flow control, on
    validation, one run each. Not a verdict: the best of N noisy runs is biased in its favour (the
    verdict is :mod:`sweeper.confirm`'s, with seeds)."""
    ok = scored(df)
    ctrl = ok[ok["role"] == "control"]
    others = ok[ok["family"] != budget_family().name]
    if not len(ctrl) or not len(others):
        return None
    c, d = ctrl.iloc[0], others.iloc[0]  # sorted: the first is the best
    return (f"screening (one run each, validation): best {d['family']} trial {d['trial']} ({d['arch']}, "
            f"{d['activation']}) {d['best_val']:.3f} {unit}, {c['family']} control "
            f"{c['best_val']:.3f} {unit}; selected among {len(ok) - len(ctrl)} searched runs, so biased in the "
            f"search's favour: the verdict needs `idensenet confirm`")


def family_verdict(df, unit: str) -> str | None:
    """The best validation score of each family, when the sweep had more than one."""
    ok = scored(df)
    if not len(ok) or ok["family"].nunique() < 2:
        return None
    best = ok.groupby("family")["best_val"].min().sort_values()
    return "best validation score per family: " + ", ".join(f"{fam} {score:.3f} {unit}" for fam, score in best.items())


# ---------------------------------------------------------------------------------- best.yaml
def best_configs(exp: Location, top: int) -> dict[str, Any]:
    """The document ``best`` writes: experiment, metric and the ``top`` trials best on validation,
    each with its validation and test score at the epoch selected on validation."""
    settings = SweepSettings.load(exp)
    records = trial_records(exp)
    df = table_from_records(records, settings.epochs, settings.metric_name, recorded_endings(settings))
    configs = {rec["trial_id"]: rec["config"] for rec in records}
    saved = {rec["trial_id"]: rec["checkpoints"] for rec in records}
    ok = scored(df)
    if not len(ok):
        raise UserError(f"sweep {exp.uri} has no scored trial yet")
    entries = []
    for rank, row in enumerate(ok.head(top).itertuples(index=False), start=1):
        cfg = configs[row.trial]
        val, test, epoch, ckpt, note = epoch_with_checkpoint(row, saved[row.trial])
        entries.append({
            "rank": rank, "trial_id": str(row.trial), "role": row.role, "label": row.label, "status": row.status,
            "val_score": val, "test_score": test, "unit": settings.unit, "best_epoch": epoch,
            "epochs_run": int(row.epochs_run), "param_count": int(row.param_count),
            "budget_deviation": (cfg.get("trial") or {}).get("budget_deviation"),
            "checkpoint": exp.sibling_path(ckpt).uri if ckpt else None,
            **({"note": note} if note else {}),
            "run": cfg["run"],
        })
    if len(entries) < top:
        print(f"note: only {len(entries)} scored trial(s) available (asked for {top})")
    return {"experiment": exp.uri, "space": settings.space_name, "configs": entries}


def epoch_with_checkpoint(row, saved) -> tuple[float, float, int, str | None, str | None]:  # noqa: ANN001
    """(validation score, test score, epoch, checkpoint path, note) of one table row, all of one
    epoch: the best epoch on validation when its checkpoint was kept, else the best epoch that has one
    (the note says which scored better), else the best epoch without a checkpoint."""
    if isinstance(row.best_checkpoint, str):
        return float(row.best_val), float(row.test), int(row.best_epoch), row.best_checkpoint, None
    kept = [c for c in saved if c.epoch <= int(row.epochs_run) and _finite(c.report, VAL)]  # within the record
    if not kept:
        return (float(row.best_val), float(row.test), int(row.best_epoch), None,
                f"epoch {int(row.best_epoch)} has no kept checkpoint")
    c = min(kept, key=lambda c: float(c.report[VAL]))
    note = (f"epoch {int(row.best_epoch)} scored {float(row.best_val):.4f} but its checkpoint was not kept; "
            f"this entry is the best epoch with a checkpoint")
    return float(c.report[VAL]), float(c.report.get(TEST, math.nan)), c.epoch, c.location.path, note


def write_best(exp: Location, top: int, out: str) -> dict[str, Any]:
    doc = best_configs(exp, top)
    out_dir = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(out_dir):
        raise UserError(f"--out {out!r}: folder {out_dir} does not exist")
    locate(out).write_text(yaml.safe_dump(doc, sort_keys=False))
    return doc


def load_best_entry(path: str, rank: int = 1) -> dict[str, Any]:
    """Entry ``rank`` of a ``best.yaml`` ({..., "run": {model, train}}), or a run config file
    (``{model:, train:}``), or a bare model config."""
    if not os.path.isfile(path):
        raise UserError(f"--config {path!r}: no such file")
    try:
        with open(path) as f:
            doc = yaml.safe_load(f)
    except yaml.YAMLError as err:
        raise UserError(f"--config {path!r}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(doc, dict):
        raise UserError(f"--config {path!r}: expected a mapping")
    if "configs" in doc:
        match = [e for e in doc["configs"] or [] if int(e.get("rank", 0)) == rank]
        if not match:
            raise UserError(f"--rank {rank}: {path} holds ranks {', '.join(str(e.get('rank')) for e in doc['configs'] or [])}")
        return match[0]
    if "model" in doc:
        return {"run": {"model": doc["model"], "train": doc.get("train") or {}}, "rank": rank}
    return {"run": {"model": doc, "train": {}}, "rank": rank}


# ------------------------------------------------------------------------------------ outputs
def write_table(df, csv: Location, parquet: Location) -> None:
    """A table as CSV and as Parquet (written in memory first, so S3 gets whole objects)."""
    csv.write_text(df.to_csv(index=False))
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    parquet.write_bytes(buf.getvalue())


def write_outputs(exp: Location, df, settings: SweepSettings) -> dict[str, str]:
    """CSV, Parquet and the score-per-epoch PNG beside the experiment; their paths (or URIs)."""
    out = {"csv": exp.join(RESULTS_CSV), "parquet": exp.join(RESULTS_PARQUET), "png": exp.join(SCORES_PNG)}
    write_table(df, out["csv"], out["parquet"])
    png = io.BytesIO()
    labels = dict(zip(df["trial"], df["role"])) if len(df) else {}
    curves = {f"{t} ({labels[t]})" if labels.get(t, "search") != "search" else t: pts
              for t, pts in df.attrs.get("curves", {}).items()}
    plot_scores(curves, png, ylabel=score_label(settings.is_toy, "validation"))
    out["png"].write_bytes(png.getvalue())
    return {k: v.uri for k, v in out.items()}


def write_study_figures(exp: Location, df, settings: SweepSettings) -> dict[str, str]:
    """Optuna's views of the sweep's study (:mod:`figures.study`) beside the experiment; their URIs."""
    out = {}
    with study_snapshot(settings) as study:
        figures = study_figures(study, df, score_label(settings.is_toy, "validation"))
    for kind, png in figures.items():
        out[kind] = exp.join(STUDY_PNGS[kind])
        out[kind].write_bytes(png)
    return {k: v.uri for k, v in out.items()}


SHOW_COLUMNS = ["trial", "role", "status", "family", "arch", "activation", "param_count",
                "budget_dev_pct", "lr", "best_val", "best_epoch", "test", "epochs_run", "vs_control"]


def format_table(df) -> str:
    if not len(df):
        return "(no trials yet)"
    cols = [c for c in SHOW_COLUMNS if c in df.columns and (c != "vs_control" or df[c].notna().any())]
    shown = df[cols].rename(columns={"budget_dev_pct": "dev_%", "best_epoch": "epoch", "test": "test@epoch"})
    with pd.option_context("display.width", 220, "display.max_columns", 30, "display.float_format", "{:.4f}".format):
        return shown.to_string(index=False, na_rep="-")


def show_results(exp: Location, plots: bool = False) -> int:
    """``idensenet results``: the table, the verdicts, and the files written beside the experiment."""
    settings = SweepSettings.load(exp)
    df = results_table(exp)
    print(format_table(df))
    for line in (control_screen(df, settings.unit), family_verdict(df, settings.unit)):
        if line:
            print(line)
    paths = write_outputs(exp, df, settings)
    if plots:
        paths.update(write_study_figures(exp, df, settings))
    print("\nwrote " + "\n      ".join(paths.values()))
    return 0


def density_figure(exp: Location, df, data: str) -> str | None:
    """The data and exp(log p) of every scored trial at its best checkpoint (EMA weights), each
    titled with its score, status and role."""
    models = []
    for row in df.itertuples(index=False):
        ckpt = row.best_checkpoint
        if not isinstance(ckpt, str) or not exp.sibling_path(ckpt).join(STATE_FILE).is_file():
            continue
        with exp.sibling_path(ckpt).local_copy() as d:
            model, _ = load_model(d)
        role = "" if row.role == "search" else f", {row.role}"
        models.append((f"{row.trial} {row.family}{role}\nval {row.best_val:.3f} nats ({row.status})", model))
    if not models:
        return None
    buf = io.BytesIO()
    plot_toy_densities(models, buf, data)
    out = exp.join(DENSITIES_PNG)
    out.write_bytes(buf.getvalue())
    return out.uri


def summarise_sweep(outcome) -> int:  # noqa: ANN001
    """What a sweep prints when it ends: the table, the verdicts, the best config and the figures.
    Exit code 0; 1 when trials errored; 130 when the sweep stopped before every trial ended."""
    exp = locate(outcome.experiment)
    settings = SweepSettings.load(exp)
    df = results_table(exp)
    print("\n" + format_table(df))
    paths = write_outputs(exp, df, settings)
    print(f"\nresults: {paths['csv']}\n         {paths['parquet']}\nscores per epoch: {paths['png']}")
    try:
        best = best_configs(exp, 1)["configs"][0]
    except UserError as err:
        print(f"no best config: {err}")
    else:
        print(f"\nbest config on validation (trial {best['trial_id']}: validation {best['val_score']:.4f}, test "
              f"{best['test_score']:.4f} {best['unit']} at epoch {best['best_epoch']}):")
        print(yaml.safe_dump(best["run"], sort_keys=False).rstrip())
        print(f"checkpoint: {best['checkpoint']}")
    if settings.is_toy and len(df):
        fig = density_figure(exp, df, settings.data)
        if fig:
            print(f"learned densities: {fig}")
    for line in (family_verdict(df, settings.unit), control_screen(df, settings.unit)):
        if line:
            print("\n" + line)
    if not outcome.ended:
        print(f"\nthe sweep stopped early; continue it with: idensenet sweep --resume --name {exp.name} "
              f"--storage {exp.parent_uri}", file=sys.stderr)
        return 130
    print(f"\nsweep finished in {outcome.wall_s:.0f} s: {exp.uri}")
    return 1 if outcome.errors else 0
