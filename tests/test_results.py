"""Results, best-config export and full-run preparation from an experiment folder (no Ray needed).

The folder is built by hand in the layout Tune and the trial driver write: ``idensenet_sweep.json``,
one ``trial_<id>/`` per trial with ``params.json`` and ``result.json`` (one line per epoch), an
``error.txt`` for a failed trial, Tune's ``experiment_state-*.json``, and Train checkpoints.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from model.config import toy_config
from sweeper.best import best_configs, load_best_entry, write_best
from sweeper.checkpointing import save_checkpoint
from sweeper.cli import main
from sweeper.errors import UserError
from sweeper.results import RESULTS_CSV, RESULTS_PARQUET, SCORES_PNG, resolve_experiment, results_table, write_outputs
from sweeper.train_config import DIVERGED_SCORE

EPOCHS = 3
TRAIN = {"data": "moons", "epochs": EPOCHS, "batch_size": 128, "steps_per_epoch": 3, "test_size": 500}
# trial id -> (Tune status, per-epoch test scores, diverged at the end, error file, depth)
TRIALS = {
    "aaaa0001": ("TERMINATED", [3.6, 3.4, 3.30], False, False, 2),  # finished
    "aaaa0002": ("TERMINATED", [3.5], False, False, 3),  # stopped by ASHA after epoch 1
    "aaaa0003": ("TERMINATED", [3.9, None], True, False, 4),  # diverged in epoch 2
    "aaaa0004": ("ERROR", [3.1], False, True, 5),  # best score, but the trial failed
    "aaaa0005": ("RUNNING", [3.45, 3.35], False, False, 3),  # still running / interrupted
}


def _write_experiment(root: Path) -> Path:
    exp = root / "runs" / "sw"
    exp.mkdir(parents=True)
    settings = {"space": "toy-moons", "data": "moons", "is_toy": True, "epochs": EPOCHS, "metric": "test_score",
                "metric_name": "test_nll", "experiment_path": str(exp), "train_base": {"lr": 1e-3},
                "train_force": {"epochs": EPOCHS}, "options": {"trials": len(TRIALS)}}
    (exp / "idensenet_sweep.json").write_text(json.dumps(settings))
    states = []
    for tid, (status, scores, diverged, error, depth) in TRIALS.items():
        tdir = exp / f"trial_{tid}"
        tdir.mkdir()
        model = toy_config(blocks_per_scale=(2,), depth=depth).to_dict()
        (tdir / "params.json").write_text(json.dumps({
            "model": model, "train": {"lr": 1e-3 * depth}, "param_count": 1000 + depth, "budget_deviation": 0.001 * depth}))
        lines = []
        for e, s in enumerate(scores, start=1):
            if s is None:
                r = {"epoch": e, "test_score": DIVERGED_SCORE, "diverged": True, "trial_id": tid}
            else:
                ckpt = exp / "train_runs" / f"train-{tid}" / f"checkpoint_{e}"
                save_checkpoint(ckpt, 0, None, {}, meta={"epoch": e, "train_config": {**TRAIN, "lr": 1e-3 * depth,
                                                                                      "resolved_defaults": True}})
                r = {"epoch": e, "test_score": s, "test_nll": s, "diverged": False, "trial_id": tid,
                     "checkpoint_path": str(ckpt), "param_count": 1000 + depth}
            lines.append(json.dumps(r))
        (tdir / "result.json").write_text("\n".join(lines) + "\n")
        if error:
            (tdir / "error.txt").write_text("Traceback ...")
        states.append([json.dumps({"trial_id": tid, "status": status}), "{}"])
    # an older state file (first start) that the newest one supersedes
    (exp / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps({"trial_data": []}))
    (exp / "experiment_state-2026-01-01_01-00-00.json").write_text(json.dumps({"trial_data": states}))
    return exp


@pytest.fixture()
def exp(tmp_path):
    return _write_experiment(tmp_path)


def test_table_statuses_scores_and_order(exp):
    df = results_table(str(exp))
    assert len(df) == len(TRIALS)
    status = dict(zip(df["trial"], df["status"]))
    assert status == {"aaaa0001": "finished", "aaaa0002": "stopped (ASHA)", "aaaa0003": "diverged",
                      "aaaa0004": "error", "aaaa0005": "incomplete"}
    row = df.set_index("trial").loc["aaaa0001"]
    assert row["best_score"] == 3.30 and row["best_epoch"] == 3 and row["epochs_run"] == 3
    assert row["depth"] == 2 and row["param_count"] == 1002 and row["budget_dev_pct"] == pytest.approx(0.2)
    assert row["best_checkpoint"].endswith("checkpoint_3")
    div = df.set_index("trial").loc["aaaa0003"]
    assert div["best_score"] == 3.9 and div["epochs_run"] == 2  # the diverged epoch is not a score
    scored = df["best_score"].dropna().tolist()
    assert scored == sorted(scored)  # best first


def test_outputs_round_trip(exp):
    df = results_table(str(exp))
    paths = write_outputs(str(exp), df)
    assert paths == {"csv": str(exp / RESULTS_CSV), "parquet": str(exp / RESULTS_PARQUET), "png": str(exp / SCORES_PNG)}
    back = pd.read_parquet(paths["parquet"])
    assert back["trial"].tolist() == df["trial"].tolist()
    assert back["best_score"].tolist() == pytest.approx(df["best_score"].tolist(), nan_ok=True)
    assert pd.read_csv(paths["csv"])["status"].tolist() == df["status"].tolist()
    assert Path(paths["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_best_skips_diverged_and_failed_trials(exp, tmp_path):
    doc = best_configs(str(exp), 2)
    assert [e["trial_id"] for e in doc["configs"]] == ["aaaa0001", "aaaa0005"]
    first = doc["configs"][0]
    assert first["rank"] == 1 and first["score"] == 3.30 and first["metric"] == "test_nll"
    assert first["model"]["depth"] == 2 and first["train"]["lr"] == pytest.approx(2e-3)
    assert "resolved_defaults" not in first["train"]
    out = tmp_path / "best.yaml"
    write_best(str(exp), 2, str(out))
    assert load_best_entry(str(out), 2)["trial_id"] == "aaaa0005"
    with pytest.raises(UserError, match="--rank 3"):
        load_best_entry(str(out), 3)


def test_full_run_prepare_accepts_best_yaml(exp, tmp_path):
    from sweeper.full_run import TrainOptions, prepare

    out = tmp_path / "best.yaml"
    write_best(str(exp), 1, str(out))
    storage = tmp_path / "full"
    loop, shape, name, run_path = prepare(TrainOptions(config=str(out), epochs=1, workers=1, storage=str(storage)))
    assert loop["model"] == yaml.safe_load(out.read_text())["configs"][0]["model"]
    assert loop["train"]["epochs"] == 1 and loop["train"]["data"] == "moons"
    assert name == "full-aaaa0001-rank1" and run_path.uri == str(storage / name)
    assert shape.workers == 1 and not storage.exists()  # validation creates nothing


def test_cli_results_and_best(exp, tmp_path, capsys):
    assert main(["results", "sw", "--storage", str(exp.parent)]) == 0
    out = capsys.readouterr().out
    assert "aaaa0001" in out and "stopped (ASHA)" in out and (exp / RESULTS_CSV).is_file()
    best = tmp_path / "b.yaml"
    assert main(["best", str(exp), "--top", "1", "--out", str(best)]) == 0
    assert yaml.safe_load(best.read_text())["configs"][0]["trial_id"] == "aaaa0001"
    assert resolve_experiment(str(exp)).uri == str(exp)


def test_remote_storage_code_path(exp, tmp_path):
    """The same reads and writes through pyarrow's URI file system (s3:// and gs:// take this path;
    file:// stands in for them here)."""
    from sweeper.storage import Location

    remote = Location(uri=f"file://{exp}", path=str(exp), remote=True)
    df = results_table(remote)
    assert dict(zip(df["trial"], df["status"]))["aaaa0002"] == "stopped (ASHA)"
    paths = write_outputs(remote, df)
    assert paths["csv"] == f"file://{exp}/{RESULTS_CSV}" and (exp / RESULTS_PARQUET).is_file()
    doc = best_configs(remote, 1)
    assert doc["configs"][0]["train"]["lr"] == pytest.approx(2e-3)  # read from the checkpoint's meta.json
    ckpt = remote.sibling_path(doc["configs"][0]["checkpoint"])
    with ckpt.local_copy() as d:
        assert (Path(d) / "meta.json").is_file() and Path(d) != exp
