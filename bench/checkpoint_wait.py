"""What an epoch waits for its checkpoint: Ray Train's synchronous upload against its asynchronous one.

    python -m bench.checkpoint_wait [--epochs 6] [--rounds 2] [--epoch-s 2.0] [--case cifar_small]

A one-worker ``TorchTrainer`` writes, every "epoch", the checkpoint the sweep's worker writes
(:func:`sweeper.checkpoint.save_checkpoint`: weights, the training step's state with EMA and Adam after
one step, RNG states) of the ``--case`` model of :mod:`bench.cases` (default: the paper's small CIFAR10 i-DenseNet,
8.7M parameters) and reports it to an S3 bucket served by moto on 127.0.0.1. Training is stood in for by
``--epoch-s`` seconds of sleep, so the figure isolates the checkpoint: the **wait** is the time from the
end of an epoch's training to the start of the next (writing the folder plus ``ray.train.report``).
The two modes alternate, ``--rounds`` times each, in one Ray session; the first epoch of each run is
left out (it pays the run's first connection to storage). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import statistics
import sys
import tempfile
import time
from typing import Any

MODES = ("SYNC", "ASYNC")


def _loop(config: dict[str, Any]) -> list[float]:
    import ray.train
    import torch

    from bench.cases import make_case, train_step
    from sweeper.checkpoint import capture_rng, save_checkpoint

    case = make_case(config["case"], torch.device("cpu"), batch=2)
    step = train_step(case)
    step(case.batch(0))  # one step, so that Adam's moments and the EMA exist, as in a real checkpoint
    state = {"model": case.model.state_dict(), "step": step.state_dict(), "epoch": 0, "history": []}
    mode = ray.train.CheckpointUploadMode[config["mode"]]
    waits = []
    for epoch in range(config["epochs"]):
        time.sleep(config["epoch_s"])  # the epoch's training
        t0 = time.perf_counter()
        d = tempfile.mkdtemp(prefix="bench-ckpt-")
        save_checkpoint(d, 0, {**state, "epoch": epoch + 1}, capture_rng(), {"epoch": epoch + 1})
        ray.train.report({"epoch": epoch + 1},
                         checkpoint=ray.train.Checkpoint.from_directory(d), checkpoint_upload_mode=mode,
                         delete_local_checkpoint_after_upload=True)
        waits.append(time.perf_counter() - t0)
    return waits


def _checkpoint_bytes(case: str) -> int:
    import torch

    from bench.cases import make_case, train_step
    from sweeper.checkpoint import STATE_FILE, capture_rng, save_checkpoint

    c = make_case(case, torch.device("cpu"), batch=2)
    step = train_step(c)
    step(c.batch(0))
    with tempfile.TemporaryDirectory() as d:
        save_checkpoint(d, 0, {"model": c.model.state_dict(), "step": step.state_dict()}, capture_rng(), {})
        return os.path.getsize(os.path.join(d, STATE_FILE))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.checkpoint_wait", description=__doc__.split("\n\n")[0])
    p.add_argument("--case", default="cifar_small", help="a training case of bench.cases (default cifar_small)")
    p.add_argument("--epochs", type=int, default=6, help="epochs per run (default 6)")
    p.add_argument("--rounds", type=int, default=2, help="runs per mode, alternating (default 2)")
    p.add_argument("--epoch-s", type=float, default=2.0, help="seconds of stand-in training per epoch (default 2)")
    args = p.parse_args(argv)
    if args.epochs < 2 or args.rounds < 1 or args.epoch_s < 0:
        print("bench.checkpoint_wait: --epochs must be >= 2, --rounds >= 1, --epoch-s >= 0", file=sys.stderr)
        return 2

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import boto3
    import ray
    from moto.server import ThreadedMotoServer
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update({"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_EC2_METADATA_DISABLED": "true"})
    boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).create_bucket(Bucket="bench")
    size = _checkpoint_bytes(args.case)
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for r in range(args.rounds):
            for mode in MODES:
                t0 = time.perf_counter()
                result = TorchTrainer(
                    _loop, train_loop_config={"case": args.case, "mode": mode, "epochs": args.epochs,
                                              "epoch_s": args.epoch_s},
                    scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
                    run_config=RunConfig(name=f"{mode.lower()}-{r}", storage_path="s3://bench/runs"),
                ).fit()
                waits = result.return_value[1:]
                runs[mode].append({"median_wait_s": statistics.median(waits), "max_wait_s": max(waits),
                                   "run_s": time.perf_counter() - t0, "checkpoint": result.checkpoint.path})
                print(f"{mode:5} round {r}: median wait {runs[mode][-1]['median_wait_s']:.3f} s", file=sys.stderr)
    finally:
        ray.shutdown()
        server.stop()
    med = {m: statistics.median(x["median_wait_s"] for x in runs[m]) for m in MODES}
    print(json.dumps({"case": args.case, "state_pt_mb": round(size / 2**20, 1), "epochs": args.epochs,
                      "epoch_s": args.epoch_s, "rounds": args.rounds, "storage": "moto S3 on 127.0.0.1",
                      "median_wait_s": med, "sync_over_async": med["SYNC"] / med["ASYNC"], "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
