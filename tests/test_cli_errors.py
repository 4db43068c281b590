"""Bad input: one line on stderr, exit code 2, no traceback, and nothing left behind.

Every case is caught before Ray starts and before the experiment folder exists.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from model.config import toy_config
from sweeper.cli import main

INFEASIBLE_SPACE = """\
name: tiny
dataset: moons
budget: 100
model: {family: idensenet, blocks_per_scale: [10], actnorm: false, fc_blocks: 0}
search:
  depth: {choices: [3]}
"""
UNKNOWN_KEY_SPACE = """\
name: typo
dataset: moons
budget: toy
model: {family: idensenet, blocks_per_scale: [10]}
serch:
  depth: {choices: [3]}
"""


@pytest.fixture(autouse=True)
def _no_cluster_address(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def _fails_cleanly(capsys, argv: list[str], *fragments: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("idensenet: error: "), err
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


@pytest.fixture()
def storage(tmp_path) -> Path:
    return tmp_path / "runs"


def _nothing_left(storage: Path) -> None:
    assert not storage.exists() or list(storage.iterdir()) == []


def test_unknown_space(capsys, storage):
    _fails_cleanly(capsys, ["sweep", "--space", "no-such-space", "--storage", str(storage), "--name", "a"],
                   "no-such-space")
    _nothing_left(storage)


def test_space_file_with_unknown_key(capsys, storage, tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text(UNKNOWN_KEY_SPACE)
    _fails_cleanly(capsys, ["sweep", "--space", str(path), "--storage", str(storage), "--name", "a"], "serch")
    _nothing_left(storage)


def test_infeasible_budget(capsys, storage, tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(INFEASIBLE_SPACE)
    _fails_cleanly(capsys, ["sweep", "--space", str(path), "--storage", str(storage), "--name", "a"], "100")
    _nothing_left(storage)


def test_more_workers_than_the_cluster(capsys, storage):
    line = _fails_cleanly(capsys, ["sweep", "--workers-per-trial", "64", "--batch-size", "640", "--storage", str(storage), "--name", "a"],
                          "64 workers")
    assert "CPU" in line
    _nothing_left(storage)


def test_unwritable_storage(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    _fails_cleanly(capsys, ["sweep", "--storage", str(blocker / "runs"), "--name", "a"], "not a folder")
    _fails_cleanly(capsys, ["sweep", "--storage", "/proc/idensenet-runs", "--name", "a"], "not writable")
    assert blocker.read_text() == "x"


def test_missing_data_set(capsys, storage, tmp_path):
    empty = tmp_path / "data"
    empty.mkdir()
    _fails_cleanly(capsys, ["sweep", "--space", "cifar10-small", "--data-root", str(empty), "--storage", str(storage),
                            "--name", "a"], "cifar10", "data_batch_1")
    assert list(empty.iterdir()) == []
    _nothing_left(storage)


def test_bad_train_override(capsys, storage):
    _fails_cleanly(capsys, ["sweep", "--train", "no_such_key=1", "--storage", str(storage), "--name", "a"],
                   "no_such_key")
    _fails_cleanly(capsys, ["sweep", "--train", "lr=fast", "--storage", str(storage), "--name", "a"], "lr")
    _fails_cleanly(capsys, ["sweep", "--train", "epochs=2.5", "--storage", str(storage), "--name", "a"], "epochs")
    _fails_cleanly(capsys, ["sweep", "--train", "epochs=0", "--storage", str(storage), "--name", "a"], "epochs")
    _nothing_left(storage)


def test_train_override_numbers_written_as_text_are_converted():
    from model import TrainConfig

    tc = TrainConfig.from_dict({"lr": "1e-3", "epochs": 3.0, "betas": ["0.9", 0.99]})
    assert (tc.lr, tc.epochs, tc.betas) == (1e-3, 3, (0.9, 0.99))


def test_unparsable_train_override_is_one_line(capsys):
    _fails_cleanly(capsys, ["sweep", "--train", "x=[1,"], "not valid YAML")


@pytest.mark.parametrize("option,value", [
    ("--trials", "0"), ("--trials", "-3"), ("--trials", "2.5"), ("--epochs", "0"), ("--epochs", "x"),
    ("--workers-per-trial", "0"), ("--grace-period", "0"), ("--reduction-factor", "1"),
    ("--reduction-factor", "-2"), ("--max-concurrent", "0"), ("--batch-size", "-64"), ("--seed", "-1"),
    ("--cpus-per-worker", "0"), ("--time-budget", "-5"), ("--max-failures", "-1"), ("--trial-retries", "1.5"),
])
def test_every_numeric_sweep_option_is_checked(capsys, storage, option, value):
    line = _fails_cleanly(capsys, ["sweep", option, value, "--storage", str(storage), "--name", "a"], option)
    assert value in line
    _nothing_left(storage)


@pytest.mark.parametrize("argv", [["train", "--config", "x.yaml", "--epochs", "0"],
                                  ["train", "--config", "x.yaml", "--workers", "-1"],
                                  ["best", "nope", "--top", "0"], ["train", "--config", "x.yaml", "--rank", "zero"]])
def test_numeric_options_of_other_commands(capsys, argv):
    _fails_cleanly(capsys, argv)


@pytest.mark.parametrize("argv,fragment", [
    (["toy", "--blocks", "0"], "--blocks: 0 must be >= 1"),
    (["toy", "--family", "glow"], "invalid choice: 'glow'"),
    (["reproduce", "toy", "--models", "resflow,nope"], "--models: nope not among"),
    (["reproduce", "toy", "--seeds", "a"], "--seeds 'a'"),
    (["eta", "/no/such/checkpoint"], "not a checkpoint folder"),
    (["scaling", "--space", "demo-moons", "--confirm-seeds", "1"], "--confirm-seeds must be 0"),
    (["count", "--growth", "x"], "--growth: 'x' is not a whole number"),
    (["signal", "--pairs", "many"], "invalid int value: 'many'"),
])
def test_the_studies_and_space_commands_share_the_one_error_policy(capsys, argv, fragment):
    """Every sub-command is on the one parser: one line, exit code 2, whatever the command."""
    _fails_cleanly(capsys, argv, fragment)


def test_unknown_experiment(capsys, storage):
    _fails_cleanly(capsys, ["results", "nope", "--storage", str(storage)], "nope")
    _fails_cleanly(capsys, ["best", "nope", "--storage", str(storage), "--out", str(storage / "b.yaml")], "nope")
    _fails_cleanly(capsys, ["sweep", "--resume", "--name", "nope", "--storage", str(storage)], "nope")
    _fails_cleanly(capsys, ["sweep", "--resume", "--storage", str(storage)], "--name")
    _nothing_left(storage)


def test_train_bad_inputs(capsys, storage, tmp_path):
    _fails_cleanly(capsys, ["train", "--config", str(tmp_path / "missing.yaml"), "--storage", str(storage)],
                   "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": {**toy_config().to_dict(), "depth": 0}, "train": {"data": "moons"}}))
    _fails_cleanly(capsys, ["train", "--config", str(bad), "--storage", str(storage)], "depth")
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"model": toy_config().to_dict(), "train": {"data": "moons", "batch_size": 64}}))
    _fails_cleanly(capsys, ["train", "--config", str(good), "--workers", "64", "--storage", str(storage)],
                   "64 worker")
    wrong_data = tmp_path / "wrong.yaml"
    wrong_data.write_text(yaml.safe_dump({"model": toy_config().to_dict(), "train": {"data": "digits"}}))
    _fails_cleanly(capsys, ["train", "--config", str(wrong_data), "--storage", str(storage)], "digits")
    _nothing_left(storage)


def test_real_process_exit_code_and_stderr(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sweeper.cli", "sweep", "--space", "nope", "--storage",
                           str(tmp_path / "runs")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("idensenet: error: ")
    assert not (tmp_path / "runs").exists()
