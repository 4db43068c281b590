"""Time to first step and payback of the fused step (train config ``fused: true``), a benchmark.

Each case's production step (:class:`model.train_step.TrainStep` on :mod:`bench.cases`) runs in a
fresh process three ways: eager; fused with an empty inductor cache (a node's first trial); fused
again with the cache that run left (every later trial on the node). Each process reports its first
step (compilation included) and the median of the next ``--steps`` steps; the payback is the first
step's extra time over the per-step saving, in steps (none if the fused step is not faster).

    python -m bench.compile_payback [--cases image111,cifar_small] [--steps 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _worker(case_name: str, fused: bool, steps: int, threads: int) -> dict[str, Any]:
    import torch

    from bench.cases import make_case, train_step

    torch.set_num_threads(threads)
    case = make_case(case_name, torch.device("cpu"))
    step = train_step(case, fused=fused)
    times = []
    for i in range(1 + steps):
        t = time.perf_counter()
        step(case.batch(i), hold_concat=True)
        times.append(time.perf_counter() - t)
    return {"first_step_s": times[0], "step_s": statistics.median(times[1:])}


def _run(case_name: str, fused: bool, steps: int, threads: int, cache: str) -> dict[str, Any]:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "bench.compile_payback", "--_worker", case_name, str(int(fused)), str(steps),
           str(threads)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{case_name} fused={fused}: exit {proc.returncode}: {proc.stderr[-800:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_worker"]:
        print(json.dumps(_worker(argv[1], argv[2] == "1", int(argv[3]), int(argv[4]))))
        return 0
    p = argparse.ArgumentParser(prog="python -m bench.compile_payback", description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="image111,cifar_small")
    p.add_argument("--steps", type=int, default=4, help="steps after the first, their median is the step time")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json-out", default=None)
    args = p.parse_args(argv)
    from bench.measure import emit_json

    out: dict[str, Any] = {"threads": args.threads, "steps": args.steps, "cases": {}}
    for case in args.cases.split(","):
        with tempfile.TemporaryDirectory(prefix="idn-inductor-") as cache:
            eager = _run(case, False, args.steps, args.threads, cache)
            cold = _run(case, True, args.steps, args.threads, cache)
            warm = _run(case, True, args.steps, args.threads, cache)
        saving = eager["step_s"] - warm["step_s"]
        row = {"eager": eager, "fused_cold_cache": cold, "fused_warm_cache": warm,
               "payback_steps_cold": (cold["first_step_s"] - eager["first_step_s"]) / saving if saving > 0 else None,
               "payback_steps_warm": (warm["first_step_s"] - eager["first_step_s"]) / saving if saving > 0 else None}
        out["cases"][case] = row
        print(f"{case}: first step eager {eager['first_step_s']:.2f} s, fused {cold['first_step_s']:.2f} s (empty cache), "
              f"{warm['first_step_s']:.2f} s (warm); step eager {eager['step_s']:.3f} s, fused {cold['step_s']:.3f} / "
              f"{warm['step_s']:.3f} s; pays back after "
              + (f"{row['payback_steps_cold']:.0f} / {row['payback_steps_warm']:.0f} steps" if saving > 0 else "never"),
              file=sys.stderr)
    emit_json(out, args.json_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
