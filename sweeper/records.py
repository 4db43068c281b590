"""Reading a sweep: where its experiment is, and each trial's record, through Ray (``tune.ExperimentAnalysis``
for trials, statuses and every reported epoch) and each trial's Train run read from its checkpoint
folders (:mod:`sweeper.run_reader`).

Epochs a trial's Train run has checkpointed count even when Tune's records of them were lost (a
trial restarted after an interruption), so every reported epoch is in the table, the plot and
``best``; an epoch reported twice counts with its newest report, as in the study. Works during and
after a sweep, on local or remote storage, and writes nothing the sweep reads.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from ray.tune import ExperimentAnalysis

from model.errors import UserError

from .metrics import DIVERGED, VAL
from .run_reader import saved_checkpoints
from .search import BASELINE_ROLES
from .settings import SETTINGS_FILE
from .storage import Location, is_uri, locate
from .trial import train_run


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


def finite(r: dict[str, Any], key: str) -> bool:
    return not r.get(DIVERGED) and r.get(key) is not None and math.isfinite(float(r[key]))


def epoch_scores(rec: dict[str, Any], key: str = VAL) -> list[tuple[int, float]]:
    """(epoch, score) of every epoch with a finite ``key`` (the validation score unless told)."""
    return [(int(r["epoch"]), float(r[key])) for r in rec["epochs"] if finite(r, key)]


def recorded_scores(experiment: str) -> dict[str, list[tuple[int, float]]]:
    """Every finite validation score each searched trial reported, by epoch (what a restored
    scheduler is refilled with; baselines never enter ASHA's rungs)."""
    return {rec["trial_id"]: epoch_scores(rec) for rec in trial_records(locate(experiment))
            if (rec["config"].get("trial") or {}).get("role") not in BASELINE_ROLES}


def all_trials_ended(exp: Location, trials: int) -> bool:
    """True when the experiment holds every planned trial, each TERMINATED or ERROR."""
    statuses = [status for status, _ in tune_trials(exp).values()]
    return len(statuses) >= trials and all(s in ("TERMINATED", "ERROR") for s in statuses)

