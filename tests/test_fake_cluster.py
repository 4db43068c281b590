"""The sweep on a cluster, simulated on this machine (Ray's fake_multinode provider), and its faults.

* The head mirrors cluster.yaml's head: no CPUs and no GPUs for work, only the ``trial_driver``
  resource that keeps trial drivers on it. GPU nodes exist only once the autoscaler adds them
  because training workers ask for GPUs ("fake" GPUs: the node advertises them, nothing uses CUDA,
  and the harness's shim lets Train's NCCL choice fall back to gloo).
* Fault tests run ``idensenet sweep`` as a subprocess against a private cluster. One kills a
  training worker mid-run: the resumed run continues the loss trajectory and the optimiser state of
  an uninterrupted run of the same config (to float rounding). One runs a sweep on S3 (a real
  S3-protocol server on loopback), kills its driver once a trial has finished and another has
  checkpointed its last epoch, wipes the local state (a new HOME, no staging folder) and resumes:
  no finished trial runs again, and every epoch reported before the kill is in the table, the
  Optuna study and ``best``, with the right status.
* Checkpoint files are written atomically; a half-written checkpoint is never the one resumed from.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from cluster_utils import (
    RAY_BIN, REPO, fake_cluster, gpu_nodes, head_node_id, newest_checkpoint_epoch, s3_server, train_checkpoints,
    train_workers, trial_results, trial_statuses, wait_for,
)



def _cluster_yaml_head_resources() -> dict[str, int]:
    cfg = yaml.safe_load((REPO / "cluster.yaml").read_text())
    return dict(cfg["available_node_types"][cfg["head_node_type"]]["resources"])


@pytest.fixture()
def ray_env(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")


# ---- the real sweep, submitted as a Ray job the way docs/cluster.md does it ---------------------


def _sweep_cmd(*args: str) -> list[str]:
    return [str(RAY_BIN.with_name("idensenet")), "sweep", *args]


@pytest.mark.slow
@pytest.mark.ray
def test_sweep_job_on_fake_autoscaling_cluster(tmp_path: Path, ray_env) -> None:
    """``ray job submit --working-dir . -- idensenet sweep --gpu ...`` on a cluster whose head has no
    GPU: the sweep sizes itself from what the autoscaler can reach, the autoscaler adds one GPU node,
    both trials train there for every epoch while their drivers stay on the head."""
    storage = tmp_path / "runs"
    with fake_cluster(
        head_resources=_cluster_yaml_head_resources(),
        worker_types={"gpu_worker": {"resources": {"CPU": 2, "GPU": 2}, "max_workers": 1}},
    ) as cluster:
        assert gpu_nodes(cluster.dashboard_url) == []  # the head alone has no GPU
        env = dict(cluster.env)
        cmd = [
            str(RAY_BIN), "job", "submit", f"--address={cluster.dashboard_url}",
            f"--working-dir={REPO}", "--",
            *_sweep_cmd("--space", "toy-moons", "--trials", "2", "--workers-per-trial", "1",
                        "--gpu", "--cpus-per-worker", "1", "--smoke-test", "--grace-period", "2",
                        "--storage", str(storage), "--name", "fakegpu", "--cluster-config", str(cluster.config_path),
                        "--cpu-if-no-cuda"),
        ]
        t0 = time.monotonic()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=420)
        log = proc.stdout[-4000:] + proc.stderr[-4000:]
        assert proc.returncode == 0, log
        wall = time.monotonic() - t0

        exp = storage / "fakegpu"
        results = trial_results(exp)
        assert len(results) == 2, log
        for rows in results.values():
            assert [r["epoch"] for r in rows] == [1, 2]  # smoke test: 2 epochs, each reported once
        assert set(trial_statuses(exp).values()) == {"TERMINATED"}

        added = gpu_nodes(cluster.dashboard_url)
        assert len(added) == 1, "the autoscaler should have added exactly one GPU node"
        assert "gpu_worker" in cluster.autoscaler_log()
        head_id = head_node_id(cluster.dashboard_url)
        workers = train_workers(cluster.dashboard_url)
        assert len(workers) == 2 and {w["node_id"] for w in workers} == {added[0]["node_id"]}
        from ray.util.state import list_actors

        every = list_actors(address=cluster.dashboard_url, detail=True, limit=10_000, raise_on_missing_output=False)
        # Tune's function-trainable actor: class wrap_function.<locals>.ImplicitFunc
        drivers = [a for a in every if a.class_name.rsplit(".", 1)[-1] == "ImplicitFunc"]
        assert len(drivers) == 2 and {d.node_id for d in drivers} == {head_id}, \
            [(a.class_name, a.node_id == head_id) for a in every]
    print(f"sweep job on the fake cluster: {wall:.0f} s")


# ---- fault tolerance --------------------------------------------------------------------------

TINY_SPACE = {
    "name": "tiny-moons",
    "description": "fault tests: a tiny i-DenseNet on two moons",
    "dataset": "moons",
    "budget": 20000,
    "tolerance": 0.05,
    "model": {"family": "idensenet", "blocks_per_scale": [2], "actnorm": False, "fc_blocks": 0,
              "learnable_concat": True},
    "search": {"depth": {"choices": [2, 3]}, "activation": "lipswish",
               "lr": {"low": 1.0e-3, "high": 3.0e-3, "log": True}},
    "train": {"batch_size": 200, "epochs": 4, "steps_per_epoch": 10, "test_size": 500},
    "baselines": ["resflow"],
}
CPU_HEAD = {"CPU": 3, "trial_driver": 1000}


def _space(tmp_path: Path) -> str:
    path = tmp_path / "tiny-moons.yaml"
    path.write_text(yaml.safe_dump(TINY_SPACE, sort_keys=False))
    return str(path)


def _study(exp: Path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from types import SimpleNamespace

    storage = JournalStorage(JournalFileBackend(str(exp / "optuna.journal")))
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))  # <name>, <name>/baselines
    return SimpleNamespace(trials=[t for n in reversed(names) for t in optuna.load_study(study_name=n, storage=storage).trials])


def _epochs(rows: list[dict]) -> list[int]:
    return [int(r["epoch"]) for r in rows]


def _reference(run: dict) -> tuple[list[dict], dict]:
    """An uninterrupted run of the same run config, in this process (Train's local mode): its epoch
    reports and its final checkpoint state."""
    import shutil
    import tempfile

    import ray.train
    import torch
    from ray.train.torch import TorchTrainer

    from sweeper.checkpoint import load_state
    from sweeper.worker import train_loop_per_worker

    reports, saved = [], tempfile.mkdtemp(prefix="idn-ref-")
    original = ray.train.report

    def recording(metrics, checkpoint=None, **kw):
        reports.append(dict(metrics))
        if checkpoint is not None:
            shutil.rmtree(saved, ignore_errors=True)
            shutil.copytree(checkpoint.path, saved)
        return original(metrics, checkpoint=checkpoint, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ray.train, "report", recording)
        torch.set_num_threads(1)
        TorchTrainer(train_loop_per_worker, train_loop_config={"run": run},
                     scaling_config=ray.train.ScalingConfig(num_workers=0)).fit()
    return reports, load_state(saved)


def _same_trajectory(rows: list[dict], reference: list[dict]) -> None:
    by_epoch = {int(r["epoch"]): r for r in rows}  # a repeated epoch: the newest report
    assert sorted(by_epoch) == [int(r["epoch"]) for r in reference]
    for ref in reference:
        got = by_epoch[int(ref["epoch"])]
        for key in ("val_score", "test_score", "train_loss"):
            assert got[key] == pytest.approx(ref[key], abs=1e-6), (ref["epoch"], key)
        assert got["iterations"] == ref["iterations"]


def _same_optimiser(state: dict, ref: dict) -> None:
    import torch

    assert state["step"]["iteration"] == ref["step"]["iteration"]
    opt, ref_opt = state["step"]["optimizer"]["state"], ref["step"]["optimizer"]["state"]
    assert opt.keys() == ref_opt.keys()
    for k in ref_opt:
        assert float(opt[k]["step"]) == float(ref_opt[k]["step"]) == ref["step"]["iteration"]
        for name in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(opt[k][name], ref_opt[k][name], rtol=1e-5, atol=1e-8)


@pytest.mark.slow
@pytest.mark.ray
def test_killed_worker_resumes_its_trajectory_from_its_checkpoint(tmp_path: Path, ray_env) -> None:
    """SIGKILL the trial's training worker after its second checkpoint: Train restarts the worker
    group (FailureConfig max_failures=1), which resumes from the latest registered checkpoint (not
    from a newer, half-written folder planted beside it). At most one epoch is trained twice, and the
    scores, losses and the optimiser's state are those of an uninterrupted run of the same config."""
    from sweeper.checkpoint import load_state

    epochs = 8
    storage = tmp_path / "runs"
    exp = storage / "wkill"
    with fake_cluster(head_resources=CPU_HEAD, worker_types={}) as cluster:
        sweep = subprocess.Popen(
            _sweep_cmd("--space", _space(tmp_path), "--trials", "1", "--epochs", str(epochs),
                       "--storage", str(storage), "--name", "wkill", "--grace-period", str(epochs)),
            env=cluster.subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        try:
            # Kill once epoch 2 is checkpointed, so that a restart from scratch (not from the
            # checkpoint) would report at least two epochs twice.
            assert wait_for(lambda: newest_checkpoint_epoch(exp) >= 2, 180, 0.1), "no epoch 2"
            alive = [w for w in train_workers(cluster.dashboard_url) if w["state"] == "ALIVE"]
            assert len(alive) == 1
            victim = int(alive[0]["pid"])
            (ckpts,) = [c for c in train_checkpoints(exp).values() if c]
            # A crash mid-upload leaves a folder that sorts after every real checkpoint; the restart
            # must take the latest *registered* one (this one would fail to load).
            planted = ckpts[-1].parent / "checkpoint_2999-01-01_00-00-00.000000"
            planted.mkdir()
            (planted / "state.pt").write_bytes(b"PK\x03\x04 truncated")
            reported_before = newest_checkpoint_epoch(exp)
            os.kill(victim, signal.SIGKILL)
            out, _ = sweep.communicate(timeout=240)
        finally:
            if sweep.poll() is None:
                sweep.kill()
        assert sweep.returncode == 0, out[-4000:]
        workers = train_workers(cluster.dashboard_url)

    assert 2 <= reported_before < epochs, "the worker was killed only after the run had ended"
    (rows,) = trial_results(exp).values()
    seen = _epochs(rows)
    assert seen[-1] == epochs and sorted(set(seen)) == list(range(1, epochs + 1))
    assert sum(n - 1 for n in Counter(seen).values()) <= 1, f"lost more than one epoch: reported epochs {seen}"
    dead = [w for w in workers if int(w["pid"]) == victim]  # the kill really happened
    assert dead and dead[0]["state"] == "DEAD" and len(workers) == 2
    (trial_dir,) = exp.glob("trial_*")
    run = json.loads((trial_dir / "params.json").read_text())["run"]
    reference, ref_state = _reference(run)
    _same_trajectory(rows, reference)
    final = max((c for c in train_checkpoints(exp)[rows[0]["trial_id"]] if (c / "state.pt").is_file()
                 and c.name != planted.name), key=lambda c: load_state(c)["epoch"])
    _same_optimiser(load_state(final), ref_state)
    print(f"worker killed after checkpointed epoch {reported_before}; reported epochs {seen}")


@pytest.mark.slow
@pytest.mark.ray
def test_sweep_on_s3_survives_a_killed_driver_and_a_new_head(tmp_path: Path, ray_env, monkeypatch) -> None:
    """A sweep on S3 (a real S3-protocol server on loopback). While it runs, ``results`` (with
    ``--plots`` every few polls) reads it over and over on the same head, and a second driver is
    refused. Then SIGKILL ``idensenet sweep`` once one trial has finished and another has checkpointed
    its last epoch; wipe the local state (a new HOME, no staging folder); ``--resume`` takes the dead
    driver's lease over and finishes the sweep while ``results`` keeps polling. No poll raises; no
    finished trial trains again; every epoch a trial reported is in the results table with its score and
    in the Optuna study (read back from S3 with Optuna's own API) as the same intermediate value, under
    unique trial numbers; every trial's table status is the ending the study recorded (COMPLETE with
    its best epoch, or PRUNED); ``best`` and ``train`` work on S3."""
    import optuna

    from sweeper.cli import main
    from sweeper.search import latest_by_tune_id
    from sweeper.settings import SweepSettings
    from sweeper.storage import locate

    epochs = TINY_SPACE["train"]["epochs"]
    polls: list[float] = []

    def poll() -> None:  # what a researcher runs on the head while the sweep goes on; must never raise
        t0 = time.perf_counter()
        args = ["results", f"{uri}/s3kill"] + (["--plots"] if len(polls) % 5 == 4 else [])
        assert main(args) == 0
        polls.append(time.perf_counter() - t0)
        time.sleep(0.5)

    with s3_server() as s3, fake_cluster(head_resources=CPU_HEAD, worker_types={},
                                          env={k: v for k, v in s3.items() if k != "bucket"}) as cluster:
        uri = f"s3://{s3['bucket']}/runs"
        env = {**cluster.subprocess_env(), **{k: v for k, v in s3.items() if k != "bucket"}}
        home1, home2 = tmp_path / "home1", tmp_path / "home2"
        home1.mkdir(), home2.mkdir()
        monkeypatch.setenv("HOME", str(home1))  # the polls run on the first driver's head
        args = ["--space", _space(tmp_path), "--trials", "4", "--max-concurrent", "2", "--storage", uri,
                "--name", "s3kill", "--grace-period", "1", "--reduction-factor", "2"]
        exp = locate(f"{uri}/s3kill")
        sweep = subprocess.Popen(_sweep_cmd(*args), env={**env, "HOME": str(home1)}, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        try:
            def last_epochs() -> dict[str, int]:
                return _s3_checkpoint_epochs(exp)

            assert wait_for(lambda: exp.join("driver.lease").is_file(), 120, 0.5)
            second = subprocess.run(_sweep_cmd("--storage", uri, "--name", "s3kill", "--resume"),
                                    env={**env, "HOME": str(home2)}, capture_output=True, text=True, timeout=120)
            assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr[-2000:]
            assert "is being run by another driver" in second.stderr
            # two trials with their last epoch checkpointed, then a moment for Tune to take in the first
            deadline = time.time() + 300
            while sum(e == epochs for e in last_epochs().values()) < 2:
                assert time.time() < deadline and sweep.poll() is None, last_epochs()
                poll()
            time.sleep(3)
            before = _s3_histories(exp)
            os.kill(sweep.pid, signal.SIGKILL)
            sweep.wait(timeout=30)
        finally:
            if sweep.poll() is None:
                sweep.kill()
        finished_before = [t for t, h in before.items() if h and h[-1]["epoch"] == epochs]
        ckpts_before = {t: _s3_checkpoints(exp, t) for t in finished_before}
        assert len(finished_before) >= 2
        # the local state is gone: a new home, and no Tune staging folder on this machine
        for staging in cluster.temp_dir.rglob("s3kill"):
            if staging.is_dir():
                import shutil

                shutil.rmtree(staging, ignore_errors=True)
        resume = subprocess.Popen(_sweep_cmd("--storage", uri, "--name", "s3kill", "--resume"),
                                  env={**env, "HOME": str(home2)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True)
        try:
            while resume.poll() is None or len(polls) < 50:
                poll()
            out = resume.communicate(timeout=420)[0]
        finally:
            if resume.poll() is None:
                resume.kill()
        assert resume.returncode == 0, out[-4000:]
        assert "taking over" in out and "its process is gone" in out, out[-3000:]
        for t in finished_before:  # no finished trial trained again: no new checkpoint (Ray may still
            after = _s3_checkpoints(exp, t)  # prune one it kept past num_to_keep when the driver was killed)
            assert set(after) <= set(ckpts_before[t]) and max(after) == max(ckpts_before[t]), (
                t, ckpts_before[t], after, out[-3000:])

        from sweeper.table import results_table

        df = results_table(exp).set_index("trial")
        assert len(df) == 4 and set(df["status"]) <= {"finished", "stopped (ASHA)"}
        settings = SweepSettings.load(exp)
        study_file = tmp_path / "study.journal"
        study_file.write_bytes(locate(settings.journal).read_bytes())
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(study_file)))
        searched = optuna.load_study(study_name="s3kill", storage=storage).trials
        baselines = optuna.load_study(study_name="s3kill/baselines", storage=storage).trials
        for trials in (searched, baselines):
            numbers = [t.number for t in trials]
            assert len(numbers) == len(set(numbers))
        assert all(t.user_attrs["role"] == "control" for t in baselines) and all(t.params for t in searched)
        by_id = latest_by_tune_id(searched + baselines)
        # a proposal asked just before the kill but missing from Tune's snapshot belongs to no trial: FAIL
        orphans = [t for tid, t in by_id.items() if tid not in df.index]
        assert set(df.index) <= set(by_id) and all(t.state.name == "FAIL" and t.value is None for t in orphans)
        for tid, history in before.items():  # every epoch checkpointed before the kill is everywhere
            row, trial = df.loc[tid], by_id[tid]
            assert row["epochs_run"] >= history[-1]["epoch"]
            for h in history:
                assert trial.intermediate_values[h["epoch"]] == pytest.approx(h["val_score"])
            assert row["best_val"] <= min(h["val_score"] for h in history) + 1e-12
        curves = results_table(exp).attrs["curves"]
        for tid, row in df.iterrows():  # every reported epoch, the same value in the table and the study
            trial = by_id[tid]
            assert trial.intermediate_values == pytest.approx(dict(curves[tid])), tid
            assert trial.user_attrs["ending"] == row["status"], (tid, row["status"], trial.user_attrs)
            assert trial.state.name == ("COMPLETE" if row["status"] == "finished" else "PRUNED"), tid
            if row["status"] == "finished":
                assert trial.value == pytest.approx(row["best_val"])
        for tid in finished_before:
            row = df.loc[tid]
            assert row["status"] == "finished" or (row["role"] != "control" and row["status"] == "stopped (ASHA)")
        assert not exp.join("driver.lease").exists()  # released when the resumed driver ended
        best = tmp_path / "best.yaml"
        code = subprocess.run(_cli("best", f"{uri}/s3kill", "--out", str(best)), env={**env, "HOME": str(home2)},
                              capture_output=True, text=True, timeout=120)
        assert code.returncode == 0, code.stderr[-2000:]
        doc = yaml.safe_load(best.read_text())
        top = doc["configs"][0]
        assert top["val_score"] == pytest.approx(df["best_val"].min()) and top["checkpoint"].startswith("s3://")
        meta = json.loads(locate(top["checkpoint"]).join("meta.json").read_text())
        assert meta["epoch"] == top["best_epoch"] and meta["history"][-1]["val_score"] == pytest.approx(top["val_score"])
        assert meta["history"][-1]["test_score"] == pytest.approx(top["test_score"])
        full = subprocess.run(_cli("train", "--config", str(best), "--epochs", "1", "--storage", uri, "--name", "full"),
                              env={**env, "HOME": str(home2)}, capture_output=True, text=True, timeout=300)
        assert full.returncode == 0, full.stdout[-3000:] + full.stderr[-3000:]
        assert locate(f"{uri}/full/density.png").is_file()
    print(f"killed with {finished_before} at their last epoch; resumed statuses {dict(df['status'])}; "
          f"{len(polls)} polls of results, median {sorted(polls)[len(polls) // 2]:.2f} s")


@pytest.mark.slow
@pytest.mark.ray
def test_resume_after_a_kill_mid_upload_trains_on_from_the_last_complete_checkpoint(tmp_path: Path, ray_env) -> None:
    """Checkpoints upload in Ray's background thread while the next epoch trains
    (``sweeper.worker.UPLOAD_MODE``). A one-trial sweep on S3 (moto on loopback) whose checkpoints each
    carry 512 MiB more, so an upload lasts long enough to be caught: once a checkpoint folder is on S3
    but incomplete (its meta.json lists a file that is missing or short) while an earlier one is
    complete and registered (Train's checkpoint-manager snapshot lists it; Tune's snapshot holds the
    trial, so that the resume restores it rather than proposing afresh), SIGKILL the training worker
    (the process uploading) and the driver; then ``--resume``.
    The resumed run trains on from that checkpoint: its first reported epoch is the one
    after it (not epoch 1: not from scratch; not later: not from the torn folder), the final checkpoint
    holds every epoch once, and the scores are those of an uninterrupted run of the same config."""
    import re

    from sweeper.run_reader import saved_checkpoints
    from sweeper.storage import locate

    epochs = 8
    with s3_server() as s3, fake_cluster(head_resources=CPU_HEAD, worker_types={},
                                          env={k: v for k, v in s3.items() if k != "bucket"}) as cluster:
        uri = f"s3://{s3['bucket']}/runs"
        env = {**cluster.subprocess_env(), **{k: v for k, v in s3.items() if k != "bucket"}}
        exp = locate(f"{uri}/upkill")
        args = ["--space", _space(tmp_path), "--trials", "1", "--epochs", str(epochs), "--storage", uri,
                "--name", "upkill", "--grace-period", str(epochs), "--inject-checkpoint-mb", "512"]
        sweep = subprocess.Popen(_sweep_cmd(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True)
        try:
            assert wait_for(lambda: any(w["state"] == "ALIVE" for w in train_workers(cluster.dashboard_url)),
                            180, 0.5), "no training worker"
            (worker,) = [w for w in train_workers(cluster.dashboard_url) if w["state"] == "ALIVE"]
            torn, done = None, []
            deadline = time.time() + 300
            while torn is None:
                assert time.time() < deadline and sweep.poll() is None, "no upload caught in flight"
                runs = exp.join("train_runs")
                for name in (runs.children() if runs.is_dir() else []):
                    run = runs.join(name)
                    folders = [n for n in run.children() if n.startswith("checkpoint_2")]  # checkpoint_<date>
                    done = saved_checkpoints(run)
                    in_flight = sorted(set(folders) - {c.location.name for c in done})
                    tid = name[len("train-"):]
                    if (done and in_flight and in_flight[-1] > done[-1].location.name
                            and _registered(run, done[-1].location.name)  # Train's snapshot lists it
                            and tid in _s3_tune_trials(exp)  # a trial Tune's snapshot knows, so resumed
                            and _early_in_upload(s3, run.join(in_flight[-1]))):
                        torn = run.join(in_flight[-1])
                        os.kill(int(worker["pid"]), signal.SIGKILL)
                        os.kill(sweep.pid, signal.SIGKILL)
                        break
                time.sleep(0.05)
            sweep.wait(timeout=30)
        finally:
            if sweep.poll() is None:
                sweep.kill()
        last_complete = done[-1].epoch
        time.sleep(2)
        assert torn.name not in {c.location.name for c in saved_checkpoints(run)}, "the upload had finished"
        assert 1 <= last_complete < epochs
        resume = subprocess.run(_sweep_cmd("--storage", uri, "--name", "upkill", "--resume"), env=env,
                                capture_output=True, text=True, timeout=420)
        assert resume.returncode == 0, resume.stdout[-4000:] + resume.stderr[-2000:]
        resumed_epochs = [int(m) for m in re.findall(rf"{tid} epoch (\d+)/{epochs} ", resume.stdout)]
        assert resumed_epochs and resumed_epochs[0] == last_complete + 1, (last_complete, resume.stdout[-3000:])
        final = saved_checkpoints(run)[-1]
        assert [h["epoch"] for h in final.history] == list(range(1, epochs + 1))
        run_config = json.loads(final.location.join("meta.json").read_text())["run"]
    reference, _ = _reference(run_config)
    _same_trajectory(final.history, reference)
    print(f"killed with epoch {last_complete} complete and {torn.name} in flight; "
          f"resumed at epoch {resumed_epochs[0]}")


def _early_in_upload(s3: dict[str, str], folder) -> bool:
    """Whether a multipart upload into ``folder`` is under way with parts still to send (fewer than the
    injected 512 MiB on the server). Once every part is in, the client sends the completion request,
    and a kill after that lands while the server assembles the object, which then appears anyway."""
    import boto3

    client = boto3.client("s3", endpoint_url=s3["AWS_ENDPOINT_URL"])
    prefix = folder.path.split("/", 1)[1] + "/"
    uploads = client.list_multipart_uploads(Bucket=s3["bucket"], Prefix=prefix).get("Uploads", [])
    sent = sum(part["Size"] for u in uploads
               for part in client.list_parts(Bucket=s3["bucket"], Key=u["Key"], UploadId=u["UploadId"]).get("Parts", []))
    return bool(uploads) and sent < 512 << 20


def _registered(run, folder: str) -> bool:
    """Whether Ray Train's checkpoint-manager snapshot of ``run`` lists ``folder`` (a complete upload
    is registered, and so resumed from, a moment after it lands)."""
    snap = run.join("checkpoint_manager_snapshot.json")
    try:
        return snap.is_file() and folder in snap.read_text()
    except OSError:  # being rewritten right now
        return False


def _s3_tune_trials(exp) -> set[str]:
    """Trial ids in the newest Tune experiment snapshot on S3 (what ``--resume`` restores)."""
    snaps = sorted(n for n in exp.children() if n.startswith("experiment_state-") and n.endswith(".json"))
    if not snaps:
        return set()
    try:
        state = json.loads(exp.join(snaps[-1]).read_text())
    except (OSError, ValueError):  # being rewritten right now
        return set()
    return {str((json.loads(t) if isinstance(t, str) else t)["trial_id"]) for t, _ in state.get("trial_data", [])}


def _cli(*args: str) -> list[str]:
    return [str(RAY_BIN.with_name("idensenet")), *args]


def _s3_checkpoints(exp, trial_id: str) -> list[str]:
    return [n for n in exp.join("train_runs", f"train-{trial_id}").children() if n.startswith("checkpoint_2")]


def _s3_checkpoint_epochs(exp) -> dict[str, int]:
    """Trial id -> the newest epoch its Train run has checkpointed on S3."""
    return {t: (h[-1]["epoch"] if h else 0) for t, h in _s3_histories(exp).items()}


def _s3_histories(exp) -> dict[str, list[dict]]:
    """Trial id -> the epoch reports in its Train run's newest complete checkpoint on S3."""
    from sweeper.run_reader import checkpointed_history

    return {run[len("train-"):]: checkpointed_history(exp.join("train_runs", run))
            for run in exp.join("train_runs").children()}


# ---- atomic checkpoint files (sweeper/checkpoint.py) -------------------------------------------


def _state(epoch: int) -> dict:
    import torch

    return {"epoch": epoch, "model": {"w": torch.full((64, 64), float(epoch))}}


def test_crash_mid_write_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    """A write that dies after some bytes (here: torch.save raises half-way) leaves the previous
    state.pt intact and loadable, and no temporary file behind."""
    import torch

    from sweeper import checkpoint as ck

    ck.save_checkpoint(tmp_path, 0, _state(1), ck.capture_rng(), {"epoch": 1})
    real_save = torch.save

    def dying_save(obj, f, *a, **k):
        f.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError):
        ck.save_checkpoint(tmp_path, 0, _state(2), ck.capture_rng(), {"epoch": 2})
    monkeypatch.setattr(torch, "save", real_save)
    state = ck.load_state(tmp_path)
    assert state["epoch"] == 1 and float(state["model"]["w"][0, 0]) == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [ck.STATE_FILE, ck.META_FILE, ck.rng_file(0)]
    )


def test_killed_writer_leaves_only_an_ignored_temp_file(tmp_path: Path) -> None:
    """A process SIGKILLed in the middle of writing (after the bytes, before the rename) leaves a
    hidden temp file; readers still get the previous complete state.pt, never the partial one."""
    import sys

    from sweeper import checkpoint as ck

    ck.save_checkpoint(tmp_path, 0, _state(1), ck.capture_rng(), {"epoch": 1})
    script = (
        "import os, signal, sys, torch\n"
        "from sweeper import checkpoint as ck\n"
        "real = os.replace\n"
        "def die(src, dst):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "os.replace = die\n"
        f"ck.save_checkpoint({str(tmp_path)!r}, 0, {{'epoch': 2, 'model': {{}}}}, ck.capture_rng())\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers, "the simulated crash should have left the temp file behind"
    assert ck.load_state(tmp_path)["epoch"] == 1
