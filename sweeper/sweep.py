"""A sweep: the settings, the Tuner (the searcher proposes, ASHA stops, each trial trains
data-parallel), and resuming it.

``run_sweep`` validates everything it can before the experiment folder exists and (for a local
instance) before Ray starts, sizes the trials that run at once from what the cluster can reach, takes
the experiment's driver lease (:mod:`sweeper.lease`) for as long as it runs, continues an interrupted
sweep with ``Tuner.restore`` (finished trials are not run again; unfinished and errored ones continue
from their Train run's latest checkpoint), and after ``Tuner.fit`` ends in the study what Tune ended
without telling the searcher (:func:`sweeper.search.settle_study`).

ASHA (``time_attr="epoch"``: Tune's own iteration count restarts after a restore) keeps about 1/η of
the trials at each rung g, g·η, g·η², … below the last epoch R; N trials then cost about
N·g·(1 + (1 − 1/η)·log_η(R/g)) trial-epochs instead of N·R, judging each trial by its validation
score among the **searched** trials only: baselines (the control arm) are never stopped and never
enter a rung, so a good control cannot turn "keep the best 1/η" into "stop whatever is worse than the
control". A restored scheduler first refills its rungs with every epoch the experiment had recorded
for its searched trials (Tune saves no scheduler state).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ray import tune
from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from model.data import require_dataset
from model.errors import UserError
from model.families import plugin_modules
from search_spaces.schedule import DEFAULT_REDUCTION, default_grace
from search_spaces.space import fixed_trials_from_file
from search_spaces.suggest import TrialRecord

from .lease import HEARTBEAT_S, STALE_AFTER_S, acquire
from .metrics import BEST_VAL, DIVERGED, TEST, VAL
from .placement import connect_ray, plan
from .records import recorded_scores, tune_trials
from .search import BASELINE_ROLES, METRIC, MODE, StudySearcher, earlier_copies, settle_study
from .settings import JOURNAL_FILE, SETTINGS_FILE, SweepSettings, command_line_train, load_space_text, space_text
from .startup import KEY as STARTUP
from .startup import line as startup_line
from .storage import Location, check_writable, experiment_location, locate, storage_errors
from .trial import cause_line, make_trainable

LEASE_WAIT_S = STALE_AFTER_S + 2 * HEARTBEAT_S  # --resume-if-exists: a predecessor's lease going stale


@dataclass
class SweepOptions:
    """What ``idensenet sweep`` was asked for (the CLI's options, validated there)."""

    space: str = "toy-moons"
    trials: int = 4
    workers_per_trial: int = 1
    gpu: bool = False
    epochs: int | None = None
    storage: str = "ray_results"
    name: str | None = None
    grace_period: int | None = None
    reduction_factor: float | None = None
    brackets: int = 1
    scheduler: str = "asha"  # or "none": every trial runs to its last epoch
    n_startup_trials: int | None = None  # TPE's random start (None: startup_trials' rule)
    multivariate: bool = True  # TPE's joint model per group of parameters (False: one per parameter)
    max_concurrent: int | None = None
    cpus_per_worker: float | None = None
    seed: int = 0
    sampler: str = "tpe"  # or "random" (search-efficiency replays compare both)
    resume: bool = False
    resume_if_exists: bool = False
    smoke_test: bool = False
    batch_size: int | None = None
    data_root: str | None = None
    address: str | None = None
    time_budget_s: float | None = None
    train_overrides: dict[str, Any] = field(default_factory=dict)
    enqueue: str | None = None
    worker_max_failures: int = 1
    trial_max_failures: int = 1
    cluster_config: str | None = None
    shared_storage: bool = False
    cpu_if_no_cuda: bool = False
    inject_nan_trials: list[int] = field(default_factory=list)
    inject_error_trials: list[int] = field(default_factory=list)
    inject_error_while: str | None = None
    inject_checkpoint_mb: int = 0
    verbose: bool = False
    confirm_top: int = 1  # after the sweep: confirm the top K ... (sweeper.confirm)
    confirm_seeds: int = 0  # ... with S seeds each (0: no confirmation)


@dataclass
class SweepOutcome:
    experiment: str
    trials: int  # planned
    errors: int
    ended: bool  # every planned trial ended (none still pending or interrupted)
    wall_s: float


def forced_train(opts: SweepOptions, is_toy: bool) -> dict[str, Any]:
    """The train values every trial gets, whatever the space says: ``--epochs``, ``--batch-size``,
    ``--data-root``, ``--seed``, ``--smoke-test`` and ``--train KEY=VALUE`` (last wins)."""
    out: dict[str, Any] = {"seed": opts.seed}
    if opts.smoke_test:
        out.update(epochs=2, steps_per_epoch=5, test_size=1000 if is_toy else 64)
        if not is_toy:
            out.update(batch_size=16 * opts.workers_per_trial, test_batch_size=32 * opts.workers_per_trial)
    return {**out, **command_line_train(opts.epochs, opts.batch_size, opts.data_root, opts.train_overrides)}


def startup_trials(searched: int, enqueued: int) -> int:
    """TPE's ``n_startup_trials`` as TPE counts it (finished trials of its study, enqueued
    configurations included): the enqueued ones, then a random start of a third of the searched
    trials, at least 2 and at most 10."""
    return enqueued + max(2, min(10, searched // 3))


def build_settings(opts: SweepOptions, exp: Location) -> SweepSettings:
    """Everything the sweep needs, validated, before anything is created."""
    name, text = space_text(opts.space)
    space = load_space_text(name, text, opts.space)
    is_toy = space.train_config().is_toy
    forced = forced_train(opts, is_toy)
    try:
        train = space.train_config(forced)  # the forced values must make a valid train config
    except UserError as err:
        raise UserError(f"train config: {err.summary()}") from None
    if train.batch_size % opts.workers_per_trial:
        raise UserError(f"batch size {train.batch_size} is not a multiple of --workers-per-trial {opts.workers_per_trial}")
    require_dataset(train.data, train.data_root)
    fixed = [*space.baselines, *space.enqueued]
    if opts.enqueue:
        fixed += fixed_trials_from_file(space, opts.enqueue)
    if len(fixed) > opts.trials:
        raise UserError(f"--trials {opts.trials} is fewer than the {len(fixed)} baseline and enqueued trials "
                        f"({', '.join(f.label for f in fixed)})")
    reduction = opts.reduction_factor or float(space.schedule.get("reduction_factor", DEFAULT_REDUCTION))
    grace = opts.grace_period or space.schedule.get("grace_period") or default_grace(train.epochs, reduction)
    if opts.smoke_test and not opts.grace_period:
        grace = 1
    searched = opts.trials - len(fixed)
    return SweepSettings(
        name=exp.name, sweep_id=uuid.uuid4().hex[:12], experiment=exp.uri, space_name=space.name, space_yaml=text, data=train.data,
        is_toy=is_toy, epochs=train.epochs, trials=opts.trials, seed=opts.seed, sampler=opts.sampler, grace_period=min(grace, train.epochs),
        reduction_factor=reduction, brackets=opts.brackets, scheduler=opts.scheduler, multivariate=opts.multivariate,
        train_overrides=forced, fixed=[f.to_dict() for f in fixed],
        n_startup_trials=(startup_trials(searched, sum(f.role not in BASELINE_ROLES for f in fixed))
                          if opts.n_startup_trials is None else opts.n_startup_trials),
        cpu_if_no_cuda=opts.cpu_if_no_cuda,
        worker_max_failures=opts.worker_max_failures, trial_max_failures=opts.trial_max_failures,
        time_budget_s=opts.time_budget_s, inject_nan_trials=list(opts.inject_nan_trials),
        inject_error_trials=list(opts.inject_error_trials),
        inject_error_while=os.path.abspath(opts.inject_error_while) if opts.inject_error_while else None,
        inject_checkpoint_mb=opts.inject_checkpoint_mb,
        family_modules=plugin_modules(),
    )


def run_sweep(opts: SweepOptions) -> SweepOutcome:
    """Validate, connect to (or start) Ray, take the experiment's driver lease, run or resume the
    sweep, end in the study what Tune ended silently, and say how it ended."""
    t0 = time.time()
    if (opts.resume or opts.resume_if_exists) and not opts.name:
        raise UserError(f"{'--resume' if opts.resume else '--resume-if-exists'} needs the --name of the sweep")
    name = opts.name or f"{os.path.splitext(os.path.basename(opts.space))[0]}-{time.strftime('%Y%m%d-%H%M%S')}"
    exp = experiment_location(opts.storage, name)
    check_writable(opts.storage)
    resume = opts.resume
    if opts.resume_if_exists:  # an experiment that died before Tune's first snapshot is started again in place
        with storage_errors(f"experiment {exp.uri}"):
            resume = exp.join(SETTINGS_FILE).is_file() and tune.Tuner.can_restore(exp.uri)
    settings, tuner, lease = (_resumed if resume else _created)(opts, exp)
    with lease:
        grid = tuner.fit()
        trials = tune_trials(exp)
        ended = len(trials) >= settings.trials and all(s in ("TERMINATED", "ERROR") for s, _ in trials.values())
        settle_study(settings, trials, ended)
    errors = sum(1 for r in grid if r.error is not None)
    return SweepOutcome(exp.uri, settings.trials, errors, ended, time.time() - t0)


def _resumed(opts: SweepOptions, exp: Location):
    with storage_errors(f"experiment {exp.uri}"):
        settings = SweepSettings.load(exp)
        lease = acquire(exp, wait_s=LEASE_WAIT_S if opts.resume_if_exists else 0.0)
    try:
        connect_ray(opts.address, settings.shape.get("use_gpu", False), opts.verbose)
        if not tune.Tuner.can_restore(exp.uri):
            raise UserError(f"no restorable Tune experiment at {exp.uri}")
        print(f"resuming sweep {exp.uri}", flush=True)
        tuner = tune.Tuner.restore(exp.uri, trainable=make_trainable(settings), resume_unfinished=True,
                                   resume_errored=True)
    except BaseException:
        lease.release()
        raise
    return settings, tuner, lease


def set_aside_unstarted(exp: Location) -> None:
    """``--resume-if-exists`` on an experiment whose driver died before Tune's first snapshot: its
    journal (proposals no trial ran) is kept beside, renamed, so the new sweep's study starts afresh."""
    journal = exp.join(JOURNAL_FILE)
    if journal.is_file():
        aside = f"{journal.path}.unstarted-{time.strftime('%Y%m%d-%H%M%S')}"
        journal.fs.move(journal.path, aside)
        print(f"note: {exp.uri} holds no restorable Tune state (its driver died while starting); the sweep "
              f"starts again in place, its earlier journal kept as {os.path.basename(aside)}", flush=True)


def _created(opts: SweepOptions, exp: Location):
    with storage_errors(f"experiment {exp.uri}"):
        exists = exp.exists()
    if exists and not opts.resume_if_exists:
        raise UserError(f"experiment {exp.uri} already exists; pass --resume to continue it or choose another --name")
    settings = build_settings(opts, exp)
    shape, concurrency = plan(opts.workers_per_trial, opts.gpu, opts.cpus_per_worker, opts.trials,
                              opts.max_concurrent, opts.address, opts.storage, opts.cluster_config,
                              opts.shared_storage, opts.verbose)
    settings = dataclasses.replace(settings, shape=dataclasses.asdict(shape), max_concurrent=concurrency)
    searcher = StudySearcher(settings)
    with storage_errors(f"experiment {exp.uri} cannot be created"):
        exp.makedirs()
        lease = acquire(exp, wait_s=LEASE_WAIT_S if exists else 0.0)
    try:
        with storage_errors(f"experiment {exp.uri} cannot be created"):
            if exists:
                set_aside_unstarted(exp)
            settings.save(exp)
            for old in earlier_copies(settings):
                print(f"note: {exp.uri} held an earlier sweep whose experiment is gone; this sweep starts a fresh "
                      f"study (the earlier one's local copy is left in {old})", flush=True)
            searcher.prepare()
        tuner = new_tuner(settings, searcher)
    except BaseException:
        lease.release()
        raise
    print(f"sweep {exp.uri}: {settings.trials} trials of space {settings.space_name!r} "
          f"({len(settings.fixed)} baseline/enqueued first), {shape.workers} worker(s) each, "
          f"{concurrency} at a time, {settings.epochs} epochs, ASHA grace {settings.grace_period} "
          f"epoch(s), reduction {settings.reduction_factor:g}", flush=True)
    return settings, tuner, lease


class ControlASHA(ASHAScheduler):
    """ASHA over the searched trials: baselines neither stop nor enter a rung; rungs are refilled
    after a restore (module docstring)."""

    def __init__(self, experiment: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._experiment = experiment
        self._seeded = True

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._seeded = False  # unpickled: a restored sweep

    def seed_rungs(self, scores: dict[str, list[tuple[int, float]]]) -> None:
        """Record each trial's scores in the rungs as if they had just been reported (no decisions)."""
        for trial_id, epochs in scores.items():
            stub = type("RecordedTrial", (), {"trial_id": trial_id})()
            for epoch, score in sorted(epochs):
                if math.isfinite(score):
                    for bracket in self._brackets:
                        bracket.on_result(stub, epoch, self._metric_op * score)

    def on_trial_add(self, tune_controller, trial) -> None:  # noqa: ANN001
        if not is_baseline_trial(trial):
            super().on_trial_add(tune_controller, trial)
        if not self._seeded:
            self._seeded = True
            self.seed_rungs(recorded_scores(self._experiment))

    def on_trial_result(self, tune_controller, trial, result) -> str:  # noqa: ANN001
        if is_baseline_trial(trial):
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result) -> None:  # noqa: ANN001
        if not is_baseline_trial(trial):
            super().on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial) -> None:  # noqa: ANN001
        if not is_baseline_trial(trial):
            super().on_trial_remove(tune_controller, trial)


def is_baseline_trial(trial) -> bool:  # noqa: ANN001
    """A Tune trial of a baseline (the control arm): it runs to its last epoch, outside ASHA's rungs."""
    return (trial.config.get("trial") or {}).get("role") in BASELINE_ROLES


class ProgressPrinter(Callback):
    """One line per trial event: ``[  12.3s] <id> epoch 3/10  val 2.93 (best 2.92)  test NLL 2.91  train 2.95  4.1 s``."""

    def __init__(self, epochs: int, label: str) -> None:
        self.epochs, self.label, self._t0 = epochs, label, time.time()
        self._started: dict[str, float] = {}

    def _say(self, text: str) -> None:
        print(f"[{time.time() - self._t0:7.1f}s] {text}", file=sys.stdout, flush=True)

    def on_trial_start(self, iteration, trials, trial, **info):  # noqa: ANN001
        self._started[trial.trial_id] = time.time()
        self._say(f"{trial.trial_id} started: {describe(trial.config)}")

    def on_trial_result(self, iteration, trials, trial, result, **info):  # noqa: ANN001
        if result.get("replayed") or "epoch" not in result:
            return
        points = result.get(STARTUP) or {k.split("/", 1)[1]: v for k, v in result.items() if k.startswith(STARTUP + "/")}
        if points and trial.trial_id in self._started:  # the first report of a worker group
            self._say(f"{trial.trial_id} {startup_line({**points, 'trial_start': self._started[trial.trial_id]})}")
        if result.get(DIVERGED):
            self._say(f"{trial.trial_id} epoch {result['epoch']}/{self.epochs}  DIVERGED (non-finite loss)")
            return
        self._say(f"{trial.trial_id} epoch {result['epoch']}/{self.epochs}  val {result[VAL]:.4f} "
                  f"(best {result.get(BEST_VAL, math.nan):.4f})  {self.label} {result[TEST]:.4f}"
                  f"  train {result.get('train_loss', math.nan):.4f}"
                  f"  {result.get('epoch_seconds', 0.0):.1f} s")

    def on_trial_complete(self, iteration, trials, trial, **info):  # noqa: ANN001
        last = trial.last_result or {}
        epoch = int(last.get("epoch", 0))
        status = ("diverged" if last.get(DIVERGED) else
                  "finished" if epoch >= self.epochs else f"stopped by ASHA after {epoch} epoch(s)")
        best = last.get(BEST_VAL)
        self._say(f"{trial.trial_id} {status}" + (f", best val {best:.4f}" if best is not None else ""))

    def on_trial_error(self, iteration, trials, trial, **info):  # noqa: ANN001
        text = ""
        if trial.error_file and os.path.isfile(trial.error_file):  # Tune wrote the failure there just before
            with open(trial.error_file, encoding="utf-8", errors="replace") as f:
                text = f.read()
        self._say(f"{trial.trial_id} ERROR: {cause_line(text)} (details in {trial.path})")


def describe(config: dict[str, Any]) -> str:
    """``control resflow: resflow toy_hidden 24 act=lipswish params=19,290 dev=+0.00%`` for a trial config."""
    record = TrialRecord.from_dict(config)
    m = record.run.model
    head = record.role + (f" {record.label}" if record.label else "")
    text = f"{head}: {m.describe()} act={m.activation} params={record.param_count or 0:,}"
    if record.budget_deviation is not None:
        text += f" dev={100 * record.budget_deviation:+.2f}%"
    return text


def trial_name(trial) -> str:  # noqa: ANN001
    """Short trial folder names (Tune's default embeds the whole config)."""
    return f"trial_{trial.trial_id}"


def make_scheduler(settings: SweepSettings) -> TrialScheduler:
    """The sweep's scheduler: ASHA over the searched trials (:class:`ControlASHA`; ``brackets`` > 1 is
    asynchronous Hyperband, each trial assigned to one of the brackets with grace periods g, g·η, …),
    or, with ``scheduler: none``, no early stopping (every trial runs to its last epoch)."""
    if settings.scheduler == "none":
        return FIFOScheduler()
    return ControlASHA(
        settings.experiment, time_attr="epoch", max_t=settings.epochs, grace_period=settings.grace_period,
        reduction_factor=settings.reduction_factor, brackets=settings.brackets, stop_last_trials=False,
    )


def new_tuner(settings: SweepSettings, searcher: StudySearcher):
    loc = locate(settings.experiment)
    scheduler = make_scheduler(settings)
    return tune.Tuner(
        make_trainable(settings),
        tune_config=tune.TuneConfig(
            metric=METRIC, mode=MODE, search_alg=searcher, scheduler=scheduler, num_samples=settings.trials,
            max_concurrent_trials=settings.max_concurrent, time_budget_s=settings.time_budget_s,
            trial_name_creator=trial_name, trial_dirname_creator=trial_name,
        ),
        run_config=tune.RunConfig(
            name=loc.name, storage_path=loc.parent_uri,
            failure_config=tune.FailureConfig(max_failures=settings.trial_max_failures),
            callbacks=[ProgressPrinter(settings.epochs, "test NLL" if settings.is_toy else "test bpd")], verbose=0,
        ),
    )
