"""The searcher tells Optuna what happened (sweeper/search.py), driven through Tune's hooks without a
cluster: every epoch an intermediate value, the stopping report included; stopped trials PRUNED,
finished ones COMPLETE with their best epoch, diverged and errored ones FAIL with no value; fixed
trials first; the study reopened from its journal after a restore; and ASHA's rungs refilled."""

from __future__ import annotations

import math
import os
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
    """A report whose validation score is ``score`` (the test score differs: decisions must not read it)."""
    return {"epoch": epoch, "val_score": score, "test_score": score + 0.5, "training_iteration": epoch, **extra}


def _trials(settings):
    """Every Optuna trial of the sweep: the baseline study's, then the searched study's."""
    from sweeper.search import record_snapshot

    with record_snapshot(settings) as (searched, baselines):
        return baselines.get_trials() + searched.get_trials()


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
    trials = _trials(settings)
    by = {t.user_attrs["tune_trial_id"]: t for t in trials}
    assert by["done"].state.name == "COMPLETE" and by["done"].value == 2.7
    assert by["done"].intermediate_values == {1: 3.1, 2: 2.9, 3: 2.7, 4: 2.8}
    assert by["asha"].state.name == "PRUNED" and by["asha"].intermediate_values == {1: 3.3, 2: 3.2}
    assert by["nan"].state.name == "FAIL" and by["nan"].value is None and by["nan"].intermediate_values == {1: 3.4}
    assert by["err"].state.name == "FAIL" and by["err"].value is None
    assert by["ctrl"].state.name == "RUNNING" and by["ctrl"].user_attrs["role"] == "control"
    assert "ctrl" not in {t.user_attrs["tune_trial_id"] for t in open_study(settings).trials}  # not the sampler's
    values = [v for t in trials for v in [t.value, *t.intermediate_values.values()] if v is not None]
    assert all(math.isfinite(v) and v < 100 for v in values)  # no sentinel anywhere
    # a restored searcher (unpickled, as Tune does) continues on the same study, without duplicates
    again = pickle.loads(pickle.dumps(searcher))
    again.restore("unused")
    again.on_trial_result("ctrl", _result(1, 3.2))
    again.on_trial_result("ctrl", _result(1, 3.2, replayed=True))
    assert {t.user_attrs["tune_trial_id"]: t for t in _trials(settings)}["ctrl"].intermediate_values == {1: 3.2}


def test_open_study_uses_a_seeded_multivariate_grouped_tpe_with_constant_liar(tmp_path):
    study = open_study(_settings(tmp_path, n_startup_trials=3, seed=7))
    assert isinstance(study.sampler, optuna.samplers.TPESampler)
    assert study.sampler._constant_liar and study.sampler._n_startup_trials == 3
    assert study.sampler._multivariate and study.sampler._group


class _Trial:
    def __init__(self, trial_id: str, role: str = "search") -> None:
        self.trial_id, self.config = trial_id, {"trial": {"role": role}}


def _asha():
    s = ControlASHA("unused", time_attr="epoch", max_t=9, grace_period=1, reduction_factor=3,
                    stop_last_trials=False)
    s.set_search_properties("val_score", "min")
    return s


def test_asha_never_stops_a_baseline_nor_records_it():
    s = _asha()
    for t in ("a", "b", "ctrl"):
        s.on_trial_add(None, _Trial(t, "control" if t == "ctrl" else "search"))
    assert s.on_trial_result(None, _Trial("a"), _result(1, 1.0)) == TrialScheduler.CONTINUE
    assert s.on_trial_result(None, _Trial("b"), _result(1, 0.9)) == TrialScheduler.CONTINUE
    ctrl = _Trial("ctrl", "control")
    assert s.on_trial_result(None, ctrl, _result(1, 9.0)) == TrialScheduler.CONTINUE  # worst, kept anyway
    assert set(s._brackets[0]._rungs[-1][1]) == {"a", "b"}  # the first rung holds searched trials only
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


