"""A private autoscaling Ray cluster on this machine, for tests (Ray's ``fake_multinode`` provider).

:func:`fake_cluster` starts a head with ``ray start --head`` on its own ports and its own short
temp folder, with an autoscaler whose node provider starts extra raylets on this machine when
demand asks for them ("fake GPUs": the node advertises GPUs it does not have). It never runs
``ray stop``: :meth:`FakeCluster.shutdown` kills exactly the processes whose command line names this
cluster's temp folder, GCS address or config file, so other Ray instances on the machine survive.

Recipe and traps: the config is complete (the wheel lacks the provider's
example.yaml), the head type is called ``ray.head.default``, ``RAY_FAKE_CLUSTER=1`` and
``AUTOSCALER_UPDATE_INTERVAL_S=1`` are in the head's environment (the autoscaler and the nodes it
launches inherit it), and the provider is told the head's GCS address (it assumes port 6379).
Two more, found here and fixed by a ``sitecustomize`` shim on the cluster's ``PYTHONPATH``
(:data:`FAKE_CLUSTER_SHIM`): Train's NCCL backend cannot start on fake GPUs (gloo is used instead),
and fake nodes would share the head's temp folder (each gets its own, as real machines have).
``ray start`` writes its address file into the private temp folder, so other Ray users on this
machine never join the fake cluster by accident; ``RAY_ADDRESS`` is never set in the test process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
HEAD_TYPE = "ray.head.default"  # the fake provider hard-codes this name for its head
RAY_BIN = Path(sys.executable).with_name("ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def node_ip() -> str:
    import ray._private.services

    return ray._private.services.get_node_ip_address()


def fake_cluster_config(
    gcs_address: str,
    head_resources: Mapping[str, int],
    worker_types: Mapping[str, Mapping[str, Any]],
    max_workers: int = 2,
    idle_timeout_minutes: float = 0.2,
) -> dict[str, Any]:
    """A complete ``fake_multinode`` cluster config. ``worker_types`` maps a node type name to
    ``{"resources": {...}, "min_workers": m, "max_workers": n}``."""
    types: dict[str, Any] = {
        HEAD_TYPE: {"resources": dict(head_resources), "node_config": {}, "max_workers": 0}
    }
    for name, spec in worker_types.items():
        types[name] = {
            "resources": dict(spec["resources"]),
            "node_config": {},
            "min_workers": int(spec.get("min_workers", 0)),
            "max_workers": int(spec.get("max_workers", max_workers)),
        }
    return {
        "cluster_name": "idensenet-fake",
        "max_workers": max_workers,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_timeout_minutes,
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": gcs_address,
        },
        "auth": {},
        "docker": {},
        "available_node_types": types,
        "head_node_type": HEAD_TYPE,
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


# Loaded by every Python process of a fake cluster (it is on their PYTHONPATH as sitecustomize).
# Nothing is imported eagerly: each patch is applied when its module is first imported.
# * ray.train.torch.config: Ray Train picks NCCL whenever workers hold GPUs, and NCCL refuses to
#   start without real ones, so without CUDA the workers' process group falls back to gloo.
# * the fake_multinode provider (in the autoscaler process) starts every node with the head's temp
#   folder; give each node its own (<temp>/n<k>), as separate machines have: otherwise a node that
#   unpacks a job's working dir deletes and re-creates the folder the job's driver runs in.
FAKE_CLUSTER_SHIM = """
import importlib.abc, importlib.machinery, os, sys


def _patch_torch_config(module):
    original = module._setup_torch_process_group

    def setup(backend, *args, **kwargs):
        import torch

        if "nccl" in backend and not torch.cuda.is_available():
            backend = "gloo"
        return original(backend, *args, **kwargs)

    module._setup_torch_process_group = setup


def _patch_provider(module):
    import ray._private.node as node_module

    cls = module.FakeMultiNodeProvider
    original = cls._create_node_with_resources_and_labels
    base = os.environ.get("RAY_FAKE_CLUSTER_NODE_TMP")

    def create(self, *args, **kwargs):
        real_node = node_module.Node

        def node(ray_params, *a, **k):
            if base and ray_params.temp_dir is None:
                ray_params.temp_dir = base + str(self._next_node_id)
            return real_node(ray_params, *a, **k)

        node_module.Node = node
        try:
            return original(self, *args, **kwargs)
        finally:
            node_module.Node = real_node

    cls._create_node_with_resources_and_labels = create


_PATCHES = {
    "ray.train.torch.config": _patch_torch_config,
    "ray.autoscaler._private.fake_multi_node.node_provider": _patch_provider,
}


