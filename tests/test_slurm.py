"""The shipped Slurm batch script (deploy/slurm/sweep.sbatch) against a real single-node Slurm
(tests/slurm_utils.py): a sweep submitted with ``sbatch`` starts its own Ray head, runs, writes its
table and stops Ray; a sweep asked to stop mid-way (``scancel --signal=USR1 --batch``, the signal
``--signal=B:USR1@300`` sends before a time limit) stops cleanly, requeues its job, and the requeued
job resumes it without losing a reported epoch. Skipped, with the reason, where Slurm is missing."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cluster_utils import REPO, wait_for
from slurm_utils import job_state, slurm_cluster, slurm_missing

pytestmark = [pytest.mark.slow, pytest.mark.skipif(slurm_missing() is not None, reason=slurm_missing() or "")]

SCRIPT = REPO / "deploy" / "slurm" / "sweep.sbatch"
SPACE = {
    "name": "slurm-moons", "dataset": "moons", "budget": 3000, "tolerance": 0.05,
    "model": {"family": "idensenet", "blocks_per_scale": [2], "actnorm": False, "fc_blocks": 0},
    "search": {"depth": {"choices": [2, 3]}, "lr": {"low": 1.0e-3, "high": 3.0e-3, "log": True}},
    "train": {"batch_size": 200, "epochs": 2, "steps_per_epoch": 10, "test_size": 500},
}


@pytest.fixture(scope="module")
def slurm():
    with slurm_cluster() as env:
        yield env


def _env(slurm: dict[str, str], home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "SLURM_"))}
    env.update(slurm, HOME=str(home), RAY_AUTH_MODE="disabled", RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S="60",
               PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}")
    env.pop("IDENSENET_RAY_PORT", None)  # the script's own choice: below the ephemeral range, checked free
    return env


def _submit(env: dict[str, str], work: Path, *args: str, hold: bool = False) -> str:
    proc = subprocess.run(["sbatch", "--parsable", "--cpus-per-task=2", f"--chdir={work}", f"--output={work}/job-%j.out",
                           *(["--hold"] if hold else []), str(SCRIPT), *args],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split(";")[0]


def _output(work: Path, job: str) -> str:
    path = work / f"job-{job}.out"
    return path.read_text(errors="replace") if path.is_file() else ""


def _ray_port(out: str) -> str:
    """The GCS port the job's Ray head was started on (the last block it tried)."""
    ports = re.findall(r"starting Ray: head at \S+:(\d+)", out)
    assert ports, out[-3000:]
    return ports[-1]


def _ray_left(port: str) -> list[str]:
    """Processes of the job's Ray instance still alive (their command lines name its GCS port)."""
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if f":{port}" in line and "ray" in line]


def _space(work: Path, **train) -> str:
    path = work / "space.yaml"
    path.write_text(yaml.safe_dump({**SPACE, "train": {**SPACE["train"], **train}}))
    return str(path)


def test_the_batch_script_runs_a_sweep_on_its_own_ray_cluster(slurm, tmp_path):
    """Another program holds a port of the job's default block (the raylet's, as an outgoing connection
    from the ephemeral range can): the script sees it before starting Ray, moves to the next block,
    and the sweep runs there. Without the check, ``ray start`` fails after 30 s ("timed out during
    startup")."""
    env = _env(slurm, tmp_path)
    t0 = time.time()
    job = _submit(env, tmp_path, "sweep", "--space", _space(tmp_path), "--trials", "2", "--name", "sl",
                  "--storage", str(tmp_path / "runs"), "--max-concurrent", "1", "--grace-period", "2", hold=True)
    taken = 20000 + 16 * (int(job) % 700) + 7  # the default block's node-manager port
    with socket.socket() as holder:
        holder.bind(("", taken))
        holder.listen()
        subprocess.run(["scontrol", "release", job], env=env, check=True, timeout=30)
        assert wait_for(lambda: job_state(slurm, job) in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), 600, 2), \
            _output(tmp_path, job)[-3000:]
    out = _output(tmp_path, job)
    assert job_state(slurm, job) == "COMPLETED", out[-4000:]
    assert "all 1 node(s) joined the Ray cluster" in out and "sweep finished" in out, out[-3000:]
    used = int(_ray_port(out))
    assert f":{taken}" in out.split("starting Ray")[0] and used > taken and used % 16 == (taken - 7) % 16, out[-3000:]
    from sweeper.table import results_table
    from sweeper.storage import locate

    df = results_table(locate(str(tmp_path / "runs" / "sl")))
    assert len(df) == 2 and set(df["status"]) == {"finished"} and df["best_val"].notna().all()
    port = _ray_port(out)
    assert wait_for(lambda: not _ray_left(port), 60, 1), _ray_left(port)
    print(f"Slurm job {job}: sweep of 2 trials in {time.time() - t0:.0f} s")


