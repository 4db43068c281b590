"""The train config: everything about a run that is not the model (data, optimiser, schedule).

Torch-free and frozen, like :class:`model.config.ModelConfig`. A field left out takes the default of
its data kind at construction (the authors' recipes, paper appendix B and their ``train_img.py`` /
``train_toy.py``):

* images: Adam(1e-3, betas (0.9, 0.99)), linear warm-up lr·min((itr + 1)/1000, 1), gradient-norm
  clip 1.0, EMA 0.999 of the parameters, batch 64, test batch 200, every epoch a full pass;
* toy 2-D data: Adam(1e-3, betas (0.9, 0.999)) without warm-up, clipping or EMA, batch 500 drawn
  fresh each step, 100 steps per epoch, 10,000 test points, 200 power iterations before scoring.

``None`` is a value, not "unset": ``grad_clip: null`` trains without clipping, ``ema_decay: null``
scores the raw weights, ``steps_per_epoch: null`` passes over the whole training set,
``eval_sn_iters: null`` refines the spectral norms in tolerance mode before scoring, and
``loader_workers: null`` sizes the loader from the CPUs the worker reserves
(:func:`model.data.default_loader_workers`), and ``fused: null`` decides the fused kernels per data
set and device (:meth:`TrainConfig.fused_on`).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Mapping

from .errors import ConfigError
from .values import coerce, field_kinds, plain_dict, unknown_keys
from .datasets import DATASETS, dataset_info

if TYPE_CHECKING:
    import torch

_UNSET: Any = type("Unset", (), {"__repr__": lambda self: "<default>"})()

TOY_DEFAULTS: dict[str, Any] = dict(
    batch_size=500, test_batch_size=10_000, steps_per_epoch=100, betas=(0.9, 0.999),
    warmup_iters=0, grad_clip=None, ema_decay=None, eval_sn_iters=200,
)
IMAGE_DEFAULTS: dict[str, Any] = dict(
    batch_size=64, test_batch_size=200, steps_per_epoch=None, betas=(0.9, 0.99),
    warmup_iters=1000, grad_clip=1.0, ema_decay=0.999, eval_sn_iters=None,
)
#: data sets whose runs on a CPU default to ``fused: true`` (``fused: null``, see
#: :meth:`TrainConfig.fused_on`): at their 32 × 32 size the fused step paid its compilation back
#: within about 53 steps from an empty inductor cache (9 from a warm one) and compiled scoring within
#: the first epoch; for toy data and digits neither does (docs/performance.md)
FUSED_BY_DEFAULT = ("cifar10", "imagenet32")
#: train values a search space may search, with the kind of value they take
SEARCHABLE: dict[str, str] = {"lr": "float", "weight_decay": "float", "batch_size": "int"}


@dataclass(frozen=True)
class TrainConfig:
    """One run's training settings; :meth:`to_dict` / :meth:`from_dict` round-trip through YAML/JSON."""

    data: str = "moons"
    data_root: str | None = None
    epochs: int = 10
    batch_size: int = _UNSET  # global: each of W workers takes batch_size / W
    test_batch_size: int = _UNSET
    steps_per_epoch: int | None = _UNSET  # toy: batches per epoch; images: an optional cap
    test_size: int | None = None  # toy: test points (None: 10,000); images: an optional cap
    lr: float = 1e-3
    betas: tuple[float, float] = _UNSET
    weight_decay: float = 0.0  # the authors' Adam ignores weight decay, so 0 is faithful
    warmup_iters: int = _UNSET
    grad_clip: float | None = _UNSET
    ema_decay: float | None = _UNSET
    eval_sn_iters: int | None = _UNSET  # power iterations before scoring (None: tolerance mode)
    seed: int = 0
    loader_workers: int | None = None  # None: sized from the worker's reserved CPUs (model.data)
    fused: bool | None = None  # compiled kernels: dense layers fused (model.fused), scoring compiled
    # (model.compiled_eval); None: decided per data set and device by fused_on

    def __post_init__(self) -> None:
        problems: list[tuple[str, str]] = []
        data = str(self.data).lower()
        if data not in DATASETS:
            problems.append(("data", f"{self.data!r} is not one of {', '.join(DATASETS)}"))
            data = "moons"
        object.__setattr__(self, "data", data)
        defaults = TOY_DEFAULTS if dataset_info(data).is_toy else IMAGE_DEFAULTS
        for f in fields(self):
            value = getattr(self, f.name)
            if value is _UNSET:
                value = defaults[f.name]
            if value is not None:
                value, problem = coerce(_KINDS[f.name], value)
                if problem:
                    problems.append((f.name, problem))
                    continue
            object.__setattr__(self, f.name, value)
        problems += self._range_problems() if not problems else []
        if problems:
            raise ConfigError(problems)

    def _range_problems(self) -> list[tuple[str, str]]:
        p = []
        if self.epochs < 1:
            p.append(("epochs", f"{self.epochs} must be >= 1"))
        for name in ("batch_size", "test_batch_size", "steps_per_epoch", "test_size", "loader_workers"):
            v = getattr(self, name)
            lowest = 0 if name == "loader_workers" else 1
            if v is None and name in ("batch_size", "test_batch_size"):
                p.append((name, "must be a number"))
            elif v is not None and v < lowest:
                p.append((name, f"{v} must be >= {lowest}"))
        if self.lr <= 0:
            p.append(("lr", f"{self.lr} must be > 0"))
        if self.weight_decay < 0:
            p.append(("weight_decay", f"{self.weight_decay} must be >= 0"))
        if self.warmup_iters is None or self.warmup_iters < 0:
            p.append(("warmup_iters", f"{self.warmup_iters} must be >= 0"))
        if self.grad_clip is not None and self.grad_clip <= 0:
            p.append(("grad_clip", f"{self.grad_clip} must be > 0 (null: no clipping)"))
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            p.append(("ema_decay", f"{self.ema_decay} must lie in [0, 1) (null: no EMA)"))
        if self.eval_sn_iters is not None and self.eval_sn_iters < 0:
            p.append(("eval_sn_iters", f"{self.eval_sn_iters} must be >= 0 (null: tolerance mode)"))
        if self.betas is None or not all(0 <= b < 1 for b in self.betas):
            p.append(("betas", f"{self.betas} must be two numbers in [0, 1)"))
        return p

    def fused_on(self, device: torch.device) -> bool:
        """Whether a run on ``device`` uses the fused kernels: ``fused`` if set; otherwise on for
        ``FUSED_BY_DEFAULT`` data sets on a CPU with a C++ compiler (torch.compile needs one there),
        where it was measured faster once compiled, and off on a GPU until ``bench/gpu_bench.sh`` has
        measured it there."""
        if self.fused is not None:
            return self.fused
        return self.data in FUSED_BY_DEFAULT and device.type == "cpu" and _has_cpp_compiler()

    @property
    def is_toy(self) -> bool:
        return dataset_info(self.data).is_toy

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of builtins with every default filled in."""
        return plain_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        """Inverse of :meth:`to_dict`; missing keys take their defaults, unknown keys and values of the
        wrong kind raise :class:`ConfigError` naming each one."""
        unknown = unknown_keys(cls, data)
        if unknown:
            raise ConfigError([(k, "unknown train config key") for k in unknown])
        return cls(**dict(data))

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def _has_cpp_compiler() -> bool:
    """Whether the C++ compiler torch.compile builds CPU kernels with is there: $CXX, else g++
    (clang++ on macOS), as inductor chooses."""
    default = "clang++" if sys.platform == "darwin" else "g++"
    return shutil.which(os.environ.get("CXX") or default) is not None


_KINDS = field_kinds(TrainConfig)
