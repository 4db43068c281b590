"""The model config: the one object that travels from a search to a checkpoint.

The shared knobs of every flow (data shape, layout, activation, spectral normalisation, the
log-determinant estimator) are fields here; the family's own architecture (i-DenseNet's depth and
growth, a Residual Flow's hidden width, ...) is its config from :mod:`model.families`, nested as
``arch``. A trial's config and a checkpoint therefore always say exactly what was trained. The defaults describe the paper's small CIFAR10 i-DenseNet (§5, Table 4: 4-4-4 blocks,
depth 3, growth 178, CLipSwish, learnable concatenation, 8,695,158 parameters) with the authors'
Lipschitz and estimator settings (appendix B). The authors' ``train_img.py`` defaults to the full
model instead (16-16-16 blocks, growth 172, Table 7): ``replace(blocks_per_scale=(16, 16, 16),
growth=172)``.

Two data shapes are supported:

* images, ``input_shape == (C, H, W)``: the multiscale flow of paper Table 7 (logit transform,
  ActNorm, ``blocks_per_scale`` invertible blocks per scale with squeezes between scales, and
  ``fc_blocks`` fully connected blocks at the end);
* toy vectors, ``input_shape == (D,)``: a plain chain of ``blocks_per_scale[0]`` invertible blocks
  (paper §4.1).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, Mapping

from .families.base import channel_multiplier
from .errors import ConfigError
from .families import arch_fields, get_family
from .families.idensenet import IDenseNet
from .values import coerce_fields, plain_dict, unknown_keys

ACTIVATIONS = ("lipswish", "clipswish", "leakylswish")
N_DISTRIBUTIONS = ("poisson", "geometric")


@dataclass(frozen=True)
class ModelConfig:
    """Complete description of one flow. Immutable; convert with :meth:`to_dict` / :meth:`from_dict`.

    ``arch`` is the family's own architecture config (:mod:`model.families`); given as None it takes
    the family's defaults, given as a mapping it is read as that config's fields."""

    family: str = IDenseNet.name  # the paper's model
    arch: Any = None
    input_shape: tuple[int, ...] = (3, 32, 32)
    blocks_per_scale: tuple[int, ...] = (4, 4, 4)
    activation: str = "clipswish"

    # multiscale layout (images only)
    fc_blocks: int = 4
    actnorm: bool = True
    logit_alpha: float = 0.05
    n_levels: int = 256

    # spectral normalisation (paper eq. 2): W <- W / max(1, sigma / sn_coeff)
    sn_coeff: float = 0.98
    sn_tol: float = 1e-3
    sn_max_iters: int = 200
    sn_train_iters: int | None = None  # None: tolerance mode after each step; toy: 5

    # log-determinant estimator (Residual Flows' unbiased power series)
    n_exact_terms: int = 2
    eval_exact_terms: int = 20
    n_dist: str = "poisson"
    poisson_lambda: float = 2.0
    geometric_p: float = 0.5
    neumann_grad: bool = True
    mem_eff: bool = True
    brute_force: bool = False

    def __post_init__(self) -> None:
        problems = coerce_fields(self)
        problems += self._resolve_arch()
        problems += self.problems() if not problems else []
        if problems:
            raise ConfigError(problems)

    def _resolve_arch(self) -> list[tuple[str, str]]:
        """``arch`` as the family's config (its defaults for None, its fields for a mapping)."""
        try:
            family = get_family(self.family)
        except ConfigError as e:
            return e.problems
        arch = self.arch
        if arch is None:
            arch = family.arch_type()
        elif isinstance(arch, Mapping):
            unknown = unknown_keys(family.arch_type, arch)
            if unknown:
                return [(k, f"not a field of a {family.name} model") for k in unknown]
            try:
                arch = family.arch_type(**arch)
            except ConfigError as e:
                return e.problems
        elif not isinstance(arch, family.arch_type):
            return [("arch", f"a {type(arch).__name__} is not the architecture of a {family.name} model")]
        object.__setattr__(self, "arch", arch)
        return []

    @property
    def family_spec(self) -> Any:
        """The registered :class:`~model.families.Family` of this config."""
        return get_family(self.family)

    # ------------------------------------------------------------------ derived facts
    @property
    def is_toy(self) -> bool:
        """True for vector data (toy 2-D), False for images."""
        return len(self.input_shape) == 1

    @property
    def channel_mult(self) -> int:
        return channel_multiplier(self.activation)

    @property
    def n_dims(self) -> int:
        """Number of data dimensions D (3072 for CIFAR10)."""
        n = 1
        for s in self.input_shape:
            n *= s
        return n

    @property
    def n_scales(self) -> int:
        """min(len(blocks_per_scale), halvings while H, W >= 4), as in Residual Flows."""
        if self.is_toy:
            return 1
        _, h, w = self.input_shape
        n = 0
        while h >= 4 and w >= 4:
            n, h, w = n + 1, h // 2, w // 2
        return min(len(self.blocks_per_scale), n)

    def scale_shapes(self) -> list[tuple[int, int, int]]:
        """(C, H, W) seen by the blocks of each scale; squeezing multiplies C by 4, halves H and W."""
        c, h, w = self.input_shape
        shapes = []
        for s in range(self.n_scales):
            shapes.append((c, h, w))
            c, h, w = c * 4, h // 2, w // 2
        return shapes

    def flat(self) -> dict[str, Any]:
        """The shared fields and this family's architecture fields side by side (what
        :func:`model_config` reads)."""
        return {**{f: getattr(self, f) for f in SHARED_FIELDS}, **dataclasses.asdict(self.arch)}

    def describe(self) -> str:
        """The family and its architecture in a few words, e.g. ``idensenet depth 3 growth 178``."""
        return f"{self.family} {self.family_spec.label(self.arch, self.is_toy)}"

    # ------------------------------------------------------------------ validation
    def problems(self) -> list[tuple[str, str]]:
        """Every reason this config is invalid, as (field, message) pairs (empty when valid)."""
        p: list[tuple[str, str]] = []
        if self.activation not in ACTIVATIONS:
            p.append(("activation", f"{self.activation!r} is not one of {', '.join(ACTIVATIONS)}"))
        p += self.family_spec.problems(self.arch, channel_multiplier(self.activation))
        if len(self.input_shape) not in (1, 3) or any(s < 1 for s in self.input_shape):
            p.append(("input_shape", f"{self.input_shape} must be (C, H, W) for images or (D,) for vectors"))
        if not self.blocks_per_scale or any(b < 1 for b in self.blocks_per_scale):
            p.append(("blocks_per_scale", f"{self.blocks_per_scale} needs at least one block per scale"))
        if len(self.input_shape) == 3 and len(self.blocks_per_scale) > 0 and self.n_scales < 1:
            p.append(("input_shape", f"{self.input_shape} is too small for a multiscale flow (H, W >= 4)"))
        if len(self.input_shape) == 1 and len(self.blocks_per_scale) != 1:
            p.append(("blocks_per_scale", "vector (toy) flows take a single entry, the number of blocks"))
        if not 0 < self.sn_coeff < 1:
            p.append(("sn_coeff", f"{self.sn_coeff} must lie in (0, 1) for invertibility"))
        if self.fc_blocks < 0:
            p.append(("fc_blocks", f"{self.fc_blocks} must be >= 0"))
        if not 0 < self.logit_alpha < 0.5:
            p.append(("logit_alpha", f"{self.logit_alpha} must lie in (0, 0.5)"))
        if self.n_levels < 2:
            p.append(("n_levels", f"{self.n_levels} must be >= 2"))
        p += estimator_problems(self)
        if self.sn_train_iters is not None and self.sn_train_iters < 0:
            p.append(("sn_train_iters", f"{self.sn_train_iters} must be >= 0 or null"))
        return p

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain dict of builtins (lists for tuples, ``arch`` a nested dict), suitable for YAML/JSON."""
        return {**plain_dict(self), "arch": self.arch.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError` naming each one.

        A dict without ``arch`` is the flat layout written before families were nested (every
        family's fields side by side, as in ``best.yaml`` files and checkpoints of that time); it is
        read as :func:`model_config` reads flat values."""
        if "arch" not in data:
            return model_config(**data)
        unknown = unknown_keys(cls, data)
        if unknown:
            raise ConfigError([(k, "unknown model config key") for k in unknown])
        return cls(**dict(data))

    def replace(self, **changes: Any) -> "ModelConfig":
        """A copy with some fields changed (validated again). Architecture fields of the family (such
        as ``growth``) may be given flat, as in :func:`model_config`; a new ``family`` starts from its
        own architecture defaults."""
        shared = {k: v for k, v in changes.items() if k in SHARED_FIELDS or k == "arch"}
        flat = {k: v for k, v in changes.items() if k not in shared}
        if flat and "arch" in shared:
            raise ConfigError([(k, "give the family's fields flat or as arch, not both") for k in sorted(flat)])
        family = get_family(shared.get("family", self.family))
        if "arch" not in shared:
            arch = self.arch if family.name == self.family else family.arch_type()
            if flat:
                unknown = sorted(set(flat) - set(family.fields()))
                if unknown:
                    raise ConfigError([(k, f"not a field of a {family.name} model") for k in unknown])
                arch = dataclasses.replace(arch, **flat)
            shared["arch"] = arch
        return dataclasses.replace(self, **shared)


