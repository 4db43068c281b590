"""The model config: the one object that travels from a search to a checkpoint.

Every knob of the i-DenseNet / Residual Flow architectures, their Lipschitz constraints and their
log-determinant estimators lives here, so a trial's config and a checkpoint always say exactly what
was trained. The defaults describe the paper's small CIFAR10 i-DenseNet (§5, Table 4: 4-4-4 blocks,
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
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from .errors import UserError

FAMILIES = ("idensenet", "resflow")
ACTIVATIONS = ("lipswish", "clipswish", "leakylswish")
N_DISTRIBUTIONS = ("poisson", "geometric")


class ConfigError(UserError):
    """A config that cannot describe a valid model or run; ``problems`` holds (field, message) pairs."""


def channel_multiplier(activation: str) -> int:
    """Channels an activation outputs per input channel: 2 for CLipSwish (it concatenates
    LipSwish(x) and LipSwish(-x), paper eq. 11), else 1. Layers before it output ``width / a``."""
    return 2 if activation == "clipswish" else 1


def plain_dict(obj: Any) -> dict[str, Any]:
    """A dataclass instance's fields as builtins (tuples become lists), for YAML/JSON."""
    return {f.name: list(v) if isinstance(v := getattr(obj, f.name), tuple) else v for f in fields(obj)}


def unknown_keys(cls: type, data: Mapping[str, Any]) -> list[str]:
    """The keys of ``data`` that are not fields of the dataclass ``cls``, sorted."""
    return sorted(set(data) - {f.name for f in fields(cls)})


