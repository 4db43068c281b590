"""One training step in the authors' order (train_img.py; the same order for the toy flows).

1. warm-up learning rate lr·min((itr + 1)/warmup, 1);
2. dequantised batch (images: x = (p + u)/n_levels) → loss: mean bits per dimension (images) or mean
   negative log-likelihood in nats (toy), the change of variables of paper eq. 1 with the log-det
   power series of eq. 3;
3. backward;
4. gradient-norm clip (1.0) over all parameters;
5. Adam step;
6. zero_grad;
7. learnable-concatenation reset while it is held (paper §3.3);
8. ``update_lipschitz``: power iteration of every spectral norm (eq. 2), tolerance mode or a fixed
   count (toy: 5);
9. EMA of the parameters (decay 0.999; the shadow copy starts at the first update).

``fast=False`` runs the per-tensor reference of steps 4, 5 and 9 (Python loops over parameters);
``fast=True`` the multi-tensor (``torch._foreach_*``) forms, which compute the same numbers.
Nothing in the step reads a value back to the host, so on a GPU it queues without syncing (except
where the model itself must decide on the host: the Russian-roulette draw lives on the CPU).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from model.config import ModelConfig
from model.data import dequantize
from model.flow import Flow


@dataclass(frozen=True)
class Recipe:
    """Optimisation settings of one step (authors' defaults, paper appendix B)."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.99)
    eps: float = 1e-8
    warmup_iters: int = 1000
    clip: float | None = 1.0
    ema_decay: float | None = 0.999
    lc_hold: bool = True

    @classmethod
    def for_config(cls, cfg: ModelConfig) -> "Recipe":
        """Images: betas (0.9, 0.99) as in train_img.py; toy: Adam's default betas (train_toy.py)."""
        return cls(betas=(0.9, 0.999)) if cfg.is_toy else cls()


class TrainStep:
    """Callable ``step(batch) -> loss`` (a detached 0-d tensor) that trains ``model`` in place."""

    def __init__(self, model: Flow, recipe: Recipe | None = None, fast: bool = True, adam: str = "foreach") -> None:
        self.model = model
        self.cfg = model.config
        self.recipe = recipe if recipe is not None else Recipe.for_config(self.cfg)
        self.fast = fast
        self.params = [p for p in model.parameters() if p.requires_grad]
        r = self.recipe
        opt_kw: dict = {}
        if fast:
            opt_kw = {"fused": True} if adam == "fused" else {"foreach": True}
        else:
            opt_kw = {"foreach": False}
        self.optimizer = torch.optim.Adam(self.params, lr=r.lr, betas=r.betas, eps=r.eps, **opt_kw)
        self.itr = 0
        self.ema: list[Tensor] | None = None

    # ------------------------------------------------------------------ pieces
    def _input(self, batch: Tensor) -> Tensor:
        if self.cfg.is_toy:
            return batch
        return dequantize(batch, self.cfg.n_levels)

    def _loss(self, x: Tensor) -> Tensor:
        if self.cfg.is_toy:
            return self.model.nll(x).mean()
        return self.model.bits_per_dim(x).mean()

    def _clip(self) -> None:
        if self.recipe.clip is not None:
            nn.utils.clip_grad_norm_(self.params, self.recipe.clip, foreach=self.fast)

    @torch.no_grad()
    def _ema_update(self) -> None:
        decay = self.recipe.ema_decay
        if decay is None:
            return
        if self.ema is None:
            self.ema = [p.detach().clone() for p in self.params]
            return
        if self.fast:
            torch._foreach_lerp_(self.ema, [p.detach() for p in self.params], 1.0 - decay)
        else:
            for e, p in zip(self.ema, self.params):
                e.mul_(decay).add_(p.detach(), alpha=1.0 - decay)

    # ------------------------------------------------------------------ the step
    def __call__(self, batch: Tensor) -> Tensor:
        r = self.recipe
        lr = r.lr * min((self.itr + 1) / r.warmup_iters, 1.0) if r.warmup_iters > 0 else r.lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss = self._loss(self._input(batch))
        loss.backward()
        self._clip()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if r.lc_hold:
            self.model.reset_concat()
        self.model.update_lipschitz(self.cfg.sn_train_iters)
        self._ema_update()
        self.itr += 1
        return loss.detach()