class _PatchingFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        patch = _PATCHES.get(name)
        if patch is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            patch(module)

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _PatchingFinder())
"""


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [p for p in raw.decode(errors="replace").split("\0") if p]


def _environ_mentions(pid: int, needle: str) -> bool:
    try:
        return (needle + "\0").encode() in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


@dataclass
class FakeCluster:
    """A running fake autoscaling cluster (see the module docstring)."""

    temp_dir: Path
    config_path: Path
    gcs_address: str
    dashboard_url: str
    env: dict[str, str]
    start_log: str = ""
    _stopped: bool = field(default=False, repr=False)

    # -- processes ---------------------------------------------------------------------------------
    def _markers(self) -> list[str]:
        return [str(self.temp_dir), f"--gcs-address={self.gcs_address}", str(self.config_path)]

    def pids(self) -> list[int]:
        """Processes of this cluster: their command line names its temp folder, GCS address or
        config; or (Ray workers and agents that print neither) their environment names the temp
        folder through RAY_FAKE_CLUSTER_TAG."""
        me = {os.getpid(), os.getppid()}
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            if pid in me:
                continue
            cmd = " ".join(_cmdline(pid))
            if any(m in cmd for m in self._markers()) or _environ_mentions(
                pid, f"RAY_FAKE_CLUSTER_TAG={self.temp_dir.name}"
            ):
                found.append(pid)
        return found

    def shutdown(self, grace_s: float = 5.0) -> list[int]:
        """Kill this cluster's processes (SIGTERM, then SIGKILL after ``grace_s``) and delete its
        temp folder. Returns the pids that were signalled. Never touches other Ray instances."""
        if self._stopped:
            return []
        self._stopped = True
        killed: list[int] = []
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 2.0)):
            pids = self.pids()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            killed.extend(p for p in pids if p not in killed)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and self.pids():
                time.sleep(0.2)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        return killed

    # -- what happened -----------------------------------------------------------------------------
    def logs_dir(self) -> Path:
        return self.temp_dir / "session_latest" / "logs"

    def autoscaler_log(self) -> str:
        """The autoscaler's (monitor's) log text so far."""
        parts = []
        for name in ("monitor.log", "monitor.out", "monitor.err"):
            p = self.logs_dir() / name
            if p.is_file():
                parts.append(p.read_text(errors="replace"))
        return "\n".join(parts)

    def subprocess_env(self) -> dict[str, str]:
        """Environment for a subprocess (e.g. ``idensenet sweep``) that should use this cluster."""
        env = dict(self.env)
        env["RAY_ADDRESS"] = self.gcs_address
        return env


def _clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(extra)
    return env


@contextlib.contextmanager
def fake_cluster(
    head_resources: Mapping[str, int],
    worker_types: Mapping[str, Mapping[str, Any]],
    max_workers: int = 2,
    idle_timeout_minutes: float = 0.2,
    env: Mapping[str, str] | None = None,
    object_store_mb: int = 100,
    start_timeout_s: float = 90.0,
) -> Iterator[FakeCluster]:
    """Start a fake autoscaling cluster, yield it, always tear it down.

    The head gets ``head_resources`` (``CPU``/``GPU`` become ``--num-cpus``/``--num-gpus``, the rest
    ``--resources``); worker nodes are launched by the autoscaler from ``worker_types``. ``env`` is
    added to the environment of every process of the cluster (e.g.
    ``RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S``). Their ``PYTHONPATH`` starts with the shim
    (:data:`FAKE_CLUSTER_SHIM`), ``tests/`` (Ray workers import test modules by name) and the
    repository. ``RAY_ADDRESS`` is removed from that environment and never set in this process.
    """
    temp_dir = Path(tempfile.mkdtemp(prefix="ifk", dir="/tmp"))  # short: socket paths are limited
    shim_dir = temp_dir / "shim"
    shim_dir.mkdir()
    (shim_dir / "sitecustomize.py").write_text(FAKE_CLUSTER_SHIM)
    ip = node_ip()
    port = free_port()
    gcs_address = f"{ip}:{port}"
    dash_port = free_port()
    config = fake_cluster_config(
        gcs_address, head_resources, worker_types, max_workers, idle_timeout_minutes
    )
    config_path = temp_dir / "fake_cluster.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    full_env = _clean_env(
        {
            "RAY_FAKE_CLUSTER": "1",
            "AUTOSCALER_UPDATE_INTERVAL_S": "1",
            "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_FAKE_CLUSTER_TAG": temp_dir.name,
            "RAY_FAKE_CLUSTER_NODE_TMP": str(temp_dir / "n"),
            # Trials wait for nodes the autoscaler is still adding (~20 s here, more under load).
            "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "120",
            **(env or {}),
        }
    )
    paths = [str(shim_dir), str(TESTS), str(REPO), full_env.get("PYTHONPATH", "")]
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    # `idensenet` and `ray` of this venv on PATH (job entrypoints run in a shell on the head).
    full_env["PATH"] = os.pathsep.join([str(RAY_BIN.parent), full_env.get("PATH", "")])
    head = dict(head_resources)
    cpus, gpus = head.pop("CPU", 0), head.pop("GPU", 0)
    cmd = [
        str(RAY_BIN), "start", "--head",
        f"--node-ip-address={ip}",
        f"--port={port}",
        f"--temp-dir={temp_dir}",
        f"--autoscaling-config={config_path}",
        f"--num-cpus={cpus}", f"--num-gpus={gpus}",
        f"--resources={json.dumps(head)}",
        f"--object-store-memory={object_store_mb * 1024 * 1024}",
        f"--dashboard-port={dash_port}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--ray-client-server-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        "--disable-usage-stats",
    ]
    cluster = FakeCluster(
        temp_dir=temp_dir,
        config_path=config_path,
        gcs_address=gcs_address,
        dashboard_url=f"http://127.0.0.1:{dash_port}",
        env=full_env,
    )
    try:
        proc = subprocess.run(
            cmd, env=full_env, capture_output=True, text=True, timeout=start_timeout_s
        )
        cluster.start_log = proc.stdout + proc.stderr
        if proc.returncode != 0:
            raise RuntimeError(f"ray start --head failed ({proc.returncode}):\n{cluster.start_log}")
        yield cluster
    finally:
        cluster.shutdown()


def wait_for(predicate, timeout_s: float, interval_s: float = 1.0) -> bool:
    """Poll ``predicate()`` until it is true or ``timeout_s`` passes; return its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        ok = bool(predicate())
        if ok or time.monotonic() > deadline:
            return ok
        time.sleep(interval_s)


