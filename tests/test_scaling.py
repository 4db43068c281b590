"""``idensenet scaling``: a tiny two-budget toy study end to end (one row per budget and family, every
count within its budget's tolerance, the plot), and the per-budget spaces checked before training."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import yaml

from model.errors import UserError
from sweeper.cli import main
from studies.scaling import budget_space

SPACE = {
    "name": "tiny-scaling", "dataset": "moons", "tolerance": 0.06,
    "budget": {"family": "resflow", "toy_hidden": [20, 20], "blocks_per_scale": [2]},
    "model": {"blocks_per_scale": [2], "actnorm": False, "fc_blocks": 0},
    "search": {"family": {"choices": ["idensenet", "resflow"]}, "depth": {"choices": [2, 3]}},
    "train": {"batch_size": 64, "epochs": 2, "steps_per_epoch": 3, "test_size": 300, "lr": 1.0e-2},
    "baselines": ["resflow"],
    "enqueue": [{"label": "d2", "model": {"family": "idensenet", "depth": 2}}],  # both families at every budget
}


def test_each_budget_scales_the_reference_and_drops_what_cannot_fit():
    from search_spaces.count import count_parameters
    from search_spaces.space import space_from_dict

    small, notes = budget_space(copy.deepcopy(SPACE), 400)
    space = space_from_dict(small)
    ref = space.budget.reference
    assert ref.family == "resflow" and count_parameters(ref) == space.budget.params
    assert abs(space.budget.params - 400) <= abs(count_parameters(ref.replace(toy_hidden=(ref.arch.toy_hidden[0] + 1,) * 2)) - 400)
    # at 400 parameters depth 3 has no growth within 6 %: dropped, with the reason
    assert small["search"]["depth"]["choices"] == [2] and notes and "depth 3" in notes[0]
    big, notes = budget_space(copy.deepcopy(SPACE), 5000)
    assert big["search"]["depth"]["choices"] == [2, 3] and not notes


def test_cifar10_study_holds_each_budgets_blocks_per_scale():
    """Budgets named by preset; ``follow_reference`` gives the i-DenseNet its Residual Flow's blocks."""
    from search_spaces.count import count_parameters
    from search_spaces.space import SpaceError, space_from_dict
    from sweeper.settings import space_text

    data = yaml.safe_load(space_text("scaling-cifar10")[1])
    expected = {"cifar10-small": (8_730_441, [4, 4, 4]), "cifar10-full": (25_174_233, [16, 16, 16])}
    for budget, (params, blocks) in expected.items():
        sub, notes = budget_space(data, budget)
        space = space_from_dict(sub)
        assert space.budget.params == params == count_parameters(space.budget.reference)
        assert sub["model"]["blocks_per_scale"] == blocks and list(space.budget.reference.blocks_per_scale) == blocks
        assert not notes  # every depth and activation has a growth within ±1.5 % at both budgets
    searched = copy.deepcopy(data)
    searched["search"]["blocks_per_scale"] = {"choices": [[4, 4, 4], [3, 4, 5]]}
    with pytest.raises(UserError, match="both searched and in follow_reference"):
        budget_space(searched, "cifar10-full")
    with pytest.raises(SpaceError, match="follow_reference"):
        space_from_dict({**data, "follow_reference": ["hidden"]})


def test_check_prints_the_plan_and_trains_nothing(tmp_path, capsys):
    args = ["scaling", "--space", "scaling-cifar10", "--check", "--storage", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "budget 8,730,441 (asked cifar10-small)" in out and "blocks_per_scale [4, 4, 4]" in out
    assert "budget 25,174,233 (asked cifar10-full)" in out and "blocks_per_scale [16, 16, 16]" in out
    assert not list(tmp_path.iterdir())  # no experiment folder
    assert main(["scaling", "--space", "scaling-cifar10", "--budgets", "cifar10-tiny", "--check"]) == 2
    assert "neither a number" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.ray
def test_two_budget_study_end_to_end(ray_session, tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    args = ["scaling", "--space", str(space), "--budgets", "1500,5000", "--trials", "3",
            "--storage", str(tmp_path / "runs"), "--name", "study", "--confirm-seeds", "2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    exp = tmp_path / "runs" / "study"
    df = pd.read_csv(exp / "scaling.csv")
    for budget, part in df.groupby("budget"):  # each budget confirmed: its difference and interval
        summary = pd.read_csv(exp / f"b{budget}" / "confirm-k1-s2" / "confirm.csv")
        dense = summary[summary["describe"].str.startswith("idensenet") & summary["diff"].notna()].iloc[0]
        assert part["confirmed_diff"].iloc[0] == pytest.approx(dense["diff"])
        assert part["diff_low"].iloc[0] == pytest.approx(dense["diff_low"])
        assert f"budget {budget:,}: i-DenseNet − Residual Flow {dense['diff']:+.4f}" in out
    assert len(df) == 4 and set(df.groupby("budget")["family"].apply(frozenset)) == {frozenset({"idensenet", "resflow"})}
    for row in df.itertuples():
        assert abs(row.param_count / row.budget - 1) <= SPACE["tolerance"]
        assert row.trial_epochs >= row.epochs >= 1
    assert (exp / "scaling.png").stat().st_size > 5000
    capsys.readouterr()
    assert main(args) == 0  # rerun: every sub-sweep had ended, nothing trains again
    assert capsys.readouterr().out.count("done before, skipped") == 2
    assert main(["results", str(exp)]) == 0
    assert "budget 1," in capsys.readouterr().out
