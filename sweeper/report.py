"""What a sweep's results become: the files beside the experiment (table as CSV and Parquet, the
score curves, Optuna's views of the study, the learned toy densities), ``best.yaml`` (the best
configurations on validation, each with its test score at the selected epoch), and what
``idensenet results`` and the end of a sweep print.
"""

from __future__ import annotations

import io
import math
import os
import sys
from typing import Any

import yaml

from figures.plots import plot_scores, plot_toy_densities
from figures.study import study_figures
from model.errors import UserError
from search_spaces.suggest import TrialRecord

from .checkpoint import STATE_FILE, load_model
from .metrics import TEST, VAL
from .records import finite, trial_records
from .search import recorded_endings, study_snapshot
from .settings import SweepSettings, score_label
from .storage import Location, locate
from .table import control_screen, family_verdict, format_table, results_table, scored, table_from_records, write_table

RESULTS_CSV, RESULTS_PARQUET, SCORES_PNG, DENSITIES_PNG = "results.csv", "results.parquet", "scores.png", "densities.png"


STUDY_PNGS = {"by_family": "scores_by_family.png", "parallel": "parallel.png", "importance": "importance.png"}


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
            VAL: val, TEST: test, "unit": settings.unit, "best_epoch": epoch,
            "epochs_run": int(row.epochs_run), "param_count": int(row.param_count),
            "budget_deviation": TrialRecord.from_dict(cfg).budget_deviation,
            "checkpoint": exp.sibling_path(ckpt).uri if ckpt else None,
            **({"note": note} if note else {}),
            **({"family_modules": settings.family_modules} if settings.family_modules else {}),
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
    kept = [c for c in saved if c.epoch <= int(row.epochs_run) and finite(c.report, VAL)]  # within the record
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

