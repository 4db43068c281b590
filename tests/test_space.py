"""Space files: the shipped spaces load and are feasible for every combination; malformed and
infeasible files report every problem, one line each with its key path; the CLI exits with code 2
on errors and prints exact counts."""

from __future__ import annotations

import json
import textwrap

import pytest

from model import model_config
from search_spaces import BUDGETS, SpaceError, count_parameters, load_space, shipped_spaces, space_from_dict
from sweeper.cli import main
from model.datasets import DATASETS

SHIPPED = ["cifar10-full", "cifar10-small", "demo-moons", "digits", "imagenet32", "scaling-cifar10", "scaling-digits",
           "scaling-moons", "toy-moons"]


def _write(tmp_path, text: str, name: str = "space.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_shipped_spaces_are_listed():
    assert shipped_spaces() == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_space_every_combination_within_tolerance(name):
    space = load_space(name)
    assert space.name == name
    rows = space.table()
    assert rows and all(r["feasible"] for r in rows)
    for assignment, row in zip(space.combinations(), rows):
        cfg = space.model_config(assignment)
        assert count_parameters(cfg) == row["count"]
        assert abs(row["count"] - space.budget.params) <= space.budget.tolerance * space.budget.params


def test_shipped_space_by_path_equals_by_name(tmp_path):
    import importlib.resources as res

    text = (res.files("search_spaces") / "cifar10-small.yaml").read_text()
    path = _write(tmp_path, text, "mine.yaml")
    a, b = load_space("cifar10-small"), load_space(path)
    assert a.table() == b.table()
    assert load_space("cifar10-small.yaml").budget == a.budget


def test_cifar10_small_space_reproduces_the_paper_growths():
    space = load_space("cifar10-small")
    assert space.budget.params == BUDGETS["cifar10-small"]
    got = {r["depth"]: r["growth"] for r in space.table()
           if r["activation"] == "clipswish" and r["blocks_per_scale"] == (4, 4, 4)}
    assert got == {2: 318, 3: 178, 4: 122, 5: 90}


def test_the_one_dataset_table_describes_what_the_loaders_yield():
    from model.data import make_loaders

    for name in ("digits", "moons"):
        lo = make_loaders(name, None, 10, 10, toy_test_size=10)
        xb, _ = next(iter(lo.train))
        assert tuple(xb.shape[1:]) == DATASETS[name].shape == lo.input_shape
        assert lo.n_levels == DATASETS[name].n_levels
        assert int(xb.max()) < (DATASETS[name].n_levels or 10**9)


def test_toy_space_uses_toy_defaults():
    space = load_space("toy-moons")
    cfg = space.model_config(space.combinations()[0])
    assert cfg.input_shape == (2,) and cfg.sn_train_iters == 5 and cfg.n_dist == "geometric"
    assert not cfg.actnorm and cfg.fc_blocks == 0


MALFORMED = """\
    dataset: cifar11
    budget: cifar10-tiny
    tolerance: 2
    colour: blue
    budgets: 3000
    model:
      family: idensenet
      growth: 100
      sn_coeff: 1.5
      depthh: 3
    search:
      depth: {choices: [2, 3, "x"]}
      activation: {choices: [relu, clipswish]}
      lip_coeff: {low: 0.9, high: 1.2}
      lr: {low: 0, high: 1.0e-3, log: true}
      eta_init: {low: 2, high: 1}
      blocks_per_scale: {low: 1, high: 4}
      bogus: 3
    train:
      batch_size: -1
"""
MALFORMED_PATHS = [
    "colour", "budgets", "dataset", "tolerance", "budget", "model.growth", "model.depthh", "train.batch_size",
    "search.depth.choices[2]", "search.lr.log", "search.eta_init", "search.blocks_per_scale",
    "search.bogus", "model.sn_coeff", "search.activation", "search.lip_coeff",
]


def test_malformed_space_reports_every_problem_with_its_key_path(tmp_path):
    path = _write(tmp_path, MALFORMED)
    with pytest.raises(SpaceError) as info:
        load_space(path)
    lines = str(info.value).splitlines()
    assert lines == info.value.lines()
    assert len(lines) == len(MALFORMED_PATHS)
    got = sorted(line.split(": ")[1] for line in lines)
    assert got == sorted(MALFORMED_PATHS)
    assert all(line.startswith(f"{path}: ") for line in lines)
    assert any("'relu' is not one of" in line for line in lines)
    assert any("1.5 must lie in (0, 1)" in line for line in lines)


INFEASIBLE = """\
    dataset: cifar10
    budget: cifar10-small
    tolerance: 0.005
    model: {family: idensenet}
    search:
      depth: {choices: [2, 3, 4, 5]}
      activation: {choices: [clipswish]}
"""


def test_infeasible_combinations_are_errors_naming_the_nearest_counts(tmp_path):
    with pytest.raises(SpaceError) as info:
        load_space(_write(tmp_path, INFEASIBLE))
    lines = info.value.lines()
    assert len(lines) == 1  # depths 2, 3, 4 fit ±0.5%; depth 5 does not
    assert "search: depth=5, activation=clipswish: no growth within ±0.5% of 8,730,441" in lines[0]
    assert "growth 90 -> 8,628,606 (-1.17%)" in lines[0] and "growth 92 -> 8,839,086 (+1.24%)" in lines[0]


def test_combination_rules_of_the_model_config_are_checked():
    """An odd FC growth is fine for LipSwish but not for CLipSwish: only that combination fails."""
    data = dict(dataset="digits", budget="digits", model=dict(fc_width=32, fc_growth=15, blocks_per_scale=[2, 2]),
                search=dict(depth={"choices": [2]}, activation={"choices": ["lipswish", "clipswish"]}))
    with pytest.raises(SpaceError) as info:
        space_from_dict(data)
    assert len(info.value.lines()) == 1
    assert "fc_growth" in info.value.lines()[0]


def test_searched_count_dimensions_must_be_discrete():
    data = dict(dataset="cifar10", budget="cifar10-small", search=dict(depth={"low": 2.0, "high": 4.5}))
    with pytest.raises(SpaceError, match=r"search.depth.low: 2.0 is not an integer"):
        space_from_dict(data)


def test_integer_range_for_depth_is_enumerated():
    space = space_from_dict(dict(dataset="cifar10", budget="cifar10-small", search=dict(depth={"low": 2, "high": 4})))
    assert [r["depth"] for r in space.table()] == [2, 3, 4]


def test_budget_as_a_number_and_fixed_values_in_search():
    space = space_from_dict(dict(dataset="moons", budget=20000, tolerance=0.05,
                                 search=dict(depth=2, sn_coeff=0.8, lr=0.01)))
    (row,) = space.table()
    assert abs(row["deviation"]) <= 0.05
    assert space.base["depth"] == 2 and space.base["sn_coeff"] == 0.8 and space.train["lr"] == 0.01
    assert space.dimensions == ()


def test_yaml_syntax_error_is_one_line(tmp_path):
    with pytest.raises(SpaceError) as info:
        load_space(_write(tmp_path, "dataset: cifar10\nsearch: {depth: [1, 2\n"))
    assert len(info.value.lines()) == 1 and "YAML syntax error" in info.value.lines()[0]


def test_unknown_name_lists_the_shipped_spaces():
    with pytest.raises(SpaceError, match="toy-moons"):
        load_space("no-such-space")


# ------------------------------------------------------------------ CLI
def test_cli_space_show_prints_the_growth_table(capsys):
    assert main(["space", "show", "cifar10-small"]) == 0
    out = capsys.readouterr().out
    assert "budget: cifar10-small = 8,730,441 ±1.5%" in out
    row = next(line for line in out.splitlines() if line.split()[:3] == ["3", "clipswish", "4-4-4"])
    assert row.split()[3:6] == ["178", "8,695,158", "-0.40%"]


def test_cli_malformed_space_exit_code_2_one_line_per_problem(tmp_path, capsys):
    path = _write(tmp_path, MALFORMED)
    assert main(["space", "show", str(path)]) == 2
    captured = capsys.readouterr()
    err_lines = captured.err.strip().splitlines()
    assert len(err_lines) == len(MALFORMED_PATHS)
    assert all(line.startswith("idensenet: error: ") for line in err_lines)
    assert captured.out == ""


def test_cli_infeasible_space_exit_code_2(tmp_path, capsys):
    assert main(["space", "show", str(_write(tmp_path, INFEASIBLE))]) == 2
    assert "depth=5" in capsys.readouterr().err


@pytest.mark.parametrize("argv,expected", [
    (["--family", "resflow", "--activation", "lipswish", "--blocks", "4-4-4"], 8_730_441),
    (["--depth", "3", "--growth", "178", "--no-learnable-concat"], 8_695_062),
    (["--depth", "2", "--growth", "318", "--blocks", "4-4-4", "--input-shape", "3,32,32"], 8_763_510),
    (["--family", "resflow", "--blocks", "16-16-16", "--activation", "lipswish"], 25_174_233),
    (["--input-shape", "2"], 10_250),
    (["--dataset", "moons", "--family", "resflow"], 501_850),
    (["--dataset", "digits", "--family", "resflow", "--activation", "lipswish", "--blocks", "2-2",
      "--hidden", "64", "--fc-hidden", "64"], 78_919),
])
def test_cli_count_flags(argv, expected, capsys):
    assert main(["count", "--json", *argv]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == expected


def test_cli_count_config_files(tmp_path, capsys):
    cfg = model_config(blocks_per_scale=(4, 4, 4), depth=4, growth=122)
    (tmp_path / "c.json").write_text(json.dumps(cfg.to_dict()))
    (tmp_path / "c.yaml").write_text("model:\n  depth: 4\n  growth: 122\n  blocks_per_scale: [4, 4, 4]\n")
    for name in ("c.json", "c.yaml"):
        assert main(["count", "--config", str(tmp_path / name)]) == 0
        assert "parameters: 8,724,302" in capsys.readouterr().out
    # flags override the file
    assert main(["count", "--json", "--config", str(tmp_path / "c.json"), "--depth", "2", "--growth", "318"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 8_763_510


def test_cli_count_budget_and_solve(capsys):
    assert main(["count", "--depth", "5", "--budget", "cifar10-small", "--solve"]) == 0
    out = capsys.readouterr().out
    assert "growth 90" in out and "deviation -1.17%" in out


@pytest.mark.parametrize("argv", [
    ["count", "--depth", "0"],
    ["count", "--blocks", "4-x"],
    ["count", "--budget", "huge"],
    ["count", "--config", "/no/such/file.yaml"],
    ["count", "--depth", "5", "--budget", "cifar10-small", "--tolerance", "0.005", "--solve"],
    ["count", "--dataset", "mnist"],
    ["count", "--solve"],
])
def test_cli_count_errors_are_one_line_exit_2(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("idensenet: error: ")


def test_cli_usage_error_exit_2(capsys):
    assert main(["count", "--depth", "three"]) == 2
    assert main(["space"]) == 2
