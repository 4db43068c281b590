"""The searcher: a Ray Tune ``Searcher`` over an Optuna study that is told what really happened.

* **Proposals** come from :func:`search_spaces.suggest.suggest` on ``study.ask()``: complete run
  configs within the budget; the sweep's forced train values (``--epochs``, ``--train ...``) are
  applied here, so Tune's trial config is exactly what runs. The fixed trials (baselines, then
  enqueued configurations) are enqueued before the first ask, so they are the first trials.
* **Two studies in one journal.** The sampler learns from the *searched* study only: searched trials
  and enqueued configurations (which carry the parameters they pin). Baselines (the control arm)
  draw no parameter; in the sampler's study such a trial would empty the joint search space TPE
  infers (the intersection of every finished trial's parameters) and, as the best trial, take the one
  "good" slot of TPE's split for n ≤ 10 while adding nothing to its model. They live in a study of
  their own, ``<name>/baselines``, asked before the searched study, and are told and ended alike.
* **Every epoch** reaches the Optuna trial as an intermediate value keyed by the epoch, including
  the report on which ASHA stops a trial (Tune passes that one only to ``on_trial_complete``) and
  epochs a resumed trial reports again; an epoch reported again with another value (a resumed run
  retrained it from an older checkpoint) replaces the first, as it does in the results table.
* **How a trial ended** follows the one rule of :mod:`sweeper.endings`, recorded on the trial as
  ``ending``: finished → COMPLETE with its **best** epoch's score (the score of the checkpoint
  ``best`` exports); stopped by ASHA → PRUNED; diverged or errored → FAIL. Trials Tune ends without
  telling the searcher (the time budget) are ended by :func:`settle_study` after the sweep. A trial
  that errored and runs again after ``--resume`` continues in a new Optuna trial.
* **Sampler**: TPE, seeded, with a constant liar (running trials count as bad, so concurrent trials
  do not repeat each other), multivariate with ``group=True`` (the spaces are conditional on
  ``family``: depth, growth and η exist for i-DenseNets only, so each group of parameters that occur
  together gets a joint model), and a random start of ``n_startup_trials`` counted as TPE counts:
  finished trials of the sampler's study, enqueued configurations included.

**Where the study lives.** The journal file in the experiment's own folder (``optuna.journal``) is
the record. For remote storage the one driver that holds the experiment's lease (:mod:`sweeper.lease`)
works on a local copy, ``~/.idensenet/studies/<hash of the experiment URI>-<sweep id>/``, so two
sweeps of one name on different prefixes, or a name reused after its experiment was deleted, never
share a copy; it uploads the copy after every ask and tell (intermediate values at most every
``UPLOAD_EVERY_S``) and at every experiment snapshot. A driver that resumes takes the remote journal
when it is ahead of (or differs from) the local copy, so a new head with an empty home directory
continues with every trial intact. Readers (``results``, ``best``, the figures) never open the
writer's copy: :func:`study_snapshot` reads the record into a private temporary file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import math
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from ray.tune.search import Searcher

from search_spaces.suggest import fixed_attrs, suggest

from . import endings
from .metrics import DIVERGED, VAL
from .settings import SweepSettings, load_space_of
from .storage import atomic_write_file, locate

METRIC, MODE = VAL, "min"  # every decision reads the validation score
BASELINE_ROLES = ("control", "baseline")  # fixed trials that draw no parameter: the baseline study's
UPLOAD_EVERY_S = 30.0  # intermediate values are uploaded at most this often (tells and asks at once)
STUDIES_HOME = os.path.join("~", ".idensenet", "studies")


def _copy_key(settings: SweepSettings) -> str:
    return hashlib.sha256(locate(settings.experiment).uri.encode()).hexdigest()[:16]


def working_journal(settings: SweepSettings) -> str:
    """The journal file the sweep's driver writes: the experiment's own when local, else a local copy
    keyed by the experiment's full URI and the sweep's id."""
    loc = locate(settings.journal)
    if not loc.remote:
        return loc.path
    folder = _copy_key(settings) + (f"-{settings.sweep_id}" if settings.sweep_id else "")
    return os.path.join(os.path.expanduser(STUDIES_HOME), folder, os.path.basename(loc.path))


def earlier_copies(settings: SweepSettings) -> list[str]:
    """Local study copies of earlier sweeps at the same experiment URI (its experiment deleted since)."""
    mine = os.path.dirname(working_journal(settings))
    pattern = os.path.join(os.path.expanduser(STUDIES_HOME), _copy_key(settings) + "*")
    return sorted(d for d in glob.glob(pattern) if d != mine)


def whole_lines(data: bytes) -> bytes:
    """A journal read while it is appended to, cut after its last complete record."""
    return data[: data.rfind(b"\n") + 1]


def _refresh_working_copy(settings: SweepSettings) -> None:
    """Before a driver opens its copy: take the remote journal when it holds more (or other) records."""
    remote = locate(settings.journal)
    if not remote.remote or not remote.is_file():
        return
    path = Path(working_journal(settings))
    theirs = whole_lines(remote.read_bytes())
    mine = path.read_bytes() if path.is_file() else b""
    if mine.startswith(theirs):
        return  # the local copy is the same or ahead (uploads lag by at most UPLOAD_EVERY_S)
    if not theirs.startswith(mine):
        print(f"note: the local study copy {path} differs from the experiment's journal; using the experiment's",
              flush=True)
    atomic_write_file(path, lambda f: f.write(theirs))


def make_sampler(settings: SweepSettings):
    """The sweep's sampler (module docstring; ``random``: the benchmark's control arm)."""
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=settings.seed)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning, module="optuna")  # group=True
    return optuna.samplers.TPESampler(seed=settings.seed, constant_liar=True, n_startup_trials=settings.n_startup_trials,
                                      multivariate=settings.multivariate, group=settings.multivariate)


def baseline_study_name(settings: SweepSettings) -> str:
    return f"{settings.name}/baselines"


def is_baseline(frozen) -> bool:  # noqa: ANN001
    return frozen.user_attrs.get("role") in BASELINE_ROLES


def writer_storage(settings: SweepSettings) -> JournalStorage:
    """The journal storage of the sweep's driver (the one writer): its working copy, brought up to date."""
    _refresh_working_copy(settings)
    path = working_journal(settings)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return JournalStorage(JournalFileBackend(path))


