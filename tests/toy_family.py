"""A third family for the registry's tests: g = W₂·φ(W₁x), one hidden layer of ``width`` channels
(3×3 convolutions on images, linear maps on vectors), spectrally normalised so Lip(g) < 1.

Importing this module registers it (a Ray worker of a sweep imports it by this name, so it lives in
an importable module, not in a test function). Exact count of one block, a = the activation's channel
multiplier, A its trainable scalars, the trailing 2 the (geom_p, lamb) pair of the invertible block:

* image block on c channels: 9·c·(w/a) + w/a + 9·w·c + c + A + 2
* vector block on D features: D·(w/a) + w/a + w·D + D + A + 2
"""

from __future__ import annotations

from dataclasses import dataclass

from model.families import ACTIVATION_PARAMS, ArchConfig, Family, channel_multiplier, register


@dataclass(frozen=True)
class OneLayerArch(ArchConfig):
    width: int = 8


class OneLayer(Family):
    name = "onelayer"
    description = "test family: one spectrally normalised hidden layer"
    arch_type = OneLayerArch
    count_fields = ("width",)
    table_columns = ("width",)

    def problems(self, arch, channel_mult):
        return [] if arch.width >= channel_mult and arch.width % channel_mult == 0 else [
            ("width", f"{arch.width} must be a positive multiple of {channel_mult}")]

    def conv_net(self, cfg, channels, hw, first):
        from torch import nn

        from model.activations import make_activation
        from model.spectral_norm import SpectralNormConv2d

        a, w = channel_multiplier(cfg.activation), cfg.arch.width
        return nn.Sequential(SpectralNormConv2d(channels, w // a, 3, 1, hw, cfg.sn_coeff), make_activation(cfg.activation),
                             SpectralNormConv2d(w, channels, 3, 1, hw, cfg.sn_coeff))

    def vector_net(self, cfg, features, fc_part):
        from torch import nn

        from model.activations import make_activation
        from model.spectral_norm import SpectralNormLinear

        a, w = channel_multiplier(cfg.activation), cfg.arch.width
        return nn.Sequential(SpectralNormLinear(features, w // a, cfg.sn_coeff), make_activation(cfg.activation),
                             SpectralNormLinear(w, features, cfg.sn_coeff))

    def conv_block_params(self, arch, channels, activation, first):
        h = arch.width // channel_multiplier(activation)
        return 9 * channels * h + h + 9 * arch.width * channels + channels + ACTIVATION_PARAMS[activation] + 2

    def vector_block_params(self, arch, features, activation, fc_part):
        h = arch.width // channel_multiplier(activation)
        return features * h + h + arch.width * features + features + ACTIVATION_PARAMS[activation] + 2

    def width_field(self, toy):
        return "width"


FAMILY = register(OneLayer())
