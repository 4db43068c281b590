"""Exact parameter counts of a flow, in closed form, without building it.

The count is Σ numel over trainable parameters, the convention of the paper's parameter budgets
(Table 1: every i-DenseNet is matched to the 8.7M Residual Flow). The layout is shared by every
family (paper Table 7): ActNorm adds 2 per channel, once after the logit transform and then after
every block; an image flow has n_s blocks per scale on c·4^s channels (one squeeze per scale), then
``fc_blocks`` fully connected blocks on the D flattened dimensions; a toy flow is a chain of blocks
on D = input_shape[0]. Each family gives the exact count of one of its blocks
(:meth:`model.families.Family.conv_block_params` / ``vector_block_params``; the formulas are in each
family's module docstring).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from model.config import ModelConfig
from model.families import arch_defaults, families, get_family

#: ModelConfig fields shared by every family that change the parameter count
SHARED_COUNT_FIELDS: tuple[str, ...] = ("family", "input_shape", "blocks_per_scale", "activation", "fc_blocks",
                                        "actnorm")


def count_fields() -> frozenset[str]:
    """Every model field that changes the parameter count: the shared ones and each registered
    family's (every other field leaves the count unchanged)."""
    return frozenset(SHARED_COUNT_FIELDS).union(*(f.count_fields for f in families()))


class Arch(NamedTuple):
    """The count-relevant part of a :class:`ModelConfig`: cheap to copy with another width."""

    family: str
    input_shape: tuple[int, ...]
    blocks_per_scale: tuple[int, ...]
    activation: str
    fc_blocks: int
    actnorm: bool
    arch: Any  # the family's architecture config

    @property
    def toy(self) -> bool:
        return len(self.input_shape) == 1


def arch_of(cfg: ModelConfig) -> Arch:
    """The count-relevant part of ``cfg``."""
    return Arch(cfg.family, cfg.input_shape, cfg.blocks_per_scale, cfg.activation, cfg.fc_blocks, cfg.actnorm,
                cfg.arch)


def arch_from_values(values: dict[str, Any]) -> Arch:
    """The count-relevant part of flat model values (see :func:`model.config.model_config`), without
    validating the whole config."""
    family = get_family(values["family"])
    arch = family.arch_type(**{k: values[k] for k in family.fields() if k in values})
    return Arch(values["family"], tuple(values["input_shape"]), tuple(values["blocks_per_scale"]),
                values["activation"], values["fc_blocks"], values["actnorm"], arch)


def scale_channels(input_shape: tuple[int, ...], blocks_per_scale: tuple[int, ...]) -> list[int]:
    """Channels seen by each scale of the multiscale image flow (×4 per squeeze); the number of
    scales is min(len(blocks_per_scale), halvings while H, W ≥ 4), as :meth:`ModelConfig.n_scales`."""
    c, h, w = input_shape
    out: list[int] = []
    while h >= 4 and w >= 4 and len(out) < len(blocks_per_scale):
        out.append(c)
        c, h, w = 4 * c, h // 2, w // 2
    return out


def count_arch(a: Arch) -> int:
    """Exact trainable-parameter count of the flow described by ``a`` (see the module docstring)."""
    family = get_family(a.family)
    an = 2 if a.actnorm else 0
    if a.toy:  # a chain of blocks, optional ActNorm after each
        d = a.input_shape[0]
        return a.blocks_per_scale[0] * (family.vector_block_params(a.arch, d, a.activation, False) + an * d)
    total = an * a.input_shape[0]
    for s, c in enumerate(scale_channels(a.input_shape, a.blocks_per_scale)):
        n = a.blocks_per_scale[s]
        block = family.conv_block_params(a.arch, c, a.activation, False) + an * c
        if s == 0:  # the model's very first block may differ (a Residual Flow's has no pre-activation)
            total += family.conv_block_params(a.arch, c, a.activation, True) + an * c - block
        total += n * block
    if a.fc_blocks:
        d = 1
        for v in a.input_shape:
            d *= v
        total += a.fc_blocks * (family.vector_block_params(a.arch, d, a.activation, True) + an * d)
    return total


def count_parameters(cfg: ModelConfig) -> int:
    """``build_model(cfg).num_parameters()`` (the authors' count, frozen scalars included), computed
    without building the model."""
    return count_arch(arch_of(cfg))


def count_values(cfg: ModelConfig) -> dict[str, Any]:
    """The fields of ``cfg`` that change its count, flat (the shared ones and its family's)."""
    return {**{f: getattr(cfg, f) for f in SHARED_COUNT_FIELDS},
            **{f: getattr(cfg.arch, f) for f in cfg.family_spec.count_fields}}


def flat_values(cfg: ModelConfig) -> dict[str, Any]:
    """Flat model values (see :func:`model.config.model_config`): every registered family's
    architecture defaults, overlaid by ``cfg``'s shared fields and its own architecture."""
    return {**arch_defaults(), **cfg.flat()}
