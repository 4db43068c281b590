"""Exact parameter counts of i-DenseNet and Residual Flow models, in closed form, without building.

The count is Σ numel over trainable parameters, the convention of the paper's parameter budgets
(Table 1: every i-DenseNet is matched to the 8.7M Residual Flow). Notation: c block input channels,
d depth, k growth, a = 2 for CLipSwish (eq. 11 doubles the channels, so each layer outputs k/a),
else 1; A trainable scalars per activation module (β of LipSwish eq. 10 / CLipSwish eq. 11;
α and β of LeakyLSwish eq. 14); L = 1 when the learnable concatenation (§3.3) trains K₁, K₂.

* dense conv block (eq. 4-5, dense layer i: 3×3 conv c + i·k → k/a, then a 1×1 conv c + d·k → c):
  P = Σ_{i<d} [9·(c + i·k)·k/a + k/a] + (c + d·k)·c + c + (2L + A)·d + 2
* dense FC block on D features with input width f (image FC part) or none (toy, f = D):
  P = [D·f + f] + Σ_{i<d} [(f + i·g)·g/a + g/a] + (f + d·g)·D + D + (2L + A)·d + 2
* Residual Flow conv block (3-1-3, hidden H, h = H/a; c_in = a·c with pre-activation, c without):
  P = 9·c_in·h + h + H·h + h + 9·H·c + c + A·n_act + 2   (n_act = 3, or 2 in the first block)
* Residual Flow MLP block (hidden n₁..n_m, pre-activated): Σ_j [n_{j-1}·n_j/a + n_j/a] + n_m·D + D
  + A·(m + 1) + 2 with n₀ = a·D.

The trailing 2 of every block is the pair (geom_p, lamb) the authors' invertible block registers.
ActNorm adds 2 per channel (image: once after the logit, then after every block).
"""

from __future__ import annotations

from typing import Iterable, NamedTuple

from model.config import ModelConfig, channel_multiplier

#: trainable scalars in one activation module
ACTIVATION_PARAMS: dict[str, int] = {"lipswish": 1, "clipswish": 1, "leakylswish": 2}

#: ModelConfig fields that change the parameter count (every other field leaves it unchanged)
COUNT_FIELDS: tuple[str, ...] = (
    "family", "input_shape", "blocks_per_scale", "activation", "depth", "growth", "fc_growth",
    "fc_width", "learnable_concat", "hidden", "fc_hidden", "toy_hidden", "fc_blocks", "actnorm",
)


class Arch(NamedTuple):
    """The count-relevant part of a :class:`ModelConfig`, as a cheap hashable tuple of builtins."""

    family: str
    input_shape: tuple[int, ...]
    blocks_per_scale: tuple[int, ...]
    activation: str
    depth: int
    growth: int
    fc_growth: int
    fc_width: int
    learnable_concat: bool
    hidden: int
    fc_hidden: int
    toy_hidden: tuple[int, ...]
    fc_blocks: int
    actnorm: bool


def arch_of(cfg: ModelConfig) -> Arch:
    """The count-relevant fields of ``cfg``."""
    return Arch(*(getattr(cfg, f) for f in COUNT_FIELDS))


def dense_conv_block(c: int, depth: int, growth: int, activation: str, lc: bool) -> int:
    """Trainable parameters of one i-DenseNet conv block g on c channels, plus its (geom_p, lamb)."""
    h = growth // channel_multiplier(activation)
    # Σ_i (c + i·k) = d·c + k·d(d−1)/2 input channels over the d dense 3×3 convs
    conv_in = depth * c + growth * depth * (depth - 1) // 2
    out = (c + depth * growth) * c + c
    per_layer = 2 * int(lc) + ACTIVATION_PARAMS[activation]
    return 9 * conv_in * h + depth * h + out + per_layer * depth + 2


