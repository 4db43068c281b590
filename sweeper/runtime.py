"""Checks that run before anything is created, and the connection to Ray.

Bad input must end with one line and leave nothing behind, so storage, data and resources are
checked before the experiment folder exists and, for a local instance, before Ray starts.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import UserError

LOCAL_OBJECT_STORE = 512 * 1024**2  # a sweep moves only small objects; keep /dev/shm free


def experiment_location(storage: str, name: str):
    """Where experiment ``name`` lives under ``storage`` (a folder or a URI), as a Location."""
    from .storage import locate

    if not name or "/" in name or name in (".", "..") or name.strip() != name:
        raise UserError(f"--name {name!r} must be a plain folder name")
    try:
        return locate(storage).join(name)
    except (OSError, ValueError) as err:  # pyarrow: unknown scheme, bad URI
        raise UserError(f"storage {storage!r}: {err}") from None


def check_storage(storage: str) -> None:
    """A local storage folder, or its nearest existing ancestor, must be a writable folder.

    The check writes and removes a probe file in that existing folder, so nothing is left behind.
    Remote URIs (s3://, gs://) are checked by their first write.
    """
    from .storage import is_uri

    if is_uri(storage) and not storage.lower().startswith("file://"):
        return
    if storage.lower().startswith("file://"):
        storage = storage[len("file://"):]
    path = Path(os.path.abspath(os.path.expanduser(storage)))
    probe_dir = path
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise UserError(f"storage {storage!r} cannot be created: {probe_dir} is not a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".idensenet-probe-", dir=probe_dir)
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise UserError(f"storage {storage!r} is not writable ({err.strerror or err})") from None


def check_dataset(name: str, root: str | None) -> None:
    """Image sets that live on disk must be present before any trial starts."""
    from model import data as D

    key = name.lower()
    if key not in D.DATASETS:
        raise UserError(f"unknown data set {name!r}; valid names: {', '.join(D.DATASETS)}")
    if key == "cifar10":
        folder = Path(os.path.expanduser(root or "data")) / D.CIFAR10_FOLDER
        missing = [f for f in D.CIFAR10_FILES if not (folder / f).is_file()]
    elif key == "imagenet32":
        folder = Path(os.path.expanduser(root or "data")) / D.IMAGENET32_FOLDER
        missing = [f for f in D.IMAGENET32_TRAIN_FILES + (D.IMAGENET32_VAL_FILE,) if not (folder / f).is_file()]
    else:
        return
    if root is None:
        raise UserError(f"data set {name!r} needs --data-root (the folder holding {folder.name}/)")
    if missing:
        raise UserError(f"data set {name!r} not found: {folder} lacks {', '.join(missing[:3])}"
                        + (" ..." if len(missing) > 3 else ""))


def planned_local_resources(use_gpu: bool) -> dict[str, float]:
    """What a local Ray instance started by :func:`connect_ray` will offer."""
    res = {"CPU": float(os.cpu_count() or 1)}
    if use_gpu:
        res["GPU"] = float(_local_gpus())
    return res


def _local_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # pragma: no cover
        return 0


def connect_ray(address: str | None, use_gpu: bool, verbose: bool = False) -> None:
    """Reuse an initialised Ray, join ``address`` / ``RAY_ADDRESS``, or start a local instance
    (``address="local"``: never silently join some other cluster running on this machine).

    The dashboard stays on: its State API is what lets Ray Train free the workers of trials that
    ASHA stops (ray-notes P1). A local instance is loopback-only, so token auth is off unless set.
    """
    if not (address or os.environ.get("RAY_ADDRESS")):
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # before Ray reads its config
    import ray

    if ray.is_initialized():
        return
    kwargs = dict(log_to_driver=verbose, configure_logging=True, logging_level="ERROR" if not verbose else "INFO")
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address or os.environ["RAY_ADDRESS"], **kwargs)
        return
    res = planned_local_resources(use_gpu)
    start_local_ray(int(res["CPU"]), int(res.get("GPU", 0)), LOCAL_OBJECT_STORE, **kwargs)


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_local_ray(num_cpus: int, num_gpus: int = 0, object_store_memory: int | None = None, **kwargs) -> str:
    """Start a new local Ray instance (never join another one) whose dashboard every worker finds.

    Ray Train's placement-group cleaner asks the dashboard's State API whether a stopped trial's
    controller is dead (ray-notes P1). Without an address, that query autodetects the cluster and
    fails when several Ray instances run on the machine, so the workers of ASHA-stopped trials would
    never be freed. Setting ``RAY_API_SERVER_ADDRESS`` before Ray starts its processes (they
    inherit the environment) points every State API call at this instance's dashboard.
    """
    import ray

    port = _free_port()
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, object_store_memory=object_store_memory,
             dashboard_host="127.0.0.1", dashboard_port=port, **kwargs)
    return ray.get_runtime_context().gcs_address


def cluster_resources() -> dict[str, float]:
    import ray

    return dict(ray.cluster_resources())


def node_resources() -> list[dict[str, float]]:
    import ray

    return [dict(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive")]


def cluster_plan(workers: int, use_gpu: bool, cpus_per_worker: float | None, storage: str):
    """(TrialShape, reachable resources, per-node resources) of the connected cluster.

    Placement comes from :func:`sweeper.cluster.trial_placement` (drivers on the head's
    ``trial_driver`` resource when it has one); the storage must be visible to every node the
    cluster has or can grow to.
    """
    from .cluster import (check_storage_for_cluster, cluster_shape, reachable_node_resources,
                          reachable_resources, trial_placement)
    from .resources import TrialShape, default_cpus_per_worker

    shape = cluster_shape()
    cpw = cpus_per_worker if cpus_per_worker is not None else (None if use_gpu else default_cpus_per_worker(False))
    try:
        placement = trial_placement(workers, use_gpu, cpw, shape)
    except ValueError as err:
        raise UserError(str(err)) from None
    check_storage_for_cluster(storage, shape)
    return TrialShape.from_placement(placement), reachable_resources(shape), reachable_node_resources(shape)
