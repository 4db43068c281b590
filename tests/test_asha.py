"""ASHA as the sweep configures it (:class:`sweeper.sweep.ControlASHA`): searched trials are judged
among themselves on their validation score; the control arm is never stopped and never a mark."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from search_spaces.schedule import asha_rungs
from sweeper.search import METRIC, MODE
from sweeper.sweep import ControlASHA

EPOCHS = 9


def _trial(trial_id: str, role: str = "search"):
    return SimpleNamespace(trial_id=trial_id, config={"trial": {"role": role}})


def _scheduler(cls=ControlASHA):
    kwargs = dict(time_attr="epoch", max_t=EPOCHS, grace_period=1, reduction_factor=3, stop_last_trials=False)
    sched = cls("unused", **kwargs) if cls is ControlASHA else cls(**kwargs)
    sched.set_search_properties(METRIC, MODE)  # what Tune does with TuneConfig(metric=..., mode=...)
    return sched


def _decisions(sched, trials, reports):
    """Feed (trial index, epoch, val, test) reports in order; the decision on each searched report."""
    for t in trials:
        sched.on_trial_add(None, t)
    out = []
    for i, epoch, val, test in reports:
        d = sched.on_trial_result(None, trials[i], {"epoch": epoch, "val_score": val, "test_score": test})
        if trials[i].config["trial"]["role"] == "search":
            out.append((trials[i].trial_id, epoch, d))
    return out


# searched trials report epochs 1..3 in turn; their validation scores spread between 2.0 and 3.0
SEARCHED = [(i, e, 2.0 + 0.1 * ((i * 7 + e) % 10), 5.0) for e in (1, 2, 3) for i in range(1, 7)]
# the control, reported first at every epoch, is far better than every searched trial
CONTROL = [(0, e, 1.0, 1.0) for e in (1, 2, 3)]


def test_a_best_control_changes_no_decision_on_the_searched_trials() -> None:
    searched = [_trial(f"s{i}") for i in range(1, 7)]
    with_control = _decisions(_scheduler(), [_trial("c", "control"), *searched],
                              [CONTROL[0], *SEARCHED[:6], CONTROL[1], *SEARCHED[6:12], CONTROL[2], *SEARCHED[12:]])
    without = _decisions(_scheduler(), [_trial("c", "control"), *searched], SEARCHED)
    assert with_control == without
    assert {d for *_, d in without} == {TrialScheduler.CONTINUE, TrialScheduler.STOP}  # ASHA did decide
    # Tune's own ASHA with the control in its rungs stops more of them: what this guards against
    plain = _decisions(_scheduler(ASHAScheduler), [_trial("c", "control"), *searched],
                       [CONTROL[0], *SEARCHED[:6], CONTROL[1], *SEARCHED[6:12], CONTROL[2], *SEARCHED[12:]])
    assert plain != without


def test_the_control_is_never_stopped_and_completes_outside_the_rungs() -> None:
    sched = _scheduler()
    control = _trial("c", "control")
    sched.on_trial_add(None, control)
    assert all(sched.on_trial_result(None, control, {"epoch": e, "val_score": 9.0 + e, "test_score": 0.0})
               == TrialScheduler.CONTINUE for e in range(1, EPOCHS + 1))
    sched.on_trial_complete(None, control, {"epoch": EPOCHS, "val_score": 1.0})
    sched.on_trial_remove(None, control)


def test_decisions_read_the_validation_score_not_the_test_score() -> None:
    sched = _scheduler()
    a, b = _trial("a"), _trial("b")
    # a is better on validation, b on test: at the first rung b is the one stopped
    out = _decisions(sched, [a, b], [(0, 1, 2.0, 9.0), (1, 1, 3.0, 1.0)])
    assert out == [("a", 1, TrialScheduler.CONTINUE), ("b", 1, TrialScheduler.STOP)]
    assert METRIC == "val_score"


@pytest.mark.parametrize("epochs, grace, eta, rungs", [
    (9, 1, 3, [1, 3]), (10, 2, 3, [2, 6]), (4, 2, 3, [2]), (50, 10, 3, [10, 30]), (16, 1, 2, [1, 2, 4, 8]),
    (3, 1, 2, [1, 2]), (5, 5, 3, [])])
def test_rungs_are_where_tunes_asha_decides(epochs: int, grace: int, eta: float, rungs: list[int]) -> None:
    assert asha_rungs(epochs, grace, eta) == rungs
    sched = ASHAScheduler(time_attr="epoch", max_t=epochs, grace_period=grace, reduction_factor=eta,
                          stop_last_trials=False, metric="val_score", mode="min")
    good, bad = _trial("good"), _trial("bad")
    sched.on_trial_add(None, good)
    sched.on_trial_add(None, bad)
    stopped_at = None
    for epoch in range(1, epochs + 1):
        sched.on_trial_result(None, good, {"epoch": epoch, "val_score": 1.0})
        if sched.on_trial_result(None, bad, {"epoch": epoch, "val_score": 2.0}) == TrialScheduler.STOP:
            stopped_at = epoch
            break
    # the worse of two is stopped at the first rung (Tune's rung at the last epoch itself changes nothing)
    assert stopped_at == (rungs[0] if rungs else epochs)
