"""Proposals (search_spaces/suggest.py): every draw is within the budget by construction, records its
exact count, deviation and constraint on the trial, is a complete run config, and matches the numel
of the model it describes; searched families get their widths solved; fixed trials come first."""

from __future__ import annotations

import dataclasses

import pytest

optuna = pytest.importorskip("optuna")

from model import ModelConfig, RunConfig  # noqa: E402
from search_spaces import (control_trial, count_parameters, fixed_attrs, fixed_trials_from_file,  # noqa: E402
                           load_space, space_from_dict, suggest)
from search_spaces.suggest import CONSTRAINT_KEY  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)
SHIPPED = ["toy-moons", "demo-moons", "digits", "cifar10-small", "cifar10-full", "imagenet32"]
FIELDS = {f.name for f in dataclasses.fields(ModelConfig)}


def _draws(space, n, sampler, fixed=()):
    study = optuna.create_study(sampler=sampler)
    for f in fixed:
        study.enqueue_trial(dict(f.params), user_attrs=fixed_attrs(f))
    out = []
    for i in range(n):
        trial = study.ask()
        proposal = suggest(space, trial)
        out.append((trial, proposal))
        study.tell(trial, float(getattr(proposal.run.model.arch, "depth", 0)) + 0.01 * i)  # any objective will do
    return study, out


@pytest.mark.parametrize("name", SHIPPED)
def test_1000_draws_all_within_tolerance(name):
    space = load_space(name)
    study, draws = _draws(space, 1000, optuna.samplers.RandomSampler(seed=0))
    tol, budget = space.budget.tolerance, space.budget.params
    seen_combos = set()
    for trial, p in draws:
        assert isinstance(p.run, RunConfig) and set(p.run.to_dict()["model"]) == FIELDS
        assert RunConfig.from_dict(p.run.to_dict()) == p.run
        count = count_parameters(p.run.model)
        assert p.param_count == count
        assert p.budget_deviation == pytest.approx((count - budget) / budget, abs=0)
        assert abs(p.budget_deviation) <= tol
        assert p.budget == budget and p.space == name and p.role == "search"
        assert p.run.train.lr > 0 and p.run.train.data == space.dataset
        m = p.run.model.flat()
        seen_combos.add(tuple(repr(m[d.name]) for d in space.count_dimensions if d.applies_to(m["family"])))
    for ft in study.trials:
        # Optuna 5: FrozenTrial.constraints maps each set_constraint key to its value (<= 0: feasible)
        assert ft.constraints == {CONSTRAINT_KEY: pytest.approx(abs(ft.user_attrs["budget_deviation"]) - tol)}
        assert ft.constraints[CONSTRAINT_KEY] <= 0
        assert ft.user_attrs["param_budget"] == budget
    assert len(seen_combos) == len(space.combinations())  # every combination gets drawn


def test_tpe_with_constraints_stays_feasible():
    space = load_space("cifar10-small")
    study, draws = _draws(space, 60, optuna.samplers.TPESampler(seed=3, n_startup_trials=10))
    assert all(abs(p.budget_deviation) <= space.budget.tolerance for _, p in draws)
    again, redraws = _draws(space, 60, optuna.samplers.TPESampler(seed=3, n_startup_trials=10))
    assert [p.run for _, p in draws] == [p.run for _, p in redraws]  # seeded: reproducible


def test_eta_init_shared_and_separate():
    shared = suggest(load_space("toy-moons"), optuna.create_study().ask())
    k1, k2 = shared.run.model.arch.eta_init
    assert k1 == k2 and 0.5 <= k1 <= 2.0
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1)).ask()
    sep = suggest(load_space("cifar10-small"), trial)
    k1, k2 = sep.run.model.arch.eta_init
    assert (k1, k2) == (trial.params["search/eta_init_k1"], trial.params["search/eta_init_k2"]) and k1 != k2


def test_encoded_choices_are_decoded():
    """blocks_per_scale is suggested as the string '4-4-4' and proposed as a tuple."""
    space = load_space("cifar10-small")
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2)).ask()
    p = suggest(space, trial)
    assert isinstance(trial.params["model/blocks_per_scale"], str)
    assert p.run.model.blocks_per_scale == tuple(int(v) for v in trial.params["model/blocks_per_scale"].split("-"))


