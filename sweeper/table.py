"""The results table of a sweep: one row per trial with the project's own columns on top of Ray's
records (:mod:`sweeper.records`): the role (control, baseline, enqueued, search), the family and its
architecture (each family's own columns, :mod:`model.families`), the exact parameter count and its
deviation from the budget, the best validation score and its epoch (what every decision reads), the
**test score at that epoch** (the report), the difference to the control arm's validation score at
the same epoch, and a status: how the trial ended by the one rule of :mod:`sweeper.endings`, as the
study recorded it (read from a private copy, :func:`sweeper.search.study_snapshot`), or incomplete.
"""

from __future__ import annotations

import io
import math
from typing import Any

import pandas as pd

from model.families import arch_fields, budget_family, families
from search_spaces.suggest import TrialRecord

from . import endings
from .records import epoch_scores, trial_records
from .run_reader import checkpoint_of_epoch
from .metrics import DIVERGED, TEST
from .search import recorded_endings
from .settings import SweepSettings
from .storage import Location


def status_of(rec: dict[str, Any], epochs: int, recorded: tuple[str, int] | None) -> tuple[str, int | None]:
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
    return endings.tune_ending(rec["status"], int(last.get("epoch", 0)), epochs, bool(last.get(DIVERGED, False))), None


def best_checkpoint(saved, best_epoch: int | None) -> str | None:  # noqa: ANN001
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
        status, last_epoch = status_of(rec, epochs, recorded.get(rec["trial_id"]))
        if last_epoch is not None:
            rec = {**rec, "epochs": [r for r in rec["epochs"] if int(r["epoch"]) <= last_epoch]}
        capped.append(rec)
        record = TrialRecord.from_dict(rec["config"])
        model, t = record.run.model, record.run.train
        scores = epoch_scores(rec)
        best = min(scores, key=lambda es: es[1]) if scores else (None, math.nan)
        test = dict(epoch_scores(rec, TEST))
        own = model.family_spec.columns(model.arch, model.is_toy)
        rows.append({
            "trial": rec["trial_id"], "role": record.role, "label": record.label,
            "status": status, "family": model.family, "arch": model.family_spec.label(model.arch, model.is_toy),
            **{c: own.get(c) for c in family_columns}, "activation": model.activation,
            "blocks": "-".join(str(b) for b in model.blocks_per_scale),
            "param_count": record.param_count,
            "budget_dev_pct": 100.0 * record.budget_deviation if record.budget_deviation is not None else math.nan,
            "sn_coeff": model.sn_coeff, "lr": t.lr, "best_val": best[1], "best_epoch": best[0],
            "test": test.get(best[0], math.nan), "last_val": scores[-1][1] if scores else math.nan,
            "epochs_run": int(rec["epochs"][-1]["epoch"]) if rec["epochs"] else 0,
            "best_checkpoint": best_checkpoint(rec.get("checkpoints"), best[0]), "trial_dir": rec["path"],
            "epoch_scores": dict(scores),
        })
    control = next((r["epoch_scores"] for r in rows if r["role"] == "control"), None)
    for r in rows:  # the difference to the control's validation score at the trial's last epoch (> 0: worse)
        last = max(r["epoch_scores"], default=None)
        r["vs_control"] = (r["epoch_scores"][last] - control[last]) if control and last in control else math.nan
        del r["epoch_scores"]
    df = pd.DataFrame(rows)
    whole = [c for c in family_columns if c in arch_fields() and str(arch_fields()[c].type) == "int"]
    for col in (*whole, "best_epoch", "param_count"):
        if col in df.columns:
            df[col] = df[col].astype("Int64")
    if len(df):
        df = df.sort_values(["best_val", "trial"], na_position="last").reset_index(drop=True)
    df.attrs["metric"] = metric_name
    df.attrs["curves"] = {rec["trial_id"]: epoch_scores(rec) for rec in capped}
    return df


def scored(df):  # noqa: ANN001
    """The rows of trials with a score that counts (not diverged, not errored), best first."""
    return df[~df["status"].isin(endings.EXCLUDED) & df["best_val"].notna()] if len(df) else df


def control_screen(df, unit: str) -> str | None:
    """One line on the search's own runs: the best i-DenseNet against the Residual Flow control, on
    validation, one run each. Not a verdict: the best of N noisy runs is biased in its favour (the
    verdict is :mod:`sweeper.confirm`'s, with seeds)."""
    ok = scored(df)
    if not len(ok):  # nothing scored yet (a table of no trials has no columns either)
        return None
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


def write_table(df, csv: Location, parquet: Location) -> None:
    """A table as CSV and as Parquet (written in memory first, so S3 gets whole objects)."""
    csv.write_text(df.to_csv(index=False))
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    parquet.write_bytes(buf.getvalue())


SHOW_COLUMNS = ["trial", "role", "status", "family", "arch", "activation", "param_count",
                "budget_dev_pct", "lr", "best_val", "best_epoch", "test", "epochs_run", "vs_control"]


def format_table(df) -> str:
    if not len(df):
        return "(no trials yet)"
    cols = [c for c in SHOW_COLUMNS if c in df.columns and (c != "vs_control" or df[c].notna().any())]
    shown = df[cols].rename(columns={"budget_dev_pct": "dev_%", "best_epoch": "epoch", "test": "test@epoch"})
    with pd.option_context("display.width", 220, "display.max_columns", 30, "display.float_format", "{:.4f}".format):
        return shown.to_string(index=False, na_rep="-")

