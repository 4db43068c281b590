"""The replay simulator (:mod:`replay.simulate`) on a hand-made learning-curve table.

The table holds the demo space's configurations on a coarse grid (14), 4 epochs, one seed, with
made-up scores: each configuration's validation and test curves fall to a level set by its index, so
which configuration is best, and what each one's regret is, is known by construction. With one
worker the replay must make the same proposals, the same ASHA decisions and the same pick as a real
Tune sweep whose trainable reports the table's values; it must drive the sweep's own classes.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from replay.curves import PARAM_PREFIX, final_test, grid, table_spec
from replay.compare import ARMS, DEFAULT
from replay.simulate import Arm, Lookup, replay

EPOCHS = 4


def _level(c: int) -> float:
    """Configuration c's final score: a scramble of 0..13, so the best is neither first nor last."""
    return 2.0 + 0.05 * ((5 * c + 3) % 14)


@pytest.fixture(scope="module")
def lookup() -> Lookup:
    spec = table_spec("demo-moons", {"epochs": EPOCHS, "steps_per_epoch": 5}, points=2, seeds=(1,))
    rows = []
    for c, params in enumerate(grid(spec.space(), spec.points)):
        for e in range(1, EPOCHS + 1):
            score = _level(c) + 1.0 / e  # every curve falls; the ranking holds at every epoch
            rows.append({"config": c, **{PARAM_PREFIX + k: v for k, v in params.items()}, "seed": 1, "epoch": e,
                         "val": score + 0.01, "test": score, "train_loss": score, "seconds": 1.0 + 0.1 * c,
                         "diverged": False, "param_count": 0})
    return Lookup(pd.DataFrame(rows), spec)


def test_the_grid_holds_every_family_and_choice(lookup: Lookup) -> None:
    cfg = lookup.configs
    assert len(cfg) == 3 * 2 * 2 + 2  # i-DenseNet: 3 depths x 2 lr x 2 eta; Residual Flow: 2 lr
    assert set(cfg[PARAM_PREFIX + "model/family"]) == {"idensenet", "resflow"}
    assert cfg[PARAM_PREFIX + "model/depth"].dropna().astype(int).tolist().count(4) == 4
    lrs = sorted(set(cfg[PARAM_PREFIX + "train/lr"]))
    assert lrs == [1.0e-3, 2.0e-2]


def test_nearest_keeps_the_categoricals_and_takes_the_closest_numbers(lookup: Lookup) -> None:
    cfg = lookup.configs
    c = lookup.nearest({"model/family": "idensenet", "model/depth": 3, "model/eta_init": 1.9, "train/lr": 1.5e-3})
    row = cfg.loc[c]
    assert (row[PARAM_PREFIX + "model/depth"], row[PARAM_PREFIX + "model/eta_init"], row[PARAM_PREFIX + "train/lr"]) \
        == (3, 2.0, 1.0e-3)
    # 4.4e-3 is nearer 1e-3 than 2e-2 on the log scale the dimension uses (not on a linear one)
    c = lookup.nearest({"model/family": "resflow", "train/lr": 4.4e-3})
    assert cfg.loc[c, PARAM_PREFIX + "train/lr"] == 1.0e-3 and cfg.loc[c, PARAM_PREFIX + "model/family"] == "resflow"
    assert math.isnan(cfg.loc[c, PARAM_PREFIX + "model/depth"])


def test_final_scores_count_a_diverged_seed_as_the_worst() -> None:
    df = pd.DataFrame({"config": [0, 0, 1, 1, 2, 2], "seed": [1, 2] * 3, "epoch": [2, 2, 2, 2, 2, 1],
                       "test": [1.0, 3.0, 2.0, 2.5, 1.5, np.nan], "diverged": [False] * 5 + [True]})
    assert final_test(df, 2).to_dict() == {0: 2.0, 1: 2.25, 2: (1.5 + 3.0) / 2}


