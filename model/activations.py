"""Lipschitz-bounded activations of the i-DenseNet paper ("Invertible DenseNets with Concatenated
LipSwish"), acting element-wise; CLipSwish concatenates along dim 1 (channels / features).

* LipSwish (eq. 10): ``x * sigmoid(beta * x) / 1.1`` with ``beta = softplus(b)``, raw ``b = 0.5``.
  Its derivative peaks at 0.99985393 (at ``beta * x = 2.39936``), so Lip(LipSwish) < 1.
* CLipSwish (eq. 11, appendix A.3): ``Phi(x) / 1.004`` with ``Phi(x) = [LipSwish(x), LipSwish(-x)]``
  and one shared ``beta``. By eq. 13 / 39 the Jacobian norm of ``Phi`` at ``x`` is
  ``sqrt(phi_1'(x)^2 + phi_2'(x)^2)``, whose supremum is 1.0039650 for every ``beta``, hence
  Lip(CLipSwish) = 0.999965. The output has twice the input's channels.
* LeakyLSwish (eq. 14): ``alpha * x + (1 - alpha) * LipSwish(x)`` with ``alpha = sigmoid(a)``,
  raw ``a = -3`` and raw ``b = 0.5``; a convex combination of two 1-Lipschitz maps.

Every module owns its raw parameters (1, 1 and 2 scalars respectively).

Evaluation keeps the tensor-sized work small (a few element-wise passes with fused second
derivatives matter: the log-det estimator differentiates the activation twice):

* ``sigmoid(-z) = 1 - sigmoid(z)`` gives ``LipSwish(-x) = LipSwish(x) - x / 1.1``, so the second half
  of CLipSwish costs one fused multiply-add instead of a second sigmoid on a negated copy;
* constant divisors and the caller's scale are folded into one scalar factor.

``scaled_pieces(x, scale)`` returns tensors whose concatenation on dim 1 is ``scale * act(x)``; the
dense layers (paper eq. 5) fold their concatenation weight into it instead of multiplying the output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LIPSWISH_DIVISOR = 1.1
"""Divisor of eq. 10; bounds sup_x d/dx [x * sigmoid(beta x)] = 1.0998 by 1."""

CLIPSWISH_DIVISOR = 1.004
"""The paper's bound on Lip(Phi) of eq. 11 (true value 1.0039650, independent of beta)."""

RAW_BETA_INIT = 0.5
RAW_ALPHA_INIT = -3.0

Scale = Tensor | float | None


def _times(a: Tensor | float, b: Scale) -> Tensor | float:
    return a if b is None else a * b


class LipSwish(nn.Module):
    """Eq. 10: ``LipSwish(x) = x * sigmoid(beta x) / 1.1``, ``beta = softplus(raw_beta)`` > 0."""

    #: x·σ(βx) is divided by this (eq. 10); ``mirrored``: no second half (see :class:`CLipSwish`)
    divisor = LIPSWISH_DIVISOR
    mirrored = False

    def __init__(self) -> None:
        super().__init__()
        self.raw_beta = nn.Parameter(torch.tensor([RAW_BETA_INIT]))

    @property
    def beta(self) -> Tensor:
        return F.softplus(self.raw_beta)

    def scaled_pieces(self, x: Tensor, scale: Scale = None) -> list[Tensor]:
        swish = x * torch.sigmoid(self.beta * x)
        if scale is None:
            return [swish / self.divisor]
        return [swish * (scale / self.divisor)]

    def forward(self, x: Tensor) -> Tensor:
        return self.scaled_pieces(x)[0]


class CLipSwish(nn.Module):
    """Eq. 11: ``CLipSwish(x) = [LipSwish(x), LipSwish(-x)] / 1.004`` concatenated on dim 1.

    Input ``(B, C, ...)`` gives output ``(B, 2C, ...)``; both halves share one ``beta``.
    """

    #: x·σ(βx) is divided by this (eqs. 10 and 11); ``mirrored``: the second half, (−x)·σ(−βx)
    divisor = LIPSWISH_DIVISOR * CLIPSWISH_DIVISOR
    mirrored = True

    def __init__(self) -> None:
        super().__init__()
        self.raw_beta = nn.Parameter(torch.tensor([RAW_BETA_INIT]))

    @property
    def beta(self) -> Tensor:
        return F.softplus(self.raw_beta)

    def scaled_pieces(self, x: Tensor, scale: Scale = None) -> list[Tensor]:
        c = _times(1.0 / self.divisor, scale)
        first = x * torch.sigmoid(self.beta * x) * c  # c·x·sigmoid(beta x)
        if isinstance(c, Tensor):
            second = torch.addcmul(first, x, c, value=-1.0)  # c·(x·sigmoid(beta x) − x) = c·(−x)·sigmoid(−beta x)
        else:
            second = torch.sub(first, x, alpha=c)
        return [first, second]

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat(self.scaled_pieces(x), dim=1)


class LeakyLSwish(nn.Module):
    """Eq. 14: ``alpha x + (1 - alpha) LipSwish(x)``, ``alpha = sigmoid(raw_alpha)`` in (0, 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.raw_alpha = nn.Parameter(torch.tensor([RAW_ALPHA_INIT]))
        self.raw_beta = nn.Parameter(torch.tensor([RAW_BETA_INIT]))

    @property
    def alpha(self) -> Tensor:
        return torch.sigmoid(self.raw_alpha)

    @property
    def beta(self) -> Tensor:
        return F.softplus(self.raw_beta)

    def scaled_pieces(self, x: Tensor, scale: Scale = None) -> list[Tensor]:
        alpha = self.alpha
        # scale·(alpha x + (1 − alpha) x sigmoid(beta x) / 1.1) = x · (a + sigmoid(beta x) · b)
        a = _times(alpha, scale)
        b = _times((1.0 - alpha) / LIPSWISH_DIVISOR, scale)
        return [x * torch.addcmul(a, torch.sigmoid(self.beta * x), b)]

    def forward(self, x: Tensor) -> Tensor:
        return self.scaled_pieces(x)[0]


_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "lipswish": LipSwish,
    "clipswish": CLipSwish,
    "leakylswish": LeakyLSwish,
}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by config name (``ModelConfig.activation``)."""
    try:
        cls = _ACTIVATIONS[name]
    except (KeyError, TypeError):
        valid = ", ".join(sorted(_ACTIVATIONS))
        raise ValueError(f"unknown activation {name!r}; valid names: {valid}") from None
    return cls()
