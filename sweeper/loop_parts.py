"""Pieces of the per-worker loop: the parameter EMA, the scores, evaluation and distributed sums.

Scores (paper eq. 1, Residual Flows' convention for bits per dimension): with z = f(x) and
log p(x) = log N(z; 0, I) + log|det J_f(x)|,

* toy 2-D data: the negative log-likelihood −log p(x) in nats per sample;
* images dequantised as x = (p + u)/n with n pixel levels: bpd = −(log p(x) − D·log n)/(D·ln 2).
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn

from model.flow import bits_per_dim_from_log_prob, log_prob_from_output



def score_from_output(z: Tensor, logdet: Tensor, is_toy: bool, n_levels: int | None) -> Tensor:
    """Per-sample score (nats for toy data, bits/dim for images) from the flow's ``(z, logdet)``."""
    log_p = log_prob_from_output(z, logdet)
    return -log_p if is_toy else bits_per_dim_from_log_prob(log_p, z.shape[1], n_levels)


def model_input(xb: Tensor, device: torch.device, is_toy: bool, n_levels: int | None) -> Tensor:
    """A loader batch on ``device`` as the flow takes it: toy points as float, images (integer pixel
    levels) uniformly dequantised to [0, 1)."""
    from model.data import dequantize

    x = xb.to(device, non_blocking=True)
    return x.float() if is_toy else dequantize(x, n_levels)


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(values: Iterable[float], device: torch.device) -> list[float]:
    """Σ over every worker of each value (float64; identity in a single process)."""
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    if distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` holds on at least one worker (the same answer on every worker)."""
    return all_reduce_sum([1.0 if flag else 0.0], device)[0] > 0


class ParamEMA:
    """Exponential moving average θ̄ ← d·θ̄ + (1 − d)·θ of the **parameters** (not buffers), as the
    authors' evaluation uses. The shadow copy starts at the first update, i.e. after the first
    optimiser step (after the data-dependent initialisation)."""

    def __init__(self, model: nn.Module, decay: float | None) -> None:
        self.model = model
        self.decay = float(decay or 0.0)
        self.shadow: dict[str, Tensor] = {}

    @property
    def enabled(self) -> bool:
        return self.decay > 0

    @torch.no_grad()
    def update(self) -> None:
        if not self.enabled:
            return
        named = [(n, p.detach()) for n, p in self.model.named_parameters()]
        if not self.shadow:
            self.shadow = {n: p.clone() for n, p in named}
            return
        # θ̄ + (1 − d)(θ − θ̄) = d θ̄ + (1 − d) θ, all tensors in one multi-tensor call
        torch._foreach_lerp_([self.shadow[n] for n, _ in named], [p for _, p in named], 1.0 - self.decay)

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Temporarily replace the parameters by their averages (no-op without EMA or before the first update)."""
        if not self.shadow:
            yield
            return
        named = dict(self.model.named_parameters())
        saved = {n: named[n].detach().clone() for n in self.shadow}
        with torch.no_grad():
            for n, s in self.shadow.items():
                named[n].copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for n, v in saved.items():
                    named[n].copy_(v)

    def state_dict(self) -> dict[str, Tensor]:
        return {n: s.detach().cpu() for n, s in self.shadow.items()}

    def load_state_dict(self, state: dict[str, Tensor] | None) -> None:
        device = next(self.model.parameters()).device
        self.shadow = {n: s.to(device) for n, s in (state or {}).items()}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    is_toy: bool,
    n_levels: int | None,
    device: torch.device,
    sn_iters: int | None,
    max_items: int | None = None,
) -> tuple[float, int]:
    """Test score averaged over every worker's shard: (Σ_ranks Σ score, Σ_ranks n) all-reduced.

    Before scoring, the spectral-norm estimates are refined (``sn_iters`` power iterations, or
    tolerance mode for None) and the model is put in eval mode, where each block's log-det uses the
    evaluation estimator (20 exact terms plus roulette; exact for 2-D data).
    """
    model.update_lipschitz(sn_iters)
    was_training = model.training
    model.eval()
    total, count = torch.zeros((), dtype=torch.float64, device=device), 0
    try:
        for xb, _ in loader:
            if max_items is not None and count >= max_items:
                break
            z, logdet = model(model_input(xb, device, is_toy, n_levels))
            s = score_from_output(z, logdet, is_toy, n_levels)
            total += s.double().sum()  # summed on the device, read back once below
            count += s.numel()
    finally:
        model.train(was_training)
    total, count_f = all_reduce_sum([float(total), float(count)], device)
    return total / max(count_f, 1.0), int(round(count_f))
