"""What the sweeper needs to know about the Ray cluster it runs on.

Three questions, answered from the autoscaler's cluster config when one is reachable (so a cluster
that is still at zero GPU nodes is judged by what it *can* grow to) and from the nodes that are up
otherwise:

* **Is the storage shared?** Train and Tune write checkpoints from whichever node a worker runs on;
  since Ray 2.7 nothing is synced to the head, so a local folder on a multi-node (or autoscaling)
  cluster silently splits a run's checkpoints across machines. :func:`check_storage_for_cluster`
  refuses that before any trial starts.
* **How many GPUs can the sweep reach?** :func:`reachable_gpus` — the head's GPUs plus the best the
  autoscaler can launch under its per-type and global ``max_workers`` limits.
* **Where do trial drivers and training workers go?** :func:`trial_placement` — drivers ask for a
  unit of the head's custom resource :data:`DRIVER_RESOURCE` (so they stay on the head and never
  hold a GPU node's CPUs), workers ask for CPUs (and one GPU each).

Nothing here trains a model; the functions only read Ray's state and the cluster config.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import UserError

__all__ = [
    "DRIVER_RESOURCE",
    "StorageNotSharedError",
    "NodeGroup",
    "ClusterShape",
    "TrialPlacement",
    "is_remote_uri",
    "is_network_path",
    "storage_is_shared",
    "check_storage_for_cluster",
    "cluster_shape",
    "shape_from_autoscaler_yaml",
    "reachable_gpus",
    "reachable_nodes",
    "reachable_resources",
    "reachable_node_resources",
    "trial_placement",
]

#: Custom resource that only the head node advertises (``cluster.yaml``: ``trial_driver: 1000``).
#: A trial driver asks for one unit, so at most 1000 trials run at once and all of them on the head.
DRIVER_RESOURCE = "trial_driver"
DRIVER_UNITS_PER_TRIAL = 1.0
#: Driver CPU share on a cluster without :data:`DRIVER_RESOURCE` (a laptop / CI): a driver only
#: waits on ``TorchTrainer.fit()``, so a sliver keeps it from taking a CPU its workers need.
LOCAL_DRIVER_CPUS = 0.01

_HEAD_MARKER = "node:__internal_head__"
# File systems whose folders every node of a cluster can mount at the same path.
_NETWORK_FS = (
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "glusterfs", "ceph", "cephfs", "beegfs",
    "gpfs", "9p", "fuse.s3fs", "fuse.gcsfuse", "fuse.mountpoint-s3", "fuse.juicefs", "fuse.sshfs",
    "efs", "weka", "wekafs",
)
_URI = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*)://")


class StorageNotSharedError(UserError, ValueError):
    """The storage path cannot be seen by every node of the cluster (one-line message; the CLI
    ends with exit code 2 like any other :class:`~sweeper.errors.UserError`)."""


# --------------------------------------------------------------------------------------------------
# storage


def is_remote_uri(path: str | os.PathLike[str]) -> bool:
    """True for ``scheme://...`` storage other than ``file://`` (``s3://``, ``gs://``, ``abfs://``...),
    which pyarrow resolves to the same objects from every node."""
    m = _URI.match(str(path))
    return bool(m) and m.group(1).lower() != "file"


def _local_part(path: str | os.PathLike[str]) -> Path:
    text = str(path)
    if text.lower().startswith("file://"):
        text = text[len("file://"):]
    return Path(text).expanduser()


def _mounts(mounts_file: str | os.PathLike[str] = "/proc/mounts") -> list[tuple[str, str]]:
    """(mount point, fs type) pairs; empty where the table cannot be read (non-Linux)."""
    try:
        lines = Path(mounts_file).read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 3:
            # /proc/mounts escapes blanks in mount points as octal (\040).
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), parts[1])
            out.append((point, parts[2]))
    return out


def is_network_path(
    path: str | os.PathLike[str], mounts_file: str | os.PathLike[str] = "/proc/mounts"
) -> bool:
    """True when the longest mount point containing ``path`` (which need not exist yet) is a
    network / cluster file system (NFS, EFS, Lustre, CIFS, FUSE bucket mounts...)."""
    # realpath resolves the symlinks of the part that exists and keeps the rest as written.
    p = Path(os.path.realpath(os.path.abspath(_local_part(path))))
    best, best_type = "", ""
    for point, fstype in _mounts(mounts_file):
        inside = str(p) == point or str(p).startswith(point.rstrip("/") + "/") or point == "/"
        if inside and len(point) >= len(best):
            best, best_type = point, fstype
    return best_type.lower() in _NETWORK_FS


def storage_is_shared(
    path: str | os.PathLike[str],
    cluster_nodes: int,
    mounts_file: str | os.PathLike[str] = "/proc/mounts",
) -> bool:
    """Whether every one of ``cluster_nodes`` nodes reads and writes the same ``path``.

    A remote URI always is; a local folder is when the cluster is (and stays) a single node, or
    when the folder lives on a network file system mounted at the same place everywhere.
    """
    if is_remote_uri(path):
        return True
    if cluster_nodes <= 1:
        return True
    return is_network_path(path, mounts_file)


def check_storage_for_cluster(
    storage: str | os.PathLike[str], shape: "ClusterShape | None" = None
) -> str:
    """Return ``storage`` (unchanged, as str) when the running cluster can share it, else raise
    :class:`StorageNotSharedError`. ``shape`` defaults to :func:`cluster_shape` of the connected
    cluster (a local single-node Ray, or no Ray at all, counts as one node)."""
    shape = cluster_shape() if shape is None else shape
    nodes = shape.max_nodes()
    if storage_is_shared(storage, 1 if shape.single_host else nodes):
        return str(storage)
    grows = shape.autoscaling and nodes > shape.nodes_up
    how = f"can grow to {nodes} nodes" if grows else f"has {nodes} nodes"
    raise StorageNotSharedError(
        f"storage {str(storage)!r} is a folder on this machine, but the Ray cluster {how}: "
        f"use shared storage every node can write (--storage s3://BUCKET/PREFIX, or an NFS mount)"
    )


# --------------------------------------------------------------------------------------------------
# cluster shape


@dataclass(frozen=True)
class NodeGroup:
    """One node type of the autoscaler config: per-node resources and how many may run."""

    name: str
    resources: Mapping[str, float]
    min_count: int = 0
    max_count: int = 0  # -1: unlimited (only the global limit applies)
    is_head: bool = False


@dataclass(frozen=True)
class ClusterShape:
    """The nodes that are up now and, when an autoscaler config was found, what it can launch."""

    live_nodes: tuple[Mapping[str, float], ...] = ()
    groups: tuple[NodeGroup, ...] = ()
    max_workers: int | None = None  # the config's global limit on worker nodes
    source: str = "none"  # where ``groups`` came from: "gcs", "yaml:<path>" or "none"
    #: Every node runs on this one machine (Ray's ``fake_multinode`` test provider), so a local
    #: folder is seen by all of them.
    single_host: bool = False

    @property
    def autoscaling(self) -> bool:
        return any(not g.is_head and g.max_count != 0 for g in self.groups)

    @property
    def nodes_up(self) -> int:
        return max(1, len(self.live_nodes))

    def _worker_limit(self) -> int:
        per_type = 0
        for g in self.groups:
            if g.is_head:
                continue
            if g.max_count < 0:
                per_type = 10**9
                break
            per_type += g.max_count
        if self.max_workers is None:
            return per_type
        return min(per_type, self.max_workers)

    def max_nodes(self) -> int:
        """Most nodes the cluster can have at once: the head plus the worker nodes the autoscaler
        may launch, never fewer than are up now."""
        if not self.groups:
            return self.nodes_up
        return max(self.nodes_up, 1 + self._worker_limit())

    def max_total(self, resource: str) -> float:
        """Most of ``resource`` reachable at once. The head counts once; worker node types are
        filled richest first, each up to its own ``max_workers``, all together up to the global
        ``max_workers`` (for a single resource with one node per slot, greedy is optimal)."""
        live = sum(float(n.get(resource, 0.0)) for n in self.live_nodes)
        if not self.groups:
            return live
        head = sum(float(g.resources.get(resource, 0.0)) for g in self.groups if g.is_head)
        budget = self.max_workers if self.max_workers is not None else 10**9
        workers = sorted(
            (g for g in self.groups if not g.is_head),
            key=lambda g: float(g.resources.get(resource, 0.0)),
            reverse=True,
        )
        total = head
        for g in workers:
            each = float(g.resources.get(resource, 0.0))
            if each <= 0 or budget <= 0:
                continue
            n = budget if g.max_count < 0 else min(g.max_count, budget)
            total += n * each
            budget -= n
        return max(live, total)

    def head_has(self, resource: str) -> bool:
        if any(g.is_head and g.resources.get(resource, 0) > 0 for g in self.groups):
            return True
        return any(n.get(resource, 0) > 0 and n.get(_HEAD_MARKER, 0) > 0 for n in self.live_nodes)

    def cpus_per_gpu(self) -> int | None:
        """CPUs a one-GPU worker may take on the GPU node type with the fewest CPUs per GPU
        (node CPUs // node GPUs), from the config, else from the GPU nodes that are up."""
        ratios = [
            int(g.resources.get("CPU", 0) // g.resources["GPU"])
            for g in self.groups
            if not g.is_head and g.max_count != 0 and g.resources.get("GPU", 0) > 0
        ]
        if not ratios:
            ratios = [
                int(n.get("CPU", 0) // n["GPU"]) for n in self.live_nodes if n.get("GPU", 0) > 0
            ]
        ratios = [r for r in ratios if r > 0]
        return min(ratios) if ratios else None


def shape_from_autoscaler_yaml(
    config: Mapping[str, Any], live_nodes: Iterable[Mapping[str, float]] = (), source: str = "yaml"
) -> ClusterShape:
    """:class:`ClusterShape` of a cluster-launcher config (the ``cluster.yaml`` format, prepared or
    not): ``available_node_types`` with their ``resources`` / ``min_workers`` / ``max_workers``,
    ``head_node_type`` and the global ``max_workers`` (unset per-type maxima default to it, as in
    Ray's ``fill_node_type_min_max_workers``)."""
    types = config.get("available_node_types") or {}
    head_type = config.get("head_node_type")
    global_max = config.get("max_workers")
    groups = []
    for name, spec in types.items():
        is_head = name == head_type
        default_max = 0 if is_head else (global_max if global_max is not None else -1)
        groups.append(
            NodeGroup(
                name=str(name),
                resources={k: float(v) for k, v in (spec.get("resources") or {}).items()},
                min_count=int(spec.get("min_workers", 0)),
                max_count=int(spec.get("max_workers", default_max)),
                is_head=is_head,
            )
        )
    provider = (config.get("provider") or {}).get("type")
    return ClusterShape(
        live_nodes=tuple(live_nodes),
        groups=tuple(groups),
        max_workers=None if global_max is None else int(global_max),
        source=source,
        single_host=provider == "fake_multinode",
    )


def _live_nodes() -> list[dict[str, float]]:
    import ray

    if not ray.is_initialized():
        return []
    return [dict(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive")]


def _shape_from_gcs(live: list[dict[str, float]]) -> ClusterShape | None:
    """The cluster config an autoscaler reported to the GCS (KubeRay / hosted Ray do), if any."""
    try:
        import ray._private.state as state

        cfg = state.state.get_cluster_config()
    except Exception:
        return None
    if cfg is None or not cfg.node_group_configs:
        return None
    groups = tuple(
        NodeGroup(
            name=g.name,
            resources={k: float(v) for k, v in g.resources.items()},
            min_count=int(g.min_count),
            max_count=int(g.max_count),
        )
        for g in cfg.node_group_configs
    )
    # Heads are not part of node_group_configs; count the head through the live nodes instead.
    head = [n for n in live if n.get(_HEAD_MARKER, 0) > 0]
    if head:
        groups = (NodeGroup("head", {k: v for k, v in head[0].items()}, 1, 0, True),) + groups
    return ClusterShape(live_nodes=tuple(live), groups=groups, max_workers=None, source="gcs")


def _autoscaler_config_path(gcs_address: str | None) -> Path | None:
    """The ``--autoscaling-config`` of the autoscaler (monitor) process serving ``gcs_address``,
    when it runs on this machine (the sweep driver runs on the head under ``ray job submit``).

    A monitor without that flag means a cluster without an autoscaler config (``ray.init()``,
    plain ``ray start``): None. Only when no monitor is visible at all (another user's processes)
    does ``~/ray_bootstrap_config.yaml``, where ``ray up`` puts the config on the head, stand in.
    """
    try:
        import ray  # noqa: F401  (puts Ray's vendored psutil on sys.path)
        import psutil
    except ImportError:
        psutil = None  # type: ignore[assignment]
    if psutil is not None and gcs_address:
        for proc in psutil.process_iter(["cmdline"]):
            cmd = proc.info.get("cmdline") or []
            if not any(os.path.basename(c) == "monitor.py" for c in cmd):  # not log_monitor.py
                continue
            if f"--gcs-address={gcs_address}" not in cmd:
                continue
            for c in cmd:
                if c.startswith("--autoscaling-config="):
                    p = Path(c.split("=", 1)[1]).expanduser()
                    return p if p.is_file() else None
            return None
    bootstrap = Path("~/ray_bootstrap_config.yaml").expanduser()
    return bootstrap if bootstrap.is_file() else None


def cluster_shape() -> ClusterShape:
    """Shape of the cluster this process is connected to: live nodes from ``ray.nodes()``; node
    types and limits from the GCS's cluster config, else the autoscaler's YAML (see
    :func:`_autoscaler_config_path`), else none (a fixed cluster: what is up is all there is)."""
    import ray

    live = _live_nodes()
    if not ray.is_initialized():
        return ClusterShape()
    shape = _shape_from_gcs(live)
    if shape is not None:
        return shape
    try:
        gcs_address = ray.get_runtime_context().gcs_address
    except Exception:
        gcs_address = None
    path = _autoscaler_config_path(gcs_address)
    if path is not None:
        import yaml

        try:
            config = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            config = {}
        if config.get("available_node_types"):
            return shape_from_autoscaler_yaml(config, live, source=f"yaml:{path}")
    return ClusterShape(live_nodes=tuple(live))


def reachable_gpus(shape: ClusterShape | None = None) -> int:
    """GPUs the sweep can use at once: with an autoscaler config, the head's plus the most its
    worker types can add (:meth:`ClusterShape.max_total`); without one, the GPUs up now."""
    shape = cluster_shape() if shape is None else shape
    return int(shape.max_total("GPU"))


def reachable_nodes(shape: ClusterShape | None = None) -> int:
    """Most nodes the cluster can have at once (1 for a local Ray or no Ray)."""
    shape = cluster_shape() if shape is None else shape
    return shape.max_nodes()


def reachable_resources(shape: ClusterShape | None = None) -> dict[str, float]:
    """Every resource (CPU, GPU, custom; not the ``node:`` markers) at the most the cluster can
    hold at once, each by :meth:`ClusterShape.max_total`. Use it instead of
    ``ray.cluster_resources()`` to size trial concurrency on a cluster that has not scaled up yet."""
    shape = cluster_shape() if shape is None else shape
    keys = {k for n in shape.live_nodes for k in n} | {k for g in shape.groups for k in g.resources}
    keys = {k for k in keys if not k.startswith("node:") and k not in ("memory", "object_store_memory")}
    return {k: shape.max_total(k) for k in sorted(keys)}


def reachable_node_resources(shape: ClusterShape | None = None) -> list[dict[str, float]]:
    """Resources of each kind of node the cluster has or can launch (live nodes, then one entry per
    launchable node type): the question "can one worker fit on some node" is asked of these."""
    shape = cluster_shape() if shape is None else shape
    out = [dict(n) for n in shape.live_nodes]
    out += [dict(g.resources) for g in shape.groups if not g.is_head and g.max_count != 0]
    return out


# --------------------------------------------------------------------------------------------------
# placement


@dataclass(frozen=True)
class TrialPlacement:
    """Resources of one trial: ``driver`` for ``tune.with_resources`` (the trial driver function)
    and ``worker`` for ``ScalingConfig(resources_per_worker=...)``, ``num_workers`` of them."""

    driver: dict[str, float]
    worker: dict[str, float]
    num_workers: int
    use_gpu: bool

    def total(self) -> dict[str, float]:
        """Everything the trial holds while it trains (driver + all workers)."""
        out = dict(self.driver)
        for k, v in self.worker.items():
            out[k] = out.get(k, 0.0) + v * self.num_workers
        return out


def trial_placement(
    workers: int,
    gpu: bool,
    cpus_per_worker: float | None = None,
    shape: ClusterShape | None = None,
) -> TrialPlacement:
    """Resource requests for a trial of ``workers`` data-parallel training workers.

    * Driver: ``{DRIVER_RESOURCE: 1}`` (and no CPU) when the head advertises
      :data:`DRIVER_RESOURCE`, which pins every trial driver to the head; otherwise
      ``{"CPU": LOCAL_DRIVER_CPUS}``.
    * Worker: ``{"CPU": c, "GPU": 1}`` with ``gpu``, else ``{"CPU": c}``. ``c`` is
      ``cpus_per_worker`` when given; for GPU workers otherwise the GPU node type's
      CPUs per GPU (so a 48-CPU, 4-GPU node runs four 12-CPU workers), else 1.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    shape = cluster_shape() if shape is None else shape
    if shape.head_has(DRIVER_RESOURCE):
        driver = {"CPU": 0.0, DRIVER_RESOURCE: DRIVER_UNITS_PER_TRIAL}
    else:
        driver = {"CPU": LOCAL_DRIVER_CPUS}
    if cpus_per_worker is None:
        cpus_per_worker = float((shape.cpus_per_gpu() or 1) if gpu else 1)
    if cpus_per_worker <= 0:
        raise ValueError(f"cpus_per_worker must be > 0, got {cpus_per_worker}")
    worker: dict[str, float] = {"CPU": float(cpus_per_worker)}
    if gpu:
        worker["GPU"] = 1.0
    return TrialPlacement(driver=driver, worker=worker, num_workers=workers, use_gpu=gpu)
