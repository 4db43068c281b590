"""Sweep assembly: OptunaSearch (TPE, seeded, study stored beside the experiment) proposes budget-matched
configs, ASHA (``time_attr="epoch"``) stops the hopeless ones, and each trial trains data-parallel.

``run_sweep`` validates everything it can before creating the experiment folder or starting Ray,
sizes ``max_concurrent_trials`` from the cluster so drivers never starve their own workers, and
resumes an interrupted sweep with ``Tuner.restore`` (finished trials are not run again; unfinished
and errored ones continue from their Train run's latest checkpoint).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import UserError
from .resources import TrialShape, check_worker_fits_a_node, max_concurrent_trials
from .runtime import (check_dataset, check_storage, cluster_plan, connect_ray, experiment_location,
                      planned_local_resources)
from .storage import Location, locate
from .study import METRIC, MODE, all_trials_ended, fail_orphans, make_searcher, optuna_journal

SETTINGS_FILE = "idensenet_sweep.json"


@dataclass
class SweepOptions:
    space: str = "toy-moons"
    trials: int = 4
    workers_per_trial: int = 1
    gpu: bool = False
    epochs: int | None = None
    storage: str = "ray_results"
    name: str | None = None
    grace_period: int = 1
    reduction_factor: float = 2.0
    max_concurrent: int | None = None
    cpus_per_worker: float | None = None
    seed: int = 0
    resume: bool = False
    smoke_test: bool = False
    batch_size: int | None = None
    data_root: str | None = None
    address: str | None = None
    time_budget_s: float | None = None
    worker_max_failures: int = 1
    trial_max_failures: int = 1
    controller_failure_limit: int = 3
    driver_resource: str | None = None
    train_overrides: dict[str, Any] = field(default_factory=dict)
    inject_nan_trials: list[int] = field(default_factory=list)
    verbose: bool = False


@dataclass
class SweepOutcome:
    experiment_path: str
    trials: int  # planned
    errors: int
    wall_s: float


def _smoke(opts: SweepOptions, is_toy: bool) -> dict[str, Any]:
    force = {"epochs": 2, "steps_per_epoch": 5, "test_size": 1000 if is_toy else 64}
    if not is_toy:
        force["batch_size"] = 16 * opts.workers_per_trial
        force["test_batch_size"] = 32 * opts.workers_per_trial
    return force


def build_settings(opts: SweepOptions, exp: Location) -> dict[str, Any]:
    """Everything a trial driver needs, saved as JSON beside the experiment (used again by --resume)."""
    from .spaces import clean_train, load_space, space_data, space_train_defaults
    from .train_config import option_overrides

    space = load_space(opts.space)
    base = space_train_defaults(space)
    data = space_data(space) or base.get("data") or "moons"
    base["data"] = data
    from model.data import TOY_SETS

    is_toy = data.lower() in TOY_SETS
    force: dict[str, Any] = {"use_gpu": opts.gpu, "seed": opts.seed,
                             **option_overrides(opts.epochs, opts.batch_size, opts.data_root)}
    if opts.smoke_test:
        force.update(_smoke(opts, is_toy))
    force.update(clean_train(opts.train_overrides))
    epochs = int(force.get("epochs", base.get("epochs", 10)))
    force["epochs"] = epochs
    bs = force.get("batch_size", base.get("batch_size"))
    if bs is not None and int(bs) % opts.workers_per_trial:
        raise UserError(f"batch size {bs} is not a multiple of --workers-per-trial {opts.workers_per_trial}")
    check_dataset(data, force.get("data_root", base.get("data_root")))
    return {
        "options": asdict(opts),
        "space": opts.space,
        "data": data,
        "is_toy": is_toy,
        "epochs": epochs,
        "metric": METRIC,
        "metric_name": "test_nll" if is_toy else "test_bpd",
        "experiment_path": exp.uri,
        "optuna_journal": optuna_journal(exp),
        "train_base": base,
        "train_force": force,
        "worker_max_failures": opts.worker_max_failures,
        "controller_failure_limit": opts.controller_failure_limit,
        "driver_resource": opts.driver_resource,
    }


def run_sweep(opts: SweepOptions) -> SweepOutcome:
    """Validate, connect to (or start) Ray, run or resume the sweep, and return where it lives."""
    t0 = time.time()
    if opts.trials < 1:
        raise UserError(f"--trials must be >= 1, got {opts.trials}")
    if opts.resume and not opts.name:
        raise UserError("--resume needs the --name of the sweep to continue")
    name = opts.name or f"{os.path.splitext(os.path.basename(opts.space))[0]}-{time.strftime('%Y%m%d-%H%M%S')}"
    exp = experiment_location(opts.storage, name)
    exp_path = exp.uri
    check_storage(opts.storage)
    settings_file = exp.join(SETTINGS_FILE)
    if opts.resume:
        if not settings_file.is_file():
            raise UserError(f"no sweep to resume at {exp_path} (missing {SETTINGS_FILE})")
        settings = json.loads(settings_file.read_text())
    else:
        if exp.exists():
            raise UserError(f"experiment {exp_path} already exists; pass --resume to continue it or choose another --name")
        settings = build_settings(opts, exp)
    trials = int(settings["options"]["trials"])
    if opts.address is None and not _ray_running():  # judge a local instance before starting it
        local = TrialShape(**settings["shape"]) if opts.resume else TrialShape.local(
            opts.workers_per_trial, opts.gpu, opts.cpus_per_worker)
        max_concurrent_trials(planned_local_resources(opts.gpu), local, trials, opts.max_concurrent)
    connect_ray(opts.address, opts.gpu, verbose=opts.verbose)
    shape, reachable, nodes = cluster_plan(opts.workers_per_trial, opts.gpu, opts.cpus_per_worker, opts.storage)
    if opts.resume:
        shape = TrialShape(**settings["shape"])
    concurrency = max_concurrent_trials(reachable, shape, trials, opts.max_concurrent)
    check_worker_fits_a_node(nodes, shape)
    settings["shape"] = asdict(shape)

    from ray import tune

    from .trial import make_trainable

    trainable = make_trainable(settings)
    if opts.resume:
        if not tune.Tuner.can_restore(exp_path):
            raise UserError(f"no restorable Tune experiment at {exp_path}")
        print(f"resuming sweep {exp_path}", flush=True)
        tuner = tune.Tuner.restore(exp_path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        exp.makedirs()
        settings_file.write_text(json.dumps(settings, indent=1))
        tuner = _new_tuner(settings, opts, trainable, concurrency, name, locate(opts.storage).uri)
        print(f"sweep {exp_path}: {opts.trials} trials of space {settings['space']!r}, "
              f"{shape.workers} worker(s) each, {concurrency} at a time, {settings['epochs']} epochs", flush=True)
    grid = tuner.fit()
    if all_trials_ended(exp, trials):
        fail_orphans(settings.get("optuna_journal") or optuna_journal(exp))
    errors = sum(1 for r in grid if r.error is not None)
    return SweepOutcome(exp_path, trials, errors, time.time() - t0)


def _ray_running() -> bool:
    try:
        import ray
    except ImportError:  # pragma: no cover
        return False
    return ray.is_initialized() or bool(os.environ.get("RAY_ADDRESS"))


def _new_tuner(settings: dict[str, Any], opts: SweepOptions, trainable, concurrency: int, name: str,
               storage_uri: str):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from .progress import ProgressPrinter

    epochs = settings["epochs"]
    scheduler = ASHAScheduler(
        time_attr="epoch", max_t=epochs, grace_period=min(opts.grace_period, epochs),
        reduction_factor=opts.reduction_factor, stop_last_trials=False,
    )
    label = "test NLL" if settings["is_toy"] else "test bpd"
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=METRIC, mode=MODE, search_alg=make_searcher(settings, opts.inject_nan_trials, opts.seed), scheduler=scheduler,
            num_samples=opts.trials, max_concurrent_trials=concurrency, time_budget_s=opts.time_budget_s,
            trial_name_creator=trial_name, trial_dirname_creator=trial_name,
        ),
        run_config=tune.RunConfig(
            name=name, storage_path=storage_uri,
            failure_config=tune.FailureConfig(max_failures=opts.trial_max_failures),
            callbacks=[ProgressPrinter(epochs, label)], verbose=0,
        ),
    )


def trial_name(trial) -> str:
    """Short trial folder names (Tune's default embeds the whole config)."""
    return f"trial_{trial.trial_id}"
