"""The sweep on a cluster, simulated on this machine (Ray's fake_multinode provider), and its faults.

* The head mirrors cluster.yaml's head: no CPUs and no GPUs for work, only the ``trial_driver``
  resource that keeps trial drivers on it. GPU nodes exist only once the autoscaler adds them
  because training workers ask for GPUs ("fake" GPUs: the node advertises them, nothing uses CUDA,
  and the harness's shim lets Train's NCCL choice fall back to gloo).
* Fault tests run ``idensenet sweep`` as a subprocess against a private cluster: one kills a
  training worker mid-run, one kills the sweep's driver after its first trial finished, and both
  check from the reported epochs and the experiment snapshot that at most one epoch is lost and no
  finished trial runs again.
* Checkpoint files are written atomically; a half-written checkpoint is never the one resumed from.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from cluster_utils import (
    RAY_BIN, REPO, fake_cluster, gpu_nodes, head_node_id, newest_checkpoint_epoch, train_checkpoints,
    train_workers, trial_results, trial_statuses, wait_for,
)



def _cluster_yaml_head_resources() -> dict[str, int]:
    cfg = yaml.safe_load((REPO / "cluster.yaml").read_text())
    return dict(cfg["available_node_types"][cfg["head_node_type"]]["resources"])


@pytest.fixture()
def ray_env(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")


# ---- the real sweep, submitted as a Ray job the way the README ("On a cluster") does it ---------------------


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
                        "--storage", str(storage), "--name", "fakegpu"),
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

    storage = JournalStorage(JournalFileBackend(str(exp / "optuna.journal")))
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage)


def _epochs(rows: list[dict]) -> list[int]:
    return [int(r["epoch"]) for r in rows]


@pytest.mark.slow
@pytest.mark.ray
def test_killed_worker_resumes_from_its_checkpoint(tmp_path: Path, ray_env) -> None:
    """SIGKILL the trial's training worker after its first checkpoint: Train restarts the worker
    group (FailureConfig max_failures=1), which resumes from the latest registered checkpoint (not
    from a newer, half-written folder planted beside it) and reaches the last epoch. At most one
    epoch is trained twice."""
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
    repeated = sum(n - 1 for n in Counter(seen).values())
    assert repeated <= 1, f"lost more than one epoch: reported epochs {seen}"
    # the kill really happened and a new worker took over
    dead = [w for w in workers if int(w["pid"]) == victim]
    assert dead and dead[0]["state"] == "DEAD"
    assert len(workers) == 2
    print(f"worker killed after checkpointed epoch {reported_before}; reported epochs {seen}")


@pytest.mark.slow
@pytest.mark.ray
def test_killed_sweep_driver_resumes_without_rerunning_finished_trials(tmp_path: Path, ray_env) -> None:
    """SIGKILL ``idensenet sweep`` once its first trial is TERMINATED in the experiment snapshot;
    ``idensenet sweep --resume`` finishes the sweep. The finished trial reports nothing new and its
    Train run writes no new checkpoint; the other one ends at its last epoch, training at most one
    epoch twice."""
    storage = tmp_path / "runs"
    exp = storage / "dkill"
    args = ["--space", _space(tmp_path), "--trials", "2", "--max-concurrent", "1",
            "--storage", str(storage), "--name", "dkill", "--grace-period", "4"]
    with fake_cluster(head_resources=CPU_HEAD, worker_types={}) as cluster:
        env = cluster.subprocess_env()
        sweep = subprocess.Popen(_sweep_cmd(*args), env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        try:
            def first_finished() -> str | None:
                done = [t for t, st in trial_statuses(exp).items() if st == "TERMINATED"]
                return done[0] if done else None

            assert wait_for(first_finished, 240, 0.2), "no trial finished"
            finished = first_finished()
            os.kill(sweep.pid, signal.SIGKILL)
            sweep.wait(timeout=30)
        finally:
            if sweep.poll() is None:
                sweep.kill()
        before = trial_results(exp)
        ckpts_before = train_checkpoints(exp)
        assert _epochs(before[finished]) == [1, 2, 3, 4]

        resume = subprocess.run(_sweep_cmd("--storage", str(storage), "--name", "dkill", "--resume"),
                                env=env, capture_output=True, text=True, timeout=300)
        assert resume.returncode == 0, resume.stdout[-4000:] + resume.stderr[-4000:]

    after = trial_results(exp)
    assert len(after) == 2 and finished in after
    assert after[finished] == before[finished]  # the finished trial did not run again
    assert train_checkpoints(exp)[finished] == ckpts_before[finished]
    assert set(trial_statuses(exp).values()) == {"TERMINATED"}
    (other,) = set(after) - {finished}
    seen = _epochs(after[other])
    assert seen[-1] == 4 and sorted(set(seen)) == [1, 2, 3, 4]
    # the interrupted trial resumed from its last checkpoint: at most the epoch that was running
    # when the driver died is trained again
    assert sum(n - 1 for n in Counter(seen).values()) <= 1, seen
    # the Optuna study (a journal beside the experiment) survived the kill and holds every trial once
    study = _study(exp)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert sorted(t.user_attrs["tune_trial_id"] for t in complete) == sorted(after)
    assert not [t for t in study.trials if t.state.name == "RUNNING"]
    print(f"driver killed with trial {other} at epoch {max(_epochs(before.get(other, [])), default=0)}; "
          f"its reported epochs {seen}; finished trial {finished}: {_epochs(after[finished])}")


# ---- atomic checkpoint files (sweeper/checkpointing.py) -------------------------------------------


def _state(epoch: int) -> dict:
    import torch

    return {"epoch": epoch, "model": {"w": torch.full((64, 64), float(epoch))}}


def test_crash_mid_write_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    """A write that dies after some bytes (here: torch.save raises half-way) leaves the previous
    state.pt intact and loadable, and no temporary file behind."""
    import torch

    from sweeper import checkpointing as ck

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

    from sweeper import checkpointing as ck

    ck.save_checkpoint(tmp_path, 0, _state(1), ck.capture_rng(), {"epoch": 1})
    script = (
        "import os, signal, sys, torch\n"
        "from sweeper import checkpointing as ck\n"
        "real = os.replace\n"
        "def die(src, dst):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "os.replace = die\n"
        f"ck.save_checkpoint({str(tmp_path)!r}, 0, {{'epoch': 2, 'model': {{}}}}, ck.capture_rng())\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(f".{ck.STATE_FILE}.")]
    assert leftovers, "the simulated crash should have left the temp file behind"
    assert ck.load_state(tmp_path)["epoch"] == 1
