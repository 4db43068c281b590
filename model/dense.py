"""The i-DenseNet residual branch g: dense layers with learnable concatenation (paper §3).

A dense layer is h(x) = [η̂₁·x, η̂₂·φ(Wx)] (eq. 5 with the weighting of §3.3). With W spectrally
normalised to ``sn_coeff`` ≤ 1 and φ 1-Lipschitz, eq. 9 gives Lip(h) ≤ sqrt(η̂₁² + η̂₂²) = lip_coeff.
The block g = W_{n+1} ∘ h_n ∘ … ∘ h_1 (eq. 4) is then at most lip_coeff^n · sn_coeff-Lipschitz < 1,
so x + g(x) is invertible (Banach fixed point, §3.2).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .activations import CLipSwish, LipSwish, make_activation
from .families.base import channel_multiplier
from .fused import fused_concat
from .spectral_norm import SpectralNormConv2d, SpectralNormLinear

ETA_OFFSET = 0.1  # η = softplus(K) + 0.1 in the authors' code (not in the paper)
#: the fused operator only where the layer's input has at least this many elements: below it the
#: custom autograd Functions' per-call cost exceeded the kernels' saving in bench.side_by_side (toy
#: batches of 500 × ≤ 34 features, and the 1-1-1 model's 16 × ≤ 67 × 32 × 32 inputs, trained slower
#: fused than eager); the small CIFAR10 model's 32 × 32 layers from 181 channels on are above it
FUSED_MIN_ELEMENTS = 1 << 21


class DenseLayer(nn.Module):
    """h(x) = [η̂₁·x, η̂₂·net(x)] concatenated on dim 1 (paper eq. 5, §3.3).

    η_j = softplus(K_j) + 0.1 and η̂ = lip_coeff·η/‖η‖₂, so η̂₁² + η̂₂² = lip_coeff² and the layer is
    lip_coeff-Lipschitz whenever ``net`` is 1-Lipschitz (eq. 9). K is initialised to ``eta_init``
    (the paper's 1.0); with ``learnable=False`` K is a fixed buffer and η̂₁ = η̂₂ = lip_coeff/√2.
    When ``net`` is (linear map, activation) the activation's ``scaled_pieces`` applies η̂₂ inside its
    own scalar factor, so the product costs no extra pass over the tensor. With ``fused`` set (the
    train config's ``fused``, :func:`set_fused`) and LipSwish or CLipSwish as the activation, the
    activation and the concatenation run as one operator with a compiled backward and double backward
    (:func:`model.fused.fused_concat`) for inputs of at least ``FUSED_MIN_ELEMENTS`` elements.
    """

    fused = False

    def __init__(
        self,
        net: nn.Module,
        eta_init: tuple[float, float] = (1.0, 1.0),
        learnable: bool = True,
        lip_coeff: float = 0.98,
    ) -> None:
        super().__init__()
        self.net = net
        self.lip_coeff = lip_coeff
        self.eta_init = (float(eta_init[0]), float(eta_init[1]))
        k = torch.tensor(self.eta_init)
        if learnable:
            self.K = nn.Parameter(k)
        else:
            self.register_buffer("K", k)

    def eta_hat(self) -> Tensor:
        """The normalised weights (η̂₁, η̂₂) as a tensor of shape (2,)."""
        eta = F.softplus(self.K) + ETA_OFFSET
        return eta * (self.lip_coeff / eta.norm())

    def forward(self, x: Tensor) -> Tensor:
        eta_x, eta_net = self.eta_hat().unbind()
        net = self.net
        pair = isinstance(net, nn.Sequential) and len(net) == 2
        if (self.fused and not torch.compiler.is_compiling() and pair and type(net[1]) in (LipSwish, CLipSwish)
                and x.numel() >= FUSED_MIN_ELEMENTS):
            act = net[1]
            return fused_concat(x, net[0](x), act.beta, eta_x, eta_net / act.divisor, act.mirrored)
        if pair and hasattr(net[1], "scaled_pieces"):
            # eta_net * act(W x): the activation multiplies by eta_net inside (one fewer product)
            pieces = net[1].scaled_pieces(net[0](x), eta_net)
        else:
            pieces = [net(x) * eta_net]
        return torch.cat([x * eta_x, *pieces], dim=1)

    @torch.no_grad()
    def reset_concat(self) -> None:
        """Put K back to its initial value (the authors' LC hold before ``lc_start_epoch``)."""
        self.K.copy_(torch.tensor(self.eta_init, dtype=self.K.dtype, device=self.K.device))


def set_fused(model: nn.Module, fused: bool) -> None:
    """Every dense layer in ``model`` runs its activation and concatenation fused (or not)."""
    for layer in model.modules():
        if isinstance(layer, DenseLayer):
            layer.fused = fused


class DenseConvNet(nn.Sequential):
    """Convolutional g of one i-DenseNet block on c channels (paper Table 7).

    Dense layer i: 3×3 conv (c + i·k → k/a) then the activation (which restores k channels for
    CLipSwish, a = 2), no pre-activation; then a 1×1 conv (c + d·k → c) with no activation.
    """

    def __init__(
        self,
        channels: int,
        depth: int,
        growth: int,
        activation: str,
        input_hw: tuple[int, int],
        sn_coeff: float = 0.98,
        eta_init: tuple[float, float] = (1.0, 1.0),
        learnable_concat: bool = True,
        lip_coeff: float = 0.98,
    ) -> None:
        a = channel_multiplier(activation)
        layers: list[nn.Module] = []
        for i in range(depth):
            conv = SpectralNormConv2d(channels + i * growth, growth // a, 3, 1, input_hw, sn_coeff)
            net = nn.Sequential(conv, make_activation(activation))
            layers.append(DenseLayer(net, eta_init, learnable_concat, lip_coeff))
        layers.append(SpectralNormConv2d(channels + depth * growth, channels, 1, 0, input_hw, sn_coeff))
        super().__init__(*layers)


class DenseFCNet(nn.Sequential):
    """Fully connected g on D features: optional Linear(D → width) (the image FC blocks, width 64),
    then dense layers Linear(· + i·k → k/a) + activation, then Linear(· + d·k → D).

    The toy 2-D i-DenseNet uses ``width=None`` (dense layers straight on the input).
    """

    def __init__(
        self,
        features: int,
        depth: int,
        growth: int,
        activation: str,
        width: int | None = None,
        sn_coeff: float = 0.98,
        eta_init: tuple[float, float] = (1.0, 1.0),
        learnable_concat: bool = True,
        lip_coeff: float = 0.98,
    ) -> None:
        a = channel_multiplier(activation)
        layers: list[nn.Module] = []
        n = features
        if width is not None:
            layers.append(SpectralNormLinear(features, width, sn_coeff))
            n = width
        for i in range(depth):
            net = nn.Sequential(
                SpectralNormLinear(n + i * growth, growth // a, sn_coeff), make_activation(activation)
            )
            layers.append(DenseLayer(net, eta_init, learnable_concat, lip_coeff))
        layers.append(SpectralNormLinear(n + depth * growth, features, sn_coeff))
        super().__init__(*layers)


def dense_layers(module: nn.Module) -> Sequence[DenseLayer]:
    """All learnable-concatenation layers inside ``module``."""
    return [m for m in module.modules() if isinstance(m, DenseLayer)]
