"""Where a sweep's pieces run: the Ray instance, the cluster's size, each trial's resources.

Every trial holds two placement groups (Ray Train inside Tune): its driver's, which only waits on
``TorchTrainer.fit()``, and its workers' (``workers × resources_per_worker``). A trial starts only
when both fit, so the trials that may run at once are ⌊available / per-trial need⌋ over every
resource a trial asks for; more would let drivers hold resources their own workers then wait for.

The cluster is judged by what it *can* grow to, from the cluster launcher's own config file: the
one ``--cluster-config`` names, else ``~/ray_bootstrap_config.yaml`` where ``ray up`` puts it on the
head; without one, what is up now is all there is. On a cluster built from ``cluster.yaml`` the head
advertises :data:`DRIVER_RESOURCE`, and every trial driver takes a unit of it, so drivers stay on the
head and never hold a GPU node's CPUs.
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import ray
import yaml

from model.errors import UserError

from .storage import is_remote

DRIVER_RESOURCE = "trial_driver"  # custom resource only the head advertises (cluster.yaml)
DRIVER_CPU = 0.01  # logical CPUs of a trial driver where there is no DRIVER_RESOURCE
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"  # where `ray up` leaves the cluster config on the head
LOCAL_OBJECT_STORE = 512 * 1024**2  # a sweep moves only small objects; keep /dev/shm free
_HEAD_MARKER = "node:__internal_head__"
#: Ray Train settings for a local instance: no preemption watcher actor per trial (nothing drains a
#: single machine) and a quicker controller poll (a trial's start and end wait on it): together
#: about 4 s of the ~19 s a trivial TorchTrainer.fit() takes here
LOCAL_TRAIN_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}
_EPS = 1e-9


# ----------------------------------------------------------------------------------- the cluster
@dataclass(frozen=True)
class NodeGroup:
    """One node type of a cluster-launcher config: per-node resources and how many may run."""

    name: str
    resources: Mapping[str, float]
    max_count: int = 0  # -1: only the global limit applies
    is_head: bool = False


@dataclass(frozen=True)
class ClusterShape:
    """The nodes up now and, when a launcher config is known, the node types it can add."""

    live_nodes: tuple[Mapping[str, float], ...] = ()
    groups: tuple[NodeGroup, ...] = ()
    max_workers: int | None = None  # the config's global limit on worker nodes
    single_host: bool = False  # Ray's fake_multinode provider: every node is this machine

    @property
    def autoscaling(self) -> bool:
        return any(not g.is_head and g.max_count != 0 for g in self.groups)

    @property
    def nodes_up(self) -> int:
        return max(1, len(self.live_nodes))

    def _fill(self, per_node: Callable[[NodeGroup], float]) -> float:
        """The head once, then the worker types richest in ``per_node`` first, each up to its own
        limit, all together up to the global one: the most of one quantity the nodes can hold."""
        total = sum(per_node(g) for g in self.groups if g.is_head)
        budget = self.max_workers if self.max_workers is not None else 10**9
        for g in sorted((g for g in self.groups if not g.is_head), key=per_node, reverse=True):
            n = budget if g.max_count < 0 else min(g.max_count, budget)
            total, budget = total + n * per_node(g), budget - n
        return total

    def max_nodes(self) -> int:
        """Most nodes at once: the head plus the launchable workers, never fewer than are up."""
        workers = self._fill(lambda g: 0.0 if g.is_head else 1.0)  # the head counts once, named or not
        return max(self.nodes_up, 1 + int(workers)) if self.groups else self.nodes_up

    def max_total(self, resource: str) -> float:
        """Most of ``resource`` reachable at once (:meth:`_fill`), never less than is up now."""
        live = sum(float(n.get(resource, 0.0)) for n in self.live_nodes)
        return max(live, self._fill(lambda g: float(g.resources.get(resource, 0.0)))) if self.groups else live

    def reachable_resources(self) -> dict[str, float]:
        """Every resource (not the ``node:`` markers) at the most the cluster can hold at once."""
        keys = {k for n in self.live_nodes for k in n} | {k for g in self.groups for k in g.resources}
        keys = {k for k in keys if not k.startswith("node:") and k not in ("memory", "object_store_memory")}
        return {k: self.max_total(k) for k in sorted(keys)}

    def node_kinds(self) -> list[dict[str, float]]:
        """Resources of every node up and of every launchable node type (one worker must fit one)."""
        return [dict(n) for n in self.live_nodes] + [
            {k: float(v) for k, v in g.resources.items()} for g in self.groups if not g.is_head and g.max_count != 0]

    def head_has(self, resource: str) -> bool:
        return any(g.is_head and g.resources.get(resource, 0) > 0 for g in self.groups) or any(
            n.get(resource, 0) > 0 and n.get(_HEAD_MARKER, 0) > 0 for n in self.live_nodes)

    def cpus_per_gpu(self) -> int | None:
        """CPUs a one-GPU worker may take on the GPU node type with the fewest CPUs per GPU."""
        kinds = [g.resources for g in self.groups if not g.is_head and g.max_count != 0] or list(self.live_nodes)
        ratios = [int(r.get("CPU", 0) // r["GPU"]) for r in kinds if r.get("GPU", 0) > 0]
        ratios = [r for r in ratios if r > 0]
        return min(ratios) if ratios else None


def shape_from_launcher_config(config: Mapping[str, Any], live_nodes: Iterable[Mapping[str, float]] = ()) -> ClusterShape:
    """:class:`ClusterShape` of a cluster-launcher config (the ``cluster.yaml`` format): its
    ``available_node_types`` with ``resources`` / ``max_workers``, ``head_node_type`` and the global
    ``max_workers`` (an unset per-type maximum defaults to it, as Ray's launcher does)."""
    head_type, global_max = config.get("head_node_type"), config.get("max_workers")
    groups = []
    for name, spec in (config.get("available_node_types") or {}).items():
        is_head = name == head_type
        default_max = 0 if is_head else (global_max if global_max is not None else -1)
        groups.append(NodeGroup(str(name), {k: float(v) for k, v in (spec.get("resources") or {}).items()},
                                int(spec.get("max_workers", default_max)), is_head))
    return ClusterShape(tuple(live_nodes), tuple(groups), None if global_max is None else int(global_max),
                        single_host=(config.get("provider") or {}).get("type") == "fake_multinode")


def _live_nodes() -> list[dict[str, float]]:
    if not ray.is_initialized():
        return []
    return [dict(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive")]


def cluster_shape(config_path: str | None = None) -> ClusterShape:
    """The connected cluster: live nodes from ``ray.nodes()``; node types from the launcher config
    at ``config_path`` (default :data:`BOOTSTRAP_CONFIG` when it exists). A named file that cannot be
    read is a :class:`UserError`."""
    live = _live_nodes()
    path = Path(os.path.expanduser(config_path or BOOTSTRAP_CONFIG))
    if config_path is None and (not live or not path.is_file()):
        return ClusterShape(tuple(live))
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise UserError([("--cluster-config", f"cannot read {path} ({type(err).__name__}: {err})")]) from None
    if not isinstance(config, Mapping) or not config.get("available_node_types"):
        raise UserError([("--cluster-config", f"{path} is not a cluster-launcher config (no available_node_types)")])
    return shape_from_launcher_config(config, live)


def check_storage_shared(storage: str, shape: ClusterShape, declared_shared: bool = False) -> None:
    """Train and Tune write from whichever node a worker runs on, and nothing is synced to the head
    (Ray >= 2.7): a local folder serves a cluster that has, or can grow to, more than one node only
    when the user says every node mounts it (``--shared-storage``, e.g. NFS)."""
    nodes = 1 if shape.single_host else shape.max_nodes()
    if is_remote(storage) or nodes <= 1 or declared_shared:
        return
    how = f"can grow to {nodes} nodes" if shape.autoscaling and nodes > shape.nodes_up else f"has {nodes} nodes"
    raise UserError(f"storage {storage!r} is a folder on this machine, but the Ray cluster {how}: use "
                    f"storage every node can write (--storage s3://BUCKET/PREFIX), or pass --shared-storage "
                    f"if every node mounts this folder at the same path (NFS)")


# --------------------------------------------------------------------------------------- a trial
@dataclass(frozen=True)
class TrialShape:
    """One trial: ``workers`` Train workers of ``worker`` resources each, and its driver's ``driver``
    resources (a sliver of CPU, or a unit of :data:`DRIVER_RESOURCE` on a cluster.yaml cluster)."""

    workers: int
    worker: dict[str, float]
    driver: dict[str, float] = field(default_factory=lambda: {"CPU": DRIVER_CPU})
    use_gpu: bool = False

    def per_trial(self) -> dict[str, float]:
        need = dict(self.driver)
        for k, v in self.worker.items():
            need[k] = need.get(k, 0.0) + self.workers * float(v)
        return {k: v for k, v in need.items() if v > 0}


def trial_shape(workers: int, gpu: bool, cpus_per_worker: float | None, shape: ClusterShape,
                with_driver: bool = True) -> TrialShape:
    """Workers ask for ``cpus_per_worker`` CPUs (default: on GPUs the GPU node type's CPUs per GPU,
    so a 48-CPU 4-GPU node runs four 12-CPU workers; on CPUs 1 − the driver's sliver, so a
    one-worker trial and its driver fit one core) and one GPU each with ``gpu``."""
    driver: dict[str, float] = {}
    if with_driver:
        driver = {DRIVER_RESOURCE: 1.0} if shape.head_has(DRIVER_RESOURCE) else {"CPU": DRIVER_CPU}
    if cpus_per_worker is None:
        cpus_per_worker = float(shape.cpus_per_gpu() or 1) if gpu else 1.0 - DRIVER_CPU
    worker = {"CPU": float(cpus_per_worker), **({"GPU": 1.0} if gpu else {})}
    return TrialShape(workers, worker, driver, gpu)


def fitting_trials(resources: Mapping[str, float], shape: TrialShape) -> int:
    """⌊resources[r] / need[r]⌋ minimised over what one trial needs (0: not even one fits)."""
    return min(int(math.floor(float(resources.get(k, 0.0)) / need + _EPS)) for k, need in shape.per_trial().items())


def max_concurrent_trials(resources: Mapping[str, float], shape: TrialShape, trials: int,
                          requested: int | None = None) -> int:
    """Trials at once: what fits, at most ``trials`` and at most ``requested``; a
    :class:`UserError` when not one fits or ``requested`` exceeds what fits (a deadlock)."""
    fit = fitting_trials(resources, shape)
    if fit < 1:
        need = ", ".join(f"{v:g} {k}" for k, v in shape.per_trial().items())
        have = ", ".join(f"{float(resources.get(k, 0.0)):g} {k}" for k in shape.per_trial())
        raise UserError(f"one trial needs {need} ({shape.workers} workers) but the cluster has {have}; use "
                        f"fewer workers per trial or CPUs per worker, or add nodes")
    if requested is not None:
        if requested > fit:
            why = ""
            drivers = float(resources.get(DRIVER_RESOURCE, 0.0)) / shape.driver.get(DRIVER_RESOURCE, math.inf)
            if math.floor(drivers + _EPS) == fit:
                why = (f" (the head's {DRIVER_RESOURCE} resource: one unit per trial driver and Train controller "
                       "its memory holds, see docs/cluster.md)")
            raise UserError(f"--max-concurrent {requested} exceeds the {fit} trial(s) the cluster can hold at once{why}")
        fit = requested
    return max(1, min(fit, trials))


def check_worker_fits_a_node(shape: ClusterShape, trial: TrialShape) -> None:
    """A Train worker is one actor and must fit one node."""
    want = trial.worker
    if not any(all(float(r.get(k, 0.0)) + _EPS >= v for k, v in want.items()) for r in shape.node_kinds()):
        raise UserError("no node can hold one worker (" + ", ".join(f"{v:g} {k}" for k, v in want.items())
                        + "); lower --cpus-per-worker or use bigger nodes")


# ------------------------------------------------------------------------------------ Ray itself
def local_resources(gpu: bool) -> dict[str, float]:
    """What a local Ray instance started by :func:`connect_ray` offers: this machine's cores (and GPUs)."""
    res = {"CPU": float(os.cpu_count() or 1)}
    if gpu:
        import torch

        res["GPU"] = float(torch.cuda.device_count())
    return res


def ray_is_reachable(address: str | None) -> bool:
    """True when a command will join a running Ray (initialised here, an address, RAY_ADDRESS)."""
    return ray.is_initialized() or bool(address or os.environ.get("RAY_ADDRESS"))


def connect_ray(address: str | None, gpu: bool, verbose: bool = False) -> None:
    """Reuse an initialised Ray, join ``address`` / ``RAY_ADDRESS``, or start a local instance (never
    silently join another one running on this machine). The dashboard stays on: its State API is how
    Ray Train frees the workers of trials ASHA stops. A local instance is loopback-only, so Ray's
    token authentication is off unless set."""
    if not (address or os.environ.get("RAY_ADDRESS")):
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if ray.is_initialized():
        return
    kwargs = dict(log_to_driver=verbose, configure_logging=True, logging_level="INFO" if verbose else "ERROR")
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address or os.environ["RAY_ADDRESS"], **kwargs)
        return
    res = local_resources(gpu)
    start_local_ray(int(res["CPU"]), int(res.get("GPU", 0)), LOCAL_OBJECT_STORE, **kwargs)


def start_local_ray(num_cpus: int, num_gpus: int = 0, object_store_memory: int | None = None, **kwargs: Any) -> str:
    """Start a new local Ray instance whose dashboard every Ray process finds.

    Ray Train's placement-group cleaner asks the State API whether a stopped trial's controller is
    dead; without an address that query autodetects the cluster and fails when several Ray instances
    run on the machine, so the workers of stopped trials would never be freed. Setting
    ``RAY_API_SERVER_ADDRESS`` before Ray starts its processes (they inherit it) points them here."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    for key, value in LOCAL_TRAIN_ENV.items():  # a single machine is never drained or preempted
        os.environ.setdefault(key, value)
    ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, object_store_memory=object_store_memory,
             dashboard_host="127.0.0.1", dashboard_port=port, **kwargs)
    return ray.get_runtime_context().gcs_address


def plan(workers: int, gpu: bool, cpus_per_worker: float | None, trials: int, requested: int | None,
         address: str | None, storage: str, cluster_config: str | None, shared_storage: bool,
         verbose: bool = False, with_driver: bool = True) -> tuple[TrialShape, int]:
    """Connect to (or start) Ray and size the run: (trial shape, trials at once). A local instance is
    judged before it starts, so a run that cannot fit leaves nothing behind."""
    if not ray_is_reachable(address):
        local = trial_shape(workers, gpu, cpus_per_worker, ClusterShape(), with_driver)
        max_concurrent_trials(local_resources(gpu), local, trials, requested)
    connect_ray(address, gpu, verbose)
    cluster = cluster_shape(cluster_config)
    trial = trial_shape(workers, gpu, cpus_per_worker, cluster, with_driver)
    check_storage_shared(storage, cluster, shared_storage)
    concurrency = max_concurrent_trials(cluster.reachable_resources(), trial, trials, requested)
    check_worker_fits_a_node(cluster, trial)
    return trial, concurrency
