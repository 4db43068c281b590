"""An end-to-end sweep on the session's local Ray: ASHA with a diverging trial, best-config export and
a full run from it (resumed by rerunning it with more epochs).

An interrupted sweep resumed with ``--resume`` is tested in ``test_fake_cluster.py``, where the
sweep's driver is killed outright (SIGKILL) after its first trial finished."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from sweeper.cli import main

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TOY_FAST = ["--epochs", "2", "--batch-size", "128", "--train", "steps_per_epoch=3", "--train", "test_size=500"]
TOLERANCE = 0.015  # toy-moons budget tolerance


def _study(exp: Path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(exp / "optuna.journal")))
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage)


def _wait_resources_released(timeout_s: float = 90.0) -> bool:
    import ray

    total = ray.cluster_resources().get("CPU", 0.0)
    end = time.time() + timeout_s
    while time.time() < end:
        if abs(ray.available_resources().get("CPU", 0.0) - total) < 1e-6:
            return True
        time.sleep(2)
    return False


def test_asha_sweep_with_diverging_trial_best_and_full_run(ray_session, tmp_path, capsys):
    from sweeper.results import results_table

    storage = tmp_path / "runs"
    code = main(["sweep", "--space", "toy-moons", "--trials", "4", *TOY_FAST, "--storage", str(storage),
                 "--name", "asha", "--grace-period", "1", "--reduction-factor", "2", "--max-concurrent", "2",
                 "--inject-nan-trials", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    exp = storage / "asha"
    df = results_table(str(exp))
    assert len(df) == 4
    assert (df["budget_dev_pct"].abs() <= 100 * TOLERANCE).all()
    assert sorted(df["status"].value_counts().index) <= ["diverged", "finished", "stopped (ASHA)"]
    assert (df["status"] == "diverged").sum() == 1
    assert (df["status"] == "finished").sum() >= 1
    for name in ("results.csv", "results.parquet", "scores.png", "densities.png"):
        assert (exp / name).is_file(), name
    study = _study(exp)
    assert len(study.trials) == 4
    assert {t.user_attrs["tune_trial_id"] for t in study.trials} == set(df["trial"])
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    assert [t.user_attrs["diverged"] for t in study.trials if t.number == 1] == [True]
    assert _wait_resources_released(), "ASHA-stopped trials must give their workers back (ray-notes P1)"

    best = tmp_path / "best.yaml"
    assert main(["best", str(exp), "--top", "2", "--out", str(best)]) == 0
    doc = yaml.safe_load(best.read_text())
    assert [e["rank"] for e in doc["configs"]] == [1, 2]
    assert doc["configs"][0]["score"] <= doc["configs"][1]["score"]
    assert all(e["status"] != "diverged" and Path(e["checkpoint"]).is_dir() for e in doc["configs"])
    ok = df[df["status"] != "diverged"]
    assert doc["configs"][0]["score"] == pytest.approx(ok["best_score"].min())

    full = tmp_path / "full"
    args = ["train", "--config", str(best), "--rank", "2", "--epochs", "1", "--workers", "1",
            "--storage", str(full), "--name", "r2"]
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "final test NLL" in out and (full / "r2" / "density.png").is_file()
    first = json.loads((full / "r2" / "last_report.json").read_text())
    assert first["epoch"] == 1
    # the same command with more epochs resumes the run: epoch 2 continues the iteration count
    args[args.index("--epochs") + 1] = "2"
    assert main(args) == 0
    assert "resuming run" in capsys.readouterr().out
    second = json.loads((full / "r2" / "last_report.json").read_text())
    assert second["epoch"] == 2 and second["iterations"] == 2 * first["iterations"]
