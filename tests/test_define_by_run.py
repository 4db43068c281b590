"""The Optuna define-by-run function: every draw is within the budget by construction, records its
exact count, deviation and constraint on the trial, returns a complete model config, and matches
the numel of the model it describes; it also runs under Ray's OptunaSearch."""

from __future__ import annotations

import dataclasses

import pytest

optuna = pytest.importorskip("optuna")

from model import ModelConfig  # noqa: E402
from search_spaces import count_parameters, load_space, model_config_of, trial_config, unflatten  # noqa: E402
from search_spaces.define_by_run import CONSTRAINT_KEY  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)
SHIPPED = ["toy-moons", "digits", "cifar10-small", "cifar10-full", "imagenet32"]
FIELDS = {f.name for f in dataclasses.fields(ModelConfig)}


def _draws(space, n, sampler):
    study = optuna.create_study(sampler=sampler)
    out = []
    for i in range(n):
        trial = study.ask()
        config = trial_config(space, trial)
        out.append((trial, config))
        study.tell(trial, float(config["model"]["depth"]) + 0.01 * i)  # any objective will do
    return study, out


@pytest.mark.parametrize("name", SHIPPED)
def test_1000_draws_all_within_tolerance(name):
    space = load_space(name)
    study, draws = _draws(space, 1000, optuna.samplers.RandomSampler(seed=0))
    tol, budget = space.budget.tolerance, space.budget.params
    seen_combos = set()
    for trial, config in draws:
        assert set(config["model"]) == FIELDS
        cfg = model_config_of(config)
        count = count_parameters(cfg)
        assert config["param_count"] == count
        assert config["budget_deviation"] == pytest.approx((count - budget) / budget, abs=0)
        assert abs(config["budget_deviation"]) <= tol
        assert config["budget"] == budget and config["space"] == name
        assert config["train"]["lr"] > 0
        seen_combos.add(tuple(config["model"][d.name] if not isinstance(config["model"][d.name], list)
                              else tuple(config["model"][d.name]) for d in space.count_dimensions))
    for ft in study.trials:
        # Optuna 5: FrozenTrial.constraints maps each set_constraint key to its value (<= 0: feasible)
        assert ft.constraints == {CONSTRAINT_KEY: pytest.approx(abs(ft.user_attrs["budget_deviation"]) - tol)}
        assert ft.constraints[CONSTRAINT_KEY] <= 0
        assert ft.user_attrs["param_budget"] == budget
    assert len(seen_combos) == len(space.combinations())  # every combination gets drawn


def test_tpe_with_constraints_stays_feasible():
    space = load_space("cifar10-small")
    study, draws = _draws(space, 60, optuna.samplers.TPESampler(seed=3, n_startup_trials=10))
    assert all(abs(c["budget_deviation"]) <= space.budget.tolerance for _, c in draws)
    again, redraws = _draws(space, 60, optuna.samplers.TPESampler(seed=3, n_startup_trials=10))
    assert [c for _, c in draws] == [c for _, c in redraws]  # seeded: reproducible


def test_eta_init_shared_and_separate():
    shared = trial_config(load_space("toy-moons"), optuna.create_study().ask())
    k1, k2 = shared["model"]["eta_init"]
    assert k1 == k2 and 0.5 <= k1 <= 2.0 and "search" not in shared
    sep = trial_config(load_space("cifar10-small"), optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1)).ask())
    k1, k2 = sep["model"]["eta_init"]
    assert (k1, k2) == (sep["search"]["eta_init_k1"], sep["search"]["eta_init_k2"]) and k1 != k2


def test_returned_values_override_encoded_choices():
    """blocks_per_scale is suggested as the string '4-4-4' and returned as a list."""
    space = load_space("cifar10-small")
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2)).ask()
    flat = space.define_by_run(trial)
    assert isinstance(trial.params["model/blocks_per_scale"], str)
    assert flat["model/blocks_per_scale"] == [int(v) for v in trial.params["model/blocks_per_scale"].split("-")]
    assert unflatten({**trial.params, **flat})["model"]["blocks_per_scale"] == flat["model/blocks_per_scale"]


def test_growth_is_recorded_and_matches_the_space_table():
    space = load_space("cifar10-full")
    table = {(r["depth"], r["activation"]): r["growth"] for r in space.table()}
    study, draws = _draws(space, 50, optuna.samplers.RandomSampler(seed=4))
    for trial, config in draws:
        m = config["model"]
        assert trial.user_attrs["growth"] == m["growth"] == table[(m["depth"], m["activation"])]


def test_20_draws_build_to_their_recorded_count():
    torch = pytest.importorskip("torch")
    from model import build_model

    torch.set_num_threads(1)
    built = 0
    for name, n, seed in [("toy-moons", 10, 5), ("digits", 9, 6), ("cifar10-small", 1, 7)]:
        _, draws = _draws(load_space(name), n, optuna.samplers.RandomSampler(seed=seed))
        for _, config in draws:
            model = build_model(model_config_of(config))
            assert sum(p.numel() for p in model.parameters() if p.requires_grad) == config["param_count"]
            built += 1
    assert built == 20


def test_under_ray_optuna_search():
    pytest.importorskip("ray")
    from ray.tune.search.optuna import OptunaSearch

    space = load_space("digits")
    searcher = OptunaSearch(space=space.define_by_run, metric="bpd", mode="min", seed=0)
    configs = [searcher.suggest(f"t{i}") for i in range(5)]
    for i, config in enumerate(configs):
        assert {"model", "train", "param_count", "budget_deviation"} <= set(config)
        cfg = model_config_of(config)
        assert count_parameters(cfg) == config["param_count"]
        assert abs(config["budget_deviation"]) <= space.budget.tolerance
        searcher.on_trial_complete(f"t{i}", {"bpd": 2.0 + i, "training_iteration": 1})
    trials = searcher._ot_study.trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 5
    assert all(t.constraints[CONSTRAINT_KEY] <= 0 for t in trials)
    assert trials[0].user_attrs["param_count"] == configs[0]["param_count"]
