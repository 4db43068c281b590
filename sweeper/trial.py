"""The Tune trial driver: a function trainable that trains one proposed config with a TorchTrainer.

Three layers (ray-notes §2): Tune runs :func:`run_trial` in a trial actor holding ``DRIVER_CPU``;
the driver builds a ``TorchTrainer`` whose workers run :func:`sweeper.train_loop.train_loop_per_worker`;
``TuneReportCallback`` forwards rank 0's per-epoch report (plus ``checkpoint_path``) to the trial.
The Train run is named ``train-<trial id>`` under a fixed storage path, so a retried or restored
trial finds its run snapshot and resumes from the latest checkpoint.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from .resources import DRIVER_CPU, TrialShape
from .train_config import merge_train

TRAIN_RUNS_DIR = "train_runs"  # inside the experiment folder


def train_run_name(trial_id: str) -> str:
    return f"train-{trial_id}"


def make_torch_trainer(
    loop_config: dict[str, Any],
    shape: TrialShape,
    name: str,
    storage_path: str,
    callbacks: list | None = None,
    max_failures: int = 1,
    controller_failure_limit: int = -1,
    num_to_keep: int = 2,
):
    """A TorchTrainer for one run (gloo on CPU, NCCL with GPUs), keeping the ``num_to_keep`` best
    checkpoints by test score (the latest one is always kept for resuming)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from .train_loop import train_loop_per_worker

    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=shape.workers, use_gpu=shape.use_gpu, resources_per_worker=shape.worker_resources()
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage_path,
            callbacks=callbacks or [],
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=num_to_keep, checkpoint_score_attribute="test_score", checkpoint_score_order="min"
            ),
            failure_config=ray.train.FailureConfig(
                max_failures=max_failures, controller_failure_limit=controller_failure_limit
            ),
        ),
    )


def trial_loop_config(config: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """Model and train config of one trial: sweep defaults < the space's train values < forced CLI values."""
    from .spaces import IGNORED_TRAIN_KEYS

    proposed = {k: v for k, v in dict(config.get("train") or {}).items() if k not in IGNORED_TRAIN_KEYS}
    train = merge_train(settings.get("train_base"), proposed, settings.get("train_force"))
    return {"model": dict(config["model"]), "train": train}


def run_trial(config: dict[str, Any], settings: dict[str, Any]) -> None:
    """Tune function trainable (bind ``settings`` with ``tune.with_parameters``)."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = tune.get_context().get_trial_id()
    shape = TrialShape(**settings["shape"])
    trainer = make_torch_trainer(
        trial_loop_config(config, settings),
        shape,
        name=train_run_name(trial_id),
        storage_path=os.path.join(settings["experiment_path"], TRAIN_RUNS_DIR),
        callbacks=[TuneReportCallback()],
        max_failures=settings.get("worker_max_failures", 1),
        controller_failure_limit=settings.get("controller_failure_limit", -1),
    )
    trainer.fit()  # raises TrainingFailedError when the worker group fails beyond max_failures


def make_trainable(settings: dict[str, Any]):
    """The Tune trainable: :func:`run_trial` with bound settings and a small driver reservation."""
    from ray import tune

    driver = dict(settings["shape"].get("driver") or {"CPU": DRIVER_CPU})
    return tune.with_resources(tune.with_parameters(run_trial, settings=settings), driver)
