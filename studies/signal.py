"""Signal preservation of activations (paper §5.1, Table 5, and appendix D.1, Table 8).

For pairs ``v, w ~ N(0, std^2 I_D)`` the distance ratio ``|phi(v) - phi(w)|_2 / |v - w|_2`` of an
element-wise activation ``phi`` is bounded by Lip(phi); its mean measures how much signal survives
on typical inputs (gradient-norm attenuation, §3.4). Activations, with ``beta = softplus(0.5)`` as
the modules are initialised:

* ``sigmoid``: ``phi(x) = sigmoid(x)`` (Lip 1/4);
* ``lipswish`` (eq. 10): ``x sigmoid(beta x) / 1.1``;
* ``clipswish`` (eq. 11): ``[LipSwish(x), LipSwish(-x)] / 1.004``, a 2D-vector;
* ``identity``: ratio exactly 1.

Computed in float64; ``v`` and ``w`` come from two ``numpy.random.default_rng`` streams spawned
from ``SeedSequence(seed)``, drawn in chunks of pairs to bound memory (results do not depend on the
chunk size).
With ``s = sigmoid(beta v)``, ``LipSwish(-v) = -v (1 - s)``, so one exponential per coordinate
serves both LipSwish and CLipSwish: for ``a = v s_v - w s_w`` and ``d = v - w`` the LipSwish
difference is ``a / 1.1`` and the CLipSwish one ``[a, a - d] / (1.1 * 1.004)``.
"""

from __future__ import annotations

import argparse
import math
from typing import Sequence

import numpy as np

from model.activations import CLIPSWISH_DIVISOR, LIPSWISH_DIVISOR, RAW_BETA_INIT

SIGNAL_ACTIVATIONS = ("sigmoid", "lipswish", "clipswish", "identity")
BETA = math.log1p(math.exp(RAW_BETA_INIT))  # softplus(0.5) = 0.9740769842
_CHUNK_VALUES = 1 << 20  # values per array per chunk (8 MiB in float64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _ratios(
    activations: Sequence[str], dims: int, n_pairs: int, std: float, seed: int
) -> dict[str, dict[str, float]]:
    """Mean and max distance ratio for each activation, all from the same ``n_pairs`` draws."""
    unknown = [a for a in activations if a not in SIGNAL_ACTIVATIONS]
    if unknown:
        raise ValueError(f"unknown activation(s) {unknown}; valid: {', '.join(SIGNAL_ACTIVATIONS)}")
    if dims < 1 or n_pairs < 1 or not std > 0:
        raise ValueError("dims and n_pairs must be >= 1 and std > 0")
    rng_v, rng_w = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    rows = max(1, _CHUNK_VALUES // dims)
    sums = {a: 0.0 for a in activations}
    maxima = {a: -math.inf for a in activations}
    swish = "lipswish" in activations or "clipswish" in activations
    done = 0
    while done < n_pairs:
        m = min(rows, n_pairs - done)
        v = rng_v.standard_normal((m, dims)) * std
        w = rng_w.standard_normal((m, dims)) * std
        d = v - w
        d_norm2 = np.einsum("ij,ij->i", d, d)
        sq: dict[str, np.ndarray] = {}
        if "sigmoid" in activations:
            e = _sigmoid(v) - _sigmoid(w)
            sq["sigmoid"] = np.einsum("ij,ij->i", e, e)
        if swish:
            a = v * _sigmoid(BETA * v) - w * _sigmoid(BETA * w)
            a2 = np.einsum("ij,ij->i", a, a)
            if "lipswish" in activations:
                sq["lipswish"] = a2 / LIPSWISH_DIVISOR**2
            if "clipswish" in activations:
                b = a - d
                sq["clipswish"] = (a2 + np.einsum("ij,ij->i", b, b)) / (LIPSWISH_DIVISOR * CLIPSWISH_DIVISOR) ** 2
        if "identity" in activations:
            sq["identity"] = d_norm2
        for name, num in sq.items():
            r = np.sqrt(num / d_norm2)
            sums[name] += float(r.sum())
            maxima[name] = max(maxima[name], float(r.max()))
        done += m
    return {a: {"mean": sums[a] / n_pairs, "max": maxima[a]} for a in activations}


def signal_preservation(
    activation: str, dims: int, n_pairs: int = 100_000, std: float = 1.0, seed: int = 0
) -> dict[str, float]:
    """``{"mean", "max"}`` of the distance ratio for one activation (one cell pair of Table 5/8)."""
    return _ratios((activation,), dims, n_pairs, std, seed)[activation]


def signal_table(
    dims: Sequence[int] = (1, 128, 1024),
    n_pairs: int = 100_000,
    std: float = 1.0,
    seed: int = 0,
    activations: Sequence[str] = SIGNAL_ACTIVATIONS,
) -> list[dict[str, float | int | str]]:
    """Rows ``{"activation", "dims", "mean", "max"}`` for every activation and dimension.

    Each dimension restarts the streams of ``seed``, so a row equals ``signal_preservation`` with the same
    arguments. ``std=1`` gives Table 5, ``std=5`` Table 8.
    """
    rows: list[dict[str, float | int | str]] = []
    for d in dims:
        res = _ratios(tuple(activations), int(d), n_pairs, std, seed)
        for a in activations:
            rows.append({"activation": a, "dims": int(d), "mean": res[a]["mean"], "max": res[a]["max"]})
    return rows


_LABELS = {"sigmoid": "Sigmoid", "lipswish": "LipSwish", "clipswish": "CLipSwish", "identity": "Identity"}


def format_table(rows: Sequence[dict[str, float | int | str]]) -> str:
    """Plain-text table in the layout of Table 5: one line per activation, mean and max per D."""
    dims = sorted({int(r["dims"]) for r in rows})
    acts = list(dict.fromkeys(str(r["activation"]) for r in rows))
    cell = {(str(r["activation"]), int(r["dims"])): r for r in rows}
    head = f"{'activation':<11}" + "".join(f"{'D=' + str(d) + ' mean':>14}{'max':>8}" for d in dims)
    lines = [head, "-" * len(head)]
    for a in acts:
        parts = [f"{_LABELS.get(a, a):<11}"]
        for d in dims:
            r = cell.get((a, d))
            parts.append(f"{float(r['mean']):>14.4f}{float(r['max']):>8.4f}" if r else f"{'-':>14}{'-':>8}")
        lines.append("".join(parts))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """``idensenet signal``: print the signal-preservation table (``--std 1``: Table 5, ``--std 5``: Table 8)."""
    rows = signal_table(dims=args.dims, n_pairs=args.pairs, std=args.std, seed=args.seed)
    print(f"v, w ~ N(0, {args.std:g}^2 I_D), {args.pairs} pairs, seed {args.seed}, beta = softplus(0.5)")
    print(format_table(rows))
    return 0

