"""One proposal of a space from an Optuna trial: a complete run config within the budget.

:func:`suggest` draws the free dimensions on the trial (skipping, when ``family`` is searched, the
fields the drawn family does not have), solves the width that meets the parameter budget (the
growth k of the dense layers, eq. 4-5, or a Residual Flow's hidden width; see
:mod:`search_spaces.solver`), and records on the trial the exact count, the relative deviation
δ = (P − B)/B, the solved width, and the constraint c = |δ| − tolerance (feasible when c ≤ 0; Optuna 5's
TPE, NSGA-II and GP samplers read it), all at ask time, before any training.

A trial enqueued for a :class:`~search_spaces.space.FixedTrial` carries it in its user attributes
(:func:`fixed_attrs`): a baseline draws nothing, an enqueued configuration draws what its fixed
parameters do not pin, and both take its model and train values over the draws.

Parameter names are flat and "/"-separated: ``model/<field>``, ``train/<key>``, and
``search/eta_init_k1`` / ``search/eta_init_k2`` for separately drawn concatenation initialisations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from model.config import model_config
from model.run_config import RunConfig

from .count import count_parameters
from .solver import width_field_of, with_width_values
from .space import FixedTrial, Space

CONSTRAINT_KEY = "param_budget"
FIXED_ATTR = "fixed_trial"


@dataclass(frozen=True)
class Proposal:
    run: RunConfig
    info: dict[str, Any]  # role, label, param_count, budget, budget_deviation, width field and value, space


def fixed_attrs(fixed: FixedTrial) -> dict[str, Any]:
    """User attributes for ``study.enqueue_trial(fixed.params, user_attrs=...)``."""
    return {FIXED_ATTR: fixed.to_dict(), "role": fixed.role, "label": fixed.label}


def suggest(space: Space, trial: Any) -> Proposal:
    """The proposal of ``trial`` (an ``optuna.Trial``); see the module docstring."""
    fixed: Mapping[str, Any] = trial.user_attrs.get(FIXED_ATTR) or {}
    role = fixed.get("role", "search")
    model_set = dict(fixed.get("model") or {})
    assignment: dict[str, Any] = {}
    train: dict[str, Any] = {}
    if role in ("search", "enqueued"):
        family = model_set.get("family", space.base["family"])
        for dim in space.dimensions:
            if dim.name == "family":
                family = dim.suggest(trial)
                assignment["family"] = family
        for dim in space.dimensions:
            if dim.name == "family" or not dim.applies_to(model_set.get("family", family)):
                continue
            value = dim.suggest(trial)
            (assignment if dim.target == "model" else train)[dim.name] = value
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in model_set.items()}
    if given:  # a fixed trial's own choices may lie outside the file's combinations: solve for them
        values = {**space.base, **assignment, **given}
        if width_field_of(values) not in given:
            values = with_width_values(values, space.solve(values).width)
    else:
        values = space.model_values(assignment)
    cfg = model_config(**values)
    count = count_parameters(cfg)
    deviation = space.budget.deviation(count)
    fld = cfg.family_spec.width_field(cfg.is_toy)
    width = cfg.family_spec.width_of(cfg.arch, cfg.is_toy)
    trial.set_user_attr("param_count", count)
    trial.set_user_attr("budget_deviation", deviation)
    trial.set_user_attr("param_budget", space.budget.params)
    trial.set_user_attr(fld, width)
    if "role" not in trial.user_attrs:
        trial.set_user_attr("role", role)
    trial.set_constraint(CONSTRAINT_KEY, abs(deviation) - space.budget.tolerance)
    run = RunConfig(cfg, space.train_config({**train, **dict(fixed.get("train") or {})}))
    info = {"role": role, "label": fixed.get("label", ""), "param_count": count, "budget": space.budget.params,
            "budget_deviation": deviation, "width_field": fld, "width": width, "space": space.name}
    return Proposal(run, info)
