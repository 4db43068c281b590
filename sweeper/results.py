"""Results of a sweep, read from its experiment folder (works during and after the sweep, without Ray).

Every Tune trial folder holds ``params.json`` (the proposed config) and ``result.json`` (one JSON
line per epoch report). The table has one row per trial: the architecture choices, the exact
parameter count and its deviation from the budget, the best and last test score, epochs run, the
checkpoint of the best epoch, and a status: finished, stopped (ASHA), diverged, error, or
incomplete (still running, or interrupted).
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

from .errors import UserError
from .storage import Location, is_uri, locate

RESULTS_CSV, RESULTS_PARQUET, SCORES_PNG = "results.csv", "results.parquet", "scores.png"
SETTINGS_FILE = "idensenet_sweep.json"


def _loc(exp: "str | Location") -> Location:
    return exp if isinstance(exp, Location) else locate(exp)


def resolve_experiment(name_or_path: str, storage: str = "ray_results") -> Location:
    """An experiment folder from a path or URI, or a name under ``storage``; UserError if there is none."""
    candidates = [locate(name_or_path)] if is_uri(name_or_path) else []
    candidates += [locate(name_or_path), locate(storage).join(name_or_path)] if not is_uri(name_or_path) else []
    for c in candidates:
        if c.join(SETTINGS_FILE).is_file():
            return c
    raise UserError(f"no sweep named {name_or_path!r} (looked for {SETTINGS_FILE} in "
                    f"{' and '.join(c.uri for c in candidates)})")


def load_settings(exp: "str | Location") -> dict[str, Any]:
    return json.loads(_loc(exp).join(SETTINGS_FILE).read_text())


def _read_results(loc: Location) -> list[dict[str, Any]]:
    rows = []
    if not loc.is_file():
        return rows
    for line in loc.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line being written right now
                pass
    return rows


def _trial_statuses(exp: "str | Location") -> dict[str, str]:
    """Tune's own trial statuses from the newest experiment state file (TERMINATED, ERROR, ...)."""
    exp = _loc(exp)
    # one file per (re)start of the sweep, named by its start time; the newest start holds every trial
    files = [n for n in exp.children() if n.startswith("experiment_state") and n.endswith(".json")]
    if not files:
        return {}
    try:
        state = json.loads(exp.join(sorted(files)[-1]).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    out = {}
    for item in state.get("trial_data", []):
        try:
            meta = json.loads(item[0]) if isinstance(item, list) else item
            out[str(meta["trial_id"])] = str(meta["status"])
        except (KeyError, TypeError, json.JSONDecodeError, IndexError):
            continue
    return out


def collect_trials(exp: "str | Location") -> list[dict[str, Any]]:
    """One record per trial folder: ``config``, ``results`` (per epoch, deduplicated) and ``dir``."""
    exp = _loc(exp)
    trials = []
    for name in exp.children():
        tdir = exp.join(name)
        params = tdir.join("params.json")
        if not params.is_file():
            continue
        config = json.loads(params.read_text())
        by_epoch: dict[int, dict[str, Any]] = {}
        trial_id = None
        for r in _read_results(tdir.join("result.json")):
            trial_id = r.get("trial_id", trial_id)
            if "epoch" in r:
                by_epoch[int(r["epoch"])] = r  # a resumed trial may repeat an epoch: keep the newest
        trials.append({"dir": tdir.uri, "config": config, "trial_id": trial_id or _id_from_dir(name),
                       "results": [by_epoch[e] for e in sorted(by_epoch)],
                       "error": tdir.join("error.txt").is_file()})
    return trials


def _id_from_dir(base: str) -> str:
    return base[len("trial_"):] if base.startswith("trial_") else base


def _status(trial: dict[str, Any], tune_status: str | None, epochs: int) -> str:
    res = trial["results"]
    last = res[-1] if res else {}
    if last.get("diverged"):
        return "diverged"
    if tune_status == "ERROR" or (trial["error"] and tune_status != "TERMINATED"):
        return "error"
    if res and int(last.get("epoch", 0)) >= epochs:
        return "finished"
    if tune_status == "TERMINATED":
        return "stopped (ASHA)"
    return "incomplete"


def _fmt_eta(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "/".join(f"{float(x):.3g}" for x in v)
    return "" if v is None else f"{float(v):.3g}"


def results_table(exp: "str | Location"):
    """The pandas table of a sweep (one row per trial, best score first)."""
    import pandas as pd

    exp = _loc(exp)
    settings = load_settings(exp)
    epochs = int(settings["epochs"])
    statuses = _trial_statuses(exp)
    rows = []
    for t in collect_trials(exp):
        cfg, res = t["config"], t["results"]
        m = cfg.get("model", {})
        scores = [(r["epoch"], r["test_score"]) for r in res if not r.get("diverged") and "test_score" in r]
        best = min(scores, key=lambda es: es[1]) if scores else (None, math.nan)
        best_ckpt = next((r.get("checkpoint_path") for r in res if r.get("epoch") == best[0]), None)
        rows.append({
            "trial": t["trial_id"], "status": _status(t, statuses.get(str(t["trial_id"])), epochs),
            "family": m.get("family"), "depth": m.get("depth"), "growth": m.get("growth"),
            "activation": m.get("activation"),
            "blocks": "-".join(str(b) for b in m.get("blocks_per_scale", [])),
            "param_count": cfg.get("param_count", res[-1].get("param_count") if res else None),
            "budget_dev_pct": 100.0 * float(cfg["budget_deviation"]) if cfg.get("budget_deviation") is not None else math.nan,
            "eta_init": _fmt_eta(m.get("eta_init")), "sn_coeff": m.get("sn_coeff"), "lip_coeff": m.get("lip_coeff"),
            "lc_start_epoch": m.get("lc_start_epoch"), "lr": (cfg.get("train") or {}).get("lr"),
            "best_score": best[1], "best_epoch": best[0],
            "last_score": scores[-1][1] if scores else math.nan,
            "epochs_run": int(res[-1]["epoch"]) if res else 0,
            "best_checkpoint": best_ckpt, "trial_dir": t["dir"],
        })
    df = pd.DataFrame(rows)
    if len(df):
        df = df.sort_values(["best_score", "trial"], na_position="last").reset_index(drop=True)
    df.attrs["metric"] = settings.get("metric_name", "test_score")
    return df


def write_outputs(exp: "str | Location", df) -> dict[str, str]:
    """CSV, Parquet and the score-per-epoch PNG beside the experiment; returns their paths (or URIs)."""
    from .plots import plot_scores

    exp = _loc(exp)
    out = {"csv": exp.join(RESULTS_CSV), "parquet": exp.join(RESULTS_PARQUET), "png": exp.join(SCORES_PNG)}
    out["csv"].write_text(df.to_csv(index=False))
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    out["parquet"].write_bytes(buf.getvalue())
    curves = {str(t["trial_id"]): [(r["epoch"], r["test_score"]) for r in t["results"]
                                   if not r.get("diverged") and "test_score" in r]
              for t in collect_trials(exp)}
    settings = load_settings(exp)
    png = io.BytesIO()
    plot_scores(curves, png, ylabel=("test NLL (nats)" if settings.get("is_toy") else "test bits/dim"))
    out["png"].write_bytes(png.getvalue())
    return {k: v.uri for k, v in out.items()}


SHOW_COLUMNS = ["trial", "status", "depth", "growth", "activation", "param_count", "budget_dev_pct",
                "eta_init", "sn_coeff", "lip_coeff", "best_score", "last_score", "epochs_run"]


def format_table(df) -> str:
    import pandas as pd

    if not len(df):
        return "(no trials yet)"
    cols = [c for c in SHOW_COLUMNS if c in df.columns]
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.float_format", "{:.4f}".format):
        return df[cols].rename(columns={"best_score": f"best_{df.attrs.get('metric', 'score')}",
                                        "last_score": "last", "budget_dev_pct": "dev_%"}).to_string(index=False)


def cmd_results(name_or_path: str, storage: str) -> int:
    exp = resolve_experiment(name_or_path, storage)
    df = results_table(exp)
    print(format_table(df))
    paths = write_outputs(exp, df)
    print(f"\nwrote {paths['csv']}\n      {paths['parquet']}\n      {paths['png']}")
    return 0
