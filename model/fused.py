"""A dense layer's activation and concatenation as one fused operator with a fused double backward.

A dense layer of paper eq. 5 whose network is a linear map W then LipSwish (eq. 10) or CLipSwish
(eq. 11) outputs, with y = W x, s = σ(βy) and the normalised concatenation weights a = η̂₁, and
c = η̂₂ / 1.1 (LipSwish) or η̂₂ / (1.1 · 1.004) (CLipSwish):

    h = [a·x, c·y·s]                  (LipSwish)
    h = [a·x, c·y·s, c·y·(s − 1)]     (CLipSwish: y·(s − 1) = −y·σ(−βy), the mirrored half)

Eager autograd runs a handful of element-wise kernels for h, more for its backward, and more again for
the backward's backward, which training needs: the log-det gradient differentiates through
vector-Jacobian products of g (paper §3, Neumann and memory-efficient gradients). Here the backward
and the double backward are each one compiled element-wise function (``torch.compile``, dynamic
shapes: one compilation serves every layer's channel count and batch), wrapped in two
``torch.autograd.Function``s: the operator's backward is itself a Function whose backward holds the
second derivatives. The forward writes its pieces into one preallocated output with eager kernels:
compiled, the concatenation at these odd channel counts ran at about half eager's speed
(``bench/fused_kernels.py``). A backward that
builds no graph calls its compiled function directly, and within :func:`input_gradients_only` (the
Neumann series' products, which differentiate with respect to the block's input only) a cheaper one
that leaves out the parameters' reductions.

With g = (g₁, g₂, g₃) the incoming gradient split like h, G = g₂ + g₃ (for LipSwish G = g₂, g₃ = 0),
u = βy, s' = s(1 − s) and A = s + u·s' = d(y·s)/dy:

    ∂/∂x = a·g₁        ∂/∂a = Σ g₁·x        ∂/∂y = c·(G·A − g₃)
    ∂/∂β = c·Σ G·y²·s'                       ∂/∂c = Σ (G·y·s − g₃·y)

and for the second derivatives k = s'·(2 + u·(1 − 2s)), which gives dA/dy = β·k, dA/dβ = y·k,
d(y²s')/dy = y·k and d(y²s')/dβ = y³·s'·(1 − 2s). ``tests/test_fused.py`` checks both Functions
against finite differences (``gradcheck``, ``gradgradcheck``, float64) and a training step against
eager autograd on the same draws.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import Tensor


def _split(g: Tensor, cx: int, cy: int, mirrored: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    return g[:, :cx], g[:, cx:cx + cy], (g[:, cx + cy:] if mirrored else None)


def _forward(x: Tensor, y: Tensor, beta: Tensor, a: Tensor, c: Tensor, mirrored: bool) -> Tensor:
    """h, each piece written into its slice of one output in x's memory format (no a·x temporary and
    no copy by ``cat``); runs without autograd, inside :class:`_Concat`."""
    n, cx, cy = x.shape[0], x.shape[1], y.shape[1]
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
    out = torch.empty((n, cx + cy * (2 if mirrored else 1), *x.shape[2:]), dtype=x.dtype, device=x.device,
                      memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    torch.mul(x, a, out=out[:, :cx])
    cy_times_y = c * y
    first = out[:, cx:cx + cy]
    torch.mul(cy_times_y, torch.sigmoid(beta * y), out=first)
    if mirrored:
        torch.sub(first, cy_times_y, out=out[:, cx + cy:])
    return out


def _backward(x: Tensor, y: Tensor, beta: Tensor, a: Tensor, c: Tensor, g: Tensor, mirrored: bool):
    g1, g2, g3 = _split(g, x.shape[1], y.shape[1], mirrored)
    s = torch.sigmoid(beta * y)
    sp = s * (1 - s)
    big_g = g2 + g3 if mirrored else g2
    da_dy = s + beta * y * sp
    gy = c * (big_g * da_dy - g3) if mirrored else c * big_g * da_dy
    gc = (big_g * y * s - g3 * y).sum() if mirrored else (big_g * y * s).sum()
    return a * g1, gy, c * (big_g * y * y * sp).sum(), (g1 * x).sum(), gc


def _double_backward(x: Tensor, y: Tensor, beta: Tensor, a: Tensor, c: Tensor, g: Tensor, hx: Tensor, hy: Tensor,
                     hbeta: Tensor, ha: Tensor, hc: Tensor, mirrored: bool):
    g1, g2, g3 = _split(g, x.shape[1], y.shape[1], mirrored)
    s = torch.sigmoid(beta * y)
    u = beta * y
    sp = s * (1 - s)
    da_dy = s + u * sp
    k = sp * (2 + u * (1 - 2 * s))
    y2sp = y * y * sp
    big_g = g2 + g3 if mirrored else g2
    ys = y * s
    common = hbeta * c * y2sp
    d_g2 = hy * c * da_dy + common + hc * ys
    if mirrored:
        d_g = torch.cat([hx * a + ha * x, d_g2, hy * c * (da_dy - 1) + common + hc * (ys - y)], dim=1)
        gy_over_c = big_g * da_dy - g3
    else:
        d_g = torch.cat([hx * a + ha * x, d_g2], dim=1)
        gy_over_c = big_g * da_dy
    d_y = hy * c * big_g * beta * k + hbeta * c * big_g * y * k + hc * gy_over_c
    d_beta = ((hy * c * big_g * y * k).sum() + hbeta * c * (big_g * y2sp * y * (1 - 2 * s)).sum()
              + hc * (big_g * y2sp).sum())
    d_c = (hy * gy_over_c).sum() + hbeta * (big_g * y2sp).sum()
    return ha * g1, d_y, d_beta, (hx * g1).sum(), d_c, d_g


def _backward_inputs(x: Tensor, y: Tensor, beta: Tensor, a: Tensor, c: Tensor, g: Tensor, mirrored: bool):
    """(∂/∂x, ∂/∂y) only: :func:`_backward` without the three reductions over the whole tensor."""
    g1, g2, g3 = _split(g, x.shape[1], y.shape[1], mirrored)
    s = torch.sigmoid(beta * y)
    da_dy = s + beta * y * s * (1 - s)
    gy = c * ((g2 + g3) * da_dy - g3) if mirrored else c * g2 * da_dy
    return a * g1, gy


_compiled: dict[str, Any] = {}
_inputs_only = False


@contextlib.contextmanager
def input_gradients_only() -> Iterator[None]:
    """Within: backward passes that build no graph (``create_graph=False``) return no gradients for
    β, a and c, because the caller differentiates with respect to a block's input only (the
    Neumann series' vector-Jacobian products, paper §3); the parameters' three reductions are skipped.
    The flag is process-wide (autograd may run a backward on its own device threads), so no other
    thread may run a backward that needs β, a or c gradients meanwhile; nothing in this project does."""
    global _inputs_only
    saved, _inputs_only = _inputs_only, True
    try:
        yield
    finally:
        _inputs_only = saved


def _kernel(name: str):  # noqa: ANN202
    """The compiled form of ``_backward`` / ``_backward_inputs`` / ``_double_backward``, made on first use."""
    if name not in _compiled:
        fn = {"backward": _backward, "backward_inputs": _backward_inputs, "double_backward": _double_backward}[name]
        _compiled[name] = torch.compile(fn, dynamic=True)
    return _compiled[name]


class _ConcatBackward(torch.autograd.Function):
    """(∂/∂x, ∂/∂y, ∂/∂β, ∂/∂a, ∂/∂c) of h for an incoming gradient g, differentiable once more."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, y: Tensor, beta: Tensor, a: Tensor, c: Tensor, g: Tensor, mirrored: bool):
        ctx.save_for_backward(x, y, beta, a, c, g)
        ctx.mirrored = mirrored
        return _kernel("backward")(x, y, beta, a, c, g, mirrored)

    @staticmethod
    def backward(ctx: Any, hx: Tensor | None, hy: Tensor | None, hbeta: Tensor | None, ha: Tensor | None,
                 hc: Tensor | None):
        x, y, beta, a, c, g = ctx.saved_tensors
        hx = torch.zeros_like(x) if hx is None else hx
        hy = torch.zeros_like(y) if hy is None else hy
        hbeta, ha, hc = (torch.zeros_like(t) if h is None else h for h, t in ((hbeta, beta), (ha, a), (hc, c)))
        return (*_kernel("double_backward")(x, y, beta, a, c, g, hx, hy, hbeta, ha, hc, ctx.mirrored), None)