def test_importance_compares_trials_at_the_deepest_epoch_enough_of_them_reached():
    """``results --plots``: every searched trial that did not fail is scored at the deepest epoch at
    least 3 of them reached (not at its own last epoch); a trial that diverged at epoch 1 does not pin
    the figure to epoch 1; baselines and trials still running are left out."""
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from figures.study import equal_fidelity_study

    dist = {"train/lr": FloatDistribution(1e-4, 1e-1, log=True)}
    study = optuna.create_study()
    for lr, values, state, role in [(1e-2, {1: 3.0, 2: 2.5, 3: 2.4, 4: 2.3}, TrialState.COMPLETE, "search"),
                                    (2e-2, {1: 3.0, 2: 2.6, 3: 2.5}, TrialState.PRUNED, "search"),
                                    (1e-3, {1: 3.2, 2: 3.1}, TrialState.PRUNED, "search"),
                                    (4e-3, {1: 3.3, 2: 3.0}, TrialState.PRUNED, "search"),
                                    (9e-2, {1: 3.9}, TrialState.FAIL, "search"),  # diverged at epoch 2
                                    (3e-3, {1: 3.1, 2: 2.9, 3: 2.8, 4: 2.7}, TrialState.RUNNING, "search"),
                                    (5e-3, {1: 9.0}, TrialState.COMPLETE, "baseline")]:
        study.add_trial(create_trial(params={"train/lr": lr}, distributions=dist, intermediate_values=values,
                                     state=state, value=min(values.values()) if state == TrialState.COMPLETE else None,
                                     user_attrs={"role": role}))
    fair, epoch = equal_fidelity_study(study)
    assert epoch == 2  # reached by 4 trials; epoch 3 by 2 of them only
    assert sorted((t.params["train/lr"], t.value) for t in fair.trials) == [
        (1e-3, 3.1), (4e-3, 3.0), (1e-2, 2.5), (2e-2, 2.6)]
    fair2, epoch2 = equal_fidelity_study(study, min_trials=2)
    assert epoch2 == 3 and len(fair2.trials) == 2


def test_endings_follow_the_one_rule_and_a_resumed_error_continues_in_a_new_trial(tmp_path):
    """Every ended trial carries its ending; an errored trial that runs again (``--resume``) continues
    in a new Optuna trial with the same parameters; an epoch reported again with another value (retrained
    from an older checkpoint) replaces the first, as in the table; the time budget ends what it stopped."""
    from sweeper import endings
    from sweeper.search import latest_by_tune_id, settle_study

    settings = _settings(tmp_path, time_budget_s=60.0)
    searcher = StudySearcher(settings)
    searcher.prepare()
    for t in ("ctrl", "err", "slow", "never", "asha"):
        searcher.suggest(t)
    searcher.on_trial_result("asha", _result(1, 3.3))
    searcher.on_trial_complete("asha", _result(2, 3.2, done=True))
    searcher.on_trial_result("err", _result(1, 3.0))
    searcher.on_trial_complete("err", error=True)
    first = latest_by_tune_id(_trials(settings))["err"]
    assert first.state.name == "FAIL" and first.user_attrs["ending"] == endings.ERROR
    # --resume: the driver replays the checkpointed epoch, then trains on; epoch 2 is reported twice
    for r in (_result(1, 3.0, replayed=True), _result(2, 2.95), _result(2, 2.9)):
        searcher.on_trial_result("err", r)
    for e, v in ((3, 2.8), (4, 2.85)):
        searcher.on_trial_result("err", _result(e, v))
    searcher.on_trial_complete("err", _result(4, 2.85, done=True))
    searcher.on_trial_result("slow", _result(1, 3.5))
    # the time budget: Tune ended "slow" (one epoch) and "never" (not started) without telling the searcher
    interrupted = {"ctrl": ("RUNNING", {}), "slow": ("PENDING", {"epoch": 1}), "never": ("PENDING", {})}
    settle_study(settings, interrupted, all_ended=False)  # an interruption: Tune resumes them
    assert latest_by_tune_id(_trials(settings))["slow"].state.name == "RUNNING"
    settle_study(settings, {"ctrl": ("RUNNING", {}), "err": ("TERMINATED", {"epoch": 4}),
                            "slow": ("TERMINATED", {"epoch": 1}), "never": ("TERMINATED", {}),
                            "asha": ("TERMINATED", {"epoch": 2})}, all_ended=False)
    trials = _trials(settings)
    latest = latest_by_tune_id(trials)
    again = latest["err"]
    assert again.number != first.number and again.user_attrs["resumed_from"] == first.number
    assert again.params == first.params and again.user_attrs["role"] == first.user_attrs["role"]
    assert again.state.name == "COMPLETE" and again.value == 2.8
    assert again.intermediate_values == {1: 3.0, 2: 2.9, 3: 2.8, 4: 2.85}
    assert [t.state.name for t in trials].count("FAIL") == 2  # the errored run and "never"
    expected = {"asha": (endings.STOPPED_ASHA, "PRUNED"), "err": (endings.FINISHED, "COMPLETE"),
                "slow": (endings.STOPPED_TIME_BUDGET, "PRUNED"), "never": (endings.STOPPED_TIME_BUDGET, "FAIL")}
    for tid, (ending, state) in expected.items():
        assert (latest[tid].user_attrs["ending"], latest[tid].state.name) == (ending, state), tid
    assert latest["ctrl"].state.name == "RUNNING"  # Tune resumes it: left as it is
    settle_study(settings, {}, all_ended=True)  # every Tune trial ended: a proposal of none ends "not run"
    assert latest_by_tune_id(_trials(settings))["ctrl"].user_attrs["ending"] == endings.NOT_RUN


