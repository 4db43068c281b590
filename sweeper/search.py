"""The searcher: a Ray Tune ``Searcher`` over an Optuna study that is told what really happened.

* **Proposals** come from :func:`search_spaces.suggest.suggest` on ``study.ask()``: complete run
  configs within the budget; the sweep's forced train values (``--epochs``, ``--train ...``) are
  applied here, so Tune's trial config is exactly what runs. The fixed trials (baselines, then
  enqueued configurations) are enqueued before the first ask, so they are the first trials.
* **Every epoch** reaches the Optuna trial as an intermediate value keyed by the epoch, including
  the report on which ASHA stops a trial (Tune passes that one only to ``on_trial_complete``) and
  epochs a resumed trial reports again.
* **How a trial ended**: stopped by ASHA before its last epoch → PRUNED (TPE ranks pruned trials by
  how far they got and their last value); finished → COMPLETE with its **best** epoch's score (the
  score of the checkpoint ``best`` exports); diverged (a NaN score) or errored → FAIL, with no value.
* **Sampler**: TPE, seeded, with a constant liar (running trials count as bad, so concurrent trials
  do not repeat each other) and a short random start.

The study lives in a journal file in the experiment's own folder (``optuna.journal``). For remote
storage the searcher works on a local copy (``~/.idensenet/sweeps/<name>/``) and uploads it after
every ask and tell and at every experiment snapshot; a resumed sweep downloads it first, so a new
head with an empty home directory continues with every trial intact.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from ray.tune.search import Searcher

from search_spaces.suggest import fixed_attrs, suggest

from .settings import SweepSettings, load_space_of
from .storage import atomic_write_file, locate

METRIC, MODE = "test_score", "min"
UPLOAD_EVERY_S = 30.0  # intermediate values are uploaded at most this often (tells and asks at once)


def local_journal(settings: SweepSettings) -> str:
    """The journal file this process works on: the experiment's own when local, else a local copy."""
    loc = locate(settings.journal)
    if not loc.remote:
        return loc.path
    return os.path.expanduser(os.path.join("~", ".idensenet", "sweeps", locate(settings.experiment).name,
                                           os.path.basename(loc.path)))


def open_study(settings: SweepSettings, fetch: bool = False):
    """The sweep's Optuna study (created when absent); ``fetch`` first copies a remote journal here."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = local_journal(settings)
    remote = locate(settings.journal)
    if fetch and remote.remote and remote.is_file():
        atomic_write_file(Path(path), lambda f: f.write(remote.read_bytes()))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    storage = JournalStorage(JournalFileBackend(path))
    if settings.sampler == "random":
        sampler = optuna.samplers.RandomSampler(seed=settings.seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=settings.seed, constant_liar=True,
                                             n_startup_trials=settings.n_startup_trials)
    return optuna.create_study(storage=storage, sampler=sampler, study_name=settings.name,
                               direction="minimize", load_if_exists=True)


def upload_journal(settings: SweepSettings) -> None:
    remote = locate(settings.journal)
    if remote.remote:
        with open(local_journal(settings), "rb") as f:
            remote.write_bytes(f.read())


class StudySearcher(Searcher):
    """See the module docstring. Picklable: only the settings travel; the study is reopened."""

    def __init__(self, settings: SweepSettings) -> None:
        super().__init__(metric=METRIC, mode=MODE)
        self.settings = settings
        self._reset()

    def _reset(self) -> None:
        self._study, self._space, self._uploaded = None, None, 0.0

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_study": None, "_space": None, "_uploaded": 0.0}

    def set_search_properties(self, metric, mode, config, **spec) -> bool:  # noqa: ANN001
        return True  # metric and mode are fixed; the space is the searcher's own

    # ------------------------------------------------------------------ the study
    @property
    def study(self):
        if self._study is None:
            self._study = open_study(self.settings, fetch=True)
        return self._study

    def _sync(self, force: bool) -> None:
        if force or time.monotonic() - self._uploaded > UPLOAD_EVERY_S:
            upload_journal(self.settings)
            self._uploaded = time.monotonic()

    def prepare(self) -> None:
        """A new sweep: create the study and enqueue the fixed trials (baselines first)."""
        study = self.study
        if not study.trials:
            for fixed in self.settings.fixed_trials():
                study.enqueue_trial(dict(fixed.params), user_attrs=fixed_attrs(fixed), skip_if_exists=False)
        self._sync(force=True)

    def _trial(self, trial_id: str):
        """The (frozen) Optuna trial of a Tune trial, or None."""
        for t in self.study.get_trials(deepcopy=False):
            if t.user_attrs.get("tune_trial_id") == trial_id:
                return t
        return None

    def _report(self, frozen, result: dict[str, Any]) -> None:
        value, epoch = result.get(self.metric), result.get("epoch")
        if frozen.state.is_finished() or epoch is None or value is None or not math.isfinite(float(value)):
            return
        if int(epoch) not in frozen.intermediate_values:  # _trial_id: the storage's id, as Optuna's own code uses
            optuna.trial.Trial(self.study, frozen._trial_id).report(float(value), int(epoch))

    # ------------------------------------------------------------------ Tune's hooks
    def suggest(self, trial_id: str) -> dict | None:
        if self._space is None:
            self._space = load_space_of(self.settings)
        trial = self.study.ask()
        trial.set_user_attr("tune_trial_id", trial_id)
        proposal = suggest(self._space, trial)
        run = proposal.run.with_train(**self.settings.train_overrides)
        self._sync(force=True)
        return {"run": run.to_dict(), "trial": {**proposal.info, "optuna_number": trial.number}}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        frozen = self._trial(trial_id)
        if frozen is not None:
            self._report(frozen, result)
            self._sync(force=False)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        frozen = self._trial(trial_id)
        if frozen is None or frozen.state.is_finished():
            return
        if result:
            self._report(frozen, result)
            frozen = self._trial(trial_id)
        values = [v for v in frozen.intermediate_values.values() if math.isfinite(v)]
        epoch = int((result or {}).get("epoch", 0))
        diverged = bool((result or {}).get("diverged"))
        trial = optuna.trial.Trial(self.study, frozen._trial_id)
        trial.set_user_attr("epochs_run", epoch)
        trial.set_user_attr("diverged", diverged)
        if error or diverged or not values:
            self.study.tell(frozen.number, state=TrialState.FAIL)
        elif epoch < self.settings.epochs:
            self.study.tell(frozen.number, state=TrialState.PRUNED)
        else:
            self.study.tell(frozen.number, min(values))
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