def test_regret_of_the_pick_is_computed_from_the_table(lookup: Lookup) -> None:
    trace = replay(lookup, Arm("random", sampler="random", scheduler="none"), trials=5, workers=2, seed=3)
    assert trace.trial_epochs[-1] == 5 * EPOCHS  # no stopping: every trial trains every epoch
    best = min(_level(c) for c in range(len(lookup.configs)))
    picked = min(trace.proposals, key=_level)  # validation ranks configurations as the test score does
    assert trace.picks[-1] == picked
    assert trace.regret[-1] == pytest.approx(_level(picked) - best, abs=1e-12)
    # two workers: the first two trials start at 0 and their first epochs end after 1.0 + 0.1·c seconds
    assert trace.time_s[0] == pytest.approx(1.0 + 0.1 * min(trace.proposals[:2]))


def test_asha_stops_trials_and_saves_trial_epochs(lookup: Lookup) -> None:
    arm = Arm("asha", sampler="random", grace_period=1, reduction_factor=2)
    trace = replay(lookup, arm, trials=10, workers=1, seed=0)
    assert trace.trial_epochs[-1] < 10 * EPOCHS
    assert "STOP" in {d for _, _, d in trace.decisions}


def test_the_replay_drives_the_sweeps_own_classes(lookup: Lookup, monkeypatch: pytest.MonkeyPatch) -> None:
    import sweeper.search
    import sweeper.sweep

    seen: list[str] = []
    for module, name in ((sweeper.search.StudySearcher, "suggest"), (sweeper.sweep.ControlASHA, "on_trial_result"),
                         (sweeper.search, "make_sampler")):
        original = getattr(module, name)

        def spy(*args, _original=original, _name=name, **kwargs):  # noqa: ANN002, ANN003
            seen.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)
    replay(lookup, Arm("tpe+asha", grace_period=1, reduction_factor=2), trials=3, workers=1, seed=0)
    assert {"suggest", "on_trial_result", "make_sampler"} <= set(seen)


@pytest.mark.ray
@pytest.mark.slow
def test_one_worker_replay_equals_a_real_tune_sweep(lookup: Lookup, ray_session, tmp_path) -> None:  # noqa: ANN001
    from ray import tune

    from sweeper.metrics import BEST_VAL, DIVERGED, TEST, VAL
    from sweeper.search import METRIC, MODE, StudySearcher, record_snapshot
    from sweeper.sweep import make_scheduler
    from replay.simulate import replay_settings

    arm, trials, seed = Arm("tpe+asha", grace_period=1, reduction_factor=2, n_startup_trials=3), 8, 5
    expected = replay(lookup, arm, trials=trials, workers=1, seed=seed)

    folder = tmp_path / "tune"
    folder.mkdir()
    settings = replay_settings(lookup, arm, trials, seed, str(folder), workers=1)
    searcher = StudySearcher(settings)
    searcher.prepare()
    curves = {c: lookup.curves[(c, 1)] for c in range(len(lookup.configs))}

    def trainable(config):  # noqa: ANN001, ANN202
        c = lookup.nearest(lookup.params_of(config))
        best = math.inf
        for e, (val, test) in enumerate(zip(curves[c]["val"], curves[c]["test"]), start=1):
            best = min(best, val)
            tune.report({"epoch": e, VAL: val, TEST: test, BEST_VAL: best, DIVERGED: False, "config_index": c})

    tuner = tune.Tuner(trainable, tune_config=tune.TuneConfig(
        metric=METRIC, mode=MODE, search_alg=searcher, scheduler=make_scheduler(settings), num_samples=trials,
        max_concurrent_trials=1), run_config=tune.RunConfig(name="real", storage_path=str(tmp_path / "ray"), verbose=0))
    grid_ = tuner.fit().get_dataframe()
    with record_snapshot(settings) as (study, _):
        real = sorted(study.trials, key=lambda t: t.number)
    real_configs = [lookup.nearest({k: v for k, v in t.params.items()}) for t in real]
    assert real_configs == expected.proposals
    # ASHA's decisions: the epochs each trial ran, as the study recorded them
    ran = [max(t.intermediate_values) for t in real]
    replayed = [max(e for n, e, _ in expected.decisions if n == i) for i in range(trials)]
    assert ran == replayed
    assert [t.state.name for t in real] == ["COMPLETE" if r == EPOCHS else "PRUNED" for r in replayed]
    best_row = grid_.sort_values([BEST_VAL, "trial_id"]).iloc[0]
    assert int(best_row["config_index"]) == expected.picks[-1]


