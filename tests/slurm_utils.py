"""A real single-node Slurm for tests: ``munged``, ``slurmctld`` and ``slurmd`` (Debian's ``slurm-wlm``
and ``munge``) with their configuration, key, sockets, state and logs under one temporary folder, on
ports of their own, stopped (and waited for) when the block ends. Needs root, as the daemons run as
``root`` and ``munge``; :func:`slurm_missing` says why it cannot start here, for a skip."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

from cluster_utils import free_port

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sinfo")


def slurm_missing() -> str | None:
    """Why a Slurm cannot be started here (None: it can)."""
    missing = [b for b in BINARIES if not shutil.which(b) and not Path("/usr/sbin", b).exists()]
    if missing:
        return f"Slurm is not installed ({', '.join(missing)} missing; apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "the Slurm fixture runs slurmd as root"
    return None


def _binary(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _stop(pidfile: Path) -> None:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, 15)
    except ProcessLookupError:
        return
    end = time.time() + 20
    while time.time() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 9)


@contextlib.contextmanager
def slurm_cluster(cpus: int | None = None) -> Iterator[dict[str, str]]:
    """A single-node cluster under a new folder of /tmp (every path to munge's socket must be
    searchable by the ``munge`` user, which pytest's own temporary folders are not); yields the
    environment (``SLURM_CONF``) its clients need, and removes the folder afterwards."""
    root = Path(tempfile.mkdtemp(prefix="idensenet-slurm-", dir="/tmp"))
    os.chmod(root, 0o755)
    munge = root / "munge"
    for d in ("state", "spool", "log", "munge/run", "munge/lib", "munge/log"):
        (root / d).mkdir(parents=True, exist_ok=True)
    key = munge / "munge.key"
    key.write_bytes(os.urandom(1024))
    shutil.chown(str(munge), "munge", "munge")
    for p in munge.rglob("*"):
        shutil.chown(str(p), "munge", "munge")
    os.chmod(key, 0o400)
    os.chmod(munge, 0o755)
    os.chmod(munge / "run", 0o755)
    sock = munge / "run" / "munge.socket"
    host = socket.gethostname()
    cpus = cpus or os.cpu_count() or 1
    memory_mb = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.8)
    conf = root / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=idensenettest", f"SlurmctldHost={host}", "SlurmUser=root", "SlurmdUser=root",
        "AuthType=auth/munge", f"AuthInfo=socket={sock}", f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}", f"SlurmctldPidFile={root / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'slurmd.pid'}", f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'log' / 'slurmd.log'}", f"SlurmctldPort={free_port()}", f"SlurmdPort={free_port()}",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core", "ReturnToService=2", "MpiDefault=none",
        "JobAcctGatherType=jobacct_gather/none", "JobRequeue=1", "KillWait=30",
        f"NodeName={host} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN",
        f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP", "",
    ]))
    env = {"SLURM_CONF": str(conf)}
    daemon_env = {**os.environ, **env}
    subprocess.run(["su", "-s", "/bin/sh", "munge", "-c",
                    f"{_binary('munged')} --key-file={key} --socket={sock} --pid-file={munge / 'run' / 'munged.pid'} "
                    f"--log-file={munge / 'log' / 'munged.log'} --seed-file={munge / 'lib' / 'munged.seed'}"],
                   check=True, timeout=30)
    try:
        subprocess.run([_binary("slurmctld")], env=daemon_env, check=True, timeout=30)
        subprocess.run([_binary("slurmd")], env=daemon_env, check=True, timeout=30)
        end = time.time() + 60
        while True:
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=daemon_env, capture_output=True, text=True).stdout
            if out.strip() in ("idle", "mixed"):
                break
            if time.time() > end:
                raise RuntimeError(f"the Slurm node did not become idle (sinfo: {out.strip()!r}); logs in {root / 'log'}")
            time.sleep(0.5)
        yield env
    finally:
        subprocess.run(["scancel", "--full", "--user=root"], env=daemon_env, capture_output=True, timeout=30)
        _stop(root / "slurmd.pid")
        _stop(root / "slurmctld.pid")
        _stop(munge / "run" / "munged.pid")
        shutil.rmtree(root, ignore_errors=True)


def job_state(env: dict[str, str], job: str) -> str:
    """The job's state as ``scontrol`` reports it (e.g. RUNNING, PENDING, COMPLETED); empty once forgotten."""
    out = subprocess.run(["scontrol", "show", "job", job], env={**os.environ, **env}, capture_output=True,
                         text=True).stdout
    for word in out.split():
        if word.startswith("JobState="):
            return word.split("=", 1)[1]
    return ""
