"""The searcher tells Optuna what happened (sweeper/search.py), driven through Tune's hooks without a
cluster: every epoch an intermediate value, the stopping report included; stopped trials PRUNED,
finished ones COMPLETE with their best epoch, diverged and errored ones FAIL with no value; fixed
trials first; the study reopened from its journal after a restore; and ASHA's rungs refilled."""

from __future__ import annotations

import math
import pickle

import pytest

optuna = pytest.importorskip("optuna")
pytest.importorskip("ray")

from ray.tune.schedulers import TrialScheduler  # noqa: E402

from sweeper.search import StudySearcher, open_study  # noqa: E402
from sweeper.settings import SweepSettings, space_text  # noqa: E402
from sweeper.sweep import ControlASHA  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)
EPOCHS = 4


def _settings(tmp_path, **changes) -> SweepSettings:
    from search_spaces import load_space

    name, text = space_text("demo-moons")
    space = load_space("demo-moons")
    base = dict(name="s", experiment=str(tmp_path / "s"), space_name=name, space_yaml=text, data="moons",
                is_toy=True, epochs=EPOCHS, trials=6, fixed=[f.to_dict() for f in space.baselines],
                train_overrides={"epochs": EPOCHS})
    base.update(changes)
    return SweepSettings(**base)


def _result(epoch, score, **extra):
    return {"epoch": epoch, "test_score": score, "training_iteration": epoch, **extra}


def test_every_epoch_and_every_ending_reaches_the_study(tmp_path):
    settings = _settings(tmp_path)
    searcher = StudySearcher(settings)
    searcher.prepare()
    configs = {t: searcher.suggest(t) for t in ("ctrl", "done", "asha", "nan", "err")}
    assert configs["ctrl"]["trial"]["role"] == "control"  # the baseline is the first trial
    assert all(c["run"]["train"]["epochs"] == EPOCHS for c in configs.values())  # forced values applied
    # finished: all epochs, the best one is epoch 3
    for e, s in enumerate([3.1, 2.9, 2.7, 2.8], start=1):
        searcher.on_trial_result("done", _result(e, s))
    searcher.on_trial_complete("done", _result(4, 2.8, done=True))
    # stopped by ASHA at epoch 2: Tune passes the stopping report to on_trial_complete only
    searcher.on_trial_result("asha", _result(1, 3.3))
    searcher.on_trial_complete("asha", _result(2, 3.2, done=True))
    # diverged at epoch 2: the NaN never enters the study
    searcher.on_trial_result("nan", _result(1, 3.4))
    searcher.on_trial_result("nan", _result(2, math.nan, diverged=True))
    searcher.on_trial_complete("nan", _result(2, math.nan, diverged=True))
    searcher.on_trial_result("err", _result(1, 3.0))
    searcher.on_trial_complete("err", error=True)
    study = open_study(settings)
    by = {t.user_attrs["tune_trial_id"]: t for t in study.trials}
    assert by["done"].state.name == "COMPLETE" and by["done"].value == 2.7
    assert by["done"].intermediate_values == {1: 3.1, 2: 2.9, 3: 2.7, 4: 2.8}
    assert by["asha"].state.name == "PRUNED" and by["asha"].intermediate_values == {1: 3.3, 2: 3.2}
    assert by["nan"].state.name == "FAIL" and by["nan"].value is None and by["nan"].intermediate_values == {1: 3.4}
    assert by["err"].state.name == "FAIL" and by["err"].value is None
    assert by["ctrl"].state.name == "RUNNING" and by["ctrl"].user_attrs["role"] == "control"
    values = [v for t in study.trials for v in [t.value, *t.intermediate_values.values()] if v is not None]
    assert all(math.isfinite(v) and v < 100 for v in values)  # no sentinel anywhere
    # a restored searcher (unpickled, as Tune does) continues on the same study, without duplicates
    again = pickle.loads(pickle.dumps(searcher))
    again.restore("unused")
    again.on_trial_result("ctrl", _result(1, 3.2))
    again.on_trial_result("ctrl", _result(1, 3.2, replayed=True))
    assert open_study(settings).trials[by["ctrl"].number].intermediate_values == {1: 3.2}


def test_open_study_uses_a_seeded_tpe_with_constant_liar(tmp_path):
    study = open_study(_settings(tmp_path, n_startup_trials=3, seed=7))
    assert isinstance(study.sampler, optuna.samplers.TPESampler)
    assert study.sampler._constant_liar and study.sampler._n_startup_trials == 3