def dense_fc_block(
    features: int, depth: int, growth: int, activation: str, lc: bool, width: int | None
) -> int:
    """Trainable parameters of one i-DenseNet fully connected block on D = ``features``: an optional
    Linear(D → width) first (image FC part), d dense linear layers, Linear(· + d·k → D)."""
    h = growth // channel_multiplier(activation)
    first = 0
    n = features
    if width is not None:
        first = features * width + width
        n = width
    lin_in = depth * n + growth * depth * (depth - 1) // 2
    out = (n + depth * growth) * features + features
    per_layer = 2 * int(lc) + ACTIVATION_PARAMS[activation]
    return first + lin_in * h + depth * h + out + per_layer * depth + 2


def resflow_conv_block(c: int, hidden: int, activation: str, first: bool) -> int:
    """Trainable parameters of one Residual Flow 3-1-3 conv block on c channels (no pre-activation
    in the model's very first block)."""
    a = channel_multiplier(activation)
    h = hidden // a
    c_in = c if first else a * c
    n_act = 2 if first else 3
    return 9 * c_in * h + h + hidden * h + h + 9 * hidden * c + c + ACTIVATION_PARAMS[activation] * n_act + 2


def resflow_mlp_block(features: int, hidden: Iterable[int], activation: str) -> int:
    """Trainable parameters of one pre-activated Residual Flow MLP block on D = ``features``."""
    a = channel_multiplier(activation)
    total = 0
    n_in = a * features
    n_act = 1
    for n in hidden:
        total += n_in * (n // a) + n // a
        n_in = n
        n_act += 1
    return total + n_in * features + features + ACTIVATION_PARAMS[activation] * n_act + 2


def scale_channels(input_shape: tuple[int, ...], blocks_per_scale: tuple[int, ...]) -> list[int]:
    """Channels seen by each scale of the multiscale image flow (×4 per squeeze); the number of
    scales is min(len(blocks_per_scale), halvings while H, W ≥ 4), as :meth:`ModelConfig.n_scales`."""
    c, h, w = input_shape
    out: list[int] = []
    while h >= 4 and w >= 4 and len(out) < len(blocks_per_scale):
        out.append(c)
        c, h, w = 4 * c, h // 2, w // 2
    return out


def count_arch(arch: Arch) -> int:
    """Exact trainable-parameter count of the flow described by ``arch`` (see the module docstring)."""
    f = arch
    dense = f.family == "idensenet"
    if len(f.input_shape) == 1:  # toy vector flow: a chain of blocks, optional ActNorm after each
        d = f.input_shape[0]
        if dense:
            block = dense_fc_block(d, f.depth, f.growth, f.activation, f.learnable_concat, None)
        else:
            block = resflow_mlp_block(d, f.toy_hidden, f.activation)
        return f.blocks_per_scale[0] * (block + (2 * d if f.actnorm else 0))
    an = 2 if f.actnorm else 0
    total = an * f.input_shape[0]
    for s, c in enumerate(scale_channels(f.input_shape, f.blocks_per_scale)):
        n = f.blocks_per_scale[s]
        if dense:
            total += n * (dense_conv_block(c, f.depth, f.growth, f.activation, f.learnable_concat) + an * c)
        else:
            rest = resflow_conv_block(c, f.hidden, f.activation, first=False) + an * c
            if s == 0:
                total += resflow_conv_block(c, f.hidden, f.activation, first=True) + an * c + (n - 1) * rest
            else:
                total += n * rest
    if f.fc_blocks:
        d = 1
        for v in f.input_shape:
            d *= v
        if dense:
            fc = dense_fc_block(d, f.depth, f.fc_growth, f.activation, f.learnable_concat, f.fc_width)
        else:
            fc = resflow_mlp_block(d, (f.fc_hidden, f.fc_hidden), f.activation)
        total += f.fc_blocks * (fc + an * d)
    return total


def count_parameters(cfg: ModelConfig) -> int:
    """``build_model(cfg).num_parameters()`` (the authors' count, frozen scalars included), computed
    without building the model."""
    return count_arch(arch_of(cfg))
