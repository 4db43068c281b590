"""The benchmark: step time, spread, throughput and peak memory of every case, printed as JSON.

    python -m bench.run [--cases toy,image111,...] [--repeats N] [--warmup N] [--threads 2]
                        [--device cpu|cuda] [--compile on|off] [--flops]
                        [--peak-tflops X] [--ray] [--json-out PATH]

(``idensenet bench ...`` calls :func:`main` with the same arguments.)

Every case runs in a fresh Python process, so peak memory is that case's alone. Training cases time
the production step, :class:`model.train_step.TrainStep` (warm-up lr, dequantised batch → loss, backward, clip, Adam,
zero_grad, LC reset, ``update_lipschitz``, EMA, its one host read) after untimed warm-up steps; the seed is fixed, so the
same Russian-roulette draws (series lengths) come in the same order in every run and runs compare.

Cases (models in :mod:`bench.cases`): ``toy``, ``image111``, ``image111_plain`` and
``cifar_small_plain`` (mem_eff off: the memory yardsticks), ``image111_series`` (backprop through the
power series), ``cifar_small``, ``resflow_small``, ``cifar_full`` (GPU), ``eval`` (bpd with 20 exact
terms, per image), ``sample`` (fixed-point inverse, per image), ``count`` (closed-form parameter
count against building the model) and ``ray`` (per-trial overhead of a one-trial sweep, ``--ray``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TRAIN_CASES = ("toy", "image111", "image111_plain", "image111_series", "cifar_small", "cifar_small_plain",
               "resflow_small", "cifar_full")
OTHER_CASES = ("eval", "sample", "count", "ray")
DEFAULT_CPU = ("toy", "image111", "image111_plain", "image111_series", "cifar_small", "cifar_small_plain",
               "resflow_small", "eval", "sample", "count")
PRECISIONS = ("fp32", "tf32", "bf16")
DEFAULT_GPU = ("toy", "image111", "cifar_small", "resflow_small", "cifar_full", "eval", "sample", "count")
# (repeats, warm-up) per case when --repeats / --warmup are not given
CPU_REPEATS = {"toy": (30, 3), "image111": (15, 3), "image111_plain": (10, 2), "image111_series": (10, 2),
               "cifar_small": (3, 1), "cifar_small_plain": (2, 1),
               "resflow_small": (3, 1), "cifar_full": (2, 1), "eval": (5, 1), "sample": (3, 1)}
GPU_REPEATS = {"toy": (20, 3), "image111": (20, 3), "image111_plain": (20, 3), "image111_series": (20, 3),
               "cifar_small": (10, 3), "cifar_small_plain": (10, 3),
               "resflow_small": (10, 3), "cifar_full": (8, 2), "eval": (5, 1), "sample": (3, 1)}


# ====================================================================================== worker side
def _setup(opts: dict[str, Any]):
    import torch

    torch.set_num_threads(int(opts["threads"]))
    device = torch.device(opts["device"])
    if device.type == "cuda":
        torch.cuda.set_device(device)
    set_precision(opts.get("precision", "fp32"))
    return torch, device


def set_precision(precision: str) -> None:
    """``fp32``: strict float32, the authors' maths (cuDNN's TF32 convolutions, on by default in
    PyTorch, switched off); ``tf32``: TF32 tensor cores for convolutions and matmuls; ``bf16``: fp32
    weights with the step under bfloat16 autocast (see :func:`precision_context`). The last two are
    not the same maths and are reported as separately labelled rows."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: one of {', '.join(PRECISIONS)}")
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


