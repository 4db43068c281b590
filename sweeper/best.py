"""Export the K best complete configs of a sweep (model + train config, score, checkpoint) as YAML.

Diverged, errored and never-scored trials are skipped. Each entry carries everything ``idensenet
train`` needs: the full ModelConfig dict (parameter count and budget deviation included for the
record) and the train config the trial actually ran with (read from its checkpoint).
"""

from __future__ import annotations

import math
import os
from typing import Any

from .errors import UserError
from .results import _loc, collect_trials, load_settings, results_table
from .storage import Location

EXCLUDED = ("diverged", "error")


def _train_config_of(exp: Location, ckpt: str | None, fallback: dict[str, Any]) -> dict[str, Any]:
    import json

    from .checkpointing import META_FILE

    meta_file = exp.sibling_path(ckpt).join(META_FILE) if ckpt else None
    if meta_file is not None and meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        if meta.get("train_config"):
            tc = dict(meta["train_config"])
            tc.pop("resolved_defaults", None)
            return tc
    return fallback


def best_configs(exp: "str | Location", top: int) -> dict[str, Any]:
    """The document ``best`` writes: experiment, metric and the ``top`` best entries (rank 1 first)."""
    if top < 1:
        raise UserError(f"--top must be >= 1, got {top}")
    exp = _loc(exp)
    settings = load_settings(exp)
    df = results_table(exp)
    by_id = {str(t["trial_id"]): t for t in collect_trials(exp)}
    ok = df[~df["status"].isin(EXCLUDED) & df["best_score"].notna()] if len(df) else df
    if not len(ok):
        raise UserError(f"sweep {exp.uri} has no scored trial yet")
    entries = []
    for rank, row in enumerate(ok.head(top).itertuples(index=False), start=1):
        trial = by_id[str(row.trial)]
        cfg = trial["config"]
        base_train = {**settings.get("train_base", {}), **(cfg.get("train") or {}), **settings.get("train_force", {})}
        ckpt = row.best_checkpoint if isinstance(row.best_checkpoint, str) else None
        entries.append({
            "rank": rank, "trial_id": str(row.trial), "status": row.status,
            "score": float(row.best_score), "metric": settings.get("metric_name", "test_score"),
            "best_epoch": int(row.best_epoch) if row.best_epoch is not None and not math.isnan(row.best_epoch) else None,
            "epochs_run": int(row.epochs_run),
            "param_count": int(row.param_count) if row.param_count is not None else None,
            "budget_deviation": cfg.get("budget_deviation"),
            "checkpoint": ckpt,
            "model": dict(cfg["model"]),
            "train": _train_config_of(exp, ckpt, base_train),
        })
    if len(entries) < top:
        print(f"note: only {len(entries)} scored trial(s) available (asked for {top})")
    return {"experiment": exp.uri, "space": settings.get("space"), "configs": entries}


def write_best(exp: "str | Location", top: int, out: str) -> dict[str, Any]:
    import yaml

    doc = best_configs(exp, top)
    out_dir = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(out_dir):
        raise UserError(f"--out {out!r}: folder {out_dir} does not exist")
    with open(out, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    return doc


def load_best_entry(path: str, rank: int = 1) -> dict[str, Any]:
    """The entry of rank ``rank`` from a ``best`` YAML (or a plain ``{model:, train:}`` / model-config file)."""
    import yaml

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
        entries = doc["configs"] or []
        match = [e for e in entries if int(e.get("rank", 0)) == rank]
        if not match:
            raise UserError(f"--rank {rank}: {path} holds ranks {', '.join(str(e.get('rank')) for e in entries)}")
        return match[0]
    if "model" in doc:
        return {"model": doc["model"], "train": doc.get("train") or {}, "rank": rank}
    return {"model": doc, "train": {}, "rank": rank}
