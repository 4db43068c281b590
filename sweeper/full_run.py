"""``idensenet train``: one run config (an entry of ``best.yaml``) as a standalone, resumable run.

The run folder is ``<storage>/<name>``; the default name comes from the entry (trial id and rank)
or from a hash of the run config without its epoch count, so the same command again finds the Train
run and resumes from its latest checkpoint, and more ``--epochs`` extend it. The outcome is Train's
own (``Result.return_value``: status, epochs and every epoch's report); at the end a figure from
the EMA weights (a density plot for toy data, a sample grid for images).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from figures.plots import plot_sample_grid, plot_toy_densities
from model.data import require_dataset
from model.errors import UserError
from model.families import import_modules, plugin_modules
from model.run_config import RunConfig

from .checkpoint import load_model
from .metrics import BEST_VAL, TEST, VAL
from .placement import plan
from .report import load_best_entry
from .settings import command_line_train, score_label
from .storage import Location, check_writable, experiment_location, storage_errors
from .trial import cause_line, make_torch_trainer


@dataclass
class TrainOptions:
    config: str
    rank: int = 1
    epochs: int | None = None
    workers: int = 1
    gpu: bool = False
    storage: str = "ray_results"
    name: str | None = None
    cpus_per_worker: float | None = None
    data_root: str | None = None
    batch_size: int | None = None
    address: str | None = None
    max_failures: int = 3
    train_overrides: dict[str, Any] = field(default_factory=dict)
    cluster_config: str | None = None
    shared_storage: bool = False
    verbose: bool = False


def _default_name(entry: dict[str, Any], run: RunConfig) -> str:
    if entry.get("trial_id"):
        return f"full-{entry['trial_id']}-rank{entry.get('rank', 1)}"
    d = run.to_dict()
    d["train"].pop("epochs")
    return "full-" + hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:10]


def prepare(opts: TrainOptions) -> tuple[RunConfig, str, Location]:
    """Validated run config, run name and run folder (nothing created)."""
    entry = load_best_entry(opts.config, opts.rank)
    import_modules(entry.get("family_modules") or [])  # a family defined outside model.families
    try:
        run = RunConfig.from_dict(entry["run"])
    except UserError as err:
        raise UserError(f"--config {opts.config}: {err.summary()}") from None
    try:
        run = run.with_train(**command_line_train(opts.epochs, opts.batch_size, opts.data_root, opts.train_overrides))
    except UserError as err:
        raise UserError(f"train config: {err.summary()}") from None
    if run.train.batch_size % opts.workers:
        raise UserError(f"batch size {run.train.batch_size} is not a multiple of --workers {opts.workers}")
    require_dataset(run.train.data, run.train.data_root)
    check_writable(opts.storage)
    name = opts.name or _default_name(entry, run)
    return run, name, experiment_location(opts.storage, name)


def run_full(opts: TrainOptions) -> int:
    t0 = time.time()
    run, name, folder = prepare(opts)
    modules = plugin_modules()
    shape, _ = plan(opts.workers, opts.gpu, opts.cpus_per_worker, 1, None, opts.address, opts.storage,
                    opts.cluster_config, opts.shared_storage, opts.verbose, with_driver=False)
    with storage_errors(f"run {folder.uri}"):
        resumed = folder.exists()
    print(f"{'resuming' if resumed else 'starting'} run {folder.uri}: {run.train.epochs} epochs on {run.train.data}, "
          f"{shape.workers} worker(s){' with GPUs' if shape.use_gpu else ''}", flush=True)
    loop = {"run": run.to_dict(), "device": "cuda" if opts.gpu else "cpu", "family_modules": modules,
            "tensorboard_dir": None if folder.remote else os.path.join(folder.path, "tensorboard")}
    trainer = make_torch_trainer(loop, shape, folder, max_failures=opts.max_failures, controller_failure_limit=3)
    try:
        result = trainer.fit()
    except Exception as err:  # Train's TrainingFailedError wraps the workers' errors
        raise UserError(f"run {folder.uri} failed: {cause_line(str(err))}") from None
    summary = result.return_value or {}
    if summary.get("status") == "diverged":
        print(f"run diverged at epoch {summary.get('epochs')} (non-finite loss); the last good checkpoint is kept")
        return 1
    if result.checkpoint is None:
        raise UserError(f"run {folder.uri} produced no checkpoint")
    figure = write_figure(folder.sibling_path(result.checkpoint.path), folder)
    last = (summary.get("history") or [{}])[-1]
    metric = score_label(run.model.is_toy)
    print(f"final {metric}: {last.get(TEST, float('nan')):.4f} at epoch {last.get('epoch')}; validation "
          f"{last.get(VAL, float('nan')):.4f} (best {summary.get(BEST_VAL) or float('nan'):.4f})")
    print(f"checkpoint: {result.checkpoint.path}\nfigure: {figure}\nwall time {time.time() - t0:.1f} s", flush=True)
    return 0


def write_figure(checkpoint: Location, out: Location) -> str:
    """Density plot (toy) or sample grid (images) from a checkpoint's EMA weights; the PNG's path/URI."""
    with checkpoint.local_copy() as d:
        model, state = load_model(d)
    data = state["run"]["train"]["data"]
    buf = io.BytesIO()
    if model.config.is_toy:
        name, score = "density.png", state["history"][-1][TEST]
        plot_toy_densities([(f"epoch {state['epoch']}, NLL {score:.3f}", model)], buf, data, n=100)
    else:
        name = "samples.png"
        model.update_lipschitz(None)
        with torch.no_grad():
            x = model.sample(64, generator=torch.Generator().manual_seed(0))
        plot_sample_grid(x.reshape(-1, *model.config.input_shape), buf, model.config.n_levels)
    target = out.join(name)
    target.write_bytes(buf.getvalue())
    return target.uri
