"""Cheap invertible layers of the multiscale flow: logit transform, ActNorm, squeeze, flatten.

Every layer maps ``x -> (y, logdet)`` with ``logdet`` of shape (B,) the per-sample log|det dy/dx|,
and has an exact ``inverse``.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn import functional as F


class LogitTransform(nn.Module):
    """y = logit(s), s = α + (1 − 2α)x, mapping dequantised pixels x ∈ [0, 1] to ℝ.

    log|dy/dx| = log(1 − 2α) − log s − log(1 − s) per element (Residual Flows' pre-processing,
    paper appendix B).
    """

    def __init__(self, alpha: float = 0.05) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s = self.alpha + (1 - 2 * self.alpha) * x
        log_s, log_1ms = torch.log(s), torch.log1p(-s)
        y = log_s - log_1ms
        logdet = (math.log(1 - 2 * self.alpha) - log_s - log_1ms).flatten(1).sum(1)
        return y, logdet

    def inverse(self, y: Tensor) -> Tensor:
        return (torch.sigmoid(y) - self.alpha) / (1 - 2 * self.alpha)


class ActNorm(nn.Module):
    """Per-channel affine y = (x + b)·exp(w), initialised from the first batch it sees.

    Data-dependent initialisation: b = −mean, w = −½·log(max(var, 0.2)) with the unbiased variance
    over batch and spatial positions. log|det| = Σ_c w_c × (number of spatial positions). Under
    torch.distributed the moments are those of the global batch (sums all-reduced), so every rank
    starts from the values one process would compute from the whole batch (the authors' one-process
    DataParallel).
    Works on (B, C) and (B, C, H, W). Once the ``initialized`` buffer has been seen True it is
    remembered on the host, so later forward passes do not read the buffer back from the device.
    """

    VAR_FLOOR = 0.2

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.weight = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("initialized", torch.tensor(False))
        self._known_initialized = False

    def _is_initialized(self) -> bool:
        if not self._known_initialized:
            self._known_initialized = bool(self.initialized)
        return self._known_initialized

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self._known_initialized = False  # the loaded buffer decides again
        super()._load_from_state_dict(*args, **kwargs)

    def _view(self, t: Tensor, x: Tensor) -> Tensor:
        return t.view(1, -1, *([1] * (x.dim() - 2)))

    @torch.no_grad()
    def _initialize(self, x: Tensor) -> None:
        flat = x.transpose(0, 1).reshape(x.shape[1], -1)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            mean, var = _global_moments(flat)
        else:
            mean = flat.mean(1)
            var = flat.var(1) if flat.shape[1] > 1 else torch.full_like(mean, self.VAR_FLOOR)
        self.bias.copy_(-mean)
        self.weight.copy_(-0.5 * torch.log(var.clamp(min=self.VAR_FLOOR)))
        self.initialized.fill_(True)
        self._known_initialized = True

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if not self._is_initialized():
            self._initialize(x)
        y = (x + self._view(self.bias, x)) * self._view(self.weight.exp(), x)
        spatial = x[0, 0].numel()
        logdet = (self.weight.sum() * spatial).expand(x.shape[0])
        return y, logdet

    def inverse(self, y: Tensor) -> Tensor:
        return y * self._view((-self.weight).exp(), y) - self._view(self.bias, y)


def _global_moments(flat: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row mean and unbiased variance over the rows of every rank (float64 sums all-reduced)."""
    d = flat.double()
    stats = torch.stack([d.sum(1), d.pow(2).sum(1), torch.full_like(d[:, 0], d.shape[1])])
    dist.all_reduce(stats)
    total, squares, n = stats
    mean = total / n
    var = (squares - n * mean * mean) / (n - 1).clamp(min=1)
    var = torch.where(n > 1, var, torch.full_like(var, ActNorm.VAR_FLOOR))
    return mean.to(flat.dtype), var.to(flat.dtype)


class Squeeze(nn.Module):
    """Space-to-depth by 2 (pixel_unshuffle): (C, H, W) -> (4C, H/2, W/2); volume preserving."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return F.pixel_unshuffle(x, 2), x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return F.pixel_shuffle(y, 2)


class Flatten(nn.Module):
    """(B, C, H, W) -> (B, C·H·W) before the fully connected blocks; volume preserving."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x.flatten(1), x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return y.view(y.shape[0], *self.shape)
