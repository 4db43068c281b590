"""The fused dense-layer operator's pieces against eager, per dense-layer shape of a model (a benchmark).

For every distinct (x, y) shape the case's dense layers see (channels-last on the CPU, as in
training), times in alternating rounds (median of ``--rounds``, each the mean of ``--calls`` calls):

* forward: the eager formula (``cat`` of the pieces), the one written into a preallocated output
  (what :class:`model.fused._Concat` runs) and the same formula compiled;
* backward: eager autograd's vector-Jacobian product of the formula with respect to all five inputs,
  the compiled backward (all five) and the compiled input-only backward (the Neumann series' products).

    python -m bench.fused_kernels [--case cifar_small] [--rounds 3] [--calls 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any, Callable

ROOT_HELP = "a training case of bench.cases whose dense layers use LipSwish or CLipSwish"


def _shapes(case_name: str) -> list[tuple[Any, Any, bool]]:
    """(x, y, mirrored) of every distinct dense-layer call in one initialising forward of the case."""
    import torch

    import model.dense as dense
    from bench.cases import make_case
    from model.data import dequantize

    case = make_case(case_name, torch.device("cpu"))
    seen: dict[tuple, tuple[Any, Any, bool]] = {}
    original = dense.fused_concat

    def spy(x, y, beta, a, c, mirrored):  # noqa: ANN001, ANN202
        seen.setdefault((tuple(x.shape), tuple(y.shape), x.stride(), mirrored),
                        (x.detach().clone(), y.detach().clone(), mirrored))
        return original(x, y, beta, a, c, mirrored)

    dense.fused_concat = spy
    threshold, dense.FUSED_MIN_ELEMENTS = dense.FUSED_MIN_ELEMENTS, 0  # every layer, also those that run eagerly
    try:
        dense.set_fused(case.model, True)
        with torch.no_grad():
            batch = case.batch(0)
            case.model.initialize(batch if case.config.is_toy else dequantize(batch, case.config.n_levels))
    finally:
        dense.fused_concat, dense.FUSED_MIN_ELEMENTS = original, threshold
    return list(seen.values())


def _mean_ms(fn: Callable[[], Any], calls: int) -> float:
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t) / calls * 1e3


def measure(case_name: str, rounds: int, calls: int) -> list[dict[str, Any]]:
    import torch

    import model.fused as fused

    def cat_formula(x, y, beta, a, c, mirrored):  # noqa: ANN001, ANN202
        first = c * y * torch.sigmoid(beta * y)
        return torch.cat([a * x, first, first - c * y] if mirrored else [a * x, first], dim=1)

    compiled_forward = torch.compile(cat_formula, dynamic=True)
    rows = []
    for x, y, mirrored in _shapes(case_name):
        scalars = [torch.tensor(v) for v in (0.9, 0.7, 0.6)]  # beta, a, c
        args = (x, y, *scalars, mirrored)
        g = torch.randn_like(cat_formula(*args))
        leaves = [t.detach().requires_grad_(True) for t in (x, y, *scalars)]

        def autograd_backward() -> Any:
            return torch.autograd.grad(cat_formula(*leaves, mirrored), leaves, g)

        variants = {
            "forward_cat": lambda: cat_formula(*args),
            "forward_preallocated": lambda: fused._forward(*args),
            "forward_compiled": lambda: compiled_forward(*args),
            "backward_eager_autograd": autograd_backward,
            "backward_compiled": lambda: fused._kernel("backward")(x, y, *scalars, g, mirrored),
            "backward_inputs_compiled": lambda: fused._kernel("backward_inputs")(x, y, *scalars, g, mirrored),
        }
        for fn in variants.values():  # compile and warm up
            fn(), fn()
        times: dict[str, list[float]] = {k: [] for k in variants}
        for r in range(rounds):
            order = list(variants) if r % 2 == 0 else list(reversed(variants))
            for k in order:
                times[k].append(_mean_ms(variants[k], calls))
        row = {"x": list(x.shape), "y": list(y.shape), "mirrored": mirrored}
        row.update({k: round(statistics.median(v), 3) for k, v in times.items()})
        rows.append(row)
        print(f"x {tuple(x.shape)} y {tuple(y.shape)}: " + ", ".join(f"{k} {row[k]:.2f} ms" for k in variants),
              file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fused_kernels", description=__doc__.split("\n\n")[0])
    p.add_argument("--case", default="cifar_small", help=ROOT_HELP)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--calls", type=int, default=10, help="calls per timing (their mean)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json-out", default=None)
    args = p.parse_args(argv)
    import torch

    from bench.measure import emit_json

    torch.set_num_threads(args.threads)
    rows = measure(args.case, args.rounds, args.calls)
    totals = {k: round(sum(r[k] for r in rows), 2) for k in rows[0] if k not in ("x", "y", "mirrored")} if rows else {}
    print("sum over the distinct shapes (ms): " + ", ".join(f"{k} {v}" for k, v in totals.items()), file=sys.stderr)
    emit_json({"case": args.case, "threads": args.threads, "rounds": args.rounds, "calls": args.calls,
               "shapes": rows, "sum_ms": totals}, args.json_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