def test_record_is_resumable_and_refuses_another_grid(tmp_path) -> None:  # noqa: ANN001
    from model.errors import UserError
    from replay.curves import read_table, record

    out = str(tmp_path / "t.parquet")
    spec = table_spec("demo-moons", {"epochs": 2, "steps_per_epoch": 2, "test_size": 200}, points=2, seeds=(1,))
    record(spec, out, jobs=1, limit=2, say=lambda _: None)
    df, back = read_table(out)
    assert back == spec
    assert sorted(set(zip(df["config"], df["seed"]))) == [(0, 1), (1, 1)]
    assert df.groupby(["config", "seed"])["epoch"].apply(list).tolist() == [[1, 2], [1, 2]]
    assert (df["seconds"] > 0).all() and df["val"].notna().all() and df["test"].notna().all()
    first = df.copy()
    record(spec, out, jobs=1, limit=1, say=lambda _: None)  # extends: the third run, the first two untouched
    df, _ = read_table(out)
    assert sorted(set(zip(df["config"], df["seed"]))) == [(0, 1), (1, 1), (2, 1)]
    pd.testing.assert_frame_equal(df[df["config"] < 2].reset_index(drop=True), first.reset_index(drop=True))
    other = table_spec("demo-moons", {"epochs": 3, "steps_per_epoch": 2, "test_size": 200}, points=2, seeds=(1,))
    with pytest.raises(UserError, match="another space, schedule or grid"):
        record(other, out, jobs=1, limit=1, say=lambda _: None)


def test_compare_command_writes_the_table_and_the_figure(lookup: Lookup, tmp_path, capsys) -> None:  # noqa: ANN001
    from replay.curves import write_table
    from sweeper.cli import main

    rows = []
    for (c, s), cur in lookup.curves.items():
        params = lookup.configs.loc[c].dropna().to_dict()
        for e in range(EPOCHS):
            rows.append({"config": c, **params, "seed": s, "epoch": e + 1, "val": cur["val"][e], "test": cur["test"][e],
                         "train_loss": 0.0, "seconds": cur["seconds"][e], "diverged": False, "param_count": 0})
    table = str(tmp_path / "tiny.parquet")
    write_table(pd.DataFrame(rows), lookup.spec, table)
    out = tmp_path / "cmp"
    code = main(["replay", "compare", "--table", table, "--trials", "6", "--replays", "4", "--workers", "2",
                 "--jobs", "1", "--arms", "3", "--start-cost", "0", "--out", str(out)])
    assert code == 0
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["arm"]) == ["random, no stopping", DEFAULT]
    assert (summary["replays"] == 4).all()
    control = summary.iloc[0]
    assert control["trial_epochs"] == 6 * EPOCHS and control["speedup"] == 1.0  # its own reference
    assert (out / "anytime_regret.png").stat().st_size > 10_000
    assert f"| 6 | {DEFAULT} |" in capsys.readouterr().out


def test_speedup_is_the_ratio_of_budgets_reaching_random_searchs_final_median() -> None:
    from replay.compare import CONTROL, summarise

    def trace(regret: list[float]) -> dict:
        return {"trial_epochs": list(range(1, len(regret) + 1)), "time_s": [float(i) for i in range(len(regret))],
                "regret": regret}

    control = [trace([1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5]), trace([1, 1, 1, 0.9, 0.5, 0.5, 0.4, 0.4]),
               trace([1, 1, 1, 1, 1, 1, 0.6, 0.6])]  # final median 0.5, first reached at 5 trial-epochs
    arm = [trace([1, 0.5, 0.5, 0.2]), trace([0.9, 0.5, 0.5, 0.5]), trace([1, 1, 0.3, 0.3])]  # median <= 0.5 from 2
    df = summarise({(CONTROL, 2): control, ("fast", 2): arm}, epochs=4).set_index("arm")
    assert df.loc[CONTROL, "speedup"] == 1.0 and df.loc[CONTROL, "target"] == 0.5
    assert df.loc["fast", "epochs_to_target"] == 2 and df.loc["fast", "speedup"] == 2.5
    assert df.loc["fast", "final_regret"] == 0.3 and df.loc["fast", "trial_epochs"] == 4