def open_study(settings: SweepSettings, storage: JournalStorage | None = None):
    """The sweep's searched study (the sampler's) for its driver, created when absent (``storage``:
    its :func:`writer_storage`, when already open)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(storage=storage or writer_storage(settings), sampler=make_sampler(settings),
                               study_name=settings.name, direction="minimize", load_if_exists=True)


def open_baseline_study(settings: SweepSettings, storage: JournalStorage):
    """The sweep's baseline study (module docstring) in the same journal, created when absent."""
    return optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=settings.seed),
                               study_name=baseline_study_name(settings), direction="minimize", load_if_exists=True)


def study_of(frozen, searched, baselines):  # noqa: ANN001
    """The study (searched or baselines) an Optuna trial belongs to."""
    return baselines if is_baseline(frozen) else searched


@contextlib.contextmanager
def study_snapshot(settings: SweepSettings) -> Iterator[optuna.Study]:
    """The searched study as its record holds it now, read from a private temporary copy: nothing a
    reader does reaches the experiment's journal or the driver's working copy."""
    with record_snapshot(settings) as (searched, _):
        yield searched


@contextlib.contextmanager
def record_snapshot(settings: SweepSettings) -> Iterator[tuple[optuna.Study, optuna.Study]]:
    """(searched study, baseline study) of :func:`study_snapshot`'s private copy."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    record = locate(settings.journal)
    try:
        data = whole_lines(record.read_bytes())
    except (FileNotFoundError, OSError):
        data = b""
    with tempfile.TemporaryDirectory(prefix="idn-study-") as d:
        path = os.path.join(d, os.path.basename(record.path))
        with open(path, "wb") as f:
            f.write(data)
        storage = JournalStorage(JournalFileBackend(path))
        yield (optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(), study_name=settings.name,
                                   direction="minimize", load_if_exists=True),
               open_baseline_study(settings, storage))


def latest_by_tune_id(trials) -> dict[str, Any]:  # noqa: ANN001
    """Tune trial id -> its newest Optuna trial (a trial resumed after an error has two)."""
    out: dict[str, Any] = {}
    for t in sorted(trials, key=lambda t: t.number):
        if t.user_attrs.get("tune_trial_id"):
            out[t.user_attrs["tune_trial_id"]] = t
    return out


def recorded_endings(settings: SweepSettings) -> dict[str, tuple[str, int]]:
    """Tune trial id -> (ending, epochs run) as the study recorded them (trials it has ended only)."""
    with record_snapshot(settings) as (searched, baselines):
        latest = latest_by_tune_id(searched.get_trials(deepcopy=False) + baselines.get_trials(deepcopy=False))
    return {tid: (t.user_attrs["ending"], int(t.user_attrs.get("epochs_run", 0))) for tid, t in latest.items()
            if t.state.is_finished() and t.user_attrs.get("ending")}


def upload_journal(settings: SweepSettings) -> None:
    remote = locate(settings.journal)
    if remote.remote:
        with open(working_journal(settings), "rb") as f:
            remote.write_bytes(f.read())


def end_trial(study, frozen, ending: str, epochs_run: int) -> None:  # noqa: ANN001
    """Record ``ending`` on an Optuna trial and tell the study the state the rule gives it."""
    values = [v for v in frozen.intermediate_values.values() if math.isfinite(v)]
    trial = optuna.trial.Trial(study, frozen._trial_id)  # _trial_id: the storage's id, as Optuna's own code uses
    trial.set_user_attr("ending", ending)
    trial.set_user_attr("epochs_run", int(epochs_run))
    trial.set_user_attr("diverged", ending == endings.DIVERGED)
    state = endings.optuna_state(ending, bool(values))
    study.tell(frozen.number, min(values) if state == TrialState.COMPLETE else None, state=state)


class StudySearcher(Searcher):
    """See the module docstring. Picklable: only the settings travel; the study is reopened."""

    def __init__(self, settings: SweepSettings) -> None:
        super().__init__(metric=METRIC, mode=MODE)
        self.settings = settings
        self._reset()

    def _reset(self) -> None:
        self._storage, self._study, self._baselines, self._space, self._uploaded = None, None, None, None, 0.0

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_storage": None, "_study": None, "_baselines": None, "_space": None, "_uploaded": 0.0}

    def set_search_properties(self, metric, mode, config, **spec) -> bool:  # noqa: ANN001
        return True  # metric and mode are fixed; the space is the searcher's own

    # ------------------------------------------------------------------ the study
    @property
    def study(self):
        """The searched study (the sampler's)."""
        if self._study is None:
            self._storage = writer_storage(self.settings)
            self._study = open_study(self.settings, self._storage)
            self._baselines = open_baseline_study(self.settings, self._storage)
        return self._study

    @property
    def baselines(self):
        """The baseline study (the control arm and other parameterless fixed trials)."""
        self.study  # opens both studies
        return self._baselines

    def _study_of(self, frozen):  # noqa: ANN001
        return study_of(frozen, self.study, self.baselines)

    def _sync(self, force: bool) -> None:
        if force or time.monotonic() - self._uploaded > UPLOAD_EVERY_S:
            upload_journal(self.settings)
            self._uploaded = time.monotonic()

    def prepare(self) -> None:
        """A new sweep: create the study and enqueue the fixed trials (baselines first)."""
        study = self.study
        if not study.trials and not self.baselines.trials:
            for fixed in self.settings.fixed_trials():
                into = self.baselines if fixed.role in BASELINE_ROLES else study
                into.enqueue_trial(dict(fixed.params), user_attrs=fixed_attrs(fixed), skip_if_exists=False)
        self._sync(force=True)

    def _trial(self, trial_id: str):
        """The newest (frozen) Optuna trial of a Tune trial, or None."""
        return latest_by_tune_id(self.study.get_trials(deepcopy=False)
                                 + self.baselines.get_trials(deepcopy=False)).get(trial_id)

    def _continue_errored(self, frozen):  # noqa: ANN001
        """A trial that errored (FAIL) and runs again after ``--resume``: a new RUNNING Optuna trial with
        its parameters and attributes, ``resumed_from`` naming the FAIL one."""
        attrs = {k: v for k, v in frozen.user_attrs.items() if k not in ("ending", "epochs_run", "diverged")}
        self._study_of(frozen).add_trial(optuna.trial.create_trial(
            state=TrialState.RUNNING, params=frozen.params, distributions=frozen.distributions,
            user_attrs={**attrs, "resumed_from": frozen.number}))
        return self._trial(frozen.user_attrs["tune_trial_id"])

    def _live(self, trial_id: str):
        """The Optuna trial that takes a Tune trial's reports now (None: it has ended for good)."""
        frozen = self._trial(trial_id)
        if frozen is not None and frozen.state == TrialState.FAIL and frozen.user_attrs.get("ending") == endings.ERROR:
            frozen = self._continue_errored(frozen)
        return None if frozen is None or frozen.state.is_finished() else frozen

    def _report(self, frozen, result: dict[str, Any]) -> None:
        value, epoch = result.get(self.metric), result.get("epoch")
        if epoch is None or value is None or not math.isfinite(float(value)):
            return
        epoch, value = int(epoch), float(value)
        if epoch not in frozen.intermediate_values:
            optuna.trial.Trial(self._study_of(frozen), frozen._trial_id).report(value, epoch)
        elif frozen.intermediate_values[epoch] != value:  # retrained after a resume: the newest report counts
            self._storage.set_trial_intermediate_value(frozen._trial_id, epoch, value)

    # ------------------------------------------------------------------ Tune's hooks
    def suggest(self, trial_id: str) -> dict | None:
        if self._space is None:
            self._space = load_space_of(self.settings)
        study = self.study
        if self.baselines.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            study = self.baselines  # the fixed baselines run first
        trial = study.ask()
        trial.set_user_attr("tune_trial_id", trial_id)
        proposal = suggest(self._space, trial).with_train(**self.settings.train_overrides)
        self._sync(force=True)
        return dataclasses.replace(proposal, optuna_number=trial.number).to_dict()

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        frozen = self._live(trial_id)
        if frozen is not None:
            self._report(frozen, result)
            self._sync(force=False)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        frozen = self._trial(trial_id) if error else self._live(trial_id)
        if frozen is None or frozen.state.is_finished():
            return
        if result:
            self._report(frozen, result)
            frozen = self._trial(trial_id)
        epoch = int((result or {}).get("epoch") or max(frozen.intermediate_values, default=0))
        ending = endings.classify(epochs_run=epoch, epochs=self.settings.epochs,
                                  diverged=bool((result or {}).get(DIVERGED)), errored=error,
                                  stopped_by=endings.SCHEDULER)
        end_trial(self._study_of(frozen), frozen, ending, epoch)
        self._sync(force=True)

    def save(self, checkpoint_path: str) -> None:
        """Tune's experiment snapshot: the study is in the journal, so only bring that up to date."""
        if self._study is not None:
            self._sync(force=True)
        with open(checkpoint_path, "w") as f:
            f.write(self.settings.journal)

    def restore(self, checkpoint_path: str) -> None:
        """After ``Tuner.restore``: reopen the study from the experiment's journal."""
        self._reset()


def settle_study(settings: SweepSettings, tune_trials: dict[str, tuple[str, dict[str, Any]]], all_ended: bool) -> None:
    """After ``Tuner.fit``: end the Optuna trials Tune ended without telling the searcher.

    ``tune_trials``: Tune trial id -> (status, last result) from the experiment's final snapshot, which
    Tune writes before it stops the live trials, so a trial interrupted (Ctrl-C, SIGINT) is still
    RUNNING or PENDING there and stays RUNNING in the study for ``--resume``. A TERMINATED or ERROR
    trial the study still has RUNNING was ended without a word to the searcher: by the time budget
    (Tune stops every live trial then and tells no searcher), or, for a trial rerun after an error,
    because Tune's concurrency limiter forwards no ending of a trial it had already seen end. Its
    ending follows the rule with what Tune last recorded (a trial short of its last epoch: stopped by
    the time budget when the sweep has one, else by ASHA). Once every Tune trial has ended, a proposal
    that belongs to none (asked just before an interruption whose snapshot predates it) ends FAIL as
    ``not run``."""
    storage = writer_storage(settings)
    searched, baselines = open_study(settings, storage), open_baseline_study(settings, storage)
    changed = False
    for frozen in [*searched.get_trials(deepcopy=False, states=(TrialState.RUNNING,)),
                   *baselines.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]:
        study = study_of(frozen, searched, baselines)
        known = tune_trials.get(frozen.user_attrs.get("tune_trial_id", ""))
        if known is None:
            if all_ended:
                end_trial(study, frozen, endings.NOT_RUN, 0)
                changed = True
            continue
        status, last = known
        if status not in ("TERMINATED", "ERROR"):
            continue
        epoch = int(last.get("epoch") or max(frozen.intermediate_values, default=0))
        ending = endings.classify(epochs_run=epoch, epochs=settings.epochs, diverged=bool(last.get(DIVERGED)),
                                  errored=status == "ERROR",
                                  stopped_by=endings.TIME_BUDGET if settings.time_budget_s else endings.SCHEDULER)
        end_trial(study, frozen, ending, epoch)
        changed = True
    if changed:
        upload_journal(settings)