def precision_context(precision: str, device):  # type: ignore[no-untyped-def]
    import contextlib

    import torch

    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _count_flops(fn, calls: int) -> float:
    """Mean FLOPs of ``fn(i)`` over ``calls`` calls, counted once per operator by
    torch.utils.flop_counter's formulas (matmuls and convolutions, forward and backward)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class _Counter(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            count = flop_registry.get(func.overloadpacket)
            if count is not None:
                self.total += count(*args, **kwargs, out_val=out)
            return out

    counter = _Counter()
    with counter:
        for i in range(calls):
            fn(i)
    return counter.total / calls


def _worker_train(name: str, opts: dict[str, Any]) -> dict[str, Any]:
    torch, device = _setup(opts)
    from bench.cases import make_case
    from bench.measure import PeakMemory, summarize, time_calls
    from bench.cases import train_step

    case = make_case(name, device, batch=opts.get("batch"))
    _set_memory_format(case.model, opts)
    case.model.initialize(case.batch(0) if case.config.is_toy else _dequantized(case))
    mem = PeakMemory(device)
    mem.start()
    step = train_step(case, fused=bool(opts.get("fused")))
    precision = opts.get("precision", "fp32")

    def run(i: int) -> None:
        with precision_context(precision, device):
            step(case.batch(i), hold_concat=True)

    times = time_calls(run, opts["repeats"], opts["warmup"], device)
    out: dict[str, Any] = {"batch": case.batch_size, "parameters": case.model.num_parameters(),
                           "precision": precision}
    out.update(summarize(times, case.batch_size))
    out["steps_per_s"] = out.pop("per_s")
    out["images_per_s"] = out.pop("items_per_s")
    out["peak_mb"] = round(mem.peak_mb(), 1)
    if device.type == "cuda":  # the whole process's peak, the measure the side-by-side gives both sides
        out["cuda_peak_total_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    if opts.get("flops"):
        flops = _count_flops(run, 3)
        out["gflop_per_step"] = flops / 1e9
        out["tflops_achieved"] = flops / out["median_s"] / 1e12
        if opts.get("peak_tflops"):
            out["fraction_of_peak"] = out["tflops_achieved"] / float(opts["peak_tflops"])
    return out


def _set_memory_format(model, opts: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    fmt = opts.get("memory_format")
    if fmt and hasattr(model, "memory_format"):
        model.memory_format = fmt


def _dequantized(case):  # type: ignore[no-untyped-def]
    from model.data import dequantize

    return dequantize(case.batch(0), case.config.n_levels)


def _eval_model_case(opts: dict[str, Any]) -> str:
    return opts.get("model_case") or ("cifar_small" if opts["device"].startswith("cuda") else "image111")


def _compiled(model, opts: dict[str, Any]):  # type: ignore[no-untyped-def]
    """The project's compiled evaluation / inversion context (model.compiled_eval) when ``--compile on``
    (with CUDA graphs when ``--cuda-graphs``), else a no-op."""
    import contextlib

    from model.compiled_eval import compiled_evaluation

    if not opts["compile"]:
        return contextlib.nullcontext()
    return compiled_evaluation(model, mode="reduce-overhead" if opts.get("cuda_graphs") else None)


def _eval_ready_case(opts: dict[str, Any], gpu_batch: int):
    """(torch, device, case name, batch, case) with the case's model initialised, its spectral norms
    converged and in eval mode: the state in which evaluation and sampling are measured."""
    torch, device = _setup(opts)
    from bench.cases import make_case
    from model.data import dequantize

    name = _eval_model_case(opts)
    batch = opts.get("batch") or (gpu_batch if device.type == "cuda" else 16)
    case = make_case(name, device, batch=batch)
    _set_memory_format(case.model, opts)
    case.model.initialize(dequantize(case.batch(0), case.config.n_levels))
    case.model.update_lipschitz(None)
    case.model.eval()
    return torch, device, name, batch, case


def _per_image(out: dict[str, Any], timing: dict[str, Any], batch: int, mem) -> dict[str, Any]:
    """``out`` with the timing summary of calls on ``batch`` images, per image, and the peak memory."""
    out.update(timing)
    out["images_per_s"] = out.pop("items_per_s")
    out["ms_per_image"] = 1e3 * out["median_s"] / batch
    out["peak_mb"] = round(mem.peak_mb(), 1)
    return out


def _timed_per_image(run, out: dict[str, Any], opts: dict[str, Any], device, batch: int) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """``out`` with ``run``'s timings per image and peak memory; with ``--compile on`` a first call,
    timed apart as ``compile_s``, compiles."""
    from bench.measure import PeakMemory, summarize, time_calls

    out.update(compiled=bool(opts["compile"]), cuda_graphs=bool(opts.get("cuda_graphs")))
    if opts["compile"]:
        t = time.perf_counter()
        run(0)
        out["compile_s"] = time.perf_counter() - t
    mem = PeakMemory(device)
    mem.start()
    times = time_calls(run, opts["repeats"], opts["warmup"], device)
    return _per_image(out, summarize(times, batch), batch, mem)


def _worker_eval(opts: dict[str, Any]) -> dict[str, Any]:
    from model.data import dequantize

    torch, device, name, batch, case = _eval_ready_case(opts, gpu_batch=200)
    model = case.model

    def run(i: int) -> None:
        with torch.no_grad(), _compiled(model, opts):
            model.bits_per_dim(dequantize(case.batch(i), case.config.n_levels))

    out: dict[str, Any] = {"model": name, "batch": batch, "exact_terms": case.config.eval_exact_terms}
    return _timed_per_image(run, out, opts, device, batch)


def _worker_sample(opts: dict[str, Any]) -> dict[str, Any]:
    torch, device, name, n, case = _eval_ready_case(opts, gpu_batch=64)
    model = case.model

    def run(i: int) -> None:
        with _compiled(model, opts):
            model.sample(n, generator=torch.Generator(device=device).manual_seed(i))

    return _timed_per_image(run, {"model": name, "batch": n}, opts, device, n)


def _worker_count(opts: dict[str, Any]) -> dict[str, Any]:
    torch, _ = _setup(opts)
    from bench.cases import CONFIGS
    from model.flow import build_model

    try:
        from search_spaces.count import count_parameters
    except ImportError as err:
        return {"skipped": f"search_spaces.count not importable ({err})"}
    out: dict[str, Any] = {}
    for name in ("toy", "cifar_small", "resflow_small", "cifar_full"):
        cfg = CONFIGS[name]
        n_calls = 2000
        count_parameters(cfg)
        per_call = []
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(n_calls):
                count_parameters(cfg)
            per_call.append((time.perf_counter() - t) / n_calls)
        builds = []
        for _ in range(2 if name != "cifar_full" else 1):
            t = time.perf_counter()
            model = build_model(cfg)
            builds.append(time.perf_counter() - t)
        built = model.num_parameters()
        counted = count_parameters(cfg)
        out[name] = {
            "count": counted, "built": built, "equal": counted == built,
            "us_per_count": 1e6 * statistics.median(per_call),
            "build_s": statistics.median(builds),
        }
    return out


def _worker_ray(opts: dict[str, Any]) -> dict[str, Any]:
    """Per-trial overhead of a one-trial toy sweep through the sweeper (start to first report)."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from sweeper.sweep import SweepOptions, run_sweep

    storage = tempfile.mkdtemp(prefix="idn-bench-ray-")
    t0 = time.time()
    outcome = run_sweep(SweepOptions(space="toy-moons", trials=1, smoke_test=True, storage=storage,
                                     name="bench-ray", max_concurrent=1))
    wall = time.time() - t0
    rows = []
    for path in Path(outcome.experiment).rglob("result.json"):
        for line in path.read_text().splitlines():
            if line.strip():
                rows.append(json.loads(line))
    if not rows:
        return {"error": "no result.json rows found", "sweep_wall_s": wall, "storage": storage}
    shutil.rmtree(storage, ignore_errors=True)
    rows.sort(key=lambda r: r.get("training_iteration", 0))
    first = rows[0]
    to_first = float(first.get("time_this_iter_s", float("nan")))
    epoch_s = float(first.get("epoch_seconds", float("nan")))
    later = [float(r["time_this_iter_s"]) - float(r["epoch_seconds"]) for r in rows[1:]
             if "time_this_iter_s" in r and "epoch_seconds" in r]
    return {
        "sweep_wall_s": wall,
        "trial_start_to_first_report_s": to_first,
        "first_epoch_work_s": epoch_s,
        "per_trial_overhead_s": to_first - epoch_s,
        "per_epoch_report_overhead_s": statistics.median(later) if later else None,
        "epochs_reported": len(rows),
    }