#: the fields every family shares (the rest of a model config is its family's ``arch``)
SHARED_FIELDS = frozenset(f.name for f in fields(ModelConfig)) - {"arch"}


def estimator_problems(s: Any) -> list[tuple[str, str]]:
    """What is wrong with the log-determinant estimator's settings of ``s`` (a :class:`ModelConfig` or
    a :class:`model.logdet.EstimatorSettings`: the fields of the same names)."""
    p = []
    if s.n_dist not in N_DISTRIBUTIONS:
        p.append(("n_dist", f"{s.n_dist!r} is not one of {', '.join(N_DISTRIBUTIONS)}"))
    if s.n_exact_terms < 1 or s.eval_exact_terms < 1:
        p.append(("n_exact_terms", "n_exact_terms and eval_exact_terms must be >= 1"))
    if s.poisson_lambda <= 0:
        p.append(("poisson_lambda", f"{s.poisson_lambda} must be > 0"))
    if not 0 < s.geometric_p < 1:
        p.append(("geometric_p", f"{s.geometric_p} must lie in (0, 1)"))
    return p


def flat_dict(data: Mapping[str, Any]) -> dict[str, Any]:
    """A model config dict of either layout (``arch`` nested, or the flat one of older files) as flat
    values, without validating them."""
    arch = data.get("arch")
    if not isinstance(arch, Mapping):
        return dict(data)
    return {**{k: v for k, v in data.items() if k != "arch"}, **arch}