def gpu_nodes(dashboard_url: str) -> list[dict[str, Any]]:
    """Nodes of a cluster that advertise GPUs, alive or dead (a node the autoscaler added and has
    since removed still shows), from its State API: dicts with ``node_id``, ``state``,
    ``resources_total``, ``labels``."""
    from ray.util.state import list_nodes

    nodes = list_nodes(address=dashboard_url, detail=True, limit=1000, raise_on_missing_output=False)
    out = [n if isinstance(n, dict) else dataclasses.asdict(n) for n in nodes]
    return [n for n in out if (n.get("resources_total") or {}).get("GPU", 0) > 0]


def head_node_id(dashboard_url: str) -> str:
    from ray.util.state import list_nodes

    (head,) = list_nodes(address=dashboard_url, filters=[("is_head_node", "=", True)], detail=True)
    return head.node_id


# ---- reading what a sweep left in its experiment folder -------------------------------------------


def trial_results(exp_dir: str | os.PathLike[str]) -> dict[str, list[dict[str, Any]]]:
    """Every result row Tune wrote, per trial id (``<trial dir>/result.json``, one JSON per line)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(Path(exp_dir).glob("*/result.json")):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for row in rows:
            out.setdefault(str(row["trial_id"]), []).append(row)
    return out


def trial_statuses(exp_dir: str | os.PathLike[str]) -> dict[str, str]:
    """Trial id -> status in the newest experiment snapshot (what ``Tuner.restore`` will see)."""
    # named experiment_state-<session start>.json: a resumed sweep writes a newer name (mtimes
    # are useless: the final sync rewrites every file at once)
    snaps = sorted(Path(exp_dir).glob("experiment_state-*.json"), key=lambda p: p.name)
    if not snaps:
        return {}
    try:
        state = json.loads(snaps[-1].read_text())
    except (OSError, ValueError):  # being rewritten right now
        return {}
    out = {}
    for json_state, _meta in state.get("trial_data", []):
        trial = json.loads(json_state) if isinstance(json_state, str) else json_state
        out[str(trial["trial_id"])] = str(trial["status"])
    return out


def train_checkpoints(exp_dir: str | os.PathLike[str]) -> dict[str, list[Path]]:
    """Trial id -> the checkpoint folders of its Train run (``train_runs/train-<id>/checkpoint_*``)."""
    out: dict[str, list[Path]] = {}
    for run in sorted(Path(exp_dir).glob("train_runs/train-*")):
        out[run.name[len("train-"):]] = sorted(run.glob("checkpoint_*"))
    return out


def checkpoint_epoch(folder: str | os.PathLike[str]) -> int | None:
    """Epoch recorded in a checkpoint's meta.json (sweeper/checkpoint.py), None if unreadable."""
    try:
        return int(json.loads((Path(folder) / "meta.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def newest_checkpoint_epoch(exp_dir: str | os.PathLike[str]) -> int:
    """Highest epoch among all Train checkpoints persisted so far (0 if none). Checkpoint folders
    appear as soon as Train has them, well before Tune's result.json is flushed."""
    epochs = [checkpoint_epoch(c) for cs in train_checkpoints(exp_dir).values() for c in cs]
    return max((e for e in epochs if e is not None), default=0)


def train_workers(dashboard_url: str) -> list[dict[str, Any]]:
    """Ray Train worker actors of a cluster (alive and dead), from its State API."""
    from ray.util.state import list_actors

    actors = list_actors(
        address=dashboard_url, filters=[("class_name", "=", "RayTrainWorker")], detail=True,
        limit=1000, raise_on_missing_output=False,
    )
    return [a if isinstance(a, dict) else dataclasses.asdict(a) for a in actors]


# ---- a real S3-protocol server on the loopback interface (moto's server mode) --------------------


@contextlib.contextmanager
def s3_server(bucket: str = "idensenet-test") -> Iterator[dict[str, str]]:
    """A moto S3 server on 127.0.0.1 (a free port) with one bucket; yields the environment that points
    pyarrow (and so Ray and the sweeper) at it. The server stops when the block ends."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        import boto3

        boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"]).create_bucket(Bucket=bucket)
        yield {**env, "bucket": bucket}
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
