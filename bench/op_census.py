"""Operator census of one training step, the authors' and this project's (a benchmark).

Where :mod:`bench.side_by_side` says how long each step takes, this says what each step *does*:
per step, every ATen operator's call count and self CPU time (``torch.profiler``), grouped into
convolutions (forward and backward), matrix products, element-wise and reduction work, and the
rest, with the mean number of log-det series terms per block the step drew (Russian roulette,
paper §3 / Chen et al. 2019: the work of the estimator grows with it). Equal maths means equal
convolution calls per block-term on both sides; the share of the step those calls take bounds what
any rewrite of the remaining work can gain (Amdahl: at most 1 / convolution share).

The authors' side runs their harness script (``--harness``, reading their files from ``--ref`` at
run time) twice under the profiler, with one and with three timed steps after one warm-up, and
takes the difference over the two extra steps, so model construction cancels. This project's side
profiles :class:`model.train_step.TrainStep` on :mod:`bench.cases` after the same two unprofiled
steps. Both run in fresh processes with the same threads.

    python -m bench.op_census --ref ~/ref-idensenet --harness ../shared/reference/harness --case cifar_small
"""

from __future__ import annotations

import argparse
import json
import os
import re
import runpy
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUR_STEPS = 2  # profiled steps of this project's side (the authors' side: 3 − 1 timed steps)
GROUPS = (("convolution", ("conv",)), ("matmul", ("mm", "matmul", "linear", "addmm", "bmm")),
          ("element-wise", ("mul", "add", "sub", "div", "sigmoid", "silu", "exp", "neg", "rsub", "relu",
                            "where", "abs", "pow", "sqrt", "clamp", "cat", "copy_", "fill_", "zero_", "lerp",
                            "leaky")),
          ("reduction", ("sum", "norm", "mean", "max", "min", "dot")))


def group_of(op: str) -> str:
    if op.startswith("compiled::"):
        return "fused (compiled)"
    name = op.split("::")[-1]
    for group, keys in GROUPS:
        if any(k in name for k in keys):
            return group
    return "other"


def _census(prof) -> dict[str, list[float]]:
    """{ATen op: [calls, self CPU µs]} over the profiled region; the kernels inductor generated (the
    fused dense layers) are not ATen operators and are counted under ``compiled::kernels``."""
    out = {e.key: [e.count, e.self_cpu_time_total] for e in prof.key_averages() if e.key.startswith("aten::")}
    compiled = [e for e in prof.key_averages() if e.key.startswith("## Call CompiledFxGraph")]
    if compiled:
        out["compiled::kernels"] = [sum(e.count for e in compiled), sum(e.self_cpu_time_total for e in compiled)]
    return out


