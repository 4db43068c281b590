"""An end-to-end sweep on the session's local Ray: a control arm, a searched family, an enqueued
configuration, ASHA stopping trials (asserted), a diverging trial; the Optuna study read back with
Optuna's own API; best-config export checked against the trial files; and a full run from it
(resumed by rerunning it with more epochs).

Interrupted sweeps (SIGKILL of the driver, ``--resume``, also on S3) are in ``test_fake_cluster.py``."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import yaml

from sweeper.cli import main

pytestmark = [pytest.mark.ray, pytest.mark.slow]

EPOCHS = 3
# A tiny budget on two moons: family searched, learning rates far below the control's, so searched
# trials fall behind the control at the first rung and ASHA (grace 1, η = 2) stops them.
SPACE = {
    "name": "tiny-family", "dataset": "moons", "tolerance": 0.06,
    "budget": {"toy_hidden": [20, 20], "blocks_per_scale": [2]},
    "model": {"blocks_per_scale": [2], "actnorm": False, "fc_blocks": 0},
    "search": {"family": {"choices": ["idensenet", "resflow"]}, "depth": {"choices": [2]},
               "lr": {"low": 1.0e-5, "high": 3.0e-5, "log": True}},
    "train": {"batch_size": 64, "epochs": EPOCHS, "steps_per_epoch": 4, "test_size": 400, "lr": 1.0e-2},
    "baselines": ["resflow"],
}
ENQUEUE = [{"label": "known-good", "model": {"family": "idensenet", "depth": 2}, "train": {"lr": 1.0e-2}}]


def _studies(exp: Path):
    """(searched study, baseline study) of a sweep's journal, read with Optuna's own API."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(exp / "optuna.journal")))
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
    assert names == [exp.name, f"{exp.name}/baselines"]
    return tuple(optuna.load_study(study_name=n, storage=storage) for n in names)


def _study(exp: Path):
    """Every Optuna trial of a sweep, searched and baselines (a namespace with ``trials``)."""
    from types import SimpleNamespace

    searched, baselines = _studies(exp)
    return SimpleNamespace(trials=baselines.trials + searched.trials)


def _wait_resources_released(timeout_s: float = 90.0) -> bool:
    import ray

    total = ray.cluster_resources().get("CPU", 0.0)
    end = time.time() + timeout_s
    while time.time() < end:
        if abs(ray.available_resources().get("CPU", 0.0) - total) < 1e-6:
            return True
        time.sleep(2)
    return False


