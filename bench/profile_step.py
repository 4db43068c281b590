"""Where a training step spends its time: per phase (wall clock) and per operator (torch.profiler).

    python -m bench.profile_step --case toy --steps 10 --threads 2 [--top 25] [--trace out.json]

Phases follow :class:`bench.step.TrainStep` (forward + log-det estimator, backward, clip, Adam,
LC reset + update_lipschitz, EMA); the operator table sorts by self CPU time (self CUDA time on GPU).
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import contextmanager
from typing import Iterator

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from bench.cases import make_case
from bench.step import TrainStep


class _PhaseTimer:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.times: dict[str, list[float]] = {}

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._sync()
        t = time.perf_counter()
        with record_function(name):
            yield
        self._sync()
        self.times.setdefault(name, []).append(time.perf_counter() - t)


def timed_step(step: TrainStep, batch: torch.Tensor, timer: _PhaseTimer) -> None:
    """The body of :meth:`TrainStep.__call__`, split into timed phases (same calls, same order)."""
    r = step.recipe
    lr = r.lr * min((step.itr + 1) / r.warmup_iters, 1.0) if r.warmup_iters > 0 else r.lr
    for group in step.optimizer.param_groups:
        group["lr"] = lr
    with timer.phase("forward+estimator"):
        loss = step._loss(step._input(batch))
    with timer.phase("backward"):
        loss.backward()
    with timer.phase("clip"):
        step._clip()
    with timer.phase("adam+zero_grad"):
        step.optimizer.step()
        step.optimizer.zero_grad(set_to_none=True)
    with timer.phase("lc_reset+update_lipschitz"):
        if r.lc_hold:
            step.model.reset_concat()
        step.model.update_lipschitz(step.cfg.sn_train_iters)
    with timer.phase("ema"):
        step._ema_update()
    step.itr += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_step", description=__doc__)
    parser.add_argument("--case", default="toy", help="a training case of bench.cases (toy, image111, ...)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--trace", default=None, help="write a Chrome trace here")
    parser.add_argument("--no-ops", action="store_true", help="phase table only")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    case = make_case(args.case, device, batch=args.batch)
    step = TrainStep(case.model)
    for i in range(args.warmup):
        step(case.batch(i))
    timer = _PhaseTimer(device)
    for i in range(args.steps):
        timed_step(step, case.batch(i), timer)
    total = sum(statistics.median(v) for v in timer.times.values())
    print(f"case {args.case}: medians over {args.steps} steps, sum {total * 1e3:.1f} ms")
    for name, v in timer.times.items():
        med = statistics.median(v)
        print(f"  {name:28s} {med * 1e3:8.2f} ms  {100 * med / total:5.1f}%")
    if args.no_ops:
        return 0
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=False) as prof:
        for i in range(args.steps):
            timed_step(step, case.batch(i), _PhaseTimer(device))
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=args.top))
    if args.trace:
        prof.export_chrome_trace(args.trace)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
