"""Everything a trial costs besides training, in one JSON object: start-up, checkpoints, data, the head.

    python -m bench.trial_costs [--quick] [--only startup,checkpoints,data,head]

Runs the four benchmarks one after the other, each in its own process (each starts and stops its own
Ray instance or worker processes), and prints ``{"startup": ..., "checkpoints": ..., "data": ...,
"head": ...}`` with each one's own JSON (:mod:`bench.startup`, :mod:`bench.checkpoint_wait`,
:mod:`bench.data_scaling`, :mod:`bench.head_memory`; their docstrings say what is measured and how).
The defaults are the settings docs/performance.md reports (about 25 minutes on 2 cores);
``--quick`` runs each with fewer repeats (about 8 minutes), for a check that they all still run.
A part that fails is reported as ``{"error": ...}`` and the others still run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

PARTS: dict[str, tuple[str, list[str], list[str]]] = {
    # name: (module, full arguments, --quick arguments)
    "startup": ("bench.startup", ["--trials", "3"], ["--trials", "2", "--cases", "toy-1,digits-1"]),
    "checkpoints": ("bench.checkpoint_wait", ["--epochs", "6", "--rounds", "3"], ["--epochs", "3", "--rounds", "1"]),
    "data": ("bench.data_scaling", [], ["--images", "32000", "--loader-workers", "0,2", "--batch", "16"]),
    "head": ("bench.head_memory", [], ["--trials", "2", "--epochs", "2"]),
}


def run_part(module: str, args: list[str]) -> dict:
    """One benchmark's JSON (the last object it printed, whatever Ray printed before it), or its error."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True)
    seconds = round(time.perf_counter() - t0, 1)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": f"exit {proc.returncode}: {tail}", "seconds": seconds}
    lines = proc.stdout.splitlines()
    for i in reversed([i for i, line in enumerate(lines) if line.startswith("{")]):
        try:
            return {**json.loads("\n".join(lines[i:])), "seconds": seconds}
        except ValueError:
            continue
    return {"error": "no JSON on stdout", "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.trial_costs", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats: a check that every part runs")
    p.add_argument("--only", default=",".join(PARTS), help=f"parts to run (default {','.join(PARTS)})")
    args = p.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in PARTS]
    if unknown:
        print(f"bench.trial_costs: unknown part(s) {', '.join(unknown)}; valid: {', '.join(PARTS)}", file=sys.stderr)
        return 2
    out = {}
    for name in names:
        module, full, quick = PARTS[name]
        print(f"bench.trial_costs: {name} ({module}) ...", file=sys.stderr, flush=True)
        out[name] = run_part(module, quick if args.quick else full)
        print(f"bench.trial_costs: {name} done in {out[name]['seconds']} s"
              + (f" ({out[name]['error']})" if "error" in out[name] else ""), file=sys.stderr, flush=True)
    print(json.dumps(out, indent=1))
    return 0 if not any("error" in v for v in out.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