@pytest.fixture(scope="module")
def sweep(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    (root / "space.yaml").write_text(yaml.safe_dump(SPACE))
    (root / "enqueue.yaml").write_text(yaml.safe_dump(ENQUEUE))
    storage = root / "runs"
    code = main(["sweep", "--space", str(root / "space.yaml"), "--trials", "6", "--storage", str(storage),
                 "--name", "asha", "--grace-period", "1", "--reduction-factor", "2", "--max-concurrent", "2",
                 "--enqueue", str(root / "enqueue.yaml"), "--inject-nan-trials", "3"])
    return code, root, storage / "asha"


def test_sweep_table_control_arm_and_asha(sweep, capsys):
    from search_spaces import count_parameters, load_space
    from model import ModelConfig
    from sweeper.table import results_table
    from sweeper.storage import locate

    code, root, exp = sweep
    assert code == 0
    df = results_table(locate(str(exp)))
    space = load_space(str(root / "space.yaml"))
    assert len(df) == 6
    assert (df["budget_dev_pct"].abs() <= 100 * space.budget.tolerance).all()
    assert set(df["status"]) <= {"diverged", "finished", "stopped (ASHA)"}
    assert (df["status"] == "diverged").sum() == 1
    assert (df["status"] == "stopped (ASHA)").sum() >= 1, df[["trial", "status", "best_val"]]
    control = df[df["role"] == "control"].iloc[0]
    assert control["param_count"] == space.budget.params and control["status"] == "finished"
    assert control["vs_control"] == 0.0 and df["vs_control"].notna().sum() >= 4
    assert (df["role"] == "enqueued").sum() == 1 and (df["role"] == "search").sum() == 4
    for name in ("results.csv", "results.parquet", "scores.png", "densities.png"):
        assert (exp / name).is_file(), name
    assert main(["results", str(exp), "--plots"]) == 0  # Optuna's views of the study
    for name in ("scores_by_family.png", "parallel.png"):
        assert (exp / name).stat().st_size > 5000, name
    # every Residual Flow the search proposed: a solved width within tolerance, built to its count
    import torch

    from model.flow import build_model

    for trial_dir in exp.glob("trial_*"):
        cfg = json.loads((trial_dir / "params.json").read_text())
        m = ModelConfig.from_dict(cfg["run"]["model"])
        if m.family == "resflow":
            assert cfg["trial"]["width_field"] == "toy_hidden" and len(set(m.arch.toy_hidden)) == 1
            assert abs(cfg["trial"]["budget_deviation"]) <= space.budget.tolerance
            torch.manual_seed(0)
            assert build_model(m).num_parameters() == count_parameters(m) == cfg["trial"]["param_count"]
    assert _wait_resources_released(), "ASHA-stopped trials must give their workers back"


def test_the_study_was_told_the_truth(sweep):
    import optuna

    from sweeper.table import results_table
    from sweeper.storage import locate

    _, _, exp = sweep
    df = results_table(locate(str(exp))).set_index("trial")
    study = _study(exp)
    assert len(study.trials) == 6
    assert [t.user_attrs["role"] for t in study.trials[:2]] == ["control", "enqueued"]  # fixed trials first
    assert study.trials[1].user_attrs["label"] == "known-good" and study.trials[1].params["model/depth"] == 2
    for t in study.trials:
        row = df.loc[t.user_attrs["tune_trial_id"]]
        assert t.user_attrs["param_count"] == row["param_count"]
        values = [v for v in [t.value, *t.intermediate_values.values()] if v is not None]
        assert all(math.isfinite(v) and v < 100 for v in values), values  # no sentinel in the study
        if row["status"] == "stopped (ASHA)":
            assert t.state == optuna.trial.TrialState.PRUNED
            assert sorted(t.intermediate_values) == list(range(1, int(row["epochs_run"]) + 1))
        elif row["status"] == "finished":
            assert t.state == optuna.trial.TrialState.COMPLETE and t.value == pytest.approx(row["best_val"])
            assert sorted(t.intermediate_values) == list(range(1, EPOCHS + 1))
        else:
            assert row["status"] == "diverged" and t.state == optuna.trial.TrialState.FAIL and t.value is None
    assert {t.state.name for t in study.trials} >= {"PRUNED", "COMPLETE", "FAIL"}
    # what the study holds is each epoch's validation score, as the trial reported it
    for trial_dir in exp.glob("trial_*"):
        rows = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines() if line.strip()]
        t = next(t for t in study.trials if t.user_attrs["tune_trial_id"] == rows[0]["trial_id"])
        for r in rows:
            if not r.get("diverged"):
                assert t.intermediate_values[r["epoch"]] == pytest.approx(r["val_score"])
                assert r["val_score"] != r["test_score"]  # two sets, two scores


def test_the_sampler_learns_from_searched_trials_only(sweep):
    """The control lives in a study of its own; in the sampler's study every trial carries parameters
    and the joint search space TPE infers is not empty (it is with the control among them)."""
    import optuna

    from sweeper.search import make_sampler
    from sweeper.settings import SweepSettings
    from sweeper.storage import locate

    _, _, exp = sweep
    searched, baselines = _studies(exp)
    assert [t.user_attrs["role"] for t in baselines.trials] == ["control"] and not baselines.trials[0].params
    assert [t.user_attrs["role"] for t in searched.trials][:1] == ["enqueued"]  # it pins parameters: it stays
    assert all(t.params for t in searched.trials)
    settings = SweepSettings.load(locate(str(exp)))
    assert settings.n_startup_trials == 1 + 2  # the enqueued trial counts, as TPE counts it
    space = make_sampler(settings).infer_relative_search_space(searched, searched.trials[-1])
    assert {"model/family", "train/lr"} <= set(space)
    mixed = optuna.create_study()  # the layout before: the control in the sampler's study
    for t in baselines.trials + searched.trials:
        if t.state.is_finished():
            mixed.add_trial(t)
    assert optuna.samplers.TPESampler(multivariate=True).infer_relative_search_space(mixed, mixed.trials[-1]) == {}


