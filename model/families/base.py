"""What every family of invertible blocks tells the rest of the project.

A flow (:mod:`model.flow`) is the same multiscale chain for every family (paper Table 7): logit
transform, ActNorm, n_s invertible blocks x + g(x) per scale with squeezes between, then fully
connected blocks. A *family* is the choice of g: i-DenseNet's dense blocks (paper §3), the Residual
Flow's 3-1-3 convolutions, or a new one. Each family is one module that subclasses :class:`Family`
and registers an instance (:func:`model.families.register`); nothing outside that module names it.

A family owns

* its architecture config, a frozen dataclass nested in :class:`model.config.ModelConfig` as ``arch``
  (defaults, validation);
* how g is built on C×H×W images (``conv_net``) and on flat vectors (``vector_net``: the image FC
  part, and the toy 2-D chain of paper §4.1);
* the exact closed-form parameter count of one block, for the budget-matched search (paper Table 1
  matches every model to a Residual Flow's count), and the one *width* field the solver sets from a
  budget, in which that count is a quadratic;
* how it reads in tables and logs (a label and table columns).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..values import Problem, coerce_fields, plain_dict

if TYPE_CHECKING:  # the families build torch modules, but importing a config stays torch-free
    from torch import nn

#: trainable scalars in one activation module: β of LipSwish (eq. 10) and CLipSwish (eq. 11),
#: α and β of LeakyLSwish (eq. 14)
ACTIVATION_PARAMS: dict[str, int] = {"lipswish": 1, "clipswish": 1, "leakylswish": 2}


def channel_multiplier(activation: str) -> int:
    """Channels an activation outputs per input channel: 2 for CLipSwish (it concatenates
    LipSwish(x) and LipSwish(-x), paper eq. 11), else 1. Layers before it output ``width / a``."""
    return 2 if activation == "clipswish" else 1


class ArchConfig:
    """Base of every family's frozen architecture dataclass: values are coerced on construction
    (:func:`model.values.coerce_fields`); a value of the wrong kind raises :class:`ConfigError`."""

    def __post_init__(self) -> None:
        problems = coerce_fields(self)
        if problems:
            raise ConfigError(problems)

    def to_dict(self) -> dict[str, Any]:
        return plain_dict(self)


class Family:
    """One family of residual blocks g; subclasses set the class attributes and the block methods.

    ``cfg`` arguments are the whole :class:`model.config.ModelConfig` (shared settings such as the
    activation and the spectral-norm coefficient, and ``cfg.arch``, this family's config)."""

    name: ClassVar[str]
    description: ClassVar[str]  # one line, for listings and docs
    arch_type: ClassVar[type]  # the frozen dataclass (subclass of ArchConfig) nested as ``arch``
    #: fields of ``arch_type`` that change the parameter count (every other one leaves it alone)
    count_fields: ClassVar[tuple[str, ...]]
    #: the columns this family fills in a sweep's results table, in order
    table_columns: ClassVar[tuple[str, ...]] = ()
    #: True for the family whose models define a parameter budget (the control arm of a sweep)
    defines_budget: ClassVar[bool] = False

    # ------------------------------------------------------------------ config
    def fields(self) -> tuple[str, ...]:
        """Names of the architecture fields."""
        return tuple(f.name for f in dataclasses.fields(self.arch_type))

    def problems(self, arch: Any, channel_mult: int) -> list[Problem]:
        """Why ``arch`` cannot describe a model whose activation outputs ``channel_mult`` channels per
        input channel (:func:`channel_multiplier`), as (field, message) pairs."""
        return []

    def hold_concat_epochs(self, arch: Any) -> int:
        """Epochs at the start of training during which the block's learnable concatenation is held
        at its initialisation (0 for a family without one)."""
        return 0

    # ------------------------------------------------------------------ blocks
    def conv_net(self, cfg: Any, channels: int, hw: tuple[int, int], first: bool) -> nn.Module:
        """g on C×H×W images; ``first`` for the model's very first block."""
        raise NotImplementedError

    def vector_net(self, cfg: Any, features: int, fc_part: bool) -> nn.Module:
        """g on flat vectors: the image FC blocks (``fc_part``) or the toy chain."""
        raise NotImplementedError

    # ------------------------------------------------------------------ counts and widths
    def conv_block_params(self, arch: Any, channels: int, activation: str, first: bool) -> int:
        """Trainable parameters of one image block, (geom_p, lamb) included, ActNorm excluded."""
        raise NotImplementedError

    def vector_block_params(self, arch: Any, features: int, activation: str, fc_part: bool) -> int:
        """Trainable parameters of one vector block, (geom_p, lamb) included, ActNorm excluded."""
        raise NotImplementedError

    def width_field(self, toy: bool) -> str:
        """The field the budget solver sets; the count must be a quadratic in it."""
        raise NotImplementedError

    def with_width(self, arch: Any, width: int, toy: bool) -> Any:
        """``arch`` with its width field set to ``width``."""
        return dataclasses.replace(arch, **{self.width_field(toy): width})

    def width_of(self, arch: Any, toy: bool) -> int:
        """The width ``arch`` has (the inverse of :meth:`with_width`)."""
        return getattr(arch, self.width_field(toy))

    # ------------------------------------------------------------------ display
    def label(self, arch: Any, toy: bool) -> str:
        """How a model of this family is named in logs and summaries, e.g. ``depth 3 growth 178``."""
        return f"{self.width_field(toy)} {self.width_of(arch, toy)}"

    def columns(self, arch: Any, toy: bool) -> dict[str, Any]:
        """This family's values for the results table (keys: :attr:`table_columns`)."""
        return {c: getattr(arch, c) for c in self.table_columns}
