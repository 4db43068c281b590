"""The Residual Flow family (Chen et al. 2019): the baseline whose models define the parameter budgets.

Architecture: image blocks are 3-1-3 convolutions [φ] → conv3×3(c_in → H/a) → φ → conv1×1(H → H/a)
→ φ → conv3×3(H → c), the leading φ dropped in the model's very first block; vector blocks are
φ → Linear(a·D → n₁/a) → φ → … → φ → Linear(n_m → D), hidden widths (fc_hidden, fc_hidden) in the
image FC part and ``toy_hidden`` on toy data (a the activation's channel multiplier).

Exact count of one block (A trainable scalars per activation, the trailing 2 the (geom_p, lamb)
pair of the invertible block):

* conv block, hidden H, h = H/a, c_in = a·c with pre-activation (c without):
  P = 9·c_in·h + h + H·h + h + 9·H·c + c + A·n_act + 2   (n_act = 3, or 2 in the first block)
* MLP block on D features, hidden n₁..n_m, n₀ = a·D: Σ_j [n_{j−1}·n_j/a + n_j/a] + n_m·D + D + A·(m + 1) + 2

Both are quadratics in the width the budget solver sets: H on images, the common width w of
``toy_hidden = (w, …, w)`` on toy data.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable

from .base import ACTIVATION_PARAMS, ArchConfig, Family, channel_multiplier
from .registry import register

#: the toy Residual Flow divides its last weight by 1000 at initialisation (the authors' train_toy.py)
TOY_LAST_SCALE = 1e-3


@dataclass(frozen=True)
class ResFlowArch(ArchConfig):
    """The blocks of one Residual Flow. Defaults: the 8.7M CIFAR10 model of paper Table 1."""

    hidden: int = 512  # H of the image blocks
    fc_hidden: int = 128  # both hidden widths of the image FC blocks
    toy_hidden: tuple[int, ...] = (128, 128, 128, 128)  # hidden widths of the toy blocks


def mlp_block_params(features: int, hidden: Iterable[int], activation: str) -> int:
    """Trainable parameters of one pre-activated MLP block on D = ``features`` (see the module docstring)."""
    a = channel_multiplier(activation)
    total, n_in, n_act = 0, a * features, 1
    for n in hidden:
        total += n_in * (n // a) + n // a
        n_in, n_act = n, n_act + 1
    return total + n_in * features + features + ACTIVATION_PARAMS[activation] * n_act + 2


class ResFlow(Family):
    name = "resflow"
    description = "Residual Flow: 3-1-3 convolutional residual blocks (Chen et al. 2019), the budget baseline"
    arch_type = ResFlowArch
    count_fields = ("hidden", "fc_hidden", "toy_hidden")
    table_columns = ("hidden",)
    defines_budget = True

    def problems(self, arch: ResFlowArch, channel_mult: int) -> list[tuple[str, str]]:
        a = channel_mult
        p = [(name, f"{v} must be a positive multiple of {a}")
             for name, v in (("hidden", arch.hidden), ("fc_hidden", arch.fc_hidden)) if v < a or v % a]
        if any(v < a or v % a for v in arch.toy_hidden):
            p.append(("toy_hidden", f"{arch.toy_hidden} must be positive multiples of {a}"))
        return p

    def conv_net(self, cfg: Any, channels: int, hw: tuple[int, int], first: bool) -> Any:
        from ..resflow_blocks import ResFlowConvNet  # torch is imported when a model is built, not with the config

        return ResFlowConvNet(channels, cfg.arch.hidden, cfg.activation, hw, preact=not first, sn_coeff=cfg.sn_coeff)

    def vector_net(self, cfg: Any, features: int, fc_part: bool) -> Any:
        from ..resflow_blocks import ResFlowMLPNet

        if fc_part:
            return ResFlowMLPNet(features, (cfg.arch.fc_hidden,) * 2, cfg.activation, cfg.sn_coeff)
        return ResFlowMLPNet(features, cfg.arch.toy_hidden, cfg.activation, cfg.sn_coeff, TOY_LAST_SCALE)

    def conv_block_params(self, arch: ResFlowArch, channels: int, activation: str, first: bool) -> int:
        a, c, hid = channel_multiplier(activation), channels, arch.hidden
        h = hid // a
        c_in = c if first else a * c
        n_act = 2 if first else 3
        return 9 * c_in * h + h + hid * h + h + 9 * hid * c + c + ACTIVATION_PARAMS[activation] * n_act + 2

    def vector_block_params(self, arch: ResFlowArch, features: int, activation: str, fc_part: bool) -> int:
        return mlp_block_params(features, (arch.fc_hidden,) * 2 if fc_part else arch.toy_hidden, activation)

    def width_field(self, toy: bool) -> str:
        return "toy_hidden" if toy else "hidden"

    def with_width(self, arch: ResFlowArch, width: int, toy: bool) -> ResFlowArch:
        if toy:  # every hidden layer of the toy blocks takes the width; their number stays
            return dataclasses.replace(arch, toy_hidden=(width,) * len(arch.toy_hidden))
        return dataclasses.replace(arch, hidden=width)

    def width_of(self, arch: ResFlowArch, toy: bool) -> int:
        return arch.toy_hidden[0] if toy else arch.hidden

    def label(self, arch: ResFlowArch, toy: bool) -> str:
        return f"{self.width_field(toy)} {self.width_of(arch, toy)}"

    def columns(self, arch: ResFlowArch, toy: bool) -> dict[str, Any]:
        return {"hidden": self.width_of(arch, toy)}


FAMILY = register(ResFlow())