def _worker(name: str, opts: dict[str, Any]) -> dict[str, Any]:
    if name in TRAIN_CASES:
        return _worker_train(name, opts)
    if name == "eval":
        return _worker_eval(opts)
    if name == "sample":
        return _worker_sample(opts)
    if name == "count":
        return _worker_count(opts)
    if name == "ray":
        return _worker_ray(opts)
    raise ValueError(f"unknown case {name!r}")


# ====================================================================================== driver side
def _case_opts(name: str, args: argparse.Namespace) -> dict[str, Any]:
    gpu = args.device.startswith("cuda")
    rep, warm = (GPU_REPEATS if gpu else CPU_REPEATS).get(name, (1, 0))
    return {
        "threads": args.threads, "device": args.device,
        "compile": args.compile == "on", "repeats": args.repeats or rep,
        "warmup": args.warmup if args.warmup is not None else warm, "flops": args.flops,
        "peak_tflops": args.peak_tflops, "batch": args.batch,
        "model_case": args.eval_model, "memory_format": args.memory_format, "precision": args.precision,
        "fused": args.fused, "cuda_graphs": args.cuda_graphs,
    }


def _run_case(name: str, opts: dict[str, Any], timeout: float) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", str(opts["threads"]))
    cmd = [sys.executable, "-m", "bench.run", "--worker", name, "--worker-opts", json.dumps(opts)]
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - t
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout)[-1500:]
        return {"error": f"exit {proc.returncode}", "stderr_tail": tail}
    out = json.loads(lines[-1])
    out["process_wall_s"] = round(wall, 1)
    return out


