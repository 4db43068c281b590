"""The Residual Flow residual branch g (Chen et al. 2019), the baseline that defines the budget.

Conv block (kernels 3-1-3, hidden H): [φ] → conv3×3(c_in → H/a) → φ → conv1×1(H → H/a) → φ →
conv3×3(H → c). The leading φ (pre-activation) is dropped only in the model's very first block.
FC / toy block: φ → Linear(a·D → n₁/a) → φ → … → φ → Linear(n_m → D).
Every conv and linear is spectrally normalised, so Lip(g) ≤ sn_coeff^L < 1.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .activations import make_activation
from .families.base import channel_multiplier
from .spectral_norm import SpectralNormConv2d, SpectralNormLinear


class ResFlowConvNet(nn.Sequential):
    def __init__(
        self,
        channels: int,
        hidden: int,
        activation: str,
        input_hw: tuple[int, int],
        preact: bool = True,
        sn_coeff: float = 0.98,
    ) -> None:
        a = channel_multiplier(activation)
        layers: list[nn.Module] = []
        c_in = channels
        if preact:
            layers.append(make_activation(activation))
            c_in = a * channels
        layers += [
            SpectralNormConv2d(c_in, hidden // a, 3, 1, input_hw, sn_coeff),
            make_activation(activation),
            SpectralNormConv2d(hidden, hidden // a, 1, 0, input_hw, sn_coeff),
            make_activation(activation),
            SpectralNormConv2d(hidden, channels, 3, 1, input_hw, sn_coeff),
        ]
        super().__init__(*layers)


class ResFlowMLPNet(nn.Sequential):
    """Pre-activated MLP g on D features with hidden widths ``hidden`` (image FC: (128, 128);
    toy: (128,)*4). ``last_scale`` multiplies the last weight at initialisation (toy: 1/1000)."""

    def __init__(
        self,
        features: int,
        hidden: Sequence[int],
        activation: str,
        sn_coeff: float = 0.98,
        last_scale: float = 1.0,
    ) -> None:
        a = channel_multiplier(activation)
        layers: list[nn.Module] = []
        n_in = a * features
        for n in hidden:
            layers += [make_activation(activation), SpectralNormLinear(n_in, n // a, sn_coeff)]
            n_in = n
        last = SpectralNormLinear(n_in, features, sn_coeff)
        if last_scale != 1.0:
            with torch.no_grad():
                last.weight.mul_(last_scale)
        layers += [make_activation(activation), last]
        super().__init__(*layers)