def test_overheads_are_read_from_the_progress_lines() -> None:
    from replay.overhead import median_overhead, trial_overheads

    log = """[    1.0s] a started: search idensenet depth 2 act=lipswish params=19,250 dev=-0.21%
[    3.0s] b started: search resflow toy_hidden 24 act=lipswish params=19,290 dev=+0.00%
[   14.5s] a epoch 1/16  val 3.3000 (best 3.3000)  test NLL 3.3100  train 3.4000  1.5 s
[   16.0s] a epoch 2/16  val 3.2000 (best 3.2000)  test NLL 3.2100  train 3.3000  1.4 s
[   16.6s] a stopped by ASHA after 2 epoch(s), best val 3.2000
[   18.0s] b epoch 1/16  val 3.3000 (best 3.3000)  test NLL 3.3100  train 3.4000  2.0 s
[   19.0s] b diverged
""".splitlines()
    per = trial_overheads(log)
    assert per["a"] == pytest.approx({"start": 12.0, "end": 0.6})
    assert per["b"] == pytest.approx({"start": 13.0, "end": 1.0})
    assert median_overhead(log) == pytest.approx((12.5, 0.8, 2))


def test_a_diverged_trial_is_never_the_pick(lookup: Lookup) -> None:
    best_config = min(range(len(lookup.configs)), key=_level)
    rows = []
    for (c, s), cur in lookup.curves.items():
        params = lookup.configs.loc[c].dropna().to_dict()
        for e in range(EPOCHS):
            bad = c == best_config and e == 2  # the best configuration diverges at its third epoch
            rows.append({"config": c, **params, "seed": s, "epoch": e + 1, "val": np.nan if bad else cur["val"][e],
                         "test": np.nan if bad else cur["test"][e], "train_loss": 0.0, "seconds": 1.0,
                         "diverged": bad, "param_count": 0})
            if bad:
                break
    broken = Lookup(pd.DataFrame(rows), lookup.spec)
    trace = replay(broken, Arm("random", sampler="random", scheduler="none"), trials=30, workers=1, seed=0)
    assert best_config in trace.proposals
    first = trace.proposals.index(best_config)
    after = trace.picks[first * EPOCHS + 3:]  # one worker: earlier trials ran 4 epochs each; this one 3
    assert best_config not in after  # it led after its first two epochs, then diverged: never picked again
    assert broken.regret[best_config] > 0  # its diverged seed scores as the table's worst


def test_the_replayed_default_is_the_demos_shipped_schedule_on_its_own_space() -> None:
    """The README's efficiency claim is about the shipped demo: the arm it names must train the demo's
    schedule, and the committed table must hold the demo's space and its epochs of the demo's length."""
    import yaml

    from replay.cli import shipped_table
    from replay.curves import read_table
    from search_spaces.space import load_space

    demo = load_space("demo-moons")
    (arm,) = [a for a in ARMS if a.name == DEFAULT]
    assert (arm.sampler, arm.scheduler, arm.brackets, arm.n_startup_trials, arm.multivariate) == ("tpe", "asha", 1, None, True)
    assert {"grace_period": arm.grace_period, "reduction_factor": arm.reduction_factor} == demo.schedule
    _, spec = read_table(shipped_table())
    assert spec.space_name == "demo-moons"
    assert (spec.train["epochs"], spec.train["steps_per_epoch"]) == (demo.train["epochs"], demo.train["steps_per_epoch"])
    recorded, shipped = yaml.safe_load(spec.space_yaml), yaml.safe_load((Path(__file__).parents[1] / "search_spaces" / "demo-moons.yaml").read_text())
    for key in ("dataset", "budget", "tolerance", "model", "search"):
        assert recorded[key] == shipped[key], key