def test_growth_is_recorded_and_matches_the_space_table():
    space = load_space("cifar10-full")
    table = {(r["depth"], r["activation"]): r["growth"] for r in space.table()}
    study, draws = _draws(space, 50, optuna.samplers.RandomSampler(seed=4))
    for trial, p in draws:
        m = p.run.model
        assert trial.user_attrs["growth"] == m.arch.growth == table[(m.arch.depth, m.activation)]


def test_searched_family_solves_the_residual_flow_width_and_skips_densenet_fields():
    space = load_space("demo-moons")
    study, draws = _draws(space, 80, optuna.samplers.RandomSampler(seed=5))
    resflows = [(t, p) for t, p in draws if p.run.model.family == "resflow"]
    dense = [(t, p) for t, p in draws if p.run.model.family == "idensenet"]
    assert resflows and dense
    for t, p in resflows:
        assert "model/depth" not in t.params and "model/eta_init" not in t.params and "train/lr" in t.params
        assert p.run.model.arch.toy_hidden == (24, 24, 24, 24) and p.width == 24
        assert p.param_count == count_parameters(p.run.model) == space.budget.params
    for t, p in dense:
        assert "model/depth" in t.params and abs(p.budget_deviation) <= space.budget.tolerance


def test_20_draws_build_to_their_recorded_count():
    torch = pytest.importorskip("torch")
    from model import build_model

    torch.set_num_threads(1)
    built = 0
    for name, n, seed in [("toy-moons", 6, 5), ("demo-moons", 5, 6), ("digits", 8, 6), ("cifar10-small", 1, 7)]:
        _, draws = _draws(load_space(name), n, optuna.samplers.RandomSampler(seed=seed))
        for _, p in draws:
            assert build_model(p.run.model).num_parameters() == p.param_count
            built += 1
    assert built == 20


def test_fixed_trials_come_first_with_their_exact_counts(tmp_path):
    import yaml

    space = space_from_dict(dict(
        dataset="moons", budget={"toy_hidden": [24, 24, 24, 24]}, tolerance=0.03, model={"blocks_per_scale": [10]},
        search={"depth": {"choices": [2, 3]}, "lr": {"low": 1e-3, "high": 1e-2, "log": True}},
        baselines=["resflow", {"label": "d3", "model": {"depth": 3, "growth": 23}}],
        enqueue=[{"label": "d2-fast", "model": {"depth": 2}, "train": {"lr": 0.005}}]))
    control = control_trial(space)
    assert [f.role for f in (*space.baselines, *space.enqueued)] == ["control", "baseline", "enqueued"]
    assert control.count == space.budget.params == 19_290
    best = tmp_path / "best.yaml"
    best.write_text(yaml.safe_dump({"space": "x", "configs": [{"rank": 1, "run": {
        "model": {**space.model_config({"depth": 2}).to_dict()}, "train": {"lr": 0.002, "epochs": 99}}}]}))
    from_file = fixed_trials_from_file(space, str(best))
    assert from_file[0].params == {"model/depth": 2, "train/lr": 0.002}  # epochs is not a search value
    fixed = [*space.baselines, *space.enqueued, *from_file]
    _, draws = _draws(space, 6, optuna.samplers.RandomSampler(seed=0), fixed)
    roles = [p.role for _, p in draws]
    assert roles == ["control", "baseline", "enqueued", "enqueued", "search", "search"]
    ctrl, d3, fast, filed = (p for _, p in draws[:4])
    assert ctrl.run.model.family == "resflow" and ctrl.param_count == 19_290 and ctrl.label == "resflow"
    assert (d3.run.model.arch.depth, d3.run.model.arch.growth, d3.param_count) == (3, 23, count_parameters(d3.run.model))
    assert fast.run.model.arch.depth == 2 and fast.run.train.lr == 0.005 and draws[2][0].params["model/depth"] == 2
    assert filed.run.model.arch.depth == 2 and filed.run.train.lr == 0.002
    assert draws[0][0].params == {} and draws[1][0].params == {}  # controls draw nothing


def test_fixed_trials_outside_the_budget_are_refused(tmp_path):
    from search_spaces import SpaceError

    with pytest.raises(SpaceError, match=r"baselines\[0\].*off the budget"):
        space_from_dict(dict(dataset="moons", budget={"toy_hidden": [24, 24, 24, 24]}, tolerance=0.03,
                             model={"blocks_per_scale": [10]}, search={"depth": {"choices": [2]}},
                             baselines=[{"label": "big", "model": {"depth": 3, "growth": 40}}]))
