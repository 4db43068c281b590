"""The Optuna define-by-run function of a :class:`Space`.

Each call draws the free dimensions, solves the width that meets the parameter budget (the growth k
of the dense layers, eq. 4-5; see :mod:`search_spaces.solver`), records the exact count and the
relative deviation δ = (P − B)/B, and returns the complete model config. The budget enters Optuna as
the constraint c = |δ| − tolerance (feasible when c ≤ 0), stored at ask time before any training,
so constraint-aware samplers (TPE, NSGA-II, GP in Optuna 5) see it. A loaded space only holds
feasible combinations, so in practice c ≤ 0 always.

Parameter names are flat and "/"-separated: ``model/<field>``, ``train/<key>`` and, for separately
drawn concatenation initialisations, ``search/eta_init_k1`` / ``search/eta_init_k2``. Ray's
``OptunaSearch`` merges the returned dict over the suggested values (returned keys win) and
un-flattens on "/", giving::

    {"model": {<every ModelConfig field>}, "train": {...}, "param_count": P,
     "budget_deviation": δ, "budget": B, "space": name[, "search": {raw eta draws}]}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from model.config import ModelConfig

from .count import count_parameters

if TYPE_CHECKING:
    from .space import Space

CONSTRAINT_KEY = "param_budget"


def define_by_run(space: "Space", trial: Any) -> dict[str, Any]:
    """Suggest every dimension of ``space`` on ``trial`` (an ``optuna.Trial`` or Ray's wrapper),
    solve the width, record count/deviation/constraint on the trial; return flat config values."""
    assignment: dict[str, Any] = {}
    train = dict(space.train)
    for dim in space.dimensions:
        value = dim.suggest(trial)
        if dim.target == "model":
            assignment[dim.name] = value
        else:
            train[dim.name] = value
    sol = space.solution(assignment)
    cfg = ModelConfig(**space.model_values(assignment))
    count = count_parameters(cfg)
    deviation = space.budget.deviation(count)
    trial.set_user_attr("param_count", count)
    trial.set_user_attr("budget_deviation", deviation)
    trial.set_user_attr("param_budget", space.budget.params)
    trial.set_user_attr(sol.field, sol.width)
    set_constraint = getattr(trial, "set_constraint", None)  # Optuna >= 5
    if set_constraint is not None:
        set_constraint(CONSTRAINT_KEY, abs(deviation) - space.budget.tolerance)
    out: dict[str, Any] = {f"model/{k}": v for k, v in cfg.to_dict().items()}
    out.update({f"train/{k}": v for k, v in train.items()})
    out.update(param_count=count, budget_deviation=deviation, budget=space.budget.params, space=space.name)
    return out


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Nest "/"-separated keys ({"model/depth": 3} -> {"model": {"depth": 3}}), as Ray does."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        parts = key.split("/")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def trial_config(space: "Space", trial: Any) -> dict[str, Any]:
    """The nested config Ray's OptunaSearch would hand to a trial, from a bare Optuna trial
    (``study.ask()``): suggested values, overridden by the returned ones, un-flattened."""
    returned = define_by_run(space, trial)
    return unflatten({**trial.params, **returned})


def model_config_of(config: Mapping[str, Any]) -> ModelConfig:
    """The :class:`ModelConfig` of a nested trial config (``config["model"]``)."""
    return ModelConfig.from_dict(config["model"])