@dataclass(frozen=True)
class ModelConfig:
    """Complete description of one flow. Immutable; convert with :meth:`to_dict` / :meth:`from_dict`."""

    family: str = "idensenet"
    input_shape: tuple[int, ...] = (3, 32, 32)
    blocks_per_scale: tuple[int, ...] = (4, 4, 4)
    activation: str = "clipswish"

    # i-DenseNet dense blocks g (paper §3.1, eq. 4-5)
    depth: int = 3
    growth: int = 178
    fc_growth: int = 32
    fc_width: int = 64
    # learnable concatenation (paper §3.3): eta_j = softplus(K_j) + 0.1, K initialised to eta_init
    learnable_concat: bool = True
    eta_init: tuple[float, float] = (1.0, 1.0)
    lc_start_epoch: int = 25
    lip_coeff: float = 0.98

    # Residual Flow blocks (the parameter-budget baseline)
    hidden: int = 512
    fc_hidden: int = 128
    toy_hidden: tuple[int, ...] = (128, 128, 128, 128)

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
        problems = self._normalise()
        problems += self.problems() if not problems else []
        if problems:
            raise ConfigError(problems)

    def _normalise(self) -> list[tuple[str, str]]:
        """Sequences given as lists (YAML / JSON) become tuples, so the config stays hashable; a value
        of the wrong kind is a problem of its field."""
        p = []
        for name in ("input_shape", "blocks_per_scale", "toy_hidden"):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)) or not all(_whole(v) for v in value):
                p.append((name, f"{value!r} is not a list of whole numbers"))
            else:
                object.__setattr__(self, name, tuple(int(v) for v in value))
        eta = self.eta_init
        eta = (eta, eta) if _number(eta) else eta
        if not isinstance(eta, (list, tuple)) or not all(_number(v) for v in eta):
            p.append(("eta_init", f"{self.eta_init!r} is not a number or a pair of numbers"))
        else:
            object.__setattr__(self, "eta_init", tuple(float(v) for v in eta))
        for f in fields(self):
            v = getattr(self, f.name)
            kind = str(f.type)
            if kind == "int" and not _whole(v) or kind == "int | None" and v is not None and not _whole(v):
                p.append((f.name, f"{v!r} is not a whole number"))
            elif kind == "float" and not _number(v):
                p.append((f.name, f"{v!r} is not a number"))
            elif kind == "bool" and not isinstance(v, bool):
                p.append((f.name, f"{v!r} is not true or false"))
            elif kind == "str" and not isinstance(v, str):
                p.append((f.name, f"{v!r} is not text"))
        return p

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

    # ------------------------------------------------------------------ validation
    def problems(self) -> list[tuple[str, str]]:
        """Every reason this config is invalid, as (field, message) pairs (empty when valid)."""
        p: list[tuple[str, str]] = []
        if self.family not in FAMILIES:
            p.append(("family", f"{self.family!r} is not one of {', '.join(FAMILIES)}"))
        if self.activation not in ACTIVATIONS:
            p.append(("activation", f"{self.activation!r} is not one of {', '.join(ACTIVATIONS)}"))
        if len(self.input_shape) not in (1, 3) or any(s < 1 for s in self.input_shape):
            p.append(("input_shape", f"{self.input_shape} must be (C, H, W) for images or (D,) for vectors"))
        if not self.blocks_per_scale or any(b < 1 for b in self.blocks_per_scale):
            p.append(("blocks_per_scale", f"{self.blocks_per_scale} needs at least one block per scale"))
        if len(self.input_shape) == 3 and len(self.blocks_per_scale) > 0 and self.n_scales < 1:
            p.append(("input_shape", f"{self.input_shape} is too small for a multiscale flow (H, W >= 4)"))
        if len(self.input_shape) == 1 and len(self.blocks_per_scale) != 1:
            p.append(("blocks_per_scale", "vector (toy) flows take a single entry, the number of blocks"))
        if self.depth < 1:
            p.append(("depth", f"{self.depth} must be >= 1"))
        a = channel_multiplier(self.activation) if self.activation in ACTIVATIONS else 1
        if self.family == "idensenet":
            if self.growth < a:
                p.append(("growth", f"{self.growth} must be >= {a}"))
            elif self.growth % a:
                p.append(("growth", f"{self.growth} must be even for CLipSwish (it doubles the channels)"))
            if self.fc_growth % a or self.fc_growth < a:
                p.append(("fc_growth", f"{self.fc_growth} must be a positive multiple of {a}"))
            if self.fc_width < 1:
                p.append(("fc_width", f"{self.fc_width} must be >= 1"))
        else:
            for name in ("hidden", "fc_hidden"):
                v = getattr(self, name)
                if v < a or v % a:
                    p.append((name, f"{v} must be a positive multiple of {a}"))
            if not self.toy_hidden or any(v < a or v % a for v in self.toy_hidden):
                p.append(("toy_hidden", f"{self.toy_hidden} must be positive multiples of {a}"))
        if len(self.eta_init) != 2:
            p.append(("eta_init", f"{self.eta_init} must be one value or a pair"))
        if not 0 < self.lip_coeff < 1:
            p.append(("lip_coeff", f"{self.lip_coeff} must lie in (0, 1) for invertibility"))
        if not 0 < self.sn_coeff < 1:
            p.append(("sn_coeff", f"{self.sn_coeff} must lie in (0, 1) for invertibility"))
        if self.lc_start_epoch < 0:
            p.append(("lc_start_epoch", f"{self.lc_start_epoch} must be >= 0"))
        if self.fc_blocks < 0:
            p.append(("fc_blocks", f"{self.fc_blocks} must be >= 0"))
        if not 0 < self.logit_alpha < 0.5:
            p.append(("logit_alpha", f"{self.logit_alpha} must lie in (0, 0.5)"))
        if self.n_levels < 2:
            p.append(("n_levels", f"{self.n_levels} must be >= 2"))
        if self.n_dist not in N_DISTRIBUTIONS:
            p.append(("n_dist", f"{self.n_dist!r} is not one of {', '.join(N_DISTRIBUTIONS)}"))
        if self.n_exact_terms < 1 or self.eval_exact_terms < 1:
            p.append(("n_exact_terms", "n_exact_terms and eval_exact_terms must be >= 1"))
        if self.poisson_lambda <= 0:
            p.append(("poisson_lambda", f"{self.poisson_lambda} must be > 0"))
        if not 0 < self.geometric_p < 1:
            p.append(("geometric_p", f"{self.geometric_p} must lie in (0, 1)"))
        if self.sn_train_iters is not None and self.sn_train_iters < 0:
            p.append(("sn_train_iters", f"{self.sn_train_iters} must be >= 0 or null"))
        return p

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain dict of builtins (lists for tuples), suitable for YAML/JSON."""
        return plain_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError` naming each one."""
        unknown = unknown_keys(cls, data)
        if unknown:
            raise ConfigError([(k, "unknown model config key") for k in unknown])
        return cls(**dict(data))

    def replace(self, **changes: Any) -> "ModelConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def toy_config(**changes: Any) -> ModelConfig:
    """The authors' toy 2-D i-DenseNet (train_toy.py defaults, 10 blocks as in paper §4.1):
    LipSwish, depth 3, growth 16, spectral-norm coefficient 0.9, geometric Russian roulette,
    plain backprop through the power series, 5 power iterations after each step."""
    base = dict(
        family="idensenet",
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
    return ModelConfig(**base)