def _slurm_view(slurm: dict[str, str], job: str) -> str:
    """What Slurm says of the job and the node, and its daemons' last log lines (for a failure message)."""
    env = {**os.environ, **slurm}
    said = "".join(subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30).stdout
                   for cmd in (["scontrol", "show", "job", job], ["scontrol", "show", "node"]))
    logs = Path(slurm["SLURM_CONF"]).parent / "log"
    for name in ("slurmctld.log", "slurmd.log"):
        if (logs / name).is_file():
            said += f"\n--- {name}\n" + "\n".join((logs / name).read_text(errors="replace").splitlines()[-40:])
    return said


def _reported(exp: Path) -> dict[str, dict[int, float]]:
    """Every epoch score each trial has reported so far: Tune's records and its checkpoints."""
    from sweeper.run_reader import saved_checkpoints
    from sweeper.storage import locate

    out: dict[str, dict[int, float]] = {}
    for trial in exp.glob("trial_*"):
        tid = trial.name[len("trial_"):]
        rows = [json.loads(line) for line in (trial / "result.json").read_text().splitlines() if line.strip()] \
            if (trial / "result.json").is_file() else []
        for ckpt in saved_checkpoints(locate(str(exp / "train_runs" / f"train-{tid}"))):
            rows += ckpt.history
        out[tid] = {int(r["epoch"]): float(r["val_score"]) for r in rows if "epoch" in r}
    return out


def test_a_stopped_job_requeues_itself_and_loses_no_reported_epoch(slurm, tmp_path):
    """USR1 to the batch shell (what ``--signal=B:USR1@300`` sends before the time limit): the sweep
    stops cleanly, the job requeues itself, the next run resumes the sweep; every epoch reported
    before the stop is in the final table and study with the same score."""
    from sweeper.table import results_table
    from sweeper.search import latest_by_tune_id, record_snapshot
    from sweeper.settings import SweepSettings
    from sweeper.storage import locate

    env = _env(slurm, tmp_path)
    exp = tmp_path / "runs" / "rq"
    epochs = 6
    job = _submit(env, tmp_path, "sweep", "--space", _space(tmp_path, epochs=epochs), "--trials", "3", "--name", "rq",
                  "--storage", str(tmp_path / "runs"), "--max-concurrent", "1", "--grace-period", str(epochs))
    assert wait_for(lambda: max((max(v, default=0) for v in _reported(exp).values()), default=0) >= 2, 400, 1), \
        _output(tmp_path, job)[-3000:]
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], env=env, check=True, timeout=30)
    assert wait_for(lambda: "requeuing job" in _output(tmp_path, job), 300, 1), _output(tmp_path, job)[-4000:]
    assert wait_for(lambda: job_state(slurm, job) == "PENDING", 60, 0.5), _output(tmp_path, job)[-4000:]
    before = _reported(exp)
    # Slurm holds a requeued job for about two minutes (BeginTime); the test need not wait for that. It
    # sets that hold when the old run has finished completing, which may be after a first StartTime=now:
    # so the test says it again until the job runs (refused, harmlessly, once it does)
    def restarted() -> bool:
        if "(restart 1)" in _output(tmp_path, job):
            return True
        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], env=env, capture_output=True, timeout=30)
        return False

    assert wait_for(restarted, 300, 5), _output(tmp_path, job)[-3000:] + _slurm_view(slurm, job)
    assert wait_for(lambda: job_state(slurm, job) in ("COMPLETED", "FAILED", "CANCELLED"), 600, 2), \
        _output(tmp_path, job)[-3000:]
    out = _output(tmp_path, job)
    assert job_state(slurm, job) == "COMPLETED", out[-4000:]
    assert "stopping the sweep cleanly" in out and "resuming sweep" in out and "sweep finished" in out, out[-4000:]
    df = results_table(locate(str(exp))).set_index("trial")
    assert len(df) == 3 and set(df["status"]) == {"finished"}, df["status"]
    curves = {tid: dict(pts) for tid, pts in results_table(locate(str(exp))).attrs["curves"].items()}
    with record_snapshot(SweepSettings.load(locate(str(exp)))) as studies:
        latest = latest_by_tune_id([t for study in studies for t in study.get_trials()])
    lost = [(tid, e) for tid, scores in before.items() for e, s in scores.items()
            if curves.get(tid, {}).get(e) != pytest.approx(s) or latest[tid].intermediate_values.get(e) != pytest.approx(s)]
    assert not lost and sum(len(v) for v in before.values()) >= 2, (lost, before)
    print(f"stopped after {sum(len(v) for v in before.values())} reported epochs; resumed and finished")
