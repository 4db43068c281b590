"""What an image data set costs a node: resident memory per rank, and the loader's speed against the step's.

    python -m bench.data_scaling [--images 128000] [--ranks 1,4] [--loader-workers 0,1,2]
                                 [--batch 16,64] [--step-case cifar_small] [--device cpu]

Writes a synthetic ImageNet32 in the real format (``train_data_batch_1..10.npz`` with ``data`` uint8
(N, 3072) and ``labels`` 1..1000, ``val_data.npz``; uniform random levels, which cost the loader what
real images cost) to a temporary folder, then measures:

* **memory**: ``R`` rank processes on this node (spawned, like Ray Train's workers), each building its
  loaders with :func:`model.data.make_loaders` for rank r of R and reading one epoch of its training
  shard plus the validation and test sets, once with the node-shared memory map (``share=True``, the
  default) and once with a private copy per process (``share=False``). While all R are alive, each
  one's RSS and PSS are read from ``/proc/<pid>/smaps_rollup``; PSS splits a page among the
  processes that map it, so the sum over ranks is what the node holds for them. Each rank's PSS
  before it loads anything is its baseline (Python, torch); the data's share is the sum of the
  differences.
* **throughput**: the training loader of rank 0 of 4 (the shipped cluster's four GPUs per node)
  at each per-rank batch size and number of loader workers, images per second over whole passes of
  its shard; and the step of ``--step-case`` (:mod:`bench.cases`) on ``--device`` at the same batch,
  images per second over 3 steps after one warm-up. The loader is timed twice: over the page cache
  (every epoch after a node's first) and cold (the file's pages evicted first, as on a node's first
  epoch; a single pass). The ratio loader / step says how far the loader
  is from being the bottleneck. The paper's own rate is printed beside it: its full models take about
  410 s per CIFAR10 epoch (50,000 images) on 4 GPUs (appendix B), 30.5 images/s per GPU.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

PAPER_IMAGES_PER_S_PER_GPU = 50_000 / 410 / 4  # appendix B: ~410 s per CIFAR10 epoch on 4 TITAN RTX


def write_imagenet32(root: Path, n_train: int, n_val: int, seed: int = 0) -> None:
    """A synthetic ImageNet32 in ``root/imagenet32`` in the real npz format: 10 training batches of
    about n_train / 10 images and a validation file of n_val."""
    folder = root / "imagenet32"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sizes = [n_train // 10 + (1 if i < n_train % 10 else 0) for i in range(10)]
    for i, n in enumerate(sizes, start=1):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        np.savez(folder / f"train_data_batch_{i}.npz", data=data, labels=rng.integers(1, 1001, n),
                 mean=data.mean(0))
    np.savez(folder / "val_data.npz", data=rng.integers(0, 256, (n_val, 3072), dtype=np.uint8),
             labels=rng.integers(1, 1001, n_val))


def memory_kib(pid: int) -> dict[str, int]:
    """RSS and PSS of one process in KiB, from ``/proc/<pid>/smaps_rollup``."""
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss", "Pss_Anon", "Pss_File"):
            out[key.lower()] = int(rest.split()[0])
    return out


def _rank(root: str, rank: int, world: int, share: bool, ready: Any, done: Any, out: Any) -> None:
    """One rank: baseline, loaders, one pass over its training shard, validation and test; then wait
    while the parent reads the memory of every rank."""
    import os

    import torch

    from model.data import make_loaders

    torch.set_num_threads(1)
    before = memory_kib(os.getpid())
    lo = make_loaders("imagenet32", root, 64 * world, 200 * world, rank, world, seed=0, share=share)
    seen = 0
    for loader in (lo.train, lo.val, lo.test):
        for x, _ in loader:
            seen += len(x)
    out.put({"rank": rank, "pid": os.getpid(), "before": before, "images_read": seen})
    ready.wait()
    done.wait()


def node_memory(root: Path, world: int, share: bool) -> dict[str, Any]:
    """Sum over ``world`` rank processes of their PSS after one epoch, and of their baselines."""
    ctx = mp.get_context("spawn")
    ready, done, out = ctx.Barrier(world + 1), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_rank, args=(str(root), r, world, share, ready, done, out)) for r in range(world)]
    for p in procs:
        p.start()
    ranks = [out.get(timeout=1800) for _ in procs]
    ready.wait()
    after = {r["rank"]: memory_kib(r["pid"]) for r in ranks}
    done.set()
    for p in procs:
        p.join()
    gib = 1024 ** 2
    pss = sum(a["pss"] for a in after.values())
    base = sum(r["before"]["pss"] for r in ranks)
    return {"ranks": world, "shared": share, "node_pss_gib": pss / gib, "baseline_pss_gib": base / gib,
            "data_gib": (pss - base) / gib, "rss_per_rank_gib": [after[r]["rss"] / gib for r in sorted(after)],
            "images_read": sum(r["images_read"] for r in ranks)}


def evict(path: Path) -> None:
    """Drop a file's pages from the page cache (those no process maps), as on a node that has not read
    it yet."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def loader_rate(root: Path, batch: int, workers: int, world: int = 4, min_s: float = 3.0, cold: bool = False) -> float:
    """Images per second of rank 0's training loader (of ``world``) at a per-rank ``batch``: whole
    passes over its shard for at least ``min_s`` seconds; ``cold``: one pass, the training array's
    pages evicted from the page cache first."""
    from model.data import make_loaders

    if cold:
        evict(root / "imagenet32" / "cache" / "train_images_uint8.npy")
    lo = make_loaders("imagenet32", root, batch * world, 200 * world, 0, world, seed=0, num_workers=workers)
    n, t0 = 0, time.perf_counter()
    while n == 0 or (not cold and time.perf_counter() - t0 < min_s):
        for x, _ in lo.train:
            n += len(x)
    return n / (time.perf_counter() - t0)