class _Trial:
    def __init__(self, trial_id: str, role: str = "search") -> None:
        self.trial_id, self.config = trial_id, {"trial": {"role": role}}


def _asha():
    s = ControlASHA("unused", time_attr="epoch", max_t=9, grace_period=1, reduction_factor=3,
                    stop_last_trials=False)
    s.set_search_properties("test_score", "min")
    return s


def test_asha_never_stops_a_baseline_but_records_it():
    s = _asha()
    for t in ("a", "b", "ctrl"):
        s.on_trial_add(None, _Trial(t, "control" if t == "ctrl" else "search"))
    assert s.on_trial_result(None, _Trial("a"), _result(1, 1.0)) == TrialScheduler.CONTINUE
    assert s.on_trial_result(None, _Trial("b"), _result(1, 0.9)) == TrialScheduler.CONTINUE
    ctrl = _Trial("ctrl", "control")
    assert s.on_trial_result(None, ctrl, _result(1, 9.0)) == TrialScheduler.CONTINUE  # worst, kept anyway
    assert "ctrl" in s._brackets[0]._rungs[-1][1]  # its score is the mark at the first rung
    s.on_trial_add(None, _Trial("c"))
    assert s.on_trial_result(None, _Trial("c"), _result(1, 5.0)) == TrialScheduler.STOP


def test_refilled_rungs_decide_as_the_uninterrupted_scheduler():
    """A scheduler seeded with the recorded epochs makes the decision an uninterrupted one makes."""
    history = {"a": [(1, 1.0), (2, 0.9), (3, 0.8)], "b": [(1, 1.2), (2, 1.1), (3, 1.0)], "c": [(1, 1.5)]}
    live = _asha()
    for tid, epochs in history.items():
        live.on_trial_add(None, _Trial(tid))
        for e, v in epochs:
            live.on_trial_result(None, _Trial(tid), _result(e, v))
    restored = pickle.loads(pickle.dumps(_asha()))
    restored.seed_rungs(history)
    restored._seeded = True
    assert [r[1] for r in restored._brackets[0]._rungs] == [r[1] for r in live._brackets[0]._rungs]
    for s in (live, restored):
        s.on_trial_add(None, _Trial("d"))
    for e, v in [(1, 1.1), (3, 0.95)]:
        assert live.on_trial_result(None, _Trial("d"), _result(e, v)) == \
            restored.on_trial_result(None, _Trial("d"), _result(e, v))
    fresh = _asha()
    fresh.on_trial_add(None, _Trial("d"))
    assert fresh.on_trial_result(None, _Trial("d"), _result(3, 0.95)) == TrialScheduler.CONTINUE
    # without the refill the same report passes: the refilled rungs are what stop it
    fresh.on_trial_add(None, _Trial("e"))
    restored.on_trial_add(None, _Trial("e"))
    assert fresh.on_trial_result(None, _Trial("e"), _result(1, 1.4)) == TrialScheduler.CONTINUE
    assert restored.on_trial_result(None, _Trial("e"), _result(1, 1.4)) == TrialScheduler.STOP


def test_importance_compares_trials_at_the_epoch_all_of_them_reached():
    """``results --plots``: a finished trial is scored at the deepest epoch every searched trial reached
    (not at its own last epoch); baselines, which draw no parameters, are left out."""
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from figures.study import equal_fidelity_study

    dist = {"train/lr": FloatDistribution(1e-4, 1e-1, log=True)}
    study = optuna.create_study()
    for lr, values, state, role in [(1e-2, {1: 3.0, 2: 2.5, 3: 2.4}, TrialState.COMPLETE, "search"),
                                    (1e-3, {1: 3.2, 2: 3.1}, TrialState.PRUNED, "search"),
                                    (5e-3, {1: 9.0}, TrialState.COMPLETE, "baseline")]:
        study.add_trial(create_trial(params={"train/lr": lr}, distributions=dist, intermediate_values=values,
                                     state=state, value=min(values.values()) if state == TrialState.COMPLETE else None,
                                     user_attrs={"role": role}))
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=1.0, params={}, distributions={},
                                 intermediate_values={1: 1.0}, user_attrs={"role": "control"}))
    fair, epoch = equal_fidelity_study(study)
    assert epoch == 2
    assert sorted((t.params["train/lr"], t.value) for t in fair.trials) == [(1e-3, 3.1), (1e-2, 2.5)]
