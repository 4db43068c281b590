"""cluster.yaml checked offline, and the cluster arithmetic of sweeper/placement.py.

Validation uses Ray's own pair (ray 2.60.0 is pinned: both are private APIs):
``prepare_config`` merges the AWS defaults and per-type limits, ``validate_config`` checks the
JSON schema (``additionalProperties: false``, integer resources) and the node-type limits.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO / "cluster.yaml"
README = REPO / "README.md"
DOCS = REPO / "docs" / "cluster.md"  # the AWS runbook
INSTALL_START = "pip install torch=="  # where the install line begins, wherever it is written


def _load() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def _validate(cfg: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(cfg))
    validate_config(prepared)
    return prepared


def _gpu_types(cfg: dict) -> dict[str, dict]:
    return {k: v for k, v in cfg["available_node_types"].items() if k != cfg["head_node_type"]}


# ---------------------------------------------------------------------------------------------
# Ray's validation


def test_ray_version_is_the_pinned_one() -> None:
    import ray

    assert ray.__version__ == "2.60.0"


def test_cluster_yaml_passes_rays_validation() -> None:
    prepared = _validate(_load())
    # prepare_config merged the common setup commands into both lists and kept ours (no defaults).
    assert prepared["provider"]["type"] == "aws"
    cfg = _load()
    n_common = len(cfg["setup_commands"])
    assert prepared["head_setup_commands"] == cfg["setup_commands"] + cfg["head_setup_commands"]
    assert prepared["worker_setup_commands"][:n_common] == cfg["setup_commands"]
    assert prepared["available_node_types"][cfg["head_node_type"]]["max_workers"] == 0


@pytest.mark.parametrize(
    "breakage",
    [
        "misspelled top-level key",
        "misspelled node-type key",
        "fractional GPU",
        "head type not a node type",
        "min_workers above max_workers",
    ],
)
def test_validation_catches_a_broken_copy(breakage: str) -> None:
    cfg = _load()
    gpu_name = next(iter(_gpu_types(cfg)))
    gpu = cfg["available_node_types"][gpu_name]
    if breakage == "misspelled top-level key":
        cfg["setup_comands"] = cfg.pop("setup_commands")
    elif breakage == "misspelled node-type key":
        gpu["max_worker"] = gpu.pop("max_workers")
    elif breakage == "fractional GPU":
        gpu["resources"]["GPU"] = 0.5
    elif breakage == "head type not a node type":
        cfg["head_node_type"] = "no-such-type"
    elif breakage == "min_workers above max_workers":
        gpu["min_workers"] = cfg["max_workers"] + 1
    with pytest.raises(Exception) as info:
        _validate(cfg)
    assert type(info.value).__name__ in {"ValidationError", "ValueError", "KeyError"}


# ---------------------------------------------------------------------------------------------
# what the file must say


def test_head_trains_nothing_and_hosts_the_trial_drivers() -> None:
    from sweeper.placement import DRIVER_RESOURCE

    cfg = _load()
    head = cfg["available_node_types"][cfg["head_node_type"]]
    assert head["resources"]["GPU"] == 0
    assert head["resources"]["CPU"] == 0
    assert head["resources"][DRIVER_RESOURCE] >= 1
    assert "IamInstanceProfile" not in head["node_config"]  # Ray's default head profile
    for node_type in _gpu_types(cfg).values():
        assert DRIVER_RESOURCE not in node_type["resources"]


def test_gpu_workers_written_out_and_autoscaled() -> None:
    cfg = _load()
    gpu_types = _gpu_types(cfg)
    assert gpu_types
    for name, t in gpu_types.items():
        res = t["resources"]
        assert isinstance(res["GPU"], int) and res["GPU"] >= 1, name
        assert isinstance(res["CPU"], int) and res["CPU"] >= res["GPU"], name
        assert t.get("min_workers", 0) == 0, f"{name}: idle clusters should cost only the head"
        assert 1 <= t["max_workers"] <= cfg["max_workers"], name
        profile = t["node_config"]["IamInstanceProfile"]
        assert re.fullmatch(r"arn:aws:iam::\d{12}:instance-profile/[\w+=,.@-]+", profile["Arn"])
    # g5.12xlarge is 48 vCPU / 4 A10G; the file must not disagree with the instance type.
    known = {"g5.12xlarge": {"CPU": 48, "GPU": 4}, "g5.xlarge": {"CPU": 4, "GPU": 1},
             "g5.2xlarge": {"CPU": 8, "GPU": 1}, "g5.48xlarge": {"CPU": 192, "GPU": 8}}
    for t in gpu_types.values():
        itype = t["node_config"]["InstanceType"]
        if itype in known:
            assert {k: t["resources"][k] for k in ("CPU", "GPU")} == known[itype], itype


def test_no_credentials_in_the_file() -> None:
    text = CLUSTER_YAML.read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)
    assert not re.search(r"aws_(secret_)?access_key", text, re.IGNORECASE)
    assert "aws_credentials" not in _load()["provider"]


def test_setup_prepares_data_and_start_commands_use_the_bootstrap_config() -> None:
    cfg = _load()
    setup = "\n".join(cfg["setup_commands"])
    assert "load_cifar10(" in setup and "download=True" in setup
    assert re.search(r"aws s3 sync \"?\$IMAGENET32_S3\"? ~/data/imagenet32", setup)
    assert "boto3" in " ".join(cfg["head_setup_commands"])
    head_start = " ".join(cfg["head_start_ray_commands"])
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head_start
    assert "--dashboard-host=0.0.0.0" not in head_start  # dashboard only through the SSH tunnel
    assert "$RAY_HEAD_IP:6379" in " ".join(cfg["worker_start_ray_commands"])
    # Trial drivers (on the head) must outwait a GPU node's boot and setup (~10 min), not Ray
    # Train's default 60 s, before a worker group counts as failed.
    timeout = re.search(r"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S=(\d+) ray start --head", head_start)
    assert timeout and int(timeout.group(1)) >= 900
    assert cfg["file_mounts"] == {"~/idensenet-sweep": "."}
    assert ".gitignore" in cfg["rsync_filter"]  # keeps .venv (GBs) and data at home


def test_data_paths_match_the_loaders() -> None:
    """The folders setup fills are the ones model.data reads (<root>/cifar-10-batches-py,
    <root>/imagenet32)."""
    from model import data

    setup = "\n".join(_load()["setup_commands"])
    assert data.CIFAR10_FOLDER == "cifar-10-batches-py"  # what torchvision's download creates
    assert f"~/data/{data.IMAGENET32_FOLDER}" in setup
    assert "load_cifar10('~/data'" in setup


# ---------------------------------------------------------------------------------------------
# one install line everywhere


def _install_lines(text: str) -> list[str]:
    """Each occurrence of the install line: from "pip install torch==" to the end of the line or a
    closing backtick, whitespace normalised."""
    out = []
    for line in text.splitlines():
        if INSTALL_START in line:
            tail = line[line.index(INSTALL_START):].split("`")[0]
            out.append(" ".join(tail.split()))
    return out


def _cluster_install_line() -> str:
    lines = _install_lines("\n".join(_load()["setup_commands"]))
    assert len(lines) == 1, lines
    return lines[0]


def test_install_line_pins_what_pyproject_pins() -> None:
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = dict(re.match(r"([\w\-\[\],]+)==([\w.+]+)$", d).groups() for d in deps if "==" in d)
    line = _cluster_install_line()
    for pkg in ("torch", "torchvision"):
        assert f"{pkg}=={pins[pkg]}" in line.split(), (pkg, line)
    assert line.endswith('pip install -e ".[test]"')


def test_install_line_matches_the_makefile() -> None:
    """`make setup` runs the same two pip commands (one per Makefile line)."""
    cmds = [
        " ".join(line.strip().replace("$(BIN)/", "").split())
        for line in (REPO / "Makefile").read_text().splitlines()
        if "pip install" in line and "--upgrade pip" not in line
    ]
    assert " && ".join(cmds) == _cluster_install_line()


def test_install_line_matches_the_readme() -> None:
    if not README.is_file():
        pytest.skip("README.md is absent, nothing to compare the install line with")
    readme = _install_lines(README.read_text())
    assert readme, (
        f"README.md has no install line starting with {INSTALL_START!r}; "
        f"it must read: {_cluster_install_line()}"
    )
    assert set(readme) == {_cluster_install_line()}


def test_docs_use_the_same_install_line_and_commands() -> None:
    text = DOCS.read_text()
    assert set(_install_lines(text)) == {_cluster_install_line()}
    for needle in ("ray up cluster.yaml", "ray job submit --working-dir .", "ray dashboard cluster.yaml",
                   "idensenet results", "idensenet best", "--epochs 1000", "ray down cluster.yaml",
                   "--storage s3://"):
        assert needle in text, needle


# ---------------------------------------------------------------------------------------------
# sweeper/placement.py against this file and small cases with known answers


def test_shape_of_cluster_yaml() -> None:
    from sweeper.placement import DRIVER_RESOURCE, shape_from_launcher_config, trial_shape

    cfg = _load()
    shape = shape_from_launcher_config(cfg)
    gpu = next(iter(_gpu_types(cfg).values()))
    n_gpu_nodes = min(gpu["max_workers"], cfg["max_workers"])
    assert shape.max_total("GPU") == n_gpu_nodes * gpu["resources"]["GPU"]  # 4 nodes x 4 = 16
    assert shape.max_nodes() == 1 + n_gpu_nodes
    assert shape.autoscaling and not shape.single_host
    p = trial_shape(4, True, None, shape)
    assert p.driver == {DRIVER_RESOURCE: 1.0}
    cpu_per_gpu = gpu["resources"]["CPU"] // gpu["resources"]["GPU"]
    assert p.worker == {"CPU": float(cpu_per_gpu), "GPU": 1.0}
    assert p.per_trial() == {"CPU": 4.0 * cpu_per_gpu, "GPU": 4.0, DRIVER_RESOURCE: 1.0}
    # Four such workers fill one node exactly, so a 4-worker trial packs onto one node.
    assert p.per_trial()["CPU"] == gpu["resources"]["CPU"]


def _yaml_shape(types: dict, max_workers: int, live: list | None = None):
    from sweeper.placement import shape_from_launcher_config

    cfg = {"max_workers": max_workers, "head_node_type": "head",
           "available_node_types": {"head": {"resources": {"CPU": 0, "trial_driver": 1000}}, **types}}
    return shape_from_launcher_config(cfg, live or [])


def test_reachable_gpus_respects_per_type_and_global_limits() -> None:
    types = {"big": {"resources": {"CPU": 96, "GPU": 8}, "max_workers": 1},
             "small": {"resources": {"CPU": 8, "GPU": 1}, "max_workers": 10}}
    # global 3: one big (8) + two small (2) = 10
    assert _yaml_shape(types, max_workers=3).max_total("GPU") == 10
    # global 20: the per-type limits bind: 8 + 10 = 18
    assert _yaml_shape(types, max_workers=20).max_total("GPU") == 18
    # an unset per-type max defaults to the global one
    del types["small"]["max_workers"]
    assert _yaml_shape(types, max_workers=5).max_total("GPU") == 8 + 4
    # GPUs up now count even when the config says less (e.g. a manually joined node)
    live = [{"CPU": 4, "GPU": 2, "node:__internal_head__": 1}, {"GPU": 8}, {"GPU": 8}, {"GPU": 8}]
    assert _yaml_shape({}, max_workers=0, live=live).max_total("GPU") == 26


def test_max_nodes_is_the_head_and_the_launchable_workers() -> None:
    from sweeper.placement import shape_from_launcher_config

    types = {"big": {"resources": {"CPU": 96, "GPU": 8}, "max_workers": 1},
             "small": {"resources": {"CPU": 8, "GPU": 1}, "max_workers": 10}}
    assert _yaml_shape(types, max_workers=3).max_nodes() == 1 + 3  # the global limit binds
    assert _yaml_shape(types, max_workers=20).max_nodes() == 1 + 1 + 10  # the per-type limits bind
    # the head counts once even when head_node_type names none of the types
    cfg = {"max_workers": 3, "head_node_type": "missing", "available_node_types": types}
    assert shape_from_launcher_config(cfg).max_nodes() == 1 + 3


def test_no_config_means_what_is_up() -> None:
    from sweeper.placement import DRIVER_CPU, ClusterShape, trial_shape

    shape = ClusterShape(live_nodes=({"CPU": 2.0, "node:__internal_head__": 1.0},))
    assert shape.max_total("GPU") == 0 and shape.max_nodes() == 1
    p = trial_shape(2, False, None, shape)
    assert p.driver == {"CPU": DRIVER_CPU} and p.worker == {"CPU": 1.0 - DRIVER_CPU} and p.workers == 2
    assert trial_shape(2, False, 1.0, shape, with_driver=False).per_trial() == {"CPU": 2.0}


def test_storage_rules(tmp_path: Path) -> None:
    from model.errors import UserError
    from sweeper.placement import ClusterShape, check_storage_shared

    autoscaling = _yaml_shape({"gpu": {"resources": {"CPU": 48, "GPU": 4}, "max_workers": 2}}, 2,
                              live=[{"CPU": 0.0, "node:__internal_head__": 1.0}])
    for uri in ("s3://bucket/prefix", "gs://bucket/x", "abfs://c@acct.dfs.core.windows.net/x"):
        check_storage_shared(uri, autoscaling)  # remote storage: every node sees it
    with pytest.raises(UserError, match="can grow to 3 nodes"):
        check_storage_shared(str(tmp_path), autoscaling)
    with pytest.raises(UserError, match="can grow to 3 nodes"):
        check_storage_shared(f"file://{tmp_path}", autoscaling)
    check_storage_shared(str(tmp_path), autoscaling, declared_shared=True)  # --shared-storage (NFS)
    fixed = ClusterShape(live_nodes=({"CPU": 1.0}, {"CPU": 1.0}))
    with pytest.raises(UserError, match="has 2 nodes"):
        check_storage_shared(str(tmp_path), fixed)
    check_storage_shared(str(tmp_path), ClusterShape(live_nodes=({"CPU": 2.0},)))  # one node: any folder
    # Ray's fake_multinode provider runs every node on this machine: a local folder is shared.
    fake = _yaml_shape({"gpu": {"resources": {"GPU": 2}, "max_workers": 2}}, 2)
    check_storage_shared(str(tmp_path), type(fake)(**{**fake.__dict__, "single_host": True}))


def test_cluster_config_flag(tmp_path: Path) -> None:
    import ray

    from model.errors import UserError
    from sweeper.placement import cluster_shape

    if ray.is_initialized():
        pytest.skip("another test left Ray connected")
    assert cluster_shape().max_nodes() == 1  # no Ray, no config: this machine
    path = tmp_path / "cluster.yaml"
    path.write_text(CLUSTER_YAML.read_text())
    assert cluster_shape(str(path)).max_total("GPU") == 16
    path.write_text("just: text\n")
    with pytest.raises(UserError, match="not a cluster-launcher config"):
        cluster_shape(str(path))
    with pytest.raises(UserError, match="cannot read"):
        cluster_shape(str(tmp_path / "missing.yaml"))


def test_reachable_resources_of_cluster_yaml() -> None:
    from sweeper.placement import DRIVER_RESOURCE, shape_from_launcher_config

    cfg = _load()
    shape = shape_from_launcher_config(cfg)
    gpu = next(iter(_gpu_types(cfg).values()))
    n = min(gpu["max_workers"], cfg["max_workers"])
    head = cfg["available_node_types"][cfg["head_node_type"]]["resources"]
    assert shape.reachable_resources() == {
        "CPU": float(n * gpu["resources"]["CPU"]),
        "GPU": float(n * gpu["resources"]["GPU"]),
        DRIVER_RESOURCE: float(head[DRIVER_RESOURCE]),
    }
    assert shape.node_kinds() == [{k: float(v) for k, v in gpu["resources"].items()}]


def test_the_heads_memory_bounds_the_trials_at_once_and_a_larger_request_is_refused_in_one_line() -> None:
    """The head advertises one trial_driver unit per trial its memory holds (docs/cluster.md says
    the same number); a sweep on that cluster runs at most that many and refuses more, naming why."""
    from model.errors import UserError
    from sweeper.placement import DRIVER_RESOURCE, max_concurrent_trials, shape_from_launcher_config, trial_shape

    cfg = _load()
    drivers = cfg["available_node_types"][cfg["head_node_type"]]["resources"][DRIVER_RESOURCE]
    assert f"`trial_driver: {drivers}`" in DOCS.read_text()
    wide = {**cfg, "max_workers": 100}  # enough GPU nodes that only the head can bind
    wide["available_node_types"] = copy.deepcopy(cfg["available_node_types"])
    for t in _gpu_types(wide).values():
        t["max_workers"] = 100
    shape = shape_from_launcher_config(wide, [])
    trial = trial_shape(1, True, None, shape)
    assert trial.driver == {DRIVER_RESOURCE: 1.0}
    assert max_concurrent_trials(shape.reachable_resources(), trial, 1000) == drivers
    with pytest.raises(UserError) as err:
        max_concurrent_trials(shape.reachable_resources(), trial, 1000, requested=drivers + 1)
    msg = str(err.value)
    assert "\n" not in msg and f"exceeds the {drivers} trial(s)" in msg and "trial_driver resource" in msg
    # where GPUs bind first, the message does not blame the head
    with pytest.raises(UserError) as err:
        max_concurrent_trials(shape_from_launcher_config(cfg, []).reachable_resources(), trial, 1000, requested=drivers)
    assert "trial_driver" not in str(err.value)