def test_best_against_the_trial_files_and_a_full_run(sweep, tmp_path, capsys):
    from sweeper.checkpoint import META_FILE

    _, _, exp = sweep
    best = tmp_path / "best.yaml"
    assert main(["best", str(exp), "--top", "2", "--out", str(best)]) == 0
    doc = yaml.safe_load(best.read_text())
    assert [e["rank"] for e in doc["configs"]] == [1, 2]
    assert doc["configs"][0]["val_score"] <= doc["configs"][1]["val_score"]
    # each entry is what its trial ran (params.json), chosen on validation, with the test score of that epoch
    scored = {}
    for trial_dir in exp.glob("trial_*"):
        cfg = json.loads((trial_dir / "params.json").read_text())
        rows = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines() if line.strip()]
        top = min((r for r in rows if not r.get("diverged")), key=lambda r: r["val_score"], default=None)
        scored[rows[0]["trial_id"]] = (cfg["run"], top["val_score"] if top else math.inf, top)
    assert doc["configs"][0]["val_score"] == pytest.approx(min(s for _, s, _ in scored.values()))
    for e in doc["configs"]:
        run, score, best_row = scored[e["trial_id"]]
        assert e["run"] == run and e["val_score"] == pytest.approx(score)
        assert e["best_epoch"] == best_row["epoch"] and e["test_score"] == pytest.approx(best_row["test_score"])
        meta = json.loads((Path(e["checkpoint"]) / META_FILE).read_text())
        assert meta["history"][-1]["epoch"] == e["best_epoch"]
        assert meta["history"][-1]["val_score"] == pytest.approx(e["val_score"])

    full = tmp_path / "full"
    args = ["train", "--config", str(best), "--rank", "2", "--epochs", "1", "--workers", "1",
            "--storage", str(full), "--name", "r2"]
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "final test NLL" in out and (full / "r2" / "density.png").is_file()
    # the same command with more epochs resumes the run: epoch 2 continues the iteration count
    args[args.index("--epochs") + 1] = "2"
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "resuming run" in out and "at epoch 2" in out
    from sweeper.checkpoint import load_state

    ckpt = sorted(p for p in (full / "r2").glob("checkpoint_*") if p.is_dir())[-1]
    state = load_state(ckpt)
    assert state["epoch"] == 2 and state["step"]["iteration"] == 2 * state["history"][0]["iterations"]


