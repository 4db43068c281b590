"""The shipped KubeRay ``RayJob`` (deploy/kubernetes/rayjob.yaml), read as KubeRay reads it: its entrypoint
is parsed by the project's own argument parser, and the Ray cluster its pods form is run through the
sweep's own placement rules (where trial drivers go, whether a worker fits a pod, how many trials run at
once, whether the storage is reachable from every pod). No Kubernetes is needed: these are the checks
``idensenet sweep`` makes when it starts on that cluster."""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from model.errors import UserError
from sweeper.cli import build_parser
from sweeper.placement import (
    DRIVER_RESOURCE, ClusterShape, check_storage_shared, check_worker_fits_a_node, max_concurrent_trials, trial_shape,
)
from sweeper.settings import space_text
from sweeper.storage import is_remote

MANIFEST = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes" / "rayjob.yaml"
HEAD_MARKER = "node:__internal_head__"
_UNITS = {"": 1, "m": 1e-3, "k": 1e3, "Ki": 2**10, "M": 1e6, "Mi": 2**20, "G": 1e9, "Gi": 2**30}


def quantity(text) -> float:  # noqa: ANN001
    """A Kubernetes quantity ("8", "500m", "32Gi") as a number."""
    number, unit = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(text)).groups()
    return float(number) * _UNITS[unit]


def ray_node(group: dict) -> dict[str, float]:
    """The resources Ray gives a pod of ``group``: ``rayStartParams`` first, else the container limits
    (as KubeRay does), plus the custom resources of ``--resources``."""
    params = group.get("rayStartParams") or {}
    (container,) = group["template"]["spec"]["containers"]
    limits = container["resources"]["limits"]
    node = {"CPU": float(params.get("num-cpus", quantity(limits.get("cpu", 0)))),
            "GPU": float(params.get("num-gpus", quantity(limits.get("nvidia.com/gpu", 0))))}
    if "resources" in params:
        node.update({k: float(v) for k, v in json.loads(json.loads(params["resources"])).items()})
    return node


def cluster(doc: dict) -> ClusterShape:
    spec = doc["spec"]["rayClusterSpec"]
    head = {**ray_node(spec["headGroupSpec"]), HEAD_MARKER: 1.0}
    workers = [ray_node(g) for g in spec.get("workerGroupSpecs", []) for _ in range(int(g["replicas"]))]
    return ClusterShape(tuple([head, *workers]))


def sweep_args(doc: dict):
    argv = shlex.split(doc["spec"]["entrypoint"])
    assert argv[0] == "idensenet"
    return build_parser().parse_args(argv[1:])  # a bad entrypoint exits here


def placement(doc: dict) -> tuple[object, int]:
    """What ``idensenet sweep`` decides on the manifest's cluster: the trial shape and trials at once."""
    args, shape = sweep_args(doc), cluster(doc)
    trial = trial_shape(args.workers_per_trial, args.gpu, args.cpus_per_worker, shape)  # in plan()'s order
    check_storage_shared(args.storage, shape, args.shared_storage)
    at_once = max_concurrent_trials(shape.reachable_resources(), trial, args.trials, args.max_concurrent)
    check_worker_fits_a_node(shape, trial)
    return trial, at_once


@pytest.fixture()
def doc() -> dict:
    return yaml.safe_load(MANIFEST.read_text())


def test_the_entrypoint_is_a_sweep_the_project_accepts(doc):
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayJob")
    args = sweep_args(doc)
    assert args.command == "sweep" and args.name and space_text(args.space)
    assert args.resume_if_exists  # a retried RayJob continues the same sweep
    assert is_remote(args.storage)  # no pod's disk outlives the job
    assert doc["spec"]["shutdownAfterJobFinishes"] is True and doc["spec"]["rayClusterSpec"]["rayVersion"] == "2.60.0"


def test_the_cluster_fits_the_sweeps_placement_rules(doc):
    spec = doc["spec"]["rayClusterSpec"]
    head = ray_node(spec["headGroupSpec"])
    assert head["CPU"] == head["GPU"] == 0 and head[DRIVER_RESOURCE] >= 1  # trains nothing, holds the drivers
    for group in spec["workerGroupSpecs"]:  # what Ray is told matches what the pod is given
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        node = ray_node(group)
        assert node["GPU"] == quantity(limits["nvidia.com/gpu"]) and node["CPU"] <= quantity(limits["cpu"])
        assert group["minReplicas"] == group["replicas"] == group["maxReplicas"]  # all up before the entrypoint
    args = sweep_args(doc)
    trial, at_once = placement(doc)
    assert trial.driver == {DRIVER_RESOURCE: 1.0}  # every trial driver on the head
    assert trial.worker == {"CPU": 12.0, "GPU": 1.0}  # 48 CPUs / 4 GPUs of a pod per worker
    gpus = sum(ray_node(g)["GPU"] * int(g["replicas"]) for g in spec["workerGroupSpecs"])
    assert at_once == min(args.trials, int(gpus // args.workers_per_trial)) == 2


def test_the_checks_fail_on_a_cluster_that_cannot_run_the_sweep(doc):
    """The same checks refuse what would hang: no GPU pods, or a trial wider than a pod."""
    no_gpus = copy.deepcopy(doc)
    no_gpus["spec"]["rayClusterSpec"]["workerGroupSpecs"] = []
    with pytest.raises(UserError, match="one trial needs"):
        placement(no_gpus)
    small = copy.deepcopy(doc)
    group = small["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    group["rayStartParams"]["num-cpus"] = "8"
    small["spec"]["entrypoint"] += " --workers-per-trial 1 --cpus-per-worker 12"  # 16 CPUs in all, 8 a pod
    with pytest.raises(UserError, match="no node can hold one worker"):
        placement(small)
