"""One training step and one evaluation, as every caller runs them (sweeps, full runs, the toy trainer,
the benchmark and the profiler). Torch only.

A step in the authors' order (``train_img.py``; ``train_toy.py`` is the same with no warm-up, clip
or EMA):

1. warm-up learning rate lr·min((itr + 1)/warmup, 1);
2. the batch on the device as the flow takes it (images: uniform dequantisation x = (p + u)/n);
3. the loss: the mean score of :meth:`model.flow.Flow.score_from_output`, i.e. bits per dimension
   (images) or nats (toy) from the change of variables (paper eq. 1) with the power-series
   log-determinant (eq. 3);
4. backward (through DDP when the step is given a wrapped module);
5. the global gradient norm, clipped to ``grad_clip`` when set;
6. **one host read** of (loss, gradient norm): a non-finite value on any rank (``agree``) ends the
   step without an update and reports it;
7. Adam, zero_grad;
8. the learnable-concatenation hold while the caller asks for it (paper §3.3: K reset to its
   initial value after every update);
9. ``update_lipschitz`` (paper eq. 2: power iteration of every spectral norm; a fixed count for the
   toy models, tolerance mode otherwise);
10. the EMA of the parameters.

Evaluation (:func:`evaluate`) refines the spectral norms, switches to eval mode (20 exact terms plus
roulette, or the exact 2-D log-determinant) and averages the score over every worker's shard.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.profiler import record_function

from .compiled_eval import compiled_evaluation
from .data import dequantize
from .dense import set_fused
from .flow import Flow
from .train_config import TrainConfig


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(values: Iterable[float], device: torch.device) -> list[float]:
    """Σ over every worker of each value (float64; the values themselves in a single process)."""
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    if distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` holds on at least one worker (the same answer everywhere)."""
    if not distributed():
        return flag
    return all_reduce_sum([1.0 if flag else 0.0], device)[0] > 0


def model_input(batch: Tensor, model: Flow, device: torch.device) -> Tensor:
    """A loader batch as the flow takes it, on ``device``: toy points as float32, images (integer
    pixel levels) dequantised uniformly to [0, 1) on the device."""
    x = batch.to(device, non_blocking=True)
    if model.config.is_toy:
        return x.float()
    return dequantize(x, model.config.n_levels)


class ParamEMA:
    """θ̄ ← d·θ̄ + (1 − d)·θ over the **parameters** (not buffers), as the authors' evaluation uses.
    The shadow copy starts at the first update, i.e. after the first optimiser step."""

    def __init__(self, model: nn.Module, decay: float | None) -> None:
        self.model = model
        self.decay = float(decay or 0.0)
        self.shadow: dict[str, Tensor] = {}

    @torch.no_grad()
    def update(self) -> None:
        if self.decay <= 0:
            return
        named = [(n, p.detach()) for n, p in self.model.named_parameters()]
        if not self.shadow:
            self.shadow = {n: p.clone() for n, p in named}
            return
        # θ̄ + (1 − d)(θ − θ̄) = d θ̄ + (1 − d) θ, every tensor in one multi-tensor call
        torch._foreach_lerp_([self.shadow[n] for n, _ in named], [p for _, p in named], 1.0 - self.decay)

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Temporarily replace the parameters by their averages (no-op before the first update)."""
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


@dataclass(frozen=True)
class StepResult:
    loss: float
    grad_norm: float
    lr: float
    finite: bool


class TrainStep:
    """``step(batch, hold_concat)`` trains ``model`` in place by one step (see the module docstring).

    ``forward`` is the module the loss is computed through (a DistributedDataParallel wrapper of
    ``model``; default ``model`` itself); ``agree(flag, device)`` combines the non-finite flag over
    the workers (default :func:`any_rank`). The optimiser is Adam over the parameters that train
    (multi-tensor ``foreach``: the same update as the per-tensor loop, fewer kernel launches).
    """

    def __init__(
        self,
        model: Flow,
        train: TrainConfig,
        forward: nn.Module | None = None,
        agree: Callable[[bool, torch.device], bool] = any_rank,
    ) -> None:
        self.model = model
        set_fused(model, train.fused_on(next(model.parameters()).device))
        self.forward = forward if forward is not None else model
        self.agree = agree
        self.lr, self.warmup, self.clip = train.lr, train.warmup_iters, train.grad_clip
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=train.lr, betas=train.betas,
                                          weight_decay=train.weight_decay, foreach=True)
        self.ema = ParamEMA(model, train.ema_decay)
        self.iteration = 0

    def lr_at(self, iteration: int) -> float:
        """Linear warm-up: lr·min((itr + 1)/warmup, 1) (constant lr without warm-up)."""
        return self.lr * min((iteration + 1) / self.warmup, 1.0) if self.warmup else self.lr

    def __call__(self, batch: Tensor, hold_concat: bool = False) -> StepResult:
        model = self.model
        device = self.params[0].device
        lr = self.lr_at(self.iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with record_function("step: forward+estimator"):
            loss = model.score_from_output(*self.forward(model_input(batch, model, device))).mean()
        with record_function("step: backward"):
            loss.backward()
        with record_function("step: grad norm+clip+read"):
            norm = torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None], foreach=True)
            if self.clip is not None:
                torch.nn.utils.clip_grads_with_norm_(self.params, self.clip, norm, foreach=True)
            loss_value, norm_value = torch.stack([loss.detach().double(), norm.double()]).tolist()
            finite = math.isfinite(loss_value) and math.isfinite(norm_value)
        if self.agree(not finite, device):
            self.optimizer.zero_grad(set_to_none=True)
            return StepResult(loss_value, norm_value, lr, False)
        with record_function("step: adam+zero_grad"):
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        with record_function("step: lc hold+update_lipschitz"):
            if hold_concat:
                model.reset_concat()
            model.update_lipschitz(model.config.sn_train_iters)
        with record_function("step: ema"):
            self.ema.update()
        self.iteration += 1
        return StepResult(loss_value, norm_value, lr, True)

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "ema": self.ema.state_dict(), "iteration": self.iteration}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.ema.load_state_dict(state.get("ema"))
        self.iteration = int(state["iteration"])


@torch.no_grad()
def evaluate(
    model: Flow,
    batches: Iterable,
    device: torch.device,
    sn_iters: int | None,
    max_items: int | None = None,
    refresh_lipschitz: bool = True,
    compiled: bool = False,
) -> tuple[float, int]:
    """(mean score, number of items) over every worker's shard of the test set (sums all-reduced).

    First ``update_lipschitz(sn_iters)`` (a count, or tolerance mode for None), then eval mode, where
    each block uses the evaluation estimator (20 exact terms plus roulette; exact for 2-D data).
    ``batches`` yields ``(batch, label)``; ``max_items`` caps this worker's share;
    ``refresh_lipschitz=False`` skips the update (a second set scored with the same weights);
    ``compiled=True`` runs every block's g compiled (:func:`model.compiled_eval.compiled_evaluation`).
    """
    if refresh_lipschitz:
        model.update_lipschitz(sn_iters)
    was_training = model.training
    model.eval()
    total, count = torch.zeros((), dtype=torch.float64, device=device), 0
    try:
        with compiled_evaluation(model) if compiled else contextlib.nullcontext():
            for xb, _ in batches:
                if max_items is not None and count >= max_items:
                    break
                s = model.score_from_output(*model(model_input(xb, model, device)))
                total += s.double().sum()  # summed on the device, read back once below
                count += s.numel()
    finally:
        model.train(was_training)
    total_all, count_all = all_reduce_sum([float(total), float(count)], device)
    return total_all / max(count_all, 1.0), int(round(count_all))