def step_rate(case: str, batch: int, device: str, steps: int = 3) -> float:
    """Images per second of the production training step of ``case`` at ``batch``."""
    import torch

    from bench.cases import make_case, train_step

    dev = torch.device(device)
    c = make_case(case, dev, batch=batch)
    step = train_step(c)
    step(c.batch(0))
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(steps):
        step(c.batch(i + 1))
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.data_scaling", description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=128_000, help="synthetic training images (real: 1,281,167)")
    ap.add_argument("--val-images", type=int, default=10_000, help="synthetic test images (real: 50,000)")
    ap.add_argument("--ranks", type=_ints, default=[1, 4], help="rank processes per node to measure")
    ap.add_argument("--loader-workers", type=_ints, default=[0, 1, 2])
    ap.add_argument("--batch", type=_ints, default=[16, 64], help="per-rank batch sizes")
    ap.add_argument("--step-case", default="cifar_small", help="bench.cases model whose step is timed ('' skips)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--root", type=Path, default=None, help="folder for the synthetic set (default: a temporary one)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="idn-data-", dir=args.root) as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        write_imagenet32(root, args.images, args.val_images)
        written = time.perf_counter() - t0
        from model.data import _imagenet_cache

        t0 = time.perf_counter()
        _imagenet_cache(root, True, None)
        _imagenet_cache(root, False, None)
        converted = time.perf_counter() - t0
        array_gib = args.images * 3072 / 1024 ** 3
        print(f"synthetic ImageNet32: {args.images} training images ({array_gib:.2f} GiB uint8), written in "
              f"{written:.1f} s, cached as .npy in {converted:.1f} s", file=sys.stderr)
        memory = []
        for world in args.ranks:
            for share in (True, False):
                row = node_memory(root, world, share)
                memory.append(row)
                print(f"{world} rank(s), {'shared' if share else 'private'}: node PSS {row['node_pss_gib']:.2f} GiB "
                      f"(data {row['data_gib']:.2f} GiB)", file=sys.stderr)
        rates = []
        for batch in args.batch:
            step = step_rate(args.step_case, batch, args.device) if args.step_case else None
            for workers in args.loader_workers:
                rate = statistics.median(loader_rate(root, batch, workers) for _ in range(3))
                cold = statistics.median(loader_rate(root, batch, workers, cold=True) for _ in range(3))
                rates.append({"batch": batch, "loader_workers": workers, "loader_images_per_s": rate,
                              "cold_loader_images_per_s": cold,
                              "step_images_per_s": step, "loader_over_step": rate / step if step else None,
                              "loader_over_paper_gpu": rate / PAPER_IMAGES_PER_S_PER_GPU})
                print(f"batch {batch}, {workers} loader workers: loader {rate:,.0f} images/s ({cold:,.0f} from a cold "
                      f"page cache), step "
                      f"{step if step else float('nan'):.2f} images/s", file=sys.stderr)
    print(json.dumps({"images": args.images, "array_gib": array_gib, "write_s": written, "cache_s": converted,
                      "memory": memory, "throughput": rates, "step_case": args.step_case, "device": args.device,
                      "paper_images_per_s_per_gpu": PAPER_IMAGES_PER_S_PER_GPU}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