def test_confirm_retrains_with_seeds_and_states_the_interval(sweep, capsys):
    """``confirm``: the best searched configuration and the reference Residual Flow, 2 seeds each, to the
    last epoch; each run's score is its test score at its best validation epoch (read from its own
    result.json); intervals and the paired difference as computed by hand; rerunning resumes."""
    import pandas as pd

    _, _, exp = sweep
    capsys.readouterr()
    assert main(["confirm", str(exp), "--top", "1", "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    loc = exp / "confirm-k1-s2"
    cases = json.loads((loc / "confirm_cases.json").read_text())
    arms = [a["arm"] for a in cases["arms"]]
    assert arms[-1].startswith("reference") and cases["seeds"] == [1, 2] and len(cases["cases"]) == 2 * len(arms)
    runs = pd.read_csv(loc / "confirm_runs.csv")
    assert sorted(runs["arm"].unique()) == sorted(arms)
    assert all(sorted(part["seed"]) == [1, 2] for _, part in runs.groupby("arm"))
    for trial_dir in (p for p in loc.glob("confirm_*") if p.is_dir()):
        case = cases["cases"][json.loads((trial_dir / "params.json").read_text())["case"]]
        rows = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines() if line.strip()]
        assert [r["epoch"] for r in rows] == list(range(1, EPOCHS + 1))  # no early stopping
        best = min(rows, key=lambda r: r["val_score"])
        mine = runs[(runs["arm"] == case["trial"]["arm"]) & (runs["seed"] == case["trial"]["seed"])].iloc[0]
        assert case["run"]["train"]["seed"] == mine["seed"]
        assert (mine["best_epoch"], mine["test"]) == (best["epoch"], pytest.approx(best["test_score"]))
    summary = pd.read_csv(loc / "confirm.csv").set_index("arm")
    t_975_1 = 12.706204736174698  # Student's t, 97.5 % quantile, 1 degree of freedom
    ref = runs[runs["arm"] == arms[-1]].set_index("seed")["test"]
    for arm, part in runs.groupby("arm"):
        x = part.set_index("seed")["test"]
        half = t_975_1 * x.std(ddof=1) / math.sqrt(2)
        assert summary.loc[arm, "test_mean"] == pytest.approx(x.mean())
        assert summary.loc[arm, "test_low"] == pytest.approx(x.mean() - half)
        if arm != arms[-1]:
            d = x - ref
            assert summary.loc[arm, "diff"] == pytest.approx(d.mean())
            assert summary.loc[arm, "diff_high"] == pytest.approx(d.mean() + t_975_1 * d.std(ddof=1) / math.sqrt(2))
            shown = summary.loc[arm, "diff_low"] > 0 or summary.loc[arm, "diff_high"] < 0
            line = next(ln for ln in out.splitlines() if ln.startswith("verdict at 2 seeds"))
            assert line.endswith("no difference shown at 2 seeds") != shown
    assert (loc / "confirm.png").stat().st_size > 5000
    assert main(["confirm", str(exp), "--top", "1", "--seeds", "2"]) == 0  # the same command: resumed, kept
    assert "resuming confirmation" in capsys.readouterr().out
    assert pd.read_csv(loc / "confirm_runs.csv").equals(runs)


def _agreement(exp: Path) -> tuple[dict, dict]:
    """Table status and the study's record (ending, state) of every trial, by Tune trial id."""
    from sweeper.table import results_table
    from sweeper.search import latest_by_tune_id
    from sweeper.storage import locate

    df = results_table(locate(str(exp))).set_index("trial")
    study = _study(exp)
    latest = latest_by_tune_id(study.trials)
    assert not [t.number for t in study.trials if t.state.name == "RUNNING"], "a trial left RUNNING"
    return dict(df["status"]), {tid: (t.user_attrs.get("ending"), t.state.name, t) for tid, t in latest.items()}


def test_an_errored_then_resumed_trial_and_a_time_budget_agree_in_study_and_table(ray_session, tmp_path):
    """Two sweeps: one whose trial raises at epoch 2 (no retries), then ``--resume`` without the
    fault; one cut short by ``--time-budget``. Trial by trial, the table's status is the ending the
    study recorded under the one rule, with the Optuna state it gives; nothing is left RUNNING."""
    from sweeper import endings

    space = {**SPACE, "search": {"family": {"choices": ["idensenet"]}, "depth": {"choices": [2]}},
             "train": {**SPACE["train"], "lr": 1.0e-3}}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    flag = tmp_path / "fail-while-here"
    flag.touch()
    common = ["sweep", "--space", str(tmp_path / "space.yaml"), "--storage", str(tmp_path / "runs"),
              "--max-concurrent", "2", "--max-failures", "0", "--trial-retries", "0"]
    args = [*common, "--trials", "3", "--name", "err", "--grace-period", str(EPOCHS),
            "--inject-error-trials", "1", "--inject-error-while", str(flag)]
    assert main(args) == 1  # a trial errored
    statuses, study = _agreement(tmp_path / "runs" / "err")
    assert sorted(statuses.values()) == [endings.ERROR, endings.FINISHED, endings.FINISHED]
    flag.unlink()
    assert main([*common, "--name", "err", "--resume"]) == 0
    statuses, study = _agreement(tmp_path / "runs" / "err")
    assert set(statuses.values()) == {endings.FINISHED}
    for tid, status in statuses.items():
        ending, state, _ = study[tid]
        assert ending == status and state == endings.optuna_state(status, True).name
    resumed = [t for _, _, t in study.values() if "resumed_from" in t.user_attrs]
    assert len(resumed) == 1 and sorted(resumed[0].intermediate_values) == list(range(1, EPOCHS + 1))
    first = _studies(tmp_path / "runs" / "err")[0].trials[resumed[0].user_attrs["resumed_from"]]
    assert first.state.name == "FAIL" and first.user_attrs["ending"] == endings.ERROR
    assert first.params == resumed[0].params

    long = ["--trials", "3", "--name", "budget", "--epochs", "40", "--grace-period", "40", "--time-budget", "30"]
    code = main([*common, *long])
    assert code in (0, 130)
    statuses, study = _agreement(tmp_path / "runs" / "budget")
    assert endings.STOPPED_TIME_BUDGET in statuses.values(), statuses
    for tid, status in statuses.items():
        ending, state, trial = study[tid]
        assert ending == status, (tid, status, ending)
        assert state == endings.optuna_state(status, bool(trial.intermediate_values)).name


def test_resume_if_exists_starts_again_in_place_when_no_tune_state_was_saved(ray_session, tmp_path, capsys):
    """A batch job whose first driver died while starting (settings and journal written, no Tune
    snapshot yet) runs again with ``--resume-if-exists``: the sweep starts afresh in the same folder,
    its control first, the earlier journal kept beside under another name; run again, it resumes."""
    exp = tmp_path / "runs" / "again"
    exp.mkdir(parents=True)
    (exp / "idensenet_sweep.json").write_text("{}")
    (exp / "optuna.journal").write_text('{"op_code": 0}\n')
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(SPACE))
    args = ["sweep", "--space", str(tmp_path / "space.yaml"), "--storage", str(tmp_path / "runs"), "--name",
            "again", "--trials", "2", "--epochs", "1", "--resume-if-exists"]
    assert main(args) == 0
    assert "starts again in place" in capsys.readouterr().out
    assert [p.read_text() for p in exp.glob("optuna.journal.unstarted-*")] == ['{"op_code": 0}\n']
    study = _study(exp)
    assert len(study.trials) == 2 and study.trials[0].user_attrs["role"] == "control"
    assert main(args) == 0  # the same command again: a finished sweep, resumed, runs nothing
    assert "resuming sweep" in capsys.readouterr().out and len(_study(exp).trials) == 2
