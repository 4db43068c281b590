"""The family registry: a family is one module (here ``tests/toy_family.py``, registered at test time)
and everything else (configs, counts, the solver, spaces, a sweep on Ray, its table and best.yaml)
works with it unchanged; and files written before families were nested still load."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import yaml

from model.config import ModelConfig, model_config
from model.families import unregister

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def onelayer(monkeypatch):
    """The test family, registered for one test: imported as ``tests.toy_family`` from the repository
    root (where Ray's workers, started in that directory, find it too)."""
    monkeypatch.syspath_prepend(str(ROOT))
    sys.modules.pop("tests.toy_family", None)
    module = importlib.import_module("tests.toy_family")
    yield module.FAMILY
    unregister(module.FAMILY.name)
    sys.modules.pop("tests.toy_family", None)


@pytest.mark.parametrize("shape,blocks,fc_blocks,activation", [
    ((2,), (3,), 0, "lipswish"), ((1, 8, 8), (2, 1), 2, "clipswish"), ((3, 8, 8), (1, 2), 1, "leakylswish")])
def test_a_new_familys_count_is_exact_and_its_width_solved(onelayer, shape, blocks, fc_blocks, activation):
    from model.flow import build_model
    from search_spaces.count import count_parameters
    from search_spaces.solver import solve_growth

    cfg = model_config(family="onelayer", width=6, input_shape=shape, blocks_per_scale=blocks, fc_blocks=fc_blocks,
                       activation=activation, actnorm=True)
    assert count_parameters(cfg) == build_model(cfg).num_parameters()
    target = count_parameters(cfg.replace(width=14))
    sol = solve_growth(cfg, target + 1)  # one parameter off: the solver must still land on width 14
    assert (sol.field, sol.width, sol.count) == ("width", 14, target)


def test_the_registry_refuses_what_it_cannot_keep_apart(onelayer):
    from model.config import ConfigError
    from model.families import Family, register

    with pytest.raises(ValueError, match="already registered"):
        register(type(onelayer)())
    with pytest.raises(ConfigError, match="not one of idensenet, resflow, onelayer"):
        model_config(family="twolayer")
    with pytest.raises(ConfigError, match="not a field of a onelayer model"):
        ModelConfig(family="onelayer").replace(growth=12)

    class Clash(Family):
        name, arch_type = "clash", type(ModelConfig(family="resflow").arch)
    with pytest.raises(ValueError, match="only one family defines the parameter budget"):
        Clash.defines_budget = True
        register(Clash())


def test_old_flat_best_yaml_and_checkpoint_still_load(tmp_path):
    """best.yaml entries and checkpoints written before the nesting hold every family's fields side by
    side; they load as the same config (and a checkpoint restores its model)."""
    import torch

    from model.flow import build_model
    from model.run_config import RunConfig
    from sweeper.checkpoint import load_model
    from sweeper.report import load_best_entry

    flat = {  # a model dict as the sweeps of 5a9d049 wrote it (toy i-DenseNet of the demo)
        "family": "idensenet", "input_shape": [2], "blocks_per_scale": [10], "activation": "lipswish",
        "depth": 3, "growth": 16, "fc_growth": 32, "fc_width": 64, "learnable_concat": True,
        "eta_init": [1.2, 1.2], "lc_start_epoch": 0, "lip_coeff": 0.98, "hidden": 512, "fc_hidden": 128,
        "toy_hidden": [24, 24, 24, 24], "fc_blocks": 0, "actnorm": False, "logit_alpha": 0.05, "n_levels": 256,
        "sn_coeff": 0.9, "sn_tol": 0.001, "sn_max_iters": 200, "sn_train_iters": 5, "n_exact_terms": 2,
        "eval_exact_terms": 20, "n_dist": "geometric", "poisson_lambda": 2.0, "geometric_p": 0.5,
        "neumann_grad": False, "mem_eff": False, "brute_force": False,
    }
    cfg = ModelConfig.from_dict(flat)
    assert (cfg.family, cfg.arch.growth, cfg.arch.eta_init, cfg.sn_coeff) == ("idensenet", 16, (1.2, 1.2), 0.9)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg and "arch" in cfg.to_dict()
    rf = ModelConfig.from_dict({**flat, "family": "resflow"})
    assert rf.arch.toy_hidden == (24, 24, 24, 24)

    train = {"data": "moons", "epochs": 2, "lr": 0.01}
    best = tmp_path / "best.yaml"
    best.write_text(yaml.safe_dump({"space": "demo", "configs": [{"rank": 1, "run": {"model": flat, "train": train}}]}))
    assert RunConfig.from_dict(load_best_entry(str(best))["run"]).model == cfg

    torch.manual_seed(0)
    model = build_model(cfg)
    run = RunConfig.from_dict({"model": flat, "train": train})
    ckpt = tmp_path / "checkpoint"
    ckpt.mkdir()
    torch.save({"format": 2, "run": {"model": flat, "train": run.train.to_dict()}, "model": model.state_dict(),
                "step": {}, "epoch": 1, "history": []}, ckpt / "state.pt")
    loaded, _ = load_model(str(ckpt))
    assert loaded.config == cfg
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))


