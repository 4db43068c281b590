"""How a trial ended: one rule, shared by the study (what TPE learns from) and the results table.

========================  ==============================================  =====================
ending                    when                                            Optuna state
========================  ==============================================  =====================
``finished``              it trained its last epoch                       COMPLETE (best epoch)
``stopped (ASHA)``        the scheduler stopped it before its last epoch  PRUNED
``stopped (time budget)`` ``--time-budget`` ran out before its last epoch PRUNED (FAIL: no epoch)
``diverged``              an epoch's loss or score was not finite         FAIL
``error``                 it raised beyond its retries                    FAIL
``incomplete``            not ended yet (running, pending, interrupted)   RUNNING
``not run``               asked for, then lost in an interruption         FAIL (not in the table)
========================  ==============================================  =====================

The searcher applies the rule when Tune tells it a trial ended and records the ending on the Optuna
trial (user attribute ``ending``); the sweep applies it after ``Tuner.fit`` to the trials Tune ended
without telling the searcher (the time budget). The table takes each trial's ending from the study, so
the two never disagree; only a trial the study has not ended yet is classified from Tune's records.
A trial that errored and is run again by ``--resume`` gets a new Optuna trial with the same parameters
(``resumed_from``: the number of the FAIL one), since a finished Optuna trial cannot be reopened.
"""

from __future__ import annotations

from optuna.trial import TrialState

FINISHED = "finished"
STOPPED_ASHA = "stopped (ASHA)"
STOPPED_TIME_BUDGET = "stopped (time budget)"
DIVERGED = "diverged"
ERROR = "error"
INCOMPLETE = "incomplete"
NOT_RUN = "not run"
ENDED = (FINISHED, STOPPED_ASHA, STOPPED_TIME_BUDGET, DIVERGED, ERROR)
EXCLUDED = (DIVERGED, ERROR)  # no score that counts

SCHEDULER, TIME_BUDGET = "scheduler", "time budget"  # who stopped a trial before its last epoch


def classify(*, epochs_run: int, epochs: int, diverged: bool = False, errored: bool = False,
             stopped_by: str | None = None) -> str:
    """The ending of a trial that trained ``epochs_run`` of ``epochs`` epochs; ``stopped_by`` says who
    ended it early (:data:`SCHEDULER` or :data:`TIME_BUDGET`), None while nobody has."""
    if diverged:
        return DIVERGED
    if errored:
        return ERROR
    if epochs_run >= epochs:
        return FINISHED
    if stopped_by == SCHEDULER:
        return STOPPED_ASHA
    if stopped_by == TIME_BUDGET:
        return STOPPED_TIME_BUDGET
    return INCOMPLETE


def optuna_state(ending: str, has_values: bool) -> TrialState:
    """The state the study records for ``ending`` (``has_values``: at least one finite epoch score)."""
    if ending == FINISHED and has_values:
        return TrialState.COMPLETE
    if ending in (STOPPED_ASHA, STOPPED_TIME_BUDGET) and has_values:
        return TrialState.PRUNED
    if ending == INCOMPLETE:
        return TrialState.RUNNING
    return TrialState.FAIL


def tune_ending(status: str, epochs_run: int, epochs: int, diverged: bool) -> str:
    """The ending of a trial the study has not ended, from Tune's status alone (an experiment from
    before endings were recorded, or one whose study copy is behind): a TERMINATED trial short of its
    last epoch was stopped by the scheduler."""
    return classify(epochs_run=epochs_run, epochs=epochs, diverged=diverged, errored=status == "ERROR",
                    stopped_by=SCHEDULER if status == "TERMINATED" else None)
