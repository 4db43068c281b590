"""What ``find_unused_parameters=True`` costs a data-parallel step (a benchmark, 2 CPU processes).

The authors' blocks carry two scalars that never train (``geom_p``, ``lamb``: the roulette law is
fixed). As trainable parameters that no loss reaches, they would force DDP to search the autograd
graph for unused parameters after every forward. Here they are frozen (``requires_grad=False``,
still counted, :meth:`model.flow.Flow.num_parameters`), so the sweeper's worker wraps the model in
plain DDP. This runs both in one process group, alternating step by step:

* ``before``: ``geom_p`` / ``lamb`` trainable, ``DistributedDataParallel(find_unused_parameters=True)``;
* ``after``: as the sweeper runs it, frozen scalars and plain DDP.

Both arms start from the same weights and draw the same dequantisation noise and the same
Russian-roulette series lengths at each step, so they do the same arithmetic; the parameters
of the two arms are compared at the end (they must agree to float rounding). Per arm: the median
step time over both ranks' slower one; the ratio before / after.

    python -m bench.ddp_unused --case image111 --steps 12
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2


def _worker(rank: int, port: int, args: argparse.Namespace, out: str) -> None:
    from torch.nn.parallel import DistributedDataParallel

    from bench.cases import make_case, train_step
    from model.iresblock import InvertibleResBlock

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.set_num_threads(args.threads)
    arms = {}
    for name, find_unused in (("before", True), ("after", False)):
        case = make_case(args.case, torch.device("cpu"), batch=args.batch // WORLD, seed=0)
        gen = torch.Generator().manual_seed(1)
        for block in case.model.modules():
            if isinstance(block, InvertibleResBlock):
                block.roulette_generator = gen
                block.geom_p.requires_grad_(find_unused)
                block.lamb.requires_grad_(find_unused)
        ddp = DistributedDataParallel(case.model, find_unused_parameters=find_unused)
        arms[name] = (case, train_step(case, forward=ddp))
    times: dict[str, list[float]] = {name: [] for name in arms}
    for i in range(args.warmup + args.steps):
        order = list(arms) if i % 2 == 0 else list(reversed(arms))
        for name in order:
            case, step = arms[name]
            torch.manual_seed(1000 + i)  # the same dequantisation noise for both arms
            dist.barrier()
            t0 = time.perf_counter()
            step(case.batch(i), hold_concat=True)
            dist.barrier()
            if i >= args.warmup:
                times[name].append(time.perf_counter() - t0)
    params = {n: torch.cat([p.detach().flatten() for p in arms[n][0].model.parameters()]) for n in arms}
    diff = float((params["before"] - params["after"]).abs().max())
    gathered: list[object] = [None] * WORLD
    dist.all_gather_object(gathered, times)
    if rank == 0:
        slowest = {n: [max(g[n][k] for g in gathered) for k in range(len(times[n]))] for n in times}
        result = {"case": args.case, "batch": args.batch, "world": WORLD, "threads_per_rank": args.threads,
                  "steps": args.steps, "torch": torch.__version__,
                  "median_s": {n: statistics.median(v) for n, v in slowest.items()},
                  "ratios": [b / a for b, a in zip(slowest["before"], slowest["after"])],
                  "max_param_diff": diff}
        result["median_ratio"] = statistics.median(result["ratios"])
        with open(out, "w") as f:
            json.dump(result, f)
    dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ddp_unused", description=__doc__.split("\n\n")[0])
    p.add_argument("--case", default="image111", help="a training case of bench.cases (toy, image111, ...)")
    p.add_argument("--batch", type=int, default=16, help="global batch (split over the 2 ranks)")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="threads per rank")
    args = p.parse_args(argv)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"ddp-unused-{os.getpid()}.json")
    mp.spawn(_worker, args=(port, args, out), nprocs=WORLD, join=True)
    with open(out) as f:
        result = json.load(f)
    os.unlink(out)
    m = result["median_s"]
    print(f"{args.case}, global batch {args.batch}, 2 ranks x {args.threads} thread(s): before {m['before']:.4f} s, "
          f"after {m['after']:.4f} s per step; before/after median {result['median_ratio']:.3f} "
          f"(range {min(result['ratios']):.3f}-{max(result['ratios']):.3f}); parameters of the two arms differ by "
          f"at most {result['max_param_diff']:.2e}", file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