class _Concat(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, y: Tensor, beta: Tensor, a: Tensor, c: Tensor, mirrored: bool) -> Tensor:
        ctx.save_for_backward(x, y, beta, a, c)
        ctx.mirrored = mirrored
        return _forward(x, y, beta, a, c, mirrored)

    @staticmethod
    def backward(ctx: Any, g: Tensor):
        x, y, beta, a, c = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: the backward must be differentiable once more
            return (*_ConcatBackward.apply(x, y, beta, a, c, g, ctx.mirrored), None)
        if _inputs_only:
            return (*_kernel("backward_inputs")(x, y, beta, a, c, g, ctx.mirrored), None, None, None, None)
        return (*_kernel("backward")(x, y, beta, a, c, g, ctx.mirrored), None)


def fused_concat(x: Tensor, y: Tensor, beta: Tensor, a: Tensor, c: Tensor, mirrored: bool) -> Tensor:
    """h = [a·x, c·y·σ(βy)] (``mirrored=False``, LipSwish) or [a·x, c·y·σ(βy), c·y·(σ(βy) − 1)]
    (``mirrored=True``, CLipSwish) on dim 1; ``beta``, ``a`` and ``c`` are 0-dim tensors. Equal to
    the eager formula to float rounding, with its first and second derivatives."""
    return _Concat.apply(x, y, beta.reshape(()), a.reshape(()), c.reshape(()), mirrored)
