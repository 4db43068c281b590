"""What a sweep prints when it ends: the results table, the best config, and the figures' paths."""

from __future__ import annotations

import sys

DENSITIES_PNG = "densities.png"


def _density_figure(exp, df, data: str) -> str | None:
    """exp(log p) of every scored trial at its best checkpoint (EMA weights), plus the data."""
    import io

    from .checkpointing import STATE_FILE, load_model
    from .plots import plot_toy_densities

    models = []
    for row in df.itertuples(index=False):
        ckpt = row.best_checkpoint
        if not isinstance(ckpt, str) or not exp.sibling_path(ckpt).join(STATE_FILE).is_file():
            continue
        with exp.sibling_path(ckpt).local_copy() as d:
            model, _ = load_model(d)
        models.append((f"{row.trial}: {row.best_score:.3f} nats ({row.status})", model))
    if not models:
        return None
    buf = io.BytesIO()
    plot_toy_densities(models, buf, data)
    out = exp.join(DENSITIES_PNG)
    out.write_bytes(buf.getvalue())
    return out.uri


def summarise_sweep(outcome, opts) -> int:
    """Print the table, write CSV/Parquet/PNG, print the best config; exit code 0, or 1 on trial errors,
    or 130 when the sweep stopped before every trial ended (resume with --resume)."""
    import yaml

    from .best import best_configs
    from .errors import UserError
    from .results import format_table, load_settings, results_table, write_outputs

    from .storage import locate

    exp = locate(outcome.experiment_path)
    settings = load_settings(exp)
    df = results_table(exp)
    print("\n" + format_table(df))
    paths = write_outputs(exp, df)
    print(f"\nresults: {paths['csv']}\n         {paths['parquet']}\nscores per epoch: {paths['png']}")
    try:
        doc = best_configs(exp, 1)
    except UserError as err:
        print(f"no best config: {err}")
        doc = None
    if doc:
        best = doc["configs"][0]
        print(f"\nbest config (trial {best['trial_id']}, {best['metric']} {best['score']:.4f}):")
        train = {k: v for k, v in best["train"].items() if v is not None}
        print(yaml.safe_dump({"model": best["model"], "train": train}, sort_keys=False).rstrip())
        print(f"checkpoint: {best['checkpoint']}")
    if settings.get("is_toy") and len(df):
        fig = _density_figure(exp, df, settings["data"])
        if fig:
            print(f"learned densities: {fig}")
    incomplete = int((df["status"] == "incomplete").sum()) if len(df) else 0
    if incomplete or len(df) < outcome.trials:
        storage = exp.uri[: -len(exp.name)].rstrip("/")
        print(f"\nthe sweep stopped early; continue it with: idensenet sweep --resume --name "
              f"{exp.name} --storage {storage}", file=sys.stderr)
        return 130
    print(f"\nsweep finished in {outcome.wall_s:.0f} s: {exp.uri}")
    return 1 if outcome.errors else 0
