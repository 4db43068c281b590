"""The train config: everything about a run that is not the model (data, optimiser, schedule).

Defaults follow the authors' training scripts (authors-architecture §9): for images Adam(1e-3,
betas (0.9, 0.99)), 1000 linear warm-up iterations, gradient-norm clip 1.0, EMA 0.999 of the
parameters, batch 64, test batch 200; for toy 2-D data Adam(1e-3, betas (0.9, 0.999)) without
warm-up, clipping or EMA, batch 500 drawn fresh each step. ``None`` in a field means "the default for
this data kind"; :meth:`TrainConfig.resolved` fills them in.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Mapping

from model.config import plain_dict, unknown_keys

from .errors import UserError

TOY_DEFAULTS = dict(
    batch_size=500, test_batch_size=10_000, steps_per_epoch=100, betas=(0.9, 0.999),
    warmup_iters=0, grad_clip=None, ema_decay=None, eval_sn_iters=200,
)
IMAGE_DEFAULTS = dict(
    batch_size=64, test_batch_size=200, steps_per_epoch=None, betas=(0.9, 0.99),
    warmup_iters=1000, grad_clip=1.0, ema_decay=0.999, eval_sn_iters=None,
)
INT_FIELDS = frozenset({"epochs", "batch_size", "test_batch_size", "steps_per_epoch", "test_size", "warmup_iters",
                        "eval_sn_iters", "seed", "loader_workers", "inject_nan_at_epoch"})
FLOAT_FIELDS = frozenset({"lr", "weight_decay", "grad_clip", "ema_decay"})
BOOL_FIELDS = frozenset({"use_gpu", "resolved_defaults"})
DIVERGED_SCORE = 1.0e6  # the metric a diverged trial reports: finite, and worse than any real score


@dataclass(frozen=True)
class TrainConfig:
    """One run's training settings; a plain dict round-trips through :meth:`to_dict` / :meth:`from_dict`."""

    data: str = "moons"
    data_root: str | None = None
    epochs: int = 10
    batch_size: int | None = None  # global: each of W workers takes batch_size / W
    test_batch_size: int | None = None
    steps_per_epoch: int | None = None  # toy: batches per epoch; images: optional cap (None = full pass)
    test_size: int | None = None  # toy: test points (None = 10,000); images: optional cap on test items
    lr: float = 1e-3
    betas: tuple[float, float] | None = None
    weight_decay: float = 0.0  # the authors' Adam silently ignores weight decay; 0 is faithful
    warmup_iters: int | None = None
    grad_clip: float | None = None  # None after resolve: no clipping (the norm is still computed)
    ema_decay: float | None = None  # None/0 after resolve: evaluate the raw weights
    eval_sn_iters: int | None = None  # power iterations before evaluation (None: tolerance mode)
    seed: int = 0
    use_gpu: bool = False
    loader_workers: int = 0
    inject_nan_at_epoch: int | None = None  # test knob: the loss of this (1-based) epoch becomes NaN
    tensorboard_dir: str | None = None  # rank 0 writes TensorBoard scalars here (standalone runs)
    status_path: str | None = None  # rank 0 writes its latest report here as JSON (standalone runs)
    resolved_defaults: bool = False

    def __post_init__(self) -> None:
        if self.betas is not None:
            object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs: {self.epochs} must be >= 1")
        for name in ("batch_size", "test_batch_size", "steps_per_epoch", "test_size"):
            v = getattr(self, name)
            if v is not None and v < 1:
                problems.append(f"{name}: {v} must be >= 1")
        if self.lr <= 0:
            problems.append(f"lr: {self.lr} must be > 0")
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            problems.append(f"ema_decay: {self.ema_decay} must lie in [0, 1)")
        if problems:
            raise UserError("train config: " + "; ".join(problems))

    @property
    def is_toy(self) -> bool:
        from model.data import TOY_SETS

        return self.data.lower() in TOY_SETS

    def resolved(self) -> "TrainConfig":
        """A copy with every ``None`` default replaced by the data kind's default."""
        if self.resolved_defaults:
            return self
        defaults = TOY_DEFAULTS if self.is_toy else IMAGE_DEFAULTS
        changes: dict[str, Any] = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        changes["resolved_defaults"] = True
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return plain_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        """From a plain dict (YAML, ``--train KEY=VALUE``): numbers given as text (YAML reads ``1e-3``
        as a string) are converted; a key or value that does not fit is a :class:`UserError`."""
        unknown = unknown_keys(cls, data)
        if unknown:
            raise UserError(f"unknown train config key(s): {', '.join(unknown)}")
        return cls(**{k: _coerce(k, v) for k, v in data.items()})

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def merge_train(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Later layers override earlier ones; ``None`` values in a layer do not override."""
    out: dict[str, Any] = {}
    for layer in layers:
        for k, v in (layer or {}).items():
            if v is not None:
                out[k] = v
    return out


def _number(key: str, value: Any, kind: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UserError(f"train config: {key}: {value!r} is not a number")
    try:
        number = float(value)
    except ValueError:
        raise UserError(f"train config: {key}: {value!r} is not a number") from None
    if kind is int:
        if not number.is_integer():
            raise UserError(f"train config: {key}: {value!r} is not a whole number")
        return int(number)
    return number


def _coerce(key: str, value: Any) -> Any:
    """``value`` as the type of field ``key`` (None stays None: "the default")."""
    if value is None:
        return None
    if key in INT_FIELDS:
        return _number(key, value, int)
    if key in FLOAT_FIELDS:
        return _number(key, value, float)
    if key in BOOL_FIELDS:
        if not isinstance(value, bool):
            raise UserError(f"train config: {key}: {value!r} is not true or false")
        return value
    if key == "betas":
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise UserError(f"train config: betas: {value!r} is not a pair of numbers")
        return tuple(_number(key, b, float) for b in value)
    if not isinstance(value, str):
        raise UserError(f"train config: {key}: {value!r} is not text")
    return value


def option_overrides(epochs: int | None, batch_size: int | None, data_root: str | None) -> dict[str, Any]:
    """The train values a command's ``--epochs``, ``--batch-size`` and ``--data-root`` set (those given);
    the data root is made absolute, since workers on other nodes or in other folders read it."""
    out: dict[str, Any] = {}
    if epochs is not None:
        out["epochs"] = epochs
    if batch_size is not None:
        out["batch_size"] = batch_size
    if data_root is not None:
        out["data_root"] = os.path.abspath(os.path.expanduser(data_root))
    return out
