"""The Optuna side of a sweep: the seeded TPE searcher over a space's define-by-run function, with
the study in a journal file beside the experiment (it survives restarts; ``optuna-dashboard
<experiment>/optuna.journal`` opens it), and the end-of-sweep consistency pass."""

from __future__ import annotations

import os
from typing import Any

from .storage import Location, locate

OPTUNA_FILE = "optuna.journal"
METRIC, MODE = "test_score", "min"


def make_searcher(settings: dict[str, Any], inject_nan_trials: list[int], seed: int):
    """OptunaSearch with a seeded TPE sampler over the space's define-by-run function; the study is
    named after the experiment and stored in ``settings["optuna_journal"]``."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from .optuna_search import IdnOptunaSearch
    from .spaces import SpaceSampler

    os.makedirs(os.path.dirname(settings["optuna_journal"]), exist_ok=True)
    storage = JournalStorage(JournalFileBackend(settings["optuna_journal"]))
    return IdnOptunaSearch(
        space=SpaceSampler(settings["space"], inject_nan_trials),
        metric=METRIC, mode=MODE, storage=storage,
        study_name=locate(settings["experiment_path"]).name,
        sampler=optuna.samplers.TPESampler(seed=seed),
    )


def optuna_journal(exp: Location) -> str:
    """The Optuna journal: beside the experiment when it is local (optuna-dashboard opens it there);
    for remote storage on this machine, under ~/.idensenet/sweeps/<name>/ (a journal needs a file)."""
    if not exp.remote:
        return os.path.join(exp.path, OPTUNA_FILE)
    return os.path.abspath(os.path.expanduser(os.path.join("~", ".idensenet", "sweeps", exp.name, OPTUNA_FILE)))


def all_trials_ended(exp: Location, trials: int) -> bool:
    """True when Tune's saved state has every planned trial TERMINATED or ERROR (not interrupted)."""
    from .results import _trial_statuses

    statuses = _trial_statuses(exp)
    return len(statuses) >= trials and all(s in ("TERMINATED", "ERROR") for s in statuses.values())


def fail_orphans(path: str) -> None:
    """Optuna trials still RUNNING after the sweep belong to no Tune trial (asked just before an
    interruption whose experiment snapshot predates them): mark them FAIL so the study is consistent."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if not os.path.isfile(path):
        return
    storage = JournalStorage(JournalFileBackend(path))
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
