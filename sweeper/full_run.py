"""``idensenet train``: one config from ``best.yaml`` as a standalone, resumable TorchTrainer run.

The run folder is ``<storage>/<name>``; the default name is derived from the config (trial id and
rank, or a hash of the model and train configs without the epoch count), so rerunning the same
command finds the Train run snapshot and resumes from the latest checkpoint, and asking for more
epochs extends the same run. At the end it writes a figure from the EMA weights (a density plot for
toy data, a sample grid for images) and prints the final test score.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from .errors import UserError
from .resources import TrialShape, check_worker_fits_a_node, fitting_trials
from .runtime import (check_dataset, check_storage, cluster_plan, connect_ray, experiment_location,
                      planned_local_resources)
from .storage import Location

STATUS_FILE = "last_report.json"


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
    verbose: bool = False


def _default_name(entry: dict[str, Any], train: dict[str, Any]) -> str:
    if entry.get("trial_id"):
        return f"full-{entry['trial_id']}-rank{entry.get('rank', 1)}"
    key = json.dumps({"model": entry["model"], "train": {k: v for k, v in train.items() if k != "epochs"}},
                     sort_keys=True, default=str)
    return "full-" + hashlib.sha1(key.encode()).hexdigest()[:10]


def prepare(opts: TrainOptions) -> tuple[dict[str, Any], TrialShape, str, Location]:
    """Validated loop config, trial shape, run name and run location (nothing created)."""
    from model.config import ConfigError, ModelConfig

    from .best import load_best_entry
    from .train_config import TrainConfig, option_overrides

    entry = load_best_entry(opts.config, opts.rank)
    try:
        mcfg = ModelConfig.from_dict(entry["model"])
    except (ConfigError, TypeError) as err:
        raise UserError(f"--config {opts.config}: bad model config ({err})") from None
    train = {k: v for k, v in dict(entry.get("train") or {}).items()
             if k not in ("resolved_defaults", "tensorboard_dir", "status_path", "inject_nan_at_epoch", "n_workers")}
    train.update({k: v for k, v in opts.train_overrides.items()})
    train.update(option_overrides(opts.epochs, opts.batch_size, opts.data_root))
    train["use_gpu"] = opts.gpu
    tc = TrainConfig.from_dict(train).resolved()
    if tuple(mcfg.input_shape) != _shape_of(tc.data):
        raise UserError(f"model input shape {mcfg.input_shape} does not match data set {tc.data!r}")
    if tc.batch_size % opts.workers:
        raise UserError(f"batch size {tc.batch_size} is not a multiple of --workers {opts.workers}")
    check_dataset(tc.data, tc.data_root)
    check_storage(opts.storage)
    name = opts.name or _default_name(entry, {k: v for k, v in train.items() if k != "use_gpu"})
    run = experiment_location(opts.storage, name)
    tc = tc.replace(tensorboard_dir=None if run.remote else os.path.join(run.path, "tensorboard"),
                    status_path=run.join(STATUS_FILE).uri)
    shape = TrialShape.local(opts.workers, opts.gpu, opts.cpus_per_worker)
    return {"model": mcfg.to_dict(), "train": tc.to_dict()}, shape, name, run


def _shape_of(data: str) -> tuple[int, ...]:
    from model.data import dataset_info

    try:
        return tuple(dataset_info(data)[0])
    except ValueError as err:
        raise UserError(str(err)) from None


def _check_fits(shape: TrialShape, resources: dict[str, float]) -> None:
    if fitting_trials(resources, shape) < 1:
        need = ", ".join(f"{v:g} {k}" for k, v in shape.worker_resources().items())
        raise UserError(f"{shape.workers} worker(s) of {need} do not fit the cluster "
                        f"({', '.join(f'{v:g} {k}' for k, v in resources.items() if k in ('CPU', 'GPU'))})")


def _no_driver(shape: TrialShape) -> TrialShape:
    """A standalone run has no Tune driver: only its workers need room."""
    return TrialShape(shape.workers, shape.worker, {}, shape.use_gpu)


def run_full(opts: TrainOptions) -> int:
    t0 = time.time()
    loop_config, shape, name, run = prepare(opts)
    import ray as _ray  # noqa: F401  (after validation: Ray import is slow)

    if opts.address is None and not (_ray.is_initialized() or os.environ.get("RAY_ADDRESS")):
        _check_fits(_no_driver(shape), planned_local_resources(opts.gpu))
    connect_ray(opts.address, opts.gpu, verbose=opts.verbose)
    shape, reachable, nodes = cluster_plan(opts.workers, opts.gpu, opts.cpus_per_worker, opts.storage)
    _check_fits(_no_driver(shape), reachable)
    check_worker_fits_a_node(nodes, shape)
    from .trial import make_torch_trainer

    resumed = run.exists()
    tc = loop_config["train"]
    print(f"{'resuming' if resumed else 'starting'} run {run.uri}: {tc['epochs']} epochs on {tc['data']}, "
          f"{shape.workers} worker(s){' with GPUs' if shape.use_gpu else ''}", flush=True)
    trainer = make_torch_trainer(loop_config, shape, name, run.uri[: -len(name)].rstrip("/"),
                                 max_failures=opts.max_failures, controller_failure_limit=3)
    result = trainer.fit()
    status = _read_status(run.join(STATUS_FILE))
    if status.get("diverged"):
        print(f"run diverged at epoch {status.get('epoch')} (non-finite loss); last good checkpoint kept")
        return 1
    ckpt = result.checkpoint
    if ckpt is None:
        raise UserError(f"run {run.uri} produced no checkpoint")
    figure = write_figure(run.sibling_path(ckpt.path), run)
    metric = "test NLL (nats)" if status.get("test_nll") is not None else "test bits/dim"
    score = status.get("test_score")
    print(f"final {metric}: {score:.4f} at epoch {status.get('epoch')} (best {status.get('best_test_score'):.4f})"
          if score is not None else "no epoch was run")
    print(f"checkpoint: {ckpt.path}\nfigure: {figure}\nwall time {time.time() - t0:.1f} s", flush=True)
    return 0


def _read_status(loc: Location) -> dict[str, Any]:
    try:
        return json.loads(loc.read_text()) if loc.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}


def write_figure(checkpoint: Location, out: Location, label: str | None = None) -> str:
    """Density plot (toy) or sample grid (images) from a checkpoint's EMA weights; returns the PNG's
    path or URI inside ``out``."""
    import io

    import torch

    from .checkpointing import load_model
    from .plots import plot_sample_grid, plot_toy_densities

    with checkpoint.local_copy() as d:
        model, state = load_model(d)
    data = state["train_config"]["data"]
    buf = io.BytesIO()
    if model.config.is_toy:
        name = "density.png"
        plot_toy_densities([(label or f"epoch {state['epoch']}, NLL {state['test_score']:.3f}", model)], buf, data, n=100)
    else:
        name = "samples.png"
        model.update_lipschitz(None)
        with torch.no_grad():
            x = model.sample(64, generator=torch.Generator().manual_seed(0))
        plot_sample_grid(x.reshape(-1, *model.config.input_shape), buf, model.config.n_levels)
    target = out.join(name)
    target.write_bytes(buf.getvalue())
    return target.uri
