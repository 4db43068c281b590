"""The i-DenseNet family: g is a dense block with learnable concatenation (paper §3).

Architecture (paper eq. 4-5, §3.3): d dense layers h_i(x) = [η̂₁·x, η̂₂·φ(W_i x)], each adding k
channels (k/a before CLipSwish's doubling, eq. 11), then a 1×1 convolution (a linear map on
vectors) back to the block's c channels. The learnable concatenation sets η = softplus(K) + 0.1
with K initialised to ``eta_init`` and rescales η̂ = lip_coeff·η/‖η‖, so Lip(h_i) ≤ lip_coeff (eq. 9).

Exact count of one block (c input channels, d depth, k growth, a the activation's channel multiplier,
A its trainable scalars, L = 1 when K is learnt; the trailing 2 is the pair (geom_p, lamb) the
authors' invertible block registers):

* conv block: P = Σ_{i<d} [9·(c + i·k)·k/a + k/a] + (c + d·k)·c + c + (2L + A)·d + 2
* FC block on D features after a Linear(D → f) (image FC part; on toy data no first layer, f = D):
  P = [D·f + f] + Σ_{i<d} [(f + i·g)·g/a + g/a] + (f + d·g)·D + D + (2L + A)·d + 2

Both are quadratics in the growth k, the width the budget solver sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .base import ACTIVATION_PARAMS, ArchConfig, Family, channel_multiplier
from .registry import register


@dataclass(frozen=True)
class IDenseNetArch(ArchConfig):
    """The dense blocks of one i-DenseNet. Defaults: the paper's small CIFAR10 model (§5, Table 4:
    depth 3, growth 178) with the authors' concatenation settings (appendix B)."""

    depth: int = 3
    growth: int = 178
    fc_growth: int = 32  # growth of the image model's fully connected blocks
    fc_width: int = 64  # width f of their first linear layer
    learnable_concat: bool = True
    eta_init: tuple[float, float] = (1.0, 1.0)  # initial K₁, K₂ (§3.3)
    lc_start_epoch: int = 25  # K is held at eta_init before this epoch
    lip_coeff: float = 0.98  # ‖η̂‖ of every dense layer (eq. 9)


class IDenseNet(Family):
    name = "idensenet"
    description = "i-DenseNet: dense blocks with learnable concatenation (Perugachi-Diaz et al. 2021)"
    arch_type = IDenseNetArch
    count_fields = ("depth", "growth", "fc_growth", "fc_width", "learnable_concat")
    table_columns = ("depth", "growth", "eta_init", "lip_coeff", "lc_start_epoch")

    def problems(self, arch: IDenseNetArch, channel_mult: int) -> list[tuple[str, str]]:
        a = channel_mult
        p = []
        if arch.depth < 1:
            p.append(("depth", f"{arch.depth} must be >= 1"))
        if arch.growth < a:
            p.append(("growth", f"{arch.growth} must be >= {a}"))
        elif arch.growth % a:
            p.append(("growth", f"{arch.growth} must be even for CLipSwish (it doubles the channels)"))
        if arch.fc_growth % a or arch.fc_growth < a:
            p.append(("fc_growth", f"{arch.fc_growth} must be a positive multiple of {a}"))
        if arch.fc_width < 1:
            p.append(("fc_width", f"{arch.fc_width} must be >= 1"))
        if not 0 < arch.lip_coeff < 1:
            p.append(("lip_coeff", f"{arch.lip_coeff} must lie in (0, 1) for invertibility"))
        if arch.lc_start_epoch < 0:
            p.append(("lc_start_epoch", f"{arch.lc_start_epoch} must be >= 0"))
        return p

    def hold_concat_epochs(self, arch: IDenseNetArch) -> int:
        return arch.lc_start_epoch if arch.learnable_concat else 0

    def conv_net(self, cfg: Any, channels: int, hw: tuple[int, int], first: bool) -> Any:
        from ..dense import DenseConvNet  # torch is imported when a model is built, not with the config

        m = cfg.arch
        return DenseConvNet(channels, m.depth, m.growth, cfg.activation, hw, cfg.sn_coeff, m.eta_init,
                            m.learnable_concat, m.lip_coeff)

    def vector_net(self, cfg: Any, features: int, fc_part: bool) -> Any:
        from ..dense import DenseFCNet

        m = cfg.arch
        return DenseFCNet(features, m.depth, m.fc_growth if fc_part else m.growth, cfg.activation,
                          m.fc_width if fc_part else None, cfg.sn_coeff, m.eta_init, m.learnable_concat,
                          m.lip_coeff)

    def conv_block_params(self, arch: IDenseNetArch, channels: int, activation: str, first: bool) -> int:
        c, d, k = channels, arch.depth, arch.growth
        h = k // channel_multiplier(activation)
        conv_in = d * c + k * d * (d - 1) // 2  # Σ_i (c + i·k)
        per_layer = 2 * int(arch.learnable_concat) + ACTIVATION_PARAMS[activation]
        return 9 * conv_in * h + d * h + (c + d * k) * c + c + per_layer * d + 2

    def vector_block_params(self, arch: IDenseNetArch, features: int, activation: str, fc_part: bool) -> int:
        d, k = arch.depth, arch.fc_growth if fc_part else arch.growth
        h = k // channel_multiplier(activation)
        n = arch.fc_width if fc_part else features
        first = features * n + n if fc_part else 0
        lin_in = d * n + k * d * (d - 1) // 2
        per_layer = 2 * int(arch.learnable_concat) + ACTIVATION_PARAMS[activation]
        return first + lin_in * h + d * h + (n + d * k) * features + features + per_layer * d + 2

    def width_field(self, toy: bool) -> str:
        return "growth"

    def label(self, arch: IDenseNetArch, toy: bool) -> str:
        return f"depth {arch.depth} growth {arch.growth}"

    def columns(self, arch: IDenseNetArch, toy: bool) -> dict[str, Any]:
        eta = "/".join(f"{v:.3g}" for v in arch.eta_init)
        return {"depth": arch.depth, "growth": arch.growth, "eta_init": eta, "lip_coeff": arch.lip_coeff,
                "lc_start_epoch": arch.lc_start_epoch}


FAMILY = register(IDenseNet())