def model_config(**values: Any) -> ModelConfig:
    """A :class:`ModelConfig` from flat values: the shared fields, and the architecture fields of the
    family (``growth``, ``hidden``, ...) side by side. Architecture fields of *other* families are
    ignored, so the flat values a search space holds for every family describe one model each; a
    name that is no field of any family is an error. A nested ``arch`` (a mapping, as
    :meth:`ModelConfig.to_dict` writes) is read as flat fields too."""
    if isinstance(values.get("arch"), Mapping):  # the nested layout
        values = flat_dict(values)
    shared = {k: v for k, v in values.items() if k in SHARED_FIELDS or k == "arch"}
    rest = {k: v for k, v in values.items() if k not in shared}
    unknown = sorted(set(rest) - set(arch_fields()))
    if unknown:
        raise ConfigError([(k, "unknown model config key") for k in unknown])
    if "arch" in shared and rest:
        raise ConfigError([(k, "give the family's fields flat or as arch, not both") for k in sorted(rest)])
    try:
        family = get_family(shared.get("family", ModelConfig.family))
    except ConfigError:
        return ModelConfig(**shared)  # reports the family (and anything else wrong with the shared fields)
    if "arch" not in shared:
        shared["arch"] = {k: v for k, v in rest.items() if k in family.fields()}
    return ModelConfig(**shared)


def toy_config(**changes: Any) -> ModelConfig:
    """The authors' toy 2-D i-DenseNet (train_toy.py defaults, 10 blocks as in paper §4.1):
    LipSwish, depth 3, growth 16, spectral-norm coefficient 0.9, geometric Russian roulette,
    plain backprop through the power series, 5 power iterations after each step."""
    base = dict(
        family=IDenseNet.name,
        input_shape=(2,),
        blocks_per_scale=(10,),
        activation="lipswish",
        depth=3,
        growth=16,
        actnorm=False,
        fc_blocks=0,
        sn_coeff=0.9,
        sn_train_iters=5,
        n_dist="geometric",
        neumann_grad=False,
        mem_eff=False,
        lc_start_epoch=0,
    )
    base.update(changes)
    return model_config(**base)
