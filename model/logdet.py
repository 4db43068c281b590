"""Estimators of log|det(I + J_g(x))| for an invertible residual block y = x + g(x).

With Lip(g) < 1 (paper eq. 2) the log-determinant is the convergent power series of paper eq. 3,

    log det(I + J) = Σ_{k≥1} (−1)^(k+1)/k · tr(J^k),

and each trace is estimated with the Skilling–Hutchinson identity tr(A) = E[εᵀ A ε], ε ~ N(0, I),
using only vector-Jacobian products εᵀJ^k. Residual Flows (Chen et al. 2019, the paper's ref. [4])
truncate the series at a random length n = n_exact + N and reweight term k by
c_k = 1[N ≥ k − n_exact] / P(N ≥ k − n_exact) ("Russian roulette"), which keeps E[c_k] = 1 for
every k, so the truncated sum is unbiased for the infinite one.

For training they also replace the gradient of the series by the gradient of the Neumann surrogate
(vᵀ J ε) with v = Σ_{k≥0} (−1)^k c_k (εᵀJ^k) held constant: since
∂ log det(I + J) = tr((I + J)⁻¹ ∂J) and (I + J)⁻¹ = Σ_k (−1)^k J^k, its gradient is unbiased for
∂ log det(I + J) while only one vector-Jacobian product keeps a graph.

Everything here acts per sample: ``x`` has a leading batch dimension B, ``g`` is the output of a
network applied to ``x`` sample by sample, and every estimator returns a tensor of shape (B,).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from .config import estimator_problems
from .fused import input_gradients_only


@dataclass(frozen=True)
class EstimatorSettings:
    """How an invertible block estimates its log-determinant (the authors' iResBlock options).

    ``n_exact_terms`` / ``eval_exact_terms``: series terms always kept in training / evaluation;
    ``n_dist``: law of the extra number of terms N (``"poisson"`` with ``poisson_lambda``, support
    ≥ 0, or numpy-style ``"geometric"`` with ``geometric_p``, support ≥ 1);
    ``neumann_grad``: train with the Neumann gradient surrogate; ``mem_eff``: compute the log-det
    gradient during the forward pass (:func:`memory_efficient_logdet`); ``brute_force``: exact
    log-det from the full Jacobian (small dimensions only).
    """

    n_exact_terms: int = 2
    eval_exact_terms: int = 20
    n_dist: str = "poisson"
    poisson_lambda: float = 2.0
    geometric_p: float = 0.5
    neumann_grad: bool = True
    mem_eff: bool = True
    brute_force: bool = False

    def __post_init__(self) -> None:
        problems = estimator_problems(self)  # the rules a ModelConfig checks on the same fields
        if problems:
            raise ValueError("; ".join(f"{w}: {m}" for w, m in problems))

    @classmethod
    def from_config(cls, cfg: Any) -> "EstimatorSettings":
        """Read the same-named fields of a :class:`model.config.ModelConfig`."""
        return cls(
            n_exact_terms=int(cfg.n_exact_terms),
            eval_exact_terms=int(cfg.eval_exact_terms),
            n_dist=str(cfg.n_dist),
            poisson_lambda=float(cfg.poisson_lambda),
            geometric_p=float(cfg.geometric_p),
            neumann_grad=bool(cfg.neumann_grad),
            mem_eff=bool(cfg.mem_eff),
            brute_force=bool(cfg.brute_force),
        )


# ---------------------------------------------------------------------------------- Russian roulette
def tail_probability(settings: EstimatorSettings, m: int) -> float:
    """P(N ≥ m) for the roulette law of ``settings``.

    Poisson(λ): 1 − e^(−λ) Σ_{i<m} λ^i/i! (summed as the upper tail e^(−λ) Σ_{i≥m} λ^i/i! once
    m > λ, which is the same number without cancellation); geometric(p) on {1, 2, ...}: (1 − p)^(m−1).
    """
    if m <= 0:
        return 1.0
    if settings.n_dist == "geometric":
        return (1.0 - settings.geometric_p) ** (m - 1)
    lam = settings.poisson_lambda
    if m <= lam:
        head, term = 0.0, math.exp(-lam)
        for i in range(m):
            head += term
            term *= lam / (i + 1)
        return 1.0 - head
    term = math.exp(-lam + m * math.log(lam) - math.lgamma(m + 1))
    total, i = term, m
    while term > 1e-18 * total:
        i += 1
        term *= lam / i
        total += term
    return total


def sample_roulette(settings: EstimatorSettings, generator: torch.Generator | None = None) -> int:
    """Draw N with torch's CPU RNG (the global one unless ``generator``, a CPU generator, is given),
    so ``torch.manual_seed`` makes runs reproducible. The draw never touches an accelerator."""
    buf = torch.empty(1, dtype=torch.float64)
    if settings.n_dist == "geometric":
        buf.geometric_(settings.geometric_p, generator=generator)
    else:
        buf = torch.poisson(buf.fill_(settings.poisson_lambda), generator=generator)
    return int(buf[0])


def roulette_weights(settings: EstimatorSettings, n_exact: int, n_extra: int) -> list[float]:
    """Term weights c_1..c_n, n = n_exact + N with N = ``n_extra``: c_k = 1 for k ≤ n_exact, else
    1/P(N ≥ k − n_exact) (the indicator 1[N ≥ k − n_exact] is 1 for every kept term)."""
    return [1.0] * n_exact + [1.0 / tail_probability(settings, m) for m in range(1, n_extra + 1)]


def draw_weights(
    settings: EstimatorSettings, n_exact: int, generator: torch.Generator | None = None
) -> list[float]:
    """One roulette draw: the weights of an unbiased truncation of the series (host floats)."""
    return roulette_weights(settings, n_exact, sample_roulette(settings, generator))


# ---------------------------------------------------------------------------------- estimators
def _vjp(g: Tensor, x: Tensor, v: Tensor, create_graph: bool) -> Tensor:
    """vᵀ J_g(x), shaped like x (zeros where g does not depend on x)."""
    (out,) = torch.autograd.grad(g, x, v, create_graph=create_graph, retain_graph=True, allow_unused=True)
    return torch.zeros_like(x) if out is None else out


def _per_sample_dot(a: Tensor, b: Tensor) -> Tensor:
    """Σ over all but the batch dimension of a·b (no reshape, so no copy for any memory layout)."""
    prod = a * b
    return prod if prod.dim() == 1 else prod.sum(dim=tuple(range(1, prod.dim())))


def power_series_logdet(
    g: Tensor, x: Tensor, eps: Tensor, weights: Sequence[float], create_graph: bool
) -> Tensor:
    """Σ_{k=1..n} (−1)^(k+1)/k · c_k · εᵀJ^k ε per sample (paper eq. 3 with Hutchinson probes ε),
    n = len(weights). ``create_graph`` keeps the graph so the estimate can be differentiated.

    The probe products are linear in εᵀJ^k, so the weighted terms are summed first and dotted with ε
    once: (Σ_k a_k εᵀJ^k) ε with a_k = (−1)^(k+1) c_k / k."""
    v = eps
    series: Tensor | None = None
    for k, c in enumerate(weights, start=1):
        v = _vjp(g, x, v, create_graph)
        a = (-1) ** (k + 1) / k * c
        if series is None:
            series = v if a == 1.0 else v * a
        else:
            series = torch.add(series, v, alpha=a)
    if series is None:
        return x.new_zeros(x.shape[0])
    return _per_sample_dot(series, eps)


def neumann_logdet(g: Tensor, x: Tensor, eps: Tensor, weights: Sequence[float], training: bool) -> Tensor:
    """Neumann gradient surrogate (vᵀ J ε) per sample with v = ε + Σ_{k=1..n} (−1)^k c_k εᵀJ^k built
    without a graph. Its gradient is unbiased for ∂ log det(I + J) because (I + J)⁻¹ = Σ_k (−1)^k J^k;
    its value is not a log-det estimate. ``training`` keeps the graph of the final product."""
    with torch.no_grad(), input_gradients_only():
        v, neumann = eps, eps.clone()
        for k, c in enumerate(weights, start=1):
            v = _vjp(g, x, v, create_graph=False)
            neumann.add_(v, alpha=(-1) ** k * c)
    return _per_sample_dot(_vjp(g, x, neumann, create_graph=training), eps)


def exact_logdet(g: Tensor, x: Tensor, create_graph: bool = False) -> Tensor:
    """log|det(I + J_g(x))| per sample from the full (B, D, D) Jacobian (D vector-Jacobian products;
    small D only: 2-D toy data, ``brute_force`` and tests)."""
    b = x.shape[0]
    d = x[0].numel()
    gf = g.reshape(b, d)
    rows = []
    for i in range(d):
        sel = torch.zeros_like(gf)
        sel[:, i] = 1
        rows.append(_vjp(g, x, sel.reshape_as(g), create_graph).reshape(b, d))
    jac = torch.stack(rows, dim=1)  # jac[b, i, j] = ∂g_i/∂x_j
    eye = torch.eye(d, dtype=jac.dtype, device=jac.device)
    return torch.linalg.slogdet(eye + jac)[1]


# ---------------------------------------------------------------------------------- memory efficient
class _MemoryEfficientLogDet(torch.autograd.Function):
    """Runs g and a log-det estimator, takes d(Σ_b logdet_b)/d(x, θ) inside forward and keeps only
    those gradients and the graph of g (the higher-order graph of the estimator is freed at once)."""

    @staticmethod
    def forward(ctx: Any, net: nn.Module, neumann: bool, weights: Sequence[float], x: Tensor,
                eps: Tensor, *params: Tensor) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            xi = x.detach().requires_grad_(True)
            g = net(xi)
            if neumann:
                logdet = neumann_logdet(g, xi, eps, weights, training=True)
            else:
                logdet = power_series_logdet(g, xi, eps, weights, create_graph=True)
            grads = torch.autograd.grad(logdet.sum(), (xi, *params), retain_graph=True, allow_unused=True)
        ctx.g, ctx.x, ctx.logdet_grads = g, xi, grads
        ctx.save_for_backward(*params)
        return g.detach(), logdet.detach()

    @staticmethod
    def backward(ctx: Any, grad_g: Tensor, grad_logdet: Tensor) -> tuple[Tensor | None, ...]:
        params = ctx.saved_tensors
        g, xi = ctx.g, ctx.x
        grad_x_ld, *grad_p_ld = ctx.logdet_grads
        del ctx.g, ctx.x, ctx.logdet_grads
        with torch.enable_grad():
            vjp_x, *vjp_p = torch.autograd.grad(g, (xi, *params), grad_g, allow_unused=True)
        scale_x = grad_logdet.reshape(-1, *([1] * (xi.ndim - 1)))
        scale_p = grad_logdet.mean()
        grad_x = torch.zeros_like(xi) if grad_x_ld is None else grad_x_ld * scale_x
        if vjp_x is not None:
            grad_x = grad_x + vjp_x
        grad_params = []
        for ld, vj in zip(grad_p_ld, vjp_p):
            out = None if ld is None else ld * scale_p
            if vj is not None:
                out = vj if out is None else out + vj
            grad_params.append(out)
        return (None, None, None, grad_x, None, *grad_params)


def memory_efficient_logdet(
    net: nn.Module, x: Tensor, eps: Tensor, weights: Sequence[float], neumann: bool = True
) -> tuple[Tensor, Tensor]:
    """(g(x), logdet) whose backward reuses log-det gradients computed in the forward pass.

    The forward evaluates :func:`neumann_logdet` (or, with ``neumann=False``,
    :func:`power_series_logdet`) and immediately differentiates Σ_b logdet_b with respect to x and
    the parameters θ of ``net``; the backward returns ∂L/∂logdet_b · ∂logdet_b/∂x_b (exact per
    sample, since g acts per sample) and mean_b(∂L/∂logdet_b) · Σ_b ∂logdet_b/∂θ for θ, plus the
    ordinary vector-Jacobian product of g. The θ part is exact when ∂L/∂logdet_b is the same for
    every sample, i.e. for a batch-mean (or sum) loss — the authors' assumption (they scale by
    element 0); per-sample θ gradients would cost B times the memory. Double backward is not
    supported. Every trainable parameter of ``net`` is an explicit input of the autograd Function,
    so its gradient (and distributed data-parallel hooks) fire as usual.
    """
    params = tuple(p for p in net.parameters() if p.requires_grad)
    return _MemoryEfficientLogDet.apply(net, neumann, list(weights), x, eps, *params)
