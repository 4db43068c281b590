"""The trial driver: the Tune function trainable that trains one proposed run config with a
``TorchTrainer`` (Ray's Train-inside-Tune pattern: worker loop, trial driver, Tuner).

Tune runs :func:`run_trial` in a trial actor holding a sliver of resources; it builds a
``TorchTrainer`` whose workers run :func:`sweeper.worker.train_loop_per_worker`, and Train's
``TuneReportCallback`` forwards rank 0's per-epoch report (plus ``checkpoint_path``) to the trial.
The Train run is named ``train-<trial id>`` inside the experiment, so a retried or restored trial
finds its run and resumes from the latest checkpoint.

A trial Tune starts again after an interruption has lost the reports of its earlier run (Tune's
snapshot predates them). Before training, the driver therefore tells Tune again every epoch its Train
run has checkpointed (marked ``replayed``), so the scheduler, the searcher and the results table see
them; a run that had already ended (its last epoch, or diverged) is not started again.
"""

from __future__ import annotations

import time
from typing import Any

import ray.train
from ray import tune
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from .metrics import DIVERGED, VAL
from .placement import TrialShape
from .settings import TRAIN_RUNS_DIR, SweepSettings
from .run_reader import checkpointed_history
from .startup import KEY as STARTUP
from .storage import Location, locate
from .worker import train_loop_per_worker


def train_run(experiment: str | Location, trial_id: str) -> Location:
    """The Train run of a trial, inside its experiment folder."""
    exp = experiment if isinstance(experiment, Location) else locate(experiment)
    return exp.join(TRAIN_RUNS_DIR, f"train-{trial_id}")


def make_torch_trainer(loop_config: dict[str, Any], shape: TrialShape, run: Location, callbacks: list | None = None,
                       max_failures: int = 1, controller_failure_limit: int = -1, num_to_keep: int = 2,
                       loop=train_loop_per_worker):  # noqa: ANN001
    """A TorchTrainer for one run at ``run`` (gloo on CPU, NCCL with GPUs) that keeps the
    ``num_to_keep`` best checkpoints by validation score and always the latest (for resuming);
    ``loop``: the workers' function (another only to measure Ray's own start-up, ``bench.startup``)."""
    return TorchTrainer(
        loop,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(num_workers=shape.workers, use_gpu=shape.use_gpu,
                                               resources_per_worker=dict(shape.worker)),
        run_config=ray.train.RunConfig(
            name=run.name, storage_path=run.parent_uri, callbacks=callbacks or [],
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=num_to_keep, checkpoint_score_attribute=VAL, checkpoint_score_order="min"),
            failure_config=ray.train.FailureConfig(max_failures=max_failures,
                                                   controller_failure_limit=controller_failure_limit),
        ),
    )


def loop_config(config: dict[str, Any], settings: SweepSettings) -> dict[str, Any]:
    out: dict[str, Any] = {"run": config["run"], "device": "cuda" if settings.shape.get("use_gpu") else "cpu",
                           "cpu_if_no_cuda": settings.cpu_if_no_cuda, "family_modules": settings.family_modules}
    if config["trial"].get("optuna_number") in settings.inject_nan_trials:
        out["inject_nan_at_epoch"] = 1
    if config["trial"].get("optuna_number") in settings.inject_error_trials and settings.inject_error_while:
        out.update(inject_error_at_epoch=2, inject_error_while=settings.inject_error_while)
    if settings.inject_checkpoint_mb:
        out["inject_checkpoint_mb"] = settings.inject_checkpoint_mb
    return out


def run_trial(config: dict[str, Any], settings: dict[str, Any]) -> None:
    """Tune function trainable (``settings`` bound with ``tune.with_parameters``)."""
    entry = time.time()
    sweep = SweepSettings.from_dict(settings)
    run = train_run(sweep.experiment, tune.get_context().get_trial_id())
    history = checkpointed_history(run)
    for metrics in history:
        tune.report({**metrics, "replayed": True})
    if history and (history[-1].get(DIVERGED) or history[-1]["epoch"] >= config["run"]["train"]["epochs"]):
        return  # the run had ended before the interruption: nothing left to train
    shape = TrialShape(**sweep.shape)
    loop = {**loop_config(config, sweep), STARTUP: {"driver_entry": entry, "fit_called": time.time()}}
    trainer = make_torch_trainer(loop, shape, run, callbacks=[TuneReportCallback()],
                                 max_failures=sweep.worker_max_failures,
                                 controller_failure_limit=sweep.controller_failure_limit)
    trainer.fit()  # raises TrainingFailedError when the worker group fails beyond max_failures


def cause_line(text: str) -> str:
    """The one line of a worker's failure a person needs: the project's own error when it raised
    one (e.g. a GPU asked for where CUDA is unusable), else the last line of the traceback."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    own = [ln for ln in lines if "UserError:" in ln]
    if own:
        return own[-1].split("UserError:", 1)[1].strip()
    return lines[-1] if lines else "unknown error"


def make_trainable(settings: SweepSettings):
    """The Tune trainable: :func:`run_trial` with bound settings and the driver's small reservation."""
    return tune.with_resources(tune.with_parameters(run_trial, settings=settings.to_dict()),
                               dict(settings.shape["driver"]))