def _meta(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    meta: dict[str, Any] = {
        "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
        "cpu_count": os.cpu_count(), "threads": args.threads, "device": args.device,
        "compile": args.compile, "precision": args.precision,
        "memory_format": args.memory_format or "model default",
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    try:
        with open("/proc/loadavg") as f:
            meta["loadavg_at_start"] = f.read().split()[:3]
    except OSError:
        pass
    if args.device.startswith("cuda") and torch.cuda.is_available():
        meta["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "model"], cwd=ROOT, capture_output=True,
                               text=True, timeout=10).stdout.strip()
        meta["git"] = commit + ("+modified model/" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    from bench.measure import PeakMemory

    meta["peak_memory"] = PeakMemory(torch.device(args.device)).describe()
    return meta


def _fmt(v: Any, unit: str = "", scale: float = 1.0, nd: int = 3) -> str:
    if not isinstance(v, (int, float)):
        return "-"
    return f"{v * scale:.{nd}f}{unit}"


def format_table(result: dict[str, Any]) -> str:
    """A plain-text summary of the JSON result (the JSON has more fields)."""
    lines = [f"{'case':16s} {'median':>10s} {'IQR':>9s} {'min':>9s} {'max':>9s} {'steps/s':>8s} "
             f"{'img/s':>9s} {'peak MB':>9s} {'extra'}"]
    for name, r in result["cases"].items():
        if "error" in r or "skipped" in r:
            lines.append(f"{name:16s} {r.get('error') or r.get('skipped')}")
            continue
        if name == "count":
            for model, c in r.items():
                if not isinstance(c, dict):
                    continue
                lines.append(f"{'count/' + model:16s} {c['us_per_count']:8.1f}us per count; build "
                             f"{c['build_s']:.2f} s; {c['count']:,} params (equal to built: {c['equal']})")
            continue
        if name == "ray":
            per_epoch = r.get("per_epoch_report_overhead_s")
            lines.append(f"{'ray':16s} per-trial overhead {r['per_trial_overhead_s']:.1f} s (start to first "
                         f"report {r['trial_start_to_first_report_s']:.1f} s, epoch work "
                         f"{r['first_epoch_work_s']:.1f} s); per later epoch "
                         f"{_fmt(per_epoch, ' s', 1, 2)}; sweep wall {r['sweep_wall_s']:.1f} s")
            continue
        extra = []
        if "ms_per_image" in r:
            extra.append(f"{r['ms_per_image']:.2f} ms/image ({r['model']}, batch {r['batch']})")
        if "compile_s" in r:
            extra.append(f"compile {r['compile_s']:.0f} s")
        if "gflop_per_step" in r:
            extra.append(f"{r['gflop_per_step']:.1f} GFLOP/step, {r['tflops_achieved']:.2f} TFLOP/s")
        if "fraction_of_peak" in r:
            extra.append(f"{100 * r['fraction_of_peak']:.1f}% of peak")
        if "batch" in r and "ms_per_image" not in r:
            extra.append(f"batch {r['batch']}")
        lines.append(
            f"{name:16s} {_fmt(r.get('median_s'), ' s')} {_fmt(r.get('iqr_s'), ' s')} {_fmt(r.get('min_s'), ' s')} "
            f"{_fmt(r.get('max_s'), ' s')} {_fmt(r.get('steps_per_s', r.get('per_s')), '', 1, 2):>8s} "
            f"{_fmt(r.get('images_per_s'), '', 1, 1):>9s} {_fmt(r.get('peak_mb'), '', 1, 0):>9s} {'; '.join(extra)}"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="idensenet bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=None, help="comma-separated cases (default: all but ray for the device)")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per case (default: per case)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls first (default: per case)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    p.add_argument("--compile", choices=("on", "off"), default="off",
                   help="eval and sample cases with every block's g compiled (model.compiled_eval)")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="with --compile on: torch.compile's reduce-overhead mode (CUDA graphs on a GPU)")
    p.add_argument("--memory-format", choices=("auto", "channels_last", "contiguous"), default=None,
                   help="image layout inside the flow (default: the model's, auto = channels-last on CPU)")
    p.add_argument("--batch", type=int, default=None, help="override every case's batch size")
    p.add_argument("--fused", action="store_true", help="training cases with the train config's fused: true "
                   "(model.fused; the warm-up calls pay the compilation)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32 (strict, the authors' maths; default), tf32 or bf16 autocast: labelled variants")
    p.add_argument("--eval-model", default=None, help="model case for eval/sample (default image111 on CPU, "
                   "cifar_small on GPU)")
    p.add_argument("--flops", action="store_true", help="count FLOPs of 3 training steps per case")
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak, for the fraction of peak")
    p.add_argument("--ray", action="store_true", help="add the Ray per-trial overhead case (about a minute)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per case")
    p.add_argument("--json-out", default=None, help="also write the JSON here")
    p.add_argument("--quiet", action="store_true", help="no progress / table on stderr")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-opts", default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.worker, json.loads(args.worker_opts))), flush=True)
        return 0
    gpu = args.device.startswith("cuda")
    cases = args.cases.split(",") if args.cases else list(DEFAULT_GPU if gpu else DEFAULT_CPU)
    if args.ray and "ray" not in cases:
        cases.append("ray")
    unknown = [c for c in cases if c not in TRAIN_CASES + OTHER_CASES]
    if unknown:
        print(f"idensenet bench: unknown case(s) {', '.join(unknown)}; valid: "
              f"{', '.join(TRAIN_CASES + OTHER_CASES)}", file=sys.stderr)
        return 2
    result: dict[str, Any] = {"meta": _meta(args), "cases": {}}
    for name in cases:
        opts = _case_opts(name, args)
        if not args.quiet:
            print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        result["cases"][name] = _run_case(name, opts, args.timeout)
        if args.json_out:  # after every case, so a cut-short run keeps what it measured
            Path(args.json_out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    if not args.quiet:
        print(format_table(result), file=sys.stderr)
    failed = [n for n, r in result["cases"].items() if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
