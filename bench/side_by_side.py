"""The authors' training step and this project's, timed side by side in one run (a benchmark).

A ratio is only meaningful when both sides run on the same machine, the same torch and the same
load, so every round runs both, one after the other, and the order flips from round to round. The
authors' side is their own code: the harness scripts (``toy_harness.py``, ``time_img.py``, given by
``--harness``) read ``train_toy.py`` / ``train_img.py`` from a work tree of
``yperugachidiaz/invertible_densenets`` (``--ref``, kept outside this repository) at run time. This
project's side is :mod:`bench.run`'s worker for the same case, which times
:class:`model.train_step.TrainStep`, the step that trains.

Cases and what both sides run (same batch, same estimator: roulette with 2 exact terms, one
Hutchinson probe, Neumann gradient, memory-efficient gradient, the authors' spectral-norm schedule):

* ``toy``: 10 blocks, depth 3, growth 16, LipSwish, learnable concatenation, batch 500, two moons;
* ``image111``: 1-1-1 blocks, depth 3, growth 32, CLipSwish, LC, batch 16, CIFAR10-shaped;
* ``cifar_small``: 4-4-4 blocks, depth 3, growth 178, CLipSwish, LC, batch 16 (the paper's small model).

Per case it prints JSON: each side's median step time per round, the ratio authors / this project
per round (above 1: this project is faster), their median and range, and each side's peak memory:
on the CPU the whole process's resident high-water mark (``wait4``), on the GPU
``torch.cuda.max_memory_allocated`` over the run (one measure for both sides). With ``--device cuda``
the authors' script runs unchanged with CUDA as torch's default device and a synchronising clock
(:func:`authors_on_cuda`); ``--precision tf32`` lets both sides use TF32 tensor cores (not the same
maths as fp32: a separately labelled run).

``--fused`` adds a third side, this project's step with the train config's ``fused: true``
(:mod:`model.fused`; two more warm-up steps pay its compilation), in the same alternation.

    python -m bench.side_by_side --ref ~/ref-idensenet --harness ../shared/reference/harness --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# case: (harness script, its flags, warm-up steps, timed steps)
CASES: dict[str, tuple[str, list[str], int, int]] = {
    "toy": ("toy_harness.py", ["--data", "moons", "--nblocks", "10"], 5, 40),
    "image111": ("time_img.py", ["--data", "cifar10", "--nblocks", "1-1-1", "--densenet", "True",
                                 "--learnable_concat", "True", "--act", "CLipSwish", "--densenet_depth", "3",
                                 "--densenet_growth", "32", "--batchsize", "16"], 3, 20),
    "cifar_small": ("time_img.py", ["--data", "cifar10", "--nblocks", "4-4-4", "--densenet", "True",
                                    "--learnable_concat", "True", "--act", "CLipSwish", "--densenet_depth", "3",
                                    "--densenet_growth", "178", "--batchsize", "16"], 1, 4),
}


def run_measured(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[dict[str, Any], float]:
    """Run ``cmd``; (its last JSON line, its peak resident memory in MB)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        lines = [ln for ln in out.read().splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"{' '.join(cmd[:4])}... exited {proc.returncode}: {err.read()[-800:]}")
    return json.loads(lines[-1]), usage.ru_maxrss / 1024  # Linux reports kilobytes


def authors_on_cuda(precision: str, script: str, args: list[str]) -> None:
    """Run a harness script on the GPU (in this process): every tensor it creates lands on CUDA
    (``torch.set_default_device``), its ``time.perf_counter`` synchronises first (the step's time,
    not its launch time), and its JSON line gains ``cuda_peak_mb`` (``max_memory_allocated``)."""
    import contextlib
    import io
    import runpy
    import time

    import torch

    from bench.run import set_precision

    set_precision(precision)
    torch.set_default_device("cuda")
    wall = time.perf_counter
    time.perf_counter = lambda: (torch.cuda.synchronize(), wall())[1]
    sys.argv = [script, *args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        runpy.run_path(script, run_name="__main__")
    out = json.loads([ln for ln in buf.getvalue().splitlines() if ln.startswith("{")][-1])
    out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(out), flush=True)


