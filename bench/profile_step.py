"""Where the production training step spends its time: per phase and per operator (torch.profiler).

    python -m bench.profile_step --case cifar_small --steps 4 --threads 2 [--top 25] [--trace out.json]

The phases are the ``record_function`` ranges :class:`model.train_step.TrainStep` marks
(forward + log-det estimator, backward, gradient norm + clip + the host read, Adam, LC hold +
``update_lipschitz``, EMA); the operator table sorts by self CPU time (self CUDA time on a GPU).
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from bench.cases import make_case, train_step

PHASE_PREFIX = "step: "


def phase_table(prof, steps: int, device: torch.device) -> list[tuple[str, float, float]]:
    """(phase, ms per step, share of the step) from the profiler's ranges."""
    cuda = device.type == "cuda"
    rows = []
    for e in prof.key_averages():
        if e.key.startswith(PHASE_PREFIX):
            us = e.device_time_total if cuda else e.cpu_time_total
            rows.append((e.key[len(PHASE_PREFIX):], us / 1e3 / steps))
    total = sum(ms for _, ms in rows) or 1.0
    return [(name, ms, ms / total) for name, ms in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_step", description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", default="toy", help="a training case of bench.cases (toy, image111, cifar_small, ...)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--trace", default=None, help="write a Chrome trace here")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    case = make_case(args.case, device, batch=args.batch)
    step = train_step(case)
    for i in range(args.warmup):
        step(case.batch(i), hold_concat=True)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=False) as prof:
        for i in range(args.steps):
            step(case.batch(i), hold_concat=True)
    print(f"case {args.case}, batch {case.batch_size}, {args.steps} steps, {args.threads} thread(s):")
    for name, ms, share in phase_table(prof, args.steps, device):
        print(f"  {name:28s} {ms:10.1f} ms/step  {100 * share:5.1f}%")
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=args.top))
    if args.trace:
        prof.export_chrome_trace(args.trace)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
