"""The invertible residual block y = x + g(x) with Lip(g) < 1 (paper §2, eq. 2) and its
log-determinant log|det(I + J_g(x))| (paper eq. 3), estimated as :mod:`model.logdet` describes.

The block follows the authors' iResBlock: in training, ``n_exact_terms`` plus a Russian-roulette
number of series terms (one draw per minibatch per block) with one Gaussian probe per sample, and the
Neumann gradient / memory-efficient gradient if the settings ask for them; in evaluation the plain
series with ``eval_exact_terms`` plus roulette, or the exact log-det for 2-D vectors. The inverse is
the Banach fixed-point iteration x ← y − g(x), which converges because Lip(g) < 1.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from .logdet import (
    EstimatorSettings,
    draw_weights,
    exact_logdet,
    memory_efficient_logdet,
    neumann_logdet,
    power_series_logdet,
)

logger = logging.getLogger(__name__)


class InvertibleResBlock(nn.Module):
    """y = x + net(x) with ``forward(x) -> (y, logdet)``, logdet of shape (B,).

    ``net`` must act sample by sample and be contractive (Lip < 1, e.g. spectrally normalised).
    ``geom_p`` (= logit 0.5) and ``lamb`` (= 2.0) are parameters only because the authors' block has
    them: they count in parameter totals (:meth:`model.flow.Flow.num_parameters`) but take no part in
    any computation, so they are frozen (``requires_grad=False``: no optimiser state, and DDP need not
    look for unused parameters); the roulette law comes from ``settings``. ``roulette_generator`` (a CPU
    ``torch.Generator``, default None = torch's global RNG) drives the draw of N.
    """

    def __init__(self, net: nn.Module, settings: EstimatorSettings | None = None) -> None:
        super().__init__()
        self.net = net
        self.settings = settings if settings is not None else EstimatorSettings()
        self.geom_p = nn.Parameter(torch.tensor(0.0), requires_grad=False)  # logit(0.5)
        self.lamb = nn.Parameter(torch.tensor(2.0), requires_grad=False)
        self.roulette_generator: torch.Generator | None = None
        self.last_n_terms = 0  # series terms used by the latest estimate (0: exact log-det)
        # ``net`` compiled, used in evaluation and inversion while
        # :func:`model.compiled_eval.compiled_evaluation` is active; kept out of the module tree (no
        # state-dict keys, no parameters of its own); ``compiled_mode`` is torch.compile's mode for it
        object.__setattr__(self, "compiled_net", None)
        self.compiled_mode: str | None = None
        self.use_compiled = False

    def _uses_exact(self, x: Tensor) -> bool:
        return self.settings.brute_force or (not self.training and x.ndim == 2 and x.shape[1] == 2)

    def _net(self) -> nn.Module:
        return self.compiled_net if (self.use_compiled and not self.training) else self.net

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if torch.is_inference_mode_enabled():
            raise RuntimeError("InvertibleResBlock needs autograd for its log-det; use torch.no_grad(), "
                               "not torch.inference_mode()")
        grad_on = torch.is_grad_enabled()
        s = self.settings
        with torch.enable_grad():
            if self._uses_exact(x):
                xi = x if (grad_on and x.requires_grad) else x.detach().requires_grad_(True)
                g = self._net()(xi)
                logdet = exact_logdet(g, xi, create_graph=grad_on)
                self.last_n_terms = 0
            else:
                n_exact = s.n_exact_terms if self.training else s.eval_exact_terms
                weights = draw_weights(s, n_exact, self.roulette_generator)
                self.last_n_terms = len(weights)
                eps = torch.randn_like(x)
                if self.training and grad_on and s.mem_eff:
                    g, logdet = memory_efficient_logdet(self.net, x, eps, weights, neumann=s.neumann_grad)
                else:
                    xi = x if (grad_on and x.requires_grad) else x.detach().requires_grad_(True)
                    g = self._net()(xi)
                    if self.training and s.neumann_grad:
                        logdet = neumann_logdet(g, xi, eps, weights, training=grad_on)
                    else:
                        logdet = power_series_logdet(g, xi, eps, weights, create_graph=grad_on)
        if not grad_on:
            g, logdet = g.detach(), logdet.detach()
        return x + g, logdet

    @torch.no_grad()
    def inverse(self, y: Tensor, atol: float = 1e-5, rtol: float = 1e-5, max_iters: int = 1000) -> Tensor:
        """x with x + g(x) = y by the fixed-point iteration x ← y − g(x) from x₀ = y − g(y).

        Stops once every element has (x − x_prev)² / (atol + rtol·|y|) < 1 (the authors' criterion:
        a step size below √(atol + rtol·|y|)); the error after stopping is at most
        Lip(g)/(1 − Lip(g)) times the last step. Logs a warning after ``max_iters`` iterations.
        Runs without autograd (the result is detached), with g compiled while
        :func:`model.compiled_eval.compiled_evaluation` is active (in evaluation mode).
        """
        net = self._net()
        tol = atol + rtol * y.abs()
        x_prev, x = y, y - net(y)
        iters = 0
        while not bool(((x - x_prev) ** 2 < tol).all()):
            if iters >= max_iters:
                logger.warning("InvertibleResBlock.inverse: no convergence after %d iterations", max_iters)
                break
            x_prev, x = x, y - net(x)
            iters += 1
        return x

    def extra_repr(self) -> str:
        return f"settings={self.settings}"