def authors_side(case: str, ref: Path, harness: Path, threads: int, device: str = "cpu",
                 precision: str = "fp32") -> tuple[float, float, dict[str, Any]]:
    script, flags, warm, steps = CASES[case]
    env = {**os.environ, "REF_IDENSENET": str(ref), "NT": str(threads), "OMP_NUM_THREADS": str(threads),
           "WARM": str(warm), "STEPS": str(steps), "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with tempfile.TemporaryDirectory(prefix="idn-ref-") as save:  # the toy harness writes an experiment folder
        if case == "toy":
            flags = [*flags, "--save", save]
        launcher = ["-m", "bench.side_by_side", "--_cuda", precision] if device.startswith("cuda") else []
        out, rss = run_measured([sys.executable, "-W", "ignore", *launcher, str(harness / script), *flags], env, harness)
    return out["median_s"], out.get("cuda_peak_mb", rss), out


def our_side(case: str, threads: int, device: str = "cpu", precision: str = "fp32",
             fused: bool = False) -> tuple[float, float, dict[str, Any]]:
    from bench.run import _case_opts, build_parser

    _, _, warm, steps = CASES[case]
    bench_args = build_parser().parse_args(["--threads", str(threads), "--repeats", str(steps), "--warmup",
                                            str(warm + (2 if fused else 0)),  # the fused kernels compile first
                                            "--device", device, "--precision", precision, *(["--fused"] if fused else [])])
    opts = _case_opts(case, bench_args)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "bench.run", "--worker", case, "--worker-opts", json.dumps(opts)]
    out, rss = run_measured(cmd, env, ROOT)
    return out["median_s"], out.get("cuda_peak_total_mb", rss), out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_cuda"]:  # internal: a harness script on the GPU, in this process
        authors_on_cuda(argv[1], argv[2], argv[3:])
        return 0
    p = argparse.ArgumentParser(prog="python -m bench.side_by_side", description=__doc__.split("\n\n")[0])
    p.add_argument("--ref", default=os.environ.get("REF_IDENSENET"),
                   help="work tree of yperugachidiaz/invertible_densenets, patched as the harness README says")
    p.add_argument("--harness", default=os.environ.get("IDN_HARNESS"), help="folder of toy_harness.py / time_img.py")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per case (default 3)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda (peak memory: RSS on the CPU, max allocated on the GPU)")
    p.add_argument("--precision", choices=("fp32", "tf32"), default="fp32",
                   help="both sides: strict fp32 (identical maths, default) or TF32 tensor cores")
    p.add_argument("--fused", action="store_true",
                   help="a third side: this project's step with the train config's fused: true (model.fused)")
    p.add_argument("--json-out", default=None)
    args = p.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    problems = [f"unknown case {c!r}" for c in cases if c not in CASES]
    for flag, value, probe in (("--ref", args.ref, "train_img.py"), ("--harness", args.harness, "time_img.py")):
        if not value or not (Path(value).expanduser() / probe).is_file():
            problems.append(f"{flag}: no {probe} in {value!r}")
    if args.rounds < 1:
        problems.append("--rounds must be at least 1")
    if problems:
        for line in problems:
            print(f"side_by_side: {line}", file=sys.stderr)
        return 2
    ref, harness = Path(args.ref).expanduser().resolve(), Path(args.harness).expanduser().resolve()
    import torch

    result: dict[str, Any] = {"torch": torch.__version__, "threads": args.threads, "device": args.device,
                              "precision": args.precision, "cases": {}}
    for case in cases:
        rows = []
        for r in range(args.rounds):
            sides = ["authors", "ours", *(["fused"] if args.fused else [])]
            sides = sides if r % 2 == 0 else sides[::-1]
            row: dict[str, Any] = {}
            for side in sides:
                t, peak, _ = (authors_side(case, ref, harness, args.threads, args.device, args.precision)
                              if side == "authors" else
                              our_side(case, args.threads, args.device, args.precision, fused=side == "fused"))
                row[f"{side}_s"], row[f"{side}_peak_mb"] = round(t, 4), round(peak)
            row["ratio"] = round(row["authors_s"] / row["ours_s"], 3)
            if args.fused:
                row["ratio_fused"] = round(row["authors_s"] / row["fused_s"], 3)
            rows.append(row)
            print(f"[side-by-side] {case} round {r + 1}/{args.rounds}: authors {row['authors_s']:.3f} s, "
                  f"this project {row['ours_s']:.3f} s, ratio {row['ratio']:.2f}"
                  + (f"; fused {row['fused_s']:.3f} s, ratio {row['ratio_fused']:.2f}" if args.fused else ""),
                  file=sys.stderr, flush=True)
        ratios = [row["ratio"] for row in rows]
        result["cases"][case] = {
            "rounds": rows, "ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
            "ratio_max": max(ratios),
            "peak_mb": {s: max(row[f"{s}_peak_mb"] for row in rows) for s in ("authors", "ours", "fused")
                        if f"{s}_peak_mb" in rows[0]},
        }
        if args.fused:
            fused_ratios = [row["ratio_fused"] for row in rows]
            result["cases"][case].update(fused_ratio_median=statistics.median(fused_ratios),
                                         fused_ratio_min=min(fused_ratios), fused_ratio_max=max(fused_ratios))
        if args.json_out:  # after every case, so a cut-short run keeps what it measured
            Path(args.json_out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