def test_a_reader_never_writes_the_writers_study(tmp_path, monkeypatch):
    """``results``/``best``/``--plots`` on the head of a sweep on S3 read a private copy: the driver's
    working copy, which holds an epoch not yet uploaded, stays byte for byte what the driver wrote,
    and the driver's next proposal gets a fresh trial number."""
    import pandas as pd
    from cluster_utils import s3_server

    from sweeper.report import write_study_figures
    from sweeper.search import latest_by_tune_id, study_snapshot, working_journal
    from sweeper.storage import locate

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with s3_server() as s3:
        settings = _settings(tmp_path, experiment=f"s3://{s3['bucket']}/runs/s", sweep_id="w")
        searcher = StudySearcher(settings)
        searcher.prepare()
        searcher.suggest("a")
        searcher.on_trial_result("a", _result(1, 3.0))  # uploaded at most every UPLOAD_EVERY_S: not yet
        path = working_journal(settings)
        before = open(path, "rb").read()
        assert locate(settings.journal).read_bytes() != before
        assert [t.user_attrs.get("tune_trial_id") for t in _trials(settings)] == ["a"]  # the control
        with study_snapshot(settings) as study:
            study.ask()  # whatever a reader does stays in its copy
        exp = locate(settings.experiment)
        written = write_study_figures(exp, pd.DataFrame({"trial": ["a"], "family": ["resflow"]}), settings)
        assert locate(written["by_family"]).read_bytes()[:4] == b"\x89PNG"
        assert open(path, "rb").read() == before
        searcher.suggest("b")
        searched = open_study(settings).trials
        assert [(t.number, t.user_attrs["tune_trial_id"]) for t in searched] == [(0, "b")]
        assert latest_by_tune_id(_trials(settings))["a"].intermediate_values == {1: 3.0}


def test_same_name_on_two_s3_prefixes_and_a_reused_name_get_their_own_studies(tmp_path, monkeypatch, capsys):
    """The local working copy is keyed by the experiment URI and the sweep: sweeps named alike on two
    prefixes (and one reusing a deleted experiment's name) each begin with their own control, and never
    see another's trials."""
    from cluster_utils import s3_server

    from sweeper.search import earlier_copies, study_snapshot, working_journal

    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    def sweep(uri: str, sweep_id: str, asks: int) -> SweepSettings:
        settings = _settings(tmp_path, name="c10", experiment=uri, sweep_id=sweep_id)
        searcher = StudySearcher(settings)
        searcher.prepare()
        for i in range(asks):
            searcher.suggest(f"{sweep_id}-{i}")
        return settings

    with s3_server() as s3:
        a = sweep(f"s3://{s3['bucket']}/a/c10", "one", 3)
        b = sweep(f"s3://{s3['bucket']}/b/c10", "two", 2)
        assert working_journal(a) != working_journal(b)
        from sweeper.storage import locate

        fs = locate(a.experiment).fs
        fs.delete_dir(locate(a.experiment).path)  # the experiment is deleted, its name reused
        again = _settings(tmp_path, name="c10", experiment=a.experiment, sweep_id="three")
        assert earlier_copies(again) == [os.path.dirname(working_journal(a))]
        a2 = sweep(a.experiment, "three", 1)
        for settings, asks in ((b, 2), (a2, 1)):
            trials = _trials(settings)
            assert trials[0].user_attrs["role"] == "control" and trials[0].number == 0
            assert [t.user_attrs["tune_trial_id"] for t in trials] == [f"{settings.sweep_id}-{i}" for i in range(asks)]


def test_an_ending_tune_did_not_forward_is_settled_by_the_rule(tmp_path):
    """Without a time budget, a trial Tune ended but never told the searcher about (a trial rerun after an
    error: Tune's concurrency limiter forwards no second ending) ends by the rule: finished at its last
    epoch, stopped by ASHA before it; an ERROR one errored."""
    from sweeper import endings
    from sweeper.search import latest_by_tune_id, settle_study

    settings = _settings(tmp_path)
    searcher = StudySearcher(settings)
    searcher.prepare()
    for t in ("ctrl", "full", "short", "bad"):
        searcher.suggest(t)
    for e in range(1, EPOCHS + 1):
        searcher.on_trial_result("full", _result(e, 3.0 - 0.1 * e))
    searcher.on_trial_result("short", _result(1, 3.1))
    searcher.on_trial_result("bad", _result(1, 3.2))
    settle_study(settings, {"ctrl": ("RUNNING", {}), "full": ("TERMINATED", {"epoch": EPOCHS}),
                            "short": ("TERMINATED", {"epoch": 1}), "bad": ("ERROR", {"epoch": 1})}, all_ended=False)
    latest = latest_by_tune_id(_trials(settings))
    got = {t: (latest[t].user_attrs.get("ending"), latest[t].state.name) for t in latest}
    assert got == {"ctrl": (None, "RUNNING"), "full": (endings.FINISHED, "COMPLETE"),
                   "short": (endings.STOPPED_ASHA, "PRUNED"), "bad": (endings.ERROR, "FAIL")}
    assert latest["full"].value == pytest.approx(3.0 - 0.1 * EPOCHS)
