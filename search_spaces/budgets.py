"""Parameter budgets: the exact size of the Residual Flow an i-DenseNet must match.

The paper compares architectures at an equal parameter count (§4.2, Table 1: every i-DenseNet is
held at the 8.7M of the small Residual Flow). A named budget is the exact count, from
:func:`count_parameters`, of a Residual Flow reference configuration; a budget may also be given as a
reference configuration of one's own (a mapping of model fields), or as a number, taken as given.
The reference configuration, where there is one, is the sweep's control arm: its count *is* the
budget.
A budget is met when the relative deviation |P − B| / B is at most the tolerance (default ±1.5%,
the spread of the paper's own "equal budget" models, −0.4% … +1.2%).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any, Mapping

import yaml

from model.config import ConfigError, ModelConfig, flat_dict, model_config, toy_config
from model.families import budget_family
from model.datasets import dataset_info
from model.errors import UserError

from .count import count_parameters

DEFAULT_TOLERANCE = 0.015

#: Residual Flow reference configurations the named budgets count (``presets/budgets.yaml``).
REFERENCE_CONFIGS: dict[str, ModelConfig] = {
    name: model_config(**values)
    for name, values in yaml.safe_load((resources.files(__package__) / "presets" / "budgets.yaml").read_text()).items()
}

#: name -> exact budget (parameters)
BUDGETS: dict[str, int] = {name: count_parameters(cfg) for name, cfg in REFERENCE_CONFIGS.items()}


class UnknownBudget(UserError):
    """A budget that is neither a preset name, a reference config nor a positive integer."""


@dataclass(frozen=True)
class Budget:
    """A parameter target ``params`` met by counts within ``params·(1 ± tolerance)``."""

    params: int
    tolerance: float = DEFAULT_TOLERANCE
    name: str | None = None
    reference: ModelConfig | None = None  # the Residual Flow whose count this is (the control arm)

    def deviation(self, count: int) -> float:
        """Relative deviation (count − budget) / budget."""
        return (count - self.params) / self.params

    def fits(self, count: int) -> bool:
        return abs(self.deviation(count)) <= self.tolerance

    def describe(self) -> str:
        label = f"{self.name} = " if self.name else ("reference Residual Flow = " if self.reference else "")
        return f"{label}{self.params:,} ±{100 * self.tolerance:g}%"


def resolve_budget(spec: str | int | float) -> int:
    """The budget in parameters of a preset name (see :data:`BUDGETS`) or a positive whole number
    (an int, an integral float such as 8.7e6, or a string of either)."""
    if isinstance(spec, bool):
        raise UnknownBudget(f"budget {spec!r} is neither a preset ({', '.join(BUDGETS)}) nor a number")
    if isinstance(spec, str):
        key = spec.strip().lower()
        if key in BUDGETS:
            return BUDGETS[key]
        try:
            spec = float(key.replace("_", "").replace(",", ""))
        except ValueError:
            raise UnknownBudget(
                f"budget {spec!r} is neither a preset ({', '.join(BUDGETS)}) nor a number"
            ) from None
    if isinstance(spec, float):
        if not spec.is_integer():
            raise UnknownBudget(f"budget {spec!r} is not a whole number of parameters")
        spec = int(spec)
    if not isinstance(spec, int) or spec < 1:
        raise UnknownBudget(f"budget {spec!r} must be a positive number of parameters")
    return spec


def reference_config(values: Mapping[str, Any], dataset: str | None) -> ModelConfig:
    """A reference Residual Flow from model fields over the defaults of ``dataset`` (the authors' toy
    model for 2-D data; family ``resflow`` and LipSwish unless given)."""
    info = dataset_info(dataset) if dataset else None
    base: dict[str, Any] = {"family": budget_family().name, "activation": "lipswish"}
    if info is not None:
        base["input_shape"] = info.shape
        if info.n_levels is not None:
            base["n_levels"] = info.n_levels
    base.update(flat_dict(values))
    try:
        return toy_config(**base) if info is not None and info.is_toy else model_config(**base)
    except (ConfigError, TypeError) as err:
        lines = err.lines() if isinstance(err, ConfigError) else [str(err)]
        raise UnknownBudget(f"reference config: {'; '.join(lines)}") from None


def make_budget(spec: str | int | float | Mapping[str, Any], tolerance: float = DEFAULT_TOLERANCE,
                dataset: str | None = None) -> Budget:
    """A :class:`Budget` from a preset name, a reference config (model fields over ``dataset``'s
    defaults) or a number; ``tolerance`` is relative (0.015 = ±1.5%)."""
    if not 0 < tolerance < 1:
        raise UnknownBudget(f"tolerance {tolerance!r} must lie in (0, 1)")
    if isinstance(spec, Mapping):
        ref = reference_config(spec, dataset)
        return Budget(count_parameters(ref), float(tolerance), None, ref)
    params = resolve_budget(spec)
    name = spec.strip().lower() if isinstance(spec, str) and spec.strip().lower() in BUDGETS else None
    return Budget(params, float(tolerance), name, REFERENCE_CONFIGS.get(name) if name else None)