@pytest.mark.ray
@pytest.mark.slow
def test_a_two_trial_sweep_of_a_family_defined_in_a_test_module(onelayer, ray_session, tmp_path, capsys):
    """The proof that adding a family is one module: a space searching it, swept on Ray (the workers
    import the family's module), read back as a table and a best.yaml."""
    from search_spaces import load_space
    from search_spaces.count import count_parameters
    from sweeper.cli import main
    from sweeper.table import results_table
    from sweeper.storage import locate

    space = {
        "name": "onelayer", "dataset": "moons", "tolerance": 0.05,
        "budget": {"toy_hidden": [16, 16], "blocks_per_scale": [2]},
        "model": {"family": "onelayer", "blocks_per_scale": [2], "actnorm": False, "fc_blocks": 0},
        "search": {"activation": {"choices": ["lipswish", "clipswish"]}, "lr": {"low": 1.0e-3, "high": 1.0e-2, "log": True}},
        "train": {"batch_size": 64, "epochs": 2, "steps_per_epoch": 3, "test_size": 200, "lr": 5.0e-3},
    }
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    loaded = load_space(str(tmp_path / "space.yaml"))
    solved = {r["activation"]: (r["width"], r["count"]) for r in loaded.table()}
    assert set(solved) == {"lipswish", "clipswish"} and all(abs(c - loaded.budget.params) <= 0.05 * loaded.budget.params
                                                             for _, c in solved.values())
    code = main(["sweep", "--space", str(tmp_path / "space.yaml"), "--trials", "2", "--storage", str(tmp_path / "runs"),
                 "--name", "onelayer", "--max-concurrent", "2"])
    assert code == 0
    exp = tmp_path / "runs" / "onelayer"
    df = results_table(locate(str(exp)))
    assert len(df) == 2 and set(df["family"]) == {"onelayer"} and df["best_val"].notna().all()
    for row in df.itertuples():
        assert (row.width, row.param_count) == solved[row.activation]
        assert row.arch == f"width {row.width}"
    assert main(["best", str(exp), "--top", "1", "--out", str(tmp_path / "best.yaml")]) == 0
    entry = yaml.safe_load((tmp_path / "best.yaml").read_text())["configs"][0]
    cfg = ModelConfig.from_dict(entry["run"]["model"])
    assert cfg.family == "onelayer" and count_parameters(cfg) == entry["param_count"]
    from sweeper.settings import SETTINGS_FILE

    assert json.loads((exp / SETTINGS_FILE).read_text())["family_modules"] == ["tests.toy_family"]


def test_a_searched_family_checks_each_field_by_the_rules_of_every_family_that_has_it():
    """With the family searched, a field only one family has is still checked by that family's rules,
    whichever family comes first (a value it refuses would otherwise stop the sweep at its draw)."""
    from search_spaces.space import SpaceError, space_from_dict

    space = {"dataset": "moons", "budget": {"toy_hidden": [24, 24, 24, 24], "blocks_per_scale": [10]},
             "tolerance": 0.03, "model": {"blocks_per_scale": [10], "actnorm": False, "fc_blocks": 0},
             "search": {"family": {"choices": ["resflow", "idensenet"]}, "lip_coeff": {"low": 0.5, "high": 1.2}}}
    with pytest.raises(SpaceError, match=r"search.lip_coeff: 1.2 must lie in \(0, 1\)"):
        space_from_dict(space)


def test_a_nested_model_config_reads_where_a_flat_one_does():
    cfg = model_config(family="resflow", hidden=64, input_shape=(1, 8, 8), blocks_per_scale=(2, 2))
    assert model_config(**cfg.to_dict()) == cfg
    with pytest.raises(Exception, match="flat or as arch, not both"):
        cfg.replace(arch=cfg.arch, hidden=32)