def profile_script(out: str, script: str, args: list[str]) -> None:
    """Run ``script`` as ``__main__`` under the profiler; write its census to ``out``."""
    from torch.profiler import ProfilerActivity, profile

    sys.argv = [script, *args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        runpy.run_path(script, run_name="__main__")
    Path(out).write_text(json.dumps(_census(prof)))


def profile_ours(out: str, case_name: str, threads: int, steps: int, fused: bool = False) -> None:
    """Two unprofiled steps, then ``steps`` profiled steps of the production step (``fused``: the train
    config's fused dense layers); census and terms."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from bench.cases import make_case, train_step
    from model.iresblock import InvertibleResBlock

    torch.set_num_threads(threads)
    case = make_case(case_name, torch.device("cpu"))
    step = train_step(case, fused=fused)
    for i in range(2):
        step(case.batch(i), hold_concat=True)
    terms = []
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(2, 2 + steps):
            step(case.batch(i), hold_concat=True)
            blocks = [m for m in case.model.modules() if isinstance(m, InvertibleResBlock) and m.last_n_terms]
            terms.append(sum(m.last_n_terms for m in blocks) / max(1, len(blocks)))
    ops = {op: [calls / steps, us / steps] for op, (calls, us) in _census(prof).items()}  # per step
    Path(out).write_text(json.dumps({"ops": ops, "terms": terms, "steps": steps}))


def _run(cmd: list[str], env: dict[str, str], cwd: Path) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd[:5])}... exited {proc.returncode}: {proc.stderr[-800:]}")
    return proc.stdout


def authors_census(case: str, ref: Path, harness: Path, threads: int) -> dict[str, Any]:
    """Per-step census of the authors' step: (run with 3 timed steps − run with 1) / 2."""
    from bench.side_by_side import CASES

    script, flags, _, _ = CASES[case]
    runs = {}
    for steps in (1, 3):
        env = {**os.environ, "REF_IDENSENET": str(ref), "NT": str(threads), "OMP_NUM_THREADS": str(threads),
               "WARM": "1", "STEPS": str(steps)}
        with tempfile.TemporaryDirectory(prefix="idn-census-") as tmp:
            out = os.path.join(tmp, "census.json")
            extra = ["--save", tmp] if case == "toy" else []
            stdout = _run([sys.executable, "-W", "ignore", "-m", "bench.op_census", "--_script", out,
                           str(harness / script), *flags, *extra], env, ROOT)
            runs[steps] = (json.loads(Path(out).read_text()), stdout)
    (short, _), (long, stdout) = runs[1], runs[3]
    ops = {op: [(long[op][0] - short.get(op, [0, 0])[0]) / 2, (long[op][1] - short.get(op, [0, 0])[1]) / 2]
           for op in long}
    terms = [float(m) for m in re.findall(r"mean_terms/block=([\d.]+)", stdout)][2:4]  # the two extra steps
    return {"ops": ops, "terms": terms, "steps": 1}


def summary(census: dict[str, Any]) -> dict[str, Any]:
    ops = census["ops"]
    total = sum(us for _, us in ops.values()) or 1.0
    groups: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for op, (calls, us) in ops.items():
        groups[group_of(op)][0] += calls
        groups[group_of(op)][1] += us
    conv_calls = sum(c for op, (c, _) in ops.items() if op.split("::")[-1] in ("convolution",))
    top = sorted(ops.items(), key=lambda kv: -kv[1][1])[:12]
    mean_terms = sum(census["terms"]) / max(1, len(census["terms"]))
    return {
        "self_cpu_ms_per_step": total / 1e3, "aten_calls_per_step": sum(c for c, _ in ops.values()),
        "mean_terms_per_block": mean_terms, "convolution_calls_per_step": conv_calls,
        "groups": {g: {"calls": c, "ms": us / 1e3, "share": us / total} for g, (c, us) in sorted(groups.items())},
        "top_ops": [{"op": op, "calls": c, "ms": us / 1e3, "share": us / total} for op, (c, us) in top],
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_script"]:  # internal: profile a foreign script in this process
        profile_script(argv[1], argv[2], argv[3:])
        return 0
    if argv[:1] == ["--_ours"]:
        profile_ours(argv[1], argv[2], int(argv[3]), int(argv[4]), fused=argv[5:6] == ["fused"])
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.op_census", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ref", required=True, type=Path, help="work tree of yperugachidiaz/invertible_densenets")
    parser.add_argument("--harness", required=True, type=Path, help="the side-by-side harness folder")
    parser.add_argument("--case", default="cifar_small", choices=("toy", "image111", "cifar_small"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fused", action="store_true", help="also census this project's fused step (train config fused: true)")
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args(argv)
    for p in (args.ref / "train_img.py", args.harness / "time_img.py"):
        if not p.is_file():
            parser.error(f"{p} not found (see --ref and --harness)")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    with tempfile.TemporaryDirectory(prefix="idn-census-") as tmp:
        out = os.path.join(tmp, "ours.json")
        _run([sys.executable, "-m", "bench.op_census", "--_ours", out, args.case, str(args.threads), str(OUR_STEPS)],
             env, ROOT)
        ours = json.loads(Path(out).read_text())
        if args.fused:
            _run([sys.executable, "-m", "bench.op_census", "--_ours", out, args.case, str(args.threads),
                  str(OUR_STEPS), "fused"], env, ROOT)
            ours_fused = json.loads(Path(out).read_text())
    result = {"case": args.case, "threads": args.threads,
              "authors": summary(authors_census(args.case, args.ref, args.harness, args.threads)),
              "ours": summary(ours)}
    if args.fused:
        result["ours_fused"] = summary(ours_fused)
    for side in [k for k in ("authors", "ours", "ours_fused") if k in result]:
        s = result[side]
        terms = f"{s['mean_terms_per_block']:.2f}" if s["mean_terms_per_block"] else "n/a"  # the toy harness prints none
        print(f"{side}: {s['self_cpu_ms_per_step']:.0f} ms self CPU per step, {s['aten_calls_per_step']:.0f} ATen "
              f"calls, {terms} series terms per block, {s['convolution_calls_per_step']:.0f} convolutions",
              file=sys.stderr)
        for g, v in s["groups"].items():
            print(f"    {g:13s} {v['calls']:8.0f} calls {v['ms']:9.1f} ms  {100 * v['share']:5.1f}%", file=sys.stderr)
    conv = result["ours"]["groups"].get("convolution", {}).get("share", 0.0)
    if conv:
        print(f"convolutions are {100 * conv:.0f}% of this project's step: removing every other operator "
              f"would make it at most {1 / conv:.2f}x faster", file=sys.stderr)
    from bench.measure import emit_json

    emit_json(result, args.json_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
