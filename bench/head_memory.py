"""What a trial costs the head in memory: its trial driver and its Ray Train controller.

    python -m bench.head_memory [--trials 4] [--concurrent 2] [--epochs 4] [--space demo-moons]
                                [--head-gib 32]

Runs ``idensenet sweep`` (a local Ray instance, CPU) and samples every 0.5 s the memory of each
process on this machine from ``/proc/<pid>/smaps_rollup``: RSS, PSS (shared pages split among the
processes that map them, so PSS adds up across processes) and USS (pages only that process holds).
Processes are grouped by role from their title: the trial driver (Tune's function trainable,
``ray::ImplicitFunc``), the Train controller (``ray::TrainController``), the Train workers
(``ray::RayTrainWorker``: on a cluster.yaml cluster they run on GPU nodes, not the head), the
sweep's own process (the Tune driver) and Ray's system processes. Each process counts with its peak.

On a cluster.yaml head, every running trial holds one driver and one controller; the head also runs
the Tune driver and Ray's system processes once. So the head holds
``(head memory − fixed) / (driver + controller)`` trials at once, with PSS as the per-process
figure (RSS counts every shared library once per process). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROLES = {"ray::ImplicitFunc": "trial_driver", "ray::TrainController": "train_controller",
         "ray::RayTrainWorker": "train_worker"}
SYSTEM = ("gcs_server", "raylet", "dashboard", "log_monitor", "monitor.py", "runtime_env", "ray::DashboardAgent",
          "ray::_AutoscalingCoordinator", "ray::IDLE", "ray::StatusReporter")


def _memory_kib(pid: int) -> dict[str, int] | None:
    """RSS, PSS and USS of one process in KiB (None when it is gone or not readable)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    fields = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            fields[parts[0].rstrip(":")] = int(parts[1])
    return {"rss": fields.get("Rss", 0), "pss": fields.get("Pss", 0),
            "uss": fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)}


def _role(cmdline: str, sweep_pid: int, pid: int) -> str | None:
    if pid == sweep_pid:
        return "tune_driver"
    for prefix, role in ROLES.items():
        if cmdline.startswith(prefix):
            return role
    if any(s in cmdline for s in SYSTEM) and ("ray" in cmdline):
        return "ray_system"
    return None


def _descendants_and_ray(sweep_pid: int) -> dict[int, str]:
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        role = _role(cmd, sweep_pid, pid)
        if role:
            out[pid] = role
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.head_memory", description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="demo-moons")
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--concurrent", type=int, default=2)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--head-gib", type=float, default=32.0, help="the head's memory (default 32: an m5.2xlarge)")
    args = p.parse_args(argv)
    if not Path("/proc/self/smaps_rollup").exists():
        print("bench.head_memory: needs Linux's /proc/<pid>/smaps_rollup", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory() as storage:
        cmd = [sys.executable, "-m", "sweeper.cli", "sweep", "--space", args.space, "--trials", str(args.trials), "--max-concurrent",
               str(args.concurrent), "--epochs", str(args.epochs), "--storage", storage, "--name", "headmem"]
        env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
        sweep = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        peaks: dict[int, tuple[str, dict[str, int]]] = {}
        t0 = time.time()
        while sweep.poll() is None:
            for pid, role in _descendants_and_ray(sweep.pid).items():
                mem = _memory_kib(pid)
                if mem is None:
                    continue
                old = peaks.get(pid, (role, {"rss": 0, "pss": 0, "uss": 0}))[1]
                peaks[pid] = (role, {k: max(old[k], mem[k]) for k in mem})
            time.sleep(0.5)
        seconds = time.time() - t0
    if sweep.returncode != 0:
        print(f"bench.head_memory: the sweep failed (exit {sweep.returncode}): {' '.join(cmd)}", file=sys.stderr)
        return 1

    roles: dict[str, dict] = {}
    for role in ("trial_driver", "train_controller", "train_worker", "tune_driver", "ray_system"):
        mems = [m for r, m in peaks.values() if r == role]
        if mems:
            roles[role] = {"processes": len(mems), **{f"{k}_mib_median": round(statistics.median(m[k] for m in mems) / 1024, 1)
                                                      for k in ("rss", "pss", "uss")},
                           "pss_mib_total": round(sum(m["pss"] for m in mems) / 1024, 1)}
    per_trial = roles["trial_driver"]["pss_mib_median"] + roles["train_controller"]["pss_mib_median"]
    fixed = roles["tune_driver"]["pss_mib_total"] + roles.get("ray_system", {}).get("pss_mib_total", 0.0)
    print(json.dumps({
        "sweep": " ".join(cmd[3:]).replace(storage, "TMP"), "seconds": round(seconds, 1), "roles": roles,
        "per_trial_pss_mib": round(per_trial, 1), "fixed_pss_mib": round(fixed, 1),
        "trials_per_gib": round(1024 / per_trial, 2),
        "head_gib": args.head_gib, "trials_on_head": int((args.head_gib * 1024 - fixed) // per_trial),
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
